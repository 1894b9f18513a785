//! OpenID Connect sign-in: authorization code flow with PKCE (S256) and a nonce, the `state`
//! bound to the browser by the pre-sign-in cookie and kept server-side (hashed, single use,
//! ten minutes). The ID token is verified by `openidconnect` (signature, issuer, audience,
//! expiry, nonce) before any claim is read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope,
};
use serde_json::{Value, json};

use crate::config::OidcConfig;
use crate::domain::Principal;
use crate::secret::SecretStore;

/// How long discovered provider metadata (and its keys) is reused.
const METADATA_TTL: Duration = Duration::from_secs(600);
/// How long a sign-in may take at the provider.
pub const FLOW_TTL_MS: i64 = 10 * 60 * 1000;

/// Discovered providers, by issuer.
#[derive(Debug, Default)]
pub struct OidcClients {
    cache: Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>,
}

/// What a sign-in keeps between the redirect and the callback.
#[derive(Debug)]
pub struct Started {
    /// Where to send the browser.
    pub url: url::Url,
    /// The `state` (its hash is the key of what is kept).
    pub state: String,
    /// Kept server-side: nonce, PKCE verifier, where to go after.
    pub data: Value,
}

fn http() -> Result<openidconnect::reqwest::Client, String> {
    openidconnect::reqwest::ClientBuilder::new()
        // Following redirects would open server-side request forgery.
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

impl OidcClients {
    async fn metadata(&self, cfg: &OidcConfig) -> Result<CoreProviderMetadata, String> {
        if let Some((at, m)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cfg.issuer)
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(cfg.issuer.clone()).map_err(|e| format!("issuer: {e}"))?;
        let m = CoreProviderMetadata::discover_async(issuer, &http()?)
            .await
            .map_err(|e| {
                format!(
                    "the sign-in provider at {} could not be reached or described itself wrongly: {}",
                    cfg.issuer,
                    error_chain(&e)
                )
            })?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cfg.issuer.clone(), (Instant::now(), m.clone()));
        Ok(m)
    }

    /// Start a sign-in: the provider URL to redirect to, and what to keep.
    pub async fn start(
        &self,
        cfg: &OidcConfig,
        secrets: &SecretStore,
        redirect: &str,
        next: &str,
    ) -> Result<Started, String> {
        let client = client(self.metadata(cfg).await?, cfg, secrets, redirect)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in cfg.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        Ok(Started {
            url,
            state: state.secret().clone(),
            data: json!({
                "nonce": nonce.secret(),
                "verifier": verifier.secret(),
                "next": next,
            }),
        })
    }

    /// Finish a sign-in: exchange the code, verify the ID token, read the principal.
    pub async fn finish(
        &self,
        cfg: &OidcConfig,
        secrets: &SecretStore,
        redirect: &str,
        code: &str,
        kept: &Value,
    ) -> Result<Principal, String> {
        let nonce = kept["nonce"]
            .as_str()
            .ok_or("sign-in state is incomplete")?;
        let verifier = kept["verifier"]
            .as_str()
            .ok_or("sign-in state is incomplete")?;
        let client = client(self.metadata(cfg).await?, cfg, secrets, redirect)?;
        let http = http()?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| format!("the provider has no token endpoint: {e}"))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&http)
            .await
            .map_err(|e| format!("the provider refused the sign-in code: {}", error_chain(&e)))?;
        let id_token = openidconnect::TokenResponse::id_token(&token)
            .ok_or("the provider returned no ID token")?;
        // Verified here: signature (keys from discovery), issuer, audience, expiry, nonce.
        id_token
            .claims(&client.id_token_verifier(), &Nonce::new(nonce.to_owned()))
            .map_err(|e| format!("the ID token is not valid: {e}"))?;
        // The token is verified; read its claims, including custom ones (groups).
        let claims = payload(&id_token.to_string())?;
        principal(cfg, &claims)
    }
}

/// The client type `from_provider_metadata` builds: auth URL set, token and user-info
/// endpoints as the provider's metadata says.
type Client = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

fn client(
    meta: CoreProviderMetadata,
    cfg: &OidcConfig,
    secrets: &SecretStore,
    redirect: &str,
) -> Result<Client, String> {
    let secret = match &cfg.client_secret_secret {
        Some(name) => Some(ClientSecret::new(
            secrets
                .get(name)
                .ok_or_else(|| format!("secret `{name}` is not available"))?
                .expose()
                .to_owned(),
        )),
        None => None,
    };
    Ok(
        CoreClient::from_provider_metadata(meta, ClientId::new(cfg.client_id.clone()), secret)
            .set_redirect_uri(
                RedirectUrl::new(redirect.to_owned()).map_err(|e| format!("redirect URL: {e}"))?,
            ),
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The JSON payload of a (verified) JWT.
fn payload(jwt: &str) -> Result<Value, String> {
    let part = jwt.split('.').nth(1).ok_or("the ID token is malformed")?;
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, part)
        .map_err(|_| "the ID token is malformed")?;
    serde_json::from_slice(&bytes).map_err(|_| "the ID token is malformed".into())
}

/// The principal from ID token claims.
pub fn principal(cfg: &OidcConfig, claims: &Value) -> Result<Principal, String> {
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let id = text(&cfg.id_claim).ok_or_else(|| {
        format!(
            "the ID token has no `{}` claim to identify you by (oidc.id_claim)",
            cfg.id_claim
        )
    })?;
    if cfg.id_claim == "email" && claims.get("email_verified") == Some(&Value::Bool(false)) {
        return Err("your e-mail address is not verified at the sign-in provider".into());
    }
    if id.len() > 200 || id.chars().any(char::is_control) {
        return Err(format!(
            "the `{}` claim is not a usable user id",
            cfg.id_claim
        ));
    }
    let groups = match claims.get(&cfg.groups_claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|g| !g.is_empty() && g.len() <= 200)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    };
    let email = text("email").filter(|_| claims.get("email_verified") != Some(&Value::Bool(false)));
    Ok(Principal {
        id,
        email,
        name: text("name").or_else(|| text("preferred_username")),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example.com".into(),
            client_id: "c".into(),
            client_secret_secret: None,
            scopes: vec!["openid".into()],
            id_claim: "email".into(),
            groups_claim: "groups".into(),
            display_name: "x".into(),
        }
    }

    #[test]
    fn principal_from_claims() {
        let p = principal(
            &cfg(),
            &json!({"sub": "1", "email": "a@x", "name": "A", "groups": ["eng", 3, ""]}),
        )
        .expect("principal");
        assert_eq!(p.id, "a@x");
        assert_eq!(p.groups, vec!["eng".to_owned()]);
        assert!(principal(&cfg(), &json!({"sub": "1"})).is_err(), "no email");
        assert!(
            principal(&cfg(), &json!({"email": "a@x", "email_verified": false})).is_err(),
            "an unverified e-mail is no identity"
        );
        let p = principal(&cfg(), &json!({"email": "a@x", "groups": "ops"})).expect("p");
        assert_eq!(p.groups, vec!["ops".to_owned()]);
    }
}
