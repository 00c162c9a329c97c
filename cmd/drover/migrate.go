package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/store/pgstore"
)

// migrateFlags are the flags every migrate command shares.
type migrateFlags struct {
	databaseURL string
	schema      string
	output      string
}

func newMigrateCmd() *cobra.Command {
	f := migrateFlags{output: "table"}
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, inspect or undo the PostgreSQL schema migrations",
		Long: `Apply, inspect or undo the migrations of the PostgreSQL store.

"drover migrate" (or "drover migrate up") applies every pending migration
and prints each version it applied. "drover migrate status" shows the
schema's version and every migration this build knows. "drover migrate
down --to N" undoes migrations down to version N.

"drover serve" applies pending migrations itself when it starts, unless
--no-migrate is given; run this command first when it is (for instance
from a deploy step, before the new servers start). Migrating from several
nodes at once is safe: a PostgreSQL advisory lock per schema makes them
take turns, and the later ones find nothing left to do.

Down migrations DROP TABLES AND THEIR DATA: jobs, tokens and everything
else the undone versions created are gone. That is why down needs --to
and has no default.

Only the PostgreSQL store has migrations (the embedded store migrates
itself when it opens), so --database-url or DROVER_DATABASE_URL is needed.
--database-schema (DROVER_DATABASE_SCHEMA) names the schema of Drover's
tables, created when missing; without it, the URL's search_path decides.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{fmt.Errorf("unknown command %q for %q: want up, status or down", args[0], cmd.CommandPath())}
			}
			return nil
		},
		RunE: f.runE(migrateUp),
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL (DROVER_DATABASE_URL)")
	pf.StringVar(&f.schema, "database-schema", "", "PostgreSQL schema of Drover's tables; default: the URL's search_path (DROVER_DATABASE_SCHEMA)")

	up := &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration (the default)",
		Args:  noArgs,
		RunE:  f.runE(migrateUp),
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the schema version and which migrations are applied",
		Args:  noArgs,
		RunE:  f.runE(migrateStatus),
	}
	status.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")

	var to int
	down := &cobra.Command{
		Use:   "down --to N",
		Short: "Undo migrations down to version N (drops their tables and data)",
		Long: `Undo migrations, newest first, until the schema is at version N.

Down migrations drop the tables the undone versions created, with their
data. --to is required: 0 removes every Drover table (but the record of
migrations), and N must be between 0 and the current version.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := noArgs(cmd, args); err != nil {
				return err
			}
			if !cmd.Flags().Changed("to") {
				return &usageError{errors.New("migrate down needs --to N, the version to go down to (0..current); down migrations drop data, so there is no default")}
			}
			if latest := len(pgstore.Migrations()); to < 0 || to > latest {
				return &usageError{fmt.Errorf("--to %d: want a version between 0 and the current one (this build knows 0..%d)", to, latest)}
			}
			return nil
		},
		RunE: f.runE(func(ctx context.Context, cmd *cobra.Command, f *migrateFlags, pool *pgxpool.Pool) error {
			return migrateDown(ctx, cmd, f, pool, to)
		}),
	}
	down.Flags().IntVar(&to, "to", 0, "version to go down to, 0..current (required)")

	cmd.AddCommand(up, status, down)
	return cmd
}

// runE resolves the flags, connects, runs fn and closes the pool. Errors
// never show the URL's password.
func (f *migrateFlags) runE(fn func(context.Context, *cobra.Command, *migrateFlags, *pgxpool.Pool) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		err := f.resolve()
		if err == nil {
			var pool *pgxpool.Pool
			pool, err = f.connect(cmd.Context())
			if err == nil {
				defer pool.Close()
				err = fn(cmd.Context(), cmd, f, pool)
			}
		}
		return redactError(err, f.databaseURL)
	}
}

// resolve fills the URL and schema from the environment when the flags are
// not given, and checks them.
func (f *migrateFlags) resolve() error {
	if f.output != "table" && f.output != "json" {
		return &usageError{fmt.Errorf("--output %q: want table or json", f.output)}
	}
	if f.databaseURL == "" {
		f.databaseURL = os.Getenv("DROVER_DATABASE_URL")
	}
	if f.schema == "" {
		f.schema = os.Getenv("DROVER_DATABASE_SCHEMA")
	}
	if f.databaseURL == "" {
		return &usageError{errors.New("migrate needs PostgreSQL: give --database-url or set DROVER_DATABASE_URL (the embedded store has no migrations to run: it migrates itself when it opens)")}
	}
	if f.schema != "" && !validSchemaName(f.schema) {
		return &usageError{fmt.Errorf("--database-schema %q: use at most 63 lower-case letters, digits and underscores, not starting with a digit", f.schema)}
	}
	return nil
}

