//! Waiting on conditions instead of sleeping a fixed time: `eventually` for "it happens",
//! `holds_for` for "nothing changes", which must watch a window long enough to mean
//! something.

use std::future::Future;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(20);

/// Polls `check` every 20 ms until it holds, for at most `limit`; whether it came to hold.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Polls `check` every 20 ms for the whole of `window`; whether it held every time.
/// The window is the claim ("nothing more arrives within 500 ms"): size it to the
/// mechanism under test (a retry schedule, a timer), not to how fast the machine is.
pub async fn holds_for<F, Fut>(window: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + window;
    loop {
        if !check().await {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(EVERY).await;
    }
}
