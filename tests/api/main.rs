//! The API test suite: one binary (to keep link time down) whose tests start the real
//! application on port 0 and talk to it over HTTP. Tests listed in `backend_tests!` run on
//! SQLite and on PostgreSQL.

mod fake_llm;
mod helpers;

mod agent_chat;
mod approvals;
mod auth;
mod browser;
mod budgets;
mod chat;
mod cli;
mod cli_client;
mod cluster;
mod errors;
mod faults;
mod hardening;
mod health;
mod idempotency;
mod isolation;
mod keys;
mod layering;
mod mcp;
mod openapi;
mod ops;
mod projects;
mod ratelimit;
mod regions;
mod restart;
mod runs;
mod s3;
mod sdk;
mod secrets;
mod tenants;
mod users;
mod webhooks;
mod wire;
