//! LLM use and cost: each step's record (written once, with the step), each tenant's total
//! for the calendar month, the reservations that steps in flight hold against their
//! tenant's monthly budget, and the usage report (`GET /usage`).

use dgidgi_actors::events::{Fence, Owned};
use dgidgi_actors::run::{Budget, Reservation, Run, Step};
use dgidgi_actors::time;
use serde::Serialize;

use super::cluster::held;
use super::read::Record;
use super::writer::Stmt;
use super::{Backend, Result, Store};

/// The month (`YYYY-MM`) of stored time `at`, or of now when it has none.
fn month_of(at: &str) -> String {
    let at = if at.len() >= 10 {
        at.to_string()
    } else {
        time::now()
    };
    at[..7].to_string()
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A limit as bound to SQL: -1 for none.
fn limit(n: Option<u64>) -> i64 {
    n.map_or(-1, int)
}

/// The statements that record what `step` of `run` used, once: the tenant's total for the
/// month (only while the step has no record yet), then the record. A step saved again (a
/// step that waited for a human, saved when it waits and when it ends) counts once.
pub(super) fn usage_stmts(run: &Run, step: &Step) -> [Stmt; 2] {
    let at = if step.started_at.len() >= 10 {
        step.started_at.clone()
    } else {
        time::now()
    };
    let usage = step.usage;
    let total = Stmt::new(
        "INSERT INTO tenant_month_usage (tenant_id, month, tokens, cost_micros) \
         SELECT $1, $2, $3, $4 WHERE NOT EXISTS \
         (SELECT 1 FROM usage_records WHERE run_id = $5 AND step = $6) \
         ON CONFLICT (tenant_id, month) DO UPDATE SET \
         tokens = tenant_month_usage.tokens + excluded.tokens, \
         cost_micros = tenant_month_usage.cost_micros + excluded.cost_micros",
    )
    .bind(&run.tenant_id)
    .bind(month_of(&at))
    .bind(int(usage.total_tokens))
    .bind(int(usage.cost_micros))
    .bind(&run.id)
    .bind(i64::from(step.index));
    let record = Stmt::new(
        "INSERT INTO usage_records (run_id, step, tenant_id, agent_id, day, provider, model, \
         prompt_tokens, completion_tokens, total_tokens, cost_micros) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (run_id, step) DO NOTHING",
    )
    .bind(&run.id)
    .bind(i64::from(step.index))
    .bind(&run.tenant_id)
    .bind(&run.agent_id)
    .bind(at[..10].to_string())
    .bind(&step.provider)
    .bind(&step.model)
    .bind(int(usage.prompt_tokens))
    .bind(int(usage.completion_tokens))
    .bind(int(usage.total_tokens))
    .bind(int(usage.cost_micros));
    [total, record]
}

/// One row of the usage report: a day, an agent, a provider and a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub day: String,
    pub agent_id: String,
    pub provider: String,
    pub model: String,
    /// Runs with a step in this row.
    pub runs: i64,
    pub steps: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost_micros: i64,
}

