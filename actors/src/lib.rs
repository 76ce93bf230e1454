//! The actor system of the DgiDgi runtime.
//!
//! Each live entity (a tenant today; agent runs, chat sessions and webhooks later) is a
//! supervised actix actor that owns its entity's live state and is its single writer.
//! Actors are activated on demand by a registry, passivated when idle, and restarted by
//! their supervisor after a failure, reloading their state from the store.
//!
//! This crate knows nothing of HTTP, JSON over the wire or SQL: actors reach durable state
//! through the traits in [`store`], which the `dgidgi` crate implements.
//!
//! - [`tenant`]: the tenant domain (plan, settings) and the `TenantActor`.
//! - [`registry`]: activation, passivation and addressing of keyed actors.
//! - [`store`]: the persistence traits actors talk through.

pub mod registry;
pub mod store;
pub mod tenant;

pub use registry::{ActorError, Registry};
pub use store::{StoreFailure, TenantStore};
pub use tenant::{
    GetTenant, Tenant, TenantActor, TenantError, TenantSettings, TenantSettingsPatch, Tenants,
    UpdateTenant,
};
