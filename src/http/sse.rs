//! Server-Sent Events over a stream's event log: stored events after `Last-Event-ID`, then
//! the live ones, with no gap and no duplicate; heartbeat comments while idle; the stream
//! closes after its terminal event. One mechanism for runs and chat sessions.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use dgidgi_actors::events::{EventHub, EventLog, StreamEvent};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{ApiError, AppState};

/// The id after which the client wants events: `Last-Event-ID`, or `?last_event_id=`.
pub fn last_event_id(req: &HttpRequest) -> Result<i64, ApiError> {
    let header = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let query = serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .unwrap_or_default()
        .into_iter()
        .find_map(|(k, v)| (k == "last_event_id").then_some(v));
    match header.or(query) {
        None => Ok(0),
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => Err(ApiError::invalid(
                "Last-Event-ID",
                "must be a non-negative event id",
            )),
        },
    }
}

fn frame(event: &StreamEvent) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        event.seq, event.kind, event.data
    ))
}

/// The SSE response for `stream` (whose live events come from `hub`), starting after
/// event `after`. It ends after the stream's terminal event, when the client goes away, or
/// when the server shuts down (clients reconnect with `Last-Event-ID`).
pub fn respond(state: &AppState, hub: EventHub, stream: String, after: i64) -> HttpResponse {
    let log: Arc<dyn EventLog> = Arc::new(state.store.clone());
    let heartbeat = Duration::from_secs(state.config.streams.heartbeat_secs);
    let shutdown = state.shutdown.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    actix_web::rt::spawn(async move {
        let mut live = hub.subscribe(&stream);
        tokio::select! {
            followed = follow(&mut live, &*log, &stream, after, heartbeat, &tx) => {
                if let Err(e) = followed {
                    tracing::warn!(%stream, error = %e, "event stream ended early");
                }
            }
            _ = shutdown.cancelled() => {}
        }
        drop(live);
        hub.release(&stream);
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(Counted::new(
            ReceiverStream::new(rx).map(Ok::<_, actix_web::Error>),
        ))
}

/// An SSE body counted in `dgidgi_sse_subscribers` while the client holds it open.
pub struct Counted<S>(S);

impl<S> Counted<S> {
    pub fn new(stream: S) -> Self {
        metrics::gauge!("dgidgi_sse_subscribers").increment(1.0);
        Self(stream)
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        metrics::gauge!("dgidgi_sse_subscribers").decrement(1.0);
    }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for Counted<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.0).poll_next(cx)
    }
}

/// Sends stored then live events until the terminal one, or until the client goes away.
async fn follow(
    live: &mut broadcast::Receiver<Arc<StreamEvent>>,
    log: &dyn EventLog,
    stream: &str,
    after: i64,
    heartbeat: Duration,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), String> {
    let mut last = after;
    // Subscribed before this read, so nothing published meanwhile is missed.
    if catch_up(log, stream, &mut last, tx).await? {
        return Ok(());
    }
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(event) if event.seq <= last => {}
                Ok(event) if event.seq == last + 1 => {
                    last = event.seq;
                    send(tx, frame(&event)).await?;
                    if event.is_terminal() {
                        return Ok(());
                    }
                }
                // A gap (published before we subscribed, or skipped by lag): read the store.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if catch_up(log, stream, &mut last, tx).await? {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    catch_up(log, stream, &mut last, tx).await?;
                    return Ok(());
                }
            },
            _ = ticks.tick() => send(tx, Bytes::from_static(b": keep-alive\n\n")).await?,
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// Sends the stored events after `last`; true when the terminal one was among them.
async fn catch_up(
    log: &dyn EventLog,
    stream: &str,
    last: &mut i64,
    tx: &mpsc::Sender<Bytes>,
) -> Result<bool, String> {
    let events = log
        .events_after(stream, *last)
        .await
        .map_err(|e| e.to_string())?;
    for event in events {
        *last = event.seq;
        send(tx, frame(&event)).await?;
        if event.is_terminal() {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn send(tx: &mpsc::Sender<Bytes>, bytes: Bytes) -> Result<(), String> {
    tx.send(bytes)
        .await
        .map_err(|_| "the client went away".to_string())
}
