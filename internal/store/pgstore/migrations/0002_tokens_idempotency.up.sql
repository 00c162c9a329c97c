-- API tokens (only the SHA-256 of each secret) and Idempotency-Key records.
CREATE TABLE drover_tokens (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name       text        NOT NULL,
	scope      text        NOT NULL,
	hash       text        NOT NULL,
	created_at timestamptz NOT NULL,
	revoked_at timestamptz
);

CREATE TABLE drover_idempotency_keys (
	key          text        PRIMARY KEY,
	request_hash text        NOT NULL,
	status       integer     NOT NULL,
	body         bytea       NOT NULL,
	created_at   timestamptz NOT NULL
);
CREATE INDEX drover_idempotency_keys_created ON drover_idempotency_keys (created_at);
