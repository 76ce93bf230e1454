-- (PostgreSQL) LLM use and cost. Each step's tokens and cost, once (`usage_records`, what GET /usage
-- reports); each tenant's running total for the calendar month (`tenant_month_usage`,
-- what a monthly budget is checked against); and what each run's step in flight has set
-- aside of its tenant's budget before it called the model (`runs.reserved_*`).
ALTER TABLE runs ADD COLUMN reserved_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN reserved_cost BIGINT NOT NULL DEFAULT 0;
CREATE INDEX runs_reserving ON runs (tenant_id) WHERE reserved_tokens > 0 OR reserved_cost > 0;

CREATE TABLE usage_records (
    run_id            TEXT COLLATE "C" NOT NULL,
    step              BIGINT NOT NULL,
    tenant_id         TEXT COLLATE "C" NOT NULL,
    agent_id          TEXT NOT NULL,
    day               TEXT COLLATE "C" NOT NULL,
    provider          TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens      BIGINT NOT NULL,
    cost_micros       BIGINT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE INDEX usage_by_tenant_day ON usage_records (tenant_id, day);

CREATE TABLE tenant_month_usage (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    month       TEXT COLLATE "C" NOT NULL,
    tokens      BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, month)
);
