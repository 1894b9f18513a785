//! The host side of the `azure` capability: Azure Resource Manager and Microsoft Graph calls made
//! with Sallyport's own Entra ID credentials (from `azure_identity`), which plugins never see. The
//! plugin host checks every scope against the plugin's manifest before calling here.
//!
//! - PIM: `roleAssignmentScheduleRequests` (api-version 2020-10-01), `AdminAssign` with an
//!   `AfterDuration` expiration so Azure ends the access itself, `AdminRemove` to end it early.
//! - Plain `roleAssignments` (api-version 2022-04-01) for tenants without PIM: no native expiry.
//! - Retries: 429 and 5xx honour `Retry-After` (never past the plugin call's deadline); an expired
//!   or rejected token is renewed once with a fresh credential; `PrincipalNotFound` (replication
//!   delay) is retried with backoff; `RoleAssignmentExists` is a success that changes nothing.
//! - Idempotency: the names of what Sallyport creates are derived from the request being served,
//!   so a retried grant finds its first attempt's result instead of creating a second one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{AsyncRawResponse, Body, ClientOptions, HttpClient, Request, Transport};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::aws::CallContext;
use crate::config::{AzureConfig, AzureCredential};
use crate::secret::SecretStore;

/// PIM's API version.
pub const PIM_API: &str = "2020-10-01";
/// Role assignments' and role definitions' API version.
pub const RBAC_API: &str = "2022-04-01";
/// How long a role definition lookup is remembered.
const ROLE_CACHE_TTL: Duration = Duration::from_secs(600);
/// The longest single wait between attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Attempts while Azure says the principal does not exist yet (replication delay).
const PRINCIPAL_ATTEMPTS: u32 = 6;
/// Longest time one HTTP exchange may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest justification PIM keeps.
const MAX_JUSTIFICATION: usize = 500;

/// Why an Azure call failed, in the capability's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AzureError {
    /// Outside the grant.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// The principal, role or assignment does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Azure refused Sallyport's credentials, or they could not be obtained.
    #[error("Azure refused: {0}")]
    AccessDenied(String),
    /// Bad input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Still throttled after retries.
    #[error("Azure is throttling: {0}")]
    Throttled(String),
    /// Anything else.
    #[error("Azure call failed: {0}")]
    Failed(String),
}

/// How to find a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalRef {
    /// An object id, used as is.
    ObjectId(String),
    /// A user principal name, looked up in Microsoft Graph.
    UserPrincipalName(String),
}

/// Input to [`AzureCloud::pim_assign`].
#[derive(Debug, Clone)]
pub struct PimAssign {
    /// Scope.
    pub scope: String,
    /// Principal object id.
    pub principal_id: String,
    /// Full role definition id.
    pub role_definition_id: String,
    /// Start (ms).
    pub start_ms: i64,
    /// Duration.
    pub duration_secs: u64,
    /// Justification.
    pub justification: String,
    /// Ticket.
    pub ticket: Option<String>,
}

/// Input to [`AzureCloud::pim_remove`].
#[derive(Debug, Clone)]
pub struct PimRemove {
    /// Scope.
    pub scope: String,
    /// Principal object id.
    pub principal_id: String,
    /// Full role definition id.
    pub role_definition_id: String,
    /// Justification.
    pub justification: String,
}

/// Input to [`AzureCloud::create_role_assignment`].
#[derive(Debug, Clone)]
pub struct RoleAssignment {
    /// Scope.
    pub scope: String,
    /// Principal object id.
    pub principal_id: String,
    /// `User`, `Group`, `ServicePrincipal`...
    pub principal_type: Option<String>,
    /// Full role definition id.
    pub role_definition_id: String,
    /// Description.
    pub description: Option<String>,
}

/// What an assign call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Resource id of what was created (empty when preexisting).
    pub id: String,
    /// Azure's status.
    pub status: String,
    /// The principal already held the role through an assignment Sallyport did not make.
    pub preexisting: bool,
}

impl Assigned {
    /// The principal already held the role through an assignment Sallyport did not make.
    fn preexisting() -> Assigned {
        Assigned {
            id: String::new(),
            status: "Exists".into(),
            preexisting: true,
        }
    }
}

#[path = "../../plugins/azure-rbac/src/ids.rs"]
mod ids;
pub use ids::{is_guid, is_role_definition_id, is_scope, pim_active, split_id};

/// A GUID derived from `parts`: the same request always names the same Azure object.
pub fn derived_guid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// `PT1H2M5S`.
pub fn iso_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if s > 0 || out == "PT" {
        out.push_str(&format!("{s}S"));
    }
    out
}

fn rfc3339(ms: i64) -> Result<String, AzureError> {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .map_err(|_| AzureError::InvalidInput(format!("{ms} is not a time")))
}

fn cut(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > max {
        let mut at = max;
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        out.truncate(at);
    }
    out
}

