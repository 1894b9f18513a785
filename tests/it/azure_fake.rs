//! A strict in-process fake of the Microsoft Entra token endpoint, Azure Resource Manager's
//! authorization APIs and the Microsoft Graph users lookup, over https with a test CA.
//!
//! No Azure emulator exists, so this fake follows the documented wire formats and refuses what
//! Azure would refuse:
//! - token endpoint `POST /{tenant}/oauth2/v2.0/token` (client credentials with a client secret or
//!   a federated client assertion); issues HS256 JWTs with `aud`, `exp`, `tid`, `appid`;
//! - every ARM and Graph call checks the bearer token's signature, audience and expiry, and the
//!   exact `api-version` (roleAssignments and roleDefinitions 2022-04-01,
//!   roleAssignmentScheduleRequests 2020-10-01);
//! - request bodies are checked field by field (unknown fields are refused); PIM `AdminAssign`
//!   needs `scheduleInfo.expiration` of type `AfterDuration` with an ISO 8601 duration within the
//!   role's policy maximum, and the fake ends such assignments itself when the duration is over;
//! - `RoleAssignmentExists`, `RoleAssignmentDoesNotExist`, `PrincipalNotFound` and
//!   `RoleDefinitionDoesNotExist` are answered as Azure does.
//!
//! It records every request and injects faults on demand: 429 with `Retry-After`, 500, latency,
//! expiry of every token issued so far, and a principal that replicates late.

#![allow(
    clippy::result_large_err,
    reason = "handlers short-circuit with the HTTP error response itself"
)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

pub const TENANT: &str = "11111111-1111-1111-1111-111111111111";
pub const CLIENT_ID: &str = "22222222-2222-2222-2222-222222222222";
pub const CLIENT_SECRET: &str = "fake-client-secret";
pub const SUBSCRIPTION: &str = "33333333-3333-3333-3333-333333333333";
/// Sallyport's own service principal (the token's `oid`).
pub const SP_OBJECT_ID: &str = "44444444-4444-4444-4444-444444444444";
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
/// The federated credential the fake trusts (workload identity).
pub const FED_ISSUER: &str = "https://issuer.sallyport.test";
pub const FED_SUBJECT: &str = "system:serviceaccount:ops:sallyport";
pub const FED_AUDIENCE: &str = "api://AzureADTokenExchange";
pub const FED_KEY: &[u8] = b"federation-test-key";

const ARM_AUDIENCE: &str = "https://management.azure.com";
const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
const PIM_API: &str = "2020-10-01";
const RBAC_API: &str = "2022-04-01";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Option<Value>,
    /// The token's `jti` (a sequence number), for ARM and Graph calls.
    pub token: Option<u64>,
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

/// An active role assignment.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub name: String,
    pub scope: String,
    pub role_definition_id: String,
    pub principal_id: String,
    pub principal_type: String,
    /// Through PIM: when Azure ends it (ms).
    pub ends_at: Option<i64>,
}

/// A fault to inject into the next ARM/Graph calls.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `Retry-After` seconds.
    Throttle(u64),
    /// 500.
    ServerError,
    /// The next PUT takes effect, but its answer is a 500 (a lost response).
    CommitThenFail,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub requests: Vec<Recorded>,
    pub faults: Vec<Fault>,
    pub latency: Duration,
    pub tokens_issued: u64,
    /// Tokens with a lower `jti` are expired.
    pub valid_from_jti: u64,
    /// Object id -> (UPN, kind).
    pub principals: BTreeMap<String, (String, String)>,
    /// Object id -> how many more lookups answer `PrincipalNotFound`.
    pub replicating: HashMap<String, u32>,
    pub assignments: Vec<Assignment>,
    /// Schedule requests by lower-cased resource id.
    pub schedule_requests: BTreeMap<String, Value>,
    /// The longest PIM assignment the role policy allows.
    pub max_pim_duration: Duration,
    /// Token lifetime in seconds.
    pub token_lifetime: i64,
    /// The roles' PIM policy requires approval for assignments (they stay `PendingApproval`).
    pub require_approval: bool,
}

