-- Restores: one row per restoration task. volumes, resources_status and
-- resources_reason are JSON documents (TEXT); times are unix microseconds.

CREATE TABLE restores (
	id                 TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	project_id         TEXT    NOT NULL,
	checkpoint_id      TEXT    NOT NULL,
	checkpoint_item_id TEXT    NOT NULL,
	server_id          TEXT    NOT NULL,
	volumes            TEXT    NOT NULL DEFAULT '[]',
	power_on           INTEGER NOT NULL DEFAULT 0,
	restore_target     TEXT    NOT NULL DEFAULT '',
	status             TEXT    NOT NULL,
	resources_status   TEXT    NOT NULL DEFAULT '{}',
	resources_reason   TEXT    NOT NULL DEFAULT '{}',
	job_id             TEXT    NOT NULL DEFAULT '',
	created_at         BIGINT  NOT NULL,
	updated_at         BIGINT  NOT NULL
);

CREATE INDEX restores_project_created ON restores (project_id, created_at);
CREATE INDEX restores_item ON restores (checkpoint_item_id);

-- At most one restore onto a server runs at a time (CSBS.6015).
CREATE UNIQUE INDEX restores_one_per_server ON restores (server_id)
	WHERE status = 'in_progress';
