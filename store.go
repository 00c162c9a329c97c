package drover

import (
	"log/slog"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/maintenance"
	"github.com/droverhq/drover/internal/remote"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// Store is where jobs live: the embedded store in a data directory (see
// OpenEmbedded), PostgreSQL for many nodes (see OpenPostgres), or a
// Drover server reached over gRPC (see OpenRemote); Open picks one from a
// single setting. Every Client on one Store
// shares it, and one Store may serve many Clients. Close it after the last
// Client has stopped.
type Store struct {
	s   store.Store
	eng *engine.Engine
	// pg and cluster are set on PostgreSQL (see OpenPostgres).
	pg      *pgstore.Store
	cluster *maintenance.Cluster
	// remote is set on a remote server (see OpenRemote); s and eng are
	// then nil.
	remote *remote.Conn
}

// EmbeddedOptions tune OpenEmbedded. The zero value is the durable
// default.
type EmbeddedOptions struct {
	// MaxArgsBytes limits the encoded size of job args (and outputs);
	// zero means 1 MiB.
	MaxArgsBytes int
	// NoSync skips fsync at commit: an acknowledged job survives a crash of
	// the process but may be lost if the machine loses power. For tests.
	NoSync bool
	// Logger receives the engine's logs (for example rescued leases);
	// nil means slog.Default().
	Logger *slog.Logger
}

// OpenEmbedded opens (creating when needed) the embedded store in dir. One
// process at a time may own dir: a second gets an error that wraps
// ErrDataDirLocked. Acknowledged writes are on disk (fsynced) before the
// call that made them returns, and concurrent writers share one commit.
func OpenEmbedded(dir string, opts *EmbeddedOptions) (*Store, error) {
	if opts == nil {
		opts = &EmbeddedOptions{}
	}
	s, err := sqlitestore.Open(dir, sqlitestore.Options{NoSync: opts.NoSync})
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(engine.Config{Store: s, Limits: job.Limits{MaxArgsBytes: opts.MaxArgsBytes}, Logger: opts.Logger})
	if err != nil {
		s.Close()
		return nil, err
	}
	return &Store{s: s, eng: eng}, nil
}

// ErrDataDirLocked is wrapped by OpenEmbedded's error when another process
// owns the data directory.
var ErrDataDirLocked = sqlitestore.ErrLocked

// Close closes the store. Stop every Client that uses it first. On
// PostgreSQL it first hands the maintenance lead to another node.
func (s *Store) Close() error {
	if s.remote != nil {
		s.remote.Close()
		return nil
	}
	s.closeCluster()
	return s.s.Close()
}
