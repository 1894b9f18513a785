//! The JSON API under `/api/v1`, plus `/healthz`, `/readyz` and `/metrics`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, openapi, views};
use crate::domain::{Channel, Millis, State as ReqState, Verdict, parse_duration};
use crate::service::{Caller, CreateInput, CredentialsFor, ListQuery, ListScope, now_ms};
use crate::store::{AuditFilter, WriteCtx};

/// Every route of the API, as `(method, path)`: the OpenAPI document must list exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/entitlements"),
    ("get", "/api/v1/requests"),
    ("post", "/api/v1/requests"),
    ("get", "/api/v1/requests/{id}"),
    ("post", "/api/v1/requests/{id}/cancel"),
    ("post", "/api/v1/requests/{id}/reviews"),
    ("post", "/api/v1/requests/{id}/revoke"),
    ("post", "/api/v1/requests/{id}/end"),
    ("get", "/api/v1/grants"),
    ("post", "/api/v1/credentials"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{id}"),
    ("post", "/api/v1/cli/token"),
    ("get", "/api/v1/actions/kinds"),
    ("post", "/api/v1/actions"),
    ("get", "/api/v1/actions/{id}"),
    ("post", "/api/v1/actions/{id}/consume"),
    ("get", "/.well-known/jwks.json"),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi_doc))
        .route("/api/v1/me", get(me))
        .route("/api/v1/entitlements", get(entitlements))
        .route("/api/v1/requests", get(list_requests).post(create_request))
        .route("/api/v1/requests/{id}", get(get_request))
        .route("/api/v1/requests/{id}/cancel", post(cancel))
        .route("/api/v1/requests/{id}/reviews", post(review))
        .route("/api/v1/requests/{id}/revoke", post(revoke))
        .route("/api/v1/requests/{id}/end", post(end))
        .route("/api/v1/grants", get(grants))
        .route("/api/v1/credentials", post(credentials))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/tokens", get(tokens))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/cli/token", post(cli_token))
        .route("/api/v1/actions/kinds", get(action_kinds))
        .route("/api/v1/actions", post(create_action))
        .route("/api/v1/actions/{id}", get(get_action))
        .route("/api/v1/actions/{id}/consume", post(consume_action))
        .route("/.well-known/jwks.json", get(jwks))
}

/// The bearer token of an action request: an API token or a workload token.
fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    super::bearer(
        headers,
        "send `Authorization: Bearer <token>`: an API token, or a pipeline's OIDC workload token",
    )
}

