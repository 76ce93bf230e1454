//! `dgidgi`: the server of the DgiDgi One API.
//!
//! - [`startup`]: builds the application from a [`config::Config`] (used by `main` and tests).
//! - [`http`]: routes, handlers, middleware, envelopes; the only module that knows HTTP.
//! - [`store`]: the only module with SQL (SQLite and PostgreSQL through sqlx).
//! - [`auth`]: API keys, JWTs and the principal a request acts as.
//! - [`providers`]: LLM providers (async-openai, offline); the only module importing async-openai.
//! - [`ratelimit`]: per-key and per-tenant request budgets.
//! - [`webhooks`]: outbound-address guard, signatures, sealed secrets, the HTTP sender.
//! - The actors live in the `dgidgi-actors` crate (`actors/`).

pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod ids;
pub mod providers;
pub mod ratelimit;
pub mod startup;
pub mod store;
pub mod webhooks;