/// The running fake.
pub struct FakeAzure {
    pub url: String,
    pub ca_file: PathBuf,
    pub dir: PathBuf,
    state: Arc<Mutex<FakeState>>,
    key: Vec<u8>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAzure {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Ctx {
    state: Arc<Mutex<FakeState>>,
    key: Arc<Vec<u8>>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn sign(key: &[u8], claims: &Value) -> String {
    let head = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = B64.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

/// The claims of an HS256 JWT signed with `key`, if the signature holds.
fn verify(key: &[u8], jwt: &str) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (h, b, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
    if header["alg"] != "HS256" {
        return None;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(format!("{h}.{b}").as_bytes());
    mac.verify_slice(&B64.decode(s).ok()?).ok()?;
    serde_json::from_slice(&B64.decode(b).ok()?).ok()
}

/// A federated token as a workload identity platform would write it to a file.
pub fn federated_token(subject: &str, lifetime_secs: i64) -> String {
    let now = now_ms() / 1000;
    sign(
        FED_KEY,
        &json!({"iss": FED_ISSUER, "sub": subject, "aud": FED_AUDIENCE, "iat": now, "exp": now + lifetime_secs}),
    )
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn token_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
        })),
    )
        .into_response()
}

fn is_guid(s: &str) -> bool {
    let p: Vec<&str> = s.split('-').collect();
    p.len() == 5
        && p.iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(x, n)| x.len() == n && x.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Seconds in an ISO 8601 duration such as `PT1H30M`, `P1DT2H`, `PT90S`.
pub fn iso_seconds(d: &str) -> Option<u64> {
    let rest = d.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let mut total = 0u64;
    let mut any = false;
    let mut eat = |s: &str, units: &[(char, u64)]| -> Option<()> {
        let mut num = String::new();
        let mut allowed = units.iter();
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                let (_, mult) = allowed.by_ref().find(|(u, _)| *u == c)?;
                total += num.parse::<u64>().ok()? * mult;
                num.clear();
                any = true;
            }
        }
        num.is_empty().then_some(())
    };
    eat(date, &[('D', 86_400)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        eat(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    any.then_some(total)
}

fn check_fields(obj: &Value, allowed: &[&str], at: &str) -> Result<(), Response> {
    let Some(o) = obj.as_object() else {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            &format!("{at} must be an object"),
        ));
    };
    for k in o.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                &format!("The request content has an unknown property '{at}.{k}'."),
            ));
        }
    }
    Ok(())
}

fn text<'a>(obj: &'a Value, key: &str, at: &str) -> Result<&'a str, Response> {
    obj[key].as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
        arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            &format!("The required property '{at}.{key}' is missing or not a string."),
        )
    })
}

