-- Where a tenant's data lives: its regional preferences and its storage configuration,
-- each a JSON document (BYOS keys inside are sealed, bound to the tenant). A tenant with
-- no row has the defaults.
CREATE TABLE tenant_placement (
    tenant_id   TEXT COLLATE "C" PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    preferences TEXT,
    storage     TEXT,
    updated_at  TEXT NOT NULL
);
