//! Secrets at rest: the write-only fields of export storages (cloud keys, passwords)
//! are stored sealed with an AEAD (XChaCha20-Poly1305), never in plain text.
//!
//! The key comes from `LABELPORT_SECRET_KEY` (32 bytes, base64 or hex) or, when that
//! is unset, from `<data dir>/secret.key`, which the server creates with mode 0600 on
//! first start. A copy of the database alone therefore reveals no secret.
//!
//! A sealed value is `v1:<base64(nonce || ciphertext)>`. The database also holds a
//! sealed check value ([`KEY_CHECK`]): a server started with another key refuses to
//! start with a clear message instead of handing garbage credentials to targets.

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;

/// Name of the check value in `server_secrets`.
pub const KEY_CHECK: &str = "secret_key_check";
/// The plain text of the check value.
const CHECK_PLAINTEXT: &[u8] = b"labelport secret key check";
/// Associated data bound to every sealed value.
const AAD: &[u8] = b"labelport-secrets-v1";
/// Environment variable holding the key.
pub const KEY_ENV: &str = "LABELPORT_SECRET_KEY";
/// File name of the generated key in the data directory.
pub const KEY_FILE: &str = "secret.key";

/// Seals and opens secrets with one key. `Debug` never shows the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(<key redacted>)")
    }
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("a stored secret could not be decrypted: wrong {KEY_ENV} / {KEY_FILE}, or corrupted data")]
pub struct OpenError;

impl SecretBox {
    /// A box for a 32-byte key.
    pub fn new(key: &[u8; 32]) -> SecretBox {
        SecretBox { cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// A fresh random key, base64-encoded (the form `LABELPORT_SECRET_KEY` takes).
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        B64.encode(key)
    }

    /// Parses a key given as base64 or hex of exactly 32 bytes.
    pub fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            B64.decode(text).ok()
        };
        match bytes {
            Some(b) if b.len() == 32 => Ok(b.try_into().expect("length checked")),
            _ => bail!("the secret key must be 32 bytes, base64- or hex-encoded (e.g. `openssl rand -base64 32`)"),
        }
    }

    /// The key of this installation: `key` (from `LABELPORT_SECRET_KEY`), else the key
    /// file in `data_dir` (created with mode 0600 if missing).
    pub fn load(key: Option<&str>, data_dir: &Path) -> anyhow::Result<SecretBox> {
        if let Some(text) = key {
            let key = SecretBox::parse_key(text).with_context(|| format!("{KEY_ENV} is invalid"))?;
            return Ok(SecretBox::new(&key));
        }
        let path = data_dir.join(KEY_FILE);
        if !path.exists() {
            write_key_file(&path, &SecretBox::generate_key())?;
            tracing::info!(path = %path.display(), "created a new secret key for stored credentials");
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("Failed to read {}", path.display()))?;
        let key = SecretBox::parse_key(&text).with_context(|| format!("{} is invalid", path.display()))?;
        Ok(SecretBox::new(&key))
    }

    /// Seals `plain`.
    pub fn seal(&self, plain: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: AAD })
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory data");
        let mut out = Vec::with_capacity(24 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("v1:{}", B64.encode(out))
    }

    /// Opens a value made by [`SecretBox::seal`] with the same key.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let raw = sealed.strip_prefix("v1:").and_then(|b| B64.decode(b).ok()).ok_or(OpenError)?;
        if raw.len() < 24 {
            return Err(OpenError);
        }
        let (nonce, ct) = raw.split_at(24);
        self.cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: AAD }).map_err(|_| OpenError)
    }

    /// Seals a map of secret fields; an empty map is stored as nothing.
    pub fn seal_map(&self, map: &Map<String, Value>) -> Option<String> {
        (!map.is_empty()).then(|| self.seal(Value::Object(map.clone()).to_string().as_bytes()))
    }

    /// Opens a sealed map of secret fields (`None` gives an empty map).
    pub fn open_map(&self, sealed: Option<&str>) -> Result<Map<String, Value>, OpenError> {
        let Some(sealed) = sealed else { return Ok(Map::new()) };
        let plain = self.open(sealed)?;
        match serde_json::from_slice(&plain) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(OpenError),
        }
    }

    /// The sealed check value stored beside the secrets.
    pub fn check_value(&self) -> String {
        self.seal(CHECK_PLAINTEXT)
    }

    /// Whether `stored` is a check value sealed with this key.
    pub fn matches(&self, stored: &str) -> bool {
        self.open(stored).is_ok_and(|p| p == CHECK_PLAINTEXT)
    }
}

/// Writes a key file atomically with mode 0600.
pub fn write_key_file(path: &Path, key: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{KEY_FILE}.{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).with_context(|| format!("Failed to create {}", tmp.display()))?;
    file.write_all(key.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("Failed to write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed() -> SecretBox {
        SecretBox::new(&SecretBox::parse_key(&SecretBox::generate_key()).unwrap())
    }

    #[test]
    fn a_sealed_value_opens_with_the_same_key_only() {
        let (a, b) = (boxed(), boxed());
        let sealed = a.seal(b"AKIA-secret");
        assert!(!sealed.contains("AKIA"));
        assert_eq!(a.open(&sealed).unwrap(), b"AKIA-secret");
        assert!(b.open(&sealed).is_err());
        assert!(a.open("v1:garbage").is_err());
        assert!(a.open("plain").is_err());
    }

    #[test]
    fn sealing_twice_gives_different_text() {
        let a = boxed();
        assert_ne!(a.seal(b"x"), a.seal(b"x"));
    }

    #[test]
    fn keys_parse_from_base64_or_hex_of_32_bytes() {
        assert!(SecretBox::parse_key(&"ab".repeat(32)).is_ok());
        assert!(SecretBox::parse_key(&SecretBox::generate_key()).is_ok());
        assert!(SecretBox::parse_key("short").is_err());
        assert!(SecretBox::parse_key(&"ab".repeat(16)).is_err());
    }

    #[test]
    fn the_check_value_tells_keys_apart() {
        let (a, b) = (boxed(), boxed());
        let check = a.check_value();
        assert!(a.matches(&check));
        assert!(!b.matches(&check));
    }

    #[test]
    fn maps_round_trip_and_empty_maps_store_nothing() {
        let a = boxed();
        let mut map = Map::new();
        map.insert("aws_secret_access_key".into(), Value::String("s3cr3t".into()));
        let sealed = a.seal_map(&map).unwrap();
        assert_eq!(a.open_map(Some(&sealed)).unwrap(), map);
        assert_eq!(a.seal_map(&Map::new()), None);
        assert!(a.open_map(None).unwrap().is_empty());
    }
}
