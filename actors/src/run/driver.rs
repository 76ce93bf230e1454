//! The driver of one run: admission under the tenant's limit, the step loop (one
//! streamed completion and the tool calls it asks for per step), and the run's end, each
//! persisted before it is published.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use serde::Serialize;

use super::{
    Budget, Failure, Pause, PendingCall, Reservation, Run, RunDeps, RunStatus, RunStore, Step,
    ToolResult,
};
use crate::chat::Message;
use crate::events::{
    DomainEvent, Event, Fence, Owned, ReplyEnd, RunEvent, SessionEvent, StreamEvent,
};
use crate::llm::{complete, now, EventWriter};
use crate::provider::{priced, ChatMessage, ChatRequest, Price, ToolCall};
use crate::registry::ActorMeta;
use crate::store::{retrying, StoreFailure};
use crate::time;
use crate::tools::Toolbox;

pub(super) async fn fail_after_panic(deps: Arc<RunDeps>, id: String) {
    let Ok(Some(epoch)) = deps.store.claim_run(&id).await else {
        return;
    };
    let Ok(Some(mut run)) = deps.store.load_run(&id).await else {
        return;
    };
    if run.status.is_terminal() {
        return;
    }
    run.epoch = epoch;
    let mut log = writer(&deps, &run);
    finish(
        &*deps.store,
        &mut run,
        &mut log,
        Err(Failure::new(
            "internal_error",
            "the run stopped on an internal error",
        )),
    )
    .await;
    deps.tenants.release(&run.tenant_id, &id).await;
}

/// A run as its creator stored it: claimed by this node, and holding a run slot or not.
#[derive(Clone)]
pub(super) struct Seed {
    pub run: Run,
    pub admitted: bool,
}

