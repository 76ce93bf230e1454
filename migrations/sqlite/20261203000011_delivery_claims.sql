-- The node that claimed a due webhook delivery (until its attempt is recorded), so that
-- the claims of a node that died are handed back at once rather than when they expire.
ALTER TABLE webhook_deliveries ADD COLUMN claimed_by TEXT;