impl FakeAzure {
    /// Start on a random loopback port, with a fresh CA.
    pub async fn start() -> FakeAzure {
        let dir = tempfile::tempdir().expect("dir").keep();
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Sallyport test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("leaf");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        let ca_file = dir.join("azure-test-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("ca file");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let mut principals = BTreeMap::new();
        for (oid, upn) in [
            ("aaaaaaaa-0000-0000-0000-000000000001", "alice@contoso.test"),
            ("bbbbbbbb-0000-0000-0000-000000000002", "bob@contoso.test"),
        ] {
            principals.insert(oid.to_owned(), (upn.to_owned(), "User".to_owned()));
        }
        let state = Arc::new(Mutex::new(FakeState {
            principals,
            max_pim_duration: Duration::from_secs(8 * 3600),
            token_lifetime: 3600,
            ..FakeState::default()
        }));
        let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        let ctx = Ctx {
            state: state.clone(),
            key: Arc::new(key.clone()),
        };
        let app = axum::Router::new().fallback(handle).with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await;
                });
            }
        });
        FakeAzure {
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca_file,
            dir,
            state,
            key,
            task,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().expect("fake state"))
    }

    /// Requests whose path contains `part`, in order.
    pub fn requests(&self, method: &str, part: &str) -> Vec<Recorded> {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.method == method && r.path.contains(part))
                .cloned()
                .collect()
        })
    }

    /// Active assignments of `principal`.
    pub fn active(&self, principal: &str) -> Vec<Assignment> {
        self.with(|s| {
            expire(s);
            s.assignments
                .iter()
                .filter(|a| a.principal_id == principal)
                .cloned()
                .collect()
        })
    }

    /// Tokens issued so far stop working (as if they had all expired).
    pub fn expire_tokens(&self) {
        self.with(|s| s.valid_from_jti = s.tokens_issued + 1);
    }

    /// A token the fake would accept for `audience` (for tests that call it directly).
    pub fn token_for(&self, audience: &str) -> String {
        self.with(|s| {
            s.tokens_issued += 1;
            let now = now_ms() / 1000;
            sign(
                &self.key,
                &json!({"aud": audience, "iss": format!("https://sts.windows.net/{TENANT}/"), "tid": TENANT, "appid": CLIENT_ID, "oid": SP_OBJECT_ID, "iat": now, "nbf": now, "exp": now + 3600, "jti": s.tokens_issued}),
            )
        })
    }

    /// The `[azure]` section pointing Sallyport at this fake.
    pub fn config(&self, credential: &str) -> String {
        let creds = match credential {
            "client_secret" => format!(
                "tenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_secret = \"azure_secret\"\n"
            ),
            "workload_identity" => format!(
                "tenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\nfederated_token_file = \"{}\"\n",
                self.dir.join("federated-token").display()
            ),
            other => panic!("no fake for credential {other}"),
        };
        std::fs::write(self.dir.join("azure-secret"), CLIENT_SECRET).expect("secret file");
        format!(
            r#"
[azure]
credential = "{credential}"
{creds}authority_host = "{url}"
arm_endpoint = "{url}"
graph_endpoint = "{url}"
ca_file = "{ca}"
max_attempts = 4
[secrets.azure_secret]
file = "{secret}"
"#,
            url = self.url,
            ca = self.ca_file.display(),
            secret = self.dir.join("azure-secret").display(),
        )
    }
}

/// Drop PIM assignments whose duration is over: Azure ends them itself.
fn expire(s: &mut FakeState) {
    let now = now_ms();
    s.assignments.retain(|a| a.ends_at.is_none_or(|e| e > now));
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let latency = ctx.state.lock().expect("state").latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let path = uri.path().to_owned();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let mut token_jti = None;
    let resp = if path.ends_with("/oauth2/v2.0/token") {
        token(&ctx, &method, &path, &headers, &body)
    } else {
        match route(
            &ctx,
            &method,
            &path,
            &query,
            &headers,
            &body,
            &mut token_jti,
        ) {
            Ok(r) | Err(r) => r,
        }
    };
    let recorded_body = if path.ends_with("/oauth2/v2.0/token") {
        // Form bodies hold the client secret: keep only the field names and the scope.
        let form: BTreeMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        Some(
            json!({"fields": form.keys().collect::<Vec<_>>(), "scope": form.get("scope"), "grant_type": form.get("grant_type")}),
        )
    } else {
        json_body
    };
    ctx.state.lock().expect("state").requests.push(Recorded {
        method: method.to_string(),
        path,
        query,
        body: recorded_body,
        token: token_jti,
        status: resp.status().as_u16(),
        at,
    });
    resp
}

