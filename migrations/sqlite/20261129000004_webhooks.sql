-- Webhook endpoints (tenant_id NULL: platform-wide, registered by an operator), one
-- delivery per (event, endpoint) with a stable id (the webhook-id header), and every
-- attempt. Secrets are stored sealed (AES-256-GCM), never in clear.

CREATE TABLE webhook_endpoints (
    id                          TEXT PRIMARY KEY,
    tenant_id                   TEXT,
    url                         TEXT NOT NULL,
    events                      TEXT NOT NULL,
    description                 TEXT,
    secret                      TEXT NOT NULL,
    secret_hint                 TEXT NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  TEXT,
    enabled                     INTEGER NOT NULL,
    disabled_reason             TEXT,
    consecutive_failures        INTEGER NOT NULL,
    created_at                  TEXT NOT NULL,
    updated_at                  TEXT NOT NULL
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  TEXT,
    last_status      INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id             TEXT PRIMARY KEY,
    delivery_id    TEXT NOT NULL,
    attempted_at   TEXT NOT NULL,
    status_code    INTEGER,
    latency_ms     INTEGER NOT NULL,
    error          TEXT,
    next_retry_at  TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
