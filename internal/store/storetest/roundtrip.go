package storetest

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// RoundTripSeeds are seed inputs for FuzzRoundTrip, in its argument order:
// args, metadata, tags (comma-separated), error message, error detail,
// output.
var RoundTripSeeds = [][]any{
	{[]byte(`{"a":[1,"x",null]}`), []byte(`{"m":1}`), "a,b", "boom", "stack", []byte(`{"ok":true}`)},
	{[]byte(`"\u0000 \ud83d\ude00 é"`), []byte(nil), "", "", "", []byte(nil)},
	{[]byte(`1e999`), []byte(`{"k":"\\"}`), "t", "nul\x00 and \xff", "\xc0\xaf", []byte(`"\u0000"`)},
	{[]byte(strings.Repeat("[", 64) + strings.Repeat("]", 64)), []byte(`{}`), "x,y,z", strings.Repeat("é", 3000), strings.Repeat("😀", 5000), []byte(`[]`)},
}

// FuzzRoundTrip fuzzes st's record encodings: every input writes jobs
// through the store's own API and reads them back. Whatever the store
// accepts (args, metadata, tags, output, error messages and details)
// reads back exactly as written, by Get and by List alike. Error text is
// the one documented exception: invalid UTF-8 and NUL become U+FFFD
// (store.CleanText), and it is cut to its limit on a rune boundary.
//
// One store serves every input, as opening one per input would dominate
// the time; each input uses a queue of its own.
func FuzzRoundTrip(f *testing.F, st store.Store) {
	for _, s := range RoundTripSeeds {
		f.Add(s...)
	}
	n := 0
	f.Fuzz(func(t *testing.T, args, metadata []byte, tags, msg, detail string, output []byte) {
		n++
		checkRoundTrip(t, st, fmt.Sprintf("fz%d", n), args, metadata, tags, msg, detail, output)
	})
}

// roundTripNow is the fixed time of every fuzzed write.
var roundTripNow = time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)

// checkRoundTrip inserts two jobs into queue, fails one with msg and
// detail, completes the other with output, and checks that each step
// reads back as written.
func checkRoundTrip(t *testing.T, st store.Store, queue string, args, metadata []byte, tags, msg, detail string, output []byte) {
	t.Helper()
	ctx := t.Context()
	now := roundTripNow
	// Input that validation refuses (job.FuzzPrepare's concern) is left
	// out, field by field, so that every input reaches the store.
	spec := job.Spec{Kind: "fz", Queue: queue, Args: args, Metadata: metadata, MaxAttempts: 5}
	if _, err := job.NormalizeJSON(args, job.DefaultMaxArgsBytes, "args"); err != nil {
		spec.Args = nil
	}
	if _, err := (&job.Spec{Kind: "fz", Metadata: metadata}).Prepare(now, job.Limits{}, ""); err != nil {
		spec.Metadata = nil
	}
	for _, tag := range strings.Split(tags, ",") {
		if job.ValidateName(tag) == nil && len(spec.Tags) < job.MaxTags {
			spec.Tags = append(spec.Tags, tag)
		}
	}
	in, err := spec.Prepare(now, job.Limits{}, "")
	if err != nil {
		t.Fatalf("Prepare %+v: %v", spec, err)
	}
	out, err := job.NormalizeJSON(output, job.DefaultMaxArgsBytes, "output")
	if err != nil || len(output) == 0 {
		out = nil
	}
	res, err := st.Insert(ctx, store.InsertParams{Now: now, Jobs: []*job.Insert{in, in}})
	if err != nil {
		t.Fatalf("Insert %+v: %v", in, err)
	}
	for _, r := range res {
		got := getJob(t, st, r.Job.ID)
		if got.Kind != in.Kind || got.Queue != in.Queue || !bytes.Equal(got.Args, in.Args) ||
			!bytes.Equal(got.Metadata, in.Metadata) || !reflect.DeepEqual(got.Tags, in.Tags) ||
			got.Priority != in.Priority || got.MaxAttempts != in.MaxAttempts || !got.ScheduledAt.Equal(in.ScheduledAt) {
			t.Fatalf("inserted %+v, read back %+v", in, got)
		}
	}

	leased, err := st.Lease(ctx, store.LeaseParams{Now: now, Queues: []string{queue}, Limit: 2, LeaseFor: time.Minute, Worker: "w"})
	if err != nil || len(leased) != 2 {
		t.Fatalf("Lease: %d jobs, %v", len(leased), err)
	}
	failed, done := leased[0], leased[1]
	if _, err := st.Fail(ctx, store.FailParams{Now: now, ID: failed.ID, LeaseToken: failed.LeaseToken,
		Message: msg, Detail: detail, RetryAt: now.Add(time.Hour)}); err != nil {
		t.Fatalf("Fail: %v", err)
	}
	want := job.AttemptError{
		Attempt: 1, At: now,
		Message: job.TruncateUTF8(store.CleanText(msg), job.MaxErrorMessageBytes),
		Detail:  job.TruncateUTF8(store.CleanText(detail), job.MaxErrorDetailBytes),
	}
	if got := getJob(t, st, failed.ID); len(got.Errors) != 1 || !reflect.DeepEqual(got.Errors[0], want) {
		t.Fatalf("failed with %q, %q: history %+v, want %+v", msg, detail, got.Errors, want)
	}
	rs, err := st.Complete(ctx, store.CompleteParams{Now: now, Jobs: []store.CompleteJob{{ID: done.ID, LeaseToken: done.LeaseToken, Output: out}}})
	if err != nil || len(rs) != 1 || rs[0].Err != nil {
		t.Fatalf("Complete: %+v, %v", rs, err)
	}
	if got := getJob(t, st, done.ID); !bytes.Equal(got.Output, out) || got.State != job.StateCompleted {
		t.Fatalf("completed with output %q: read back %q in state %s", out, got.Output, got.State)
	}

	// List decodes the same rows the same way.
	page, err := st.List(ctx, store.ListParams{Queues: []string{queue}, Limit: 10})
	if err != nil || len(page.Jobs) != 2 {
		t.Fatalf("List: %d jobs, %v", len(page.Jobs), err)
	}
	for _, j := range page.Jobs {
		if g := getJob(t, st, j.ID); !reflect.DeepEqual(g, j) {
			t.Fatalf("List and Get differ:\nList %+v\nGet  %+v", j, g)
		}
	}
}

func getJob(t *testing.T, st store.Store, id job.ID) *job.Job {
	t.Helper()
	j, err := st.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get %d: %v", id, err)
	}
	return j
}
