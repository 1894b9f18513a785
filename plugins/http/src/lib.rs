//! Sallyport's built-in `http` connector: grants and revokes access by calling an
//! operator-configured HTTP endpoint.
//!
//! Everything here but the `guest` module (the wit-bindgen glue, wasm only) is plain Rust, so it
//! is unit-tested natively against a fake host.
//!
//! Settings (JSON):
//!
//! ```json
//! {
//!   "grant": {
//!     "method": "POST",
//!     "url": "https://target.internal/grants",
//!     "headers": { "content-type": "application/json", "authorization": { "secret": "target_token" } },
//!     "body": { "user": "{{requester.id}}", "until": "{{expires_at}}", "seconds": "{{request.duration_seconds}}" },
//!     "expect_status": [200, 201]
//!   },
//!   "revoke": {
//!     "method": "DELETE",
//!     "url": "https://target.internal/grants/{{grant.response.id}}",
//!     "headers": { "authorization": { "secret": "target_token" } },
//!     "gone_status": [404, 410]
//!   },
//!   "timeout_ms": 10000
//! }
//! ```

pub mod settings;
pub mod template;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod guest;

use serde_json::{Value, json};

use settings::{Call, HeaderSpec, Method, Settings};
use template::Vars;

/// Responses larger than this are not kept in the handle (which the host stores). Well under the
/// host's 64 KiB limit on a whole handle, so a kept response never makes a grant fail after the
/// target has already granted access.
pub const MAX_STORED_RESPONSE: usize = 32 * 1024;
/// How much of an unexpected response body an error message quotes.
const BODY_EXCERPT_CHARS: usize = 200;

/// The message `credentials` answers with.
pub const NO_CREDENTIALS: &str =
    "the http connector grants access in the target system; it has no credentials to hand out";

/// A request header value as sent to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// A literal value.
    Text(String),
    /// A secret the host injects by name.
    Secret(String),
}

/// An outgoing request, ready for `http::send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, HeaderValue)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u32,
}

/// A response from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why the host could not make a request (mirrors `sallyport:plugin/http.error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    CapabilityNotAvailable(String),
    NotAllowed(String),
    InvalidRequest(String),
    Unreachable(String),
    Timeout,
    TooLarge,
}

/// What the host offers the connector.
pub trait Host {
    /// `sallyport:plugin/http.send`.
    fn send(&mut self, req: OutRequest) -> Result<InResponse, HttpError>;
    /// Logs a warning.
    fn warn(&mut self, message: &str);
}

/// The kinds of `connector-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Unsupported,
    InvalidSettings,
    Denied,
    Transient,
    Failed,
}

/// A `connector-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ConnectorError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            message: message.into(),
        }
    }
}

/// The parts of an `access-request` the templates can use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRequest {
    pub id: String,
    pub entitlement: String,
    pub duration_seconds: u64,
    pub justification: String,
    pub ticket: Option<String>,
    pub requester_id: String,
    pub requester_email: Option<String>,
    pub requester_display_name: Option<String>,
}

/// Why access is being taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Expired,
    Revoked,
    Ended,
    Rollback,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Expired => "expired",
            RevokeReason::Revoked => "revoked",
            RevokeReason::Ended => "ended",
            RevokeReason::Rollback => "rollback",
        }
    }
}

/// What `grant` put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// `{"status": <u16>, "response": <JSON or null>}`.
    pub handle: String,
    /// e.g. `POST https://target.internal/grants -> 201`.
    pub summary: String,
}

/// `validate`: every problem, with its path.
pub fn validate(settings: &str) -> Result<(), Vec<settings::SettingError>> {
    settings::parse(settings).map(drop)
}

fn load(settings: &str) -> Result<Settings, ConnectorError> {
    settings::parse(settings).map_err(|errors| {
        let list: Vec<String> = errors
            .iter()
            .map(|e| {
                if e.path.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.path, e.message)
                }
            })
            .collect();
        ConnectorError::new(ErrorKind::InvalidSettings, list.join("; "))
    })
}

fn base_vars(request: &AccessRequest, now_ms: i64) -> Vars {
    Vars {
        request_id: request.id.clone(),
        entitlement: request.entitlement.clone(),
        duration_seconds: request.duration_seconds,
        justification: request.justification.clone(),
        ticket: request.ticket.clone().unwrap_or_default(),
        requester_id: request.requester_id.clone(),
        requester_email: request.requester_email.clone().unwrap_or_default(),
        requester_display_name: request
            .requester_display_name
            .clone()
            .unwrap_or_else(|| request.requester_id.clone()),
        now_ms,
        ..Vars::default()
    }
}

