-- The webhook fan-out reads the outbox in commit order, not id order: an event whose id
-- was made before another's but whose unit committed after it was skipped by the id
-- cursor. On SQLite the one writer inserts in commit order, so the order is the rowid;
-- the new cursor (`webhooks.outbox_cursor`, "<rowid> <id>") starts just before the first
-- event the old one had not passed (an event it had passed may be fanned out again:
-- deliveries are at least once).
INSERT INTO runtime_settings (name, value)
SELECT 'webhooks.outbox_cursor',
       COALESCE((SELECT MIN(rowid) - 1 FROM outbox WHERE id > c.value),
                (SELECT MAX(rowid) FROM outbox), 0) || ' '
FROM runtime_settings c WHERE c.name = 'webhooks.cursor';
DELETE FROM runtime_settings WHERE name = 'webhooks.cursor';
