-- (PostgreSQL) One owner per chat session across nodes: the node that answers its
-- messages holds its lease (owner, epoch, lease_expires_at); every write of its reply
-- task names the epoch.
ALTER TABLE chat_sessions ADD COLUMN owner TEXT COLLATE "C";
ALTER TABLE chat_sessions ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE chat_sessions ADD COLUMN lease_expires_at TEXT COLLATE "C";