/// Builds the request for `call` with `vars`. Rendering failures (a missing `grant.*` value in
/// the URL, a line break in a header) are `failed`: nothing was sent.
fn render(
    call: &Call,
    vars: &Vars,
    timeout_ms: u32,
    which: &str,
) -> Result<OutRequest, ConnectorError> {
    let failed = |m: String| ConnectorError::new(ErrorKind::Failed, format!("{which}: {m}"));
    let url = call
        .url
        .render_url(vars)
        .map_err(|m| failed(format!("url: {m}")))?;
    let mut headers = Vec::with_capacity(call.headers.len() + 1);
    for (name, spec) in &call.headers {
        let value = match spec {
            HeaderSpec::Text(t) => HeaderValue::Text(
                t.render_header(vars)
                    .map_err(|m| failed(format!("header `{name}`: {m}")))?,
            ),
            HeaderSpec::Secret(s) => HeaderValue::Secret(s.clone()),
        };
        headers.push((name.clone(), value));
    }
    let body = call.body.as_ref().map(|b| {
        if !call
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            headers.push((
                "content-type".to_owned(),
                HeaderValue::Text("application/json".to_owned()),
            ));
        }
        b.render(vars).to_string().into_bytes()
    });
    Ok(OutRequest {
        method: call.method,
        url,
        headers,
        body,
        timeout_ms,
    })
}

/// A short, single-line excerpt of a response body for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(BODY_EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    out = out.trim().to_owned();
    if text.chars().nth(BODY_EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    if out.is_empty() {
        "(empty body)".to_owned()
    } else {
        out
    }
}

/// Maps a host error to a connector error.
fn map_http_error(err: HttpError, what: &str, timeout_ms: u32) -> ConnectorError {
    use ErrorKind::{Failed, Transient};
    match err {
        HttpError::NotAllowed(m) => ConnectorError::new(
            Failed,
            format!(
                "{what}: refused by Sallyport ({m}); the URL's origin, and any secret named in the headers, \
                 must be allowed for the http plugin in the operator configuration ([capabilities.http] allow / secrets)"
            ),
        ),
        HttpError::InvalidRequest(m) => ConnectorError::new(
            Failed,
            format!(
                "{what}: refused as malformed ({m}); check the URL and headers, and that the origin is allowed \
                 for the http plugin in the operator configuration"
            ),
        ),
        HttpError::CapabilityNotAvailable(m) => ConnectorError::new(
            Failed,
            format!(
                "{what}: HTTP is not available to this plugin ({m}); the operator configuration must allow its origins"
            ),
        ),
        HttpError::Unreachable(m) => {
            ConnectorError::new(Transient, format!("{what}: unreachable: {m}"))
        }
        HttpError::Timeout => ConnectorError::new(
            Transient,
            format!("{what}: no answer within {timeout_ms} ms"),
        ),
        HttpError::TooLarge => ConnectorError::new(
            Failed,
            format!("{what}: the response exceeded the host's size limit"),
        ),
    }
}

/// Maps an unexpected status to a connector error.
fn map_status(status: u16, body: &[u8], what: &str, expected: &str) -> ConnectorError {
    let text = excerpt(body);
    match status {
        429 | 500..=599 => {
            ConnectorError::new(ErrorKind::Transient, format!("{what} -> {status}: {text}"))
        }
        401 | 403 => ConnectorError::new(
            ErrorKind::Denied,
            format!(
                "{what} -> {status}: the target refused the request (check the secret and its permissions): {text}"
            ),
        ),
        300..=399 => ConnectorError::new(
            ErrorKind::Failed,
            format!(
                "{what} -> {status}, expected {expected} (redirects are not followed: configure the final URL): {text}"
            ),
        ),
        _ => ConnectorError::new(
            ErrorKind::Failed,
            format!("{what} -> {status}, expected {expected}: {text}"),
        ),
    }
}