/// The wait `Retry-After` (seconds or an HTTP date) or `x-ms-retry-after-ms` asks for.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    for n in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = get(n).and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = get("retry-after")?;
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let ms = (at.as_millisecond() - now.as_millisecond()).max(0);
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// Which API a call goes to (they need tokens for different audiences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Api {
    Arm,
    Graph,
}

/// The `azure_core` transport over Sallyport's own HTTP client, so the token endpoint is reached
/// with the same trusted roots (`ca_file`) and timeouts as ARM.
#[derive(Debug)]
struct ReqwestTransport(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for ReqwestTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        use azure_core::error::{Error, ErrorKind};
        use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
        let method = match request.method() {
            azure_core::http::Method::Delete => reqwest::Method::DELETE,
            azure_core::http::Method::Get => reqwest::Method::GET,
            azure_core::http::Method::Head => reqwest::Method::HEAD,
            azure_core::http::Method::Patch => reqwest::Method::PATCH,
            azure_core::http::Method::Post => reqwest::Method::POST,
            azure_core::http::Method::Put => reqwest::Method::PUT,
            other => {
                return Err(Error::with_message(
                    ErrorKind::Other,
                    format!("HTTP method {other:?} is not supported"),
                ));
            }
        };
        let mut req = self.0.request(method, request.url().clone());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = match request.body() {
            Body::Bytes(b) => req.body(b.clone()),
            Body::SeekableStream(_) => {
                return Err(Error::with_message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported",
                ));
            }
        };
        let rsp = req.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            Error::with_error(kind, e, "the request to the token endpoint failed")
        })?;
        let status = rsp.status().as_u16();
        let headers: HashMap<HeaderName, HeaderValue> = rsp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str().ok().map(|v| {
                    (
                        HeaderName::from(k.as_str().to_owned()),
                        HeaderValue::from(v.to_owned()),
                    )
                })
            })
            .collect();
        let body = rsp
            .bytes()
            .await
            .map_err(|e| Error::with_error(ErrorKind::Io, e, "reading the token response"))?;
        Ok(AsyncRawResponse::new(
            status.into(),
            Headers::from(headers),
            Box::pin(futures::stream::once(async move { Ok(body) })),
        ))
    }
}

type MakeCredential = Box<dyn Fn() -> Result<Arc<dyn TokenCredential>, String> + Send + Sync>;

/// Sallyport's Azure clients.
pub struct AzureCloud {
    http: reqwest::Client,
    arm: String,
    graph: String,
    scopes: HashMap<Api, String>,
    credential: RwLock<Arc<dyn TokenCredential>>,
    make_credential: MakeCredential,
    max_attempts: u32,
    roles: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl std::fmt::Debug for AzureCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureCloud")
            .field("arm", &self.arm)
            .field("graph", &self.graph)
            .finish_non_exhaustive()
    }
}

/// The credential `cfg` names.
fn credential(
    cfg: &AzureConfig,
    secret: Option<&str>,
    transport: &Transport,
) -> Result<Arc<dyn TokenCredential>, String> {
    let mut cloud = azure_core::cloud::CustomConfiguration::default();
    cloud.authority_host = cfg.authority_host.clone();
    let client_options = || ClientOptions {
        transport: Some(transport.clone()),
        cloud: Some(Arc::new(cloud.clone().into())),
        ..Default::default()
    };
    let e = |e: azure_core::Error| format!("azure: {} credential: {e}", cfg.credential.as_str());
    Ok(match cfg.credential {
        AzureCredential::ClientSecret => azure_identity::ClientSecretCredential::new(
            cfg.tenant_id.as_deref().unwrap_or_default(),
            cfg.client_id.clone().unwrap_or_default(),
            Secret::new(secret.unwrap_or_default().to_owned()),
            Some(azure_identity::ClientSecretCredentialOptions {
                client_options: client_options(),
            }),
        )
        .map_err(e)?,
        AzureCredential::WorkloadIdentity => azure_identity::WorkloadIdentityCredential::new(Some(
            azure_identity::WorkloadIdentityCredentialOptions {
                credential_options: azure_identity::ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: cfg.client_id.clone(),
                tenant_id: cfg.tenant_id.clone(),
                token_file_path: cfg.federated_token_file.clone(),
            },
        ))
        .map_err(e)?,
        AzureCredential::ManagedIdentity => azure_identity::ManagedIdentityCredential::new(Some(
            azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: cfg
                    .client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                client_options: ClientOptions {
                    transport: Some(transport.clone()),
                    ..Default::default()
                },
            },
        ))
        .map_err(e)?,
        AzureCredential::AzureCli => azure_identity::AzureCliCredential::new(Some(
            azure_identity::AzureCliCredentialOptions {
                tenant_id: cfg.tenant_id.clone(),
                ..Default::default()
            },
        ))
        .map_err(e)?,
    })
}

