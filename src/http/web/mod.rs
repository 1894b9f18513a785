//! The web UI: server-rendered pages (handlebars templates in `web/templates`, strict mode, one
//! typed view per page), browser sessions, CSRF protection, OIDC sign-in, and the page that
//! signs in the CLI. Every page works without JavaScript; `web/static/app.js` only adds a live
//! countdown, under a CSP that allows no inline script.
//!
//! - **Sessions** are tokens of scope `web` (stored hashed, revocable, expiring) carried in an
//!   `HttpOnly; SameSite=Lax` cookie, `Secure` unless the public URL is plain http on loopback.
//! - **CSRF**: every form POST carries a token derived from the session secret
//!   (`SHA-256("sallyport-csrf" ‖ session)`), checked in constant time; sign-in forms, which have
//!   no session yet, use a double-submit cookie.
//! - **Rate limits** per client address on sign-in, per user on reviews (web and API share
//!   them); a 429 carries `Retry-After`.
//! - **Headers** (set for every response in `http::edge`): CSP, `nosniff`, `no-referrer`,
//!   `X-Frame-Options: DENY`, and HSTS when the public URL is https.

mod limit;
mod links;
mod oidc;
mod pages;
pub mod templates;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::{AppState, RequestId};
use crate::secret::same;
use crate::service::{Caller, ServiceError};
use crate::store::TokenScope;

pub use limit::RateLimits;
pub use templates::Templates;

/// The session cookie.
pub const SESSION_COOKIE: &str = "sallyport_session";
/// The pre-sign-in cookie: double-submit CSRF for sign-in forms, and the OIDC flow's binding.
pub const PRE_COOKIE: &str = "sallyport_pre";

/// CSP of every page: scripts and styles only from this origin, no inline script.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the web UI keeps beside the service.
#[derive(Debug)]
pub struct Web {
    /// The compiled templates.
    pub templates: Templates,
    /// OIDC providers discovered so far.
    oidc: oidc::OidcClients,
    /// Rate limits.
    pub limits: RateLimits,
    /// Cookies carry `Secure` (everywhere but plain-http loopback).
    pub secure_cookies: bool,
    /// Where users reach this server (links, OIDC redirect URI).
    pub public_url: url::Url,
}

impl Web {
    /// Build the web UI for a server reachable at `public_url`.
    pub fn new(public_url: url::Url) -> Result<Web, String> {
        let loopback_http = public_url.scheme() == "http"
            && public_url.host().is_some_and(|h| match h {
                url::Host::Domain(d) => d == "localhost",
                url::Host::Ipv4(ip) => ip.is_loopback(),
                url::Host::Ipv6(ip) => ip.is_loopback(),
            });
        Ok(Web {
            templates: Templates::new()?,
            oidc: oidc::OidcClients::default(),
            limits: RateLimits::default(),
            secure_cookies: !loopback_http,
            public_url,
        })
    }

    /// `Set-Cookie` for a cookie of ours.
    pub fn cookie(&self, name: &str, value: &str, max_age_secs: u64) -> HeaderValue {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
    }

    /// `Set-Cookie` that deletes a cookie of ours.
    pub fn clear_cookie(&self, name: &str) -> HeaderValue {
        self.cookie(name, "", 0)
    }
}

/// The routes of the web UI.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    pages::routes()
        .merge(links::routes())
        .layer(axum::middleware::from_fn_with_state(state, render_errors))
}

/// A cookie's value from the request headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// The CSRF token of a session.
pub fn csrf_for(session: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sallyport-csrf\0");
    h.update(session.as_bytes());
    hex::encode(&h.finalize()[..20])
}

/// A signed-in browser user.
#[derive(Debug, Clone)]
pub struct WebUser {
    /// Who, with roles.
    pub caller: Caller,
    /// The CSRF token of this session.
    pub csrf: String,
}

impl WebUser {
    /// Refuse a form whose CSRF token is missing or wrong. Nothing has been changed yet.
    pub fn check_csrf(&self, sent: &str) -> Result<(), WebError> {
        if same(sent, &self.csrf) {
            Ok(())
        } else {
            Err(WebError::new(
                StatusCode::FORBIDDEN,
                "This form cannot be accepted",
                "The form did not carry a valid security token (CSRF), so nothing was changed. Reload the page and try again.",
            ))
        }
    }
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        let to_signin = || {
            let next = if parts.method == Method::GET {
                parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned()
            } else {
                "/".to_owned()
            };
            Redirect::to(&format!("/signin?next={}", enc(&next))).into_response()
        };
        match WebUser::of_session(st, &parts.headers).await {
            Ok(Some(u)) => Ok(u),
            Ok(None) => Err(to_signin()),
            Err(e) => Err(e.into_response()),
        }
    }
}

