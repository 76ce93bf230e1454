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
    until(limit, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Polls `look` every 20 ms until it finds something, for at most `limit`; what it found.
pub async fn until<T, F, Fut>(limit: Duration, mut look: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = look().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
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
