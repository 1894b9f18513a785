//! Action approvals end to end: a pipeline authenticates with a workload token signed by a real
//! local OpenID provider (npm oidc-provider, client-credentials JWTs checked against its JWKS),
//! asks through the real CLI, an eligible reviewer approves, and the attestation is verified by
//! an independent verifier (the `jsonwebtoken` crate) against the served JWKS, then consumed
//! once. Refusals change nothing.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::browser_harness::OidcProvider;
use crate::db_or_skip;
use crate::harness::{Backend, Server};

const BIN: &str = env!("CARGO_BIN_EXE_sallyport");
const AUDIENCE: &str = "https://sallyport.test";
const MAIN: &str = "repo:acme/app:ref:refs/heads/main";
const FEATURE: &str = "repo:acme/app:ref:refs/heads/feature";
const T: Duration = Duration::from_secs(30);

fn config(db: &str, issuer: &str, keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[database]
url = "{db}"

[auth]
admin_users = ["root"]

[attestation]
signing_keys = [{keys}]

[[users]]
id = "alice"
groups = ["eng"]
[[users]]
id = "bob"
groups = ["eng", "leads"]
[[users]]
id = "eve"
groups = ["sales"]
[[users]]
id = "root"
groups = []

[[actions]]
name = "deploy/production"
description = "deploy one version of one service"
validity = "15m"
pending_ttl = "1h"
requester_groups = ["eng"]
[[actions.pipelines]]
issuer = "{issuer}"
audience = "{AUDIENCE}"
subject = "{MAIN}"
[actions.parameters.service]
type = "string"
required = true
pattern = "[a-z][a-z0-9-]*"
[actions.parameters.version]
type = "string"
required = true
pattern = 'v[0-9]+\.[0-9]+\.[0-9]+'
[actions.parameters.replicas]
type = "integer"
[actions.approval]
plugin = "quorum"
[actions.approval.settings]
stages = [{{ name = "lead", groups = ["leads"], count = 1 }}]

[[actions]]
name = "db/migrate"
description = "auto-approved for engineers, valid for 2 seconds"
validity = "2s"
requester_groups = ["eng"]
[actions.parameters.migration]
type = "integer"
required = true
[actions.approval]
plugin = "quorum"
[actions.approval.settings]
auto_approve = [{{ name = "eng", requester_groups = ["eng"] }}]
"#,
        keys = keys.join(", ")
    )
}

fn keygen(dir: &Path, name: &str) {
    let out = std::process::Command::new(BIN)
        .args(["attestation", "keygen", "--out"])
        .arg(dir.join(name))
        .output()
        .expect("keygen runs");
    assert!(out.status.success(), "{out:?}");
}

async fn jwks(s: &Server) -> JwkSet {
    let res = s
        .http
        .get(format!("{}/.well-known/jwks.json", s.url()))
        .send()
        .await
        .expect("jwks");
    assert_eq!(res.status(), 200);
    res.json().await.expect("a JWK set")
}

/// The independent check: `jsonwebtoken` against the served JWKS.
async fn verify(
    s: &Server,
    token: &str,
    aud: &str,
    leeway: u64,
) -> jsonwebtoken::errors::Result<Value> {
    let set = jwks(s).await;
    let header = jsonwebtoken::decode_header(token)?;
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("kid");
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} is not published"));
    let key = DecodingKey::from_jwk(jwk)?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[s.url().trim_end_matches('/')]);
    v.set_audience(&[aud]);
    v.leeway = leeway;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub", "jti"]);
    Ok(jsonwebtoken::decode::<Value>(token, &key, &v)?.claims)
}

