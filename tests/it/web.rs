//! The web UI: in a real browser (headless Chromium through chromedriver) against a real OIDC
//! provider (`oidc-provider`), and over plain HTTP for CSRF, hostile text, redirects, cookies,
//! the CLI login code and rate limits.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, Locator};
use sallyport::domain::{Channel, Principal};
use sallyport::store::{TokenScope, WriteCtx};
use serde_json::Value;

use crate::browser_harness::{
    Browser, OidcProvider, oidc_http_sign_in, oidc_sign_in, screenshot, screenshot_full, set_width,
};
use crate::harness::{Server, Target, eventually, free_port};

fn config(port: u16, db: &str, target: &str, oidc: Option<(&str, &str)>) -> String {
    let oidc = oidc.map_or(String::new(), |(issuer, client)| {
        format!(
            r#"
[oidc]
issuer = "{issuer}"
client_id = "{client}"
client_secret_secret = "oidc"
scopes = ["openid", "email", "profile", "groups"]
id_claim = "preferred_username"
display_name = "Test IdP"
[secrets.oidc]
file = "oidc-secret"
"#
        )
    });
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[database]
url = "{db}"
[auth]
admin_groups = ["platform-admins"]
auditor_groups = ["platform-admins"]
[plugins.capabilities.http.http]
allow = ["http://127.0.0.1:*"]
{oidc}
[[entitlements]]
id = "app/deploy"
description = "Deploy to production (a team lead approves)"
max_duration = "2h"
requester_groups = ["eng"]
[entitlements.connector]
plugin = "http"
[entitlements.connector.settings]
grant = {{ method = "PUT", url = "{target}/grants/{{{{request.id}}}}", body = {{ user = "{{{{requester.id}}}}" }} }}
revoke = {{ method = "DELETE", url = "{target}/grants/{{{{request.id}}}}" }}
[entitlements.approval]
plugin = "quorum"
settings = {{ stages = [{{ name = "team lead", groups = ["leads"], count = 1 }}] }}

[[entitlements]]
id = "db/prod"
description = "Production database, read-write (two leads approve)"
max_duration = "1h"
default_duration = "15m"
ticket_required = true
requester_groups = ["eng"]
[entitlements.connector]
plugin = "http"
[entitlements.connector.settings]
grant = {{ method = "PUT", url = "{target}/grants/{{{{request.id}}}}", body = {{ user = "{{{{requester.id}}}}" }} }}
revoke = {{ method = "DELETE", url = "{target}/grants/{{{{request.id}}}}" }}
[entitlements.approval]
plugin = "quorum"
settings = {{ stages = [{{ name = "two leads", groups = ["leads"], count = 2 }}] }}
"#
    )
}

pub(crate) async fn text(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("element {css}: {e}"))
        .text()
        .await
        .expect("text")
}

pub(crate) async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("element {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn sign_in(c: &Client, base: &str, who: &str) {
    c.goto(&format!("{base}/signin")).await.expect("signin");
    click(c, "#signin-oidc").await;
    oidc_sign_in(c, who).await.expect("provider sign-in");
    let name = text(c, ".who").await;
    assert!(!name.is_empty(), "signed in as {who}");
}

/// The page shown is no wider than the window: nothing scrolls sideways.
async fn assert_fits(c: &Client, what: &str) {
    let w = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("js");
    let (Some(scroll), Some(inner)) = (w[0].as_u64(), w[1].as_u64()) else {
        panic!("{what}: no widths: {w}");
    };
    assert!(
        scroll <= inner,
        "{what} is {scroll} px wide in a {inner} px window"
    );
}

