//! Agent runs, their finished steps and the ordered event logs (`stream_events`) behind SSE.

use async_trait::async_trait;
use dgidgi_actors::chat::Message;
use dgidgi_actors::events::{DomainEvent, Fence, Owned, StreamEvent};
use dgidgi_actors::run::{
    Admit, Budget, Created, Pause, Reservation, Run, RunStatus, RunStore, Step,
};
use dgidgi_actors::time;
use dgidgi_actors::StoreFailure;
use sqlx::Row;

use super::chat::message_row;
use super::cluster::held;
use super::events::{append_stmts, crash_point};
use super::outbox::outbox_row;
use super::read::Record;
use super::usage::usage_stmts;
use super::writer::Stmt;
use super::{for_actors, json_column, to_json, Error, Page, Paged, Result, Store};
use crate::ids::now_rfc3339;

const COLUMNS: &str =
    "id, tenant_id, agent_id, project_id, goal, input, spec, status, output, error, usage, \
                       artifacts, created_at, started_at, finished_at, updated_at, session_id, message_id, \
                       epoch, cancel_requested, pending";

fn run_from_row(row: &Record) -> Result<Run> {
    let status: String = row.get("status")?;
    let error: Option<String> = row.get("error")?;
    Ok(Run {
        id: row.get("id")?,
        tenant_id: row.get("tenant_id")?,
        agent_id: row.get("agent_id")?,
        project_id: row.get("project_id")?,
        goal: row.get("goal")?,
        input: json_column(row, "input")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("run status '{status}'")))?,
        steps: Vec::new(),
        output: row.get("output")?,
        usage: json_column(row, "usage")?,
        error: error
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| Error::Corrupt(format!("error: {e}")))?,
        artifacts: json_column(row, "artifacts")?,
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        updated_at: row.get("updated_at")?,
        session_id: row.get("session_id")?,
        message_id: row.get("message_id")?,
        spec: json_column(row, "spec")?,
        last_seq: 0,
        epoch: row.get("epoch")?,
        cancel_requested: row.get::<i64>("cancel_requested")? != 0,
        pause: row
            .get::<Option<String>>("pending")?
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| Error::Corrupt(format!("pending: {e}")))?,
        reserved: Default::default(),
    })
}

impl Store {
    /// Stores a new (queued) run claimed by this node, unless `admit.max_queued` of its
    /// tenant's runs wait already, then gives it a run slot if one is free, and stores the
    /// chat reply it is to write, if any: one unit of work.
    async fn insert_run(
        &self,
        run: &Run,
        reply: Option<&Message>,
        admit: Admit,
    ) -> Result<Option<Created>> {
        const EPOCH: i64 = 1;
        let sql = format!(
            "INSERT INTO runs ({COLUMNS}, owner, lease_expires_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23 \
             WHERE (SELECT COUNT(*) FROM runs WHERE tenant_id = $2 AND status = 'queued') < $24"
        );
        let insert = Stmt::new(sql)
            .bind(&run.id)
            .bind(&run.tenant_id)
            .bind(&run.agent_id)
            .bind(&run.project_id)
            .bind(&run.goal)
            .bind(to_json(&run.input))
            .bind(to_json(&run.spec))
            .bind(run.status.as_str())
            .bind(&run.output)
            .bind(run.error.as_ref().map(to_json))
            .bind(to_json(&run.usage))
            .bind(to_json(&run.artifacts))
            .bind(&run.created_at)
            .bind(&run.started_at)
            .bind(&run.finished_at)
            .bind(&run.updated_at)
            .bind(&run.session_id)
            .bind(&run.message_id)
            .bind(EPOCH)
            .bind(run.cancel_requested)
            .bind(run.pause.as_ref().map(to_json))
            .bind(self.node_id())
            .bind(time::later(self.lease))
            .bind(i64::from(admit.max_queued));
        let mut unit = vec![insert, self.slot_stmt(run, admit.slots)];
        unit.extend(reply.map(|reply| message_row(&run.tenant_id, reply)));
        let done = self.write(unit).await?;
        if done[0].changed == 0 {
            return Ok(None);
        }
        Ok(Some(Created {
            epoch: EPOCH,
            admitted: self.slot_taken(&done[1]),
        }))
    }

