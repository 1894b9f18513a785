//! Pipelines signing in with their OIDC workload identity token (GitHub Actions, GitLab CI,
//! Jenkins with an OIDC plugin, Kubernetes service accounts...).
//!
//! A token is accepted for an action kind only if one of the kind's `[[actions.pipelines]]`
//! names its issuer, its signature verifies against a key of that issuer's JWKS (found through
//! the issuer's OpenID discovery document), its audience is the rule's, it has not expired, and
//! its subject matches the rule's pattern. Symmetric (`HS*`) and `none` algorithms are refused.
//! JWKS are cached for ten minutes and fetched again, at most every 30 s, when a token names a
//! key id the cache does not know (the issuer rotated).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::{ActionKindConfig, PipelineRule};
use crate::domain::{Principal, Workload};

/// How long fetched keys are trusted without asking again.
const JWKS_TTL: Duration = Duration::from_secs(600);
/// Least time between two fetches caused by an unknown key id.
const REFETCH_GAP: Duration = Duration::from_secs(30);
/// Largest discovery document or JWKS read.
const MAX_DOC: usize = 256 * 1024;

/// Why a workload token was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Not a valid token of a trusted issuer (bad signature, expired, wrong audience...).
    #[error("workload token refused: {0}")]
    Invalid(String),
    /// A valid token, but this pipeline may not ask for this action.
    #[error("{0}")]
    NotAllowed(String),
    /// The issuer's keys could not be fetched.
    #[error("cannot check the workload token: {0}")]
    Unavailable(String),
}

struct Cached {
    fetched: Instant,
    keys: JwkSet,
}

/// Verifies workload tokens, caching each issuer's keys.
pub struct WorkloadVerifier {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for WorkloadVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadVerifier").finish_non_exhaustive()
    }
}

impl Default for WorkloadVerifier {
    fn default() -> Self {
        Self::new()
    }
}

/// Does this look like a JWT (three base64url parts)? API tokens (`spt_…`) do not.
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() < 16 * 1024
        && token.split('.').count() == 3
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn unverified_claims(token: &str) -> Result<Value, WorkloadError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| WorkloadError::Invalid("not a JWT".into()))?;
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(Value::is_object)
        .ok_or_else(|| WorkloadError::Invalid("the JWT's payload is not a JSON object".into()))
}

