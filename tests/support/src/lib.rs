//! What the integration tests (`tests/api`) and the load drivers (`benches/`) share: one
//! OpenAI-compatible fake server, fresh PostgreSQL databases, an SSE frame reader and
//! polling helpers. Everything here listens and connects on loopback only.

pub mod fake_llm;
pub mod poll;
pub mod postgres;
pub mod sse;

pub use fake_llm::{FakeLlm, Script};
pub use poll::{eventually, holds_for, until};
pub use postgres::FreshDatabase;
pub use sse::{Frame, Frames};