fn token(ctx: &Ctx, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if method != Method::POST {
        return token_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|c| !c.starts_with("application/x-www-form-urlencoded"))
    {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let tenant = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if tenant != TENANT {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application not found in the directory.",
        );
    }
    match (
        form.get("client_secret"),
        form.get("client_assertion_type"),
        form.get("client_assertion"),
    ) {
        (Some(secret), None, None) => {
            if secret != CLIENT_SECRET {
                return token_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                );
            }
        }
        (None, Some(kind), Some(assertion)) => {
            if kind != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50027,
                    "Invalid client assertion type.",
                );
            }
            let Some(c) = verify(FED_KEY, assertion) else {
                return token_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    50013,
                    "Assertion failed signature validation.",
                );
            };
            if c["iss"] != FED_ISSUER || c["sub"] != FED_SUBJECT || c["aud"] != FED_AUDIENCE {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    70021,
                    "No matching federated identity record found for presented assertion.",
                );
            }
            if c["exp"].as_i64().is_none_or(|e| e <= now_ms() / 1000) {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    700024,
                    "Client assertion is not within its valid time range.",
                );
            }
        }
        _ => {
            return token_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }
    let scope = form.get("scope").cloned().unwrap_or_default();
    let Some(audience) = scope
        .strip_suffix("/.default")
        .filter(|a| *a == ARM_AUDIENCE || *a == GRAPH_AUDIENCE)
    else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope '{scope}' is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier."
            ),
        );
    };
    let mut s = ctx.state.lock().expect("state");
    s.tokens_issued += 1;
    let now = now_ms() / 1000;
    let life = s.token_lifetime;
    let jwt = sign(
        &ctx.key,
        &json!({"aud": audience, "iss": format!("https://sts.windows.net/{TENANT}/"), "tid": TENANT, "appid": CLIENT_ID, "oid": SP_OBJECT_ID, "iat": now, "nbf": now, "exp": now + life, "jti": s.tokens_issued}),
    );
    axum::Json(json!({"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": jwt})).into_response()
}

/// Check the bearer token for `audience`.
fn authorize(ctx: &Ctx, headers: &HeaderMap, audience: &str) -> Result<(), Response> {
    let Some(bearer) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(arm_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    let Some(c) = verify(&ctx.key, bearer) else {
        return Err(arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        ));
    };
    if c["aud"] != audience {
        return Err(arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{audience}'.",
                c["aud"]
            ),
        ));
    }
    let jti = c["jti"].as_u64().unwrap_or(0);
    let valid_from = ctx.state.lock().expect("state").valid_from_jti;
    if c["exp"].as_i64().is_none_or(|e| e <= now_ms() / 1000) || jti < valid_from {
        return Err(arm_error(
            StatusCode::UNAUTHORIZED,
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        ));
    }
    Ok(())
}

fn api_version(query: &BTreeMap<String, String>, want: &str) -> Result<(), Response> {
    match query.get("api-version") {
        None => Err(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if v == want => Ok(()),
        Some(v) => Err(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!("The api-version '{v}' is invalid. The supported versions are '{want}'."),
        )),
    }
}

fn route(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    jti: &mut Option<u64>,
) -> Result<Response, Response> {
    let graph = path.starts_with("/v1.0/");
    // Record which token came, accepted or not.
    *jti = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|b| verify(&ctx.key, b))
        .and_then(|c| c["jti"].as_u64());
    authorize(
        ctx,
        headers,
        if graph { GRAPH_AUDIENCE } else { ARM_AUDIENCE },
    )?;
    let mut lose_answer = false;
    {
        let mut s = ctx.state.lock().expect("state");
        if matches!(s.faults.first(), Some(Fault::CommitThenFail)) {
            if *method == Method::PUT {
                s.faults.remove(0);
                lose_answer = true;
            }
        } else if !s.faults.is_empty() {
            let f = s.faults.remove(0);
            return Ok(match f {
                Fault::Throttle(secs) => {
                    let mut r = arm_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "The request is being throttled.",
                    );
                    r.headers_mut()
                        .insert("retry-after", secs.to_string().parse().expect("header"));
                    r
                }
                Fault::ServerError | Fault::CommitThenFail => arm_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "Encountered internal server error.",
                ),
            });
        }
    }
    let answer = arm(ctx, method, path, query, body, graph);
    if lose_answer {
        return Err(arm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Encountered internal server error.",
        ));
    }
    answer
}