fn audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl WorkloadVerifier {
    /// A verifier with its own HTTP client (10 s timeouts).
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        WorkloadVerifier {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Check `token` for action kind `kind`: who the pipeline is, or why not.
    pub async fn verify(
        &self,
        token: &str,
        kind: &ActionKindConfig,
    ) -> Result<(Principal, Workload), WorkloadError> {
        let name = &kind.rules.id;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| WorkloadError::Invalid(format!("not a JWT ({e})")))?;
        let alg = header.alg;
        if !matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(WorkloadError::Invalid(format!(
                "algorithm {alg:?} is not accepted (asymmetric signatures only)"
            )));
        }
        let unverified = unverified_claims(token)?;
        let iss = unverified["iss"]
            .as_str()
            .ok_or_else(|| WorkloadError::Invalid("the token has no `iss`".into()))?
            .to_owned();
        let rules: Vec<&PipelineRule> = kind.pipelines.iter().filter(|r| r.issuer == iss).collect();
        if rules.is_empty() {
            // Unverified so far: say nothing about which issuers are trusted.
            tracing::info!(action = %name, issuer = %iss, "workload token from an issuer the action kind does not trust");
            return Err(WorkloadError::Invalid(format!(
                "its issuer is not trusted for `{name}`"
            )));
        }
        let key = self.key_for(&iss, header.kid.as_deref(), alg).await?;
        let key = DecodingKey::from_jwk(&key)
            .map_err(|e| WorkloadError::Invalid(format!("the issuer's key is unusable ({e})")))?;
        let mut v = Validation::new(alg);
        v.set_issuer(&[iss.as_str()]);
        let auds: Vec<&str> = rules.iter().map(|r| r.audience.as_str()).collect();
        v.set_audience(&auds);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 30;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            WorkloadError::Invalid(match e.kind() {
                K::ExpiredSignature => "the token has expired".to_owned(),
                K::ImmatureSignature => "the token is not valid yet".to_owned(),
                K::InvalidAudience => format!("the token's audience is not one `{name}` accepts"),
                K::InvalidIssuer => "the token's issuer does not match".to_owned(),
                K::InvalidSignature => {
                    format!("the signature does not verify with the keys of `{iss}`")
                }
                K::MissingRequiredClaim(c) => format!("the token has no `{c}`"),
                _ => format!("{e}"),
            })
        })?;
        let claims = data.claims;
        let sub = claims["sub"].as_str().unwrap_or_default().to_owned();
        let token_auds = audiences(&claims);
        let Some(rule) = rules
            .iter()
            .find(|r| token_auds.contains(&r.audience) && r.admits_subject(&sub))
        else {
            // The allowed patterns go to the log only: any repository can mint a token of a
            // public CI issuer.
            let allowed: Vec<&str> = rules.iter().map(|r| r.subject.as_str()).collect();
            tracing::info!(action = %name, subject = %sub, allowed = ?allowed, "pipeline subject not allowed");
            return Err(WorkloadError::NotAllowed(format!(
                "pipeline `{sub}` may not ask for `{name}`"
            )));
        };
        let workload = Workload {
            issuer: iss,
            subject: sub.clone(),
            audience: rule.audience.clone(),
            token_id: claims["jti"].as_str().map(str::to_owned),
            started_by: claims["actor"].as_str().map(str::to_owned),
        };
        // Namespaced by issuer: two issuers may use the same subject.
        let host = url::Url::parse(&workload.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let principal = Principal {
            id: format!("pipeline:{host}:{sub}"),
            email: None,
            name: Some(sub),
            groups: Vec::new(),
        };
        Ok((principal, workload))
    }

    /// The issuer's key `kid` (or its only key when the token names none).
    async fn key_for(
        &self,
        issuer: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<jsonwebtoken::jwk::Jwk, WorkloadError> {
        // A key with this id (or the only key, when the token names none) whose declared
        // algorithm, if any, is the token's: issuers may publish one kid per key type.
        let pick = |set: &JwkSet| -> Option<jsonwebtoken::jwk::Jwk> {
            let fits = |j: &&jsonwebtoken::jwk::Jwk| {
                j.common
                    .key_algorithm
                    .as_ref()
                    .is_none_or(|a| format!("{a:?}") == format!("{alg:?}"))
            };
            match kid {
                Some(k) => set
                    .keys
                    .iter()
                    .filter(|j| j.common.key_id.as_deref() == Some(k))
                    .find(fits)
                    .cloned(),
                None if set.keys.len() == 1 => set.keys.iter().find(fits).cloned(),
                None => None,
            }
        };
        let no_key = || {
            WorkloadError::Invalid(format!(
                "`{issuer}` publishes no key `{}`",
                kid.unwrap_or("(none named)")
            ))
        };
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(issuer)
                .map(|c| (c.fetched.elapsed(), pick(&c.keys)))
        };
        match cached {
            Some((age, Some(key))) if age < JWKS_TTL => return Ok(key),
            Some((age, None)) if age < REFETCH_GAP => return Err(no_key()),
            _ => {}
        }
        let set = self.fetch_jwks(issuer).await?;
        let key = pick(&set);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
            issuer.to_owned(),
            Cached {
                fetched: Instant::now(),
                keys: set,
            },
        );
        key.ok_or_else(no_key)
    }

    async fn get_json(&self, url: &str) -> Result<Value, WorkloadError> {
        let fail = |m: String| WorkloadError::Unavailable(format!("{url}: {m}"));
        let mut resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOC {
                return Err(fail(format!("larger than {MAX_DOC} bytes")));
            }
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON ({e})")))
    }

    async fn fetch_jwks(&self, issuer: &str) -> Result<JwkSet, WorkloadError> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&discovery).await?;
        if doc["issuer"].as_str() != Some(issuer) {
            return Err(WorkloadError::Unavailable(format!(
                "{discovery} names issuer {} instead of `{issuer}`",
                doc["issuer"]
            )));
        }
        let jwks_uri = doc["jwks_uri"]
            .as_str()
            .ok_or_else(|| WorkloadError::Unavailable(format!("{discovery} has no `jwks_uri`")))?;
        let u = url::Url::parse(jwks_uri)
            .map_err(|e| WorkloadError::Unavailable(format!("jwks_uri `{jwks_uri}`: {e}")))?;
        let issuer_https = issuer.starts_with("https://");
        if issuer_https && u.scheme() != "https" {
            return Err(WorkloadError::Unavailable(format!(
                "jwks_uri `{jwks_uri}` is not https"
            )));
        }
        let set = self.get_json(jwks_uri).await?;
        let set: JwkSet = serde_json::from_value(set)
            .map_err(|e| WorkloadError::Unavailable(format!("{jwks_uri}: not a JWKS ({e})")))?;
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJi.c2ln"));
        assert!(!looks_like_jwt("spt_0123_abc"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c d"));
    }

    #[test]
    fn subject_patterns() {
        let r = |s: &str| PipelineRule {
            issuer: "https://i".into(),
            audience: "a".into(),
            subject: s.into(),
        };
        let main = "repo:acme/app:ref:refs/heads/main";
        assert!(r(main).admits_subject(main));
        assert!(!r(main).admits_subject("repo:acme/app:ref:refs/heads/main2"));
        assert!(r("repo:acme/app:*").admits_subject(main));
        assert!(!r("repo:acme/app:*").admits_subject("repo:acme/application:ref:x"));
        assert!(r("repo:acme/*:ref:refs/heads/main").admits_subject(main));
        assert!(
            !r("repo:acme/*:ref:refs/heads/main")
                .admits_subject("repo:acme/app:ref:refs/heads/dev")
        );
        assert!(!r("repo:acme/app").admits_subject(main));
    }
}
