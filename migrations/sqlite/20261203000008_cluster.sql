-- Several nodes on one database: each node's heartbeat, and one owner per run. A run is
-- driven only by the node holding its lease (owner, epoch, lease_expires_at); every write
-- of its driver names the epoch, and a newer claim makes the older writes fail. A cancel
-- is recorded on the run, so that whichever node drives it (now or next) honours it.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    region        TEXT NOT NULL,
    version       TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
);
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_expires_at TEXT;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