/// An ARM or Graph error body: `{"error": {"code", "message"}}`.
fn error_of(body: &Value) -> (String, String) {
    let e = &body["error"];
    let code = e["code"].as_str().unwrap_or_default().to_owned();
    let message = e["message"].as_str().unwrap_or_default().to_owned();
    (code, message)
}

/// One answer from Azure.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn code(&self) -> String {
        error_of(&self.body).0
    }

    /// The error this answer means, for `what`.
    fn error(&self, what: &str) -> AzureError {
        let (code, message) = error_of(&self.body);
        let m = format!(
            "{what}: {}{}",
            if message.is_empty() {
                format!("HTTP {}", self.status)
            } else {
                message
            },
            if code.is_empty() {
                String::new()
            } else {
                format!(" ({code})")
            }
        );
        match self.status {
            401 | 403 => AzureError::AccessDenied(m),
            404 => AzureError::NotFound(m),
            429 => AzureError::Throttled(m),
            400 | 409 | 422 if code == "PrincipalNotFound" => AzureError::NotFound(m),
            400 | 409 | 422 => AzureError::InvalidInput(m),
            _ => AzureError::Failed(m),
        }
    }
}

impl AzureCloud {
    /// Build the clients and the credential.
    pub fn new(cfg: &AzureConfig, secrets: &SecretStore) -> Result<AzureCloud, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sallyport/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("azure.ca_file: cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!(
                    "azure.ca_file: {} is not PEM certificates: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "azure.ca_file: {} holds no certificate",
                    path.display()
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| format!("azure: HTTP client: {e}"))?;
        let secret = match &cfg.client_secret_secret {
            Some(n) => Some(
                secrets
                    .get(n)
                    .cloned()
                    .ok_or_else(|| format!("azure: secret `{n}` is not defined"))?,
            ),
            None => None,
        };
        let transport = Transport::new(Arc::new(ReqwestTransport(http.clone())));
        let first = credential(cfg, secret.as_ref().map(|s| s.expose()), &transport)?;
        let cfg2 = cfg.clone();
        let make_credential: MakeCredential =
            Box::new(move || credential(&cfg2, secret.as_ref().map(|s| s.expose()), &transport));
        let scopes = HashMap::from([
            (Api::Arm, format!("{}/.default", cfg.arm_audience)),
            (Api::Graph, format!("{}/.default", cfg.graph_audience)),
        ]);
        Ok(AzureCloud {
            http,
            arm: cfg.arm_endpoint.clone(),
            graph: cfg.graph_endpoint.clone(),
            scopes,
            credential: RwLock::new(first),
            make_credential,
            max_attempts: cfg.max_attempts,
            roles: Mutex::new(HashMap::new()),
        })
    }

    async fn token(&self, api: Api) -> Result<Secret, AzureError> {
        let cred = self
            .credential
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let scope = self.scopes.get(&api).map_or("", String::as_str);
        cred.get_token(&[scope], None)
            .await
            .map(|t| t.token)
            .map_err(|e| {
                AzureError::AccessDenied(format!(
                    "cannot get an Entra ID token for {scope}: {}",
                    root_cause(&e)
                ))
            })
    }

    /// Drop the credential (and its token cache) for a fresh one.
    fn renew_credential(&self) -> Result<(), AzureError> {
        let fresh = (self.make_credential)().map_err(AzureError::AccessDenied)?;
        *self.credential.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Send one logical call, with retries. Answers the final HTTP status and JSON body.
    async fn send(
        &self,
        api: Api,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&Value>,
        deadline: Instant,
        what: &str,
    ) -> Result<Answer, AzureError> {
        let mut attempt = 0u32;
        let mut renewed = false;
        let mut principal_waits = 0u32;
        loop {
            attempt += 1;
            let token = self.token(api).await?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.secret())
                .header("accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let started = Instant::now();
            let sent = req.send().await;
            let (wait, last) = match sent {
                Err(e) => {
                    let err = AzureError::Failed(format!(
                        "{what}: cannot reach {}: {}",
                        url.origin().ascii_serialization(),
                        root_cause(&e)
                    ));
                    (backoff(attempt), err)
                }
                Ok(rsp) => {
                    let status = rsp.status().as_u16();
                    let asked = retry_after(rsp.headers(), jiff::Timestamp::now());
                    let request_id = rsp
                        .headers()
                        .get("x-ms-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    let bytes = rsp.bytes().await.unwrap_or_default();
                    let body: Value = if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            json!({"error": {"message": String::from_utf8_lossy(&bytes[..bytes.len().min(300)])}})
                        })
                    };
                    let answer = Answer { status, body };
                    tracing::debug!(
                        target: "sallyport::azure",
                        %method,
                        path = url.path(),
                        status,
                        request_id,
                        attempt,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "azure call"
                    );
                    let code = answer.code();
                    if status == 401
                        && !renewed
                        && matches!(
                            code.as_str(),
                            "ExpiredAuthenticationToken"
                                | "InvalidAuthenticationToken"
                                | "InvalidAuthenticationTokenAudience"
                                | "InvalidAuthenticationTokenTenant"
                                | "AuthenticationFailed"
                                | "InvalidAuthenticationToken.Expired"
                                | "InvalidAuthenticationTokenExpired"
                                | ""
                        )
                    {
                        // A token Azure no longer takes (expired, revoked, clock skew): get a
                        // fresh one once.
                        renewed = true;
                        tracing::info!(target: "sallyport::azure", code, "renewing the Entra ID token");
                        self.renew_credential()?;
                        attempt -= 1;
                        continue;
                    }
                    if code == "PrincipalNotFound" && principal_waits + 1 < PRINCIPAL_ATTEMPTS {
                        principal_waits += 1;
                        attempt -= 1;
                        let wait = Duration::from_millis(500u64 << principal_waits.min(5));
                        if Instant::now() + wait > deadline {
                            return Err(answer.error(what));
                        }
                        tracing::info!(target: "sallyport::azure", "principal not found yet (replication delay?); retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if status == 429 || status >= 500 {
                        let err = answer.error(what);
                        (asked.unwrap_or_else(|| backoff(attempt)), err)
                    } else {
                        return Ok(answer);
                    }
                }
            };
            if attempt >= self.max_attempts {
                return Err(last);
            }
            if wait > MAX_WAIT || Instant::now() + wait > deadline {
                return Err(match last {
                    AzureError::Throttled(m) => AzureError::Throttled(format!(
                        "{m}; Azure asked to wait {} s, longer than this call has left",
                        wait.as_secs()
                    )),
                    other => other,
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn arm_url(
        &self,
        path: &str,
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<url::Url, AzureError> {
        let mut u = url::Url::parse(&format!("{}{path}", self.arm))
            .map_err(|e| AzureError::InvalidInput(format!("bad ARM path {path}: {e}")))?;
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            q.append_pair("api-version", api_version);
        }
        Ok(u)
    }

    /// Resolve a principal to its object id.
    pub async fn resolve_principal(
        &self,
        who: &PrincipalRef,
        deadline: Instant,
    ) -> Result<String, AzureError> {
        match who {
            PrincipalRef::ObjectId(id) => {
                if is_guid(id) {
                    Ok(id.to_ascii_lowercase())
                } else {
                    Err(AzureError::InvalidInput(format!(
                        "`{id}` is not an object id (a GUID)"
                    )))
                }
            }
            PrincipalRef::UserPrincipalName(upn) => {
                let ok = upn.len() <= 256
                    && upn
                        .split_once('@')
                        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                    && !upn
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "/\\?%\"<>".contains(c));
                if !ok {
                    return Err(AzureError::InvalidInput(format!(
                        "`{upn}` is not a user principal name (name@domain)"
                    )));
                }
                let mut u = url::Url::parse(&format!("{}/v1.0/users", self.graph))
                    .map_err(|e| AzureError::InvalidInput(format!("graph endpoint: {e}")))?;
                u.path_segments_mut()
                    .map_err(|_| AzureError::InvalidInput("graph endpoint".into()))?
                    .push(upn);
                u.query_pairs_mut().append_pair("$select", "id");
                let what = format!("looking up {upn} in Microsoft Graph");
                let a = self
                    .send(Api::Graph, reqwest::Method::GET, u, None, deadline, &what)
                    .await?;
                if a.status == 404 {
                    return Err(AzureError::NotFound(format!(
                        "no user {upn} in Microsoft Entra ID"
                    )));
                }
                if a.status != 200 {
                    return Err(a.error(&what));
                }
                match a.body["id"].as_str() {
                    Some(id) if is_guid(id) => Ok(id.to_ascii_lowercase()),
                    _ => Err(AzureError::Failed(format!(
                        "{what}: the answer has no object id"
                    ))),
                }
            }
        }
    }

    /// Resolve a role by name, GUID or full id to its full role definition id at `scope`.
    pub async fn resolve_role_definition(
        &self,
        scope: &str,
        role: &str,
        deadline: Instant,
    ) -> Result<String, AzureError> {
        if !is_scope(scope) {
            return Err(AzureError::InvalidInput(format!(
                "`{scope}` is not a scope"
            )));
        }
        let key = (scope.to_ascii_lowercase(), role.to_ascii_lowercase());
        if let Some((id, at)) = self
            .roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < ROLE_CACHE_TTL
        {
            return Ok(id.clone());
        }
        let what = format!("looking up role `{role}` at {scope}");
        let id = if is_role_definition_id(role) || is_guid(role) {
            let guid = split_id(role, "roleDefinitions").map_or(role, |(_, g)| g);
            let u = self.arm_url(
                &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
                RBAC_API,
                &[],
            )?;
            let a = self
                .send(Api::Arm, reqwest::Method::GET, u, None, deadline, &what)
                .await?;
            match a.status {
                200 => a.body["id"].as_str().map(str::to_owned),
                404 => {
                    return Err(AzureError::NotFound(format!(
                        "no role definition {guid} at {scope}"
                    )));
                }
                _ => return Err(a.error(&what)),
            }
        } else {
            if role.is_empty()
                || role.len() > 256
                || role.chars().any(|c| c.is_control() || c == '/')
            {
                return Err(AzureError::InvalidInput(format!(
                    "`{role}` is not a role name or id"
                )));
            }
            let filter = format!("roleName eq '{}'", role.replace('\'', "''"));
            let u = self.arm_url(
                &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions"),
                RBAC_API,
                &[("$filter", &filter)],
            )?;
            let a = self
                .send(Api::Arm, reqwest::Method::GET, u, None, deadline, &what)
                .await?;
            if a.status != 200 {
                return Err(a.error(&what));
            }
            let found: Vec<&str> = a.body["value"]
                .as_array()
                .map(|v| v.iter().filter_map(|r| r["id"].as_str()).collect())
                .unwrap_or_default();
            match found.as_slice() {
                [] => {
                    return Err(AzureError::NotFound(format!(
                        "no role named `{role}` at {scope}"
                    )));
                }
                [one] => Some((*one).to_owned()),
                _ => {
                    return Err(AzureError::InvalidInput(format!(
                        "{} roles are named `{role}` at {scope}; name it by id",
                        found.len()
                    )));
                }
            }
        };
        let id = id.filter(|i| is_role_definition_id(i)).ok_or_else(|| {
            AzureError::Failed(format!("{what}: the answer has no role definition id"))
        })?;
        self.roles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (id.clone(), Instant::now()));
        Ok(id)
    }

    fn check_ids(scope: &str, principal: &str, role: &str) -> Result<(), AzureError> {
        if !is_scope(scope) {
            return Err(AzureError::InvalidInput(format!(
                "`{scope}` is not a scope"
            )));
        }
        if !is_guid(principal) {
            return Err(AzureError::InvalidInput(format!(
                "`{principal}` is not a principal object id (a GUID)"
            )));
        }
        if !is_role_definition_id(role) {
            return Err(AzureError::InvalidInput(format!(
                "`{role}` is not a role definition id (see resolve-role-definition)"
            )));
        }
        Ok(())
    }

    /// GET a resource Sallyport may have created on an earlier attempt.
    async fn existing(
        &self,
        path: &str,
        api: &str,
        deadline: Instant,
        what: &str,
    ) -> Result<Option<Value>, AzureError> {
        let u = self.arm_url(path, api, &[])?;
        let a = self
            .send(Api::Arm, reqwest::Method::GET, u, None, deadline, what)
            .await?;
        match a.status {
            200 => Ok(Some(a.body)),
            404 => Ok(None),
            _ => Err(a.error(what)),
        }
    }

    /// PUT `{"properties": props}` at an ARM resource path.
    async fn put_properties(
        &self,
        path: &str,
        api: &str,
        props: Value,
        deadline: Instant,
        what: &str,
    ) -> Result<Answer, AzureError> {
        let u = self.arm_url(path, api, &[])?;
        let body = json!({ "properties": props });
        self.send(
            Api::Arm,
            reqwest::Method::PUT,
            u,
            Some(&body),
            deadline,
            what,
        )
        .await
    }

    /// `AdminAssign` through PIM with an `AfterDuration` expiration.
    pub async fn pim_assign(
        &self,
        ctx: &CallContext,
        req: &PimAssign,
        deadline: Instant,
    ) -> Result<Assigned, AzureError> {
        Self::check_ids(&req.scope, &req.principal_id, &req.role_definition_id)?;
        Self::check_window(ctx, req.start_ms, req.duration_secs)?;
        let path = own_path(
            SCHEDULE_REQUESTS,
            "pim-assign",
            ctx,
            &req.scope,
            &req.role_definition_id,
            &req.principal_id,
            None,
        );
        let what = format!(
            "assigning {} to {} at {} (PIM)",
            req.role_definition_id, req.principal_id, req.scope
        );
        if let Some(found) = self.existing(&path, PIM_API, deadline, &what).await? {
            return self.settle(&path, schedule(&found), deadline, &what).await;
        }
        let mut props = json!({
            "principalId": req.principal_id,
            "roleDefinitionId": req.role_definition_id,
            "requestType": "AdminAssign",
            "justification": cut(&req.justification, MAX_JUSTIFICATION),
            "scheduleInfo": {
                "startDateTime": rfc3339(req.start_ms)?,
                "expiration": {
                    "type": "AfterDuration",
                    "duration": iso_duration(req.duration_secs),
                },
            },
        });
        if let Some(t) = &req.ticket {
            props["ticketInfo"] = json!({"ticketNumber": cut(t, 100), "ticketSystem": "Sallyport"});
        }
        let a = self
            .put_properties(&path, PIM_API, props, deadline, &what)
            .await?;
        match a.status {
            200 | 201 => self.settle(&path, schedule(&a.body), deadline, &what).await,
            _ if matches!(
                a.code().as_str(),
                "RoleAssignmentExists" | "RoleAssignmentRequestExists"
            ) =>
            {
                // Ours, from an attempt whose answer was lost? Only then is it not preexisting.
                match self.existing(&path, PIM_API, deadline, &what).await? {
                    Some(found) => self.settle(&path, schedule(&found), deadline, &what).await,
                    None => Ok(Assigned::preexisting()),
                }
            }
            _ => Err(a.error(&what)),
        }
    }

    /// A schedule request PIM left waiting for its own approval grants nothing now, and must not
    /// grant later: cancel it, and fail.
    async fn settle(
        &self,
        path: &str,
        a: Assigned,
        deadline: Instant,
        what: &str,
    ) -> Result<Assigned, AzureError> {
        if !pim_pending(&a.status) {
            return Ok(a);
        }
        let u = self.arm_url(&format!("{path}/cancel"), PIM_API, &[])?;
        let c = self
            .send(Api::Arm, reqwest::Method::POST, u, None, deadline, what)
            .await?;
        let cancelled = matches!(c.status, 200 | 204);
        Err(AzureError::InvalidInput(format!(
            "{what}: PIM answered `{}`: a PIM policy on this role requires its own approval (or MFA) for assignments, so the role is not active; {}",
            a.status,
            if cancelled {
                "the schedule request was cancelled".to_owned()
            } else {
                format!("cancelling the schedule request failed ({})", c.error(what))
            }
        )))
    }

    /// Refuse a window that is not the grant's: Azure's own expiry must never outlast it.
    fn check_window(
        ctx: &CallContext,
        start_ms: i64,
        duration_secs: u64,
    ) -> Result<(), AzureError> {
        let Some(grant_end) = ctx.grant_end_ms.filter(|_| !ctx.request_id.is_empty()) else {
            return Err(AzureError::NotAllowed(
                "assignments can only be made while serving a grant".into(),
            ));
        };
        if duration_secs == 0 {
            return Err(AzureError::InvalidInput(
                "a PIM assignment needs a duration".into(),
            ));
        }
        if (start_ms - ctx.now_ms).abs() > 5 * 60_000 {
            return Err(AzureError::InvalidInput(format!(
                "the assignment must start now, not at {}",
                rfc3339(start_ms).unwrap_or_else(|_| start_ms.to_string())
            )));
        }
        let end = i64::try_from(duration_secs)
            .ok()
            .and_then(|d| d.checked_mul(1000))
            .and_then(|d| d.checked_add(start_ms))
            .ok_or_else(|| {
                AzureError::InvalidInput(format!("duration {duration_secs} s is too long"))
            })?;
        // A minute of slack for the time between the host's clock read and this call.
        if end > grant_end + 60_000 {
            return Err(AzureError::NotAllowed(format!(
                "the assignment would end at {}, after the grant's end {}",
                rfc3339(end)?,
                rfc3339(grant_end)?
            )));
        }
        Ok(())
    }

    /// `AdminRemove` through PIM of what this request assigned. Answers Azure's status, or
    /// `NotAssigned` when this request assigned nothing or it has ended already.
    pub async fn pim_remove(
        &self,
        ctx: &CallContext,
        req: &PimRemove,
        deadline: Instant,
    ) -> Result<String, AzureError> {
        Self::check_ids(&req.scope, &req.principal_id, &req.role_definition_id)?;
        let what = format!(
            "removing {} from {} at {} (PIM)",
            req.role_definition_id, req.principal_id, req.scope
        );
        // Only what this request assigned, and only while it can still be active: after its
        // `AfterDuration` Azure has ended it, and whatever holds the role now is not ours.
        let assigned = own_path(
            SCHEDULE_REQUESTS,
            "pim-assign",
            ctx,
            &req.scope,
            &req.role_definition_id,
            &req.principal_id,
            None,
        );
        let Some(ours) = self.existing(&assigned, PIM_API, deadline, &what).await? else {
            return Ok("NotAssigned".into());
        };
        if !pim_active(&schedule(&ours).status)
            || schedule_end(&ours).is_some_and(|e| e <= ctx.now_ms)
        {
            return Ok("NotAssigned".into());
        }
        // A failed remove request is kept by Azure under its name: a retry files a new one.
        for attempt in 0..MAX_REMOVE_REQUESTS {
            let path = own_path(
                SCHEDULE_REQUESTS,
                "pim-remove",
                ctx,
                &req.scope,
                &req.role_definition_id,
                &req.principal_id,
                Some(&attempt.to_string()),
            );
            if let Some(found) = self.existing(&path, PIM_API, deadline, &what).await? {
                let status = schedule(&found).status;
                if pim_failed(&status) {
                    continue;
                }
                return Ok(status);
            }
            let props = json!({
                "principalId": req.principal_id,
                "roleDefinitionId": req.role_definition_id,
                "requestType": "AdminRemove",
                "justification": cut(&req.justification, MAX_JUSTIFICATION),
            });
            let a = self
                .put_properties(&path, PIM_API, props, deadline, &what)
                .await?;
            return match a.status {
                200 | 201 => {
                    let status = schedule(&a.body).status;
                    if pim_failed(&status) {
                        Err(AzureError::Failed(format!(
                            "{what}: PIM answered `{status}`"
                        )))
                    } else {
                        Ok(status)
                    }
                }
                _ if matches!(
                    a.code().as_str(),
                    "RoleAssignmentDoesNotExist" | "RoleAssignmentNotFound"
                ) =>
                {
                    Ok("NotAssigned".into())
                }
                _ => Err(a.error(&what)),
            };
        }
        Err(AzureError::Failed(format!(
            "{what}: {MAX_REMOVE_REQUESTS} remove requests failed; see them in PIM"
        )))
    }

    /// Create a plain role assignment.
    pub async fn create_role_assignment(
        &self,
        ctx: &CallContext,
        req: &RoleAssignment,
        deadline: Instant,
    ) -> Result<Assigned, AzureError> {
        Self::check_ids(&req.scope, &req.principal_id, &req.role_definition_id)?;
        if ctx.grant_end_ms.is_none() || ctx.request_id.is_empty() {
            return Err(AzureError::NotAllowed(
                "assignments can only be made while serving a grant".into(),
            ));
        }
        let principal_type = req.principal_type.as_deref().unwrap_or("User");
        if ![
            "User",
            "Group",
            "ServicePrincipal",
            "ForeignGroup",
            "Device",
        ]
        .contains(&principal_type)
        {
            return Err(AzureError::InvalidInput(format!(
                "principal type `{principal_type}` is not one of User, Group, ServicePrincipal, ForeignGroup, Device"
            )));
        }
        let path = own_path(
            ROLE_ASSIGNMENTS,
            "role-assignment",
            ctx,
            &req.scope,
            &req.role_definition_id,
            &req.principal_id,
            None,
        );
        let what = format!(
            "assigning {} to {} at {}",
            req.role_definition_id, req.principal_id, req.scope
        );
        let ours = |found: &Value| Assigned {
            id: found["id"].as_str().unwrap_or_default().to_owned(),
            status: "Created".into(),
            preexisting: false,
        };
        if let Some(found) = self.existing(&path, RBAC_API, deadline, &what).await? {
            return Ok(ours(&found));
        }
        let mut props = json!({
            "roleDefinitionId": req.role_definition_id,
            "principalId": req.principal_id,
            "principalType": principal_type,
        });
        if let Some(d) = &req.description {
            props["description"] = json!(cut(d, 1024));
        }
        let a = self
            .put_properties(&path, RBAC_API, props, deadline, &what)
            .await?;
        match a.status {
            200 | 201 => match a.body["id"].as_str() {
                Some(_) => Ok(ours(&a.body)),
                None => Err(AzureError::Failed(format!("{what}: the answer has no id"))),
            },
            _ if a.code() == "RoleAssignmentExists" => {
                // Ours, from an attempt whose answer was lost? Only then is it not preexisting.
                match self.existing(&path, RBAC_API, deadline, &what).await? {
                    Some(found) => Ok(ours(&found)),
                    None => Ok(Assigned::preexisting()),
                }
            }
            _ => Err(a.error(&what)),
        }
    }

    /// Delete the role assignment this request created, if any. Answers whether one was deleted.
    pub async fn delete_role_assignment(
        &self,
        ctx: &CallContext,
        scope: &str,
        principal_id: &str,
        role_definition_id: &str,
        deadline: Instant,
    ) -> Result<bool, AzureError> {
        Self::check_ids(scope, principal_id, role_definition_id)?;
        let id = own_path(
            ROLE_ASSIGNMENTS,
            "role-assignment",
            ctx,
            scope,
            role_definition_id,
            principal_id,
            None,
        );
        let what = format!("deleting role assignment {id}");
        let u = self.arm_url(&id, RBAC_API, &[])?;
        let a = self
            .send(Api::Arm, reqwest::Method::DELETE, u, None, deadline, &what)
            .await?;
        match a.status {
            200 | 202 => Ok(true),
            204 | 404 => Ok(false),
            _ => Err(a.error(&what)),
        }
    }
}

const SCHEDULE_REQUESTS: &str = "roleAssignmentScheduleRequests";
const ROLE_ASSIGNMENTS: &str = "roleAssignments";

/// The resource id of what the request being served creates (`kind` is
/// `roleAssignmentScheduleRequests` or `roleAssignments`): its name is a GUID derived from
/// `tag`, the request, the scope, the role, the principal and `extra`, so every attempt of the
/// same request names the same object.
fn own_path(
    kind: &str,
    tag: &str,
    ctx: &CallContext,
    scope: &str,
    role: &str,
    principal: &str,
    extra: Option<&str>,
) -> String {
    let (scope_l, role_l, principal_l) = (
        scope.to_ascii_lowercase(),
        role.to_ascii_lowercase(),
        principal.to_ascii_lowercase(),
    );
    let mut parts = vec![tag, &ctx.request_id, &scope_l, &role_l, &principal_l];
    parts.extend(extra);
    let name = derived_guid(&parts);
    format!("{scope}/providers/Microsoft.Authorization/{kind}/{name}")
}

/// Most remove requests filed for one revoke (each after the previous one failed).
const MAX_REMOVE_REQUESTS: u32 = 10;

/// PIM statuses that wait for a decision PIM itself must make (approval, evaluation).
fn pim_pending(status: &str) -> bool {
    matches!(
        status,
        "PendingApproval"
            | "PendingApprovalProvisioning"
            | "PendingAdminDecision"
            | "PendingEvaluation"
    )
}

/// PIM statuses of a request that did nothing.
fn pim_failed(status: &str) -> bool {
    matches!(
        status,
        "Failed"
            | "Denied"
            | "Invalid"
            | "Canceled"
            | "AdminDenied"
            | "TimedOut"
            | "FailedAsResourceIsLocked"
    )
}

/// When a stored `AdminAssign` request's assignment ends (ms), from its schedule.
fn schedule_end(body: &Value) -> Option<i64> {
    let si = &body["properties"]["scheduleInfo"];
    let start: jiff::Timestamp = si["startDateTime"].as_str()?.parse().ok()?;
    let secs = parse_iso_duration(si["expiration"]["duration"].as_str()?)?;
    start
        .as_millisecond()
        .checked_add(i64::try_from(secs).ok()?.checked_mul(1000)?)
}

/// Seconds in the ISO 8601 durations Sallyport writes (`PT1H2M5S`; days as `P1D`).
fn parse_iso_duration(d: &str) -> Option<u64> {
    let span: jiff::Span = d.parse().ok()?;
    let secs = span
        .total((
            jiff::Unit::Second,
            jiff::SpanRelativeTo::days_are_24_hours(),
        ))
        .ok()?;
    (secs >= 0.0).then_some(secs as u64)
}

/// The result of a schedule request body.
fn schedule(body: &Value) -> Assigned {
    Assigned {
        id: body["id"].as_str().unwrap_or_default().to_owned(),
        status: body["properties"]["status"]
            .as_str()
            .unwrap_or("Unknown")
            .to_owned(),
        preexisting: false,
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(6))
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    let mut msg = e.to_string();
    while let Some(next) = cur.source() {
        let s = next.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = next;
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_ids() {
        let sub = "/subscriptions/00000000-0000-0000-0000-000000000001";
        assert!(is_scope(sub));
        assert!(is_scope(&format!("{sub}/resourceGroups/rg-prod")));
        assert!(is_scope(&format!(
            "{sub}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct"
        )));
        assert!(is_scope(
            "/providers/Microsoft.Management/managementGroups/root"
        ));
        for bad in [
            "",
            "/",
            "subscriptions/00000000-0000-0000-0000-000000000001",
            "/subscriptions/not-a-guid",
            &format!("{sub}/"),
            &format!("{sub}/resourceGroups"),
            &format!("{sub}/resourceGroups/../x"),
            &format!("{sub}/resourceGroups/a b"),
            &format!("{sub}?x=1"),
        ] {
            assert!(!is_scope(bad), "{bad}");
        }
        let role = format!(
            "{sub}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
        );
        assert!(is_role_definition_id(&role));
        assert!(is_role_definition_id(
            "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
        ));
        assert!(!is_role_definition_id("Reader"));
        assert_eq!(
            split_id(&role, "roleDefinitions"),
            Some((sub, "acdd72a7-3385-48ef-bd42-f606fba81ae7"))
        );
    }

    #[test]
    fn durations_guids_and_retry_after() {
        assert_eq!(iso_duration(3600), "PT1H");
        assert_eq!(iso_duration(3725), "PT1H2M5S");
        assert_eq!(iso_duration(300), "PT5M");
        assert_eq!(iso_duration(0), "PT0S");
        for secs in [1, 59, 300, 3599, 3725, 86_400 + 7] {
            assert_eq!(parse_iso_duration(&iso_duration(secs)), Some(secs));
        }
        assert_eq!(parse_iso_duration("P1D"), Some(86_400));
        assert_eq!(parse_iso_duration("soon"), None);
        let a = derived_guid(&["x", "req-1"]);
        assert!(is_guid(&a));
        assert_eq!(a, derived_guid(&["x", "req-1"]));
        assert_ne!(a, derived_guid(&["x", "req-2"]));
        assert_ne!(derived_guid(&["ab", "c"]), derived_guid(&["a", "bc"]));
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("ts");
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().expect("v"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Thu, 01 Jan 2026 00:00:03 GMT".parse().expect("v"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert("x-ms-retry-after-ms", "250".parse().expect("v"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new(), now), None);
    }
}
