-- When an endpoint's current run of failed attempts began: failures disable an endpoint
-- only once they have gone on for webhooks.disable_after_secs, not after one burst.
ALTER TABLE webhook_endpoints ADD COLUMN failing_since TEXT;
