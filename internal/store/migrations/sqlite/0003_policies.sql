-- Backup policies (plans). Times are unix microseconds (UTC); JSON documents
-- are TEXT.

CREATE TABLE policies (
	id          TEXT   NOT NULL PRIMARY KEY,
	project_id  TEXT   NOT NULL,
	name        TEXT   NOT NULL,
	description TEXT   NOT NULL DEFAULT '',
	parameters  TEXT   NOT NULL DEFAULT '{}',
	resources   TEXT   NOT NULL DEFAULT '[]',
	tags        TEXT   NOT NULL DEFAULT '[]',
	created_at  BIGINT NOT NULL,
	updated_at  BIGINT NOT NULL
);

CREATE INDEX policies_project_created ON policies (project_id, created_at);

-- A server belongs to at most one policy.
CREATE TABLE policy_resources (
	project_id  TEXT NOT NULL,
	resource_id TEXT NOT NULL,
	policy_id   TEXT NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
	PRIMARY KEY (project_id, resource_id)
);

CREATE INDEX policy_resources_policy ON policy_resources (policy_id);

-- next_fire is the next fire time the scheduler acts on; NULL while the
-- operation is disabled.
CREATE TABLE scheduled_operations (
	id             TEXT    NOT NULL PRIMARY KEY,
	policy_id      TEXT    NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
	project_id     TEXT    NOT NULL,
	position       INTEGER NOT NULL DEFAULT 0,
	name           TEXT    NOT NULL DEFAULT '',
	description    TEXT    NOT NULL DEFAULT '',
	enabled        INTEGER NOT NULL,
	operation_type TEXT    NOT NULL,
	trigger_id     TEXT    NOT NULL,
	trigger_name   TEXT    NOT NULL DEFAULT '',
	pattern        TEXT    NOT NULL,
	start_time     BIGINT  NOT NULL,
	definition     TEXT    NOT NULL DEFAULT '{}',
	next_fire      BIGINT
);

CREATE INDEX scheduled_operations_policy ON scheduled_operations (policy_id);
CREATE INDEX scheduled_operations_next_fire ON scheduled_operations (next_fire);

-- One row per fire time that ran: the primary key makes a fire time run
-- once across processes. Rows outlive their policy (no foreign key).
CREATE TABLE policy_fires (
	operation_id  TEXT   NOT NULL,
	fire_time     BIGINT NOT NULL,
	policy_id     TEXT   NOT NULL,
	checkpoint_id TEXT   NOT NULL DEFAULT '',
	created_at    BIGINT NOT NULL,
	PRIMARY KEY (operation_id, fire_time)
);
