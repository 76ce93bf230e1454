//! Server-Sent Events over a stream's event log: stored events after `Last-Event-ID`, then
//! the live ones, with no gap and no duplicate; heartbeat comments while idle; the stream
//! closes after its terminal event. One mechanism for runs and chat sessions.
//!
//! Each open stream holds a [`StreamSlot`] of its key and tenant (`streams.max_per_key`,
//! `streams.max_per_tenant`: more get 429), and a subscriber that reads nothing for
//! `streams.stall_timeout_secs` while events wait for it is disconnected.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use dashmap::DashMap;
use dgidgi_actors::events::{EventHub, EventLog, StreamEvent, View};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{ApiError, AppState};
use crate::auth::Principal;

/// The id after which the client wants events: `Last-Event-ID`, or `?last_event_id=`;
/// `None` when the client named none (a first connection rather than a resumption).
pub fn last_event_id(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
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
        None => Ok(None),
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(ApiError::invalid(
                "Last-Event-ID",
                "must be a non-negative event id",
            )),
        },
    }
}

/// `204 No Content`: the stream has ended and the client has every event. A browser's
/// `EventSource` stops reconnecting on a 204.
pub fn finished() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// One of the open event streams a key and its tenant may hold; given back on drop.
pub struct StreamSlot {
    open: Arc<DashMap<String, usize>>,
    keys: [String; 2],
}

impl StreamSlot {
    /// A slot for `principal`'s key and tenant, or 429 when either has all its streams open.
    pub fn take(state: &AppState, principal: &Principal) -> Result<Self, ApiError> {
        let limits = &state.config.streams;
        let keys = [
            format!("k:{}", principal.key_id),
            format!("t:{}", principal.scope_key()),
        ];
        let caps = [limits.max_per_key, limits.max_per_tenant];
        let open = state.open_streams.clone();
        for (i, (key, cap)) in keys.iter().zip(caps).enumerate() {
            let mut count = open.entry(key.clone()).or_insert(0);
            if *count >= cap {
                drop(count);
                for taken in &keys[..i] {
                    release(&open, taken);
                }
                let whose = if i == 0 {
                    "this API key"
                } else {
                    "this tenant"
                };
                return Err(ApiError::TooMany(format!(
                    "{cap} event streams are already open for {whose} (streams.max_per_{})",
                    if i == 0 { "key" } else { "tenant" }
                )));
            }
            *count += 1;
        }
        Ok(Self { open, keys })
    }
}

fn release(open: &DashMap<String, usize>, key: &str) {
    if let Some(mut count) = open.get_mut(key) {
        *count = count.saturating_sub(1);
    }
    open.remove_if(key, |_, n| *n == 0);
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        for key in &self.keys {
            release(&self.open, key);
        }
    }
}

fn frame(event: &StreamEvent) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        event.seq, event.kind, event.data
    ))
}

/// The SSE response for what `view` shows of `stream` (whose live events come from `hub`),
/// starting after event `after`. It ends after the view's last event, when the client goes
/// away or stalls, or when the server shuts down (clients reconnect with `Last-Event-ID`).
pub fn respond(
    req: &HttpRequest,
    state: &AppState,
    slot: StreamSlot,
    hub: EventHub,
    stream: String,
    view: View,
    after: i64,
) -> HttpResponse {
    let log: Arc<dyn EventLog> = Arc::new(state.store.clone());
    let heartbeat = Duration::from_secs(state.config.streams.heartbeat_secs);
    let stall = Duration::from_secs(state.config.streams.stall_timeout_secs);
    let shutdown = state.shutdown.clone();
    let connection = req.conn_data::<Connection>().copied();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    actix_web::rt::spawn(async move {
        let mut live = hub.subscribe(&stream);
        let out = Out {
            tx: &tx,
            view,
            stall,
            stalled: std::cell::Cell::new(false),
        };
        tokio::select! {
            followed = follow(&mut live, &*log, &stream, after, heartbeat, &out) => {
                if let Err(e) = followed {
                    tracing::debug!(%stream, error = %e, "event stream ended early");
                }
            }
            _ = shutdown.cancelled() => {}
        }
        drop(live);
        hub.release(&stream);
        // A client that reads nothing never lets the server write the end of the answer:
        // its socket is shut down. Its body is still alive (not closed), so is its
        // connection, on this same worker thread: the descriptor is still this socket's.
        if out.stalled.get() && !tx.is_closed() {
            if let Some(connection) = connection {
                connection.shut_down();
            }
        }
    });
    body(ReceiverStream::new(rx).map(Ok::<_, actix_web::Error>), slot)
}