impl Store {
    /// Sets `want` aside for `run`'s next step if its tenant's `monthly` budget allows (see
    /// `RunStore::reserve`). On PostgreSQL the tenant's advisory lock makes the check and the
    /// reservation one step for every node; SQLite has one writer.
    pub(super) async fn reserve_step(
        &self,
        run: &Run,
        want: Reservation,
        monthly: Budget,
    ) -> Result<Option<&'static str>> {
        let month = month_of("");
        let mut unit = Vec::new();
        if self.backend == Backend::Postgres {
            unit.push(
                Stmt::new("SELECT pg_advisory_xact_lock(hashtext('budget:' || $1))")
                    .bind(&run.tenant_id),
            );
        }
        let fence = Fence {
            owned: Owned::Run(run.id.clone()),
            epoch: run.epoch,
        };
        unit.push(held(self.node_id(), &fence));
        let within = |column: &str, spent: &str, limit: &str, want: &str| {
            format!(
                "({limit} < 0 OR COALESCE((SELECT {spent} FROM tenant_month_usage \
                 WHERE tenant_id = $4 AND month = $5), 0) + (SELECT COALESCE(SUM({column}), 0) \
                 FROM runs WHERE tenant_id = $4 AND id <> $1 AND (reserved_tokens > 0 OR reserved_cost > 0)) \
                 + {want} <= {limit})"
            )
        };
        let sql = format!(
            "UPDATE runs SET reserved_tokens = $2, reserved_cost = $3 WHERE id = $1 AND {} AND {}",
            within("reserved_tokens", "tokens", "$6", "$2"),
            within("reserved_cost", "cost_micros", "$7", "$3"),
        );
        unit.push(
            Stmt::new(sql)
                .bind(&run.id)
                .bind(int(want.tokens))
                .bind(int(want.cost_micros))
                .bind(&run.tenant_id)
                .bind(month)
                .bind(limit(monthly.tokens))
                .bind(limit(monthly.cost_micros)),
        );
        let done = self.write(unit).await?;
        if done.last().is_some_and(|d| d.changed == 1) {
            return Ok(None);
        }
        // Refused: say which budget (as the store sees it now).
        let spent = self.spent_this_month(&run.tenant_id).await?;
        let held_by_others = self.reserved_by_others(run).await?;
        let so_far = Reservation {
            tokens: spent.tokens + held_by_others.tokens,
            cost_micros: spent.cost_micros + held_by_others.cost_micros,
        };
        Ok(Some(monthly.exceeded_by(so_far, want).unwrap_or("tokens")))
    }

    /// What tenant `tenant_id`'s runs have used this calendar month.
    pub async fn spent_this_month(&self, tenant_id: &str) -> Result<Reservation> {
        let sql = "SELECT tokens, cost_micros FROM tenant_month_usage WHERE tenant_id = $1 AND month = $2";
        let rows = self
            .read(sql, vec![tenant_id.into(), month_of("").into()], |row| {
                Ok(Reservation {
                    tokens: row.get::<i64>("tokens")?.max(0) as u64,
                    cost_micros: row.get::<i64>("cost_micros")?.max(0) as u64,
                })
            })
            .await?;
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    async fn reserved_by_others(&self, run: &Run) -> Result<Reservation> {
        let sql = "SELECT CAST(COALESCE(SUM(reserved_tokens), 0) AS BIGINT) AS tokens, \
                   CAST(COALESCE(SUM(reserved_cost), 0) AS BIGINT) AS cost \
                   FROM runs WHERE tenant_id = $1 AND id <> $2 AND (reserved_tokens > 0 OR reserved_cost > 0)";
        let rows = self
            .read(
                sql,
                vec![run.tenant_id.as_str().into(), run.id.as_str().into()],
                |row| {
                    Ok(Reservation {
                        tokens: row.get::<i64>("tokens")?.max(0) as u64,
                        cost_micros: row.get::<i64>("cost")?.max(0) as u64,
                    })
                },
            )
            .await?;
        Ok(rows.into_iter().next().unwrap_or_default())
    }

    /// Tenant `tenant_id`'s LLM use from day `from` to day `to` (`YYYY-MM-DD`, both
    /// included), by day, agent, provider and model; of one agent when `agent_id` is given.
    pub async fn usage_report(
        &self,
        tenant_id: &str,
        from: &str,
        to: &str,
        agent_id: Option<&str>,
    ) -> Result<Vec<UsageRow>> {
        let sql = format!(
            "SELECT day, agent_id, provider, model, COUNT(DISTINCT run_id) AS runs, COUNT(*) AS steps, \
             CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
             CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
             CAST(SUM(total_tokens) AS BIGINT) AS total_tokens, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros \
             FROM usage_records WHERE tenant_id = $1 AND day >= $2 AND day <= $3{} \
             GROUP BY day, agent_id, provider, model ORDER BY day, agent_id, provider, model",
            if agent_id.is_some() { " AND agent_id = $4" } else { "" }
        );
        let mut binds = vec![tenant_id.into(), from.into(), to.into()];
        binds.extend(agent_id.map(Into::into));
        self.read(&sql, binds, usage_row).await
    }
}

fn usage_row(row: &Record) -> Result<UsageRow> {
    Ok(UsageRow {
        day: row.get("day")?,
        agent_id: row.get("agent_id")?,
        provider: row.get("provider")?,
        model: row.get("model")?,
        runs: row.get("runs")?,
        steps: row.get("steps")?,
        prompt_tokens: row.get("prompt_tokens")?,
        completion_tokens: row.get("completion_tokens")?,
        total_tokens: row.get("total_tokens")?,
        cost_micros: row.get("cost_micros")?,
    })
}
