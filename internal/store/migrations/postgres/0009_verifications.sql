-- The last verification of each backup (issue 12): when the repository
-- last read and authenticated everything the backup references, and what
-- of it could not be restored then. damage is JSON
-- ([{"volume_id", "chunk_size", "offsets"}]) when damaged is 1. Times are
-- unix microseconds. Rows of deleted backups are ignored.
CREATE TABLE verifications (
	item_id     TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	project_id  TEXT COLLATE "C" NOT NULL,
	verified_at BIGINT  NOT NULL,
	damaged     INTEGER NOT NULL DEFAULT 0,
	damage      TEXT    NOT NULL DEFAULT '[]',
	reason      TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX verifications_damaged ON verifications (damaged, project_id);
CREATE INDEX verifications_verified ON verifications (verified_at);
