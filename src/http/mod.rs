//! The only module that knows HTTP: the JSON API under `/api/v1`, health and metrics, and (in
//! dev mode) the dev login and the demo target.

mod api;
mod dev;
mod error;
pub mod openapi;
mod views;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use dev::DemoTarget;
pub use error::ApiError;

use crate::service::{Caller, Service};

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The core.
    pub service: Service,
    /// Dev mode: dev login and the demo target are mounted.
    pub dev: bool,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// The dev-mode demo target.
    pub demo: Option<Arc<DemoTarget>>,
    /// The web UI: templates, OIDC, rate limits, cookie policy, public URL.
    pub web: Arc<web::Web>,
}

/// The correlation id of the HTTP request being served.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Request ids, deadlines, security headers, metrics, and the error body's `request_id`.
async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| valid_request_id(s))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().as_str().to_owned();
    let mut res = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} s",
                state.request_timeout.as_secs()
            ),
        )
        .into_response(),
    };
    if res.extensions().get::<error::ErrorBody>().is_some() {
        res = fill_request_id(res, &id).await;
    }
    state.service.metrics().http(&method, res.status().as_u16());
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(X_REQUEST_ID.clone(), v);
    }
    security_headers(h, state.web.public_url.scheme() == "https");
    res
}

/// HSTS: a year, this host only (Sallyport does not know what else lives under the domain).
const HSTS: &str = "max-age=31536000";

/// The headers every response carries; `Strict-Transport-Security` only when the server is
/// reached over https (over plain http it would be ignored, or wrongly pin a dev host).
fn security_headers(h: &mut axum::http::HeaderMap, https: bool) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
}

async fn fill_request_id(res: Response, id: &str) -> Response {
    let (parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "request_id".into(),
            serde_json::Value::String(id.to_owned()),
        );
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(v.to_string()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(
            &parts.headers,
            "sign in first: send `Authorization: Bearer <token>` (`sallyport login` stores one)",
        )?;
        Ok(state.service.authenticate(token).await?)
    }
}

/// The token of an `Authorization: Bearer` header; `missing` is the message when there is none.
pub(crate) fn bearer<'h>(
    headers: &'h axum::http::HeaderMap,
    missing: &str,
) -> Result<&'h str, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated(missing))?;
    auth.to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must be `Bearer <token>`")
        })
}

impl FromRequestParts<AppState> for crate::store::WriteCtx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(crate::store::WriteCtx {
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
        })
    }
}

async fn not_found(State(st): State<AppState>, req: Request) -> Response {
    if web::wants_html(req.headers()) && !req.uri().path().starts_with("/api/") {
        let id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        return web::not_found_page(&st, &id);
    }
    ApiError::not_found("no such route; the API is described at /api/v1/openapi.json")
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method; see /api/v1/openapi.json",
    )
}

/// The whole HTTP application.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let mut app = api::routes().merge(web::routes(state.clone()));
    if state.dev {
        app = app.merge(dev::routes());
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HSTS over https only; the other headers always, without overriding a page's own CSP.
    #[test]
    fn security_headers_and_hsts_only_over_https() {
        for https in [true, false] {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("script-src 'self'"),
            );
            security_headers(&mut h, https);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], "script-src 'self'");
            assert_eq!(
                h.get(header::STRICT_TRANSPORT_SECURITY)
                    .and_then(|v| v.to_str().ok()),
                https.then_some("max-age=31536000"),
                "https: {https}"
            );
        }
        let mut h = axum::http::HeaderMap::new();
        security_headers(&mut h, false);
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; frame-ancestors 'none'"
        );
    }
}
