-- (PostgreSQL) A tenant's run slot taken in one statement: the tenant's advisory lock is
-- held only inside this call, not across a transaction's round trips (which held pool
-- connections waiting on each other under load).
CREATE FUNCTION dgidgi_take_slot(run_id TEXT, tenant TEXT, slots BIGINT) RETURNS BOOLEAN AS $$
DECLARE
    taken BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('slots:' || tenant));
    UPDATE runs SET admitted = 1 WHERE id = run_id AND (admitted = 1 OR
        (SELECT COUNT(*) FROM runs r WHERE r.tenant_id = tenant AND r.admitted = 1
         AND r.status IN ('queued', 'running')) < slots);
    GET DIAGNOSTICS taken = ROW_COUNT;
    RETURN taken = 1;
END
$$ LANGUAGE plpgsql;
