//! Secrets at rest: sealed with AES-256-GCM (random 96-bit nonce, stored before the
//! ciphertext, base64), optionally bound to a context such as the owning tenant.
//!
//! A sealer holds the current key and, during a rotation, previous ones: values open with
//! any of them and are sealed with the current one ([`Sealer::reseal_bound`] rewrites a
//! value that only a previous key opens).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::Rng;

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    /// Keys that still open values sealed before a rotation; never used to seal.
    previous: Vec<Aes256Gcm>,
}

fn cipher(key: &str) -> Result<Aes256Gcm, String> {
    let bytes = STANDARD
        .decode(key.trim())
        .map_err(|e| format!("is not base64: {e}"))?;
    Aes256Gcm::new_from_slice(&bytes).map_err(|_| "must be 32 bytes (base64)".to_string())
}

impl Sealer {
    /// A sealer with a 32-byte key, given as base64.
    pub fn from_base64(key: &str) -> Result<Self, String> {
        Self::with_previous(key, &[])
    }

    /// A sealer with the current key and the keys it replaced (all base64).
    pub fn with_previous(key: &str, previous: &[String]) -> Result<Self, String> {
        Ok(Self {
            cipher: cipher(key).map_err(|e| format!("secrets.key {e}"))?,
            previous: previous
                .iter()
                .map(|k| cipher(k).map_err(|e| format!("secrets.previous_keys: a key {e}")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether previous keys are held (values sealed with them may need resealing).
    pub fn has_previous(&self) -> bool {
        !self.previous.is_empty()
    }

    /// A new random key, base64.
    pub fn generate_key() -> String {
        let key: [u8; 32] = rand::rng().random();
        STANDARD.encode(key)
    }

    pub fn seal(&self, plain: &str) -> String {
        self.seal_bound(plain, "")
    }

    pub fn open(&self, sealed: &str) -> Result<String, String> {
        self.open_bound(sealed, "")
    }

    /// Seals `plain` bound to `context` (authenticated, not stored): it opens only with the
    /// same context, so a sealed value copied to another owner's row does not open.
    pub fn seal_bound(&self, plain: &str, context: &str) -> String {
        let nonce: [u8; 12] = rand::rng().random();
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: context.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            .expect("AES-GCM sealing cannot fail");
        STANDARD.encode([nonce.as_slice(), &sealed].concat())
    }

    pub fn open_bound(&self, sealed: &str, context: &str) -> Result<String, String> {
        self.open_with_any(sealed, context).map(|(plain, _)| plain)
    }

    /// `sealed` sealed again with the current key when only a previous key opens it;
    /// `None` when it needs nothing (or opens with no key held: it is left as it is).
    pub fn reseal_bound(&self, sealed: &str, context: &str) -> Option<String> {
        match self.open_with_any(sealed, context) {
            Ok((plain, true)) => Some(self.seal_bound(&plain, context)),
            _ => None,
        }
    }

    /// The plain text, and whether a previous key (not the current one) opened it.
    fn open_with_any(&self, sealed: &str, context: &str) -> Result<(String, bool), String> {
        let bytes = STANDARD.decode(sealed).map_err(|e| e.to_string())?;
        if bytes.len() < 12 {
            return Err("sealed secret too short".into());
        }
        let (nonce, data) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("12 bytes");
        let payload = || Payload {
            msg: data,
            aad: context.as_bytes(),
        };
        let (plain, old) = match self.cipher.decrypt(&Nonce::from(nonce), payload()) {
            Ok(plain) => (plain, false),
            Err(_) => self
                .previous
                .iter()
                .find_map(|c| c.decrypt(&Nonce::from(nonce), payload()).ok())
                .map(|plain| (plain, true))
                .ok_or_else(|| "secret does not unseal with this key".to_string())?,
        };
        Ok((String::from_utf8(plain).map_err(|e| e.to_string())?, old))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let sealed = sealer.seal("whsec_abc");
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(sealer.open(&sealed).unwrap(), "whsec_abc");
        let other = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(Sealer::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn after_a_rotation_old_values_open_and_are_resealed_with_the_new_key() {
        let (old, new) = (Sealer::generate_key(), Sealer::generate_key());
        let sealed = Sealer::from_base64(&old).unwrap().seal_bound("key", "t:a");
        let rotated = Sealer::with_previous(&new, std::slice::from_ref(&old)).unwrap();
        assert_eq!(rotated.open_bound(&sealed, "t:a").unwrap(), "key");
        let resealed = rotated
            .reseal_bound(&sealed, "t:a")
            .expect("needs resealing");
        assert_eq!(rotated.reseal_bound(&resealed, "t:a"), None);
        let new_only = Sealer::from_base64(&new).unwrap();
        assert_eq!(new_only.open_bound(&resealed, "t:a").unwrap(), "key");
        assert!(new_only.open_bound(&sealed, "t:a").is_err());
    }

    #[test]
    fn a_bound_secret_opens_only_in_its_context() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let sealed = sealer.seal_bound("key", "tenant:a");
        assert_eq!(sealer.open_bound(&sealed, "tenant:a").unwrap(), "key");
        assert!(sealer.open_bound(&sealed, "tenant:b").is_err());
        assert!(sealer.open(&sealed).is_err());
    }
}
