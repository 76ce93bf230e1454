//! The one timestamp format of the runtime: RFC 3339, UTC, milliseconds and a `Z`
//! (`2026-01-07T18:00:00.000Z`). Its fixed width makes stored timestamps sort as text,
//! which keyset pagination and every "due before" query rely on.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `at` in the stored form.
pub fn format(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Now, in the stored form.
pub fn now() -> String {
    format(Utc::now())
}

/// `after` from now, in the stored form.
pub fn later(after: Duration) -> String {
    format(Utc::now() + chrono::Duration::from_std(after).unwrap_or_default())
}

/// `before` ago, in the stored form.
pub fn earlier(before: Duration) -> String {
    format(Utc::now() - chrono::Duration::from_std(before).unwrap_or_default())
}

/// How long until stored time `at` (zero when it has passed or does not parse).
pub fn until(at: &str) -> Duration {
    DateTime::parse_from_rfc3339(at)
        .ok()
        .and_then(|at| (at.with_timezone(&Utc) - Utc::now()).to_std().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_times_have_one_fixed_width_form() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-07T19:00:00.5+01:00").unwrap();
        assert_eq!(super::format(at.into()), "2026-01-07T18:00:00.500Z");
        assert_eq!(super::now().len(), 24);
        assert!(
            super::earlier(std::time::Duration::from_secs(1))
                < super::later(std::time::Duration::ZERO)
        );
        let soon = super::until(&super::later(std::time::Duration::from_secs(60)));
        assert!(soon > std::time::Duration::from_secs(50));
        assert_eq!(
            super::until(&super::earlier(std::time::Duration::from_secs(1))),
            std::time::Duration::ZERO
        );
    }
}
