package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

func newTokenCmd() *cobra.Command {
	var dataDir, databaseURL, databaseSchema string
	var remote clientFlags
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens",
		Long: `Create, list and revoke the bearer tokens of the API.

Tokens live in the store. With the embedded store the first one must be
made offline: the server owns the data directory while it runs, so stop
it, run "drover token create --scope admin --data-dir DIR", and start it
again. With PostgreSQL (--database-url) the commands work while servers
run; each server sees a new token within seconds. Once any token exists, every API call needs one.

With --server (and an admin --token), the commands go through a running
server's API instead.`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", "", "data directory of the embedded store (DROVER_DATA_DIR; default ./drover-data)")
	cmd.PersistentFlags().StringVar(&databaseURL, "database-url", "", "PostgreSQL URL (DROVER_DATABASE_URL)")
	cmd.PersistentFlags().StringVar(&databaseSchema, "database-schema", "", "PostgreSQL schema of Drover's tables (DROVER_DATABASE_SCHEMA)")
	cmd.PersistentFlags().StringVar(&remote.server, "server", "", "manage tokens through this running server's API instead (needs an admin --token)")
	cmd.PersistentFlags().StringVar(&remote.token, "token", "", "admin bearer token for --server (DROVER_TOKEN)")
	remote.output = "table"

	open := func() (store.Store, error) {
		if databaseURL == "" {
			databaseURL = os.Getenv("DROVER_DATABASE_URL")
		}
		if databaseURL != "" {
			if databaseSchema == "" {
				databaseSchema = os.Getenv("DROVER_DATABASE_SCHEMA")
			}
			// Nodes share PostgreSQL: this works while servers run.
			st, err := pgstore.Open(context.Background(), databaseURL, pgstore.Options{
				Schema: databaseSchema, Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				return nil, err
			}
			return st, nil
		}
		dir := dataDir
		if dir == "" {
			dir = os.Getenv("DROVER_DATA_DIR")
		}
		if dir == "" {
			dir = "./drover-data"
		}
		st, err := sqlitestore.Open(dir, sqlitestore.Options{})
		if errors.Is(err, sqlitestore.ErrLocked) {
			return nil, fmt.Errorf("%w: stop the server using %s first", err, dir)
		}
		return st, err
	}

	var scope, name string
	create := &cobra.Command{
		Use: "create", Short: "Create a token and print it once", Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := auth.ParseScope(scope)
			if err != nil {
				return &usageError{err}
			}
			if remote.server != "" {
				c, err := remote.client()
				if err != nil {
					return err
				}
				t, err := c.CreateToken(cmd.Context(), string(sc), name)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), t.Token)
				fmt.Fprintf(cmd.ErrOrStderr(), "token %d (%s, scope %s) created; it is shown only now, store it safely\n", t.ID, name, sc)
				return nil
			}
			st, err := open()
			if err != nil {
				return err
			}
			defer st.Close()
			secret, hash, err := auth.New()
			if err != nil {
				return err
			}
			rec, err := st.CreateToken(cmd.Context(), store.CreateTokenParams{Now: time.Now(), Name: name, Scope: string(sc), Hash: hash})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), auth.Format(rec.ID, secret))
			fmt.Fprintf(cmd.ErrOrStderr(), "token %d (%s, scope %s) created; it is shown only now, store it safely\n", rec.ID, name, sc)
			return nil
		},
	}
	create.Flags().StringVar(&scope, "scope", "", "admin, producer, worker or read")
	create.Flags().StringVar(&name, "name", "", "a name to recognise the token by")

	ls := &cobra.Command{
		Use: "ls", Short: "List tokens (never their secrets)", Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ts []store.TokenRecord
			if remote.server != "" {
				c, err := remote.client()
				if err != nil {
					return err
				}
				list, err := c.ListTokens(cmd.Context())
				if err != nil {
					return err
				}
				for _, t := range list {
					ts = append(ts, store.TokenRecord{ID: t.ID, Name: t.Name, Scope: t.Scope, CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt})
				}
			} else {
				st, err := open()
				if err != nil {
					return err
				}
				defer st.Close()
				if ts, err = st.ListTokens(cmd.Context()); err != nil {
					return err
				}
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tREVOKED")
			for _, t := range ts {
				revoked := "-"
				if t.RevokedAt != nil {
					revoked = t.RevokedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Scope, t.CreatedAt.Format(time.RFC3339), revoked)
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke a token", Args: exactArgs(1, "one token ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return &usageError{fmt.Errorf("token id %q: want a positive integer", args[0])}
			}
			if remote.server != "" {
				c, err := remote.client()
				if err != nil {
					return err
				}
				if err := c.RevokeToken(cmd.Context(), id); err != nil {
					return err
				}
			} else {
				st, err := open()
				if err != nil {
					return err
				}
				defer st.Close()
				if err := st.RevokeToken(cmd.Context(), store.RevokeTokenParams{Now: time.Now(), ID: id}); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %d revoked\n", id)
			return nil
		},
	}
	cmd.AddCommand(create, ls, revoke)
	return cmd
}
