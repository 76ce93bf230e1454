//! Webhook delivery: Standard Webhooks signing and the HTTP sender the `WebhookActor`
//! (actors crate) delivers through, behind the outbound-address guard.

pub mod signing;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use dgidgi_actors::webhook::{DueDelivery, Outcome, WebhookSender};

use crate::outbound as guard;
use crate::sealing::Sealer;

/// Sends deliveries over HTTP: signed, with a timeout, no redirects, and the address guard.
pub struct HttpSender {
    client: reqwest::Client,
    sealer: Sealer,
    allow_private: bool,
}

impl HttpSender {
    pub fn new(sealer: Sealer, timeout: Duration, allow_private: bool) -> Self {
        let client = guard::client(timeout, allow_private, "dgidgi-webhooks");
        Self {
            client,
            sealer,
            allow_private,
        }
    }

    /// Every signature the delivery carries: the current secret's and, during a rotation,
    /// the previous one's.
    fn signatures(&self, delivery: &DueDelivery, timestamp: u64) -> Result<String, String> {
        let mut signatures = Vec::new();
        for sealed in std::iter::once(&delivery.secret).chain(delivery.previous_secret.as_ref()) {
            let secret = self.sealer.open(sealed)?;
            let key = signing::secret_bytes(&secret)?;
            signatures.push(signing::sign(&key, &delivery.id, timestamp, &delivery.body));
        }
        Ok(signatures.join(" "))
    }
}

#[async_trait]
impl WebhookSender for HttpSender {
    async fn send(&self, delivery: &DueDelivery) -> Outcome {
        let started = Instant::now();
        let failed = |status: Option<u16>, error: String| Outcome::Failed {
            status,
            latency_ms: started.elapsed().as_millis() as u64,
            error,
        };
        let url = match reqwest::Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(e) => return failed(None, format!("bad url: {e}")),
        };
        if let Some(class) = guard::literal_ip(&url)
            .and_then(guard::forbidden)
            .filter(|_| !self.allow_private)
        {
            return failed(
                None,
                format!("forbidden address: the URL points to a {class} address"),
            );
        }
        let timestamp = crate::http::unix_now();
        let signature = match self.signatures(delivery, timestamp) {
            Ok(s) => s,
            Err(e) => return failed(None, format!("cannot sign: {e}")),
        };
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        match sent {
            Ok(res) if res.status().is_success() => Outcome::Delivered {
                status: res.status().as_u16(),
                latency_ms,
            },
            Ok(res) if res.status().as_u16() == 410 => Outcome::Gone { latency_ms },
            Ok(res) if res.status().is_redirection() => {
                failed(Some(res.status().as_u16()), "redirect not followed".into())
            }
            Ok(res) => failed(
                Some(res.status().as_u16()),
                format!("receiver answered {}", res.status()),
            ),
            Err(e) if e.is_timeout() => failed(None, "timeout".into()),
            Err(e) => {
                // The guard's refusal travels as the error's source.
                let mut cause = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(inner) = source {
                    cause = inner.to_string();
                    source = inner.source();
                }
                failed(None, cause)
            }
        }
    }
}
