//! The driver of one run: admission under the tenant's limit, the step loop (one
//! streamed completion and the tool calls it asks for per step), and the run's end, each
//! persisted before it is published.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Failure, Run, RunDeps, RunStatus, RunStore, Step, ToolResult};
use crate::events::{DomainEvent, RunEvent};
use crate::llm::{complete, now, EventWriter};
use crate::provider::{ChatMessage, ChatRequest};
use crate::registry::ActorMeta;
use crate::store::retrying;
use crate::tools::{self, Workspace};

pub(super) async fn fail_after_panic(deps: Arc<RunDeps>, id: String) {
    let Ok(Some(mut run)) = deps.store.load_run(&id).await else {
        return;
    };
    if run.status.is_terminal() {
        return;
    }
    let mut log = EventWriter::new(
        &id,
        run.last_seq,
        deps.store.clone(),
        deps.hub.clone(),
        &deps.settings,
    );
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

/// Drives run `id` from where the store says it is to its end.
pub(super) async fn drive(
    deps: Arc<RunDeps>,
    id: String,
    cancel: CancellationToken,
    meta: Arc<ActorMeta>,
) {
    meta.set_state("loading");
    let mut run = match deps.store.load_run(&id).await {
        Ok(Some(run)) if !run.status.is_terminal() => run,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(run_id = %id, error = %e, "run not loaded; it stays as it is until the next start");
            return;
        }
    };
    let mut log = EventWriter::new(
        &id,
        run.last_seq,
        deps.store.clone(),
        deps.hub.clone(),
        &deps.settings,
    );
    let tenant = run.tenant_id.clone();
    tracing::Span::current().record("tenant_id", tenant.as_str());
    meta.set_owner(&tenant);
    meta.set_state("queued");

    // Admission: wait for a slot under the tenant's concurrency limit, unless cancelled.
    let admitted = tokio::select! {
        admitted = deps.tenants.admit(&tenant, &id) => admitted,
        _ = cancel.cancelled() => {
            deps.tenants.release(&tenant, &id).await;
            finish(&*deps.store, &mut run, &mut log, Ok(Ending::Cancelled)).await;
            return;
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
            Ok(()) => tokio::select! {
                outcome = run_steps(&deps, &mut run, &mut log) => outcome.map(Ending::Completed),
                _ = cancel.cancelled() => Ok(Ending::Cancelled),
                _ = tokio::time::sleep_until(deadline) => Err(Failure::new(
                    "run_timeout",
                    format!("the run did not finish within {} s", run.spec.timeout_secs),
                )),
            },
        };
    }
    // Whatever was streamed before a cancel or a failure is kept.
    if let Err(e) = log.flush().await {
        tracing::error!(run_id = %id, error = %e.message, "partial tokens not saved");
    }
    if let Err(e) = &ending {
        meta.record_error(&format!("{}: {}", e.code, e.message));
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
}

enum Ending {
    Completed(String),
    Cancelled,
}

async fn start(store: &dyn RunStore, run: &mut Run, log: &mut EventWriter) -> Result<(), Failure> {
    if run.status == RunStatus::Running {
        return log
            .emit(&RunEvent::RunResumed {
                after_step: run.steps.len(),
            })
            .await;
    }
    run.status = RunStatus::Running;
    run.started_at = Some(now());
    metrics::counter!("dgidgi_runs_started_total").increment(1);
    let event = log.event(&RunEvent::RunStarted {
        run_id: run.id.clone(),
        agent_id: run.agent_id.clone(),
    });
    let started = DomainEvent::AgentStarted;
    retrying(log.store_retry(), || store.start_run(run, &event, started)).await?;
    log.publish(&event);
    Ok(())
}

async fn finish(
    store: &dyn RunStore,
    run: &mut Run,
    log: &mut EventWriter,
    ending: Result<Ending, Failure>,
) {
    // The run's end decides its event on the stream and the domain event webhooks get.
    let (ended, domain) = match ending {
        Ok(Ending::Completed(output)) => {
            run.status = RunStatus::Completed;
            run.output = Some(output.clone());
            let usage = run.usage;
            (
                RunEvent::RunCompleted { output, usage },
                Some(DomainEvent::AgentCompleted),
            )
        }
        Ok(Ending::Cancelled) => {
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
    metrics::counter!("dgidgi_runs_finished_total", "status" => run.status.as_str()).increment(1);
    let event = log.event(&ended);
    match retrying(log.store_retry(), || store.finish_run(run, &event, domain)).await {
        Ok(()) => log.publish(&event),
        Err(e) => {
            tracing::error!(run_id = %run.id, error = %e, "run end not saved; it resumes at the next start")
        }
    }
    log.end();
}

/// The step loop: stops when the model answers without tool calls or the budget is spent.
async fn run_steps(
    deps: &Arc<RunDeps>,
    run: &mut Run,
    log: &mut EventWriter,
) -> Result<String, Failure> {
    let tool_specs = tools::specs(&run.spec.tools);
    let workspace = if tool_specs.is_empty() {
        Workspace::new(Err("this run has no tools".into()))
    } else {
        Workspace::new(deps.workspaces.open(&run.tenant_id, &run.project_id).await)
    };
    while (run.steps.len() as u32) < run.spec.max_steps {
        let index = run.steps.len() as u32;
        let started_at = now();
        let step_began = std::time::Instant::now();
        log.emit(&RunEvent::StepStarted { step: index }).await?;
        let request = ChatRequest {
            model: run.spec.model.clone(),
            messages: conversation(run),
            tools: tool_specs.clone(),
            temperature: run.spec.temperature,
            max_tool_arguments: deps.settings.max_tool_arguments,
        };
        let answer = complete(
            &*deps.providers,
            &deps.settings,
            &run.spec.providers,
            request,
            &|delta: &str| RunEvent::Token {
                step: index,
                delta: delta.to_string(),
            },
            log,
        )
        .await?;
        let mut step = Step {
            index,
            provider: answer.provider,
            model: answer.model,
            text: answer.text,
            tool_calls: answer.tool_calls,
            tool_results: Vec::new(),
            usage: answer.usage,
            started_at,
            finished_at: String::new(),
        };
        for call in &step.tool_calls {
            log.emit(&RunEvent::ToolCalled {
                step: index,
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            })
            .await?;
            let outcome = workspace.run(call).await;
            if let Some(artifact) = outcome.artifact {
                run.artifacts.retain(|a| a.path != artifact.path);
                run.artifacts.push(artifact);
            }
            log.emit(&RunEvent::ToolResult {
                step: index,
                id: call.id.clone(),
                name: call.name.clone(),
                output: outcome.output.clone(),
                is_error: outcome.is_error,
            })
            .await?;
            step.tool_results.push(ToolResult {
                tool_call_id: call.id.clone(),
                name: call.name.clone(),
                output: outcome.output,
                is_error: outcome.is_error,
            });
        }
        step.finished_at = now();
        metrics::histogram!("dgidgi_step_duration_seconds")
            .record(step_began.elapsed().as_secs_f64());
        run.usage.add(step.usage);
        log.flush().await?;
        let done = step.tool_calls.is_empty();
        let event = log.event(&RunEvent::StepCompleted {
            step: index,
            usage: step.usage,
            tool_calls: step.tool_calls.len(),
        });
        run.steps.push(step);
        let step = run.steps.last().expect("just pushed");
        retrying(deps.settings.store_retry, || {
            deps.store.save_step(run, step, &event)
        })
        .await?;
        log.publish(&event);
        if done {
            return Ok(run.steps.last().map(|s| s.text.clone()).unwrap_or_default());
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

/// The messages of the next step: instructions, the goal, then every finished step.
fn conversation(run: &Run) -> Vec<ChatMessage> {
    let system = run.spec.system_prompt.clone().unwrap_or_else(|| {
        "You are an autonomous agent. Work towards the user's goal step by step, using the tools offered when they help, and answer with the result.".into()
    });
    let mut goal = run.goal.clone();
    if !run.input.is_null() {
        goal.push_str(&format!("\n\nInput:\n{}", run.input));
    }
    let mut messages = vec![
        ChatMessage::System { content: system },
        ChatMessage::User { content: goal },
    ];
    for step in &run.steps {
        messages.push(ChatMessage::Assistant {
            content: step.text.clone(),
            tool_calls: step.tool_calls.clone(),
        });
        for result in &step.tool_results {
            messages.push(ChatMessage::Tool {
                tool_call_id: result.tool_call_id.clone(),
                content: result.output.clone(),
            });
        }
    }
    messages
}
