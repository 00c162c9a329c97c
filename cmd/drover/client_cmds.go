package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/restclient"
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	server string
	token  string
	output string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.server, "server", "", "server URL (DROVER_SERVER; default http://127.0.0.1:8080)")
	cmd.PersistentFlags().StringVar(&f.token, "token", "", "bearer token (DROVER_TOKEN)")
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
}

func (f *clientFlags) client() (*restclient.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, &usageError{fmt.Errorf("--output %q: want table or json", f.output)}
	}
	server := f.server
	if server == "" {
		server = os.Getenv("DROVER_SERVER")
	}
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	token := f.token
	if token == "" {
		token = os.Getenv("DROVER_TOKEN")
	}
	c, err := restclient.New(server, token, nil)
	if err != nil {
		return nil, &usageError{err}
	}
	return c, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, &usageError{fmt.Errorf("job id %q: want a positive integer", s)}
	}
	return id, nil
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &usageError{fmt.Errorf("%s takes %s", cmd.CommandPath(), names)}
		}
		return nil
	}
}

func newEnqueueCmd() *cobra.Command {
	var (
		f           clientFlags
		queue       string
		priority    int
		delay       time.Duration
		maxAttempts int
		uniqueKey   string
		tags        []string
	)
	cmd := &cobra.Command{
		Use:   "enqueue KIND [ARGS_JSON]",
		Short: "Enqueue a job through a server",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return &usageError{errors.New("enqueue takes KIND and optionally ARGS_JSON")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			r := httpapi.EnqueueRequest{Kind: args[0], Queue: queue, Priority: priority, MaxAttempts: maxAttempts, Tags: tags}
			if len(args) == 2 {
				if !json.Valid([]byte(args[1])) {
					return &usageError{fmt.Errorf("ARGS_JSON is not valid JSON: %s", args[1])}
				}
				r.Args = json.RawMessage(args[1])
			}
			if delay != 0 {
				d := httpapi.Duration(delay)
				r.Delay = &d
			}
			if uniqueKey != "" {
				r.Unique = &httpapi.UniqueRequest{Key: uniqueKey}
			}
			j, err := c.Enqueue(cmd.Context(), r)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), j)
			}
			verb := "enqueued"
			if j.Duplicate {
				verb = "duplicate of"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s job %d (%s) in queue %s: %s\n", verb, j.ID, j.Kind, j.Queue, j.State)
			return nil
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&queue, "queue", "", "queue (default \"default\")")
	fl.IntVar(&priority, "priority", 0, "priority 1 (first) to 9 (last); default 5")
	fl.DurationVar(&delay, "delay", 0, "run after this long, e.g. 30s")
	fl.IntVar(&maxAttempts, "max-attempts", 0, "attempts before the job is discarded; default 25")
	fl.StringVar(&uniqueKey, "unique-key", "", "make the job unique by this key within its kind")
	fl.StringSliceVar(&tags, "tag", nil, "tag (repeatable)")
	return cmd
}

func newJobsCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{Use: "jobs", Short: "List, inspect and act on jobs through a server"}
	f.add(cmd)

	var (
		states, kinds, queues []string
		tag, cursor           string
		limit                 int
		desc                  bool
	)
	ls := &cobra.Command{
		Use: "ls", Short: "List jobs", Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			page, err := c.ListJobs(cmd.Context(), restclient.ListParams{States: states, Kinds: kinds, Queues: queues, Tag: tag, Limit: limit, Cursor: cursor, Desc: desc})
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), page)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tQUEUE\tSTATE\tATTEMPT\tPRIORITY\tSCHEDULED")
			for _, j := range page.Jobs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d\t%d\t%s\n", j.ID, j.Kind, j.Queue, j.State, j.Attempt, j.MaxAttempts, j.Priority, j.ScheduledAt.Format(time.RFC3339))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.NextCursor != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --cursor %s\n", page.NextCursor)
			}
			return nil
		},
	}
	lf := ls.Flags()
	lf.StringSliceVar(&states, "state", nil, "only these states (repeatable or comma-separated)")
	lf.StringSliceVar(&kinds, "kind", nil, "only these kinds")
	lf.StringSliceVar(&queues, "queue", nil, "only these queues")
	lf.StringVar(&tag, "tag", "", "only jobs with this tag")
	lf.IntVar(&limit, "limit", 50, "page size (at most 1000)")
	lf.StringVar(&cursor, "cursor", "", "continue after a previous page")
	lf.BoolVar(&desc, "desc", false, "newest first")

	get := &cobra.Command{
		Use: "get ID", Short: "Show one job with its error history", Args: exactArgs(1, "one job ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			j, err := c.GetJob(cmd.Context(), id)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), j)
			}
			return printJob(cmd.OutOrStdout(), j)
		},
	}

	action := func(name, short string) *cobra.Command {
		return &cobra.Command{
			Use: name + " ID", Short: short, Args: exactArgs(1, "one job ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				id, err := parseID(args[0])
				if err != nil {
					return err
				}
				c, err := f.client()
				if err != nil {
					return err
				}
				if name == "rm" {
					if err := c.DeleteJob(cmd.Context(), id); err != nil {
						return err
					}
					if f.output == "json" {
						return printJSON(cmd.OutOrStdout(), map[string]any{"id": id, "deleted": true})
					}
					fmt.Fprintf(cmd.OutOrStdout(), "deleted job %d\n", id)
					return nil
				}
				j, err := c.JobAction(cmd.Context(), id, name)
				if err != nil {
					return err
				}
				if f.output == "json" {
					return printJSON(cmd.OutOrStdout(), j)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "job %d is %s\n", j.ID, j.State)
				return nil
			},
		}
	}
	cmd.AddCommand(ls, get,
		action("cancel", "Cancel a job that has not finished"),
		action("retry", "Make a scheduled, retryable or finished job available now"),
		action("rm", "Delete a job that is not running"))
	return cmd
}

func printJob(w io.Writer, j *httpapi.Job) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	ts := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.Format(time.RFC3339Nano)
	}
	row("id", strconv.FormatInt(j.ID, 10))
	row("kind", j.Kind)
	row("queue", j.Queue)
	row("state", j.State)
	row("priority", strconv.Itoa(j.Priority))
	row("attempt", fmt.Sprintf("%d of %d", j.Attempt, j.MaxAttempts))
	row("args", string(j.Args))
	row("tags", strings.Join(j.Tags, ", "))
	row("metadata", string(j.Metadata))
	row("output", string(j.Output))
	row("created", j.CreatedAt.Format(time.RFC3339Nano))
	row("scheduled", j.ScheduledAt.Format(time.RFC3339Nano))
	row("attempted", ts(j.AttemptedAt))
	row("attempted by", j.AttemptedBy)
	row("finalized", ts(j.FinalizedAt))
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range j.Errors {
		fmt.Fprintf(w, "error, attempt %d at %s: %s\n", e.Attempt, e.At.Format(time.RFC3339), e.Message)
	}
	return nil
}

func newQueuesCmd() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{Use: "queues", Short: "List, pause and resume queues through a server"}
	f.add(cmd)
	ls := &cobra.Command{
		Use: "ls", Short: "List queues with job counts per state", Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			qs, err := c.Queues(cmd.Context())
			if err != nil {
				return err
			}
			if f.output == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]any{"queues": qs})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "QUEUE\tPAUSED\tAVAILABLE\tRUNNING\tSCHEDULED\tRETRYABLE\tPENDING\tCOMPLETED\tDISCARDED\tCANCELLED")
			for _, q := range qs {
				c := q.Counts
				fmt.Fprintf(tw, "%s\t%t\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", q.Name, q.Paused, c["available"], c["running"],
					c["scheduled"], c["retryable"], c["pending"], c["completed"], c["discarded"], c["cancelled"])
			}
			return tw.Flush()
		},
	}
	pause := func(paused bool) *cobra.Command {
		name, short := "resume", "Resume a paused queue"
		if paused {
			name, short = "pause", "Pause a queue: no job is leased from it until resumed"
		}
		return &cobra.Command{
			Use: name + " QUEUE", Short: short, Args: exactArgs(1, "one queue name"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := f.client()
				if err != nil {
					return err
				}
				q, err := c.SetQueuePaused(cmd.Context(), args[0], paused)
				if err != nil {
					return err
				}
				if f.output == "json" {
					return printJSON(cmd.OutOrStdout(), q)
				}
				state := "running"
				if q.Paused {
					state = "paused"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "queue %s is %s\n", q.Name, state)
				return nil
			},
		}
	}
	cmd.AddCommand(ls, pause(true), pause(false))
	return cmd
}
