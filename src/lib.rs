//! `dgidgi`: the server of the DgiDgi One API.
//!
//! - [`startup`]: builds the application from a [`config::Config`] (used by `main` and tests).
//! - [`http`]: routes, handlers, middleware, envelopes; the only module that knows HTTP.
//! - [`store`]: the only module with SQL (SQLite and PostgreSQL through sqlx).
//! - [`auth`]: API keys, JWTs and the principal a request acts as.
//! - [`providers`]: LLM providers (async-openai, offline); the only module importing async-openai.
//! - [`ratelimit`]: per-key and per-tenant request budgets.
//! - [`webhooks`]: signatures and the HTTP sender of webhook deliveries.
//! - [`outbound`]: the address guard and HTTP client for user-supplied URLs.
//! - [`sealing`]: secrets sealed at rest (AES-256-GCM).
//! - [`secrets`]: where the JWT secret and the sealing key come from (never the database).
//! - [`storage`]: tenant files through platform storage or the tenant's own bucket.
//! - [`cli`], [`client`]: the command line; the client of a running server.
//! - [`telemetry`]: the Prometheus recorder and log set-up.
//! - [`regions`]: regions, plans and their features, as config defines them.
//! - The actors live in the `dgidgi-actors` crate (`actors/`).

pub mod auth;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod http;
pub mod ids;
pub mod mcp;
pub mod outbound;
pub mod providers;
pub mod ratelimit;
pub mod regions;
pub mod sealing;
pub mod secrets;
pub mod startup;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod webhooks;
