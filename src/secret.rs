//! Secret values: redacted in `Debug` and `Display`, read from the environment or a file.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A secret string. Its `Debug`/`Display` never show the value; use [`Secret::expose`] at the one
/// place it is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Arc::from(value.into()))
    }

    /// The value itself. Call only where it is handed to its consumer; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A random URL-safe secret: 32 bytes (256 bits), base64url without padding. Tokens, login
/// codes, CSRF seeds and PKCE verifiers all come from here.
pub fn random_b64() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
}

/// Equal, in time that does not depend on where they differ: for comparing secrets.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        sha2::Sha256::digest(verifier.as_bytes()),
    )
}

/// Named secrets available to plugins (only those their manifest lists).
#[derive(Clone, Default, Debug)]
pub struct SecretStore {
    values: BTreeMap<String, Secret>,
}

impl SecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a secret.
    pub fn insert(&mut self, name: impl Into<String>, value: Secret) {
        self.values.insert(name.into(), value);
    }

    /// Look one up.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.values.get(name)
    }

    /// Names only, for diagnostics.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
        let mut store = SecretStore::new();
        store.insert("t", s);
        assert!(!format!("{store:?}").contains("hunter2"));
    }
}
