-- Tokens revoked before their expiry (DELETE /v3/auth/tokens). A row is
-- needed only until the token expires; expires_at is unix microseconds.
CREATE TABLE revoked_tokens (
	id         TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
	expires_at BIGINT NOT NULL
);

CREATE INDEX revoked_tokens_expires ON revoked_tokens (expires_at);
