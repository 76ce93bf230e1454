-- A run that holds one of its tenant's run slots (max_concurrent_runs), counted across
-- every node; the slot is free again when the run ends.
ALTER TABLE runs ADD COLUMN admitted BIGINT NOT NULL DEFAULT 0;
