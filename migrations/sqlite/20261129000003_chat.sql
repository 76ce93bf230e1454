-- Chat sessions and their messages; a session's events live in stream_events under the
-- session id.

CREATE TABLE chat_sessions (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    project_id     TEXT NOT NULL,
    agent_id       TEXT,
    title          TEXT,
    system_prompt  TEXT,
    model          TEXT,
    providers      TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX chat_sessions_by_tenant ON chat_sessions (tenant_id, id);

CREATE TABLE chat_messages (
    id           TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    role         TEXT NOT NULL,
    content      TEXT NOT NULL,
    status       TEXT NOT NULL,
    reply_id     TEXT,
    in_reply_to  TEXT,
    usage        TEXT,
    error        TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX chat_messages_by_session ON chat_messages (session_id, id);
