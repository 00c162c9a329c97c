package pgstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover/internal/job"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one step of the schema: version N moves a database from
// version N-1 to N (Up) and back (Down).
type Migration struct {
	Version int
	Name    string
	Up      string
	Down    string
}

// Latest asks Migrate for the newest version this build knows.
const Latest = -1

// migrations returns the embedded migrations by version. File names are
// NNNN_name.up.sql and NNNN_name.down.sql; versions run 1, 2, 3... with
// no gap, which a test checks.
func migrations() []Migration {
	byVersion := map[int]*Migration{}
	err := fs.WalkDir(migrationFiles, "migrations", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := strings.TrimPrefix(path, "migrations/")
		num, rest, ok := strings.Cut(base, "_")
		if !ok {
			return fmt.Errorf("migration file %s: want NNNN_name.up.sql", base)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return fmt.Errorf("migration file %s: %w", base, err)
		}
		body, err := migrationFiles.ReadFile(path)
		if err != nil {
			return err
		}
		m := byVersion[v]
		if m == nil {
			m = &Migration{Version: v}
			byVersion[v] = m
		}
		switch {
		case strings.HasSuffix(rest, ".up.sql"):
			m.Name, m.Up = strings.TrimSuffix(rest, ".up.sql"), string(body)
		case strings.HasSuffix(rest, ".down.sql"):
			m.Down = string(body)
		default:
			return fmt.Errorf("migration file %s: want .up.sql or .down.sql", base)
		}
		return nil
	})
	if err != nil {
		panic(err) // the files are embedded: a bad name is a build mistake, caught by the tests
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out
}

// Migrations returns the schema's migrations in version order.
func Migrations() []Migration { return migrations() }

const migrationsTable = `CREATE TABLE IF NOT EXISTS drover_migrations (
	version    integer     PRIMARY KEY,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// withMigrationLock runs fn on one connection that holds a session
// advisory lock for the schema, so that nodes starting together migrate
// one after the other: the first applies the migrations, the others find
// nothing left to do.
func withMigrationLock(ctx context.Context, pool *pgxpool.Pool, schema string, fn func(*pgxpool.Conn) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", unavailable(err))
	}
	defer conn.Release()
	// The lock is named after the schema the migrations will land in, not
	// after how the caller named it: a node that passes the schema and one
	// whose pool's search_path merely selects it (New, schema "") must
	// still take turns.
	lockSchema := schema
	if lockSchema == "" {
		if err := conn.QueryRow(ctx, `SELECT coalesce(current_schema(), '')`).Scan(&lockSchema); err != nil {
			return fmt.Errorf("migrate: read current schema: %w", unavailable(err))
		}
	}
	key := "drover_migrate:" + lockSchema
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended($1, 0))`, key); err != nil {
		return fmt.Errorf("migrate: take the migration lock: %w", unavailable(err))
	}
	defer func() {
		// A fresh context: the lock must go even when ctx is done.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, key); err != nil {
			// The session keeps the lock: drop the connection instead.
			_ = conn.Conn().Close(uctx)
		}
	}()
	if schema != "" {
		// Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE
		// privilege on the database even when the schema exists.
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
			return fmt.Errorf("migrate: %w", unavailable(err))
		}
		if exists {
			schema = ""
		}
	}
	if schema != "" {
		if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("migrate: create schema %s: %w", schema, unavailable(err))
		}
	}
	if _, err := conn.Exec(ctx, migrationsTable); err != nil {
		return fmt.Errorf("migrate: %w", unavailable(err))
	}
	return fn(conn)
}

// Migrate moves the schema up to version target (Latest for the newest)
// and returns the versions it applied, in order. Each migration runs in its
// own transaction with its record in drover_migrations. schema, when set,
// is created first (the pool's search_path must name it). Migrate is safe
// to run from several nodes at once. It never moves a schema down; a
// database newer than this build is an error.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string, target int) ([]int, error) {
	all := migrations()
	if target == Latest {
		target = len(all)
	}
	if target < 0 || target > len(all) {
		return nil, &job.ValidationError{Field: "version", Message: fmt.Sprintf("must be between 0 and %d", len(all))}
	}
	var applied []int
	err := withMigrationLock(ctx, pool, schema, func(conn *pgxpool.Conn) error {
		cur, err := version(ctx, conn)
		if err != nil {
			return err
		}
		if cur > len(all) {
			return fmt.Errorf("database schema is at version %d, newer than this build's %d: upgrade Drover: %w", cur, len(all), job.ErrUnavailable)
		}
		if target <= cur {
			return nil // never down: that is MigrateDown's job, and it drops data
		}
		for _, m := range all[cur:target] {
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, m.Up); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO drover_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
				return err
			})
			if err != nil {
				return fmt.Errorf("migrate up to %d (%s): %w", m.Version, m.Name, unavailable(err))
			}
			applied = append(applied, m.Version)
		}
		return nil
	})
	return applied, err
}

// MigrateDown moves the schema down to version target (0 removes every
// Drover table but drover_migrations) and returns the versions it undid,
// newest first. Down migrations drop data: `drover migrate down` asks for
// the target version explicitly.
func MigrateDown(ctx context.Context, pool *pgxpool.Pool, schema string, target int) ([]int, error) {
	all := migrations()
	if target < 0 || target > len(all) {
		return nil, &job.ValidationError{Field: "version", Message: fmt.Sprintf("must be between 0 and %d", len(all))}
	}
	var undone []int
	err := withMigrationLock(ctx, pool, schema, func(conn *pgxpool.Conn) error {
		cur, err := version(ctx, conn)
		if err != nil {
			return err
		}
		if cur > len(all) {
			return fmt.Errorf("database schema is at version %d, newer than this build's %d: %w", cur, len(all), job.ErrUnavailable)
		}
		for v := cur; v > target; v-- {
			m := all[v-1]
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, m.Down); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `DELETE FROM drover_migrations WHERE version = $1`, m.Version)
				return err
			})
			if err != nil {
				return fmt.Errorf("migrate down from %d (%s): %w", m.Version, m.Name, unavailable(err))
			}
			undone = append(undone, m.Version)
		}
		return nil
	})
	return undone, err
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func version(ctx context.Context, q queryRower) (int, error) {
	var v int
	if err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM drover_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", unavailable(err))
	}
	return v, nil
}

// Version returns the schema version of the database the pool reaches:
// 0 when Drover's tables were never created.
func Version(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('drover_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", unavailable(err))
	}
	if !exists {
		return 0, nil
	}
	return version(ctx, pool)
}
