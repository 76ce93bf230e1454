//! Secrets at rest: sealed with AES-256-GCM (random 96-bit nonce, stored before the
//! ciphertext, base64), optionally bound to a context such as the owning tenant.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::Rng;

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// A sealer with a 32-byte key, given as base64.
    pub fn from_base64(key: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(key.trim())
            .map_err(|e| format!("secrets.key is not base64: {e}"))?;
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| "secrets.key must be 32 bytes".to_string())?;
        Ok(Self { cipher })
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
        let bytes = STANDARD.decode(sealed).map_err(|e| e.to_string())?;
        if bytes.len() < 12 {
            return Err("sealed secret too short".into());
        }
        let (nonce, data) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("12 bytes");
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: data,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| "secret does not unseal with this key".to_string())?;
        String::from_utf8(plain).map_err(|e| e.to_string())
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
    fn a_bound_secret_opens_only_in_its_context() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let sealed = sealer.seal_bound("key", "tenant:a");
        assert_eq!(sealer.open_bound(&sealed, "tenant:a").unwrap(), "key");
        assert!(sealer.open_bound(&sealed, "tenant:b").is_err());
        assert!(sealer.open(&sealed).is_err());
    }
}
