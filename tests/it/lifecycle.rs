//! The access lifecycle end to end: a real server on port 0, a real database (SQLite, and
//! PostgreSQL when available), the real `quorum` and `http` plugins, and a real local target.

use std::time::Duration;

use serde_json::{Value, json};

use crate::db_or_skip;
use crate::harness::{Backend, PolicyOptions, Server, Target, eventually, policy};

const T: Duration = Duration::from_secs(20);

/// Run a test body on both backends.
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body(Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body(Backend::Postgres).await;
            }
        }
    };
}

both!(full_lifecycle, full_lifecycle_on);
both!(outcomes, outcomes_on);
both!(concurrent_approvals, concurrent_approvals_on);
both!(connector_failures, connector_failures_on);
both!(bad_input, bad_input_on);
both!(self_review, self_review_on);

async fn full_lifecycle_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let target = Target::start().await;
    let s = Server::start(&policy(&db.url, &target.url(), &PolicyOptions::default())).await;

    let r = s
        .request("alice", "app/admin", "2s", "OPS-1 rotate keys")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    assert_eq!(r["state"], "pending");
    assert_eq!(r["requirements"].as_array().map(Vec::len), Some(2));

    // A lead, then security: two groups, two stages.
    let (st, v) = s.approve("bill", &id).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("pending")), "{v}");
    let (st, v) = s.approve("carol", &id).await;
    assert_eq!(st, 200, "{v}");
    assert!(
        matches!(
            v["state"].as_str(),
            Some("approved" | "provisioning" | "active")
        ),
        "{v}"
    );

    let active = s.wait_state(&id, "active", T).await;
    assert!(target.has_grant(&id), "the target holds the grant");
    assert_eq!(target.with(|t| t.grants[&id]["user"].clone()), "alice");
    let expires = active["grant"]["expires_at"]
        .as_str()
        .expect("expires_at")
        .to_owned();
    let expires_ms = expires
        .parse::<jiff::Timestamp>()
        .expect("time")
        .as_millisecond();

    // Expires on time, and the connector takes it away.
    let done = s
        .wait_for(&id, "expiry and revocation", T, |v| {
            v["state"] == "expired" && v["revocation"]["status"] == "done"
        })
        .await;
    assert!(!target.has_grant(&id), "revoked in the target");
    let expired_at = s
        .app
        .service
        .store()
        .audit(&sallyport::store::AuditFilter {
            subject: Some(id.clone()),
            action: Some("grant.expired".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit")[0]
        .at;
    assert!(expired_at >= expires_ms, "never before expires_at");
    assert!(
        expired_at - expires_ms < 1500,
        "expired {} ms late",
        expired_at - expires_ms
    );
    assert_eq!(done["revocation"]["reason"], "expired");

    // The audit chain holds, then breaks at the edited row.
    let report = s.app.service.store().verify_audit().await.expect("verify");
    assert!(report.ok(), "{report:?}");
    let events = s.audit_count().await;
    assert!(events >= 7, "{events} events");
    s.stop().await;

    let (pool_url, victim) = (db.url.clone(), 3i64);
    tamper(
        &pool_url,
        &format!("UPDATE audit_events SET actor = 'user:mallory' WHERE seq = {victim}"),
    )
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["audit", "verify", "--config"])
        .arg(write_config(&db.url, &target.url()))
        .output()
        .expect("run audit verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("BROKEN at event 3"), "{stderr}");
    db.cleanup().await;
}

/// Edit the database directly, as an attacker with database access would.
pub async fn tamper(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .expect("connect");
    sqlx::Executor::execute(&mut conn, sql)
        .await
        .expect("tamper");
    let _ = sqlx::Connection::close(conn).await;
}

/// A config file on disk for CLI commands.
pub fn write_config(db_url: &str, target: &str) -> std::path::PathBuf {
    let dir = tempfile::tempdir().expect("dir").keep();
    let path = dir.join("sallyport.toml");
    std::fs::write(&path, policy(db_url, target, &PolicyOptions::default())).expect("write");
    path
}

async fn outcomes_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let target = Target::start().await;
    let opts = PolicyOptions {
        pending_ttl: "1s",
        ..PolicyOptions::default()
    };
    let s = Server::start(&policy(&db.url, &target.url(), &opts)).await;

    // Denied by an eligible reviewer: the reason reaches the requester.
    let id = s
        .request("alice", "app/admin", "10m", "OPS-2 deny me")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, v) = s
        .post(
            "bill",
            &format!("/api/v1/requests/{id}/reviews"),
            json!({ "verdict": "deny", "comment": "not today" }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "denied");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not today")),
        "{v}"
    );

    // Cancelled by the requester.
    let id = s
        .request("alice", "app/admin", "10m", "OPS-3 cancel me")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, v) = s
        .post("alice", &format!("/api/v1/requests/{id}/cancel"), json!({}))
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("cancelled")), "{v}");

    // Timed out: nobody decided within the 1 s TTL.
    let id = s
        .request("alice", "app/admin", "10m", "OPS-4 nobody looks")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let v = s.wait_state(&id, "timed_out", T).await;
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no decision")),
        "{v}"
    );

    // Ended early by the holder.
    let id = s.request("alice", "app/auto", "10m", "look at logs").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    s.wait_state(&id, "active", T).await;
    assert!(target.has_grant(&id));
    let (st, v) = s
        .post("bob", &format!("/api/v1/requests/{id}/end"), json!({}))
        .await;
    assert_eq!(st, 404, "bob cannot even see alice's request: {v}");
    let (st, v) = s
        .post("alice", &format!("/api/v1/requests/{id}/end"), json!({}))
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("ended")), "{v}");
    s.wait_for(&id, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert!(!target.has_grant(&id));

    // Revoked by an admin.
    let id = s
        .request("alice", "app/auto", "10m", "look at logs again")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    s.wait_state(&id, "active", T).await;
    let (st, v) = s
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({ "reason": "mine" }),
        )
        .await;
    assert_eq!(st, 403, "the holder ends, not revokes: {v}");
    let (st, v) = s
        .post(
            "root",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({ "reason": "incident over" }),
        )
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("revoked")), "{v}");
    s.wait_for(&id, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert!(!target.has_grant(&id));
    assert!(
        s.app
            .service
            .store()
            .verify_audit()
            .await
            .expect("verify")
            .ok()
    );
    s.stop().await;
    db.cleanup().await;
}

