//! Azure end to end: Sallyport's real `azure` capability (azure_identity for tokens, ARM REST for
//! PIM schedule requests and role assignments) and the real `azure-rbac` plugin, against the
//! strict in-repo fake of Entra ID, ARM and Graph (`azure_fake.rs`) over https with a test CA.

use std::time::Duration;

use serde_json::{Value, json};

use crate::azure_fake::{
    Assignment, CONTRIBUTOR, FED_SUBJECT, FakeAzure, Fault, READER, SUBSCRIPTION, federated_token,
    iso_seconds,
};
use crate::harness::{Backend, Db, Server, config_check};

const T: Duration = Duration::from_secs(30);
const ALICE: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const BOB: &str = "bbbbbbbb-0000-0000-0000-000000000002";

fn rg(name: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{name}")
}

fn role_id(guid: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
}

fn entitlement(id: &str, settings: &str) -> String {
    format!(
        r#"
[[entitlements]]
id = "{id}"
max_duration = "4h"
requester_groups = ["eng"]
[entitlements.connector]
plugin = "azure-rbac"
[entitlements.connector.settings]
{settings}
[entitlements.approval]
plugin = "quorum"
[entitlements.approval.settings]
auto_approve = [{{ requester_groups = ["eng"] }}]
"#
    )
}

/// A Sallyport configuration with Azure pointed at the fake.
fn config(db_url: &str, fake: &FakeAzure, credential: &str, entitlements: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[database]
url = "{db_url}"
[auth]
admin_users = ["root"]
[jobs]
lease = "5s"
retry_max = "2s"
{azure}
[plugins.capabilities.azure-rbac.azure]
scopes = ["{prod}"]
[[users]]
id = "{ALICE}"
email = "alice@contoso.test"
groups = ["eng"]
[[users]]
id = "bob"
email = "bob@contoso.test"
groups = ["eng"]
[[users]]
id = "root"
{entitlements}"#,
        azure = fake.config(credential),
        prod = rg("rg-prod"),
    )
}

fn standard_entitlements() -> String {
    let prod = rg("rg-prod");
    [
        entitlement(
            "azure/prod-reader",
            &format!("scope = \"{prod}\"\nrole = \"Reader\"\nmode = \"pim\"\nprincipal = \"object_id\""),
        ),
        entitlement(
            "azure/prod-contributor",
            &format!(
                "scope = \"{prod}\"\nrole = \"{CONTRIBUTOR}\"\nmode = \"assignment\"\nprincipal = \"email\""
            ),
        ),
    ]
    .concat()
}