async fn action_kinds(State(st): State<AppState>, caller: Caller) -> Json<Value> {
    let policy = st.service.policy();
    let kinds: Vec<Value> = policy
        .config
        .actions
        .iter()
        .map(|k| views::action_kind(k, &caller))
        .collect();
    Json(json!({ "kinds": kinds }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    kind: String,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
    reason: String,
}

/// File an action request, as a person or service (API token) or a pipeline (OIDC workload
/// token). A pipeline also gets a `wait_token` that reads this request while it waits.
async fn create_action(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    ctx: WriteCtx,
    ApiJson(body): ApiJson<ActionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let token = bearer(&headers)?;
    let (caller, workload) = if crate::workload::looks_like_jwt(token) {
        let (c, w) = st.service.authenticate_workload(token, &body.kind).await?;
        (c, Some(w))
    } else {
        (st.service.authenticate(token).await?, None)
    };
    let pipeline = workload.is_some();
    let r = st
        .service
        .create_action(
            &caller,
            workload,
            crate::service::ActionInput {
                kind: body.kind,
                parameters: body.parameters,
                justification: body.reason,
            },
            Channel::Api,
            &ctx,
        )
        .await?;
    let view = st
        .service
        .action_view(&caller, r, st.web.public_url.as_str(), pipeline)
        .await?;
    let mut out = views::action(&view, &caller, now_ms());
    if pipeline {
        out["wait_token"] = json!(st.service.issue_wait_token(&view.request, &ctx).await?);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// An action request, with its attestation for its requester once approved. Accepts an API
/// token or the request's wait token.
async fn get_action(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let token = bearer(&headers)?;
    let (caller, pipeline) = match st.service.authenticate(token).await {
        Ok(c) => (c, false),
        Err(_) => (st.service.authenticate_wait(token, &id).await?, true),
    };
    let view = st
        .service
        .get_action(&caller, &id, st.web.public_url.as_str(), pipeline)
        .await?;
    Ok(Json(views::action(&view, &caller, now_ms())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeBody {
    attestation: String,
    /// Required: the parameters about to be acted on (`{}` for a kind without any).
    parameters: serde_json::Map<String, Value>,
}

/// Use an approval once. The attestation itself is the credential; an API token, when sent,
/// names who consumed it in the audit log.
async fn consume_action(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    ctx: WriteCtx,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConsumeBody>,
) -> Result<Json<Value>, ApiError> {
    // Optional: a valid API token names who consumed it; anything else is ignored (the
    // attestation is the credential).
    let by = match bearer(&headers) {
        Ok(t) => st.service.authenticate(t).await.ok(),
        Err(_) => None,
    };
    let r = st
        .service
        .consume(&id, &body.attestation, body.parameters, by.as_ref(), &ctx)
        .await?;
    let a = r.action.as_ref();
    Ok(Json(json!({
        "id": r.id,
        "action": r.entitlement,
        "state": r.state,
        "params_digest": a.map(|a| a.digest.clone()),
        "consumed_at": views::time(a.and_then(|a| a.consumed_at).unwrap_or(0)),
    })))
}

/// The public keys that verify attestations (RFC 7517).
async fn jwks(State(st): State<AppState>) -> Result<Response, ApiError> {
    let doc = st.service.jwks().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        Json(doc),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliTokenBody {
    code: String,
    code_verifier: String,
    name: Option<String>,
}

/// The CLI's browser login, last step: a one-time code and its PKCE verifier for a token.
async fn cli_token(
    State(st): State<AppState>,
    ctx: WriteCtx,
    addr: super::web::ClientAddr,
    ApiJson(body): ApiJson<CliTokenBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Err(wait) = st.web.limits.signin.check(&addr.0) {
        return Err(ApiError::rate_limited("sign-in attempts", wait));
    }
    let name = body.name.as_deref().unwrap_or("cli (browser login)");
    let (token, rec) = st
        .service
        .exchange_cli_code(&body.code, &body.code_verifier, name, &ctx)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "token_id": rec.id,
            "user": rec.principal,
            "expires_at": views::time(rec.expires_at),
        })),
    ))
}

/// A JSON body whose every rejection is an [`ApiError`] with a clear message.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(match rej {
                JsonRejection::JsonDataError(e) => ApiError::invalid(format!(
                    "the JSON body does not fit: {}",
                    std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string())
                )),
                JsonRejection::JsonSyntaxError(e) => ApiError::invalid(format!(
                    "the body is not valid JSON: {}",
                    std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string())
                )),
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with `Content-Type: application/json`",
                ),
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the body is larger than this server accepts",
                    )
                }
                other => ApiError::invalid(other.body_text()),
            }),
        }
    }
}

/// Query parameters whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| {
                ApiError::invalid(format!("bad query parameters: {}", e.body_text()))
            })
    }
}

/// A duration as `"1h30m"` or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationInput {
    Seconds(u64),
    Text(String),
}

impl DurationInput {
    fn seconds(&self) -> Result<u64, ApiError> {
        match self {
            DurationInput::Seconds(0) => {
                Err(ApiError::invalid("duration: must be at least 1 second"))
            }
            DurationInput::Seconds(n) => Ok(*n),
            DurationInput::Text(t) => {
                parse_duration(t).map_err(|e| ApiError::invalid(format!("duration: {e}")))
            }
        }
    }
}

/// A point in time as RFC 3339 or milliseconds since the epoch.
pub(super) fn parse_time(field: &str, s: &str) -> Result<Millis, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            ApiError::invalid(format!(
                "{field}: `{s}` is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z): {e}"
            ))
        })
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.service.store().ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readiness check failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database is not reachable",
            )
            .into_response()
        }
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let counts = st.service.store().counts().await.ok();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.service.metrics().render(counts.as_ref()),
    )
        .into_response()
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi::document())
}

async fn me(caller: Caller) -> Json<Value> {
    Json(json!({
        "principal": caller.principal,
        "roles": { "admin": caller.roles.admin, "auditor": caller.roles.auditor },
        "token_id": caller.token_id,
    }))
}

