//! Fixed-window rate limiting: a budget per API key and a ceiling per tenant, both reset at
//! the end of each window. These counts live in this process, for one node (SQLite); nodes
//! sharing PostgreSQL count in the database instead (`Store::count_request`), by the same
//! rule.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::config::PlanLimits;

/// The outcome of counting one request, with what the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// When the window ends, in Unix epoch seconds.
    pub reset: u64,
}

impl Decision {
    /// Seconds until the window resets (at least 1), for `Retry-After`.
    pub fn retry_after(&self, now: u64) -> u64 {
        self.reset.saturating_sub(now).max(1)
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    count: u32,
}

pub struct RateLimiter {
    window_secs: u64,
    keys: DashMap<String, Window>,
    tenants: DashMap<String, Window>,
    /// The window in which stale entries were last swept.
    swept: AtomicU64,
}

impl RateLimiter {
    pub fn new(window_secs: u64) -> Self {
        Self {
            window_secs,
            keys: DashMap::new(),
            tenants: DashMap::new(),
            swept: AtomicU64::new(0),
        }
    }

    /// Counts one request of `key` in `tenant` at Unix time `now`; a refused request is not
    /// counted against either budget.
    pub fn check(&self, key: &str, tenant: &str, limits: PlanLimits, now: u64) -> Decision {
        let start = now - now % self.window_secs;
        let reset = start + self.window_secs;
        self.sweep(start);
        let mut tenant_window = self
            .tenants
            .entry(tenant.to_string())
            .or_insert(Window { start, count: 0 });
        if tenant_window.start != start {
            *tenant_window = Window { start, count: 0 };
        }
        let mut key_window = self
            .keys
            .entry(key.to_string())
            .or_insert(Window { start, count: 0 });
        if key_window.start != start {
            *key_window = Window { start, count: 0 };
        }
        let allowed = key_window.count < limits.per_key && tenant_window.count < limits.per_tenant;
        if allowed {
            key_window.count += 1;
            tenant_window.count += 1;
        }
        let remaining = (limits.per_key - key_window.count.min(limits.per_key))
            .min(limits.per_tenant - tenant_window.count.min(limits.per_tenant));
        Decision {
            allowed,
            limit: limits.per_key,
            remaining,
            reset,
        }
    }

    /// Once per window, drops the counters of windows that are over.
    fn sweep(&self, start: u64) {
        let last = self.swept.load(Ordering::Relaxed);
        if last == start
            || self
                .swept
                .compare_exchange(last, start, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.keys.retain(|_, w| w.start == start);
        self.tenants.retain(|_, w| w.start == start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PlanLimits = PlanLimits {
        per_key: 2,
        per_tenant: 3,
    };

    #[test]
    fn a_key_gets_its_budget_then_is_refused_until_the_window_ends() {
        let limiter = RateLimiter::new(60);
        let first = limiter.check("k1", "t1", LIMITS, 120);
        assert_eq!(
            (first.allowed, first.remaining, first.reset),
            (true, 1, 180)
        );
        assert!(limiter.check("k1", "t1", LIMITS, 130).allowed);
        let refused = limiter.check("k1", "t1", LIMITS, 179);
        assert_eq!((refused.allowed, refused.remaining), (false, 0));
        assert_eq!(refused.retry_after(179), 1);
        assert!(limiter.check("k1", "t1", LIMITS, 180).allowed);
    }

    #[test]
    fn the_tenant_ceiling_caps_all_its_keys_together() {
        let limiter = RateLimiter::new(60);
        assert!(limiter.check("k1", "t1", LIMITS, 0).allowed);
        assert!(limiter.check("k1", "t1", LIMITS, 0).allowed);
        assert!(limiter.check("k2", "t1", LIMITS, 0).allowed);
        assert!(!limiter.check("k2", "t1", LIMITS, 0).allowed);
        assert!(limiter.check("k3", "t2", LIMITS, 0).allowed);
    }
}
