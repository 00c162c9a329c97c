package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// CreateToken implements store.Store.
func (s *Store) CreateToken(ctx context.Context, p store.CreateTokenParams) (*store.TokenRecord, error) {
	now := job.Truncate(p.Now)
	var out *store.TokenRecord
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		res, err := s.wconn.ExecContext(ctx, `INSERT INTO tokens (name, scope, hash, created_at) VALUES (?, ?, ?, ?)`,
			store.CleanText(p.Name), p.Scope, p.Hash, micros(now))
		if err != nil {
			return fmt.Errorf("create token: %w", err)
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		out = &store.TokenRecord{ID: id, Name: store.CleanText(p.Name), Scope: p.Scope, Hash: p.Hash, CreatedAt: now}
		return nil
	})
	return out, err
}

const tokenCols = `id, name, scope, hash, created_at, revoked_at` //nolint:gosec // G101: column names, not a credential

func scanToken(r scanner) (*store.TokenRecord, error) {
	var t store.TokenRecord
	var created int64
	var revoked sql.NullInt64
	if err := r.Scan(&t.ID, &t.Name, &t.Scope, &t.Hash, &created, &revoked); err != nil {
		return nil, err
	}
	t.CreatedAt = fromMicros(created)
	t.RevokedAt = nullTime(revoked)
	return &t, nil
}

// GetToken implements store.Store.
func (s *Store) GetToken(ctx context.Context, id int64) (*store.TokenRecord, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("store closed: %w", job.ErrUnavailable)
	}
	t, err := scanToken(s.rdb.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = ?`, id))
	if isNoRows(err) {
		return nil, fmt.Errorf("token %d: %w", id, job.ErrNotFound)
	}
	return t, err
}

// ListTokens implements store.Store.
func (s *Store) ListTokens(ctx context.Context) ([]store.TokenRecord, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("store closed: %w", job.ErrUnavailable)
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.TokenRecord
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *t)
	}
	return out, rows.Err()
}

// RevokeToken implements store.Store.
func (s *Store) RevokeToken(ctx context.Context, p store.RevokeTokenParams) error {
	return s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		res, err := s.wconn.ExecContext(ctx, `UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?`,
			micros(job.Truncate(p.Now)), p.ID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("token %d: %w", p.ID, job.ErrNotFound)
		}
		return nil
	})
}
