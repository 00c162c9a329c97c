package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/server"
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Drover server (embedded store in --data-dir unless --database-url is given)",
		Long: `Run the Drover server.

By default it keeps its jobs in the embedded store in --data-dir (created
when missing); --database-url selects PostgreSQL instead. Every flag also
reads an environment variable (DROVER_ADDR, DROVER_DATA_DIR, ...) and a key
of the YAML file given with --config; flags win over the environment, which
wins over the file. SIGTERM or SIGINT stops it gracefully.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(cmd.Flags(), os.Environ())
			if err != nil {
				return &usageError{err}
			}
			cfg.Version = version
			log, err := newLogger(cfg, os.Stderr)
			if err != nil {
				return &usageError{err}
			}
			srv, err := server.New(cfg, log)
			if errors.Is(err, config.ErrExposed) {
				return &usageError{err}
			}
			if err != nil {
				return err
			}
			ln, err := srv.Listen()
			if err != nil {
				srv.Close()
				return err
			}
			return srv.Serve(cmd.Context(), ln)
		},
	}
	config.Flags(cmd.Flags())
	return cmd
}

func newLogger(cfg config.Config, w io.Writer) (*slog.Logger, error) {
	level, err := config.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.LogFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log_format %q: want json or text", cfg.LogFormat)
}
