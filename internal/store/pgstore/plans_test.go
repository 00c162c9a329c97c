package pgstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// TestPlansStayOnKeys checks the cached (generic) plans of the hot
// statements on a table analyzed while a large backlog waited: each must
// reach its rows through keys, never scan drover_jobs whole nor walk a
// state's range of drover_jobs_state. Plans made from such statistics
// once hash-joined every lease with a sequential scan of the table and
// scanned every completed entry at each completion.
func TestPlansStayOnKeys(t *testing.T) {
	t.Parallel()
	s := open(t)
	defer s.Close()
	insertJobs(t, s, job.DefaultQueue, 20000, time.Now(), time.Time{})
	ctx := t.Context()
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `ANALYZE drover_jobs`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, types, sql, args string
	}{
		{"lease", "text[], integer, timestamptz, text, timestamptz", pgstore.LeaseSQL, `'{default}', 10, now(), 'w', now()`},
		{"complete", "timestamptz, bigint[], text[], text[]", pgstore.CompleteSQL, `now(), '{1,2}', '{a,b}', '{NULL,NULL}'`},
		{"resolve", "bigint[], timestamptz, text", pgstore.ResolveSQL, `'{1,2}', now(), 'c'`},
	} {
		if _, err := conn.Exec(ctx, `PREPARE plan_`+tc.name+`(`+tc.types+`) AS `+tc.sql); err != nil {
			t.Fatalf("%s: prepare: %v", tc.name, err)
		}
		rows, err := conn.Query(ctx, `EXPLAIN EXECUTE plan_`+tc.name+`(`+tc.args+`)`)
		if err != nil {
			t.Fatalf("%s: explain: %v", tc.name, err)
		}
		var plan strings.Builder
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			plan.WriteString(line + "\n")
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		p := plan.String()
		if strings.Contains(p, "Seq Scan on drover_jobs") || strings.Contains(p, "drover_jobs_state") {
			t.Errorf("%s: the generic plan scans drover_jobs or a range of drover_jobs_state:\n%s", tc.name, p)
		}
	}
}

// TestPoolSessionDefaults checks the settings Open gives its connections
// (generic plans, no JIT) and that a setting in the URL wins over them.
func TestPoolSessionDefaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, query, wantPlan, wantJIT string
	}{
		{"defaults", "", "force_generic_plan", "off"},
		{"url_wins", "plan_cache_mode=auto&jit=on", "auto", "on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.TestURL(t)
			schema := pgtest.TestSchema(t, url)
			if tc.query != "" {
				sep := "?"
				if strings.Contains(url, "?") {
					sep = "&"
				}
				url += sep + tc.query
			}
			s, err := pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var plan, jit string
			if err := s.Pool().QueryRow(t.Context(), `SELECT current_setting('plan_cache_mode'), current_setting('jit')`).Scan(&plan, &jit); err != nil {
				t.Fatal(err)
			}
			if plan != tc.wantPlan || jit != tc.wantJIT {
				t.Errorf("plan_cache_mode=%s jit=%s, want %s and %s", plan, jit, tc.wantPlan, tc.wantJIT)
			}
		})
	}
}
