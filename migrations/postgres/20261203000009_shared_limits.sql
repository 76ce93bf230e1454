-- (PostgreSQL) Rate limits that hold across nodes: fixed-window counters per key (`k:<id>`)
-- and per tenant (`t:<id>`), checked and counted in one call. A tenant's requests take
-- its advisory lock for the call, so that no two nodes both take its last request; a
-- refused request is not counted.
CREATE TABLE rate_counters (
    id            TEXT COLLATE "C" NOT NULL,
    window_start  BIGINT NOT NULL,
    count         BIGINT NOT NULL,
    PRIMARY KEY (id, window_start)
);

CREATE FUNCTION dgidgi_rate_check(
    key_id TEXT, tenant_id TEXT, window_start_at BIGINT, per_key BIGINT, per_tenant BIGINT,
    OUT allowed BOOLEAN, OUT key_count BIGINT, OUT tenant_count BIGINT
) AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(tenant_id));
    SELECT COALESCE(MAX(c.count), 0) INTO key_count FROM rate_counters c
        WHERE c.id = key_id AND c.window_start = window_start_at;
    SELECT COALESCE(MAX(c.count), 0) INTO tenant_count FROM rate_counters c
        WHERE c.id = tenant_id AND c.window_start = window_start_at;
    allowed := key_count < per_key AND tenant_count < per_tenant;
    IF allowed THEN
        INSERT INTO rate_counters AS c (id, window_start, count)
            VALUES (key_id, window_start_at, 1), (tenant_id, window_start_at, 1)
            ON CONFLICT (id, window_start) DO UPDATE SET count = c.count + 1;
        key_count := key_count + 1;
        tenant_count := tenant_count + 1;
    END IF;
END
$$ LANGUAGE plpgsql;