fn arm(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &[u8],
    graph: bool,
) -> Result<Response, Response> {
    if graph {
        return graph_user(ctx, method, path, query);
    }
    let lower = path.to_ascii_lowercase();
    let marker = "/providers/microsoft.authorization/";
    let Some(at) = lower.rfind(marker) else {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found.",
        ));
    };
    let scope = &path[..at];
    let rest: Vec<&str> = path[at + marker.len()..].split('/').collect();
    let sub_ok = scope
        .to_ascii_lowercase()
        .starts_with(&format!("/subscriptions/{SUBSCRIPTION}"));
    if !sub_ok {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            "The subscription could not be found.",
        ));
    }
    match (
        rest.first().map(|s| s.to_ascii_lowercase()).as_deref(),
        rest.len(),
    ) {
        (Some("roledefinitions"), 1) if method == Method::GET => {
            api_version(query, RBAC_API)?;
            let filter = query.get("$filter").cloned().unwrap_or_default();
            let name = filter
                .strip_prefix("roleName eq '")
                .and_then(|r| r.strip_suffix('\''))
                .map(|n| n.replace("''", "'"));
            let Some(name) = name else {
                return Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidFilter",
                    &format!("The filter '{filter}' is not supported."),
                ));
            };
            let value: Vec<Value> = roles()
                .into_iter()
                .filter(|(_, n)| n.eq_ignore_ascii_case(&name))
                .map(|(g, n)| role_json(g, n))
                .collect();
            Ok(axum::Json(json!({ "value": value })).into_response())
        }
        (Some("roledefinitions"), 2) if method == Method::GET => {
            api_version(query, RBAC_API)?;
            match roles()
                .into_iter()
                .find(|(g, _)| g.eq_ignore_ascii_case(rest[1]))
            {
                Some((g, n)) => Ok(axum::Json(role_json(g, n)).into_response()),
                None => Err(arm_error(
                    StatusCode::NOT_FOUND,
                    "RoleDefinitionDoesNotExist",
                    "The specified role definition does not exist.",
                )),
            }
        }
        (Some("roleassignments"), 2) => {
            api_version(query, RBAC_API)?;
            role_assignment(ctx, method, scope, rest[1], body)
        }
        (Some("roleassignmentschedulerequests"), 2) => {
            api_version(query, PIM_API)?;
            schedule_request(ctx, method, scope, rest[1], body)
        }
        (Some("roleassignmentschedulerequests"), 3)
            if rest[2] == "cancel" && method == Method::POST =>
        {
            api_version(query, PIM_API)?;
            let key = format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{}",
                rest[1]
            )
            .to_ascii_lowercase();
            let mut s = ctx.state.lock().expect("state");
            match s.schedule_requests.get_mut(&key) {
                Some(r) if r["properties"]["status"] == "PendingApproval" => {
                    r["properties"]["status"] = json!("Canceled");
                    Ok(StatusCode::OK.into_response())
                }
                Some(_) => Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRoleAssignmentRequestState",
                    "Only pending requests can be cancelled.",
                )),
                None => Err(arm_error(
                    StatusCode::NOT_FOUND,
                    "RoleAssignmentScheduleRequestNotFound",
                    "The role assignment schedule request does not exist.",
                )),
            }
        }
        _ => Err(arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            "The resource type could not be found.",
        )),
    }
}

fn roles() -> Vec<(&'static str, &'static str)> {
    vec![(READER, "Reader"), (CONTRIBUTOR, "Contributor")]
}

fn role_id(guid: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
}

fn role_json(guid: &str, name: &str) -> Value {
    json!({"id": role_id(guid), "name": guid, "type": "Microsoft.Authorization/roleDefinitions",
           "properties": {"roleName": name, "type": "BuiltInRole", "description": name, "assignableScopes": ["/"]}})
}