async fn raw(
    s: &Server,
    bearer: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = s.http.request(method, format!("{}{path}", s.url()));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn consume(s: &Server, id: &str, body: Value) -> (u16, Value) {
    raw(
        s,
        None,
        reqwest::Method::POST,
        &format!("/api/v1/actions/{id}/consume"),
        Some(body),
    )
    .await
}

async fn all_requests(s: &Server) -> Vec<Value> {
    let (st, v) = s.get("root", "/api/v1/requests?scope=all&limit=100").await;
    assert_eq!(st, 200, "{v}");
    v["requests"].as_array().cloned().unwrap_or_default()
}

fn cli(s: &Server, home: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.arg("--server")
        .arg(s.url())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env_remove("SALLYPORT_TOKEN")
        .env_remove("SALLYPORT_ID_TOKEN")
        .env_remove("SALLYPORT_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// The first pending action request, polled (bounded).
async fn pending_action(s: &Server, kind: &str) -> String {
    let start = Instant::now();
    loop {
        if let Some(r) = all_requests(s)
            .await
            .into_iter()
            .find(|r| r["entitlement"] == kind && r["state"] == "pending")
        {
            return r["id"].as_str().expect("id").to_owned();
        }
        assert!(start.elapsed() < T, "no pending {kind} request appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pipeline_flow_on(backend: Backend) {
    let Some(oidc) = OidcProvider::with_workloads(&[MAIN, FEATURE], AUDIENCE).await else {
        return;
    };
    let db = db_or_skip!(backend);
    let dir = tempfile::tempdir().expect("tmp");
    keygen(dir.path(), "key-a.pem");
    let s = Server::start_in(&config(&db.url, &oidc.issuer, &["key-a.pem"]), dir.path()).await;
    let token = oidc.workload_token(MAIN).await;

    // The pipeline asks through the CLI and waits.
    let child = cli(&s, dir.path())
        .args([
            "action",
            "request",
            "deploy/production",
            "--param",
            "service=api",
            "--param",
            "version=v1.4.2",
            "--param",
            "replicas=3",
            "--reason",
            "release 1.4.2",
            "--wait",
            "--timeout",
            "60s",
        ])
        .env("SALLYPORT_ID_TOKEN", &token)
        .spawn()
        .expect("cli runs");
    let id = pending_action(&s, "deploy/production").await;
    let (st, v) = s.get("root", &format!("/api/v1/requests/{id}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["requester"]["id"], format!("pipeline:127.0.0.1:{MAIN}"));
    assert_eq!(
        v["action"]["parameters"],
        json!({ "replicas": 3, "service": "api", "version": "v1.4.2" })
    );
    assert_eq!(v["action"]["workload"]["issuer"], oidc.issuer.as_str());

    // Only eligible reviewers count: alice is no lead (she does not even see it).
    let (st, v) = s.approve("alice", &id).await;
    assert!(st == 403 || st == 404, "{v}");
    assert_eq!(s.state(&id).await["state"], "pending");
    let (st, v) = s.approve("bob", &id).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("active")), "{v}");

    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("the CLI finishes")
        .expect("cli output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("waiting for approval of deploy/production"),
        "{stderr}"
    );
    assert!(stderr.contains("approved: deploy/production"), "{stderr}");
    assert!(
        stderr.lines().all(|l| !l.contains('\r')),
        "one line at a time: {stderr}"
    );
    let attestation = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();

    // Verified independently against the published keys.
    let claims = verify(&s, &attestation, "deploy/production", 0)
        .await
        .expect("a valid attestation");
    let canonical = r#"{"replicas":3,"service":"api","version":"v1.4.2"}"#;
    let digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    assert_eq!(claims["params_digest"], digest.as_str());
    assert_eq!(claims["action"], "deploy/production");
    assert_eq!(claims["jti"], id.as_str());
    assert_eq!(claims["sub"], format!("pipeline:127.0.0.1:{MAIN}"));
    assert_eq!(claims["requester"]["kind"], "pipeline");
    assert_eq!(claims["requester"]["subject"], MAIN);
    assert_eq!(claims["approvers"], json!(["bob"]));
    let ttl = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert!((899..=900).contains(&ttl), "valid for 15 min: {ttl}");
    // For the wrong action it does not verify.
    assert!(verify(&s, &attestation, "db/migrate", 0).await.is_err());

    let approved = json!({ "service": "api", "version": "v1.4.2", "replicas": 3 });
    // Other parameters than approved: refused, nothing changes.
    let (st, v) = consume(&s, &id, json!({ "attestation": attestation, "parameters": { "service": "api", "version": "v1.4.3", "replicas": 3 } })).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("digest_mismatch")),
        "{v}"
    );
    assert_eq!(s.state(&id).await["state"], "active");
    // A forged attestation (another payload under the real signature) is refused.
    let mut parts: Vec<&str> = attestation.split('.').collect();
    let other = base64_url(
        &json!({ "jti": id, "params_digest": digest, "exp": 4_000_000_000_i64 }).to_string(),
    );
    parts[1] = &other;
    let (st, v) = consume(
        &s,
        &id,
        json!({ "attestation": parts.join("."), "parameters": approved }),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );

    // Consumed once, with the parameters about to run (strings as the CLI sends them work).
    let (st, v) = consume(&s, &id, json!({ "attestation": attestation, "parameters": { "service": "api", "version": "v1.4.2", "replicas": "3" } })).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("ended")), "{v}");
    let (st, v) = consume(
        &s,
        &id,
        json!({ "attestation": attestation, "parameters": approved }),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("already_consumed")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("already consumed"),
        "{v}"
    );
    // Parameters are required: nobody consumes blind.
    let (st, _) = consume(&s, &id, json!({ "attestation": attestation })).await;
    assert_eq!(st, 400);

    // Everything is in the audit chain.
    let (st, v) = s.get("root", &format!("/api/v1/audit?subject={id}")).await;
    assert_eq!(st, 200, "{v}");
    let actions: Vec<&str> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in [
        "action.requested",
        "review.approved",
        "request.approved",
        "action.consumed",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let (st, v) = s.get("root", "/api/v1/audit?limit=10000").await;
    assert_eq!(st, 200);
    assert!(
        !v["events"].to_string().contains(&attestation),
        "the attestation is never stored"
    );
    s.stop().await;
    db.cleanup().await;
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

mod pipeline_flow {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        pipeline_flow_on(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        pipeline_flow_on(Backend::Postgres).await;
    }
}

/// Pipelines the policy does not name, forged tokens and schema-breaking parameters are
/// refused with a clear error, and nothing is filed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_change_nothing() {
    let Some(oidc) = OidcProvider::with_workloads(&[MAIN, FEATURE], AUDIENCE).await else {
        return;
    };
    let db = db_or_skip!(Backend::Sqlite);
    let dir = tempfile::tempdir().expect("tmp");
    keygen(dir.path(), "key-a.pem");
    let s = Server::start_in(&config(&db.url, &oidc.issuer, &["key-a.pem"]), dir.path()).await;
    let post = |token: String, body: Value| {
        let s = &s;
        async move {
            raw(
                s,
                Some(&token),
                reqwest::Method::POST,
                "/api/v1/actions",
                Some(body),
            )
            .await
        }
    };
    let good = json!({ "kind": "deploy/production", "parameters": { "service": "api", "version": "v1.0.0" }, "reason": "ship" });
    for u in ["alice", "eve", "root"] {
        s.token(u).await;
    }
    let audit_before = s.audit_count().await;

    // A pipeline whose subject the policy does not allow.
    let feature = oidc.workload_token(FEATURE).await;
    let (st, v) = post(feature, good.clone()).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let msg = v["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(FEATURE) && !msg.contains(MAIN),
        "allowed subjects stay private: {msg}"
    );

    // Forged: the real token with another subject and its original signature.
    let main = oidc.workload_token(MAIN).await;
    let parts: Vec<&str> = main.split('.').collect();
    let mut claims: Value = {
        use base64::Engine as _;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .expect("b64"),
        )
        .expect("json")
    };
    claims["exp"] = json!(claims["exp"].as_i64().unwrap_or(0) + 86_400);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64_url(&claims.to_string()),
        parts[2]
    );
    let (st, v) = post(forged, good.clone()).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap_or("").contains("signature"),
        "{v}"
    );
    // Forged: signed with a shared secret (HS256) instead of the issuer's key.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("keystore-CHANGE-ME".into()),
            ..jsonwebtoken::Header::new(Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    )
    .expect("encode");
    let (st, v) = post(hs, good.clone()).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    // Not a token of any trusted issuer at all.
    let (st, _) = post("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".into(), good.clone()).await;
    assert_eq!(st, 401);

    // Parameters that break the schema, from an allowed pipeline.
    for (params, needle) in [
        (json!({ "service": "api" }), "version"),
        (json!({ "service": "api", "version": "latest" }), "pattern"),
        (
            json!({ "service": "api", "version": "v1.0.0", "replicas": "many" }),
            "integer",
        ),
        (
            json!({ "service": "api", "version": "v1.0.0", "colour": "red" }),
            "colour",
        ),
    ] {
        let (st, v) = post(
            main.clone(),
            json!({ "kind": "deploy/production", "parameters": params, "reason": "x" }),
        )
        .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (400, Some("invalid_input")),
            "{params}: {v}"
        );
        assert!(
            v["message"].as_str().unwrap_or("").contains(needle),
            "{needle}: {v}"
        );
    }
    // A person outside the requester groups.
    let (st, v) = s.post("eve", "/api/v1/actions", good.clone()).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("not_requestable")),
        "{v}"
    );
    // An unknown kind.
    let (st, v) = s
        .post(
            "alice",
            "/api/v1/actions",
            json!({ "kind": "deploy/nowhere", "reason": "x" }),
        )
        .await;
    assert_eq!(st, 404, "{v}");

    assert!(all_requests(&s).await.is_empty(), "nothing was filed");
    assert_eq!(s.audit_count().await, audit_before, "nothing was recorded");

    // A person asks; their own review does not count.
    let (st, v) = s.post("alice", "/api/v1/actions", good.clone()).await;
    assert_eq!((st, v["state"].as_str()), (201, Some("pending")), "{v}");
    assert!(
        v["wait_token"].is_null(),
        "people poll with their own token"
    );
    let id = v["id"].as_str().expect("id").to_owned();
    let (st, v) = s.approve("alice", &id).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("self_review")), "{v}");
    // Without an attestation there is nothing to consume.
    let (st, _) = consume(&s, &id, json!({ "attestation": "x.y.z", "parameters": {} })).await;
    assert_eq!(st, 401);
    assert_eq!(s.state(&id).await["state"], "pending");

    // A pipeline's wait token reads its own request and nothing else.
    let (st, v) = post(main.clone(), good.clone()).await;
    assert_eq!(st, 201, "{v}");
    let (pid, wait) = (
        v["id"].as_str().expect("id").to_owned(),
        v["wait_token"].as_str().expect("wait token").to_owned(),
    );
    let get = |path: String| {
        let (s, wait) = (&s, wait.clone());
        async move { raw(s, Some(&wait), reqwest::Method::GET, &path, None).await }
    };
    let (st, v) = get(format!("/api/v1/actions/{pid}")).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("pending")), "{v}");
    assert!(v["attestation"].is_null());
    for path in [
        format!("/api/v1/actions/{id}"),
        "/api/v1/requests".to_owned(),
        format!("/api/v1/requests/{pid}"),
        "/api/v1/me".to_owned(),
    ] {
        let (st, v) = get(path.clone()).await;
        assert_eq!(st, 401, "{path}: {v}");
    }
    let (st, v) = raw(
        &s,
        Some(&wait),
        reqwest::Method::POST,
        &format!("/api/v1/requests/{pid}/reviews"),
        Some(json!({ "verdict": "approve" })),
    )
    .await;
    assert_eq!(st, 401, "{v}");
    assert_eq!(s.state(&pid).await["state"], "pending");
    s.stop().await;
    db.cleanup().await;
}

