//! The `WebhookActor`: turns the durable outbox into deliveries (one per event and
//! subscribed endpoint, with a stable id) and delivers those that are due, retrying on a
//! schedule. At least once: deliveries live in the store, so a restart resumes them.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;

use crate::registry::ActorMeta;
use crate::store::StoreFailure;

/// A delivery whose time has come, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// Also the `webhook-id` header: the same on every attempt.
    pub id: String,
    pub endpoint_id: String,
    pub url: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The endpoint's secret, sealed; and the previous one while it still signs.
    pub secret: String,
    pub previous_secret: Option<String>,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered { status: u16, latency_ms: u64 },
    /// 410 Gone: the receiver asks us to stop; the endpoint is disabled.
    Gone { latency_ms: u64 },
    /// Any other answer, or no answer.
    Failed {
        status: Option<u16>,
        latency_ms: u64,
        error: String,
    },
}

/// What the webhook actor needs from the store.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Creates the deliveries of outbox events not yet fanned out; returns how many events.
    async fn fan_out(&self, limit: usize) -> Result<usize, StoreFailure>;
    /// Claims pending deliveries due now, of enabled endpoints: none of them is due again
    /// (on any node) for `hold`, unless its attempt is recorded first.
    async fn due_deliveries(
        &self,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<DueDelivery>, StoreFailure>;
    /// Records an attempt: its outcome, the next retry (`None`: no more), and the
    /// endpoint's health (see [`Disable`]).
    async fn record_attempt(
        &self,
        delivery: &DueDelivery,
        outcome: &Outcome,
        next_retry_in: Option<Duration>,
        disable: Disable,
    ) -> Result<(), StoreFailure>;
}

/// Sends one signed delivery.
#[async_trait]
pub trait WebhookSender: Send + Sync + 'static {
    async fn send(&self, delivery: &DueDelivery) -> Outcome;
}

/// When failures disable an endpoint: after `failures` failed attempts in a row that have
/// gone on for at least `failing_for` (an outage of a second during a burst fails many
/// attempts at once, and must not disable an endpoint for good; Standard Webhooks senders
/// disable after days of failure). A 410 Gone disables at once.
#[derive(Debug, Clone, Copy)]
pub struct Disable {
    pub failures: u32,
    pub failing_for: Duration,
}

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The wait before attempt n+2 after attempt n+1 failed; after the last, give up.
    pub retry_schedule: Vec<Duration>,
    pub disable: Disable,
    pub poll_every: Duration,
    /// Deliveries sent at once in one round.
    pub batch: usize,
    /// How long a claimed delivery is left to its node before another may attempt it
    /// (longer than an attempt can take).
    pub hold: Duration,
}

/// Wait before the next attempt after `attempts` failed ones, with ±10% jitter; `None`
/// when the schedule is spent.
pub fn next_retry(schedule: &[Duration], attempts: u32, jitter: f64) -> Option<Duration> {
    let base = schedule.get(attempts.checked_sub(1)? as usize)?;
    Some(base.mul_f64(1.0 + (jitter.clamp(0.0, 1.0) - 0.5) * 0.2))
}

pub struct WebhookActor {
    store: Arc<dyn WebhookStore>,
    sender: Arc<dyn WebhookSender>,
    settings: WebhookSettings,
    /// A round is running; ticks skip until it is done, so no delivery is sent twice at once.
    busy: bool,
    meta: Arc<ActorMeta>,
}

impl WebhookActor {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        sender: Arc<dyn WebhookSender>,
        settings: WebhookSettings,
        meta: Arc<ActorMeta>,
    ) -> Self {
        meta.set_state("polling");
        Self {
            store,
            sender,
            settings,
            busy: false,
            meta,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        self.meta.handled();
        let (store, sender, settings, meta) = (
            self.store.clone(),
            self.sender.clone(),
            self.settings.clone(),
            self.meta.clone(),
        );
        ctx.spawn(
            round(store, sender, settings, meta)
                .into_actor(self)
                .map(|more, act, ctx| {
                    act.busy = false;
                    act.meta.set_state("polling");
                    // A full round means more may be waiting: go on at once, not at the next tick.
                    if more {
                        act.tick(ctx);
                    }
                }),
        );
    }
}

/// One round: fan out, then send what is due. True when either filled its batch.
async fn round(
    store: Arc<dyn WebhookStore>,
    sender: Arc<dyn WebhookSender>,
    settings: WebhookSettings,
    meta: Arc<ActorMeta>,
) -> bool {
    const FAN_OUT: usize = 500;
    let fanned = match store.fan_out(FAN_OUT).await {
        Ok(n) => n,
        Err(e) => {
            meta.record_error(&format!("fan-out: {e}"));
            tracing::error!(error = %e, "webhook fan-out failed");
            0
        }
    };
    let due = match store.due_deliveries(settings.batch, settings.hold).await {
        Ok(due) => due,
        Err(e) => {
            meta.record_error(&format!("due deliveries: {e}"));
            tracing::error!(error = %e, "due webhook deliveries not read");
            return false;
        }
    };
    if !due.is_empty() {
        meta.set_state("sending");
    }
    let full = fanned == FAN_OUT || due.len() == settings.batch;
    let attempts = due.into_iter().map(|delivery| {
        let (store, sender, settings) = (store.clone(), sender.clone(), settings.clone());
        async move {
            let outcome = sender.send(&delivery).await;
            let label = match &outcome {
                Outcome::Delivered { .. } => "delivered",
                Outcome::Gone { .. } => "gone",
                Outcome::Failed { .. } => "failed",
            };
            metrics::counter!("dgidgi_webhook_attempts_total", "outcome" => label).increment(1);
            let next = match &outcome {
                Outcome::Failed { .. } => next_retry(&settings.retry_schedule, delivery.attempts + 1, rand_unit()),
                _ => None,
            };
            if let Err(e) = store.record_attempt(&delivery, &outcome, next, settings.disable).await {
                tracing::error!(delivery = %delivery.id, error = %e, "webhook attempt not recorded");
            }
        }
    });
    futures_util::future::join_all(attempts).await;
    full
}

/// A number in [0, 1) for jitter, from the clock's nanoseconds (no cryptographic need).
fn rand_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

impl Actor for WebhookActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.settings.poll_every, Self::tick);
    }
}

impl Supervised for WebhookActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("webhook actor restarting");
        self.meta.restarted();
        self.busy = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_schedule_is_followed_with_jitter_then_ends() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        assert_eq!(next_retry(&schedule, 0, 0.5), None);
        assert_eq!(next_retry(&schedule, 1, 0.5), Some(Duration::from_secs(5)));
        let jittered = next_retry(&schedule, 2, 0.0).unwrap();
        assert!(jittered >= Duration::from_secs(270) && jittered <= Duration::from_secs(330));
        assert_eq!(next_retry(&schedule, 3, 0.5), None);
    }
}