fn graph_user(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
) -> Result<Response, Response> {
    let upn = path.strip_prefix("/v1.0/users/").unwrap_or("");
    let upn = percent_decode(upn);
    if method != Method::GET || upn.is_empty() || upn.contains('/') {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unsupported request.",
        ));
    }
    if query.get("$select").map(String::as_str) != Some("id") {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The fake expects $select=id.",
        ));
    }
    let s = ctx.state.lock().expect("state");
    match s.principals.iter().find(|(oid, (u, _))| u.eq_ignore_ascii_case(&upn) || oid.eq_ignore_ascii_case(&upn)) {
        Some((oid, _)) => Ok(axum::Json(json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id)/$entity", "id": oid})).into_response()),
        None => Err(arm_error(StatusCode::NOT_FOUND, "Request_ResourceNotFound", &format!("Resource '{upn}' does not exist or one of its queried reference-property objects are not present."))),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Is the principal visible (answers `PrincipalNotFound` while it "replicates")?
fn principal_visible(s: &mut FakeState, oid: &str) -> Result<String, Response> {
    if let Some(n) = s.replicating.get_mut(oid)
        && *n > 0
    {
        *n -= 1;
        return Err(principal_not_found(oid));
    }
    match s.principals.get(oid) {
        Some((_, kind)) => Ok(kind.clone()),
        None => Err(principal_not_found(oid)),
    }
}

fn principal_not_found(oid: &str) -> Response {
    arm_error(
        StatusCode::BAD_REQUEST,
        "PrincipalNotFound",
        &format!(
            "Principal {} does not exist in the directory {TENANT}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.",
            oid.replace('-', "")
        ),
    )
}

fn check_role(role: &str) -> Result<(), Response> {
    let ok = roles()
        .iter()
        .any(|(g, _)| role.eq_ignore_ascii_case(&role_id(g)));
    if ok {
        Ok(())
    } else {
        Err(arm_error(
            StatusCode::BAD_REQUEST,
            "RoleDefinitionDoesNotExist",
            &format!("The specified role definition with ID '{role}' does not exist."),
        ))
    }
}

fn assignment_json(a: &Assignment) -> Value {
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.scope, a.name),
        "name": a.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {"roleDefinitionId": a.role_definition_id, "principalId": a.principal_id, "principalType": a.principal_type, "scope": a.scope}
    })
}

fn role_assignment(
    ctx: &Ctx,
    method: &Method,
    scope: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, Response> {
    if !is_guid(name) {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentId",
            &format!(
                "The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."
            ),
        ));
    }
    let mut s = ctx.state.lock().expect("state");
    expire(&mut s);
    let found = s
        .assignments
        .iter()
        .position(|a| a.name.eq_ignore_ascii_case(name) && a.scope.eq_ignore_ascii_case(scope));
    match *method {
        Method::GET => match found {
            Some(i) => Ok(axum::Json(assignment_json(&s.assignments[i])).into_response()),
            None => Err(arm_error(
                StatusCode::NOT_FOUND,
                "RoleAssignmentNotFound",
                "The role assignment does not exist.",
            )),
        },
        Method::DELETE => match found {
            Some(i) => {
                let a = s.assignments.remove(i);
                Ok(axum::Json(assignment_json(&a)).into_response())
            }
            None => Ok(StatusCode::NO_CONTENT.into_response()),
        },
        Method::PUT => {
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    &format!("The request content was invalid: {e}"),
                )
            })?;
            check_fields(&v, &["properties"], "")?;
            let p = &v["properties"];
            check_fields(
                p,
                &[
                    "roleDefinitionId",
                    "principalId",
                    "principalType",
                    "description",
                    "condition",
                    "conditionVersion",
                ],
                "properties",
            )?;
            let role = text(p, "roleDefinitionId", "properties")?.to_owned();
            let principal = text(p, "principalId", "properties")?.to_owned();
            if !is_guid(&principal) {
                return Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidPrincipalId",
                    "A valid principal ID must be provided for role assignment.",
                ));
            }
            check_role(&role)?;
            let kind = principal_visible(&mut s, &principal)?;
            let principal_type = match p.get("principalType") {
                None => kind.clone(),
                Some(t) => {
                    let t = t.as_str().unwrap_or_default().to_owned();
                    if t != kind {
                        return Err(arm_error(
                            StatusCode::BAD_REQUEST,
                            "UnmatchedPrincipalType",
                            &format!(
                                "The PrincipalType in the request '{t}' does not match the actual principal type '{kind}'."
                            ),
                        ));
                    }
                    t
                }
            };
            if let Some(e) = s.assignments.iter().find(|a| {
                a.scope.eq_ignore_ascii_case(scope)
                    && a.role_definition_id.eq_ignore_ascii_case(&role)
                    && a.principal_id.eq_ignore_ascii_case(&principal)
            }) {
                return Err(arm_error(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    &format!(
                        "The role assignment already exists. The ID of the existing role assignment is {}.",
                        e.name.replace('-', "")
                    ),
                ));
            }
            let a = Assignment {
                name: name.to_ascii_lowercase(),
                scope: scope.to_owned(),
                role_definition_id: role,
                principal_id: principal,
                principal_type,
                ends_at: None,
            };
            let out = assignment_json(&a);
            s.assignments.push(a);
            Ok((StatusCode::CREATED, axum::Json(out)).into_response())
        }
        _ => Err(arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The method is not allowed.",
        )),
    }
}