/// Expired attestations are refused; after a key rotation the old key stays published until
/// the tokens it signed have expired, then disappears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_key_rotation() {
    let db = db_or_skip!(Backend::Sqlite);
    let dir = tempfile::tempdir().expect("tmp");
    keygen(dir.path(), "key-a.pem");
    keygen(dir.path(), "key-b.pem");
    let issuer = "http://127.0.0.1:9";
    let s = Server::start_in(&config(&db.url, issuer, &["key-a.pem"]), dir.path()).await;
    let (st, v) = s.post("alice", "/api/v1/actions", json!({ "kind": "db/migrate", "parameters": { "migration": 42 }, "reason": "schema 42" })).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (201, Some("active")),
        "auto-approved: {v}"
    );
    let id = v["id"].as_str().expect("id").to_owned();
    let old = v["attestation"].as_str().expect("attestation").to_owned();
    let kid_a = jsonwebtoken::decode_header(&old)
        .expect("header")
        .kid
        .expect("kid");
    verify(&s, &old, "db/migrate", 0).await.expect("valid now");
    // Bob may see it but gets no attestation: only its requester does.
    let (st, v) = raw(
        &s,
        Some(&s.token("bob").await),
        reqwest::Method::GET,
        &format!("/api/v1/actions/{id}"),
        None,
    )
    .await;
    assert!(st == 404 || v["attestation"].is_null(), "{st} {v}");

    // Rotate: key B signs from now on; key A is no longer configured.
    let config = sallyport::config::Config::parse(
        &config(&db.url, issuer, &["key-b.pem"]),
        dir.path(),
        sallyport::config::ParseOptions::default(),
    )
    .expect("config");
    s.app.service.reload(config).await.expect("reload");
    let kids: Vec<String> = jwks(&s)
        .await
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert!(
        kids.contains(&kid_a) && kids.len() == 2,
        "A stays published while its token lives: {kids:?}"
    );
    verify(&s, &old, "db/migrate", 0)
        .await
        .expect("the old token still verifies");
    let (st, v) = s.post("alice", "/api/v1/actions", json!({ "kind": "db/migrate", "parameters": { "migration": 43 }, "reason": "schema 43" })).await;
    assert_eq!(st, 201, "{v}");
    let new = v["attestation"].as_str().expect("attestation").to_owned();
    let kid_b = jsonwebtoken::decode_header(&new)
        .expect("header")
        .kid
        .expect("kid");
    assert_ne!(kid_a, kid_b);

    // Both expire after 2 s: refused by the server and by the independent verifier.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (st, v) = consume(
        &s,
        &id,
        json!({ "attestation": old, "parameters": { "migration": 42 } }),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (410, Some("expired")), "{v}");
    let err = verify(&s, &new, "db/migrate", 0)
        .await
        .expect_err("expired");
    assert_eq!(
        *err.kind(),
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
    let kids: Vec<String> = jwks(&s)
        .await
        .keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect();
    assert_eq!(kids, vec![kid_b], "A is gone once its tokens expired");
    s.stop().await;
    db.cleanup().await;
}

