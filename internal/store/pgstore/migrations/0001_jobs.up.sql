-- Jobs, their unfinished dependencies, and queue settings. Every time is a
-- timestamptz (microsecond precision, like job.Truncate); args, metadata
-- and output are json so that they keep the bytes the client sent and stay
-- readable in psql.
CREATE TABLE drover_jobs (
	id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	state            text        NOT NULL CHECK (state IN ('pending', 'scheduled', 'available', 'running',
	                                                       'retryable', 'completed', 'cancelled', 'discarded')),
	queue            text        NOT NULL,
	kind             text        NOT NULL,
	priority         smallint    NOT NULL,
	scheduled_at     timestamptz NOT NULL,
	args             json        NOT NULL,
	attempt          integer     NOT NULL DEFAULT 0,
	max_attempts     integer     NOT NULL,
	timeout_us       bigint      NOT NULL DEFAULT 0,
	unique_key       text,                 -- NULL once released (job.HoldsUnique)
	unique_by_period boolean     NOT NULL DEFAULT false,
	tags             text[],
	metadata         json,
	depends_on       bigint[],
	pending_deps     integer     NOT NULL DEFAULT 0,
	output           json,
	errors           jsonb,                -- array of attempt errors
	created_at       timestamptz NOT NULL,
	created_by       text,
	attempted_at     timestamptz,
	finalized_at     timestamptz,
	attempted_by     text,
	lease_token      text,                 -- kept after settling, for idempotent repeats
	lease_expires_at timestamptz,
	settled          text                  -- how lease_token settled: complete, fail, snooze, rescue
) WITH (
	-- A queue table churns: every job is inserted, updated two or three
	-- times and deleted. Vacuum it early so that dead index entries do not
	-- pile up in front of the fetch order.
	autovacuum_vacuum_scale_factor = 0.02,
	autovacuum_analyze_scale_factor = 0.05
);

-- The fetch order, for available jobs only: a lease is a short range scan
-- however many jobs are stored.
CREATE INDEX drover_jobs_fetch ON drover_jobs (queue, priority, scheduled_at, id) WHERE state = 'available';
-- Every other state by id: lists by state and the rescuer's scan of running jobs.
CREATE INDEX drover_jobs_state ON drover_jobs (state, id) WHERE state <> 'available';
-- Scheduled and retryable jobs by due time, for the promoter.
CREATE INDEX drover_jobs_due ON drover_jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
-- Finished jobs by age, for the pruner.
CREATE INDEX drover_jobs_finalized ON drover_jobs (finalized_at) WHERE finalized_at IS NOT NULL;
-- Uniqueness is the database's job, so that it holds across nodes.
CREATE UNIQUE INDEX drover_jobs_unique ON drover_jobs (unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX drover_jobs_created_by ON drover_jobs (created_by, id) WHERE created_by IS NOT NULL;

-- Unfinished dependencies: one row per (dependency, dependant) until the
-- dependency completes.
CREATE TABLE drover_job_deps (
	dep_id bigint NOT NULL,
	job_id bigint NOT NULL,
	PRIMARY KEY (dep_id, job_id)
);
CREATE INDEX drover_job_deps_job ON drover_job_deps (job_id);

CREATE TABLE drover_queues (
	name       text        PRIMARY KEY,
	paused     boolean     NOT NULL DEFAULT false,
	updated_at timestamptz NOT NULL
);
