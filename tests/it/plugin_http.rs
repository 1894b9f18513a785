//! The built-in `http` connector against a real HTTP server on a random loopback port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};
use axum::{Json, Router};
use sallyport::plugin::{
    ConnectorError, ConnectorFailure, CredentialsRequest, GrantRequest, RevokeReason, RevokeRequest,
};
use sallyport::secret::{Secret, SecretStore};
use serde_json::{Value, json};

use crate::support::*;

const TOKEN: &str = "s3cret-token-value";

#[derive(Default)]
struct Target {
    /// Active grants by id.
    grants: HashMap<String, Value>,
    /// Every request seen: (method, path, authorization header).
    seen: Vec<(String, String, Option<String>)>,
    next: u32,
}

type Shared = Arc<Mutex<Target>>;

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn create(
    State(t): State<Shared>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut t = t.lock().expect("lock");
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    t.seen.push(("POST".into(), "/grants".into(), auth));
    if !authorized(&h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad token"})),
        );
    }
    t.next += 1;
    let id = format!("g-{}", t.next);
    t.grants.insert(id.clone(), body);
    (StatusCode::CREATED, Json(json!({"id": id})))
}

async fn remove(State(t): State<Shared>, h: HeaderMap, Path(id): Path<String>) -> StatusCode {
    let mut t = t.lock().expect("lock");
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    t.seen
        .push(("DELETE".into(), format!("/grants/{id}"), auth));
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED;
    }
    match t.grants.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }
}

