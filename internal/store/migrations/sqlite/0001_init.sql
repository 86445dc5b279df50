-- Times are unix microseconds (UTC); JSON documents are TEXT.

CREATE TABLE checkpoints (
	id         TEXT    NOT NULL PRIMARY KEY,
	project_id TEXT    NOT NULL,
	plan_id    TEXT    NOT NULL DEFAULT '',
	plan_name  TEXT    NOT NULL DEFAULT '',
	resources  TEXT    NOT NULL DEFAULT '[]',
	extra_info TEXT,
	created_at BIGINT  NOT NULL
);

CREATE INDEX checkpoints_project_created ON checkpoints (project_id, created_at);

-- name_fold and resource_name_fold hold the names case-folded by csbs, so
-- that substring filters fold case the same way in both databases.
CREATE TABLE items (
	id                 TEXT    NOT NULL PRIMARY KEY,
	checkpoint_id      TEXT    NOT NULL REFERENCES checkpoints (id),
	project_id         TEXT    NOT NULL,
	name               TEXT    NOT NULL DEFAULT '',
	name_fold          TEXT    NOT NULL DEFAULT '',
	description        TEXT    NOT NULL DEFAULT '',
	status             TEXT    NOT NULL,
	resource_id        TEXT    NOT NULL,
	resource_name      TEXT    NOT NULL DEFAULT '',
	resource_name_fold TEXT    NOT NULL DEFAULT '',
	resource_type      TEXT    NOT NULL DEFAULT '',
	resource_az        TEXT    NOT NULL DEFAULT '',
	policy_id          TEXT    NOT NULL DEFAULT '',
	private_ip         TEXT    NOT NULL DEFAULT '',
	created_at         BIGINT  NOT NULL,
	updated_at         BIGINT  NOT NULL,
	protected_at       BIGINT  NOT NULL,
	deleted            INTEGER NOT NULL DEFAULT 0,
	tags               TEXT    NOT NULL DEFAULT '[]',
	info               TEXT    NOT NULL DEFAULT '{}'
);

CREATE INDEX items_project_created ON items (project_id, created_at);
CREATE INDEX items_checkpoint ON items (checkpoint_id);
CREATE INDEX items_resource ON items (resource_id, created_at);

-- At most one backup of a server waits or runs at a time.
CREATE UNIQUE INDEX items_one_running_backup ON items (resource_id)
	WHERE status IN ('waiting_protect', 'protecting');

CREATE TABLE jobs (
	id            TEXT    NOT NULL PRIMARY KEY,
	kind          TEXT    NOT NULL,
	project_id    TEXT    NOT NULL DEFAULT '',
	checkpoint_id TEXT    NOT NULL DEFAULT '',
	item_id       TEXT    NOT NULL DEFAULT '',
	plan_id       TEXT    NOT NULL DEFAULT '',
	restore_id    TEXT    NOT NULL DEFAULT '',
	args          TEXT,
	status        TEXT    NOT NULL,
	attempt       INTEGER NOT NULL DEFAULT 0,
	lease_owner   TEXT    NOT NULL DEFAULT '',
	lease_until   BIGINT  NOT NULL DEFAULT 0,
	error         TEXT    NOT NULL DEFAULT '',
	created_at    BIGINT  NOT NULL,
	started_at    BIGINT,
	finished_at   BIGINT
);

CREATE INDEX jobs_status_created ON jobs (status, created_at);
CREATE INDEX jobs_item ON jobs (item_id);
