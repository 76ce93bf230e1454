//! Webhooks in the store: endpoints (`endpoints.rs`) and deliveries with their attempts
//! and the outbox fan-out (`deliveries.rs`).

mod deliveries;
mod endpoints;

pub use deliveries::{Attempt, Delivery};
pub use endpoints::{Endpoint, NewEndpoint};
