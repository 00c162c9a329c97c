package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

const tokenCols = `id, name, scope, hash, created_at, revoked_at` //nolint:gosec // G101: column names, not a credential

func scanToken(r pgx.Row) (*store.TokenRecord, error) {
	var t store.TokenRecord
	var revoked *time.Time
	if err := r.Scan(&t.ID, &t.Name, &t.Scope, &t.Hash, &t.CreatedAt, &revoked); err != nil {
		return nil, err
	}
	t.CreatedAt = t.CreatedAt.UTC()
	t.RevokedAt = utc(revoked)
	return &t, nil
}

// CreateToken implements store.Store.
func (s *Store) CreateToken(ctx context.Context, p store.CreateTokenParams) (*store.TokenRecord, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	now := job.Truncate(p.Now)
	t, err := scanToken(s.pool.QueryRow(ctx, `INSERT INTO drover_tokens (name, scope, hash, created_at)
		VALUES ($1, $2, $3, $4) RETURNING `+tokenCols, store.CleanText(p.Name), p.Scope, p.Hash, now))
	if err != nil {
		return nil, fmt.Errorf("create token: %w", unavailable(err))
	}
	return t, nil
}

// GetToken implements store.Store.
func (s *Store) GetToken(ctx context.Context, id int64) (*store.TokenRecord, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM drover_tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("token %d: %w", id, job.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get token %d: %w", id, unavailable(err))
	}
	return t, nil
}

// ListTokens implements store.Store.
func (s *Store) ListTokens(ctx context.Context) ([]store.TokenRecord, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM drover_tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", unavailable(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.TokenRecord, error) {
		t, err := scanToken(r)
		if err != nil {
			return store.TokenRecord{}, err
		}
		return *t, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", unavailable(err))
	}
	return out, nil
}

// RevokeToken implements store.Store.
func (s *Store) RevokeToken(ctx context.Context, p store.RevokeTokenParams) error {
	if err := s.live(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE drover_tokens SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2`,
		job.Truncate(p.Now), p.ID)
	if err != nil {
		return fmt.Errorf("revoke token %d: %w", p.ID, unavailable(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("token %d: %w", p.ID, job.ErrNotFound)
	}
	return nil
}
