//! Operators: Prometheus metrics, the live actor tree (and its SSE stream), and the
//! dashboard page that shows both.

use actix_web::get;
use std::collections::BTreeMap;
use std::time::Duration;

use super::dto::ActorInfo;
use actix_web::web::{Bytes, Data};
use actix_web::HttpResponse;
use dgidgi_actors::ActorMeta;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::envelope::Reply;
use super::{ApiError, AppState};
use crate::auth::Principal;

fn operator_only(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_operator() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Only platform operators can see the runtime's internals".into(),
        ))
    }
}

/// Visits the live actors of one kind.
type EachActor<'a> = dyn Fn(&mut dyn FnMut(&ActorMeta)) + 'a;

/// Sets the gauges that are read off the live actors rather than counted as things happen,
/// without copying anything per actor (a node may hold 100,000 of them).
fn refresh_gauges(state: &AppState) {
    const RUN_STATES: [&str; 4] = ["loading", "queued", "running", "finishing"];
    let mut runs_in = [0usize; RUN_STATES.len()];
    let totals = |kind: &'static str, each: &EachActor| {
        let (mut live, mut depth) = (0usize, 0i64);
        each(&mut |meta: &ActorMeta| {
            live += 1;
            depth += meta.mailbox_depth();
        });
        ::metrics::gauge!("dgidgi_actors_live", "kind" => kind).set(live as f64);
        ::metrics::gauge!("dgidgi_actor_mailbox_depth", "kind" => kind).set(depth as f64);
    };
    totals("tenant", &|f| state.tenants.actors().for_each(f));
    totals("session", &|f| state.sessions.actors().for_each(f));
    totals("run", &|f| state.runs.actors().for_each(f));
    totals("webhook", &|f| f(&state.webhook_actor));
    state.runs.actors().for_each(|meta| {
        if let Some(i) = RUN_STATES.iter().position(|s| meta.is_in(s)) {
            runs_in[i] += 1;
        }
    });
    for (run_state, n) in RUN_STATES.iter().zip(runs_in) {
        ::metrics::gauge!("dgidgi_runs_live", "state" => *run_state).set(n as f64);
    }
}

/// The metrics in the Prometheus text format.
pub fn render_metrics(state: &AppState) -> String {
    refresh_gauges(state);
    state.metrics.render()
}

/// `GET /metrics` (operator keys only).
#[utoipa::path(
    tag = "ops",
    responses((status = 200, description = "Prometheus text format (operator keys only)", content_type = "text/plain"), crate::http::openapi::Errors)
)]
#[get("")]
pub async fn metrics(
    principal: Principal,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    operator_only(&principal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render_metrics(&state)))
}

/// A tenant with the actors working for it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TenantBranch {
    pub tenant_id: String,
    /// The tenant's own actor, when it is live.
    pub actor: Option<ActorInfo>,
    pub runs: Vec<ActorInfo>,
    pub sessions: Vec<ActorInfo>,
}

/// The live actor tree: tenants with their runs and chat sessions, and the webhook actor.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ActorTree {
    pub node_id: String,
    /// The live nodes sharing this node's database (their heartbeat is younger than a
    /// lease), with how many runs each drives; one on SQLite.
    pub nodes: Vec<NodeInfo>,
    pub tenants: Vec<TenantBranch>,
    /// Runs and sessions whose tenant is not known yet (still loading).
    pub unassigned: Vec<ActorInfo>,
    pub webhooks: ActorInfo,
    pub totals: BTreeMap<&'static str, usize>,
}

/// A live node as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    /// Unfinished runs whose lease it holds.
    pub runs: i64,
    /// Whether it is the node that answered.
    pub this: bool,
}

/// The live nodes (none when the database cannot say).
pub async fn live_nodes(state: &AppState) -> Vec<NodeInfo> {
    let nodes = state.store.live_nodes().await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "live nodes not read");
        Vec::new()
    });
    nodes
        .into_iter()
        .map(|n| NodeInfo {
            this: n.id == state.store.node_id(),
            id: n.id,
            region: n.region,
            version: n.version,
            started_at: n.started_at,
            heartbeat_at: n.heartbeat_at,
            runs: n.runs,
        })
        .collect()
}

pub async fn actor_tree(state: &AppState) -> ActorTree {
    let mut tree = local_tree(state);
    tree.nodes = live_nodes(state).await;
    tree
}