fn expected_text(call: &Call, gone: bool) -> String {
    let mut list: Vec<String> = match &call.expect_status {
        Some(l) => l.iter().map(u16::to_string).collect(),
        None => vec!["2xx".to_owned()],
    };
    if gone {
        list.extend(call.gone_status.iter().map(u16::to_string));
    }
    list.join(", ")
}

/// `grant`: call the grant endpoint.
pub fn grant(
    host: &mut dyn Host,
    request: &AccessRequest,
    settings: &str,
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<Granted, ConnectorError> {
    let settings = load(settings)?;
    let vars = Vars {
        expires_at_ms: Some(expires_at_ms),
        ..base_vars(request, now_ms)
    };
    let req = render(&settings.grant, &vars, settings.timeout_ms, "grant")?;
    let what = format!("{} {}", req.method.as_str(), req.url);
    let resp = host
        .send(req)
        .map_err(|e| map_http_error(e, &what, settings.timeout_ms))?;
    if !settings.grant.succeeded(resp.status) {
        return Err(map_status(
            resp.status,
            &resp.body,
            &what,
            &expected_text(&settings.grant, false),
        ));
    }
    let response = if resp.body.len() > MAX_STORED_RESPONSE {
        host.warn(&format!(
            "{what} -> {}: the response is {} bytes, more than the {MAX_STORED_RESPONSE} kept in the grant's handle; \
             it is not stored and revoke sees no grant.response values",
            resp.status,
            resp.body.len()
        ));
        Value::Null
    } else {
        serde_json::from_slice(&resp.body).unwrap_or(Value::Null)
    };
    Ok(Granted {
        handle: json!({ "status": resp.status, "response": response }).to_string(),
        summary: format!("{what} -> {}", resp.status),
    })
}

/// `revoke`: call the revoke endpoint. Success, or a "gone" status, is `Ok`.
pub fn revoke(
    host: &mut dyn Host,
    request: &AccessRequest,
    settings: &str,
    handle: &str,
    reason: RevokeReason,
    now_ms: i64,
) -> Result<(), ConnectorError> {
    let settings = load(settings)?;
    let stored: Value = serde_json::from_str(handle).map_err(|e| {
        ConnectorError::new(
            ErrorKind::Failed,
            format!("revoke: the grant's stored handle is not JSON ({e})"),
        )
    })?;
    let vars = Vars {
        reason: Some(reason.as_str()),
        grant_status: stored
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok()),
        grant_response: stored.get("response").cloned().unwrap_or(Value::Null),
        ..base_vars(request, now_ms)
    };
    let call = &settings.revoke;
    let req = render(call, &vars, settings.timeout_ms, "revoke")?;
    let what = format!("{} {}", req.method.as_str(), req.url);
    let resp = host
        .send(req)
        .map_err(|e| map_http_error(e, &what, settings.timeout_ms))?;
    if call.succeeded(resp.status) || call.gone_status.contains(&resp.status) {
        return Ok(());
    }
    Err(map_status(
        resp.status,
        &resp.body,
        &what,
        &expected_text(call, true),
    ))
}