async fn spawn_target() -> (SocketAddr, Shared) {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/grants", post(create))
        .route("/grants/{id}", delete(remove))
        .route(
            "/fail",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/forbidden", post(|| async { StatusCode::FORBIDDEN }))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, shared)
}

fn settings(base: &str) -> String {
    json!({
        "grant": {
            "method": "POST",
            "url": format!("{base}/grants"),
            "headers": {"authorization": {"secret": "target_token"}},
            "body": {
                "user": "{{requester.id}}",
                "role": "{{request.entitlement}}",
                "until": "{{expires_at}}",
                "seconds": "{{request.duration_seconds}}",
                "why": "{{request.justification}}"
            },
            "expect_status": [201]
        },
        "revoke": {
            "method": "DELETE",
            "url": format!("{base}/grants/{{{{grant.response.id}}}}"),
            "headers": {"authorization": {"secret": "target_token"}}
        },
        "timeout_ms": 5000
    })
    .to_string()
}

fn secrets() -> SecretStore {
    let mut s = SecretStore::new();
    s.insert("target_token", Secret::new(format!("Bearer {TOKEN}")));
    s
}

fn caps(addr: SocketAddr) -> String {
    format!(
        "[http]\nallow = [\"http://127.0.0.1:{}\"]\nsecrets = [\"target_token\"]\n",
        addr.port()
    )
}

fn grant_request(settings: String) -> GrantRequest {
    GrantRequest {
        // A justification that would break naive JSON templating.
        request: access_request(principal("alice", &[]), 3600, "fix \"prod\" {now}\n\\"),
        settings,
        expires_at: MONDAY_10_UTC + 3_600_000,
        now: MONDAY_10_UTC,
    }
}

#[tokio::test]
async fn grant_then_revoke_is_idempotent() {
    let (addr, target) = spawn_target().await;
    let host = host();
    let p = builtin(&host, "http", Some(&caps(addr)), &secrets());
    let base = format!("http://127.0.0.1:{}", addr.port());
    let s = settings(&base);
    p.validate(&s).await.expect("settings valid");

    let granted = p.grant(&grant_request(s.clone())).await.expect("granted");
    assert_eq!(granted.handle["status"], 201);
    assert_eq!(granted.handle["response"]["id"], "g-1");
    assert!(granted.summary.contains("201"), "{}", granted.summary);
    assert!(
        !granted.handle.to_string().contains(TOKEN),
        "the secret never reaches the handle"
    );
    {
        let t = target.lock().expect("lock");
        let body = &t.grants["g-1"];
        assert_eq!(body["user"], "alice");
        assert_eq!(body["role"], "aws/prod/admin");
        assert_eq!(body["until"], "2026-11-23T11:00:00Z");
        assert_eq!(body["seconds"], 3600, "numeric placeholder stays a number");
        assert_eq!(
            body["why"], "fix \"prod\" {now}\n\\",
            "hostile text stays inert"
        );
        assert_eq!(
            t.seen[0].2.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }

    let revoke = RevokeRequest {
        request: grant_request(s.clone()).request,
        settings: s.clone(),
        handle: granted.handle.to_string(),
        reason: RevokeReason::Expired,
        now: MONDAY_10_UTC + 3_600_000,
    };
    p.revoke(&revoke).await.expect("revoked");
    assert!(target.lock().expect("lock").grants.is_empty());
    // A second revoke (a retry after a crash) finds it gone: still a success.
    p.revoke(&revoke).await.expect("revoking twice is fine");
    let seen: Vec<_> = target
        .lock()
        .expect("lock")
        .seen
        .iter()
        .map(|(m, path, _)| format!("{m} {path}"))
        .collect();
    assert_eq!(
        seen,
        ["POST /grants", "DELETE /grants/g-1", "DELETE /grants/g-1"]
    );

    // The http connector hands out no credentials.
    let creds = p
        .credentials(&CredentialsRequest {
            request: revoke.request.clone(),
            settings: s,
            handle: granted.handle.to_string(),
            expires_at: MONDAY_10_UTC + 3_600_000,
            now: MONDAY_10_UTC,
        })
        .await;
    assert!(
        matches!(
            creds,
            Err(ConnectorFailure::Connector {
                error: ConnectorError::Unsupported(_),
                ..
            })
        ),
        "{creds:?}"
    );
}

#[tokio::test]
async fn origin_not_on_allow_list_is_refused_and_never_called() {
    let (addr, target) = spawn_target().await;
    let host = host();
    // Allowed: a different port only.
    let p = builtin(
        &host,
        "http",
        Some("[http]\nallow = [\"http://127.0.0.1:1\"]\nsecrets = [\"target_token\"]\n"),
        &secrets(),
    );
    let s = settings(&format!("http://127.0.0.1:{}", addr.port()));
    match p.grant(&grant_request(s.clone())).await {
        Err(ConnectorFailure::Connector {
            error: ConnectorError::Failed(msg),
            ..
        }) => assert!(msg.contains("allow-list"), "{msg}"),
        other => panic!("expected failed, got {other:?}"),
    }
    // `localhost` is a different origin from 127.0.0.1 as far as the allow-list goes.
    let p = builtin(&host, "http", Some(&caps(addr)), &secrets());
    let s = settings(&format!("http://localhost:{}", addr.port()));
    assert!(p.grant(&grant_request(s)).await.is_err());
    assert!(
        target.lock().expect("lock").seen.is_empty(),
        "nothing reached the target"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_transient() {
    // Take a free port and close it again: nobody listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let host = host();
    let p = builtin(
        &host,
        "http",
        Some(&format!(
            "[http]\nallow = [\"http://127.0.0.1:{port}\"]\nsecrets = [\"target_token\"]\n"
        )),
        &secrets(),
    );
    let s = settings(&format!("http://127.0.0.1:{port}"));
    match p.grant(&grant_request(s)).await {
        Err(
            f @ ConnectorFailure::Connector {
                error: ConnectorError::Transient(_),
                ..
            },
        ) => assert!(f.is_transient()),
        other => panic!("expected transient, got {other:?}"),
    }
}

#[tokio::test]
async fn secret_not_granted_is_refused() {
    let (addr, target) = spawn_target().await;
    let host = host();
    // The origin is allowed but the secret is not in the manifest's list.
    let p = builtin(
        &host,
        "http",
        Some(&format!(
            "[http]\nallow = [\"http://127.0.0.1:{}\"]\n",
            addr.port()
        )),
        &secrets(),
    );
    let s = settings(&format!("http://127.0.0.1:{}", addr.port()));
    match p.grant(&grant_request(s)).await {
        Err(ConnectorFailure::Connector {
            error: ConnectorError::Failed(msg),
            ..
        }) => assert!(msg.contains("target_token"), "{msg}"),
        other => panic!("expected failed, got {other:?}"),
    }
    assert!(target.lock().expect("lock").seen.is_empty());
}

#[tokio::test]
async fn status_codes_map_to_errors() {
    let (addr, _target) = spawn_target().await;
    let host = host();
    let p = builtin(&host, "http", Some(&caps(addr)), &secrets());
    let base = format!("http://127.0.0.1:{}", addr.port());
    let with_path = |path: &str| {
        let mut v: Value = serde_json::from_str(&settings(&base)).expect("json");
        v["grant"]["url"] = json!(format!("{base}{path}"));
        v.to_string()
    };
    match p.grant(&grant_request(with_path("/fail"))).await {
        Err(ConnectorFailure::Connector {
            error: ConnectorError::Transient(msg),
            ..
        }) => assert!(msg.contains("500"), "{msg}"),
        other => panic!("expected transient, got {other:?}"),
    }
    match p.grant(&grant_request(with_path("/forbidden"))).await {
        Err(ConnectorFailure::Connector {
            error: ConnectorError::Denied(msg),
            ..
        }) => assert!(msg.contains("403"), "{msg}"),
        other => panic!("expected denied, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_settings_are_reported_with_paths() {
    let host = host();
    let p = builtin(&host, "http", None, &SecretStore::new());
    let bad = json!({
        "grant": {"method": "FETCH", "url": "not a url"},
        "revoke": {"url": "https://x/{{nope}}"},
        "extra": 1
    })
    .to_string();
    match p.validate(&bad).await {
        Err(sallyport::plugin::ValidateFailure::Invalid(errs)) => {
            let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
            assert!(paths.contains(&"grant.method"), "{paths:?}");
            assert!(paths.contains(&"grant.url"), "{paths:?}");
            assert!(
                paths.iter().any(|p| p.starts_with("revoke.url")),
                "{paths:?}"
            );
            assert!(paths.iter().any(|p| p.contains("extra")), "{errs:?}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}
