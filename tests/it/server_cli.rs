//! The `sallyport` binary as people use it: dev mode and the client commands, `config check`,
//! `audit export`, SIGHUP reload, health and metrics, and the OpenAPI document.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Backend, Db, PolicyOptions, Server, Target, config_check, policy};

const BIN: &str = env!("CARGO_BIN_EXE_sallyport");

struct Dev {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev() -> Dev {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let url = first
        .strip_prefix("Sallyport dev server: ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Dev { child, url, dir }
}

impl Dev {
    fn cli(&self, profile: &str, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .env("SALLYPORT_SERVER", &self.url)
            .env("SALLYPORT_PROFILE", profile)
            .env("SALLYPORT_CONFIG_DIR", self.dir.path().join("cli"))
            .env_remove("SALLYPORT_TOKEN")
            .output()
            .expect("run cli");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn json(&self, profile: &str, args: &[&str]) -> (i32, Value) {
        let (code, out, err) = self.cli(profile, args);
        let v = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out} {err}"));
        (code, v)
    }
}

#[test]
fn dev_mode_and_the_cli_tour() {
    let dev = start_dev();
    // Not signed in yet: a clear message, exit 1.
    let (code, _, err) = dev.cli("default", &["requests"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not signed in") && err.contains("sallyport login"),
        "{err}"
    );

    let (code, out, err) = dev.cli("default", &["login", "--dev-user", "alice"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signed in") && out.contains("alice"), "{out}");
    let creds = dev.dir.path().join("cli/credentials.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&creds).expect("creds").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let (code, _, err) = dev.cli("default", &["login", "--dev-user", "mallory"]);
    assert_eq!(code, 1);
    assert!(err.contains("no dev user `mallory`"), "{err}");

    // The entitlements, as text and JSON.
    let (code, out, _) = dev.cli("default", &["entitlements"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("demo/app-admin") && out.contains("demo/read-only"),
        "{out}"
    );
    let (_, v) = dev.json("default", &["entitlements", "--output", "json"]);
    assert_eq!(v["entitlements"].as_array().map(Vec::len), Some(3));

    // Auto-approved: --wait ends active, exit 0, and the demo target holds the grant.
    let (code, out, err) = dev.cli(
        "default",
        &[
            "request",
            "demo/read-only",
            "--duration",
            "30m",
            "--reason",
            "check the dashboards",
            "--wait",
            "--timeout",
            "20s",
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.starts_with("active: demo/read-only"), "{out}");

    // Needs two reviewers: --wait gives up with exit 4 when nobody acts in time.
    let (code, v) = dev.json(
        "default",
        &[
            "request",
            "demo/app-admin",
            "--reason",
            "OPS-42 rotate the app secret",
            "--wait",
            "--timeout",
            "2s",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 4, "{v}");
    assert_eq!(v["state"], "pending");
    let id = v["id"].as_str().expect("id").to_owned();

    // Self-approval is refused (exit 3); bob and carol approve; the wait then ends active.
    let (code, _, err) = dev.cli("default", &["approve", &id]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("your own request"), "{err}");
    assert_eq!(dev.cli("bob", &["login", "--dev-user", "bob"]).0, 0);
    let (code, out, _) = dev.cli("bob", &["requests", "--scope", "review"]);
    assert_eq!(code, 0);
    assert!(out.contains(&id), "bob sees it waiting: {out}");
    let (code, out, err) = dev.cli("bob", &["approve", &id, "--comment", "fine"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pending") && out.contains("security 0/1"),
        "{out}"
    );
    assert_eq!(dev.cli("carol", &["login", "--dev-user", "carol"]).0, 0);
    assert_eq!(dev.cli("carol", &["approve", &id]).0, 0);
    let (code, out, err) = dev.cli("default", &["wait", &id, "--timeout", "20s"]);
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, _) = dev.cli("default", &["show", &id]);
    assert_eq!(code, 0);
    assert!(
        out.contains("state        active") && out.contains("review       bob approve"),
        "{out}"
    );

    // Done early; then the request shows the revocation.
    let (code, out, _) = dev.cli("default", &["done", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("ended"), "{out}");

    // A denial ends a wait with exit 3.
    let (_, v) = dev.json(
        "default",
        &[
            "request",
            "demo/app-admin",
            "--reason",
            "OPS-43 another",
            "--output",
            "json",
        ],
    );
    let id2 = v["id"].as_str().expect("id").to_owned();
    let (code, _, err) = dev.cli("bob", &["deny", &id2, "--reason", "use read-only"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = dev.cli("default", &["wait", &id2, "--timeout", "5s"]);
    assert_eq!(code, 3);
    assert!(err.contains("use read-only"), "{err}");

    // Logout revokes the token on the server.
    let (code, out, _) = dev.cli("bob", &["logout"]);
    assert_eq!((code, out.trim()), (0, "signed out"));
    assert_eq!(dev.cli("bob", &["whoami"]).0, 1);

    // The audit chain of the dev database verifies.
    let policy = dev.dir.path().join("data/sallyport.toml");
    let out = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&policy)
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_check_points_at_the_offending_entry() {
    let dir = tempfile::tempdir().expect("dir");
    let good = policy(
        "sqlite://x.db",
        "http://127.0.0.1:9",
        &PolicyOptions::default(),
    );
    let f = dir.path().join("good.toml");
    std::fs::write(&f, &good).expect("write");
    let (code, out) = config_check(&f);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok (2 entitlement(s)"), "{out}");

    let cases = [
        (
            good.replace(
                "count = 1 }, { name = \"security\"",
                "count = 0 }, { name = \"security\"",
            ),
            "entitlements[0] (app/admin).approval.settings.stages[0].count",
        ),
        (
            good.replace("plugin = \"quorum\"", "plugin = \"quorom\""),
            "entitlements[0] (app/admin).approval.plugin: no approval plugin named `quorom`",
        ),
        (
            good.replace(
                "max_duration = \"2h\"",
                "max_duration = \"2h\"\nmax_durration = \"1h\"",
            ),
            "unknown field `max_durration`",
        ),
        (
            good.replace(
                "url = \"http://127.0.0.1:9/grants/{{request.id}}\", body",
                "url = \"ftp://x/{{request.id}}\", body",
            ),
            "entitlements[0] (app/admin).connector.settings.grant.url",
        ),
        (
            good.replace(
                "justification_pattern = \"^[A-Z]+-[0-9]+ \"",
                "justification_pattern = \"([\"",
            ),
            "justification_pattern",
        ),
        (
            good.replace(
                "[plugins.capabilities.http.http]",
                "[plugins.capabilities.htp.http]",
            ),
            "plugins.capabilities.htp: no plugin named `htp`",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&f, &text).expect("write");
        let (code, out) = config_check(&f);
        assert_eq!(code, 1, "{needle}: {out}");
        assert!(out.contains(needle), "expected `{needle}` in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_health_metrics_and_openapi() {
    let db = Db::new(Backend::Sqlite).await.expect("sqlite");
    let target = Target::start().await;
    let text = policy(&db.url, &target.url(), &PolicyOptions::default());
    let s = Server::start(&text).await;
    let id = s.request("alice", "app/auto", "5m", "export me").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    s.wait_state(&id, "active", Duration::from_secs(20)).await;

    // Health, readiness, metrics.
    let get = |p: &str| s.http.get(format!("{}{p}", s.url())).send();
    assert_eq!(get("/healthz").await.expect("healthz").status(), 200);
    assert_eq!(get("/readyz").await.expect("readyz").status(), 200);
    let m = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(m.contains("sallyport_requests{state=\"active\"} 1"), "{m}");
    assert!(
        m.contains("sallyport_jobs_total{kind=\"provision\",outcome=\"done\"} 1"),
        "{m}"
    );
    let r = get("/healthz").await.expect("healthz");
    assert!(r.headers().get("x-request-id").is_some());
    assert_eq!(
        r.headers()
            .get("x-content-type-options")
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..])
    );

    // Every route the document lists is mounted (none answers the "no such route" fallback).
    let doc: Value = get("/api/v1/openapi.json")
        .await
        .expect("doc")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let token = s.token("root").await;
    for (method, path) in sallyport::http::openapi::listed_routes() {
        if path.starts_with("/demo/") || path.starts_with("/api/v1/dev/") {
            continue; // dev mode only; covered by the dev-mode test
        }
        let p = path.replace("{id}", "00000000-0000-0000-0000-000000000000");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let res = s
            .http
            .request(m, format!("{}{p}", s.url()))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("send");
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert!(
            !(status == 405
                || (status == 404
                    && body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no such route")))),
            "{method} {path} is not mounted: {status} {body}"
        );
    }
    s.stop().await;

    // Export: JSON lines, filtered by time, each a verifiable chain link.
    let cfg = crate::lifecycle::write_config(&db.url, &target.url());
    let out = Command::new(BIN)
        .args(["audit", "export", "--config"])
        .arg(&cfg)
        .output()
        .expect("export");
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(lines.len() >= 4, "{lines:?}");
    assert!(lines.windows(2).all(|w| w[1]["prev_hash"] == w[0]["hash"]));
    let future = "2999-01-01T00:00:00Z";
    let out = Command::new(BIN)
        .args(["audit", "export", "--since", future, "--config"])
        .arg(&cfg)
        .output()
        .expect("export");
    assert!(out.status.success() && out.stdout.is_empty());
    let out = Command::new(BIN)
        .args(["audit", "export", "--since", "yesterday", "--config"])
        .arg(&cfg)
        .output()
        .expect("export");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an RFC 3339 time"));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_keeps_the_old_policy_when_the_new_one_is_invalid() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let opts = PolicyOptions {
        listen: format!("127.0.0.1:{port}"),
        ..PolicyOptions::default()
    };
    let file = dir.path().join("sallyport.toml");
    let text = policy(&db, "http://127.0.0.1:9", &opts);
    std::fs::write(&file, &text).expect("write");
    let token = {
        let out = Command::new(BIN)
            .args(["token", "create", "--user", "alice", "--config"])
            .arg(&file)
            .output()
            .expect("token");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let descriptions = || async {
        let v: Value = http
            .get(format!("{url}/api/v1/entitlements"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(v["entitlements"][0]["description"].as_str()?.to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while descriptions().await.is_none() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(descriptions().await.as_deref(), Some("two stages"));
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .expect("kill -HUP");
    };

    // A valid change is applied.
    std::fs::write(
        &file,
        text.replace("description = \"two stages\"", "description = \"reloaded\""),
    )
    .expect("write");
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while descriptions().await.as_deref() != Some("reloaded") {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An invalid one is refused: the server keeps serving the previous policy.
    std::fs::write(
        &file,
        text.replace(
            "description = \"two stages\"",
            "description = \"broken\"\nbogus = 1",
        ),
    )
    .expect("write");
    hup();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(descriptions().await.as_deref(), Some("reloaded"));
    let _ = child.kill();
    let _ = child.wait();
}
