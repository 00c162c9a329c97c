-- Leader election: one row per elected role. A node holds a role while
-- expires_at (database time) is in the future and renews it before then;
-- another node may take it once it has expired.
CREATE TABLE drover_leader (
	name       text        PRIMARY KEY,
	leader_id  text        NOT NULL,
	elected_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);