    /// A run of `agent_id` in `tenant_id`, with its steps.
    pub async fn get_run(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<Option<Run>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM runs WHERE tenant_id = $1 AND agent_id = $2 AND id = $3"
        );
        let binds = vec![tenant_id.into(), agent_id.into(), id.into()];
        let Some(mut run) = self.read(&sql, binds, run_from_row).await?.pop() else {
            return Ok(None);
        };
        run.steps = self.steps(id).await?;
        Ok(Some(run))
    }

    /// Just the status of run `id`.
    pub async fn get_run_status(&self, id: &str) -> Result<Option<RunStatus>> {
        let row = sqlx::query("SELECT status FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>("status").ok())
            .and_then(|s| RunStatus::parse(&s)))
    }

    /// The runs of an agent, newest first, without their steps.
    pub async fn list_runs(
        &self,
        tenant_id: &str,
        agent_id: &str,
        page: &Page,
    ) -> Result<Paged<Run>> {
        let select = format!("SELECT {COLUMNS} FROM runs");
        let filter = "tenant_id = $1 AND agent_id = $2";
        self.page_where(
            &select,
            filter,
            &[tenant_id, agent_id],
            page,
            run_from_row,
            |r| &r.id,
        )
        .await
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<Step>> {
        let sql = "SELECT step FROM run_steps WHERE run_id = $1 ORDER BY idx";
        self.read(sql, vec![run_id.into()], |row| json_column(row, "step"))
            .await
    }

    async fn load(&self, id: &str) -> Result<Option<Run>> {
        let sql = format!("SELECT {COLUMNS} FROM runs WHERE id = $1");
        let Some(mut run) = self.read(&sql, vec![id.into()], run_from_row).await?.pop() else {
            return Ok(None);
        };
        run.steps = self.steps(id).await?;
        run.last_seq = self.last_seq(run.stream(), &[]).await?;
        Ok(Some(run))
    }
}

impl Store {
    /// The statements that write what the run's driver changed, if its claim is still the
    /// run's latest.
    fn progress(&self, run: &Run) -> [Stmt; 2] {
        let fence = Fence {
            owned: Owned::Run(run.id.clone()),
            epoch: run.epoch,
        };
        let update = Stmt::new(
            "UPDATE runs SET status = $2, output = $3, error = $4, usage = $5, artifacts = $6, started_at = $7, \
             finished_at = $8, updated_at = $9, pending = $10, wait_until = $11, \
             reserved_tokens = $12, reserved_cost = $13 WHERE id = $1",
        )
        .bind(&run.id)
        .bind(run.status.as_str())
        .bind(&run.output)
        .bind(run.error.as_ref().map(to_json))
        .bind(to_json(&run.usage))
        .bind(to_json(&run.artifacts))
        .bind(&run.started_at)
        .bind(&run.finished_at)
        .bind(now_rfc3339())
        .bind(run.pause.as_ref().map(to_json))
        .bind(run.pause.as_ref().map(|p| p.until.clone()))
        .bind(i64::try_from(run.reserved.tokens).unwrap_or(i64::MAX))
        .bind(i64::try_from(run.reserved.cost_micros).unwrap_or(i64::MAX));
        [held(&self.node, &fence), update]
    }

    /// Commits `unit` (run `run`'s writes and `events` of its stream) and, once it is
    /// durable, announces the events to the other nodes.
    async fn write_run(
        &self,
        run: &Run,
        unit: Vec<Stmt>,
        events: &[StreamEvent],
    ) -> Result<(), StoreFailure> {
        let written = self.write_path.write(unit).await;
        if written.is_ok() {
            crash_point(events);
            self.announce(run.stream(), events);
        }
        for_actors(written.map(|_| ()))
    }
}

/// The run as the API returns it, for the `agent.*` domain events.
fn domain_payload(run: &Run) -> serde_json::Value {
    serde_json::to_value(run).expect("a run serializes")
}

/// Saves `step` of `run` (again, after a resume: the latest copy wins).
fn step_row(run: &Run, step: &Step) -> Stmt {
    Stmt::new(
        "INSERT INTO run_steps (run_id, idx, step) VALUES ($1, $2, $3) \
         ON CONFLICT (run_id, idx) DO UPDATE SET step = excluded.step",
    )
    .bind(&run.id)
    .bind(i64::from(step.index))
    .bind(to_json(step))
}

#[async_trait]
impl RunStore for Store {
    async fn claim_run(&self, id: &str) -> Result<Option<i64>, StoreFailure> {
        for_actors(self.claim(&Owned::Run(id.to_string())).await)
    }

    async fn take_slot(&self, run: &Run, slots: u32) -> Result<bool, StoreFailure> {
        for_actors(self.take_run_slot(run, slots).await)
    }

    async fn request_cancel(&self, id: &str) -> Result<bool, StoreFailure> {
        for_actors(self.record_cancel(id).await)
    }

    async fn create_run(
        &self,
        run: &Run,
        reply: Option<&Message>,
        admit: Admit,
    ) -> Result<Option<Created>, StoreFailure> {
        for_actors(self.insert_run(run, reply, admit).await)
    }

