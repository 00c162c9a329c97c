package pgstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/pgstore"
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
