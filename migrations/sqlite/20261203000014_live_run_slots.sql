-- The runs that hold their tenant's run slots, so that taking a slot counts only those
-- (it counted every run the tenant ever had: the runs_by_agent index, by tenant).
CREATE INDEX runs_holding_slots ON runs (tenant_id) WHERE admitted = 1 AND status IN ('queued', 'running');
