//! The API's wire shapes: what a response carries, described for the OpenAPI document.
//!
//! The domain types live in `actors/` and `src/store/` and know nothing of the document;
//! each type here is built from one of them (`From`), and handlers reply with these. So
//! the document and the bytes on the wire come from the same type, and a change of a
//! domain type shows up here as a compile error rather than as a silent change of the API.

mod agents;
mod chat;
mod identity;
mod mcp;
mod ops;
mod projects;
mod regions;
mod runs;
mod storage;
mod tenants;
mod usage;
mod webhooks;

pub use agents::*;
pub use chat::*;
pub use identity::*;
pub use mcp::*;
pub use ops::*;
pub use projects::*;
pub use regions::*;
pub use runs::*;
pub use storage::*;
pub use tenants::*;
pub use usage::*;
pub use webhooks::*;

/// Converts a list of domain values into their wire shapes.
pub fn all<T, W: From<T>>(items: Vec<T>) -> Vec<W> {
    items.into_iter().map(W::from).collect()
}

/// Millionths of a US dollar as dollars.
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}
