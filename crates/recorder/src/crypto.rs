//! OwnTracks payload encryption: libsodium's `crypto_secretbox` (XSalsa20-Poly1305). The key
//! is the secret's UTF-8 bytes, cut to 32 and zero-padded (no KDF, as the apps do); the wire form
//! is `base64(nonce[24] || ciphertext-with-MAC)`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};

const NONCE_LEN: usize = 24;

fn cipher(secret: &str) -> XSalsa20Poly1305 {
    let mut key = [0u8; 32];
    let bytes = secret.as_bytes();
    let n = bytes.len().min(32);
    key[..n].copy_from_slice(&bytes[..n]);
    XSalsa20Poly1305::new(Key::from_slice(&key))
}

/// Opens the `data` member of an `encrypted` message; `None` if it is not base64, too short, or
/// was sealed with another key.
pub fn decrypt(secret: &str, data: &str) -> Option<Vec<u8>> {
    let raw = STANDARD.decode(data.trim()).ok()?;
    if raw.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    cipher(secret).decrypt(Nonce::from_slice(nonce), sealed).ok()
}

/// Seals `plain` with a fresh random nonce, as the `data` member of an `encrypted` message.
pub fn encrypt(secret: &str, plain: &[u8]) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the operating system's random source failed");
    let sealed =
        cipher(secret).encrypt(Nonce::from_slice(&nonce), plain).expect("secretbox cannot fail to seal");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    STANDARD.encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_key() {
        let data = encrypt("s3cret", br#"{"_type":"location"}"#);
        assert_eq!(decrypt("s3cret", &data).unwrap(), br#"{"_type":"location"}"#);
        assert_eq!(decrypt("other", &data), None);
        assert_eq!(decrypt("s3cret", "not base64!"), None);
        assert_eq!(decrypt("s3cret", "AAAA"), None);
    }

    #[test]
    fn long_secrets_are_cut_to_32_bytes() {
        let long = "0123456789abcdef0123456789abcdefTAIL";
        let data = encrypt(long, b"x");
        assert_eq!(decrypt("0123456789abcdef0123456789abcdef", &data).unwrap(), b"x");
    }
}
