//! The actor system of the DgiDgi runtime.
//!
//! Each live entity (a tenant, an agent run; chat sessions and webhooks later) is a
//! supervised actix actor that owns its entity's live state and is its single writer.
//! Actors are activated on demand by a registry, passivated when idle, and restarted by
//! their supervisor after a failure, reloading their state from the store.
//!
//! This crate knows nothing of HTTP, JSON over the wire or SQL: actors reach durable state
//! through the traits in [`store`], which the `dgidgi` crate implements.
//!
//! - [`agent`]: agents, their autonomy, and the rule that makes a run's spec of one.
//! - [`tenant`]: the tenant domain (plan, settings) and the `TenantActor`.
//! - [`registry`]: activation, passivation and addressing of keyed actors.
//! - [`chat`]: chat sessions and the `SessionActor` that streams replies.
//! - [`run`]: agent runs and the `RunActor` that steps through a goal.
//! - [`events`]: ordered event logs and their live fan-out (runs, chat sessions).
//! - [`provider`]: the streaming LLM provider interface.
//! - [`webhook`]: the `WebhookActor` that fans the outbox out and delivers, with retries.
//! - [`tools`]: the built-in workspace tools.
//! - [`store`]: the persistence traits actors talk through.
//! - [`time`]: the one timestamp format.

pub mod agent;
pub mod chat;
pub mod events;
pub mod llm;
pub mod provider;
pub mod registry;
pub mod run;
pub mod store;
pub mod tenant;
pub mod time;
pub mod tools;
pub mod webhook;

#[cfg(test)]
mod testing;

pub use registry::{ActorInfo, ActorMeta, Registry};
pub use store::{StoreFailure, TenantStore};
pub use tenant::{
    GetTenant, Tenant, TenantActor, TenantSettings, TenantSettingsPatch, Tenants, UpdateTenant,
};
