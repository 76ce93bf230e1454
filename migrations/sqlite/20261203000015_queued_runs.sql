-- How many of a tenant's runs wait for a slot, counted when a run is created (the
-- `runs.max_queued_per_tenant` check is part of the run's insert): only the queued runs
-- are read, not every run the tenant ever had.
CREATE INDEX runs_queued ON runs (tenant_id) WHERE status = 'queued';