fn ms(t: &Value) -> i64 {
    t.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_millisecond())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pim_assignment_with_native_expiry_and_early_revoke() {
    let fake = FakeAzure::start().await;
    let db = Db::new(Backend::Sqlite).await.expect("db");
    let s = Server::start(&config(
        &db.url,
        &fake,
        "client_secret",
        &standard_entitlements(),
    ))
    .await;

    let r = s
        .request(ALICE, "azure/prod-reader", "1h", "incident 42")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    let active = s.wait_state(&id, "active", T).await;
    let end = ms(&active["grant"]["expires_at"]);
    let summary = active["grant"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("PIM assigned Reader") && summary.contains("Azure ends it itself"),
        "{active}"
    );

    // Exactly one AdminAssign, with the right principal, role, scope and an AfterDuration
    // expiration that ends with the grant.
    let puts = fake.requests("PUT", "roleAssignmentScheduleRequests");
    assert_eq!(puts.len(), 1, "{puts:?}");
    let put = &puts[0];
    assert_eq!(put.status, 201);
    assert!(put.path.starts_with(&rg("rg-prod")), "{}", put.path);
    assert_eq!(
        put.query.get("api-version").map(String::as_str),
        Some("2020-10-01")
    );
    let p = &put.body.as_ref().expect("body")["properties"];
    assert_eq!(p["requestType"], "AdminAssign");
    assert_eq!(p["principalId"], ALICE);
    assert_eq!(p["roleDefinitionId"], role_id(READER));
    assert_eq!(p["scheduleInfo"]["expiration"]["type"], "AfterDuration");
    let secs = iso_seconds(
        p["scheduleInfo"]["expiration"]["duration"]
            .as_str()
            .unwrap_or(""),
    )
    .expect("ISO 8601 duration");
    assert!((3590..=3600).contains(&secs), "{secs}");
    assert!(
        p["justification"]
            .as_str()
            .is_some_and(|j| j.contains("incident 42")),
        "{p}"
    );
    let live = fake.active(ALICE);
    assert_eq!(live.len(), 1);
    let azure_end = live[0].ends_at.expect("PIM assignments end by themselves");
    assert!(
        (azure_end - end).abs() <= 2_000,
        "Azure ends at {azure_end}, the grant at {end}"
    );

    // Tokens: the ARM calls carry a token for ARM, obtained with the client secret (never recorded).
    let tokens = fake.requests("POST", "/oauth2/v2.0/token");
    assert!(!tokens.is_empty());
    let fields = tokens[0].body.as_ref().expect("form")["fields"].to_string();
    assert!(fields.contains("client_secret"), "{fields}");

    // Early revoke: AdminRemove, and the assignment is gone.
    let (st, v) = s
        .post(
            "root",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({ "reason": "done" }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    s.wait_for(&id, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    let removes: Vec<_> = fake
        .requests("PUT", "roleAssignmentScheduleRequests")
        .into_iter()
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b["properties"]["requestType"] == "AdminRemove")
        })
        .collect();
    assert_eq!(removes.len(), 1, "{removes:?}");
    assert_eq!(removes[0].status, 201);
    assert!(fake.active(ALICE).is_empty());

    // A standing assignment Sallyport did not make: reported, and no AdminRemove touches it.
    fake.with(|st| {
        st.assignments.push(Assignment {
            name: "eeeeeeee-0000-0000-0000-000000000005".into(),
            scope: rg("rg-prod"),
            role_definition_id: role_id(READER),
            principal_id: ALICE.into(),
            principal_type: "User".into(),
            ends_at: None,
        })
    });
    let r = s
        .request(ALICE, "azure/prod-reader", "1h", "standing")
        .await;
    let sid = r["id"].as_str().expect("id").to_owned();
    let active = s.wait_state(&sid, "active", T).await;
    assert_eq!(active["grant"]["handle"]["preexisting"], true, "{active}");
    s.post(ALICE, &format!("/api/v1/requests/{sid}/end"), json!({}))
        .await;
    s.wait_for(&sid, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert_eq!(fake.active(ALICE).len(), 1, "the standing assignment stays");
    let removes = fake
        .requests("PUT", "roleAssignmentScheduleRequests")
        .into_iter()
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b["properties"]["requestType"] == "AdminRemove")
        })
        .count();
    assert_eq!(
        removes, 1,
        "no AdminRemove for what Sallyport did not assign"
    );
    fake.with(|st| st.assignments.clear());

    // A PIM policy that wants its own approval: the pending schedule request is cancelled and
    // the grant fails; nothing becomes active later.
    fake.with(|st| st.require_approval = true);
    let r = s.request(ALICE, "azure/prod-reader", "1h", "pending").await;
    let pid = r["id"].as_str().expect("id").to_owned();
    let failed = s.wait_state(&pid, "failed", T).await;
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("requires its own approval") && r.contains("cancelled")),
        "{failed}"
    );
    assert_eq!(fake.requests("POST", "/cancel").len(), 1);
    let statuses: Vec<String> = fake.with(|st| {
        st.schedule_requests
            .values()
            .map(|v| {
                v["properties"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    });
    assert!(statuses.contains(&"Canceled".to_owned()), "{statuses:?}");
    assert!(fake.active(ALICE).is_empty());
    fake.with(|st| st.require_approval = false);

    // A short grant while Sallyport is down: Azure (the fake, as documented) ends it itself.
    let r = s.request(ALICE, "azure/prod-reader", "4s", "short").await;
    let id = r["id"].as_str().expect("id").to_owned();
    s.wait_state(&id, "active", T).await;
    assert_eq!(fake.active(ALICE).len(), 1);
    s.stop().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        fake.active(ALICE).is_empty(),
        "Azure ended the PIM assignment on time"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_assignment_faults_and_idempotency() {
    let fake = FakeAzure::start().await;
    let db = Db::new(Backend::Sqlite).await.expect("db");
    let other = rg("rg-other");
    let ents = format!(
        "{}{}",
        standard_entitlements(),
        entitlement(
            "azure/outside",
            &format!(
                "scope = \"{other}\"\nrole = \"Reader\"\nmode = \"assignment\"\nprincipal = \"email\""
            )
        )
    );
    let text = config(&db.url, &fake, "client_secret", &ents);
    // `config check` asks Azure for the role, and knows the scope is not granted.
    let dir = tempfile::tempdir().expect("dir");
    let f = dir.path().join("sallyport.toml");
    std::fs::write(&f, &text).expect("write");
    let (code, out) = config_check(&f);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("azure/outside") && out.contains("scope"),
        "{out}"
    );
    let text = config(&db.url, &fake, "client_secret", &standard_entitlements());
    let s = Server::start(&text).await;

    // bob is found through Microsoft Graph by e-mail; the assignment names him as a User.
    let r = s
        .request("bob", "azure/prod-contributor", "1h", "deploy")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    let active = s.wait_state(&id, "active", T).await;
    let summary = active["grant"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("no expiry of its own"), "{summary}");
    let graph = fake.requests("GET", "/v1.0/users/");
    assert_eq!(graph.len(), 1);
    assert!(
        graph[0].path.ends_with("/users/bob@contoso.test"),
        "{}",
        graph[0].path
    );
    let puts = fake.requests("PUT", "/roleAssignments/");
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].query.get("api-version").map(String::as_str),
        Some("2022-04-01")
    );
    let p = &puts[0].body.as_ref().expect("body")["properties"];
    assert_eq!(p["principalId"], BOB);
    assert_eq!(p["principalType"], "User");
    assert_eq!(p["roleDefinitionId"], role_id(CONTRIBUTOR));
    assert_eq!(fake.active(BOB).len(), 1);

    // Repeating grant and revoke changes nothing more (a retry after a crash).
    let policy = s.app.service.policy();
    let plugin = policy.plugin("azure-rbac").expect("plugin");
    let settings = policy
        .entitlement("azure/prod-contributor")
        .expect("entitlement")
        .connector
        .settings
        .clone();
    let mut request =
        crate::support::access_request(crate::support::principal("bob", &["eng"]), 3600, "retry");
    request.id = "retry-req".into();
    request.requester.email = Some("bob@contoso.test".into());
    let now = jiff::Timestamp::now().as_millisecond();
    let grant = sallyport::plugin::GrantRequest {
        request: request.clone(),
        settings: settings.clone(),
        expires_at: now + 3_600_000,
        now,
    };
    // bob already holds Contributor there through request `id`: this one changes nothing.
    let g1 = plugin.grant(&grant).await.expect("grant");
    assert_eq!(g1.handle["preexisting"], true, "{:?}", g1);
    assert!(g1.summary.contains("already held"), "{}", g1.summary);
    // End request `id`, then grant twice for the retry request: one PUT, the same handle.
    let (st, v) = s
        .post("bob", &format!("/api/v1/requests/{id}/end"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    s.wait_for(&id, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert!(fake.active(BOB).is_empty());
    assert_eq!(fake.requests("DELETE", "/roleAssignments/").len(), 1);
    let before = fake.requests("PUT", "/roleAssignments/").len();
    let g2 = plugin.grant(&grant).await.expect("grant");
    let g3 = plugin.grant(&grant).await.expect("grant again");
    assert_eq!(g2.handle, g3.handle);
    assert_eq!(g2.handle["preexisting"], false);
    assert_eq!(fake.requests("PUT", "/roleAssignments/").len(), before + 1);
    assert_eq!(fake.active(BOB).len(), 1);
    let revoke = sallyport::plugin::RevokeRequest {
        request: request.clone(),
        settings: settings.clone(),
        handle: g2.handle.to_string(),
        reason: sallyport::plugin::RevokeReason::Revoked,
        now,
    };
    plugin.revoke(&revoke).await.expect("revoke");
    plugin.revoke(&revoke).await.expect("revoke again");
    assert!(fake.active(BOB).is_empty());

    // The answer to the PUT is lost (it took effect, then a 500): the retry meets
    // RoleAssignmentExists, finds its own assignment, and the revoke removes it.
    fake.with(|st| st.faults = vec![Fault::CommitThenFail]);
    let r = s
        .request("bob", "azure/prod-contributor", "1h", "lost answer")
        .await;
    let lid = r["id"].as_str().expect("id").to_owned();
    let active = s.wait_state(&lid, "active", T).await;
    assert_eq!(active["grant"]["handle"]["preexisting"], false, "{active}");
    let last: Vec<u16> = fake
        .requests("PUT", "/roleAssignments/")
        .iter()
        .rev()
        .take(2)
        .map(|r| r.status)
        .collect();
    assert_eq!(last, vec![409, 500], "lost answer, then exists");
    s.post("bob", &format!("/api/v1/requests/{lid}/end"), json!({}))
        .await;
    s.wait_for(&lid, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert!(
        fake.active(BOB).is_empty(),
        "Sallyport's own assignment is removed"
    );

    // A standing assignment Sallyport did not make is reported, kept, and never removed.
    fake.with(|st| {
        st.assignments.push(Assignment {
            name: "cccccccc-0000-0000-0000-000000000003".into(),
            scope: rg("rg-prod"),
            role_definition_id: role_id(CONTRIBUTOR),
            principal_id: BOB.into(),
            principal_type: "User".into(),
            ends_at: None,
        })
    });
    let r = s
        .request("bob", "azure/prod-contributor", "1h", "standing")
        .await;
    let sid = r["id"].as_str().expect("id").to_owned();
    let active = s.wait_state(&sid, "active", T).await;
    assert_eq!(active["grant"]["handle"]["preexisting"], true, "{active}");
    s.post("bob", &format!("/api/v1/requests/{sid}/end"), json!({}))
        .await;
    s.wait_for(&sid, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert_eq!(fake.active(BOB).len(), 1, "the standing assignment stays");
    fake.with(|st| st.assignments.clear());

    // Throttling honours Retry-After; a server error is retried; a replication delay is waited
    // out; an expired token is renewed once.
    fake.expire_tokens();
    fake.with(|st| {
        st.faults = vec![Fault::Throttle(1), Fault::ServerError];
        st.replicating.insert(ALICE.into(), 2);
    });
    let tokens_before = fake.requests("POST", "/oauth2/v2.0/token").len();
    let mark = fake.with(|st| st.requests.len());
    let r = s.request(ALICE, "azure/prod-reader", "1h", "faults").await;
    let fid = r["id"].as_str().expect("id").to_owned();
    s.wait_state(&fid, "active", T).await;
    let seen: Vec<(u16, String)> = fake.with(|st| {
        st.requests[mark..]
            .iter()
            .filter(|r| !r.path.contains("/oauth2/"))
            .map(|r| {
                (
                    r.status,
                    r.body
                        .as_ref()
                        .map(|b| b["properties"]["requestType"].to_string())
                        .unwrap_or_default(),
                )
            })
            .collect()
    });
    let statuses: Vec<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.first(),
        Some(&401),
        "the stale token first: {seen:?}"
    );
    assert!(
        statuses.contains(&429) && statuses.contains(&500),
        "{seen:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        2,
        "PrincipalNotFound twice: {seen:?}"
    );
    assert_eq!(statuses.last(), Some(&201), "{seen:?}");
    assert!(
        fake.requests("POST", "/oauth2/v2.0/token").len() > tokens_before,
        "a new token"
    );
    let jtis: Vec<u64> = fake.with(|st| {
        st.requests[mark..]
            .iter()
            .filter(|r| !r.path.contains("/oauth2/"))
            .filter_map(|r| r.token)
            .collect()
    });
    assert!(
        jtis.len() >= 2 && jtis[1..].iter().all(|j| *j > jtis[0]),
        "renewed token: {jtis:?}"
    );
    let gap = fake.with(|st| {
        let i = st.requests[mark..]
            .iter()
            .position(|r| r.status == 429)
            .expect("429")
            + mark;
        st.requests[i + 1].at.duration_since(st.requests[i].at)
    });
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After: 1 was honoured ({gap:?})"
    );

    // Still throttled after every attempt: the grant fails closed with a clear reason.
    fake.with(|st| st.faults = vec![Fault::Throttle(0); 40]);
    let r = s
        .request(ALICE, "azure/prod-contributor", "1h", "throttled")
        .await;
    let tid = r["id"].as_str().expect("id").to_owned();
    let failed = s.wait_state(&tid, "failed", Duration::from_secs(90)).await;
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("throttl")),
        "{failed}"
    );
    fake.with(|st| st.faults.clear());
    s.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_and_refusals() {
    let fake = FakeAzure::start().await;
    let db = Db::new(Backend::Sqlite).await.expect("db");
    let token_file = fake.dir.join("federated-token");
    std::fs::write(&token_file, federated_token(FED_SUBJECT, 600)).expect("token file");
    let ents = format!(
        "{}{}",
        standard_entitlements(),
        entitlement(
            "azure/unknown-role",
            &format!(
                "scope = \"{}\"\nrole = \"Time Traveller\"\nprincipal = \"object_id\"",
                rg("rg-prod")
            )
        )
    );
    // An unknown role fails `config check`, naming the entry and the role.
    let dir = tempfile::tempdir().expect("dir");
    let f = dir.path().join("sallyport.toml");
    std::fs::write(&f, config(&db.url, &fake, "workload_identity", &ents)).expect("write");
    let (code, out) = config_check(&f);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("azure/unknown-role") && out.contains("Time Traveller"),
        "{out}"
    );
    // A malformed scope and an unknown mode too, without asking Azure.
    let bad = entitlement(
        "azure/bad",
        "scope = \"/subscriptions/nope/\"\nrole = \"Reader\"\nmode = \"forever\"",
    );
    std::fs::write(&f, config(&db.url, &fake, "workload_identity", &bad)).expect("write");
    let (code, out) = config_check(&f);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("scope") && out.contains("forever"), "{out}");

    let s = Server::start(&config(
        &db.url,
        &fake,
        "workload_identity",
        &standard_entitlements(),
    ))
    .await;
    let r = s.request(ALICE, "azure/prod-reader", "1h", "wif").await;
    let id = r["id"].as_str().expect("id").to_owned();
    s.wait_state(&id, "active", T).await;
    let tokens = fake.requests("POST", "/oauth2/v2.0/token");
    let fields = tokens[0].body.as_ref().expect("form")["fields"].to_string();
    assert!(
        fields.contains("client_assertion") && !fields.contains("client_secret"),
        "{fields}"
    );

    // A requester whose id is not an object id cannot be mapped: refused, nothing assigned.
    let r = s
        .request("bob", "azure/prod-reader", "1h", "not an oid")
        .await;
    let bid = r["id"].as_str().expect("id").to_owned();
    let failed = s.wait_state(&bid, "failed", T).await;
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not an Entra object id")),
        "{failed}"
    );
    let (st, v) = s
        .post(ALICE, &format!("/api/v1/requests/{id}/end"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    s.wait_for(&id, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    s.stop().await;

    // A federated token for a subject Entra does not trust: a clear error, nothing granted.
    std::fs::write(
        &token_file,
        federated_token("system:serviceaccount:ops:intruder", 600),
    )
    .expect("token file");
    let s = Server::start(&config(
        &db.url,
        &fake,
        "workload_identity",
        &standard_entitlements(),
    ))
    .await;
    let before = fake.active(ALICE).len();
    let r = s
        .request(ALICE, "azure/prod-reader", "2h", "intruder")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    let failed = s.wait_state(&id, "failed", Duration::from_secs(60)).await;
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("AADSTS70021")),
        "{failed}"
    );
    assert_eq!(fake.active(ALICE).len(), before);
    s.stop().await;
    db.cleanup().await;
}