async fn concurrent_approvals_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let target = Target::start().await;
    let s = Server::start(&policy(&db.url, &target.url(), &PolicyOptions::default())).await;
    for round in 0..5 {
        let id = s
            .request("alice", "app/admin", "10m", &format!("OPS-{round} race"))
            .await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        // The lead and security approve at the same moment.
        let (a, b) = tokio::join!(s.approve("bill", &id), s.approve("carol", &id));
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
        let v = s.wait_state(&id, "active", T).await;
        assert_eq!(
            v["reviews"].as_array().map(Vec::len),
            Some(2),
            "both reviews counted"
        );
        // Two leads at once on the same stage: one counts, the other finds it decided.
        let id2 = s
            .request(
                "alice",
                "app/admin",
                "10m",
                &format!("OPS-{round} race two"),
            )
            .await["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let (_c, _d) = tokio::join!(s.approve("carol", &id2), async {
            tokio::join!(s.approve("bill", &id2), s.approve("bob", &id2))
        });
        s.wait_state(&id2, "active", T).await;
        // Give a duplicate provision every chance to show up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(target.puts_for(&id), 1, "provisioned exactly once");
        assert_eq!(target.puts_for(&id2), 1, "provisioned exactly once");
    }
    let (_, audit) = s
        .get("root", "/api/v1/audit?action=grant.activated&limit=1000")
        .await;
    assert_eq!(
        audit["events"].as_array().map(Vec::len),
        Some(10),
        "{audit}"
    );
    s.stop().await;
    db.cleanup().await;
}

