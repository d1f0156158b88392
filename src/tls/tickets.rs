//! Session-ticket keys shared by the two balancers of an HA pair.
//!
//! rustls's own ticketer (`rustls::crypto::ring::Ticketer`) makes its keys up
//! at random in each process, so a client's ticket is worthless on the other
//! node after a failover and every client does a full handshake. Here the keys
//! come from a file both nodes read (`ticket_keys_file`), so either node opens
//! the other's tickets. rustls offers no ticketer with caller-given keys, which
//! is why this implements [`rustls::server::ProducesTickets`] itself, with
//! ring's AEAD (ChaCha20-Poly1305, the construction rustls's ticketer uses):
//! no cryptography is written here, only the ticket layout.
//!
//! File format: one key per line, 64 hex digits (32 random bytes, e.g.
//! `openssl rand -hex 32`); blank lines and `#` comments are ignored. The first
//! key encrypts new tickets; every key decrypts. Rotation: put a new key on
//! top, keep the previous ones below for a ticket lifetime, then drop them;
//! reload both nodes (the file is read on every reload).
//!
//! Ticket layout: key id (4 bytes: the start of SHA-256 of the key) ‖ nonce
//! (12 random bytes) ‖ ciphertext ‖ tag (16 bytes). The key id picks the key
//! without trial decryption.

use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Hint to clients of how long a ticket stays useful (12 h, HAProxy's
/// default `tls-ticket-keys` rotation period); rotation enforces it.
const LIFETIME_SECS: u32 = 12 * 3600;
const ID_LEN: usize = 4;

struct Key {
    id: [u8; ID_LEN],
    aead: LessSafeKey,
}

/// Tickets sealed with keys from a shared file.
pub struct SharedTicketer {
    keys: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("SharedTicketer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Parse a ticket key file's text; the error names the line, never its content.
pub fn parse_keys(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bytes = line.as_bytes();
        if bytes.len() != 64 {
            return Err(format!(
                "line {}: a key is 64 hex digits (32 bytes), this line has {} characters",
                n + 1,
                bytes.len()
            ));
        }
        let mut key = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok();
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            match (v, key.get_mut(i)) {
                (Some(v), Some(slot)) => *slot = v,
                _ => return Err(format!("line {}: not hexadecimal", n + 1)),
            }
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no key in the file".into());
    }
    Ok(keys)
}

impl SharedTicketer {
    /// Read `path` (see the module doc for the format).
    pub fn from_file(path: &Path) -> Result<SharedTicketer, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read ticket key file {}: {e}", path.display()))?;
        let keys = parse_keys(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_keys(&keys)
    }

    /// A ticketer over `keys` (the first one encrypts).
    pub fn from_keys(keys: &[[u8; 32]]) -> Result<SharedTicketer, String> {
        let mut out = Vec::new();
        for k in keys {
            let digest = ring::digest::digest(&ring::digest::SHA256, k);
            let mut id = [0u8; ID_LEN];
            id.copy_from_slice(digest.as_ref().get(..ID_LEN).unwrap_or(&[0; ID_LEN]));
            let unbound = UnboundKey::new(&CHACHA20_POLY1305, k).map_err(|_| "bad key length")?;
            out.push(Key {
                id,
                aead: LessSafeKey::new(unbound),
            });
        }
        Ok(SharedTicketer {
            keys: out,
            rng: SystemRandom::new(),
        })
    }
}

impl rustls::server::ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut body = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.id),
                &mut body,
            )
            .ok()?;
        let mut out = Vec::with_capacity(ID_LEN + NONCE_LEN + body.len());
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        // Attacker-controlled input: every slice is checked, nothing panics.
        let id = cipher.get(..ID_LEN)?;
        let nonce = cipher.get(ID_LEN..ID_LEN + NONCE_LEN)?;
        let sealed = cipher.get(ID_LEN + NONCE_LEN..)?;
        let key = self.keys.iter().find(|k| k.id == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(key.id), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    #[test]
    fn another_instance_with_the_same_keys_opens_tickets() {
        let a = SharedTicketer::from_keys(&[[7; 32]]).unwrap();
        let b = SharedTicketer::from_keys(&[[9; 32], [7; 32]]).unwrap();
        let t = a.encrypt(b"session state").unwrap();
        assert_eq!(b.decrypt(&t).as_deref(), Some(&b"session state"[..]));
        let c = SharedTicketer::from_keys(&[[9; 32]]).unwrap();
        assert_eq!(c.decrypt(&t), None, "a dropped key opens nothing");
        let mut bad = t.clone();
        if let Some(x) = bad.last_mut() {
            *x ^= 1;
        }
        assert_eq!(a.decrypt(&bad), None);
        for n in 0..40 {
            assert_eq!(a.decrypt(&t[..n.min(t.len())]), None);
        }
    }

    #[test]
    fn key_file_format() {
        let k = "00".repeat(32);
        assert_eq!(parse_keys(&format!("# c\n\n{k}\n{k}\n")).unwrap().len(), 2);
        assert!(parse_keys("").is_err());
        assert!(parse_keys("abcd").unwrap_err().contains("line 1"));
        assert!(parse_keys(&"zz".repeat(32)).unwrap_err().contains("hex"));
    }
}