// validSchemaName accepts the names pgstore.Open accepts: plain lower-case
// identifiers that never need quoting.
func validSchemaName(name string) bool {
	if name == "" || len(name) > 63 {
		return false
	}
	for i, r := range name {
		if r != '_' && (r < 'a' || r > 'z') && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// connect opens a small pool whose search_path is the schema, when one is
// given, and checks that the database answers.
func (f *migrateFlags) connect(ctx context.Context) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(f.databaseURL)
	if err != nil {
		return nil, &usageError{fmt.Errorf("--database-url: %w", err)}
	}
	if f.schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{f.schema}.Sanitize()
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "drover migrate"
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return pool, nil
}

func migrationNames() map[int]string {
	names := map[int]string{}
	for _, m := range pgstore.Migrations() {
		names[m.Version] = m.Name
	}
	return names
}

func migrateUp(ctx context.Context, cmd *cobra.Command, f *migrateFlags, pool *pgxpool.Pool) error {
	applied, err := pgstore.Migrate(ctx, pool, f.schema, pgstore.Latest)
	names := migrationNames()
	// Migrate reports what it applied before a failure too.
	for _, v := range applied {
		fmt.Fprintf(cmd.OutOrStdout(), "applied %d (%s)\n", v, names[v])
	}
	if err != nil || len(applied) > 0 {
		return err
	}
	v, err := pgstore.Version(ctx, pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "schema is up to date at version %d\n", v)
	return nil
}

// migrateStatusJSON is the -o json form of migrate status.
type migrateStatusJSON struct {
	Schema     string                 `json:"schema"`
	Version    int                    `json:"version"`
	Latest     int                    `json:"latest"`
	Pending    int                    `json:"pending"`
	Migrations []migrationStatusEntry `json:"migrations"`
}

type migrationStatusEntry struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	Applied bool   `json:"applied"`
}

func migrateStatus(ctx context.Context, cmd *cobra.Command, f *migrateFlags, pool *pgxpool.Pool) error {
	cur, err := pgstore.Version(ctx, pool)
	if err != nil {
		return err
	}
	schema := f.schema
	if schema == "" {
		if err := pool.QueryRow(ctx, `SELECT coalesce(current_schema(), '')`).Scan(&schema); err != nil {
			return fmt.Errorf("read current schema: %w", err)
		}
	}
	all := pgstore.Migrations()
	st := migrateStatusJSON{Schema: schema, Version: cur, Latest: len(all), Migrations: []migrationStatusEntry{}}
	for _, m := range all {
		applied := m.Version <= cur
		if !applied {
			st.Pending++
		}
		st.Migrations = append(st.Migrations, migrationStatusEntry{Version: m.Version, Name: m.Name, Applied: applied})
	}
	if f.output == "json" {
		return printJSON(cmd.OutOrStdout(), st)
	}
	w := cmd.OutOrStdout()
	if schema == "" {
		schema = "(none: the search_path names no existing schema)"
	}
	fmt.Fprintf(w, "schema:  %s\n", schema)
	fmt.Fprintf(w, "version: %d\n", cur)
	switch {
	case cur > st.Latest:
		fmt.Fprintf(w, "latest:  %d (the database is newer than this build: upgrade Drover)\n", st.Latest)
	case st.Pending == 0:
		fmt.Fprintf(w, "latest:  %d (up to date)\n", st.Latest)
	default:
		fmt.Fprintf(w, "latest:  %d (%d pending: run drover migrate)\n", st.Latest, st.Pending)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tNAME\tSTATE")
	for _, m := range st.Migrations {
		state := "pending"
		if m.Applied {
			state = "applied"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", m.Version, m.Name, state)
	}
	return tw.Flush()
}

func migrateDown(ctx context.Context, cmd *cobra.Command, f *migrateFlags, pool *pgxpool.Pool, to int) error {
	cur, err := pgstore.Version(ctx, pool)
	if err != nil {
		return err
	}
	if to > cur {
		return &usageError{fmt.Errorf("--to %d: the schema is at version %d, so down can go to 0..%d (drover migrate up moves forward)", to, cur, cur)}
	}
	if to == cur {
		fmt.Fprintf(cmd.OutOrStdout(), "schema is already at version %d: nothing to undo\n", cur)
		return nil
	}
	undone, err := pgstore.MigrateDown(ctx, pool, f.schema, to)
	names := migrationNames()
	for _, v := range undone {
		fmt.Fprintf(cmd.OutOrStdout(), "reverted %d (%s)\n", v, names[v])
	}
	return err
}

// redactedError is an error whose message had a password taken out; it
// unwraps to the original, so errors.As still finds a usageError.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// urlPassword matches the password of a URL quoted in a message, up to
// the last @ before a space or backquote: a password with an unencoded @
// (which pgx's own redaction cuts short) is hidden whole.
var urlPassword = regexp.MustCompile("(://[^:/@\\s`]*):[^\\s`]*@")

// redactError returns err with the password of any URL in its message,
// and every password that rawURL holds, replaced by xxxxx. (pgx redacts
// its own messages too; this is the second line of defence.) Passwords
// shorter than 4 bytes are left to the URL pattern: replacing "a"
// everywhere would make the message unreadable, not safer.
func redactError(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	msg := urlPassword.ReplaceAllString(err.Error(), "${1}:xxxxx@")
	var secrets []string
	if cfg, perr := pgconn.ParseConfig(rawURL); perr == nil && cfg.Password != "" {
		secrets = append(secrets, cfg.Password)
	}
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			_, encoded, _ := strings.Cut(u.User.String(), ":")
			secrets = append(secrets, pw, encoded)
		}
	}
	for _, s := range secrets {
		if len(s) >= 4 {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
