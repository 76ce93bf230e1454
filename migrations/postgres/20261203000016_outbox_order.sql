-- The webhook fan-out reads the outbox in commit order, not id order: an event whose id
-- was made before another's but whose transaction committed after it was skipped by the
-- id cursor (between nodes, and between batches of one). Each event now carries the id
-- of the transaction that wrote it; the fan-out reads by (tx, id), only below the oldest
-- transaction still running, so no event can appear behind the cursor. The new cursor
-- (`webhooks.outbox_cursor`, "<tx> <id>") continues where the old one stood: every event
-- written before this migration carries its transaction id.
ALTER TABLE outbox ADD COLUMN tx BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX outbox_by_tx ON outbox (tx, id);
INSERT INTO runtime_settings (name, value)
SELECT 'webhooks.outbox_cursor', pg_current_xact_id()::text || ' ' || c.value
FROM runtime_settings c WHERE c.name = 'webhooks.cursor';
DELETE FROM runtime_settings WHERE name = 'webhooks.cursor';
