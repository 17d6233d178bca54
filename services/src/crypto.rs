//! Credentials a tenant gives us (its Twilio auth token, later Stripe/CloseBot/OpenAI keys) are
//! stored sealed: AES-256-GCM with a 96-bit random nonce, under a key derived from `SECRET_KEY`
//! with HKDF-SHA256. Stored form: base64(nonce || ciphertext || tag).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Seals and opens stored credentials.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

/// A sealed value could not be opened (wrong `SECRET_KEY`, or the value was altered).
#[derive(Debug, thiserror::Error)]
#[error("a stored credential could not be decrypted: was SECRET_KEY changed?")]
pub struct OpenError;

/// A 256-bit key for one purpose (`label`), derived from `SECRET_KEY` with HKDF-SHA256, so
/// keys of different purposes are independent.
pub fn derive_key(secret_key: &SecretString, label: &str) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"switchboard"), secret_key.expose_secret().as_bytes());
    let mut key = [0u8; 32];
    hk.expand(label.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

impl Sealer {
    /// Derives the credential key from `secret_key`.
    pub fn new(secret_key: &SecretString) -> Self {
        let key = derive_key(secret_key, "stored credentials v1");
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// Seals `plaintext` with a fresh random nonce.
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce_bytes: [u8; 12] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext.as_bytes())
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ciphertext);
        STANDARD.encode(out)
    }

    /// Opens a value made by [`Sealer::seal`].
    ///
    /// # Errors
    /// [`OpenError`] when the value is malformed or was sealed under another key.
    pub fn open(&self, sealed: &str) -> Result<SecretString, OpenError> {
        let raw = STANDARD.decode(sealed).map_err(|_| OpenError)?;
        if raw.len() < 12 + 16 {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = raw.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| OpenError)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_detects_another_key() {
        let a = Sealer::new(&SecretString::from("a".repeat(32)));
        let b = Sealer::new(&SecretString::from("b".repeat(32)));
        let sealed = a.seal("auth-token");
        assert_ne!(sealed, a.seal("auth-token"), "fresh nonce each time");
        assert_eq!(a.open(&sealed).unwrap().expose_secret(), "auth-token");
        assert!(b.open(&sealed).is_err());
        assert!(a.open("not base64!").is_err());
    }
}
