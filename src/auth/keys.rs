//! API key format: `chy_<type>_` + 32 random base62 characters + a 6-character base62
//! CRC-32 checksum of everything before it. The checksum lets a malformed or mistyped key
//! be refused without a database look-up; only the key's SHA-256 is ever stored.

use rand::Rng;
use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;

/// What a key is for. Tenant keys are `sdk`, `cli`, `ci`, `int` (integration) and `mkt`
/// (marketplace); `op` keys belong to platform operators and to no tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Sdk,
    Cli,
    Ci,
    Int,
    Mkt,
    Operator,
}

impl KeyType {
    pub const TENANT_TYPES: [KeyType; 5] = [
        KeyType::Sdk,
        KeyType::Cli,
        KeyType::Ci,
        KeyType::Int,
        KeyType::Mkt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Sdk => "sdk",
            KeyType::Cli => "cli",
            KeyType::Ci => "ci",
            KeyType::Int => "int",
            KeyType::Mkt => "mkt",
            KeyType::Operator => "op",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Operator]
            .into_iter()
            .chain(Self::TENANT_TYPES)
            .find(|t| t.as_str() == s)
    }
}

/// A freshly generated key: the secret (shown once), its hash and a display prefix.
pub struct GeneratedKey {
    pub secret: String,
    pub hash: String,
    pub prefix: String,
}

pub fn generate_key(key_type: KeyType) -> GeneratedKey {
    let mut rng = rand::rng();
    let mut secret = format!("chy_{}_", key_type.as_str());
    secret.extend((0..RANDOM_LEN).map(|_| BASE62[rng.random_range(0..62)] as char));
    let checksum = checksum(&secret);
    secret.push_str(&checksum);
    GeneratedKey {
        hash: hash_key(&secret),
        prefix: secret[..secret.len() - RANDOM_LEN - CHECKSUM_LEN + 4].to_string(),
        secret,
    }
}

/// The key's type if `key` is well formed and its checksum matches.
pub fn parse_key(key: &str) -> Option<KeyType> {
    let rest = key.strip_prefix("chy_")?;
    let (kind, body) = rest.split_once('_')?;
    let key_type = KeyType::parse(kind)?;
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (head, tail) = key.split_at(key.len() - CHECKSUM_LEN);
    (checksum(head) == tail).then_some(key_type)
}

/// The stored form of a key: lowercase hex SHA-256.
pub fn hash_key(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

fn checksum(s: &str) -> String {
    let mut n = u64::from(crc32fast::hash(s.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_to_its_type() {
        for t in KeyType::TENANT_TYPES.into_iter().chain([KeyType::Operator]) {
            let key = generate_key(t);
            assert_eq!(parse_key(&key.secret), Some(t), "{}", key.secret);
            assert!(key.secret.starts_with(&key.prefix));
        }
    }

    #[test]
    fn a_key_with_one_character_changed_is_refused() {
        let key = generate_key(KeyType::Sdk).secret;
        let mut bytes = key.into_bytes();
        bytes[12] = if bytes[12] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse_key(&String::from_utf8(bytes).unwrap()), None);
    }

    #[test]
    fn keys_of_unknown_types_or_lengths_are_refused() {
        assert_eq!(
            parse_key("chy_xyz_0123456789012345678901234567890123456"),
            None
        );
        assert_eq!(parse_key("chy_sdk_short"), None);
        assert_eq!(parse_key("sk-not-ours"), None);
    }
}
