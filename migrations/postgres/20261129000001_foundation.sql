-- Foundation (PostgreSQL): tenants, users, API keys, projects, idempotency records, the domain-event
-- outbox and runtime settings. Timestamps are RFC 3339 text with a fixed width, so they
-- sort as text; ids are prefixed UUIDv7 text, so they sort by creation time.

CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE users (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    email       TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (tenant_id, email)
);
CREATE INDEX users_by_tenant ON users (tenant_id, id);

-- tenant_id is NULL for platform-operator keys.
CREATE TABLE api_keys (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant_id     TEXT COLLATE "C" REFERENCES tenants(id),
    name          TEXT NOT NULL,
    key_type      TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    environment   TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT,
    revoked_at    TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

CREATE TABLE projects (
    id           TEXT COLLATE "C" PRIMARY KEY,
    tenant_id    TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    description  TEXT,
    language     TEXT,
    metadata     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX projects_by_tenant ON projects (tenant_id, id);

-- One row per (scope, Idempotency-Key); status is NULL while the first request runs.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       BIGINT,
    response     TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);

-- Domain events written in the same transaction as the change they describe; the webhook
-- actor reads them from here.
CREATE TABLE outbox (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant_id     TEXT COLLATE "C" NOT NULL,
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX outbox_by_tenant ON outbox (tenant_id, id);

CREATE TABLE runtime_settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
