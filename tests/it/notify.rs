//! Notifications over real SMTP (npm `maildev@2`): approval links that act once, for their
//! reviewer only, after a confirmation; requester and watcher mail; an SMTP outage that only
//! delays mail; signed webhooks received by a local server; the dev-mode outbox; and the whole
//! approve-by-email flow in a real browser.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, Mac};
use sallyport::app::{App, Options};
use sallyport::config::{Config, ParseOptions};
use sallyport::store::ApprovalLink;
use serde_json::Value;
use sha2::Sha256;

use crate::browser_harness::{Browser, OidcProvider, oidc_sign_in, screenshot};
use crate::harness::{Server, Target, eventually, free_port};
use crate::mail_harness::{self, Mail, Maildev};
use crate::web::{click, no_redirects, session, text};

const WAIT: Duration = Duration::from_secs(30);
const HOOK_KEY: &str = "whsec-test-key-0123456789";

/// The test configuration: mail to `smtp` (plain, loopback) when given, webhooks to `hooks`.
fn config(
    port: u16,
    db: &str,
    target: &str,
    smtp: Option<u16>,
    hooks: Option<&str>,
    extra: &str,
) -> String {
    let smtp = smtp.map_or(String::new(), |p| {
        format!(
            r#"
[smtp]
host = "127.0.0.1"
port = {p}
security = "plain"
from = "Sallyport <sallyport@example.com>"
timeout = "5s"
"#
        )
    });
    let hooks = hooks.map_or(String::new(), |h| {
        format!(
            r#"
[secrets.hook_key]
file = "hook-key"
[secrets.slack_url]
file = "slack-url"
[secrets.teams_url]
file = "teams-url"
[[webhooks]]
name = "audit-json"
url = "{h}/json"
format = "json"
signing_secret = "hook_key"
[[webhooks]]
name = "chat-slack"
url_secret = "slack_url"
format = "slack"
events = ["review_needed", "approved"]
[[webhooks]]
name = "chat-teams"
url_secret = "teams_url"
format = "teams"
entitlements = ["app/t*"]
"#
        )
    });
    let connector = format!(
        r#"[entitlements.connector]
plugin = "http"
[entitlements.connector.settings]
grant = {{ method = "PUT", url = "{target}/grants/{{{{request.id}}}}", body = {{ user = "{{{{requester.id}}}}" }} }}
revoke = {{ method = "DELETE", url = "{target}/grants/{{{{request.id}}}}" }}"#
    );
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[database]
url = "{db}"
[auth]
admin_users = ["root"]
[plugins.capabilities.http.http]
allow = ["http://127.0.0.1:*"]
[notify]
expiring_lead = "15s"
watchers = ["watch@example.com"]
{smtp}
{hooks}
{extra}
[[users]]
id = "alice"
email = "alice@example.com"
name = "Alice Archer"
groups = ["eng"]
[[users]]
id = "bob"
email = "bob@example.com"
groups = ["leads"]
[[users]]
id = "bill"
email = "bill@example.com"
groups = ["leads"]
[[users]]
id = "carol"
email = "carol@example.com"
groups = ["security"]
[[users]]
id = "eve"
email = "eve@example.com"
groups = ["sales"]
[[users]]
id = "root"
email = "root@example.com"

[[entitlements]]
id = "app/two"
description = "a lead, then security"
max_duration = "2h"
requester_groups = ["eng"]
watchers = ["sec-team@example.com"]
{connector}
[entitlements.approval]
plugin = "quorum"
settings = {{ stages = [{{ name = "lead", groups = ["leads"], count = 1 }}, {{ name = "security", groups = ["security"], count = 1 }}] }}

[[entitlements]]
id = "app/link"
description = "approvable by link alone"
max_duration = "2h"
requester_groups = ["eng"]
link_only_approval = true
{connector}
[entitlements.approval]
plugin = "quorum"
settings = {{ stages = [{{ name = "lead", groups = ["leads"], count = 1 }}] }}

[[entitlements]]
id = "app/short"
description = "auto-approved, short"
max_duration = "1h"
requester_groups = ["eng"]
{connector}
[entitlements.approval]
plugin = "quorum"
settings = {{ auto_approve = [{{ name = "eng", requester_groups = ["eng"] }}] }}
"#
    )
}