/// The fake refuses what Azure refuses: a test of the test partner, so a malformed request from
/// Sallyport cannot pass unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_is_strict() {
    let fake = FakeAzure::start().await;
    let ca = std::fs::read(&fake.ca_file).expect("ca");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("client");
    let arm = fake.token_for("https://management.azure.com");
    let graph = fake.token_for("https://graph.microsoft.com");
    let name = "dddddddd-0000-0000-0000-000000000004";
    let url = |api: &str| {
        format!(
            "{}{}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={api}",
            fake.url,
            rg("rg-prod")
        )
    };
    let good = json!({"properties": {"roleDefinitionId": role_id(READER), "principalId": ALICE, "principalType": "User"}});
    let send = |u: String, token: &str, body: Value| {
        let req = http.put(u).bearer_auth(token).json(&body);
        async move {
            let r = req.send().await.expect("send");
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (
                status,
                v["error"]["code"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let cases = [
        (
            url("2022-04-01"),
            graph.clone(),
            good.clone(),
            401,
            "InvalidAuthenticationTokenAudience",
        ),
        (
            url("2022-04-01"),
            format!("{arm}x"),
            good.clone(),
            401,
            "InvalidAuthenticationToken",
        ),
        (
            url("2020-10-01"),
            arm.clone(),
            good.clone(),
            400,
            "InvalidApiVersionParameter",
        ),
        (
            url("2022-04-01"),
            arm.clone(),
            json!({"properties": {"roleDefinitionId": role_id(READER), "principalID": ALICE}}),
            400,
            "InvalidRequestContent",
        ),
        (
            url("2022-04-01"),
            arm.clone(),
            json!({"properties": {"roleDefinitionId": role_id(READER), "principalId": ALICE, "principalType": "Group"}}),
            400,
            "UnmatchedPrincipalType",
        ),
        (
            url("2022-04-01"),
            arm.clone(),
            json!({"properties": {"roleDefinitionId": role_id("00000000-0000-0000-0000-00000000dead"), "principalId": ALICE}}),
            400,
            "RoleDefinitionDoesNotExist",
        ),
    ];
    for (u, token, body, status, code) in cases {
        assert_eq!(send(u, &token, body).await, (status, code.to_owned()));
    }
    assert_eq!(
        send(url("2022-04-01"), &arm, good.clone()).await,
        (201, String::new())
    );
    assert_eq!(
        send(url("2022-04-01"), &arm, good).await,
        (409, "RoleAssignmentExists".to_owned())
    );
    // PIM: a permanent assignment is refused by the role's policy.
    let pim = format!(
        "{}{}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{name}?api-version=2020-10-01",
        fake.url,
        rg("rg-prod")
    );
    let forever = json!({"properties": {"principalId": BOB, "roleDefinitionId": role_id(READER), "requestType": "AdminAssign", "justification": "x",
        "scheduleInfo": {"startDateTime": jiff::Timestamp::now().to_string(), "expiration": {"type": "NoExpiration"}}}});
    assert_eq!(
        send(pim.clone(), &arm, forever).await,
        (
            400,
            "RoleAssignmentRequestPolicyValidationFailed".to_owned()
        )
    );
    let assign = |expiration: Value, key: &str| {
        let mut si =
            json!({"startDateTime": jiff::Timestamp::now().to_string(), "expiration": expiration});
        if key == "recurrence" {
            si["recurrence"] = json!("daily");
        }
        json!({"properties": {"principalId": BOB, "roleDefinitionId": role_id(READER), "requestType": "AdminAssign", "justification": "x", "scheduleInfo": si}})
    };
    for (body, code) in [
        (
            assign(json!({"type": "AfterDuration", "duration": "1 hour"}), ""),
            "InvalidRequestContent",
        ),
        (
            assign(
                json!({"type": "AfterDuration", "duration": "PT1H"}),
                "recurrence",
            ),
            "InvalidRequestContent",
        ),
        (
            assign(json!({"type": "AfterDuration", "duration": "PT9H"}), ""),
            "RoleAssignmentRequestPolicyValidationFailed",
        ),
    ] {
        assert_eq!(send(pim.clone(), &arm, body).await, (400, code.to_owned()));
    }
    fake.expire_tokens();
    assert_eq!(
        send(url("2022-04-01"), &arm, json!({})).await,
        (401, "ExpiredAuthenticationToken".to_owned())
    );
}