/// `credentials`: this connector has none.
pub fn credentials() -> ConnectorError {
    ConnectorError::new(ErrorKind::Unsupported, NO_CREDENTIALS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that records requests and answers from a script.
    struct FakeHost {
        answers: Vec<Result<InResponse, HttpError>>,
        sent: Vec<OutRequest>,
        warnings: Vec<String>,
    }

    impl FakeHost {
        fn answering(answer: Result<InResponse, HttpError>) -> Self {
            FakeHost {
                answers: vec![answer],
                sent: Vec::new(),
                warnings: Vec::new(),
            }
        }
        fn status(status: u16, body: &str) -> Self {
            Self::answering(Ok(InResponse {
                status,
                body: body.as_bytes().to_vec(),
            }))
        }
    }

    impl Host for FakeHost {
        fn send(&mut self, req: OutRequest) -> Result<InResponse, HttpError> {
            self.sent.push(req);
            assert!(!self.answers.is_empty(), "unexpected request");
            self.answers.remove(0)
        }
        fn warn(&mut self, message: &str) {
            self.warnings.push(message.to_owned());
        }
    }

    const SETTINGS: &str = r#"{
        "grant": {
            "method": "POST",
            "url": "https://target.internal/grants",
            "headers": { "content-type": "application/json", "authorization": { "secret": "target_token" }, "x-requester": "{{requester.display_name}}" },
            "body": { "user": "{{requester.id}}", "role": "{{request.entitlement}}", "until": "{{expires_at}}", "seconds": "{{request.duration_seconds}}", "why": "{{request.justification}}" },
            "expect_status": [200, 201]
        },
        "revoke": {
            "method": "DELETE",
            "url": "https://target.internal/grants/{{grant.response.id}}?reason={{reason}}",
            "headers": { "authorization": { "secret": "target_token" } },
            "gone_status": [404, 410]
        },
        "timeout_ms": 5000
    }"#;

    const EXPIRES: i64 = 1_795_341_600_000;
    const NOW: i64 = 1_795_338_000_000;

    fn request() -> AccessRequest {
        AccessRequest {
            id: "req-1".into(),
            entitlement: "db/prod/admin".into(),
            duration_seconds: 3600,
            justification: "fix \"INC-7\"".into(),
            ticket: None,
            requester_id: "alice".into(),
            requester_email: Some("alice@example.com".into()),
            requester_display_name: None,
        }
    }

    fn do_grant(host: &mut FakeHost) -> Result<Granted, ConnectorError> {
        grant(host, &request(), SETTINGS, EXPIRES, NOW)
    }

    fn do_revoke(host: &mut FakeHost, handle: &str) -> Result<(), ConnectorError> {
        revoke(
            host,
            &request(),
            SETTINGS,
            handle,
            RevokeReason::Expired,
            NOW,
        )
    }

    #[test]
    fn grant_sends_the_rendered_request_and_keeps_the_response() {
        let mut host = FakeHost::status(201, r#"{"id": "g/42", "ok": true}"#);
        let granted = do_grant(&mut host).expect("granted");
        assert_eq!(
            granted.summary,
            "POST https://target.internal/grants -> 201"
        );
        let handle: Value = serde_json::from_str(&granted.handle).expect("handle is JSON");
        assert_eq!(
            handle,
            json!({"status": 201, "response": {"id": "g/42", "ok": true}})
        );

        let sent = &host.sent[0];
        assert_eq!(sent.method, Method::Post);
        assert_eq!(sent.timeout_ms, 5000);
        assert!(sent.headers.contains(&(
            "authorization".into(),
            HeaderValue::Secret("target_token".into())
        )));
        assert!(
            sent.headers
                .contains(&("x-requester".into(), HeaderValue::Text("alice".into()))),
            "display name falls back to the id"
        );
        assert_eq!(
            sent.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                .count(),
            1
        );
        let body: Value =
            serde_json::from_slice(sent.body.as_deref().unwrap_or_default()).expect("body is JSON");
        assert_eq!(
            body,
            json!({"user": "alice", "role": "db/prod/admin", "until": "2026-11-22T10:00:00Z", "seconds": 3600, "why": "fix \"INC-7\""})
        );
    }

    #[test]
    fn grant_adds_a_content_type_for_bodies() {
        let settings = r#"{"grant": {"url": "https://t.example/g", "body": {"a": "{{now}}"}}, "revoke": {"url": "https://t.example/g"}}"#;
        let mut host = FakeHost::status(204, "");
        let granted = grant(&mut host, &request(), settings, EXPIRES, NOW).expect("granted");
        assert_eq!(granted.handle, r#"{"response":null,"status":204}"#);
        assert!(host.sent[0].headers.contains(&(
            "content-type".into(),
            HeaderValue::Text("application/json".into())
        )));
        assert_eq!(host.sent[0].timeout_ms, settings::DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn grant_keeps_non_json_and_huge_responses_out_of_the_handle() {
        let mut host = FakeHost::status(200, "<html>ok</html>");
        let granted = do_grant(&mut host).expect("granted");
        assert_eq!(granted.handle, r#"{"response":null,"status":200}"#);
        assert!(host.warnings.is_empty());

        let big = format!(
            r#"{{"id": "x", "pad": "{}"}}"#,
            "a".repeat(MAX_STORED_RESPONSE)
        );
        let mut host = FakeHost::status(200, &big);
        let granted = do_grant(&mut host).expect("granted");
        assert_eq!(granted.handle, r#"{"response":null,"status":200}"#);
        assert_eq!(host.warnings.len(), 1);
        assert!(host.warnings[0].contains("not stored"));
    }

    #[test]
    fn grant_status_mapping() {
        let cases: &[(u16, ErrorKind)] = &[
            (202, ErrorKind::Failed), // 2xx but not in expect_status
            (400, ErrorKind::Failed),
            (404, ErrorKind::Failed),
            (302, ErrorKind::Failed),
            (401, ErrorKind::Denied),
            (403, ErrorKind::Denied),
            (429, ErrorKind::Transient),
            (500, ErrorKind::Transient),
            (503, ErrorKind::Transient),
        ];
        for &(status, kind) in cases {
            let mut host = FakeHost::status(status, "nope");
            let e = do_grant(&mut host).unwrap_err();
            assert_eq!(e.kind, kind, "status {status}: {e:?}");
            assert!(
                e.message
                    .contains(&format!("POST https://target.internal/grants -> {status}")),
                "{e:?}"
            );
            assert!(e.message.contains("nope"), "{e:?}");
        }
        let mut host = FakeHost::status(200, "");
        assert!(do_grant(&mut host).is_ok());
    }

    #[test]
    fn error_bodies_are_quoted_briefly() {
        let mut host = FakeHost::status(400, &format!("line one\nline two {}", "z".repeat(500)));
        let e = do_grant(&mut host).unwrap_err();
        assert!(e.message.contains("expected 200, 201"), "{e:?}");
        assert!(e.message.contains("line one line two"), "{e:?}");
        assert!(e.message.ends_with('…'));
        let quoted = e.message.split(": ").last().unwrap_or_default();
        assert_eq!(quoted.chars().count(), 201);
        let mut host = FakeHost::status(422, "");
        assert!(
            do_grant(&mut host)
                .unwrap_err()
                .message
                .ends_with("(empty body)")
        );
    }

    #[test]
    fn http_error_mapping() {
        let cases = [
            (
                HttpError::NotAllowed("origin".into()),
                ErrorKind::Failed,
                "operator configuration",
            ),
            (
                HttpError::InvalidRequest("bad".into()),
                ErrorKind::Failed,
                "operator configuration",
            ),
            (
                HttpError::CapabilityNotAvailable("none".into()),
                ErrorKind::Failed,
                "operator configuration",
            ),
            (
                HttpError::Unreachable("dns".into()),
                ErrorKind::Transient,
                "unreachable: dns",
            ),
            (HttpError::Timeout, ErrorKind::Transient, "within 5000 ms"),
            (HttpError::TooLarge, ErrorKind::Failed, "size limit"),
        ];
        for (err, kind, text) in cases {
            let mut host = FakeHost::answering(Err(err.clone()));
            let e = do_grant(&mut host).unwrap_err();
            assert_eq!(e.kind, kind, "{err:?}: {e:?}");
            assert!(e.message.contains(text), "{err:?}: {e:?}");
            let mut host = FakeHost::answering(Err(err.clone()));
            let e = do_revoke(&mut host, r#"{"status": 201, "response": {"id": 1}}"#).unwrap_err();
            assert_eq!(e.kind, kind, "{err:?}: {e:?}");
        }
    }

    #[test]
    fn invalid_settings_at_call_time() {
        let mut host = FakeHost {
            answers: Vec::new(),
            sent: Vec::new(),
            warnings: Vec::new(),
        };
        let e = grant(
            &mut host,
            &request(),
            r#"{"grant": {"url": "https://t/{{nope}}"}}"#,
            EXPIRES,
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidSettings);
        assert!(
            e.message.contains("grant.url: unknown variable `{{nope}}`"),
            "{e:?}"
        );
        assert!(e.message.contains("revoke: required"), "{e:?}");
        assert!(host.sent.is_empty());
    }

    #[test]
    fn grant_refuses_line_breaks_in_headers() {
        let settings = r#"{"grant": {"url": "https://t.example/g", "headers": {"x-why": "{{request.justification}}"}}, "revoke": {"url": "https://t.example/g"}}"#;
        let mut host = FakeHost {
            answers: Vec::new(),
            sent: Vec::new(),
            warnings: Vec::new(),
        };
        let req = AccessRequest {
            justification: "a\r\nX-Admin: yes".into(),
            ..request()
        };
        let e = grant(&mut host, &req, settings, EXPIRES, NOW).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failed);
        assert!(e.message.contains("header `x-why`"), "{e:?}");
        assert!(host.sent.is_empty(), "nothing is sent");
    }

    #[test]
    fn revoke_uses_the_stored_response() {
        let mut host = FakeHost::status(204, "");
        do_revoke(&mut host, r#"{"status": 201, "response": {"id": "g/42"}}"#).expect("revoked");
        let sent = &host.sent[0];
        assert_eq!(sent.method, Method::Delete);
        assert_eq!(
            sent.url,
            "https://target.internal/grants/g%2F42?reason=expired"
        );
        assert_eq!(sent.body, None);
        assert_eq!(
            sent.headers,
            vec![(
                "authorization".into(),
                HeaderValue::Secret("target_token".into())
            )]
        );
    }

    #[test]
    fn revoke_of_what_is_gone_succeeds() {
        for status in [200, 202, 204, 404, 410] {
            let mut host = FakeHost::status(status, "");
            assert_eq!(
                do_revoke(&mut host, r#"{"status": 201, "response": {"id": 7}}"#),
                Ok(()),
                "status {status}"
            );
        }
        for (status, kind) in [
            (400, ErrorKind::Failed),
            (409, ErrorKind::Failed),
            (401, ErrorKind::Denied),
            (403, ErrorKind::Denied),
            (429, ErrorKind::Transient),
            (502, ErrorKind::Transient),
        ] {
            let mut host = FakeHost::status(status, "x");
            let e = do_revoke(&mut host, r#"{"status": 201, "response": {"id": 7}}"#).unwrap_err();
            assert_eq!(e.kind, kind, "status {status}");
            if kind == ErrorKind::Failed {
                assert!(e.message.contains("expected 2xx, 404, 410"), "{e:?}");
            }
        }
    }

    #[test]
    fn revoke_without_a_stored_response() {
        // A rollback of a grant that returned nothing: the URL needs grant.response.id.
        let mut host = FakeHost {
            answers: Vec::new(),
            sent: Vec::new(),
            warnings: Vec::new(),
        };
        let e = revoke(
            &mut host,
            &request(),
            SETTINGS,
            "{}",
            RevokeReason::Rollback,
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failed);
        assert!(
            e.message.contains("grant.response.id") && e.message.contains("nothing was sent"),
            "{e:?}"
        );
        assert!(host.sent.is_empty());

        // A revoke that does not need the response works from `{}`; grant.* are empty.
        let settings = r#"{"grant": {"url": "https://t.example/g"},
                           "revoke": {"method": "POST", "url": "https://t.example/revoke/{{request.id}}",
                                      "body": {"s": "{{grant.status}}", "id": "id={{grant.response.id}}", "why": "{{reason}}"}}}"#;
        let mut host = FakeHost::status(200, "");
        revoke(
            &mut host,
            &request(),
            settings,
            "{}",
            RevokeReason::Rollback,
            NOW,
        )
        .expect("revoked");
        assert_eq!(host.sent[0].url, "https://t.example/revoke/req-1");
        let body: Value =
            serde_json::from_slice(host.sent[0].body.as_deref().unwrap_or_default()).expect("JSON");
        assert_eq!(body, json!({"s": null, "id": "id=", "why": "rollback"}));

        let mut host = FakeHost {
            answers: Vec::new(),
            sent: Vec::new(),
            warnings: Vec::new(),
        };
        let e = revoke(
            &mut host,
            &request(),
            settings,
            "not json",
            RevokeReason::Revoked,
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failed);
    }

    #[test]
    fn handles_round_trip_from_grant_to_revoke() {
        let mut host = FakeHost::status(201, r#"{"id": 99}"#);
        let granted = do_grant(&mut host).expect("granted");
        let mut host = FakeHost::status(404, "");
        do_revoke(&mut host, &granted.handle).expect("gone is fine");
        assert_eq!(
            host.sent[0].url,
            "https://target.internal/grants/99?reason=expired"
        );
    }

    #[test]
    fn credentials_are_unsupported() {
        let e = credentials();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert_eq!(e.message, NO_CREDENTIALS);
    }

    #[test]
    fn validate_reports_paths() {
        assert_eq!(validate(SETTINGS), Ok(()));
        let errs = validate(r#"{"grant": {"url": "https://t/x", "method": "GETT"}, "revoke": {"url": "https://t/{{grant.response.id}}", "headers": {"authorization": {"secret": 1}}}}"#).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["grant.method", "revoke.headers.authorization.secret"]
        );
    }
}