async fn sign_out(c: &Client) {
    click(c, ".signout button").await;
    let _ = text(c, "#signin-oidc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_request_approve_end_and_cli_login() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let Some(idp) = OidcProvider::start(&[format!("{base}/auth/callback")]).await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let c = browser.client.clone();
    // Every screenshot at the same viewport: 1280 x 900 CSS pixels.
    set_width(&c, 1280, 900).await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("oidc-secret"), &idp.client_secret).expect("secret");
    let target = Target::start().await;
    let db = format!("sqlite://{}", dir.path().join("web.db").display());
    let server = Server::start_in(
        &config(
            port,
            &db,
            &target.url(),
            Some((&idp.issuer, &idp.client_id)),
        ),
        dir.path(),
    )
    .await;
    assert_eq!(server.url(), base);

    // Not signed in: every page leads to sign-in.
    c.goto(&format!("{base}/approvals")).await.expect("goto");
    let _ = text(&c, "#signin-oidc").await;
    screenshot(&c, "signin").await;

    // alice signs in (and lands where she was going) and asks; before submitting, the page
    // names the approvers.
    click(&c, "#signin-oidc").await;
    oidc_sign_in(&c, "alice").await.expect("provider sign-in");
    let _ = text(&c, ".who").await;
    assert_eq!(c.current_url().await.expect("url").path(), "/approvals");
    c.goto(&format!("{base}/requests/new?entitlement=app%2Fdeploy"))
        .await
        .expect("new");
    let hostile = "<script>window.__pwned = 1</script> deploy hotfix INC-7";
    c.find(Locator::Css("#duration"))
        .await
        .expect("duration")
        .send_keys("30m")
        .await
        .expect("type");
    c.find(Locator::Css("#justification"))
        .await
        .expect("justification")
        .send_keys(hostile)
        .await
        .expect("type");
    click(&c, "#preview").await;
    let preview = text(&c, "#preview-result").await;
    assert!(preview.contains("team lead"), "{preview}");
    assert!(preview.contains("group leads"), "{preview}");
    screenshot_full(&c, "new-request").await;
    click(&c, "#submit").await;
    let state = text(&c, "#request-state").await;
    assert_eq!(state, "pending");
    let request_url = c.current_url().await.expect("url");
    let id = request_url
        .path()
        .trim_start_matches("/requests/")
        .to_owned();
    // The hostile justification is text, and its script never ran.
    assert_eq!(text(&c, "#justification").await, hostile);
    let pwned = c
        .execute("return window.__pwned === undefined;", vec![])
        .await
        .expect("js");
    assert_eq!(pwned, Value::Bool(true), "an injected script ran");
    screenshot_full(&c, "request-pending").await;
    sign_out(&c).await;

    // bob (a lead) sees one approval waiting, and approves.
    sign_in(&c, &base, "bob").await;
    assert!(text(&c, "#approvals-count").await.starts_with('1'));
    c.goto(&format!("{base}/approvals"))
        .await
        .expect("approvals");
    screenshot(&c, "approvals").await;
    click(&c, &format!("a[href='/requests/{id}']")).await;
    c.find(Locator::Css("#comment"))
        .await
        .expect("comment")
        .send_keys("go ahead")
        .await
        .expect("type");
    click(&c, "#approve").await;
    let _ = text(&c, ".flash").await;
    sign_out(&c).await;

    // alice sees it active with a live countdown, and ends it early.
    sign_in(&c, &base, "alice").await;
    eventually("active", Duration::from_secs(20), || async {
        c.goto(&format!("{base}/")).await.is_ok()
            && c.find(Locator::Css(".grant .countdown")).await.is_ok()
    })
    .await;
    let first = text(&c, ".grant .countdown").await;
    assert!(first.contains("left"), "{first}");
    // The script ticks every second: the text changes to m:ss.
    eventually("countdown ticks", Duration::from_secs(5), || async {
        let t = text(&c, ".grant .countdown").await;
        t.contains(':') && t.ends_with("left")
    })
    .await;
    screenshot(&c, "home-active").await;
    set_width(&c, 390, 844).await;
    assert_fits(&c, "home with an active grant at phone width").await;
    screenshot(&c, "home-phone").await;
    set_width(&c, 1280, 900).await;
    click(&c, ".grant button.danger").await;
    assert_eq!(text(&c, "#request-state").await, "ended");
    eventually(
        "access removed at the target",
        Duration::from_secs(20),
        || async { !target.has_grant(&id) },
    )
    .await;
    screenshot_full(&c, "request-ended").await;

    // The CLI signs in through this browser session.
    let home = dir.path().join("cli-home");
    let mut cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args([
            "login",
            "--server",
            &base,
            "--no-browser",
            "--timeout",
            "60s",
        ])
        .env("SALLYPORT_CONFIG_DIR", home.join("config"))
        .env("HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sallyport login");
    let stderr = cli.stderr.take().expect("stderr");
    let (url, rest_of_stderr) = {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut found = None;
        for _ in 0..20 {
            match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
                Ok(Ok(Some(l))) if l.trim().starts_with("http") => {
                    found = Some(l.trim().to_owned());
                    break;
                }
                Ok(Ok(Some(_))) => {}
                _ => break,
            }
        }
        // Keep what the CLI says afterwards, for the failure message.
        let rest = tokio::spawn(async move {
            let mut all = String::new();
            for _ in 0..200 {
                match lines.next_line().await {
                    Ok(Some(l)) => {
                        all.push_str(&l);
                        all.push('\n');
                    }
                    _ => break,
                }
            }
            all
        });
        (found.expect("the CLI printed a sign-in URL"), rest)
    };
    c.goto(&url).await.expect("cli login page");
    screenshot(&c, "cli-login").await;
    click(&c, "#authorize").await;
    let out = tokio::time::timeout(Duration::from_secs(30), cli.wait_with_output())
        .await
        .expect("the CLI finished")
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = rest_of_stderr.await.unwrap_or_default();
    assert!(
        out.status.success(),
        "login failed: {stdout}; stderr: {stderr}"
    );
    assert!(stdout.contains("as alice"), "{stdout}");
    let who = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["whoami", "--server", &base])
        .env("SALLYPORT_CONFIG_DIR", home.join("config"))
        .env("HOME", &home)
        .output()
        .expect("whoami");
    assert!(
        who.status.success(),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    assert!(String::from_utf8_lossy(&who.stdout).contains("alice"));
    // ... and the token is listed, and revocable, in the UI.
    c.goto(&format!("{base}/tokens")).await.expect("tokens");
    let tokens = text(&c, "table").await;
    assert!(tokens.contains("CLI / API token"), "{tokens}");
    screenshot(&c, "tokens").await;
    sign_out(&c).await;

    // dave (admin, auditor) reads the audit log.
    sign_in(&c, &base, "dave").await;
    c.goto(&format!("{base}/audit?entitlement=app%2Fdeploy"))
        .await
        .expect("audit");
    let log = text(&c, "table").await;
    assert!(
        log.contains("request.approved") || log.contains("review"),
        "{log}"
    );
    screenshot(&c, "audit").await;
    c.goto(&format!("{base}/entitlements"))
        .await
        .expect("catalog");
    screenshot(&c, "catalog").await;

    // At phone width no main page scrolls sideways.
    set_width(&c, 390, 844).await;
    let detail = format!("/requests/{id}");
    for path in [
        "/",
        "/requests/new",
        detail.as_str(),
        "/approvals",
        "/entitlements",
        "/audit",
        "/tokens",
    ] {
        c.goto(&format!("{base}{path}")).await.expect("goto");
        let _ = text(&c, "h1").await;
        assert_fits(&c, &format!("{path} at 390 px")).await;
    }
    // The check can fail: a page made too wide is caught.
    let wide = c
        .execute(
            "const d = document.createElement('div'); d.style.width = '2000px'; \
             d.textContent = 'wide'; document.body.appendChild(d); \
             return document.documentElement.scrollWidth > window.innerWidth;",
            vec![],
        )
        .await
        .expect("js");
    assert_eq!(wide, Value::Bool(true), "the width check sees nothing");
    set_width(&c, 1280, 900).await;

    browser.close().await;
    server.stop().await;
    drop(idp);
}

