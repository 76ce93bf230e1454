-- A run that waits for a human (status requires_action) keeps the step that waits, its
-- pending tool calls and their answers so far (`pending`, JSON), and the wait's deadline
-- (`wait_until`), so that a restart or another node finds the wait as it was.
ALTER TABLE runs ADD COLUMN pending TEXT;
ALTER TABLE runs ADD COLUMN wait_until TEXT;
-- The waits whose deadline has passed are looked up on every heartbeat.
CREATE INDEX runs_waiting ON runs (wait_until) WHERE status = 'requires_action';