/// Drives run `id` from where the store says it is to its end, or to a wait for a human:
/// then the answer is the wait's deadline (stored time form), when it is to be driven again.
pub(super) async fn drive(
    deps: Arc<RunDeps>,
    id: String,
    seed: Option<Seed>,
    cancel: CancellationToken,
    meta: Arc<ActorMeta>,
) -> Option<String> {
    meta.set_state("loading");
    // A run just created is as its creator made it and claimed (a cancel that came first
    // reached this actor); any other is claimed, then loaded.
    let (mut run, admitted) = match seed {
        Some(Seed { run, admitted }) => (run, admitted),
        None => (claim_and_load(&deps, &id).await?, false),
    };
    if run.cancel_requested {
        cancel.cancel();
    }
    let mut log = writer(&deps, &run);
    let tenant = run.tenant_id.clone();
    if run.status == RunStatus::RequiresAction {
        // Nobody drives a waiting run: it is taken up to end it (a cancel, its deadline),
        // or by chance (a restart), when it goes on waiting.
        let until = run
            .pause
            .as_ref()
            .map(|p| p.until.clone())
            .unwrap_or_default();
        let ending = if cancel.is_cancelled() {
            Ok(Ending::Cancelled)
        } else if time::until(&until).is_zero() {
            Err(Failure::new(
                "approval_timeout",
                format!(
                    "no answer to the pending tool calls within {} s",
                    run.spec.approval_timeout_secs
                ),
            ))
        } else {
            return Some(until);
        };
        finish(&*deps.store, &mut run, &mut log, ending).await;
        return None;
    }
    tracing::Span::current().record("tenant_id", tenant.as_str());
    meta.set_owner(&tenant);
    meta.set_state("queued");

    // Admission: one of the tenant's run slots across every node (counted in the store),
    // then this node's (the tenant actor's queue), unless cancelled. A chat reply says
    // that it waits.
    let slotted = tokio::select! {
        slotted = take_slot(&deps, &run, admitted, &mut log) => slotted,
        _ = cancel.cancelled() => {
            finish(&*deps.store, &mut run, &mut log, Ok(Ending::Cancelled)).await;
            return None;
        }
    };
    let queued_said = slotted.unwrap_or_else(|e| {
        tracing::warn!(run_id = %id, error = %e, "run slot not confirmed; running anyway");
        false
    });
    let admission = match deps.tenants.ask(&tenant, &id).await {
        Ok(mut admission) => {
            if admission.waits() && !queued_said {
                say_queued(&run, &mut log).await;
            }
            Ok(admission)
        }
        Err(e) => Err(e),
    };
    let admitted = tokio::select! {
        admitted = async { admission?.granted().await } => admitted,
        _ = cancel.cancelled() => {
            deps.tenants.release(&tenant, &id).await;
            finish(&*deps.store, &mut run, &mut log, Ok(Ending::Cancelled)).await;
            return None;
        }
    };
    if let Err(e) = admitted {
        tracing::warn!(run_id = %id, error = %e, "admission not confirmed; running anyway");
    }

    meta.set_state("running");
    tracing::info!("run started");
    let began = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(run.spec.timeout_secs);
    let mut ending = Ok(Ending::Cancelled);
    if !cancel.is_cancelled() {
        ending = match start(&*deps.store, &mut run, &mut log).await {
            Err(e) => Err(e),
            Ok(said_step) => tokio::select! {
                outcome = run_steps(&deps, &mut run, &mut log, said_step) => outcome,
                _ = cancel.cancelled() => Ok(Ending::Cancelled),
                _ = tokio::time::sleep_until(deadline) => Err(Failure::new(
                    "run_timeout",
                    format!("the run did not finish within {} s", run.spec.timeout_secs),
                )),
            },
        };
    }
    // Whatever was streamed and not yet written (before a cancel or a failure too) is
    // written with the run's end.
    if let Err(e) = &ending {
        if e.code == Failure::FENCED {
            // Another node claimed the run (this one lost its lease): it drives it now.
            tracing::warn!(run_id = %id, "run taken over by another node; this driver stops");
            deps.tenants.release(&tenant, &id).await;
            return None;
        }
        meta.record_error(&format!("{}: {}", e.code, e.message));
    }
    if let Ok(Ending::Paused(pause)) = ending {
        meta.set_state("waiting");
        let until = pause.until.clone();
        let paused = wait_for_approval(&*deps.store, &mut run, &mut log, pause).await;
        deps.tenants.release(&tenant, &id).await;
        return match paused {
            Ok(()) => Some(until),
            // Not saved: the run is driven again from its last saved step (the model is
            // asked again), by this node's next reclaim or another's.
            Err(e) => {
                tracing::error!(run_id = %id, error = %e.message, "the run's wait not saved");
                None
            }
        };
    }
    meta.set_state("finishing");
    finish(&*deps.store, &mut run, &mut log, ending).await;
    let took = began.elapsed();
    metrics::histogram!("dgidgi_run_duration_seconds").record(took.as_secs_f64());
    tracing::info!(
        status = run.status.as_str(),
        millis = took.as_millis() as u64,
        "run ended"
    );
    deps.tenants.release(&tenant, &id).await;
    None
}

/// For a chat reply: says that it waits for a run slot (`reply.queued`); whether it did.
async fn say_queued(run: &Run, log: &mut EventWriter) -> bool {
    let Some(queued) = Voice::of(run).queued() else {
        return false;
    };
    if let Err(e) = log.emit(&queued).await {
        tracing::warn!(run_id = %run.id, error = %e.message, "the reply's queued event not saved");
    }
    true
}

/// Claims run `id` for this node and loads it: `None` when another node drives it, it has
/// ended, or the store is out of reach (it is taken up again later).
async fn claim_and_load(deps: &RunDeps, id: &str) -> Option<Run> {
    // Only the node that holds the run's lease drives it; a newer claim fences this one.
    let epoch = match deps.store.claim_run(id).await {
        Ok(Some(epoch)) => epoch,
        Ok(None) => {
            tracing::debug!(run_id = %id, "run driven by another node, or ended");
            return None;
        }
        Err(e) => {
            tracing::error!(run_id = %id, error = %e, "run not claimed; it is taken up again later");
            return None;
        }
    };
    match deps.store.load_run(id).await {
        Ok(Some(mut run)) if !run.status.is_terminal() => {
            run.epoch = epoch;
            Some(run)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::error!(run_id = %id, error = %e, "run not loaded; it is taken up again later");
            None
        }
    }
}