/// A browser session for `user` without a browser: the cookie and its CSRF token.
pub(crate) async fn session(server: &Server, user: &str, groups: &[&str]) -> (String, String) {
    let p = Principal {
        id: user.into(),
        email: None,
        name: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    let (token, _) = server
        .app
        .service
        .issue_scoped_token(
            &p,
            "test",
            3600,
            TokenScope::Web,
            Channel::Web,
            &WriteCtx::default(),
        )
        .await
        .expect("session");
    let csrf = sallyport::http::web::csrf_for(&token);
    (format!("sallyport_session={token}"), csrf)
}

/// A server on the tests' web configuration over SQLite, with its target; keep the directory
/// alive as long as the server.
async fn web_server() -> (tempfile::TempDir, Target, Server) {
    let dir = tempfile::tempdir().expect("dir");
    let target = Target::start().await;
    let db = format!("sqlite://{}", dir.path().join("web.db").display());
    let server = Server::start_in(&config(0, &db, &target.url(), None), dir.path()).await;
    (dir, target, server)
}

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn forms_need_csrf_text_is_inert_and_redirects_stay_local() {
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let (cookie, csrf) = session(&server, "alice", &["eng"]).await;
    let count = || async {
        server
            .app
            .service
            .store()
            .list_requests(&sallyport::store::RequestFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("list")
            .len()
    };
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)> fix INC-1";
    let form = [
        ("entitlement", "app/deploy"),
        ("duration", "30m"),
        ("justification", hostile),
    ];

    // No CSRF token, or a wrong one: refused with a page, nothing written.
    for token in [None, Some("0000")] {
        let mut f: Vec<(&str, &str)> = form.to_vec();
        if let Some(t) = token {
            f.push(("csrf", t));
        }
        let res = http
            .post(format!("{base}/requests"))
            .header("cookie", &cookie)
            .form(&f)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 403);
        let body = res.text().await.expect("body");
        assert!(body.contains("security token"), "{body}");
        assert!(
            body.contains("request-id"),
            "error pages show the request id"
        );
    }
    assert_eq!(count().await, 0, "a refused form writes nothing");

    // With the token: filed, and the hostile text is escaped on every page that shows it.
    let mut f: Vec<(&str, &str)> = form.to_vec();
    f.push(("csrf", &csrf));
    let res = http
        .post(format!("{base}/requests"))
        .header("cookie", &cookie)
        .form(&f)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 303);
    let loc = res.headers()["location"].to_str().expect("loc").to_owned();
    assert!(loc.starts_with("/requests/"));
    assert_eq!(count().await, 1);
    let res = http
        .get(format!("{base}{loc}"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("frame-ancestors 'none'")
            && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert!(
        !res.headers().contains_key("strict-transport-security"),
        "HSTS over plain http"
    );
    let page = res.text().await.expect("page");
    assert!(!page.contains("<script>alert"), "raw script in the page");
    assert!(!page.contains("<img src=x"), "raw tag in the page");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    // Sign-in never sends anyone off-site afterwards.
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let res = http
            .get(format!(
                "{base}/signin?next={}",
                sallyport::http::web::enc(evil)
            ))
            .send()
            .await
            .expect("signin");
        let body = res.text().await.expect("body");
        assert!(!body.contains("evil.example"), "next={evil} kept: {body}");
    }
    // A page that needs sign-in sends back to itself only.
    let res = http
        .get(format!("{base}/approvals"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/signin?next=%2Fapprovals");

    // Cookies: HttpOnly, SameSite=Lax; Secure relaxed only because this is http on loopback.
    let res = http
        .get(format!("{base}/signin"))
        .send()
        .await
        .expect("signin");
    let set = res.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "{set}");

    // A session cookie is no API token, and an API token opens no browser session.
    let token = cookie.trim_start_matches("sallyport_session=");
    let res = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("me");
    assert_eq!(res.status(), 401);
    let alice = Principal {
        id: "alice".into(),
        email: None,
        name: None,
        groups: vec!["eng".into()],
    };
    let (api, _) = server
        .app
        .service
        .issue_token(&alice, "api", 3600, Channel::Api, &WriteCtx::default())
        .await
        .expect("api token");
    let res = http
        .get(format!("{base}/"))
        .header("cookie", format!("sallyport_session={api}"))
        .send()
        .await
        .expect("home");
    assert_eq!(res.status(), 303, "an API token is not a session");

    // Tokens expire, and a revoked one stops working at once.
    let (expired, _) = server
        .app
        .service
        .issue_token(&alice, "short", 0, Channel::Api, &WriteCtx::default())
        .await
        .expect("token");
    let me = |t: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/me");
        async move {
            http.get(url)
                .bearer_auth(t)
                .send()
                .await
                .expect("me")
                .status()
        }
    };
    assert_eq!(me(expired).await, 401, "an expired token works");
    assert_eq!(me(api.clone()).await, 200);
    let caller = server.app.service.authenticate(&api).await.expect("caller");
    let id = caller.token_id.clone().expect("token id");
    server
        .app
        .service
        .revoke_token(&caller, &id, &WriteCtx::default())
        .await
        .expect("revoke");
    assert_eq!(me(api).await, 401, "a revoked token works");

    // Unknown pages are HTML for browsers, JSON for the API.
    let res = http
        .get(format!("{base}/nope"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("404");
    assert_eq!(res.status(), 404);
    assert!(res.text().await.expect("body").contains("request-id"));

    server.stop().await;
}

#[tokio::test]
async fn cli_login_codes_are_single_use_and_bound_to_the_verifier() {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let (cookie, csrf) = session(&server, "alice", &["eng"]).await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode([7u8; 32]);
    let challenge = b64.encode(Sha256::digest(verifier.as_bytes()));
    let state = "s".repeat(32);
    let get_code = || async {
        let res = http
            .post(format!("{base}/cli/login"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("port", "45678"),
                ("state", state.as_str()),
                ("code_challenge", challenge.as_str()),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 303);
        let loc = url::Url::parse(res.headers()["location"].to_str().expect("loc")).expect("url");
        assert_eq!(loc.host_str(), Some("127.0.0.1"), "only back to loopback");
        assert_eq!(loc.port(), Some(45678));
        loc.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("code")
    };
    let token_url = format!("{base}/api/v1/cli/token");
    let exchange = |code: String, verifier: String| {
        let token_url = token_url.clone();
        async move {
            let res = no_redirects()
                .post(token_url)
                .json(&serde_json::json!({ "code": code, "code_verifier": verifier }))
                .send()
                .await
                .expect("exchange");
            (
                res.status().as_u16(),
                res.json::<Value>().await.expect("json"),
            )
        }
    };

    // A port below 1024, or a malformed challenge: refused.
    let res = http
        .get(format!(
            "{base}/cli/login?port=80&state={state}&code_challenge={challenge}"
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 400);

    // A wrong verifier fails and uses the code up.
    let code = get_code().await;
    let (status, _) = exchange(code.clone(), b64.encode([8u8; 32])).await;
    assert_eq!(status, 401);
    let (status, _) = exchange(code, verifier.clone()).await;
    assert_eq!(status, 401, "a code works once, even after a failure");

    // The right verifier: a token for alice, once.
    let code = get_code().await;
    let (status, body) = exchange(code.clone(), verifier.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["id"], "alice");
    let token = body["token"].as_str().expect("token").to_owned();
    let me = http
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);
    let (status, _) = exchange(code, verifier).await;
    assert_eq!(status, 401, "replayed");

    // Sign-in endpoints are rate limited per client address.
    let mut limited = false;
    for _ in 0..40 {
        let res = http
            .post(format!("{base}/api/v1/cli/token"))
            .json(&serde_json::json!({ "code": "x", "code_verifier": "y".repeat(43) }))
            .send()
            .await
            .expect("exchange");
        if res.status() == 429 {
            assert!(res.headers().contains_key("retry-after"), "no Retry-After");
            limited = true;
            break;
        }
    }
    assert!(limited, "no rate limit on sign-in");
    server.stop().await;
}

/// The `#` column of the audit page's rows, top to bottom.
fn audit_seqs(page: &str) -> Vec<i64> {
    let body = page.split("<tbody>").nth(1).unwrap_or_default();
    body.split("<tr><td>")
        .skip(1)
        .filter_map(|r| r.split("</td>").next()?.trim().parse().ok())
        .collect()
}

/// GET a page with a session cookie: (status, body).
pub(crate) async fn page(http: &reqwest::Client, url: &str, cookie: &str) -> (u16, String) {
    let res = http
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    (res.status().as_u16(), res.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_page_shows_the_newest_events_and_the_export_has_them_all() {
    use sallyport::domain::Event;
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let store = server.app.service.store().clone();

    // More old events than the store hands out in one read (10,000), all in 1970.
    const FILLER: i64 = 10_050;
    let filler = |i: i64| Event {
        at: 1_000_000 + i,
        actor: "system".into(),
        action: "test.filler".into(),
        subject: "token:filler".into(),
        before: Value::Null,
        after: Value::Null,
        channel: Channel::System,
        plugin: None,
    };
    for chunk in (0..FILLER).collect::<Vec<_>>().chunks(2_000) {
        let events: Vec<Event> = chunk.iter().map(|i| filler(*i)).collect();
        store
            .append_events(&events, &WriteCtx::default())
            .await
            .expect("append");
    }
    // Then alice files a request: the newest events.
    let (alice, alice_csrf) = session(&server, "alice", &["eng"]).await;
    let res = http
        .post(format!("{base}/requests"))
        .header("cookie", &alice)
        .form(&[
            ("csrf", alice_csrf.as_str()),
            ("entitlement", "app/deploy"),
            ("duration", "30m"),
            ("justification", "audit me"),
        ])
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 303);
    let id = res.headers()["location"]
        .to_str()
        .expect("loc")
        .trim_start_matches("/requests/")
        .to_owned();
    let (dave, _) = session(&server, "dave", &["platform-admins"]).await;
    let total = store.counts().await.expect("counts").audit_events;
    assert!(total > FILLER + 2, "{total}");

    // The page: the newest events first, a page of them.
    let (status, html) = page(&http, &format!("{base}/audit"), &dave).await;
    assert_eq!(status, 200, "{html}");
    let seqs = audit_seqs(&html);
    assert_eq!(seqs.len(), 500, "one page");
    assert_eq!(seqs[0], total, "the newest event is on top");
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert!(html.contains(&format!("/requests/{id}")), "alice's request");

    // The person filter, and the entitlement filter.
    let (_, html) = page(&http, &format!("{base}/audit?actor=alice"), &dave).await;
    let mine = audit_seqs(&html);
    assert!(!mine.is_empty() && mine.len() < 10, "{mine:?}");
    assert!(!html.contains("test.filler") && html.contains("request.created"));
    let (_, html) = page(
        &http,
        &format!("{base}/audit?entitlement=app%2Fdeploy"),
        &dave,
    )
    .await;
    assert!(html.contains("request.created") && !html.contains("test.filler"));
    // The time filters: before 2000 only the filler, since 2000 none of it.
    let (_, html) = page(
        &http,
        &format!("{base}/audit?until=2000-01-01T00:00:00Z"),
        &dave,
    )
    .await;
    let old = audit_seqs(&html);
    assert_eq!(old.first(), Some(&FILLER), "the newest of the filler");
    assert!(!html.contains("request.created"));
    let (_, html) = page(
        &http,
        &format!("{base}/audit?since=2000-01-01T00:00:00Z"),
        &dave,
    )
    .await;
    let new = audit_seqs(&html);
    assert_eq!(new.len() as i64, total - FILLER, "{new:?}");
    assert!(!html.contains("test.filler"));
    // A malformed time is said so, not ignored.
    let (status, html) = page(&http, &format!("{base}/audit?since=yesterday"), &dave).await;
    assert_eq!(status, 200);
    assert!(audit_seqs(&html).is_empty() && html.contains("role=\"alert\""));

    // The export: every event, in chain order, beyond any one read of the store.
    let res = http
        .get(format!("{base}/audit/export.jsonl"))
        .header("cookie", &dave)
        .send()
        .await
        .expect("export");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let body = res.text().await.expect("body");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len() as i64, total, "the whole log");
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| l["seq"].as_i64() == Some(i as i64 + 1)),
        "chain order, nothing skipped"
    );
    // ... with the page's filters.
    let (_, body) = page(
        &http,
        &format!("{base}/audit/export.jsonl?actor=alice&since=2000-01-01T00:00:00Z"),
        &dave,
    )
    .await;
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), mine.len());
    assert!(lines.iter().all(|l| l["actor"] == "user:alice"), "{body}");

    // Not an auditor: neither the page nor the export.
    for path in ["/audit", "/audit/export.jsonl"] {
        let (status, body) = page(&http, &format!("{base}{path}"), &alice).await;
        assert_eq!(status, 403, "{path}");
        assert!(!body.contains("test.filler"), "{path}");
    }
    server.stop().await;
}