async fn connector_failures_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let target = Target::start().await;
    let s = Server::start(&policy(&db.url, &target.url(), &PolicyOptions::default())).await;

    // The target refuses: Failed with the reason, and the rollback leaves nothing granted.
    target.with(|t| t.fail_grants_with = Some(403));
    let id = s.request("alice", "app/auto", "10m", "will fail").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let v = s.wait_state(&id, "failed", T).await;
    assert!(
        v["reason"].as_str().is_some_and(|r| r.contains("403")),
        "{v}"
    );
    s.wait_for(&id, "rollback", T, |v| v["revocation"]["status"] == "done")
        .await;
    assert!(!target.has_grant(&id));
    assert!(
        target.with(|t| t.deletes.contains(&id)),
        "rollback called revoke"
    );

    // A transient failure (503) is retried, then fails the request after the configured attempts.
    target.with(|t| t.fail_grants_with = Some(503));
    let id = s
        .request("alice", "app/auto", "10m", "will fail twice")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    s.wait_state(&id, "failed", T).await;
    assert_eq!(
        target.puts_for(&id),
        2,
        "retried once (provision_attempts = 2)"
    );
    target.with(|t| t.fail_grants_with = None);

    // A failing revoke is retried until it succeeds, and is visible meanwhile.
    let id = s
        .request("alice", "app/auto", "10m", "revoke will struggle")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    s.wait_state(&id, "active", T).await;
    target.with(|t| t.fail_revokes = 3);
    let (st, _) = s
        .post("alice", &format!("/api/v1/requests/{id}/end"), json!({}))
        .await;
    assert_eq!(st, 200);
    let v = s
        .wait_for(&id, "a visible revoke failure", T, |v| {
            v["revocation"]["status"] == "pending"
                && v["revocation"]["failed_attempts"].as_u64() >= Some(1)
        })
        .await;
    assert!(
        v["revocation"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{v}"
    );
    let (_, metrics) = s.get("root", "/metrics").await;
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("sallyport_revocations_pending 1")),
        "{metrics}"
    );
    s.wait_for(&id, "the revoke to succeed", Duration::from_secs(30), |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert!(!target.has_grant(&id));
    assert_eq!(
        target.with(|t| t.deletes.iter().filter(|d| **d == id).count()),
        4
    );
    s.stop().await;
    db.cleanup().await;
}

