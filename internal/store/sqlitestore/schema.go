package sqlitestore

// schemaVersion is stored in PRAGMA user_version; migrations[i] moves a
// database from version i to i+1.
var migrations = []string{
	`
CREATE TABLE jobs (
	id               INTEGER PRIMARY KEY AUTOINCREMENT,
	state            TEXT    NOT NULL,
	queue            TEXT    NOT NULL,
	kind             TEXT    NOT NULL,
	priority         INTEGER NOT NULL,
	scheduled_at     INTEGER NOT NULL, -- Unix microseconds, like every time here
	args             BLOB    NOT NULL,
	attempt          INTEGER NOT NULL DEFAULT 0,
	max_attempts     INTEGER NOT NULL,
	timeout_us       INTEGER NOT NULL DEFAULT 0,
	unique_key       TEXT,             -- NULL once released (job.HoldsUnique)
	unique_by_period INTEGER NOT NULL DEFAULT 0,
	tags             TEXT,             -- JSON array
	metadata         BLOB,
	depends_on       TEXT,             -- JSON array of ids
	pending_deps     INTEGER NOT NULL DEFAULT 0,
	output           BLOB,
	errors           BLOB,             -- JSON array of attempt errors
	created_at       INTEGER NOT NULL,
	attempted_at     INTEGER,
	finalized_at     INTEGER,
	attempted_by     TEXT,
	lease_token      TEXT,             -- kept after settling, for idempotent repeats
	lease_expires_at INTEGER,
	settled          TEXT              -- how lease_token settled: complete, fail, snooze
);

-- Every index is a B-tree that each state change must update, so there are
-- as few as the queries allow: an insert touches the table and jobs_fetch,
-- a lease the table, jobs_fetch and jobs_state, a completion the table and
-- jobs_state.
--
-- The fetch order, for available jobs only: leasing is a short range scan
-- however many jobs are stored.
CREATE INDEX jobs_fetch ON jobs (queue, priority, scheduled_at, id) WHERE state = 'available';
-- Every other state, by id: lists by state, the rescuer's scan of running
-- jobs (as many as there are workers) and the pruner's scan of finished
-- jobs in id order. Queries name the redundant term state <> 'available'
-- so that SQLite sees the index applies.
CREATE INDEX jobs_state ON jobs (state, id) WHERE state <> 'available';
CREATE INDEX jobs_due ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key) WHERE unique_key IS NOT NULL;

-- Unfinished dependencies: one row per (dependency, dependant) until the
-- dependency completes.
CREATE TABLE job_deps (
	dep_id INTEGER NOT NULL,
	job_id INTEGER NOT NULL,
	PRIMARY KEY (dep_id, job_id)
) WITHOUT ROWID;

CREATE TABLE queues (
	name       TEXT PRIMARY KEY,
	paused     INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL
) WITHOUT ROWID;
`,
	`
CREATE TABLE tokens (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	name       TEXT    NOT NULL,
	scope      TEXT    NOT NULL,
	hash       TEXT    NOT NULL, -- SHA-256 of the secret; the secret is never stored
	created_at INTEGER NOT NULL,
	revoked_at INTEGER
);
`,
	`
CREATE TABLE idempotency_keys (
	key          TEXT    PRIMARY KEY,
	request_hash TEXT    NOT NULL,
	status       INTEGER NOT NULL,
	body         BLOB    NOT NULL,
	created_at   INTEGER NOT NULL
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
`,
	`
ALTER TABLE jobs ADD COLUMN created_by TEXT;
CREATE INDEX jobs_created_by ON jobs (created_by, id) WHERE created_by IS NOT NULL;
`,
}