/// POST a form with a session cookie: (status, Location).
pub(crate) async fn post_form(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let res = http
        .post(url)
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .expect("post");
    let loc = res
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (res.status().as_u16(), loc)
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server() {
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let (cookie, csrf) = session(&server, "alice", &["eng"]).await;
    assert_eq!(page(&http, &format!("{base}/"), &cookie).await.0, 200);

    // Without the CSRF token, sign-out is refused and the session lives on.
    let (status, _) = post_form(&http, &format!("{base}/signout"), &cookie, &[]).await;
    assert_eq!(status, 403);
    assert_eq!(page(&http, &format!("{base}/"), &cookie).await.0, 200);

    let res = http
        .post(format!("{base}/signout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("signout");
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/signin?error=signed_out");
    let cleared = res.headers()["set-cookie"].to_str().expect("cookie");
    assert!(
        cleared.starts_with("sallyport_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // The browser may keep the old cookie (or someone may have copied it): it opens nothing.
    let res = http
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("home");
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/signin?next=%2F");
    let (status, loc) = post_form(
        &http,
        &format!("{base}/requests"),
        &cookie,
        &[
            ("csrf", csrf.as_str()),
            ("entitlement", "app/deploy"),
            ("justification", "after sign-out"),
        ],
    )
    .await;
    assert_eq!((status, loc.as_str()), (303, "/signin?next=%2F"));
    server.stop().await;
}

/// File a request through the web form as the session `cookie`; its id.
pub(crate) async fn file_request(
    http: &reqwest::Client,
    base: &str,
    (cookie, csrf): (&str, &str),
    form: &[(&str, &str)],
) -> String {
    let mut f = form.to_vec();
    f.push(("csrf", csrf));
    let (status, loc) = post_form(http, &format!("{base}/requests"), cookie, &f).await;
    assert_eq!(status, 303, "filing {form:?}");
    loc.trim_start_matches("/requests/").to_owned()
}

#[tokio::test]
async fn the_review_form_is_offered_only_to_those_who_may_still_review() {
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let alice = session(&server, "alice", &["eng"]).await;
    let bob = session(&server, "bob", &["leads"]).await;
    let bill = session(&server, "bill", &["leads"]).await;
    let carol = session(&server, "carol", &["security"]).await;
    // Two leads must approve.
    let id = file_request(
        &http,
        &base,
        (&alice.0, &alice.1),
        &[
            ("entitlement", "db/prod"),
            ("justification", "migrate"),
            ("ticket", "INC-9"),
        ],
    )
    .await;
    let url = format!("{base}/requests/{id}");
    let offered = |html: &str| html.contains("id=\"approve\"") && html.contains("id=\"deny\"");

    let (_, html) = page(&http, &url, &bob.0).await;
    assert!(offered(&html), "bob is eligible");
    let (_, html) = page(&http, &url, &carol.0).await;
    assert!(!offered(&html), "carol is not a lead");
    let (_, html) = page(&http, &url, &alice.0).await;
    assert!(!offered(&html), "the requester (no break-glass)");

    // bob approves; the request still waits for a second lead.
    let (status, loc) = post_form(
        &http,
        &format!("{url}/review"),
        &bob.0,
        &[("csrf", &bob.1), ("verdict", "approve"), ("comment", "ok")],
    )
    .await;
    assert_eq!(
        (status, loc.as_str()),
        (303, &*format!("/requests/{id}?done=reviewed"))
    );
    let (_, html) = page(&http, &url, &bob.0).await;
    assert!(
        html.contains("id=\"request-state\">pending<"),
        "still pending"
    );
    assert!(!offered(&html), "bob has reviewed: no second form");
    let (_, html) = page(&http, &url, &bill.0).await;
    assert!(offered(&html), "bill, the other lead, still may");
    // And the service refuses bob's second review anyway.
    let (status, _) = post_form(
        &http,
        &format!("{url}/review"),
        &bob.0,
        &[("csrf", &bob.1), ("verdict", "approve")],
    )
    .await;
    assert!((400..500).contains(&status), "{status}");
    server.stop().await;
}

/// The value of the hidden `csrf` field of the form posting to `action` in `html`.
pub(crate) fn form_csrf(html: &str, action: &str) -> String {
    let form = html
        .split("<form")
        .skip(1)
        .find(|f| f.contains(&format!("action=\"{action}\"")))
        .unwrap_or_else(|| panic!("no form posting to {action} in:\n{html}"));
    form.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("the form posting to {action} has no CSRF field"))
        .to_owned()
}

async fn stored(server: &Server, id: &str) -> sallyport::domain::Request {
    server
        .app
        .service
        .store()
        .get_request(id)
        .await
        .expect("get")
        .expect("exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_cancel_deny_revoke_and_the_timeline() {
    let (_dir, target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let alice = session(&server, "alice", &["eng"]).await;
    let bob = session(&server, "bob", &["leads"]).await;
    // bill leads too, but does not review.
    let bill = session(&server, "bill", &["leads"]).await;
    let deploy = [
        ("entitlement", "app/deploy"),
        ("duration", "30m"),
        ("justification", "ship it"),
    ];

    // Cancel: only with the token, only the requester; then it is withdrawn.
    let id = file_request(&http, &base, (&alice.0, &alice.1), &deploy).await;
    let cancel = format!("{base}/requests/{id}/cancel");
    let (status, _) = post_form(&http, &cancel, &alice.0, &[]).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, _) = post_form(&http, &cancel, &bob.0, &[("csrf", &bob.1)]).await;
    assert!(
        (400..500).contains(&status),
        "bob cancelled alice's request"
    );
    assert_eq!(stored(&server, &id).await.state.as_str(), "pending");
    let (_, html) = page(&http, &format!("{base}/requests/{id}"), &alice.0).await;
    assert_eq!(form_csrf(&html, &format!("/requests/{id}/cancel")), alice.1);
    let (status, loc) = post_form(&http, &cancel, &alice.0, &[("csrf", &alice.1)]).await;
    assert_eq!(
        (status, loc),
        (303, format!("/requests/{id}?done=cancelled"))
    );
    assert_eq!(stored(&server, &id).await.state.as_str(), "cancelled");
    let (_, html) = page(
        &http,
        &format!("{base}{}", format_args!("/requests/{id}?done=cancelled")),
        &alice.0,
    )
    .await;
    assert!(html.contains("Your request is withdrawn."), "{html}");
    assert!(
        !html.contains(&format!("/requests/{id}/cancel")),
        "nothing left to cancel"
    );

    // Deny: a denial needs a comment; with one, it is denied and the comment shown.
    let id = file_request(&http, &base, (&alice.0, &alice.1), &deploy).await;
    let review = format!("{base}/requests/{id}/review");
    let res = http
        .post(&review)
        .header("cookie", &bob.0)
        .form(&[
            ("csrf", bob.1.as_str()),
            ("verdict", "deny"),
            ("comment", "  "),
        ])
        .send()
        .await
        .expect("deny");
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("A denial needs a reason")
    );
    assert_eq!(stored(&server, &id).await.state.as_str(), "pending");
    let (status, _) = post_form(
        &http,
        &review,
        &bob.0,
        &[
            ("csrf", &bob.1),
            ("verdict", "deny"),
            ("comment", "not during the freeze"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(stored(&server, &id).await.state.as_str(), "denied");
    // The requester's page: the review with its comment, and a timeline from the audit log.
    let (_, html) = page(&http, &format!("{base}/requests/{id}"), &alice.0).await;
    let reviews = html
        .split("id=\"rev-h\"")
        .nth(1)
        .expect("a reviews section");
    assert!(
        reviews.contains("<strong>bob</strong> denied")
            && reviews.contains("not during the freeze"),
        "{reviews}"
    );
    let timeline = html.split("class=\"timeline\"").nth(1).expect("a timeline");
    let timeline = timeline.split("</ol>").next().unwrap_or_default();
    for (action, actor) in [
        ("request.created", "user:alice"),
        ("review.denied", "user:bob"),
        ("request.denied", ""),
    ] {
        let line = timeline
            .split("<li>")
            .find(|l| l.contains(&format!("<strong>{action}</strong>")))
            .unwrap_or_else(|| panic!("{action} not in the timeline: {timeline}"));
        assert!(line.contains(actor), "{line}");
    }
    let events = server
        .app
        .service
        .store()
        .audit(&sallyport::store::AuditFilter {
            subject: Some(id.clone()),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        timeline.matches("<li>").count(),
        events.len(),
        "every event of the request"
    );

    // Revoke: not by a bystander; by its approver, with a reason; the access goes.
    let id = file_request(&http, &base, (&alice.0, &alice.1), &deploy).await;
    let (status, _) = post_form(
        &http,
        &format!("{base}/requests/{id}/review"),
        &bob.0,
        &[("csrf", &bob.1), ("verdict", "approve")],
    )
    .await;
    assert_eq!(status, 303);
    eventually("active", Duration::from_secs(20), || async {
        stored(&server, &id).await.state.as_str() == "active"
    })
    .await;
    assert!(target.has_grant(&id));
    let revoke = format!("{base}/requests/{id}/revoke");
    let (_, html) = page(&http, &format!("{base}/requests/{id}"), &bill.0).await;
    assert!(
        !html.contains(&format!("/requests/{id}/revoke")),
        "offered to bill"
    );
    let (status, _) = post_form(
        &http,
        &revoke,
        &bill.0,
        &[("csrf", &bill.1), ("reason", "x")],
    )
    .await;
    // bill neither approved nor is an admin: the decided request is not even his to see.
    assert_eq!(status, 404, "bill revoked");
    let (status, _) = post_form(&http, &revoke, &bob.0, &[("reason", "suspicious")]).await;
    assert_eq!(status, 403, "no CSRF token");
    assert_eq!(stored(&server, &id).await.state.as_str(), "active");
    let (_, html) = page(&http, &format!("{base}/requests/{id}"), &bob.0).await;
    assert_eq!(form_csrf(&html, &format!("/requests/{id}/revoke")), bob.1);
    let (status, loc) = post_form(
        &http,
        &revoke,
        &bob.0,
        &[("csrf", &bob.1), ("reason", "suspicious activity")],
    )
    .await;
    assert_eq!((status, loc), (303, format!("/requests/{id}?done=revoked")));
    assert_eq!(stored(&server, &id).await.state.as_str(), "revoked");
    eventually(
        "access removed at the target",
        Duration::from_secs(20),
        || async { !target.has_grant(&id) },
    )
    .await;
    let (_, html) = page(&http, &format!("{base}/requests/{id}"), &alice.0).await;
    assert!(
        html.contains("suspicious activity") && html.contains("<strong>request.revoked</strong>")
    );
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_revoked_from_the_tokens_page() {
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let alice = session(&server, "alice", &["eng"]).await;
    let bob = session(&server, "bob", &["leads"]).await;
    let p = Principal {
        id: "alice".into(),
        email: None,
        name: None,
        groups: vec!["eng".into()],
    };
    let (api, rec) = server
        .app
        .service
        .issue_token(&p, "laptop cli", 3600, Channel::Api, &WriteCtx::default())
        .await
        .expect("token");
    let me = || async {
        http.get(format!("{base}/api/v1/me"))
            .bearer_auth(&api)
            .send()
            .await
            .expect("me")
            .status()
            .as_u16()
    };
    assert_eq!(me().await, 200);
    let (_, html) = page(&http, &format!("{base}/tokens"), &alice.0).await;
    assert!(html.contains("laptop cli"), "{html}");
    let action = format!("/tokens/{}/revoke", rec.id);
    assert_eq!(form_csrf(&html, &action), alice.1);
    let url = format!("{base}{action}");

    // Not without the token, not by someone else.
    let (status, _) = post_form(&http, &url, &alice.0, &[]).await;
    assert_eq!(status, 403);
    let (status, _) = post_form(&http, &url, &bob.0, &[("csrf", &bob.1)]).await;
    assert_eq!(status, 404, "bob revoked alice's token");
    assert_eq!(me().await, 200);

    let (status, loc) = post_form(&http, &url, &alice.0, &[("csrf", &alice.1)]).await;
    assert_eq!((status, loc.as_str()), (303, "/tokens?done=token_revoked"));
    assert_eq!(me().await, 401, "the API refuses a revoked token");
    let (_, html) = page(&http, &format!("{base}/tokens"), &alice.0).await;
    let row = html
        .split("<tr>")
        .find(|r| r.contains("laptop cli"))
        .expect("still listed");
    assert!(row.contains("revoked") && !row.contains(&action), "{row}");
    let (status, _) = post_form(&http, &url, &alice.0, &[("csrf", &alice.1)]).await;
    assert_eq!(status, 404, "only once");
    server.stop().await;
}

#[tokio::test]
async fn the_dev_user_picker_works_only_in_dev_mode_and_checks_csrf() {
    use sallyport::app::Options;
    let dir = tempfile::tempdir().expect("dir");
    let target = Target::start().await;
    let db = format!("sqlite://{}", dir.path().join("dev.db").display());
    let policy = crate::harness::policy(&db, &target.url(), &Default::default());
    let server = Server::start_with(
        &policy,
        dir.path(),
        Options {
            dev: true,
            ..Options::default()
        },
    )
    .await;
    let base = server.url();
    let http = no_redirects();

    let res = http
        .get(format!("{base}/signin?next=%2Fapprovals"))
        .send()
        .await
        .expect("signin");
    let pre = res.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pre cookie")
        .to_owned();
    assert!(pre.starts_with("sallyport_pre="), "{pre}");
    let html = res.text().await.expect("page");
    assert!(html.contains("<option value=\"alice\">"), "{html}");
    let csrf = form_csrf(&html, "/signin/dev");
    let signin = format!("{base}/signin/dev");
    let sessions = |res: &reqwest::Response| {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("sallyport_session=") && !c.contains("Max-Age=0"))
            .map(|c| c.split(';').next().unwrap_or_default().to_owned())
    };

    // Without the pre-sign-in cookie's token, or with another browser's: refused.
    for (cookie, token) in [
        (pre.as_str(), ""),
        (pre.as_str(), "0000"),
        ("sallyport_pre=other", csrf.as_str()),
    ] {
        let res = http
            .post(&signin)
            .header("cookie", cookie)
            .form(&[("csrf", token), ("user", "alice"), ("next", "/")])
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), 403);
        assert!(sessions(&res).is_none(), "a session was started");
    }
    // An unknown user: no session either.
    let res = http
        .post(&signin)
        .header("cookie", &pre)
        .form(&[("csrf", csrf.as_str()), ("user", "mallory")])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 404);
    assert!(sessions(&res).is_none());

    // With it: alice, with her directory groups, back where she was going.
    let res = http
        .post(&signin)
        .header("cookie", &pre)
        .form(&[
            ("csrf", csrf.as_str()),
            ("user", "alice"),
            ("next", "/approvals"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/approvals");
    let session = sessions(&res).expect("a session cookie");
    let (status, html) = page(&http, &format!("{base}/requests/new"), &session).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("title=\"alice\"") && html.contains("app/auto"),
        "eng may request"
    );
    server.stop().await;

    // Outside dev mode there is no picker, and the endpoint does not exist.
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("prod.db").display());
    let policy = crate::harness::policy(&db, &target.url(), &Default::default());
    let server = Server::start_in(&policy, dir.path()).await;
    let base = server.url();
    let res = http
        .get(format!("{base}/signin"))
        .send()
        .await
        .expect("signin");
    let pre = res.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pre cookie")
        .to_owned();
    let html = res.text().await.expect("page");
    assert!(!html.contains("/signin/dev") && !html.contains("value=\"alice\""));
    let csrf = sallyport::http::web::csrf_for(pre.trim_start_matches("sallyport_pre="));
    let res = http
        .post(format!("{base}/signin/dev"))
        .header("cookie", &pre)
        .form(&[("csrf", csrf.as_str()), ("user", "alice")])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 404);
    assert!(sessions(&res).is_none());
    server.stop().await;
}

#[tokio::test]
async fn reviews_are_rate_limited_per_reviewer() {
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let alice = session(&server, "alice", &["eng"]).await;
    let bob = session(&server, "bob", &["leads"]).await;
    let bill = session(&server, "bill", &["leads"]).await;
    let id = file_request(
        &http,
        &base,
        (&alice.0, &alice.1),
        &[
            ("entitlement", "db/prod"),
            ("justification", "migrate"),
            ("ticket", "INC-9"),
        ],
    )
    .await;
    let review = format!("{base}/requests/{id}/review");

    // bob's first review counts; then he keeps posting (refused: he has reviewed) until the
    // limit (60 a minute) answers 429 with Retry-After. Bounded: 100 posts at most.
    let started = std::time::Instant::now();
    let mut limited = None;
    for n in 1..=100 {
        let res = http
            .post(&review)
            .header("cookie", &bob.0)
            .form(&[("csrf", bob.1.as_str()), ("verdict", "approve")])
            .send()
            .await
            .expect("review");
        if res.status() == 429 {
            let wait: u64 = res.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("Retry-After in seconds");
            assert!((1..=60).contains(&wait), "{wait}");
            let body = res.text().await.expect("body");
            assert!(
                body.contains("Slow down") && body.contains("request-id"),
                "{body}"
            );
            limited = Some(n);
            break;
        }
        assert!(res.status().is_redirection() || res.status().is_client_error());
        assert!(started.elapsed() < Duration::from_secs(30), "too slow");
    }
    assert_eq!(limited, Some(61), "the 61st review in a minute is refused");
    // The API's review endpoint shares bob's limit.
    let (api, _) = server
        .app
        .service
        .issue_token(
            &Principal {
                id: "bob".into(),
                email: None,
                name: None,
                groups: vec!["leads".into()],
            },
            "cli",
            3600,
            Channel::Api,
            &WriteCtx::default(),
        )
        .await
        .expect("token");
    let res = http
        .post(format!("{base}/api/v1/requests/{id}/reviews"))
        .bearer_auth(&api)
        .json(&serde_json::json!({ "verdict": "approve" }))
        .send()
        .await
        .expect("api review");
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // Per reviewer: bill is not slowed down, and his approval completes the quorum.
    let (status, _) = post_form(
        &http,
        &review,
        &bill.0,
        &[("csrf", &bill.1), ("verdict", "approve")],
    )
    .await;
    assert_eq!(status, 303);
    let r = server
        .app
        .service
        .store()
        .get_request(&id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(r.reviews.len(), 2, "bob once, bill once");
    assert_ne!(r.state.as_str(), "pending");
    server.stop().await;
}

/// The `sallyport_session` cookie a response sets, if any (not a deletion).
fn session_set(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("sallyport_session=") && !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_callbacks_are_single_use_and_bound_to_the_browser() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let Some(idp) = OidcProvider::start(&[format!("{base}/auth/callback")]).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("oidc-secret"), &idp.client_secret).expect("secret");
    let target = Target::start().await;
    let db = format!("sqlite://{}", dir.path().join("web.db").display());
    let server = Server::start_in(
        &config(
            port,
            &db,
            &target.url(),
            Some((&idp.issuer, &idp.client_id)),
        ),
        dir.path(),
    )
    .await;
    let http = no_redirects();
    let sessions_of = |user: &'static str| {
        let store = server.app.service.store().clone();
        async move {
            store
                .list_tokens(user, 100)
                .await
                .expect("tokens")
                .into_iter()
                .filter(|t| t.scope == TokenScope::Web)
                .count()
        }
    };
    // One sign-in at the provider: this browser's pre-sign-in cookie and the callback URL.
    let start = || async {
        let res = http
            .get(format!("{base}/signin?next=%2Ftokens"))
            .send()
            .await
            .expect("signin");
        let pre = res.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .split(';')
            .next()
            .expect("pre")
            .to_owned();
        let res = http
            .get(format!("{base}/signin/oidc?next=%2Ftokens"))
            .header("cookie", &pre)
            .send()
            .await
            .expect("signin/oidc");
        assert_eq!(res.status(), 303);
        let auth = res.headers()["location"].to_str().expect("loc").to_owned();
        (pre, auth)
    };
    let callback = |url: url::Url, cookie: Option<String>| {
        let http = http.clone();
        async move {
            let mut req = http.get(url);
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            req.send().await.expect("callback")
        }
    };

    // The authorization request carries PKCE (S256) and a nonce, and the provider requires
    // PKCE: without a code challenge it refuses.
    let (_, auth) = start().await;
    let u = url::Url::parse(&auth).expect("auth url");
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256"),
        "{auth}"
    );
    assert!(q.contains_key("code_challenge") && q.contains_key("nonce") && q.contains_key("state"));
    let mut bare = u.clone();
    bare.query_pairs_mut()
        .clear()
        .extend_pairs(q.iter().filter(|(k, _)| !k.starts_with("code_challenge")));
    let refused = oidc_http_sign_in(bare.as_str(), "alice").await;
    let refused = match refused {
        Ok(back) => back.to_string(),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("invalid_request"), "{refused}");

    // A callback in a browser without the pre-sign-in cookie: refused, nothing signed in;
    // the state is spent, so the browser that started it cannot finish it either.
    let (pre, auth) = start().await;
    let back = oidc_http_sign_in(&auth, "alice").await.expect("provider");
    assert_eq!(back.path(), "/auth/callback");
    let res = callback(back.clone(), None).await;
    assert_eq!(res.status(), 400);
    assert!(session_set(&res).is_none());
    assert!(res.text().await.expect("body").contains("another browser"));
    let res = callback(back, Some(pre)).await;
    assert_eq!(res.status(), 400, "a refused state stays spent");
    assert!(session_set(&res).is_none());
    // ... or with another browser's pre-sign-in cookie.
    let (_, auth) = start().await;
    let back = oidc_http_sign_in(&auth, "alice").await.expect("provider");
    let res = callback(back, Some("sallyport_pre=another-browser".into())).await;
    assert_eq!(res.status(), 400);
    assert!(session_set(&res).is_none());
    assert_eq!(sessions_of("alice").await, 0, "nothing is signed in");

    // The browser that started it: signed in, once. The same callback again is refused.
    let (pre, auth) = start().await;
    let back = oidc_http_sign_in(&auth, "alice").await.expect("provider");
    let res = callback(back.clone(), Some(pre.clone())).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/tokens");
    let session = session_set(&res).expect("a session");
    assert_eq!(
        page(&http, &format!("{base}/tokens"), &session).await.0,
        200
    );
    assert_eq!(sessions_of("alice").await, 1);
    let res = callback(back, Some(pre)).await;
    assert_eq!(res.status(), 400, "a reused state");
    assert!(session_set(&res).is_none());
    assert!(
        res.text()
            .await
            .expect("body")
            .contains("unknown, used or expired")
    );
    assert_eq!(sessions_of("alice").await, 1, "the replay signed nobody in");
    server.stop().await;
    drop(idp);
}

/// A browser without JavaScript: it follows redirects, keeps cookies, and submits the forms
/// of the pages it is shown with their hidden fields. Nothing else.
struct FormsOnly {
    http: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
}

impl FormsOnly {
    fn new(base: &str) -> FormsOnly {
        FormsOnly {
            http: no_redirects(),
            base: base.to_owned(),
            cookies: Default::default(),
        }
    }

    fn keep(&mut self, res: &reqwest::Response) {
        for c in res.headers().get_all("set-cookie") {
            let pair = c
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    }

    /// Send, then follow redirects (at most 5): (status, final path, page).
    async fn send(
        &mut self,
        mut path: String,
        mut form: Option<Vec<(String, String)>>,
    ) -> (u16, String, String) {
        for _ in 0..5 {
            let url = format!("{}{path}", self.base);
            let mut req = match form.take() {
                Some(f) => self.http.post(&url).form(&f),
                None => self.http.get(&url),
            };
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header("cookie", jar.join("; "));
            let res = req.send().await.expect("send");
            self.keep(&res);
            if res.status().is_redirection() {
                path = res.headers()["location"]
                    .to_str()
                    .expect("location")
                    .to_owned();
                assert!(path.starts_with('/'), "off-site: {path}");
                continue;
            }
            let status = res.status().as_u16();
            return (status, path, res.text().await.expect("page"));
        }
        panic!("more than 5 redirects");
    }

    async fn get(&mut self, path: &str) -> (u16, String, String) {
        self.send(path.to_owned(), None).await
    }

    /// Submit the form of `html` that posts to `action`: its hidden fields, plus `fields`.
    async fn submit(
        &mut self,
        html: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String, String) {
        let form = html
            .split("<form")
            .skip(1)
            .find(|f| f.contains(&format!("action=\"{action}\"")))
            .unwrap_or_else(|| panic!("no form posting to {action} in:\n{html}"));
        let form = form.split("</form>").next().unwrap_or_default();
        let hidden = regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)""#)
            .expect("regex");
        let mut data: Vec<(String, String)> = hidden
            .captures_iter(form)
            .map(|c| (c[1].to_owned(), unescape(&c[2])))
            .collect();
        assert!(
            data.iter().any(|(k, _)| k == "csrf"),
            "the form to {action} has no CSRF token"
        );
        data.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        self.send(action.to_owned(), Some(data)).await
    }
}

fn unescape(s: &str) -> String {
    s.replace("&#x2F;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn state_of(html: &str) -> String {
    html.split("id=\"request-state\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_default()
        .to_owned()
}

/// Every page works without JavaScript: the whole flow (sign in, request, approve, see it
/// active, end it) through the HTML forms alone, over plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_works_through_plain_html_forms() {
    use sallyport::app::Options;
    let dir = tempfile::tempdir().expect("dir");
    let target = Target::start().await;
    let db = format!("sqlite://{}", dir.path().join("nojs.db").display());
    let policy = crate::harness::policy(&db, &target.url(), &Default::default());
    let dev = Options {
        dev: true,
        ..Options::default()
    };
    let server = Server::start_with(&policy, dir.path(), dev).await;
    let base = server.url();
    let sign_in = |user: &'static str| {
        let base = base.clone();
        async move {
            let mut b = FormsOnly::new(&base);
            let (status, path, html) = b.get("/").await;
            assert_eq!((status, path.as_str()), (200, "/signin?next=%2F"));
            let (status, path, html) = b.submit(&html, "/signin/dev", &[("user", user)]).await;
            assert_eq!((status, path.as_str()), (200, "/"), "{html}");
            assert!(
                html.contains(&format!("title=\"{user}\"")),
                "signed in as {user}"
            );
            b
        }
    };

    // alice asks for app/admin (a lead and security must approve).
    let mut alice = sign_in("alice").await;
    let (_, _, html) = alice.get("/requests/new").await;
    // The "Who must approve?" button: the same form, its `formaction`.
    let (status, _, html) = alice
        .submit(
            &html,
            "/requests/preview",
            &[
                ("entitlement", "app/admin"),
                ("duration", "20m"),
                ("justification", "OPS-1 rotate keys"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        html.contains("id=\"preview-result\"") && html.contains("group security"),
        "{html}"
    );
    // The preview keeps what she typed.
    assert!(html.contains("OPS-1 rotate keys"));
    let (status, path, html) = alice
        .submit(
            &html,
            "/requests",
            &[
                ("entitlement", "app/admin"),
                ("duration", "20m"),
                ("justification", "OPS-1 rotate keys"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert!(path.starts_with("/requests/"), "{path}");
    assert_eq!(state_of(&html), "pending");
    let id = path.trim_start_matches("/requests/").to_owned();
    let page_path = format!("/requests/{id}");
    let (_, path, _) = alice.submit(&html, "/signout", &[]).await;
    assert!(path.starts_with("/signin"), "{path}");

    // bob (lead) and carol (security) approve from their inbox.
    for who in ["bob", "carol"] {
        let mut b = sign_in(who).await;
        let (_, _, inbox) = b.get("/approvals").await;
        assert!(
            inbox.contains(&format!("href=\"{page_path}\"")),
            "{who}'s inbox"
        );
        let (_, _, html) = b.get(&page_path).await;
        let (status, path, html) = b
            .submit(
                &html,
                &format!("{page_path}/review"),
                &[("verdict", "approve"), ("comment", "fine")],
            )
            .await;
        assert_eq!((status, path), (200, format!("{page_path}?done=reviewed")));
        assert!(html.contains("Your review is recorded."));
    }

    // alice sees it active on her home page (reloading, as a person would) and ends it.
    let mut alice = sign_in("alice").await;
    let started = std::time::Instant::now();
    let html = loop {
        let (_, _, html) = alice.get("/").await;
        if html.contains(&format!("action=\"{page_path}/end\"")) {
            break html;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never active: {html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(target.has_grant(&id));
    assert!(
        html.contains("min left"),
        "the time left, without the script"
    );
    let (status, path, html) = alice.submit(&html, &format!("{page_path}/end"), &[]).await;
    assert_eq!((status, path), (200, format!("{page_path}?done=ended")));
    assert_eq!(state_of(&html), "ended");
    eventually(
        "access removed at the target",
        Duration::from_secs(20),
        || async { !target.has_grant(&id) },
    )
    .await;
    server.stop().await;
}

/// Behind https (the public URL says so), every response, pages and API alike, carries HSTS.
#[tokio::test]
async fn hsts_when_the_public_url_is_https() {
    let dir = tempfile::tempdir().expect("dir");
    let target = Target::start().await;
    let db = format!("sqlite://{}", dir.path().join("web.db").display());
    let cfg = config(0, &db, &target.url(), None).replacen(
        "[server]\n",
        "[server]\npublic_url = \"https://sallyport.example.com/\"\n",
        1,
    );
    let server = Server::start_in(&cfg, dir.path()).await;
    let base = server.url();
    let http = no_redirects();
    for path in ["/signin", "/api/v1/me", "/static/app.css"] {
        let res = http.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(
            res.headers()
                .get("strict-transport-security")
                .and_then(|v| v.to_str().ok()),
            Some("max-age=31536000"),
            "{path}"
        );
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_new_request_picker_shows_each_entitlements_limits() {
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let (alice, _) = session(&server, "alice", &["eng"]).await;
    let (status, html) = page(&http, &format!("{base}/requests/new"), &alice).await;
    assert_eq!(status, 200);
    let choice = |id: &str| {
        html.split("class=\"choice\"")
            .find(|c| c.contains(&format!("<strong>{id}</strong>")))
            .unwrap_or_else(|| panic!("{id} is not offered: {html}"))
            .split("</label>")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let deploy = choice("app/deploy");
    assert!(
        deploy.contains("default 1h, up to 2h") && !deploy.contains("ticket required"),
        "{deploy}"
    );
    let db_prod = choice("db/prod");
    assert!(
        db_prod.contains("default 15m, up to 1h; ticket required"),
        "{db_prod}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_tokens_page_lists_the_newest_and_dead_tokens_are_pruned() {
    use sallyport::store::TokenRecord;
    let (_dir, _target, server) = web_server().await;
    let (base, http) = (server.url(), no_redirects());
    let store = server.app.service.store().clone();
    let now = sallyport::service::now_ms();
    let day = 24 * 3600 * 1000;
    let alice = Principal {
        id: "alice".into(),
        email: None,
        name: None,
        groups: vec!["eng".into()],
    };
    let token = |id: String, created: i64, expires: i64| TokenRecord {
        id,
        user_id: "alice".into(),
        principal: alice.clone(),
        name: "old cli".into(),
        scope: TokenScope::Api,
        created_at: created,
        expires_at: expires,
        last_used_at: None,
        revoked_at: None,
    };
    // Dead for 31 days: one expired, one revoked. Dead for a day: kept. And 210 live ones.
    store
        .insert_token(
            &token("expired".into(), now - 40 * day, now - 31 * day),
            "h-expired",
        )
        .await
        .expect("token");
    store
        .insert_token(
            &token("revoked".into(), now - 40 * day, now + day),
            "h-revoked",
        )
        .await
        .expect("token");
    assert!(
        store
            .revoke_token("revoked", None, now - 31 * day)
            .await
            .expect("revoke")
    );
    store
        .insert_token(
            &token("recent".into(), now - 2 * day, now - day),
            "h-recent",
        )
        .await
        .expect("token");
    for i in 0..210 {
        store
            .insert_token(
                &token(format!("live{i:03}"), now - 10 * day + i, now + day),
                &format!("h-live{i}"),
            )
            .await
            .expect("token");
    }
    // Signing in issues a session, and prunes what has been dead for 30 days.
    let (cookie, _) = session(&server, "alice", &["eng"]).await;
    let left: Vec<String> = store
        .list_tokens("alice", 1000)
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(left.len(), 212, "{left:?}");
    assert!(left.iter().any(|t| t == "recent"), "dead only a day");
    assert!(!left.iter().any(|t| t == "expired" || t == "revoked"));

    // The page lists the newest 200, newest first, and says there are more.
    let (status, html) = page(&http, &format!("{base}/tokens"), &cookie).await;
    assert_eq!(status, 200);
    let body = html.split("<tbody>").nth(1).expect("table");
    assert_eq!(body.matches("<tr>").count(), 200);
    let first = body.split("<tr>").nth(1).expect("a row");
    assert!(
        first.contains("(this session)"),
        "the newest first: {first}"
    );
    // The session, "recent", then live209 down to live012: the oldest live ones are cut.
    let at = |id: &str| body.find(&format!("/tokens/{id}/revoke"));
    assert!(
        at("live209").is_some() && at("live209") < at("live012"),
        "{body}"
    );
    assert_eq!(at("live011"), None);
    assert!(html.contains("Only the newest ones are listed."));
    server.stop().await;
}
