//! Signed attestations of approved actions.
//!
//! An approved action request yields a JWT signed with Ed25519 (`alg: EdDSA`, RFC 8037) that a
//! service verifies offline with the keys published at `/.well-known/jwks.json`. Signing uses
//! `ring` directly; the token is built by hand here so that the test suite's verifier (the
//! `jsonwebtoken` crate) is independent of it. Ed25519 signatures are deterministic: the same
//! approval always yields the same token from the same key, so tokens are never stored; they
//! are signed again when their requester fetches them.
//!
//! Keys are PKCS#8 PEM files named by `[attestation] signing_keys`; the first signs. A key's
//! id (`kid`) is its RFC 7638 JWK thumbprint. Every key that signs is recorded in the store with
//! the expiry of the latest token it signed, so after a rotation (a new key first, or the old
//! one removed from the list) the old public key stays published until its tokens have expired.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Problem;
use crate::domain::{Request, Verdict};

/// One Ed25519 signing key.
pub struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
    jwk: Value,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from PKCS#8 DER (v1, as `openssl genpkey -algorithm ed25519` writes, or v2).
    pub fn from_pkcs8(der: &[u8], path: &Path) -> Result<SigningKey, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| format!("not a PKCS#8 Ed25519 private key ({e})"))?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        // RFC 7638: the thumbprint of the required members, in lexical order, no whitespace.
        let thumb = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumb.as_bytes()));
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": kid,
            "alg": "EdDSA",
            "use": "sig",
        });
        Ok(SigningKey {
            kid,
            pair,
            jwk,
            path: path.to_owned(),
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }
}

/// PEM (`-----BEGIN PRIVATE KEY-----`) to DER.
fn pem_to_der(text: &str) -> Result<Vec<u8>, String> {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = text
        .find(begin)
        .ok_or("no `-----BEGIN PRIVATE KEY-----` block (PKCS#8 PEM expected)")?;
    let rest = &text[start + begin.len()..];
    let stop = rest.find(end).ok_or("the PEM block is not closed")?;
    let b64: String = rest[..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|e| format!("the PEM block is not base64 ({e})"))
}

/// A new Ed25519 key as PKCS#8 PEM.
pub fn generate_pem() -> Result<String, String> {
    let rng = ring::rand::SystemRandom::new();
    let der = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| format!("key generation: {e}"))?;
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// Write a new key to `path` (created, never overwritten; 0600 on Unix).
pub fn write_new_key(path: &Path) -> Result<String, String> {
    use std::io::Write as _;
    let pem = generate_pem()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(pem.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let der = pem_to_der(&pem)?;
    Ok(SigningKey::from_pkcs8(&der, path)?.kid)
}

/// The signing keys, the first current.
#[derive(Debug)]
pub struct Attestor {
    keys: Vec<SigningKey>,
}

impl Attestor {
    /// Load every key; a problem names the file.
    pub fn load(paths: &[PathBuf]) -> Result<Attestor, Problem> {
        let mut keys = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let problem = |m: String| Problem {
                path: format!("attestation.signing_keys[{i}]"),
                message: format!("{}: {m}", path.display()),
            };
            let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
            let der = pem_to_der(&text).map_err(problem)?;
            keys.push(SigningKey::from_pkcs8(&der, path).map_err(problem)?);
        }
        if keys.is_empty() {
            return Err(Problem {
                path: "attestation.signing_keys".into(),
                message: "no keys listed".into(),
            });
        }
        Ok(Attestor { keys })
    }

    /// The key that signs.
    pub fn current(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// Every configured key (all are published).
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// Sign `claims` with the current key: a compact JWS.
    pub fn sign(&self, claims: &Value) -> String {
        let key = self.current();
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": key.kid });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = key.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Check a token this server signed, with any configured key or a retired one (`extra`,
    /// from the store). Returns its claims. Expiry is not checked here: the request's own
    /// state says whether the approval is still usable.
    pub fn verify(&self, token: &str, extra: &[(String, Value)]) -> Result<Value, String> {
        let bad = || "not an attestation signed by this server".to_owned();
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(bad)?;
        if header["alg"] != "EdDSA" {
            return Err(bad());
        }
        let kid = header["kid"].as_str().ok_or_else(bad)?;
        let public: Vec<u8> = match self.keys.iter().find(|k| k.kid == kid) {
            Some(k) => k.pair.public_key().as_ref().to_vec(),
            None => extra
                .iter()
                .find(|(k, _)| k == kid)
                .and_then(|(_, jwk)| jwk["x"].as_str())
                .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
                .ok_or_else(bad)?,
        };
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| bad())?;
        URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(bad)
    }
}

/// The claims of an approved action's attestation, or `None` if the request is no approved
/// action. `issuer` is the server's public URL.
pub fn claims(r: &Request, issuer: &str) -> Option<Value> {
    let a = r.action.as_ref()?;
    let (approved, until) = (a.approved_at?, a.valid_until?);
    let approvers: Vec<&str> = r
        .reviews
        .iter()
        .filter(|rv| rv.verdict == Verdict::Approve)
        .map(|rv| rv.reviewer.id.as_str())
        .collect();
    let requester = match &a.workload {
        Some(w) => json!({
            "id": r.requester.id,
            "kind": "pipeline",
            "issuer": w.issuer,
            "subject": w.subject,
        }),
        None => json!({ "id": r.requester.id, "kind": "person" }),
    };
    Some(json!({
        "iss": issuer.trim_end_matches('/'),
        "sub": r.requester.id,
        "aud": r.entitlement,
        "jti": r.id,
        "iat": approved / 1000,
        "nbf": approved / 1000,
        "exp": until / 1000,
        "action": r.entitlement,
        "params_digest": a.digest,
        "parameters": a.parameters,
        "requester": requester,
        "approvers": approvers,
        "approval": r.approval_reason,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attestor(dir: &Path, name: &str) -> Attestor {
        let p = dir.join(name);
        write_new_key(&p).expect("key");
        Attestor::load(&[p]).expect("load")
    }

    #[test]
    fn signs_and_verifies_and_refuses_tampering() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = attestor(dir.path(), "a.pem");
        let claims = json!({ "jti": "x", "exp": 2_000_000_000 });
        let t = a.sign(&claims);
        assert_eq!(t, a.sign(&claims), "Ed25519 is deterministic");
        assert_eq!(a.verify(&t, &[]).expect("valid"), claims);
        // Another payload under the same signature.
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(json!({ "jti": "y", "exp": 2_000_000_000 }).to_string());
        assert!(a.verify(&parts.join("."), &[]).is_err());
        // Another server's key.
        let b = attestor(dir.path(), "b.pem");
        assert!(a.verify(&b.sign(&claims), &[]).is_err());
        assert!(
            a.verify(
                &b.sign(&claims),
                &[(b.current().kid.clone(), b.current().jwk.clone())]
            )
            .is_ok(),
            "a retired key from the store still verifies"
        );
        assert!(a.verify("a.b", &[]).is_err());
        // Keys are never overwritten.
        assert!(write_new_key(&dir.path().join("a.pem")).is_err());
    }
}
