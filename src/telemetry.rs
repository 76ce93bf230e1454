//! Metrics and logs. Metrics go through the `metrics` facade (the actors crate records its
//! own) into one Prometheus recorder per process, rendered at `GET /metrics`. Logs are
//! `tracing` events, pretty for people or JSON for machines.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls share it) and returns its handle.
pub fn metrics() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0, 60.0, 300.0,
                    ],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only ours"
                );
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("dgidgi_actors_live", "Live actors by kind");
    describe_counter!(
        "dgidgi_actor_messages_total",
        "Messages handled by actors, by kind"
    );
    describe_gauge!(
        "dgidgi_actor_mailbox_depth",
        "Messages sent to actors and not answered yet, by kind"
    );
    describe_counter!(
        "dgidgi_actor_restarts_total",
        "Supervisor restarts, by kind"
    );
    describe_counter!("dgidgi_runs_started_total", "Runs that started running");
    describe_counter!("dgidgi_runs_finished_total", "Runs that ended, by status");
    describe_gauge!(
        "dgidgi_runs_live",
        "Runs in memory now, by state (queued, running...)"
    );
    describe_histogram!(
        "dgidgi_run_duration_seconds",
        Unit::Seconds,
        "Run duration, admission to end"
    );
    describe_histogram!(
        "dgidgi_step_duration_seconds",
        Unit::Seconds,
        "Run step duration"
    );
    describe_counter!(
        "dgidgi_llm_tokens_in_total",
        "Prompt tokens, by provider and model"
    );
    describe_counter!(
        "dgidgi_llm_tokens_out_total",
        "Completion tokens, by provider and model"
    );
    describe_gauge!("dgidgi_sse_subscribers", "Open SSE streams");
    describe_counter!(
        "dgidgi_webhook_attempts_total",
        "Webhook delivery attempts, by outcome"
    );
    describe_counter!(
        "dgidgi_rate_limit_rejections_total",
        "Requests refused by a rate limit"
    );
    describe_histogram!(
        "dgidgi_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP requests by method, route and status"
    );
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colours on a terminal).
    Pretty,
    /// One JSON object per line, with the fields of every enclosing span.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info,sqlx=warn`).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A closed stderr must not turn a log line into a panic.
        .log_internal_errors(false);
    match format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
}