async fn bad_input_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let target = Target::start().await;
    let s = Server::start(&policy(&db.url, &target.url(), &PolicyOptions::default())).await;
    let mine = s
        .request("alice", "app/admin", "10m", "OPS-9 a valid one")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for u in ["eve", "bill", "root"] {
        s.token(u).await; // issuing a token is audited: do it before counting
    }
    let before_events = s.audit_count().await;
    let before_requests = s
        .app
        .service
        .store()
        .counts()
        .await
        .expect("counts")
        .requests;

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({ "entitlement": "nope/x", "duration": "10m", "justification": "OPS-1 x" }),
            404,
            "no entitlement",
        ),
        (
            json!({ "entitlement": "app/admin", "duration": "3h", "justification": "OPS-1 x" }),
            400,
            "maximum of 2h",
        ),
        (
            json!({ "entitlement": "app/admin", "duration": "10m", "justification": "   " }),
            400,
            "must not be empty",
        ),
        (
            json!({ "entitlement": "app/admin", "duration": "10m", "justification": "no ticket" }),
            400,
            "must match the pattern",
        ),
        (
            json!({ "entitlement": "app/admin", "duration": "10m", "justification": "OPS-1 x", "colour": "red" }),
            400,
            "unknown field `colour`",
        ),
        (
            json!({ "entitlement": "app/admin", "duration": "soon", "justification": "OPS-1 x" }),
            400,
            "duration",
        ),
        (
            json!({ "entitlement": "app/admin", "duration": 0, "justification": "OPS-1 x" }),
            400,
            "at least 1 second",
        ),
        (
            json!({ "duration": "10m", "justification": "OPS-1 x" }),
            400,
            "missing field `entitlement`",
        ),
    ];
    for (body, status, needle) in cases {
        let (st, v) = s.post("alice", "/api/v1/requests", body.clone()).await;
        assert_eq!(st, status, "{body} -> {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{body} -> {v}"
        );
        assert!(v["code"].is_string() && v["request_id"].is_string(), "{v}");
    }
    // Not requestable by sales.
    let (st, v) = s
        .post(
            "eve",
            "/api/v1/requests",
            json!({ "entitlement": "app/admin", "duration": "10m", "justification": "OPS-1 x" }),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("not_requestable")),
        "{v}"
    );

    // Malformed JSON, wrong content type, oversized body.
    let url = format!("{}/api/v1/requests", s.url());
    let token = s.token("alice").await;
    let raw = |body: Vec<u8>, ct: &'static str| {
        s.http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = raw(b"{\"entitlement\": ".to_vec(), "application/json")
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("not valid JSON")),
        "{v}"
    );
    let r = raw(
        b"entitlement=x".to_vec(),
        "application/x-www-form-urlencoded",
    )
    .await
    .expect("send");
    assert_eq!(r.status().as_u16(), 415);
    let big = format!(
        r#"{{"entitlement":"app/admin","justification":"OPS-1 {}"}}"#,
        "x".repeat(64 * 1024)
    );
    let r = raw(big.into_bytes(), "application/json")
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "payload_too_large");

    // Someone else's request: invisible to others, and its requester cannot be impersonated.
    let (st, _) = s
        .post("eve", &format!("/api/v1/requests/{mine}/cancel"), json!({}))
        .await;
    assert_eq!(st, 404);
    let (st, v) = s
        .post(
            "bill",
            &format!("/api/v1/requests/{mine}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, _) = s.get("eve", &format!("/api/v1/requests/{mine}")).await;
    assert_eq!(st, 404);
    // No token, bad token.
    let r = s
        .http
        .get(format!("{}/api/v1/requests", s.url()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = s
        .http
        .get(format!("{}/api/v1/requests", s.url()))
        .bearer_auth("spt_nope_nope")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    // Unknown route: the same error shape.
    let (st, v) = s.get("alice", "/api/v1/nothing").await;
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")), "{v}");

    // Nothing was written by any of it.
    assert_eq!(s.audit_count().await, before_events);
    assert_eq!(
        s.app
            .service
            .store()
            .counts()
            .await
            .expect("counts")
            .requests,
        before_requests
    );
    assert_eq!(s.state(&mine).await["state"], "pending");
    s.stop().await;
    db.cleanup().await;
}

async fn self_review_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let target = Target::start().await;
    let s = Server::start(&policy(&db.url, &target.url(), &PolicyOptions::default())).await;
    // bob is in eng (may request) and in leads (may review others).
    let id = s.request("bob", "app/admin", "10m", "OPS-5 my own").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, v) = s.approve("bob", &id).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("self_review")), "{v}");
    // eve cannot see it at all; ann (an auditor) sees it but is no reviewer.
    let (st, _) = s.approve("eve", &id).await;
    assert_eq!(st, 404);
    let (st, v) = s.approve("ann", &id).await;
    assert_eq!((st, v["code"].as_str()), (403, Some("not_eligible")), "{v}");
    let (_, audit) = s
        .get(
            "root",
            &format!("/api/v1/audit?subject={id}&action=review.refused"),
        )
        .await;
    let refused = audit["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(refused.len(), 2, "both refusals audited: {audit}");
    assert_eq!(refused[0]["actor"], "user:bob");
    assert_eq!(refused[0]["after"]["code"], "self_review");
    let v = s.state(&id).await;
    assert_eq!(v["state"], "pending");
    assert!(v["reviews"].as_array().is_some_and(Vec::is_empty));
    s.stop().await;

    // With break-glass enabled, a self-approval with a long justification approves, loudly.
    let opts = PolicyOptions {
        break_glass: true,
        ..PolicyOptions::default()
    };
    let s = Server::start(&policy(&db.url, &target.url(), &opts)).await;
    let id = s
        .request("bob", "app/admin", "10m", "OPS-6 prod is down, need it now")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (st, v) = s.approve("bob", &id).await;
    assert_eq!(st, 200, "{v}");
    let v = s.wait_state(&id, "active", T).await;
    assert_eq!(v["break_glass"], true);
    let (_, audit) = s
        .get(
            "root",
            &format!("/api/v1/audit?subject={id}&action=break_glass.used"),
        )
        .await;
    assert_eq!(audit["events"].as_array().map(Vec::len), Some(1), "{audit}");
    eventually("target grant", T, || async { target.has_grant(&id) }).await;
    s.stop().await;
    db.cleanup().await;
}