    async fn load_run(&self, id: &str) -> Result<Option<Run>, StoreFailure> {
        for_actors(self.load(id).await)
    }

    async fn start_run(
        &self,
        run: &Run,
        events: &[StreamEvent],
        domain: Option<DomainEvent>,
    ) -> Result<(), StoreFailure> {
        let mut unit = Vec::from(self.progress(run));
        unit.extend(append_stmts(run.stream(), events));
        unit.extend(domain.map(|domain| outbox_row(&run.tenant_id, domain, &domain_payload(run))));
        self.write_run(run, unit, events).await
    }

    async fn pause_run(
        &self,
        run: &Run,
        events: &[StreamEvent],
        domain: DomainEvent,
    ) -> Result<(), StoreFailure> {
        let mut unit = Vec::from(self.progress(run));
        // The step that waits has used its tokens already.
        unit.extend(
            run.pause
                .as_ref()
                .map(|p| usage_stmts(run, &p.step))
                .into_iter()
                .flatten(),
        );
        // Nobody drives a waiting run and it holds no slot: whoever resumes it claims it
        // (at once, on any node) and takes a slot again.
        unit.push(
            Stmt::new(
                "UPDATE runs SET owner = NULL, lease_expires_at = NULL, admitted = 0 WHERE id = $1",
            )
            .bind(&run.id),
        );
        unit.extend(append_stmts(run.stream(), events));
        unit.push(outbox_row(&run.tenant_id, domain, &domain_payload(run)));
        self.write_run(run, unit, events).await
    }

    async fn record_decisions(
        &self,
        id: &str,
        before: &Pause,
        after: &Pause,
    ) -> Result<bool, StoreFailure> {
        let status = if after.answered() {
            RunStatus::Queued
        } else {
            RunStatus::RequiresAction
        };
        let update = Stmt::new(
            "UPDATE runs SET pending = $2, status = $3, updated_at = $4 \
             WHERE id = $1 AND status = 'requires_action' AND pending = $5",
        )
        .bind(id)
        .bind(to_json(after))
        .bind(status.as_str())
        .bind(now_rfc3339())
        .bind(to_json(before));
        let done = for_actors(self.write(vec![update]).await)?;
        Ok(done[0].changed == 1)
    }

    async fn save_step(
        &self,
        run: &Run,
        step: &Step,
        events: &[StreamEvent],
    ) -> Result<(), StoreFailure> {
        let mut unit = vec![step_row(run, step)];
        unit.extend(usage_stmts(run, step));
        unit.extend(self.progress(run));
        unit.extend(append_stmts(run.stream(), events));
        self.write_run(run, unit, events).await
    }

    async fn finish_run(
        &self,
        run: &Run,
        last_step: bool,
        events: &[StreamEvent],
        domain: Option<DomainEvent>,
        reply: Option<&Message>,
    ) -> Result<(), StoreFailure> {
        let mut unit = Vec::new();
        if let (true, Some(step)) = (last_step, run.steps.last()) {
            unit.push(step_row(run, step));
            unit.extend(usage_stmts(run, step));
        }
        unit.extend(self.progress(run));
        unit.extend(reply.map(|reply| message_row(&run.tenant_id, reply)));
        unit.extend(append_stmts(run.stream(), events));
        unit.extend(domain.map(|domain| outbox_row(&run.tenant_id, domain, &domain_payload(run))));
        self.write_run(run, unit, events).await
    }

    async fn reserve(
        &self,
        run: &Run,
        want: Reservation,
        monthly: Budget,
    ) -> Result<Option<&'static str>, StoreFailure> {
        for_actors(self.reserve_step(run, want, monthly).await)
    }

    async fn spent_this_month(&self, tenant_id: &str) -> Result<Reservation, StoreFailure> {
        for_actors(Store::spent_this_month(self, tenant_id).await)
    }

    async fn unfinished_runs(&self) -> Result<Vec<String>, StoreFailure> {
        let sql = format!(
            "SELECT id FROM runs WHERE (status IN ('queued', 'running') OR (status = 'requires_action' \
             AND (cancel_requested = 1 OR wait_until < $2))) AND {} ORDER BY id",
            super::cluster::claimable("", "$1", "$2")
        );
        let rows = sqlx::query(&sql)
            .bind(self.node_id())
            .bind(dgidgi_actors::time::now())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreFailure::from(Error::from(e)))?;
        rows.iter()
            .map(|r| {
                r.try_get("id")
                    .map_err(|e| StoreFailure::from(Error::from(e)))
            })
            .collect()
    }
}
