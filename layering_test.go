package drover_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestLayering checks the dependency rules of STYLE.md, so that they
// cannot erode: the job vocabulary is a leaf, stores never reach up into
// the engine or the faces, the engine never reaches the wiring, and the
// faces never import each other.
func TestLayering(t *testing.T) {
	t.Parallel()
	const mod = "github.com/droverhq/drover"
	out, err := exec.Command("go", "list", "-e", "-json=ImportPath,Deps,Standard", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type pkg struct {
		ImportPath string
		Deps       []string
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	faces := []string{"internal/httpapi", "internal/grpcapi", "internal/graphqlapi", "internal/dashboard"}
	rel := func(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, mod), "/") }
	under := func(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }
	checked := 0
	for _, p := range pkgs {
		self := rel(p.ImportPath)
		for _, d := range p.Deps {
			if !strings.HasPrefix(d, mod) {
				if self == "internal/job" && strings.Contains(strings.SplitN(d, "/", 2)[0], ".") {
					t.Errorf("internal/job must import only the standard library, imports %s", d)
				}
				continue
			}
			dep := rel(d)
			checked++
			switch {
			case under(dep, "cmd"):
				t.Errorf("%s imports %s: nothing imports the binary", self, dep)
			case self == "internal/job":
				t.Errorf("internal/job is the leaf, but imports %s", dep)
			case under(self, "internal/store") && (under(dep, "internal/engine") || under(dep, "internal/server") || dep == "" || isFace(dep, faces)):
				t.Errorf("store package %s must not import %s", self, dep)
			case under(self, "internal/engine") && (under(dep, "internal/server") || dep == "" || isFace(dep, faces) || under(dep, "internal/maintenance")):
				t.Errorf("engine must not import %s", dep)
			case isFace(self, faces) && isFace(dep, faces) && !under(dep, self):
				t.Errorf("face %s must not import another face %s", self, dep)
			case self == "" && (under(dep, "internal/server") || isFace(dep, faces)):
				t.Errorf("the Go library must not import %s", dep)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no module-internal dependencies seen: the check checked nothing")
	}
}

func isFace(path string, faces []string) bool {
	for _, f := range faces {
		if path == f || strings.HasPrefix(path, f+"/") {
			return true
		}
	}
	return false
}
