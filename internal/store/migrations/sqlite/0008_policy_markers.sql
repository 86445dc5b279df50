-- Where deleted policies stood in a list: a client that pages with the id of
-- the last policy it saw as marker can go on after that policy is deleted
-- (the cloud's SDK follows next links through every page). Rows are purged
-- a day after the delete. Times are unix microseconds.
CREATE TABLE policy_markers (
	id         TEXT   NOT NULL PRIMARY KEY,
	project_id TEXT   NOT NULL,
	name       TEXT   NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL,
	deleted_at BIGINT NOT NULL
);

CREATE INDEX policy_markers_deleted ON policy_markers (deleted_at);
