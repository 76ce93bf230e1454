//! Idempotency records: the first response to a request carrying an `Idempotency-Key`,
//! replayed for every retry of the same request.

use sqlx::Row;

use super::writer::Stmt;
use super::{Result, Store};

/// A finished first response.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone)]
pub enum Reservation {
    /// The key is new and now held by this request.
    Claimed,
    /// A request with this key is still running.
    InFlight { fingerprint: String },
    /// A request with this key has finished; its response is kept.
    Done(IdempotencyRecord),
}

impl Store {
    /// Claims `key` in `scope` for a request with `fingerprint`, or says who has it.
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: &str,
    ) -> Result<Reservation> {
        let insert = Stmt::new(
            "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (scope, idem_key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(now);
        let inserted = self.write_one(insert).await?.changed;
        if inserted == 1 {
            return Ok(Reservation::Claimed);
        }
        let row = sqlx::query(
            "SELECT fingerprint, status, response FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            // Released between the insert and the read: the caller may simply try again.
            return Ok(Reservation::InFlight {
                fingerprint: fingerprint.to_string(),
            });
        };
        let fingerprint: String = row.try_get("fingerprint")?;
        let status: Option<i64> = row.try_get("status")?;
        Ok(match status {
            None => Reservation::InFlight { fingerprint },
            Some(status) => Reservation::Done(IdempotencyRecord {
                fingerprint,
                status: u16::try_from(status).unwrap_or(500),
                body: row
                    .try_get::<Option<String>, _>("response")?
                    .unwrap_or_default(),
            }),
        })
    }

    /// Keeps the response of the request that claimed `key`.
    pub async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        let keep = Stmt::new(
            "UPDATE idempotency_keys SET status = $3, response = $4 WHERE scope = $1 AND idem_key = $2",
        )
        .bind(scope)
        .bind(key)
        .bind(i64::from(status))
        .bind(body);
        self.write_one(keep).await?;
        Ok(())
    }

    /// Lets `key` go (the request failed on our side), so a retry runs again.
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<()> {
        let release = Stmt::new("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
            .bind(scope)
            .bind(key);
        self.write_one(release).await?;
        Ok(())
    }
}
