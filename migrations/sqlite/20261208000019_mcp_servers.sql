-- Tenants' MCP servers (Streamable HTTP): where they are, the headers sent to them (sealed
-- with the tenant's id bound, never in clear; their names kept apart to show), and the
-- tools they listed at registration or on the last refresh.
CREATE TABLE mcp_servers (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    name             TEXT NOT NULL,
    url              TEXT NOT NULL,
    sealed_headers   TEXT,
    header_names     TEXT NOT NULL,
    tools            TEXT NOT NULL,
    tools_listed_at  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX mcp_servers_by_name ON mcp_servers (tenant_id, name);