/// A `text/event-stream` answer streaming `frames`, holding `slot` while it is open.
pub fn body<S>(frames: S, slot: StreamSlot) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + Unpin + 'static,
{
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(Counted::new(frames, slot))
}

/// An SSE body counted in `dgidgi_sse_subscribers` while the client holds it open.
pub struct Counted<S> {
    frames: S,
    _slot: StreamSlot,
}

impl<S> Counted<S> {
    fn new(frames: S, slot: StreamSlot) -> Self {
        metrics::gauge!("dgidgi_sse_subscribers").increment(1.0);
        Self {
            frames,
            _slot: slot,
        }
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
        std::pin::Pin::new(&mut self.frames).poll_next(cx)
    }
}

/// Where frames go: the body's channel, and how long a full one may wait for the client.
struct Out<'a> {
    tx: &'a mpsc::Sender<Bytes>,
    /// What of the stream the client follows.
    view: View,
    stall: Duration,
    /// Set when the client was given up for not reading.
    stalled: std::cell::Cell<bool>,
}

/// The socket of an HTTP connection, recorded when it is accepted (`startup`), so that a
/// stream whose client stopped reading can be cut.
#[derive(Debug, Clone, Copy)]
pub struct Connection(pub std::os::fd::RawFd);

impl Connection {
    fn shut_down(self) {
        use std::os::fd::FromRawFd;
        // Borrowed, never closed here: the connection owns the descriptor.
        let socket =
            std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(self.0) });
        let _ = socket.shutdown(std::net::Shutdown::Both);
    }
}

/// Sends stored then live events until the terminal one, or until the client goes away.
async fn follow(
    live: &mut broadcast::Receiver<Arc<StreamEvent>>,
    log: &dyn EventLog,
    stream: &str,
    after: i64,
    heartbeat: Duration,
    tx: &Out<'_>,
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
                    if pass(tx, &event).await? {
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
            _ = tx.tx.closed() => return Ok(()),
        }
    }
}

/// Sends the stored events after `last`; true when the terminal one was among them.
async fn catch_up(
    log: &dyn EventLog,
    stream: &str,
    last: &mut i64,
    tx: &Out<'_>,
) -> Result<bool, String> {
    let events = log
        .events_after(stream, *last)
        .await
        .map_err(|e| e.to_string())?;
    for event in events {
        *last = event.seq;
        if pass(tx, &event).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Sends `event` if the client's view shows it; true when it ends the view.
async fn pass(out: &Out<'_>, event: &StreamEvent) -> Result<bool, String> {
    if out.view.shows(event) {
        send(out, frame(event)).await?;
    }
    Ok(out.view.ends_with(event))
}

/// Queues `bytes` for the client; a client that has not taken any for the stall time (the
/// channel and the socket's buffers are full) is given up.
async fn send(out: &Out<'_>, bytes: Bytes) -> Result<(), String> {
    match out.tx.send_timeout(bytes, out.stall).await {
        Ok(()) => Ok(()),
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            out.stalled.set(true);
            tracing::info!(
                stall_secs = out.stall.as_secs(),
                "an event-stream subscriber stopped reading; disconnected"
            );
            Err("the client stopped reading".to_string())
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => Err("the client went away".to_string()),
    }
}
