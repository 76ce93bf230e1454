//! Standard Webhooks signatures: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, with the
//! secret's bytes (a `whsec_` secret's base64-decoded bytes, any other string's UTF-8).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

/// The signing key of a secret as written by the user.
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD
            .decode(encoded)
            .map_err(|e| format!("whsec_ secret is not base64: {e}")),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The `webhook-signature` value for one key.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A new `whsec_` secret (24 random bytes).
pub fn generate_secret() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// What a listing shows of a secret: its kind and last four characters.
pub fn hint(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let kind = if secret.starts_with("whsec_") {
        "whsec_"
    } else {
        ""
    };
    format!("{kind}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn the_specification_test_vector_is_reproduced() {
        let key = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn plain_secrets_are_their_utf8_bytes() {
        assert_eq!(
            secret_bytes("your_webhook_secret").unwrap(),
            b"your_webhook_secret"
        );
        assert!(secret_bytes("whsec_***").is_err());
        assert!(secret_bytes(&generate_secret()).unwrap().len() == 24);
    }
}