fn local_tree(state: &AppState) -> ActorTree {
    let mut tenants: BTreeMap<String, TenantBranch> = BTreeMap::new();
    fn branch<'a>(
        tenants: &'a mut BTreeMap<String, TenantBranch>,
        id: &str,
    ) -> &'a mut TenantBranch {
        tenants
            .entry(id.to_string())
            .or_insert_with(|| TenantBranch {
                tenant_id: id.to_string(),
                actor: None,
                runs: Vec::new(),
                sessions: Vec::new(),
            })
    }
    let (tenant_actors, runs, sessions) = (
        state.tenants.actors().snapshot(),
        state.runs.actors().snapshot(),
        state.sessions.actors().snapshot(),
    );
    let mut totals = BTreeMap::new();
    totals.insert("tenant", tenant_actors.len());
    totals.insert("run", runs.len());
    totals.insert("session", sessions.len());
    totals.insert("webhook", 1);
    for actor in tenant_actors {
        let id = actor.id.clone();
        branch(&mut tenants, &id).actor = Some(actor.into());
    }
    let mut unassigned = Vec::new();
    for (actor, is_run) in runs
        .into_iter()
        .map(|a| (ActorInfo::from(a), true))
        .chain(sessions.into_iter().map(|a| (a.into(), false)))
    {
        let Some(tenant) = actor.tenant_id.clone() else {
            unassigned.push(actor);
            continue;
        };
        let entry = branch(&mut tenants, &tenant);
        if is_run {
            entry.runs.push(actor);
        } else {
            entry.sessions.push(actor);
        }
    }
    let mut tenants: Vec<_> = tenants.into_values().collect();
    for t in &mut tenants {
        t.runs.sort_by(|a, b| a.id.cmp(&b.id));
        t.sessions.sort_by(|a, b| a.id.cmp(&b.id));
    }
    ActorTree {
        node_id: state.config.node_id(),
        nodes: Vec::new(),
        tenants,
        unassigned,
        webhooks: state.webhook_actor.info().into(),
        totals,
    }
}

/// `GET /api/v1/ops/actors` (operator keys only).
#[utoipa::path(
    tag = "ops",
    responses((status = 200, body = crate::http::openapi::Envelope<ActorTree>, description = "The live actor tree (operator keys only)"), crate::http::openapi::Errors)
)]
#[get("/ops/actors")]
pub async fn actors(
    principal: Principal,
    state: Data<AppState>,
) -> Result<Reply<ActorTree>, ApiError> {
    operator_only(&principal)?;
    Ok(Reply::ok(actor_tree(&state).await))
}

/// The tree without what changes by itself (ages), to tell real changes apart.
fn shape(tree: &ActorTree) -> ActorTree {
    let mut tree = tree.clone();
    let zero = |a: &mut ActorInfo| a.age_secs = 0;
    for t in &mut tree.tenants {
        t.actor.iter_mut().for_each(zero);
        t.runs.iter_mut().for_each(zero);
        t.sessions.iter_mut().for_each(zero);
    }
    tree.unassigned.iter_mut().for_each(zero);
    zero(&mut tree.webhooks);
    tree.nodes.iter_mut().for_each(|n| n.heartbeat_at.clear());
    tree
}

fn frame(event: &str, data: &str) -> Bytes {
    let mut out = format!("event: {event}\n");
    for line in data.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// `GET /api/v1/ops/actors/stream` (operator keys only; `?access_token=` for
/// `EventSource`): `actors` with the whole tree whenever it changes (looked at every
/// 250 ms), `metrics` with the Prometheus text every 2 s, comments to keep it open.
#[utoipa::path(
    tag = "ops",
    params(("access_token" = Option<String>, Query, description = "A JWT, for EventSource")),
    responses((status = 200, description = "Server-Sent Events: actors (the tree, when it changes), metrics (Prometheus text, every 2 s); operator keys only", content_type = "text/event-stream"), crate::http::openapi::Errors)
)]
#[get("/ops/actors/stream")]
pub async fn actors_stream(
    principal: Principal,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    operator_only(&principal)?;
    let slot = super::sse::StreamSlot::take(&state, &principal)?;
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let shutdown = state.shutdown.clone();
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last: Option<ActorTree> = None;
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let tree = actor_tree(&state).await;
            let seen = shape(&tree);
            let mut frames = Vec::new();
            if last.as_ref() != Some(&seen) || n.is_multiple_of(20) {
                frames.push(frame(
                    "actors",
                    &serde_json::to_string(&tree).expect("plain data"),
                ));
                last = Some(seen);
            }
            if n.is_multiple_of(8) {
                frames.push(frame("metrics", &render_metrics(&state)));
            }
            if frames.is_empty() && n % 60 == 59 {
                frames.push(Bytes::from_static(b": keep-alive\n\n"));
            }
            for f in frames {
                if tx.send(f).await.is_err() {
                    return;
                }
            }
            n += 1;
        }
    });
    let stream = ReceiverStream::new(rx).map(Ok::<_, actix_web::Error>);
    Ok(super::sse::body(stream, slot))
}

/// `GET /ops`: the dashboard (a static page; it asks for the operator key and keeps it
/// in the page's memory only).
#[utoipa::path(
    tag = "ops",
    responses((status = 200, description = "The operations dashboard", content_type = "text/html")),
    security(())
)]
#[get("/ops")]
pub async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .insert_header((
            "content-security-policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self'",
        ))
        .body(include_str!("ops.html"))
}