/// Waits until `run` holds one of its tenant's slots across every node (the store counts
/// the runs of every node; a run resumed after a crash holds its slot still; one
/// `admitted` at its creation holds one), saying once that it waits; whether it said so.
async fn take_slot(
    deps: &RunDeps,
    run: &Run,
    admitted: bool,
    log: &mut EventWriter,
) -> Result<bool, StoreFailure> {
    if admitted {
        return Ok(false);
    }
    let slots = deps
        .tenants
        .run_slots(&run.tenant_id)
        .await
        .map_err(|e| StoreFailure::new(e.to_string()))?;
    let (mut told, mut said) = (false, false);
    while !deps.store.take_slot(run, slots).await? {
        if !told {
            told = true;
            said = say_queued(run, log).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(said)
}

/// The writer of the run's events: on its stream, carrying its claim.
fn writer(deps: &RunDeps, run: &Run) -> EventWriter {
    let fence = Fence {
        owned: Owned::Run(run.id.clone()),
        epoch: run.epoch,
    };
    EventWriter::new(
        run.stream(),
        run.last_seq,
        deps.store.clone(),
        deps.hub.clone(),
        &deps.settings,
    )
    .fenced(fence)
}

enum Ending {
    /// The output, and the `step.completed` of the last step, which is saved with the
    /// run's end (one commit for both) rather than on its own.
    Completed(String, StreamEvent),
    Cancelled,
    /// A step's tool calls wait for a human.
    Paused(Pause),
}

/// What a run says on its stream: its own events, or, for a run that writes a chat reply,
/// the session's (`reply.started`, its steps with the reply's id, `reply.completed`...).
struct Voice {
    run_id: String,
    /// The reply the run writes and the message it answers.
    reply: Option<(String, String)>,
}

/// One event a run writes, in its [`Voice`].
#[derive(Serialize)]
#[serde(untagged)]
enum Said {
    Run(RunEvent),
    Session(Box<SessionEvent>),
}

impl Event for Said {
    fn kind(&self) -> &'static str {
        match self {
            Said::Run(e) => e.kind(),
            Said::Session(e) => e.kind(),
        }
    }
}

impl Voice {
    fn of(run: &Run) -> Self {
        let in_reply_to = run.spec.chat.as_ref().map(|c| c.in_reply_to.clone());
        Self {
            run_id: run.id.clone(),
            reply: run.message_id.clone().zip(in_reply_to),
        }
    }

    /// `event` as this run says it. (A run's end: see [`Voice::end`].)
    fn say(&self, event: RunEvent) -> Said {
        let Some((reply_id, in_reply_to)) = &self.reply else {
            return Said::Run(event);
        };
        let (reply_id, run_id) = (reply_id.clone(), self.run_id.clone());
        Said::Session(Box::new(match event {
            RunEvent::RunStarted { .. } => SessionEvent::ReplyStarted {
                reply_id,
                in_reply_to: in_reply_to.clone(),
                run_id: Some(run_id),
            },
            RunEvent::RunResumed { after_step } => SessionEvent::ReplyResumed {
                reply_id,
                run_id,
                after_step,
            },
            event => SessionEvent::Step { reply_id, event },
        }))
    }

    /// `reply.queued`, for a chat reply that waits for a run slot.
    fn queued(&self) -> Option<Said> {
        let (reply_id, _) = self.reply.as_ref()?;
        Some(Said::Session(Box::new(SessionEvent::ReplyQueued {
            reply_id: reply_id.clone(),
            run_id: self.run_id.clone(),
        })))
    }

    /// The run's end `ended` as this run says it, with the chat reply it wrote (`streamed`:
    /// the text of its last step, kept when the run did not complete).
    fn end(&self, run: &Run, ended: RunEvent, streamed: String) -> (Said, Option<Message>) {
        let (Some((reply_id, in_reply_to)), Some(session_id)) = (&self.reply, &run.session_id)
        else {
            return (Said::Run(ended), None);
        };
        let how = match run.status {
            RunStatus::Completed => ReplyEnd::Completed,
            RunStatus::Cancelled => ReplyEnd::Cancelled,
            _ => ReplyEnd::Failed,
        };
        let content = match &run.output {
            Some(output) => output.clone(),
            None if !streamed.is_empty() => streamed,
            None => run.steps.last().map(|s| s.text.clone()).unwrap_or_default(),
        };
        let mut reply = Message::reply(session_id, reply_id, in_reply_to, &run.created_at);
        reply.run_id = Some(run.id.clone());
        reply.status = how.status().into();
        reply.content = content;
        reply.usage = Some(run.usage);
        reply.error = run.error.clone();
        reply.updated_at = now();
        let said = Said::Session(Box::new(SessionEvent::ended(how, &reply)));
        (said, Some(reply))
    }
}

/// Starts the run (`run.started`, saved with its first `step.started`: the answer is that
/// step's index) or says that it resumes (`None`).
async fn start(
    store: &dyn RunStore,
    run: &mut Run,
    log: &mut EventWriter,
) -> Result<Option<u32>, Failure> {
    let voice = Voice::of(run);
    let step = run.steps.len();
    if run.status == RunStatus::Running {
        log.emit(&voice.say(RunEvent::RunResumed { after_step: step }))
            .await?;
        return Ok(None);
    }
    if run.started_at.is_some() {
        // Answered after a wait for a human: running again, from the step that waited.
        run.status = RunStatus::Running;
        let events = [log.event(&voice.say(RunEvent::RunResumed { after_step: step }))];
        retrying(log.store_retry(), || store.start_run(run, &events, None)).await?;
        log.publish_all(&events);
        return Ok(None);
    }
    run.status = RunStatus::Running;
    run.started_at = Some(now());
    metrics::counter!("dgidgi_runs_started_total").increment(1);
    let events = [
        log.event(&voice.say(RunEvent::RunStarted {
            run_id: run.id.clone(),
            agent_id: run.agent_id.clone(),
        })),
        log.event(&voice.say(RunEvent::StepStarted { step: step as u32 })),
    ];
    let started = Some(DomainEvent::AgentStarted);
    retrying(log.store_retry(), || store.start_run(run, &events, started)).await?;
    log.publish_all(&events);
    Ok(Some(step as u32))
}

async fn finish(
    store: &dyn RunStore,
    run: &mut Run,
    log: &mut EventWriter,
    ending: Result<Ending, Failure>,
) {
    // A wait for a human that ends without the calls running (a cancel, its deadline): each
    // call gets a result that says so, so that a later conversation answers every call.
    let mut last_step = false;
    if let Some(pause) = run.pause.take() {
        let why = match &ending {
            Err(e) => format!("This tool call did not run: {}", e.message),
            _ => "This tool call did not run: the run was cancelled while it waited for approval."
                .to_string(),
        };
        let waited: Vec<String> = pause.calls.iter().map(|c| c.tool_call_id.clone()).collect();
        let step = pause.abandon(&why);
        let voice = Voice::of(run);
        for result in step
            .tool_results
            .iter()
            .filter(|r| waited.contains(&r.tool_call_id))
        {
            log.queue(&voice.say(RunEvent::ToolResult {
                step: step.index,
                id: result.tool_call_id.clone(),
                name: result.name.clone(),
                output: result.output.clone(),
                is_error: true,
            }));
        }
        log.queue(&voice.say(RunEvent::StepCompleted {
            step: step.index,
            usage: step.usage,
            tool_calls: step.tool_calls.len(),
        }));
        run.steps.push(step);
        last_step = true;
    }
    // The run's end decides its event on the stream and the domain event webhooks get.
    let mut events = log.take_pending();
    let (ended, domain) = match ending {
        Ok(Ending::Completed(output, step)) => {
            last_step = true;
            events.push(step);
            run.status = RunStatus::Completed;
            run.output = Some(output.clone());
            let usage = run.usage;
            (
                RunEvent::RunCompleted { output, usage },
                Some(DomainEvent::AgentCompleted),
            )
        }
        Ok(Ending::Cancelled | Ending::Paused(_)) => {
            run.status = RunStatus::Cancelled;
            let steps = run.steps.len();
            (RunEvent::RunCancelled { steps }, None)
        }
        Err(error) => {
            run.status = RunStatus::Failed;
            run.error = Some(error.clone());
            (
                RunEvent::RunFailed { error },
                Some(DomainEvent::AgentFailed),
            )
        }
    };
    run.finished_at = Some(now());
    run.reserved = Reservation::default();
    metrics::counter!("dgidgi_runs_finished_total", "status" => run.status.as_str()).increment(1);
    let (ended, reply) = Voice::of(run).end(run, ended, log.take_streamed());
    events.push(log.event(&ended));
    let saved = retrying(log.store_retry(), || {
        store.finish_run(run, last_step, &events, domain, reply.as_ref())
    });
    match saved.await {
        Ok(()) => log.publish_all(&events),
        Err(e) if e.fenced => {
            tracing::warn!(run_id = %run.id, "run taken over by another node; its end is theirs")
        }
        Err(e) => {
            tracing::error!(run_id = %run.id, error = %e, "run end not saved; it resumes at the next start")
        }
    }
    // A session's stream goes on after the reply.
    if run.session_id.is_none() {
        log.end();
    }
}

/// Saves `run` as waiting for a human with `pause`, says so (`run.requires_action`, and
/// the `agent.requires_action` webhook event), and lets go of it.
async fn wait_for_approval(
    store: &dyn RunStore,
    run: &mut Run,
    log: &mut EventWriter,
    pause: Pause,
) -> Result<(), Failure> {
    let said = Voice::of(run).say(RunEvent::RunRequiresAction {
        step: pause.step.index,
        pending_tool_calls: pause.calls.clone(),
        expires_at: pause.until.clone(),
    });
    run.status = RunStatus::RequiresAction;
    run.pause = Some(pause);
    run.reserved = Reservation::default();
    let mut events = log.take_pending();
    events.push(log.event(&said));
    let domain = DomainEvent::AgentRequiresAction;
    retrying(log.store_retry(), || store.pause_run(run, &events, domain)).await?;
    log.publish_all(&events);
    metrics::counter!("dgidgi_runs_paused_total").increment(1);
    tracing::info!(
        calls = run.pause.as_ref().map_or(0, |p| p.calls.len()),
        "run waits for approval"
    );
    Ok(())
}

/// The step loop: stops when the model answers without tool calls, asks for a tool that
/// waits for a human (`Ending::Paused`), or the step budget is spent. A run resumed after
/// such a wait first runs (or refuses) the calls as they were answered. Its answer on
/// completion: the output, and the last step's `step.completed`, not yet saved (the run's
/// end saves it, with the tokens still queued, in the same commit). `said`: the step whose
/// `step.started` the run's start wrote.
async fn run_steps(
    deps: &Arc<RunDeps>,
    run: &mut Run,
    log: &mut EventWriter,
    mut said: Option<u32>,
) -> Result<Ending, Failure> {
    let workspace = Toolbox::open(
        &*deps.workspaces,
        &deps.remote_tools,
        &run.tenant_id,
        &run.project_id,
        &run.spec.tools,
    )
    .await
    .map_err(|e| Failure::new("tools_unavailable", format!("the agent's MCP tools: {e}")))?;
    let tool_specs = workspace.specs();
    let voice = Voice::of(run);
    if let Some(pause) = run.pause.take() {
        let step = answered(run, log, &voice, &workspace, pause).await?;
        close_step(deps, run, log, &voice, step, None).await?;
    }
    while (run.steps.len() as u32) < run.spec.max_steps {
        let index = run.steps.len() as u32;
        let started_at = now();
        let step_began = std::time::Instant::now();
        // What a reply keeps if the run stops mid-step: this step's text.
        log.take_streamed();
        // Written with the step's first tokens (or while the provider is still silent).
        if said.take() != Some(index) {
            log.queue(&voice.say(RunEvent::StepStarted { step: index }));
        }
        let mut request = ChatRequest {
            model: run.spec.model.clone(),
            messages: conversation(run),
            tools: tool_specs.clone(),
            temperature: run.spec.temperature,
            max_tool_arguments: deps.settings.max_tool_arguments,
            max_tokens: None,
        };
        reserve(deps, run, &mut request).await?;
        let answer = complete(
            &*deps.providers,
            &deps.settings,
            &run.spec.providers,
            request,
            &|delta: &str| {
                voice.say(RunEvent::Token {
                    step: index,
                    delta: delta.to_string(),
                })
            },
            log,
        )
        .await?;
        let price = deps
            .providers
            .price(&answer.provider, run.spec.model.as_deref());
        let mut step = Step {
            index,
            usage: priced(answer.usage, price),
            provider: answer.provider,
            model: answer.model,
            text: answer.text,
            tool_calls: answer.tool_calls,
            tool_results: Vec::new(),
            started_at,
            finished_at: String::new(),
        };
        run.usage.add(step.usage);
        count_usage(&step);
        // Calls that need nobody's yes run now; the others wait, all together.
        let mut waiting = Vec::new();
        for call in step.tool_calls.clone() {
            let said = voice.say(RunEvent::ToolCalled {
                step: index,
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            });
            log.emit(&said).await?;
            if run.spec.needs_approval(&workspace.canonical(&call.name)) {
                waiting.push(PendingCall {
                    tool_call_id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                    decision: None,
                });
                continue;
            }
            let result = call_tool(run, log, &voice, &workspace, index, &call).await?;
            step.tool_results.push(result);
        }
        if !waiting.is_empty() {
            let until = time::later(Duration::from_secs(run.spec.approval_timeout_secs));
            return Ok(Ending::Paused(Pause {
                step,
                calls: waiting,
                until,
            }));
        }
        if let Some(output) = close_step(deps, run, log, &voice, step, Some(step_began)).await? {
            return Ok(output);
        }
    }
    Err(Failure::new(
        "step_budget_exhausted",
        format!(
            "the model still asked for tools after {} steps",
            run.spec.max_steps
        ),
    ))
}

/// Ends `step`: the run keeps it, and it is saved with the events still queued, unless it
/// answered without tool calls: then the run completes with it (`Ending::Completed`; the
/// run's end saves it).
async fn close_step(
    deps: &RunDeps,
    run: &mut Run,
    log: &mut EventWriter,
    voice: &Voice,
    mut step: Step,
    began: Option<std::time::Instant>,
) -> Result<Option<Ending>, Failure> {
    step.finished_at = now();
    if let Some(began) = began {
        metrics::histogram!("dgidgi_step_duration_seconds").record(began.elapsed().as_secs_f64());
    }
    let done = step.tool_calls.is_empty();
    let event = log.event(&voice.say(RunEvent::StepCompleted {
        step: step.index,
        usage: step.usage,
        tool_calls: step.tool_calls.len(),
    }));
    run.steps.push(step);
    let step = run.steps.last().expect("just pushed");
    if done {
        return Ok(Some(Ending::Completed(step.text.clone(), event)));
    }
    // The step's use is recorded with it; what it set aside is let go in the same write.
    run.reserved = Reservation::default();
    let mut events = log.take_pending();
    events.push(event);
    retrying(deps.settings.store_retry, || {
        deps.store.save_step(run, step, &events)
    })
    .await?;
    log.publish_all(&events);
    Ok(None)
}

/// The step that waited, once every call is answered: approved calls run (with the
/// arguments a human edited, if so: the step keeps those), denied ones get the denial and
/// its reason as their result, which the model reads next.
async fn answered(
    run: &mut Run,
    log: &mut EventWriter,
    voice: &Voice,
    workspace: &Toolbox,
    pause: Pause,
) -> Result<Step, Failure> {
    let Pause {
        mut step, calls, ..
    } = pause;
    for pending in calls {
        let decision = pending.decision.unwrap_or(super::Decision {
            approve: false,
            arguments: None,
            reason: Some("no answer was recorded".into()),
        });
        let Some(call) = step
            .tool_calls
            .iter_mut()
            .find(|c| c.id == pending.tool_call_id)
        else {
            continue;
        };
        if !decision.approve {
            let reason = decision.reason.unwrap_or_default();
            let mut output = "A human denied this tool call.".to_string();
            if !reason.is_empty() {
                output.push_str(&format!(" Reason: {reason}"));
            }
            log.emit(&voice.say(RunEvent::ToolResult {
                step: step.index,
                id: call.id.clone(),
                name: call.name.clone(),
                output: output.clone(),
                is_error: true,
            }))
            .await?;
            step.tool_results.push(ToolResult {
                tool_call_id: call.id.clone(),
                name: call.name.clone(),
                output,
                is_error: true,
            });
            continue;
        }
        if let Some(arguments) = decision.arguments {
            call.arguments = arguments;
            log.emit(&voice.say(RunEvent::ToolCalled {
                step: step.index,
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            }))
            .await?;
        }
        let call = call.clone();
        let result = call_tool(run, log, voice, workspace, step.index, &call).await?;
        step.tool_results.push(result);
    }
    step.order_results();
    Ok(step)
}

/// Runs one tool call on the run's workspace, keeps the file it wrote among the run's
/// artifacts, and says its result (`tool.result`).
async fn call_tool(
    run: &mut Run,
    log: &mut EventWriter,
    voice: &Voice,
    workspace: &Toolbox,
    step: u32,
    call: &ToolCall,
) -> Result<ToolResult, Failure> {
    let outcome = workspace.run(call).await;
    if let Some(artifact) = outcome.artifact {
        run.artifacts.retain(|a| a.path != artifact.path);
        run.artifacts.push(artifact);
    }
    log.emit(&voice.say(RunEvent::ToolResult {
        step,
        id: call.id.clone(),
        name: call.name.clone(),
        output: outcome.output.clone(),
        is_error: outcome.is_error,
    }))
    .await?;
    Ok(ToolResult {
        tool_call_id: call.id.clone(),
        name: call.name.clone(),
        output: outcome.output,
        is_error: outcome.is_error,
    })
}

/// Before a step calls the model, when a budget applies to the run: bounds the answer
/// (`max_tokens`) and checks the step's worst case (the prompt's estimate plus that bound,
/// at the dearest price of the run's providers) against the run's own budget, then sets it
/// aside from its tenant's monthly budget in the store (atomically for every node). A step
/// that does not fit ends the run with `budget_exhausted`, naming the budget.
async fn reserve(deps: &RunDeps, run: &mut Run, request: &mut ChatRequest) -> Result<(), Failure> {
    let monthly = match deps.tenants.get(&run.tenant_id).await {
        Ok(tenant) => tenant.settings.monthly_budget(),
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %e, "tenant's budget not read; the step goes on");
            Budget::default()
        }
    };
    if monthly.is_unlimited() && run.spec.budget.is_unlimited() {
        return Ok(());
    }
    let bound = deps.settings.max_tokens_per_step;
    request.max_tokens = Some(bound);
    let prompt = request.prompt_estimate();
    let price = run
        .spec
        .providers
        .iter()
        .filter_map(|p| deps.providers.price(p, run.spec.model.as_deref()))
        .max_by(|a, b| {
            let cost = |p: &Price| p.micros(prompt, u64::from(bound));
            cost(a).cmp(&cost(b))
        });
    let want = Reservation {
        tokens: prompt + u64::from(bound),
        cost_micros: price.map_or(0, |p| p.micros(prompt, u64::from(bound))),
    };
    let spent = Reservation {
        tokens: run.usage.total_tokens,
        cost_micros: run.usage.cost_micros,
    };
    if let Some(which) = run.spec.budget.exceeded_by(spent, want) {
        return Err(budget_exhausted("run", which, run.spec.budget, spent, want));
    }
    if monthly.is_unlimited() {
        return Ok(());
    }
    match deps.store.reserve(run, want, monthly).await? {
        None => {
            run.reserved = want;
            Ok(())
        }
        Some(which) => {
            let spent = deps
                .store
                .spent_this_month(&run.tenant_id)
                .await
                .unwrap_or_default();
            Err(budget_exhausted("tenant", which, monthly, spent, want))
        }
    }
}

