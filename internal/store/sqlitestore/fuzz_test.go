package sqlitestore_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the raw connection that corrupts records

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/store/sqlitestore/sqlitevfs"
	"github.com/droverhq/drover/internal/store/storetest"
)

// fuzzNow is the time of the job that FuzzCorruptRecord corrupts.
var fuzzNow = time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)

// FuzzRecordRoundTrip checks that the store's record encodings round-trip:
// see storetest.FuzzRoundTrip.
func FuzzRecordRoundTrip(f *testing.F) {
	st, err := sqlitestore.Open(f.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		f.Fatalf("Open: %v", err)
	}
	f.Cleanup(func() { _ = st.Close() })
	storetest.FuzzRoundTrip(f, st)
}

// corruptible are the columns of a job row that hold encoded data, and
// how scan decodes them: "json" columns are decoded into a Go value, so
// bytes that do not decode must make the read fail; "raw" ones are passed
// through as they are.
var corruptible = []struct{ col, kind string }{
	{"errors", "json"}, {"tags", "json"}, {"depends_on", "json"},
	{"args", "raw"}, {"metadata", "raw"}, {"output", "raw"},
}

// FuzzCorruptRecord writes arbitrary bytes into one encoded column of a
// stored job, behind the store's back, and reads the job: the read must
// never panic, and a column the store decodes either decodes exactly as
// encoding/json decodes it or makes the read fail with an error naming
// the job. Corruption is reported, never silently dropped.
func FuzzCorruptRecord(f *testing.F) {
	dir := f.TempDir()
	st, err := sqlitestore.Open(dir, sqlitestore.Options{NoSync: true})
	if err != nil {
		f.Fatalf("Open: %v", err)
	}
	f.Cleanup(func() { _ = st.Close() })
	res, err := st.Insert(f.Context(), store.InsertParams{Now: fuzzNow, Jobs: []*job.Insert{{
		Kind: "fz", Queue: "q", Args: json.RawMessage(`{}`), Priority: 5, MaxAttempts: 3, ScheduledAt: fuzzNow, CreatedAt: fuzzNow,
	}}})
	if err != nil {
		f.Fatalf("Insert: %v", err)
	}
	id := res[0].Job.ID
	// The raw connection goes through the store's file layer too, so that
	// the pages it writes are sealed with their checksums like the
	// store's own: the corruption under test is in the record, not the
	// page.
	vfs, err := sqlitevfs.New(sqlitevfs.Options{})
	if err != nil {
		f.Fatalf("sqlitevfs.New: %v", err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Set("vfs", vfs.Name())
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, sqlitestore.DBFile)+"?"+q.Encode())
	if err != nil {
		f.Fatalf("open the raw connection: %v", err)
	}
	f.Cleanup(func() {
		_ = raw.Close()
		_ = vfs.Close()
	})

	f.Add(uint8(0), []byte(`[{"attempt":1,"at":"2030-01-02T03:04:05Z","message":"m"}]`))
	f.Add(uint8(0), []byte(`{"attempt":1}`))
	f.Add(uint8(0), []byte(`[{"attempt":"one"}]`))
	f.Add(uint8(1), []byte(`["a","b"]`))
	f.Add(uint8(1), []byte(`["a",`))
	f.Add(uint8(2), []byte(`[1,2,3]`))
	f.Add(uint8(2), []byte(`[1e400]`))
	f.Add(uint8(3), []byte("\xff not json"))
	f.Add(uint8(4), []byte(nil))
	f.Fuzz(func(t *testing.T, which uint8, value []byte) {
		// Each input corrupts one column of an otherwise sound row.
		if _, err := raw.ExecContext(t.Context(), `UPDATE jobs SET errors = NULL, tags = NULL, depends_on = NULL,
			args = ?, metadata = NULL, output = NULL WHERE id = ?`, []byte(`{}`), int64(id)); err != nil {
			t.Fatalf("restore the row: %v", err)
		}
		c := corruptible[int(which)%len(corruptible)]
		var arg any = value
		if c.col == "tags" || c.col == "depends_on" {
			arg = string(value) // TEXT columns
		}
		if len(value) == 0 && c.col != "args" {
			arg = nil
		}
		stmt := `UPDATE jobs SET ` + c.col + ` = ? WHERE id = ?` //nolint:gosec // G202: the column is one of the fixed names above
		if _, err := raw.ExecContext(t.Context(), stmt, arg, int64(id)); err != nil {
			t.Fatalf("corrupt %s: %v", c.col, err)
		}
		got, err := st.Get(t.Context(), id)
		if c.kind == "raw" {
			if err != nil {
				t.Fatalf("Get with %s = %q: %v", c.col, value, err)
			}
			var field []byte
			switch c.col {
			case "args":
				field = got.Args
			case "metadata":
				field = got.Metadata
			case "output":
				field = got.Output
			}
			if !bytes.Equal(field, value) {
				t.Fatalf("%s %q read back as %q", c.col, value, field)
			}
			return
		}
		var want any
		switch c.col {
		case "errors":
			want = new([]job.AttemptError)
		case "tags":
			want = new([]string)
		case "depends_on":
			want = new([]job.ID)
		}
		decodeErr := json.Unmarshal(value, want)
		if len(value) > 0 && decodeErr != nil {
			if err == nil {
				t.Fatalf("%s = %q, which does not decode (%v), read as %+v", c.col, value, decodeErr, got)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("job %d", id)) {
				t.Fatalf("the error %q does not name the job", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s = %q decodes, but Get failed: %v", c.col, value, err)
		}
		var field any
		switch c.col {
		case "errors":
			field = got.Errors
		case "tags":
			field = got.Tags
		case "depends_on":
			field = got.DependsOn
		}
		w := reflect.ValueOf(want).Elem()
		if len(value) == 0 || w.Len() == 0 {
			if reflect.ValueOf(field).Len() != 0 {
				t.Fatalf("%s = %q read back as %+v", c.col, value, field)
			}
			return
		}
		if !reflect.DeepEqual(field, w.Interface()) {
			t.Fatalf("%s = %q read back as %+v, want %+v", c.col, value, field, w.Interface())
		}
	})
}