async fn entitlements(State(st): State<AppState>, caller: Caller) -> Json<Value> {
    let policy = st.service.policy();
    let list: Vec<Value> = policy
        .config
        .entitlements
        .iter()
        .map(|e| views::entitlement(e, &caller))
        .collect();
    Json(json!({ "entitlements": list }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    entitlement: String,
    duration: Option<DurationInput>,
    justification: String,
    ticket: Option<String>,
}

async fn create_request(
    State(st): State<AppState>,
    caller: Caller,
    ctx: WriteCtx,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let duration_secs = body
        .duration
        .as_ref()
        .map(DurationInput::seconds)
        .transpose()?;
    let r = st
        .service
        .create_request(
            &caller,
            CreateInput {
                entitlement: body.entitlement,
                duration_secs,
                justification: body.justification,
                ticket: body.ticket,
            },
            Channel::Api,
            &ctx,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(views::request(&r, &caller, now_ms())),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    scope: Option<String>,
    state: Option<String>,
    entitlement: Option<String>,
    requester: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

fn parse_states(s: Option<&str>) -> Result<Vec<ReqState>, ApiError> {
    let Some(s) = s else {
        return Ok(Vec::new());
    };
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            ReqState::parse(x.trim()).ok_or_else(|| {
                ApiError::invalid(format!(
                    "state: unknown state `{x}`; use {}",
                    ReqState::ALL.map(ReqState::as_str).join(", ")
                ))
            })
        })
        .collect()
}

fn parse_scope(s: Option<&str>) -> Result<ListScope, ApiError> {
    match s.unwrap_or("mine") {
        "mine" => Ok(ListScope::Mine),
        "review" => Ok(ListScope::Review),
        "all" => Ok(ListScope::All),
        other => Err(ApiError::invalid(format!(
            "scope: `{other}` is not one of mine, review, all"
        ))),
    }
}

async fn list_requests(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let q = ListQuery {
        scope: parse_scope(p.scope.as_deref())?,
        states: parse_states(p.state.as_deref())?,
        entitlement: p.entitlement,
        requester: p.requester,
        before: p.before,
        limit: p.limit.unwrap_or(50),
    };
    let list = st.service.list(&caller, &q).await?;
    let now = now_ms();
    let next = if list.len() == q.limit.clamp(1, 500) as usize {
        list.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(json!({
        "requests": list.iter().map(|r| views::request(r, &caller, now)).collect::<Vec<_>>(),
        "next_before": next,
    })))
}

async fn get_request(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = st.service.get(&caller, &id).await?;
    Ok(Json(views::request(&r, &caller, now_ms())))
}

async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    ctx: WriteCtx,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = st.service.cancel(&caller, &id, Channel::Api, &ctx).await?;
    Ok(Json(views::request(&r, &caller, now_ms())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    verdict: Verdict,
    comment: Option<String>,
}

async fn review(
    State(st): State<AppState>,
    caller: Caller,
    ctx: WriteCtx,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> Result<Json<Value>, ApiError> {
    if let Err(wait) = st.web.limits.review.check(&caller.principal.id) {
        return Err(ApiError::rate_limited("reviews", wait));
    }
    if body.verdict == Verdict::Deny && body.comment.as_deref().is_none_or(|c| c.trim().is_empty())
    {
        return Err(ApiError::invalid(
            "comment: a denial needs a reason for the requester",
        ));
    }
    let r = st
        .service
        .review(&caller, &id, body.verdict, body.comment, Channel::Api, &ctx)
        .await?;
    Ok(Json(views::request(&r, &caller, now_ms())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: String,
}

async fn revoke(
    State(st): State<AppState>,
    caller: Caller,
    ctx: WriteCtx,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Json<Value>, ApiError> {
    let r = st
        .service
        .revoke(&caller, &id, body.reason, Channel::Api, &ctx)
        .await?;
    Ok(Json(views::request(&r, &caller, now_ms())))
}

async fn end(
    State(st): State<AppState>,
    caller: Caller,
    ctx: WriteCtx,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let r = st.service.end(&caller, &id, Channel::Api, &ctx).await?;
    Ok(Json(views::request(&r, &caller, now_ms())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantParams {
    scope: Option<String>,
    active: Option<bool>,
    limit: Option<u32>,
}

async fn grants(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<GrantParams>,
) -> Result<Json<Value>, ApiError> {
    let scope = match p.scope.as_deref().unwrap_or("mine") {
        "mine" => ListScope::Mine,
        "all" => ListScope::All,
        other => {
            return Err(ApiError::invalid(format!(
                "scope: `{other}` is not one of mine, all"
            )));
        }
    };
    let active_only = p.active.unwrap_or(true);
    let states = if active_only {
        vec![ReqState::Active]
    } else {
        vec![
            ReqState::Active,
            ReqState::Expired,
            ReqState::Revoked,
            ReqState::Ended,
        ]
    };
    let list = st
        .service
        .list(
            &caller,
            &ListQuery {
                scope,
                states,
                limit: p.limit.unwrap_or(100),
                ..ListQuery::default()
            },
        )
        .await?;
    let now = now_ms();
    let grants: Vec<Value> = list
        .iter()
        .filter(|r| r.grant.is_some())
        .map(|r| views::request(r, &caller, now))
        .collect();
    Ok(Json(json!({ "grants": grants })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    entitlement: Option<String>,
    request_id: Option<String>,
}

async fn credentials(
    State(st): State<AppState>,
    caller: Caller,
    ctx: WriteCtx,
    ApiJson(body): ApiJson<CredentialsBody>,
) -> Result<Response, ApiError> {
    let target = match (body.entitlement, body.request_id) {
        (Some(e), None) => CredentialsFor::Entitlement(e),
        (None, Some(r)) => CredentialsFor::Request(r),
        _ => {
            return Err(ApiError::invalid(
                "give `entitlement` or `request_id` (one of them)",
            ));
        }
    };
    let (r, creds) = st.service.credentials(&caller, target, &ctx).await?;
    let grant_end = r.grant.as_ref().map(|g| g.expires_at).unwrap_or_default();
    let body = match creds.0 {
        crate::plugin::CredentialSet::Aws(c) => json!({
            "type": "aws",
            "access_key_id": c.access_key_id,
            "secret_access_key": c.secret_access_key,
            "session_token": c.session_token,
            "expiration": views::time(c.expiration),
            "request_id": r.id,
            "entitlement": r.entitlement,
            "grant_expires_at": views::time(grant_end),
        }),
        crate::plugin::CredentialSet::Generic(g) => json!({
            "type": "generic",
            "values": g.values.iter().map(|kv| (kv.key.clone(), Value::String(kv.value.clone()))).collect::<serde_json::Map<_, _>>(),
            "expiration": views::time(g.expiration),
            "request_id": r.id,
            "entitlement": r.entitlement,
            "grant_expires_at": views::time(grant_end),
        }),
    };
    // Secrets: never cached anywhere on the way.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    since: Option<String>,
    until: Option<String>,
    subject: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    after_seq: Option<i64>,
    limit: Option<u32>,
    format: Option<String>,
}

async fn audit(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Response, ApiError> {
    if !(caller.roles.admin || caller.roles.auditor) {
        return Err(ApiError::forbidden(
            "the audit log is for auditors and admins; a request's own history is on the request",
        ));
    }
    let filter = AuditFilter {
        since: p
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        until: p
            .until
            .as_deref()
            .map(|s| parse_time("until", s))
            .transpose()?,
        subject: p.subject,
        actor: p.actor,
        action: p.action,
        after_seq: p.after_seq,
        limit: p.limit.unwrap_or(1000),
        ..AuditFilter::default()
    };
    let events = st.service.store().audit(&filter).await?;
    match p.format.as_deref().unwrap_or("json") {
        "json" => {
            let next = if events.len() == filter.limit.clamp(1, 10_000) as usize {
                events.last().map(|e| e.seq)
            } else {
                None
            };
            Ok(Json(json!({
                "events": events.iter().map(views::audit).collect::<Vec<_>>(),
                "next_after_seq": next,
            }))
            .into_response())
        }
        "jsonl" => Ok(views::audit_jsonl(&events)),
        other => Err(ApiError::invalid(format!(
            "format: `{other}` is not json or jsonl"
        ))),
    }
}

async fn tokens(State(st): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let list = st
        .service
        .store()
        .list_tokens(&caller.principal.id, 1000)
        .await?;
    let now = now_ms();
    Ok(Json(json!({
        "tokens": list.iter().map(|t| views::token(t, now)).collect::<Vec<_>>(),
    })))
}

async fn revoke_token(
    State(st): State<AppState>,
    caller: Caller,
    ctx: WriteCtx,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    st.service.revoke_token(&caller, &id, &ctx).await?;
    Ok(StatusCode::NO_CONTENT)
}