/// `budget_exhausted`, naming the budget (`run.tokens`, `tenant.cost`...).
fn budget_exhausted(
    whose: &str,
    which: &str,
    budget: Budget,
    spent: Reservation,
    want: Reservation,
) -> Failure {
    let (limit, spent, want) = match which {
        "cost" => (budget.cost_micros, spent.cost_micros, want.cost_micros),
        _ => (budget.tokens, spent.tokens, want.tokens),
    };
    let name = match (whose, which) {
        ("tenant", "cost") => "the tenant's monthly cost budget",
        ("tenant", _) => "the tenant's monthly token budget",
        (_, "cost") => "the agent's cost budget per run",
        _ => "the agent's token budget per run",
    };
    let unit = if which == "cost" {
        "millionths of a dollar"
    } else {
        "tokens"
    };
    let mut failure = Failure::new(
        "budget_exhausted",
        format!(
            "the next step could use {want} {unit}; {name} has {} of {} left",
            limit.unwrap_or(0).saturating_sub(spent),
            limit.unwrap_or(0)
        ),
    );
    failure.details = Some(serde_json::json!({
        "budget": format!("{whose}.{which}"),
        "limit": limit,
        "spent": spent,
        "step_reservation": want,
    }));
    failure
}

/// Counts a step's tokens and cost by provider and model (`/metrics`).
fn count_usage(step: &Step) {
    let labels = [
        ("provider", step.provider.clone()),
        ("model", step.model.clone()),
    ];
    metrics::counter!("dgidgi_llm_prompt_tokens_total", &labels)
        .increment(step.usage.prompt_tokens);
    metrics::counter!("dgidgi_llm_completion_tokens_total", &labels)
        .increment(step.usage.completion_tokens);
    metrics::counter!("dgidgi_llm_cost_micro_usd_total", &labels).increment(step.usage.cost_micros);
}

/// The messages of the next step: instructions, the conversation so far (for a chat reply),
/// the goal, then every finished step.
fn conversation(run: &Run) -> Vec<ChatMessage> {
    let system = run.spec.system_prompt.clone().unwrap_or_else(|| {
        "You are an autonomous agent. Work towards the user's goal step by step, using the tools offered when they help, and answer with the result.".into()
    });
    let mut goal = run.goal.clone();
    if !run.input.is_null() {
        goal.push_str(&format!("\n\nInput:\n{}", run.input));
    }
    let mut messages = vec![ChatMessage::System { content: system }];
    if let Some(chat) = &run.spec.chat {
        messages.extend(chat.history.iter().cloned());
    }
    messages.push(ChatMessage::User { content: goal });
    for step in &run.steps {
        messages.extend(step.messages());
    }
    messages
}
