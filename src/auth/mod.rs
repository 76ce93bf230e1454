//! Authentication: API keys, JWTs minted from them, and the [`Principal`] a request acts as.

mod jwt;
mod keys;
mod principal;

pub use jwt::{Claims, JwtIssuer};
pub use keys::{generate_key, hash_key, parse_key, GeneratedKey, KeyType};
pub use principal::{Principal, Scope, TENANT_SCOPES};