/// `Label: URL` from a message's text part.
fn link(m: &Mail, label: &str) -> String {
    m.text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{label}:")))
        .map(|u| u.trim().to_owned())
        .unwrap_or_else(|| panic!("no {label} link in {:?}: {}", m.subject, m.text))
}

fn to(m: &Mail, addr: &str) -> bool {
    m.to.iter().any(|t| t == addr)
}

async fn review_mail(mail: &Maildev, addr: &str, entitlement: &str) -> Mail {
    mail.wait_for(&format!("review mail to {addr}"), WAIT, |m| {
        to(m, addr) && m.subject.contains("Review needed") && m.subject.contains(entitlement)
    })
    .await
}

/// GET or POST a link with an optional session cookie; (status, body, Location).
async fn hit(
    url: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> (u16, String, String) {
    let c = no_redirects();
    let mut req = match form {
        Some(f) => c.post(url).form(f),
        None => c.get(url),
    };
    req = req.header("accept", "text/html");
    if let Some(k) = cookie {
        req = req.header("cookie", k);
    }
    let res = req.send().await.expect("link request");
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, res.text().await.unwrap_or_default(), location)
}

async fn start(
    smtp: Option<u16>,
    hooks: Option<&str>,
    extra: &str,
    dev: bool,
) -> (Server, Target, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("hook-key"), HOOK_KEY).expect("key");
    if let Some(h) = hooks {
        std::fs::write(dir.path().join("slack-url"), format!("{h}/slack")).expect("url");
        std::fs::write(dir.path().join("teams-url"), format!("{h}/teams")).expect("url");
    }
    let target = Target::start().await;
    let db = format!("sqlite://{}", dir.path().join("notify.db").display());
    let text = config(free_port(), &db, &target.url(), smtp, hooks, extra);
    std::fs::write(dir.path().join("config.toml"), &text).expect("config copy");
    let server = if dev {
        let cfg = Config::parse(&text, dir.path(), ParseOptions::default())
            .unwrap_or_else(|p| panic!("config: {p}"));
        let app = App::start(
            cfg,
            Options {
                dev: true,
                shutdown_grace: Some(Duration::from_secs(2)),
                ..Options::default()
            },
        )
        .await
        .expect("dev server");
        Server {
            app,
            http: reqwest::Client::new(),
            tokens: Mutex::new(Default::default()),
        }
    } else {
        Server::start_in(&text, dir.path()).await
    };
    (server, target, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_links_act_once_for_their_reviewer_after_confirmation() {
    let Some(mail) = mail_harness::start().await else {
        return;
    };
    let (server, target, dir) = start(Some(mail.smtp_port()), None, "", false).await;
    let config_text = std::fs::read_to_string(dir.path().join("config.toml")).expect("config");
    let base = server.url();

    let r = server
        .request("alice", "app/two", "30m", "INC-1 fix the <b>queue</b>")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    // Both leads are asked; security is not yet (stage 2); the requester never is.
    let to_bob = review_mail(&mail, "bob@example.com", "app/two").await;
    let to_bill = review_mail(&mail, "bill@example.com", "app/two").await;
    assert!(
        to_bob
            .html
            .contains("INC-1 fix the &lt;b&gt;queue&lt;/b&gt;"),
        "{}",
        to_bob.html
    );
    assert!(to_bob.text.contains(&format!("{base}/requests/{id}")));
    let approve = link(&to_bob, "Approve");
    let deny = link(&to_bob, "Deny");
    assert!(approve.starts_with(&format!("{base}/link/")), "{approve}");
    assert_ne!(approve, link(&to_bill, "Approve"), "links are per reviewer");
    // Stages are parallel: security is asked at once too; the requester never is.
    let to_carol = review_mail(&mail, "carol@example.com", "app/two").await;
    assert!(
        !mail
            .messages()
            .await
            .iter()
            .any(|m| to(m, "alice@example.com")),
        "the requester is not asked to review"
    );

    let (bob, bob_csrf) = session(&server, "bob", &["leads"]).await;
    let (bill, bill_csrf) = session(&server, "bill", &["leads"]).await;
    let (eve, eve_csrf) = session(&server, "eve", &["sales"]).await;
    let pending =
        |v: &Value| v["state"] == "pending" && v["reviews"].as_array().is_some_and(Vec::is_empty);

    // A bare GET (a mail scanner, or anyone not signed in) is sent to sign in, and acts not.
    let (s, _, loc) = hit(&approve, None, None).await;
    assert_eq!(s, 303);
    assert!(loc.starts_with("/signin?next=%2Flink%2F"), "{loc}");
    // Signed in as bob, GET shows a confirmation page and still changes nothing.
    let (s, page, _) = hit(&approve, Some(&bob), None).await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("Approve this request?") && page.contains("id=\"confirm\""));
    assert!(page.contains("INC-1 fix the &lt;b&gt;queue&lt;/b&gt;"));
    assert!(pending(&server.state(&id).await));

    // Tampered token: unknown.
    let mut tampered = approve.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (s, page, _) = hit(&tampered, Some(&bob), None).await;
    assert_eq!(s, 404);
    assert!(page.contains("This link is not valid"));
    // Forwarded to someone who is no reviewer, and to another reviewer: refused, GET and POST.
    for (cookie, csrf, who) in [(&eve, &eve_csrf, "eve"), (&bill, &bill_csrf, "bill")] {
        let (s, page, _) = hit(&approve, Some(cookie), None).await;
        assert_eq!(s, 403, "{who}: {page}");
        assert!(page.contains("This link is not for you") && page.contains("sent to bob"));
        let (s, _, _) = hit(&approve, Some(cookie), Some(&[("csrf", csrf.as_str())])).await;
        assert_eq!(s, 403, "{who}");
    }
    // No CSRF token: refused.
    let (s, page, _) = hit(&approve, Some(&bob), Some(&[("comment", "ok")])).await;
    assert_eq!(s, 403, "{page}");
    // Deny without a reason: refused, and the link still works.
    let (s, page, _) = hit(&deny, Some(&bob), Some(&[("csrf", bob_csrf.as_str())])).await;
    assert_eq!(s, 400, "{page}");
    assert!(pending(&server.state(&id).await));

    // A comment that cannot be accepted is refused before the link is used up.
    let long = "x".repeat(2001);
    let (s, page, _) = hit(
        &approve,
        Some(&bob),
        Some(&[("csrf", bob_csrf.as_str()), ("comment", long.as_str())]),
    )
    .await;
    assert_eq!(s, 400, "{page}");
    assert!(page.contains("the link still works"), "{page}");
    assert!(pending(&server.state(&id).await));

    // bob confirms: his review counts, through the e-mail channel.
    let (s, _, loc) = hit(
        &approve,
        Some(&bob),
        Some(&[("csrf", bob_csrf.as_str()), ("comment", "lgtm")]),
    )
    .await;
    assert_eq!(
        (s, loc.as_str()),
        (303, format!("/requests/{id}?done=reviewed").as_str())
    );
    let v = server.state(&id).await;
    assert_eq!(v["state"], "pending", "security still has to approve");
    assert_eq!(v["reviews"][0]["reviewer"]["id"], "bob");
    assert_eq!(v["reviews"][0]["channel"], "email_link");
    // Replay, and bob's other link: used up.
    for url in [&approve, &deny] {
        let (s, page, _) = hit(url, Some(&bob), Some(&[("csrf", bob_csrf.as_str())])).await;
        assert_eq!(s, 409, "{page}");
        assert!(page.contains("This link was already used"), "{page}");
    }
    assert_eq!(
        server.state(&id).await["reviews"].as_array().map(Vec::len),
        Some(1)
    );

    // bob's approval met the lead stage; carol's link still works.
    // An expired link (its request still pending) is refused.
    let store = server.app.service.store();
    let stale = "S".repeat(43);
    store
        .insert_links(&[ApprovalLink {
            hash: sallyport::service::token_hash(&stale),
            request_id: id.clone(),
            reviewer: "carol".into(),
            principal: server
                .app
                .service
                .policy()
                .directory_principal("carol")
                .expect("carol"),
            action: "approve".into(),
            created_at: 1,
            expires_at: 2,
            used_at: None,
        }])
        .await
        .expect("insert");
    let (carol, carol_csrf) = session(&server, "carol", &["security"]).await;
    let (s, page, _) = hit(
        &format!("{base}/link/{stale}"),
        Some(&carol),
        Some(&[("csrf", carol_csrf.as_str())]),
    )
    .await;
    assert_eq!(s, 410, "{page}");
    assert!(page.contains("This link has expired"));
    let (s, _, _) = hit(
        &link(&to_carol, "Approve"),
        Some(&carol),
        Some(&[("csrf", carol_csrf.as_str())]),
    )
    .await;
    assert_eq!(s, 303);
    server.wait_state(&id, "active", WAIT).await;
    assert!(target.has_grant(&id));
    // Decided: every other link says so, and changes nothing.
    let (s, page, _) = hit(&link(&to_bill, "Approve"), Some(&bill), None).await;
    assert_eq!(s, 409);
    assert!(page.contains("This request was already decided"), "{page}");
    let (s, _, _) = hit(
        &link(&to_bill, "Deny"),
        Some(&bill),
        Some(&[("csrf", bill_csrf.as_str()), ("comment", "no")]),
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(
        server.state(&id).await["reviews"].as_array().map(Vec::len),
        Some(2)
    );

    // The requester hears about it, with a deep link; so do the entitlement's and the global
    // watchers.
    for (addr, topic) in [
        ("alice@example.com", "Approved"),
        ("alice@example.com", "Active"),
        ("sec-team@example.com", "Active"),
        ("watch@example.com", "Approved"),
    ] {
        let m = mail
            .wait_for(&format!("{topic} to {addr}"), WAIT, |m| {
                to(m, addr) && m.subject.contains(&format!("{topic}: app/two"))
            })
            .await;
        assert!(
            m.text.contains(&format!("{base}/requests/{id}")),
            "{}",
            m.text
        );
    }
    // An admin revokes: the requester is told.
    let (s, v) = server
        .post(
            "root",
            &format!("/api/v1/requests/{id}/revoke"),
            serde_json::json!({ "reason": "done" }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    mail.wait_for("revoked mail", WAIT, |m| {
        to(m, "alice@example.com") && m.subject.contains("Revoked: app/two")
    })
    .await;

    // Link-only: possession of the link suffices (no session), once.
    let r = server
        .request("alice", "app/link", "10m", "INC-2 rotate")
        .await;
    let lid = r["id"].as_str().expect("id").to_owned();
    let m = review_mail(&mail, "bob@example.com", "app/link").await;
    let approve = link(&m, "Approve");
    let c = no_redirects();
    let res = c.get(&approve).send().await.expect("get");
    let pre = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sallyport_pre="))
        .and_then(|v| v.split(';').next())
        .expect("a pre-sign-in cookie for the form")
        .to_owned();
    let page = res.text().await.expect("page");
    assert!(page.contains("approval by link alone"), "{page}");
    assert_eq!(server.state(&lid).await["state"], "pending");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf")
        .to_owned();
    // Without the cookie the form's token is worthless.
    let (s, _, _) = hit(&approve, None, Some(&[("csrf", csrf.as_str())])).await;
    assert_eq!(s, 403);
    let (s, page, _) = hit(&approve, Some(&pre), Some(&[("csrf", csrf.as_str())])).await;
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("Review recorded"));
    server.wait_state(&lid, "active", WAIT).await;
    let (s, _, _) = hit(&approve, Some(&pre), Some(&[("csrf", csrf.as_str())])).await;
    assert_eq!(s, 409, "replayed link-only link");
    let v = server.state(&lid).await;
    assert_eq!(
        v["reviews"][0]["channel"], "email_link_only",
        "told apart in the audit"
    );

    // Link-only acts as the reviewer as known now: bill, moved out of `leads` since the mail
    // went out, can no longer approve with it.
    let r = server
        .request("alice", "app/link", "10m", "INC-7 second")
        .await;
    let lid = r["id"].as_str().expect("id").to_owned();
    let m = mail
        .wait_for("bill's link-only mail", WAIT, |m| {
            to(m, "bill@example.com") && m.subject.contains("app/link") && m.text.contains(&lid)
        })
        .await;
    let moved = config_text.replace(
        "id = \"bill\"\nemail = \"bill@example.com\"\ngroups = [\"leads\"]",
        "id = \"bill\"\nemail = \"bill@example.com\"\ngroups = [\"sales\"]",
    );
    assert_ne!(moved, config_text);
    server
        .app
        .service
        .reload(Config::parse(&moved, dir.path(), ParseOptions::default()).expect("config"))
        .await
        .expect("reload");
    let (s, page, _) = hit(&link(&m, "Approve"), None, None).await;
    assert_eq!(s, 403, "{page}");
    assert!(
        page.contains("You cannot review this request now"),
        "{page}"
    );
    assert_eq!(server.state(&lid).await["state"], "pending");

    // Expiring soon and expired reach the requester (lead 15 s, grant 20 s: the warning is due
    // 5 s after activation and stays relevant for 15 s, even on a busy machine).
    let r = server
        .request("alice", "app/short", "20s", "INC-3 quick look")
        .await;
    let sid = r["id"].as_str().expect("id").to_owned();
    for subject in ["Ending soon: app/short", "Ended: app/short"] {
        mail.wait_for(subject, WAIT, |m| {
            to(m, "alice@example.com") && m.subject.contains(subject)
        })
        .await;
    }
    assert_eq!(server.state(&sid).await["state"], "expired");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_delays_mail_and_loses_none() {
    if mail_harness::start().await.is_none() {
        return;
    }
    let port = mail_harness::free_port();
    let (server, _target, _dir) = start(Some(port), None, "", false).await;
    let r = server
        .request("alice", "app/two", "30m", "INC-9 outage drill")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    let store = server.app.service.store().clone();
    // Nobody listens: the send fails and is scheduled again.
    eventually("a failed delivery attempt", WAIT, || {
        let store = store.clone();
        let id = id.clone();
        async move {
            store
                .deliveries_for(&id)
                .await
                .expect("deliveries")
                .iter()
                .any(|d| d.attempts >= 1 && d.state == "queued" && d.last_error.is_some())
        }
    })
    .await;
    // The mail server comes up on that port: the retry delivers.
    let mail = mail_harness::start_on(port).await.expect("maildev");
    let m = mail
        .wait_for("the delayed review mail", Duration::from_secs(60), |m| {
            to(m, "bob@example.com") && m.subject.contains("Review needed")
        })
        .await;
    assert!(link(&m, "Approve").contains("/link/"));
    server.stop().await;
}

type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

async fn receive(
    State(seen): State<Seen>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    seen.lock().expect("seen").push((kind, headers, body));
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_shaped_for_each_receiver() {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/{kind}", post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hooks = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let (server, _target, _dir) = start(None, Some(&hooks), "", false).await;
    let r = server
        .request("alice", "app/two", "30m", "INC-4 hooks")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    let (s, v) = server.approve("bob", &id).await;
    assert_eq!(s, 200, "{v}");
    let count = |kind: &str, topic: &str| {
        seen.lock()
            .expect("seen")
            .iter()
            .filter(|(k, h, _)| k == kind && h.get("x-sallyport-event").is_some_and(|v| v == topic))
            .count()
    };
    // Both stages are asked at once (they are parallel); bob's approval changes the
    // requirements, which is a second `review_needed` event.
    let mut ok = false;
    for _ in 0..300 {
        ok = count("json", "review_needed") == 2
            && count("slack", "review_needed") == 2
            && count("teams", "review_needed") == 2;
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got: Vec<_> = seen
        .lock()
        .expect("seen")
        .iter()
        .map(|(k, h, _)| (k.clone(), h.get("x-sallyport-event").cloned()))
        .collect();
    let deliveries = server.app.service.store().deliveries_for(&id).await;
    assert!(ok, "webhooks seen: {got:?}; deliveries: {deliveries:?}");

    for (kind, headers, body) in seen.lock().expect("seen").iter() {
        let v: Value = serde_json::from_slice(body).expect("json body");
        match kind.as_str() {
            "json" => {
                // Verify the signature as a receiver would: HMAC-SHA256 over "t.body".
                let sig = headers
                    .get("x-sallyport-signature")
                    .and_then(|h| h.to_str().ok())
                    .expect("signature header");
                let (t, v1) = sig
                    .split_once(',')
                    .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
                    .expect("t=..,v1=..");
                let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_KEY.as_bytes()).expect("key");
                mac.update(format!("{t}.").as_bytes());
                mac.update(body);
                mac.verify_slice(&hex::decode(v1).expect("hex"))
                    .expect("signature verifies");
                // ... and fails for a changed body.
                let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_KEY.as_bytes()).expect("key");
                mac.update(format!("{t}.").as_bytes());
                mac.update(&body[1..]);
                assert!(mac.verify_slice(&hex::decode(v1).expect("hex")).is_err());
                assert_eq!(v["request"]["id"], id.as_str());
                assert_eq!(v["request"]["justification"], "INC-4 hooks");
                assert!(
                    v["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(&format!("/requests/{id}")))
                );
            }
            "slack" => {
                assert!(headers.get("x-sallyport-signature").is_none());
                assert!(
                    v["text"].as_str().is_some_and(|t| t.contains("app/two")),
                    "{v}"
                );
                assert_eq!(v["blocks"][0]["type"], "section");
            }
            "teams" => {
                assert_eq!(v["type"], "message");
                let card = &v["attachments"][0];
                assert_eq!(
                    card["contentType"],
                    "application/vnd.microsoft.card.adaptive"
                );
                assert_eq!(card["content"]["type"], "AdaptiveCard");
                assert!(
                    card["content"]["actions"][0]["url"]
                        .as_str()
                        .is_some_and(|u| u.contains(&id))
                );
            }
            other => panic!("unexpected webhook {other}"),
        }
    }
    // Filters: slack takes only review_needed/approved; teams only app/t*.
    let r = server
        .request("alice", "app/link", "10m", "INC-5 filters")
        .await;
    let lid = r["id"].as_str().expect("id").to_owned();
    eventually("json hears about app/link", WAIT, || {
        let ok = seen
            .lock()
            .expect("seen")
            .iter()
            .any(|(k, _, b)| k == "json" && String::from_utf8_lossy(b).contains(&lid));
        async move { ok }
    })
    .await;
    let (s, v) = server.approve("carol", &id).await;
    assert_eq!(s, 200, "{v}");
    server.wait_state(&id, "active", WAIT).await;
    eventually("json hears active", WAIT, || {
        let ok = count("json", "active") == 1;
        async move { ok }
    })
    .await;
    assert_eq!(
        count("slack", "active"),
        0,
        "slack is filtered to review_needed and approved"
    );
    assert!(
        !seen
            .lock()
            .expect("seen")
            .iter()
            .any(|(k, _, b)| k == "teams" && String::from_utf8_lossy(b).contains(&lid)),
        "teams is filtered to app/t*"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_without_smtp_keeps_mail_in_an_outbox_whose_links_work() {
    let (server, _target, _dir) = start(None, None, "", true).await;
    let base = server.url();
    let r = server
        .request("alice", "app/two", "30m", "INC-6 outbox")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    let c = no_redirects();
    let mut page = String::new();
    for _ in 0..100 {
        page = c
            .get(format!("{base}/outbox"))
            .send()
            .await
            .expect("outbox")
            .text()
            .await
            .expect("page");
        if page.contains("bob@example.com") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("Review needed: app/two for Alice Archer"),
        "{page}"
    );
    let approve = page
        .split("<li class=\"card message\">")
        .find(|m| m.contains("To bob@example.com"))
        .expect("bob's message")
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|u| u.starts_with(&format!("{base}/link/")))
        .expect("an approval link in the outbox")
        .to_owned();
    let (cookie, csrf) = session(&server, "bob", &["leads"]).await;
    let (s, body, _) = hit(&approve, Some(&cookie), None).await;
    assert_eq!(s, 200, "{body}");
    let (s, _, _) = hit(&approve, Some(&cookie), Some(&[("csrf", csrf.as_str())])).await;
    assert_eq!(s, 303);
    assert_eq!(
        server.state(&id).await["reviews"][0]["channel"],
        "email_link"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_by_email_in_the_browser() {
    let Some(mail) = mail_harness::start().await else {
        return;
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let Some(idp) = OidcProvider::start(&[format!("{base}/auth/callback")]).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let c = browser.client.clone();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("oidc-secret"), &idp.client_secret).expect("secret");
    std::fs::write(dir.path().join("hook-key"), HOOK_KEY).expect("key");
    let target = Target::start().await;
    let db = format!("sqlite://{}", dir.path().join("mail.db").display());
    let oidc = format!(
        r#"
[oidc]
issuer = "{}"
client_id = "{}"
client_secret_secret = "oidc"
id_claim = "preferred_username"
[secrets.oidc]
file = "oidc-secret"
"#,
        idp.issuer, idp.client_id
    );
    let server = Server::start_in(
        &config(
            port,
            &db,
            &target.url(),
            Some(mail.smtp_port()),
            None,
            &oidc,
        ),
        dir.path(),
    )
    .await;
    let r = server
        .request("alice", "app/two", "30m", "INC-8 browser by mail")
        .await;
    let id = r["id"].as_str().expect("id").to_owned();
    let m = review_mail(&mail, "bob@example.com", "app/two").await;
    // Follow the link from the received message: sign in as bob, come back, confirm.
    c.goto(&link(&m, "Approve")).await.expect("open link");
    click(&c, "#signin-oidc").await;
    oidc_sign_in(&c, "bob").await.expect("sign in");
    let heading = text(&c, "h1").await;
    assert_eq!(heading, "Approve this request?");
    assert_eq!(
        c.current_url().await.expect("url").path(),
        m.text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Approve:"))
            .and_then(|u| url::Url::parse(u.trim()).ok())
            .map(|u| u.path().to_owned())
            .expect("path")
    );
    screenshot(&c, "email-approve").await;
    assert_eq!(
        server.state(&id).await["state"],
        "pending",
        "the GET did nothing"
    );
    click(&c, "#confirm").await;
    let state = text(&c, "#request-state").await;
    assert_eq!(state, "pending", "security is next");
    let v = server.state(&id).await;
    assert_eq!(v["reviews"][0]["reviewer"]["id"], "bob");
    assert_eq!(v["reviews"][0]["channel"], "email_link");
    server.stop().await;
    browser.close().await;
}