impl WebUser {
    /// The user of the request's session cookie, if it holds a live session (pages that also
    /// serve people who are not signed in).
    pub async fn of_session(
        st: &AppState,
        headers: &HeaderMap,
    ) -> Result<Option<WebUser>, WebError> {
        let Some(token) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        match st
            .service
            .authenticate_scoped(&token, TokenScope::Web)
            .await
        {
            Ok(caller) => Ok(Some(WebUser {
                caller,
                csrf: csrf_for(&token),
            })),
            Err(ServiceError::Unauthenticated(_)) => Ok(None),
            Err(e) => Err(WebError::from(e)),
        }
    }
}

/// The client's address, when the server knows it.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string()),
        ))
    }
}

/// A URL-encoded form whose rejections are error pages.
#[derive(Debug)]
pub struct WebForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for WebForm<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &S) -> Result<Self, WebError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(WebForm(v)),
            Err(e) => Err(WebError::new(
                StatusCode::BAD_REQUEST,
                "That form could not be read",
                format!("{}; nothing was changed.", e.body_text()),
            )),
        }
    }
}

/// Percent-encoding for a query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An error shown as a page (with the request id, filled in by `render_errors`).
#[derive(Debug, Clone)]
pub struct WebError {
    /// HTTP status.
    pub status: StatusCode,
    /// The page heading.
    pub heading: String,
    /// What happened, for people.
    pub message: String,
}

impl WebError {
    /// Build one.
    pub fn new(status: StatusCode, heading: &str, message: impl Into<String>) -> WebError {
        WebError {
            status,
            heading: heading.to_owned(),
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::NOT_FOUND, "Not found", message)
    }

    /// 500, logged.
    pub fn internal(what: &str) -> WebError {
        tracing::error!(error = %what, "web page failed");
        WebError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "An internal error occurred; quote the request id when reporting it.",
        )
    }
}

impl From<ServiceError> for WebError {
    fn from(e: ServiceError) -> WebError {
        let api = super::ApiError::from(e);
        let heading = match api.status.as_u16() {
            400 => "That did not work",
            401 => "Please sign in",
            403 => "Not allowed",
            404 => "Not found",
            409 => "That changed meanwhile",
            429 => "Slow down",
            _ => "Something went wrong",
        };
        WebError::new(api.status, heading, api.message)
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> WebError {
        WebError::from(ServiceError::Store(e))
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        res.extensions_mut().insert(self);
        res
    }
}

#[derive(Serialize)]
struct ErrorView {
    title: String,
    nav: pages::Nav,
    flash: Option<String>,
    heading: String,
    message: String,
    request_id: String,
}

/// Turn [`WebError`] markers into error pages that show the request id.
async fn render_errors(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let res = next.run(req).await;
    let Some(err) = res.extensions().get::<WebError>().cloned() else {
        return res;
    };
    error_page(
        &st,
        &err,
        &id,
        res.headers().get(header::RETRY_AFTER).cloned(),
    )
}

/// Render an error page.
pub fn error_page(
    st: &AppState,
    err: &WebError,
    request_id: &str,
    retry_after: Option<HeaderValue>,
) -> Response {
    let view = ErrorView {
        title: err.heading.clone(),
        nav: pages::Nav::anonymous(st.dev),
        flash: None,
        heading: err.heading.clone(),
        message: err.message.clone(),
        request_id: request_id.to_owned(),
    };
    let body = st.web.templates.render("error", &view).unwrap_or_else(|e| {
        tracing::error!(error = %e, "error page failed to render");
        format!("{}: request id {request_id}", err.heading)
    });
    let mut res = (err.status, html_headers(PAGE_CSP), body).into_response();
    if let Some(v) = retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// Headers of an HTML page.
pub fn html_headers(csp: &str) -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(csp).unwrap_or_else(|_| HeaderValue::from_static(PAGE_CSP)),
        ),
    ]
}

/// Does this request come from a browser that wants a page rather than JSON?
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// A 404 page for browsers.
pub fn not_found_page(st: &AppState, request_id: &str) -> Response {
    error_page(
        st,
        &WebError::not_found("There is no page at this address."),
        request_id,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(url: &str) -> Web {
        Web::new(url::Url::parse(url).expect("url")).expect("web")
    }

    /// `Secure` everywhere but plain http on loopback (dev); always HttpOnly and SameSite=Lax.
    #[test]
    fn session_cookies_are_secure_except_on_loopback_http() {
        for (url, secure) in [
            ("https://sallyport.example.com/", true),
            ("http://sallyport.example.com/", true),
            ("http://10.0.0.5:8080/", true),
            ("http://127.0.0.1:8080/", false),
            ("http://localhost:8080/", false),
            ("http://[::1]:8080/", false),
        ] {
            let c = web(url).cookie(SESSION_COOKIE, "v", 60);
            let c = c.to_str().expect("ascii");
            assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
            assert_eq!(c.contains("; Secure"), secure, "{url}: {c}");
        }
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let (a, b) = (csrf_for("spt_a"), csrf_for("spt_b"));
        assert_ne!(a, b);
        assert!(same(&a, &csrf_for("spt_a")));
        assert!(!same(&a, &a[..a.len() - 1]));
        assert!(!same(&a, ""));
    }
}