/// `sallyport action request --wait` exit codes: 1 denied, 2 timed out, 3 other errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes() {
    let db = db_or_skip!(Backend::Sqlite);
    let dir = tempfile::tempdir().expect("tmp");
    keygen(dir.path(), "key-a.pem");
    let s = Server::start_in(
        &config(&db.url, "http://127.0.0.1:9", &["key-a.pem"]),
        dir.path(),
    )
    .await;
    let alice = s.token("alice").await;
    let args = |timeout: &str| {
        vec![
            "action".to_owned(),
            "request".into(),
            "deploy/production".into(),
            "--param".into(),
            "service=web".into(),
            "--param".into(),
            "version=v2.0.0".into(),
            "--reason".into(),
            "release 2".into(),
            "--wait".into(),
            "--timeout".into(),
            timeout.into(),
        ]
    };

    // Denied: exit 1.
    let child = cli(&s, dir.path())
        .args(args("60s"))
        .env("SALLYPORT_TOKEN", &alice)
        .spawn()
        .expect("cli");
    let id = pending_action(&s, "deploy/production").await;
    let (st, v) = s
        .post(
            "bob",
            &format!("/api/v1/requests/{id}/reviews"),
            json!({ "verdict": "deny", "comment": "not today" }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("finishes")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("denied"), "{stderr}");
    assert!(out.stdout.is_empty(), "no attestation on denial");

    // Nobody decides in time: exit 2.
    let out = cli(&s, dir.path())
        .args(args("2s"))
        .env("SALLYPORT_TOKEN", &alice)
        .output()
        .await
        .expect("cli");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");

    // Anything else: exit 3 with a clear message.
    let mut bad = args("5s");
    bad[4] = "service=Not Valid".into();
    let out = cli(&s, dir.path())
        .args(&bad)
        .env("SALLYPORT_TOKEN", &alice)
        .output()
        .await
        .expect("cli");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("service"), "{stderr}");
    let out = cli(&s, dir.path())
        .args(["action", "request", "nope/x", "--reason", "r"])
        .env("SALLYPORT_TOKEN", &alice)
        .output()
        .await
        .expect("cli");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no action kind"));
    s.stop().await;
    db.cleanup().await;
}