fn schedule_request(
    ctx: &Ctx,
    method: &Method,
    scope: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, Response> {
    if !is_guid(name) {
        return Err(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentScheduleRequestName",
            "The name must be a GUID.",
        ));
    }
    let id =
        format!("{scope}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{name}");
    let key = id.to_ascii_lowercase();
    let mut s = ctx.state.lock().expect("state");
    expire(&mut s);
    match *method {
        Method::GET => match s.schedule_requests.get(&key) {
            Some(v) => Ok(axum::Json(v.clone()).into_response()),
            None => Err(arm_error(
                StatusCode::NOT_FOUND,
                "RoleAssignmentScheduleRequestNotFound",
                "The role assignment schedule request does not exist.",
            )),
        },
        Method::PUT => {
            if s.schedule_requests.contains_key(&key) {
                return Err(arm_error(
                    StatusCode::CONFLICT,
                    "RoleAssignmentRequestExists",
                    "A role assignment schedule request with this name already exists.",
                ));
            }
            let v: Value = serde_json::from_slice(body).map_err(|e| {
                arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    &format!("The request content was invalid: {e}"),
                )
            })?;
            check_fields(&v, &["properties"], "")?;
            let p = &v["properties"];
            check_fields(
                p,
                &[
                    "principalId",
                    "roleDefinitionId",
                    "requestType",
                    "justification",
                    "ticketInfo",
                    "scheduleInfo",
                    "targetRoleAssignmentScheduleId",
                    "targetRoleAssignmentScheduleInstanceId",
                    "linkedRoleEligibilityScheduleId",
                    "condition",
                    "conditionVersion",
                ],
                "properties",
            )?;
            let principal = text(p, "principalId", "properties")?.to_owned();
            let role = text(p, "roleDefinitionId", "properties")?.to_owned();
            let kind = text(p, "requestType", "properties")?.to_owned();
            let justification = text(p, "justification", "properties").map_err(|_| {
                arm_error(
                    StatusCode::BAD_REQUEST,
                    "RoleAssignmentRequestPolicyValidationFailed",
                    "The following policy rules failed: [\"JustificationRule\"]",
                )
            })?;
            if justification.chars().count() > 500 {
                return Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContent",
                    "properties.justification is longer than 500 characters.",
                ));
            }
            if let Some(t) = p.get("ticketInfo") {
                check_fields(
                    t,
                    &["ticketNumber", "ticketSystem"],
                    "properties.ticketInfo",
                )?;
            }
            if !is_guid(&principal) {
                return Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidPrincipalId",
                    "A valid principal ID must be provided.",
                ));
            }
            check_role(&role)?;
            let existing = s.assignments.iter().position(|a| {
                a.scope.eq_ignore_ascii_case(scope)
                    && a.role_definition_id.eq_ignore_ascii_case(&role)
                    && a.principal_id.eq_ignore_ascii_case(&principal)
            });
            let now = now_ms();
            let status = match kind.as_str() {
                "AdminAssign" => {
                    let si = &p["scheduleInfo"];
                    check_fields(
                        si,
                        &["startDateTime", "expiration"],
                        "properties.scheduleInfo",
                    )?;
                    let start = text(si, "startDateTime", "properties.scheduleInfo")?;
                    let start: jiff::Timestamp = start.parse().map_err(|_| arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", &format!("properties.scheduleInfo.startDateTime '{start}' is not a date-time.")))?;
                    let ex = &si["expiration"];
                    check_fields(
                        ex,
                        &["type", "duration", "endDateTime"],
                        "properties.scheduleInfo.expiration",
                    )?;
                    let ty = text(ex, "type", "properties.scheduleInfo.expiration")?;
                    if ty != "AfterDuration" {
                        // The role's policy forbids permanent or open assignments.
                        return Err(arm_error(
                            StatusCode::BAD_REQUEST,
                            "RoleAssignmentRequestPolicyValidationFailed",
                            &format!(
                                "The following policy rules failed: [\"ExpirationRule\"] (expiration type '{ty}'; this role needs AfterDuration)"
                            ),
                        ));
                    }
                    let d = text(ex, "duration", "properties.scheduleInfo.expiration")?;
                    let Some(secs) = iso_seconds(d) else {
                        return Err(arm_error(
                            StatusCode::BAD_REQUEST,
                            "InvalidRequestContent",
                            &format!(
                                "properties.scheduleInfo.expiration.duration '{d}' is not an ISO 8601 duration."
                            ),
                        ));
                    };
                    if secs == 0 || Duration::from_secs(secs) > s.max_pim_duration {
                        return Err(arm_error(
                            StatusCode::BAD_REQUEST,
                            "RoleAssignmentRequestPolicyValidationFailed",
                            "The following policy rules failed: [\"ExpirationRule\"]",
                        ));
                    }
                    if (start.as_millisecond() - now).abs() > 10 * 60_000 {
                        return Err(arm_error(
                            StatusCode::BAD_REQUEST,
                            "InvalidRequestContent",
                            "properties.scheduleInfo.startDateTime is too far from now.",
                        ));
                    }
                    let principal_type = principal_visible(&mut s, &principal)?;
                    if existing.is_some() {
                        return Err(arm_error(
                            StatusCode::BAD_REQUEST,
                            "RoleAssignmentExists",
                            "The Role assignment already exists.",
                        ));
                    }
                    if s.require_approval {
                        "PendingApproval"
                    } else {
                        s.assignments.push(Assignment {
                            name: name.to_ascii_lowercase(),
                            scope: scope.to_owned(),
                            role_definition_id: role.clone(),
                            principal_id: principal.clone(),
                            principal_type,
                            ends_at: Some(
                                start.as_millisecond() + i64::try_from(secs).unwrap_or(0) * 1000,
                            ),
                        });
                        "Provisioned"
                    }
                }
                "AdminRemove" => {
                    match existing {
                        Some(i) => {
                            s.assignments.remove(i);
                        }
                        None => {
                            return Err(arm_error(
                                StatusCode::BAD_REQUEST,
                                "RoleAssignmentDoesNotExist",
                                "The Role assignment does not exist.",
                            ));
                        }
                    }
                    "Revoked"
                }
                other => {
                    return Err(arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        &format!(
                            "requestType '{other}' is not supported by this fake (Sallyport uses AdminAssign and AdminRemove)."
                        ),
                    ));
                }
            };
            let mut props = p.clone();
            props["status"] = json!(status);
            props["scope"] = json!(scope);
            props["createdOn"] = json!(jiff::Timestamp::now().to_string());
            props["requestorId"] = json!(SP_OBJECT_ID);
            props["targetRoleAssignmentScheduleId"] = json!(name);
            let out = json!({"id": id, "name": name, "type": "Microsoft.Authorization/RoleAssignmentScheduleRequests", "properties": props});
            s.schedule_requests.insert(key, out.clone());
            Ok((StatusCode::CREATED, axum::Json(out)).into_response())
        }
        _ => Err(arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The method is not allowed.",
        )),
    }
}

#[test]
fn iso_durations() {
    assert_eq!(iso_seconds("PT1H"), Some(3600));
    assert_eq!(iso_seconds("PT1H2M5S"), Some(3725));
    assert_eq!(iso_seconds("P1DT1S"), Some(86_401));
    assert_eq!(iso_seconds("PT"), None);
    assert_eq!(iso_seconds("1H"), None);
    assert_eq!(iso_seconds("PT5X"), None);
    assert_eq!(iso_seconds("PT1M1H"), None);
}
