-- Agents, their runs, the runs' finished steps, and the ordered event log behind SSE
-- (shared by runs and, later, chat sessions: stream_id is the run or session id).

CREATE TABLE agents (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    project_id     TEXT,
    name           TEXT NOT NULL,
    description    TEXT,
    system_prompt  TEXT,
    provider       TEXT,
    model          TEXT,
    fallbacks      TEXT NOT NULL,
    tools          TEXT NOT NULL,
    config         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX agents_by_tenant ON agents (tenant_id, id);

CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    agent_id     TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    goal         TEXT NOT NULL,
    input        TEXT NOT NULL,
    spec         TEXT NOT NULL,
    status       TEXT NOT NULL,
    output       TEXT,
    error        TEXT,
    usage        TEXT NOT NULL,
    artifacts    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    updated_at   TEXT NOT NULL
);
CREATE INDEX runs_by_agent ON runs (tenant_id, agent_id, id);
CREATE INDEX runs_by_status ON runs (status);

CREATE TABLE run_steps (
    run_id  TEXT NOT NULL,
    idx     INTEGER NOT NULL,
    step    TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE stream_events (
    stream_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    event_type  TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
