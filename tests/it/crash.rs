//! The server process is killed with SIGKILL at the worst moments; after a restart nothing is
//! lost or done twice, and grants that expired while it was down are revoked at start-up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::db_or_skip;
use crate::harness::{Backend, PolicyOptions, Target, free_port, policy};

const T: Duration = Duration::from_secs(20);

struct Proc {
    child: Child,
    url: String,
}

fn start(config: &Path, url: &str, log: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["serve", "--config"])
        .arg(config)
        .env("SALLYPORT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn server");
    Proc {
        child,
        url: url.to_owned(),
    }
}

impl Proc {
    async fn ready(&self) {
        let start = Instant::now();
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(start.elapsed() < T, "server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown hooks, no graceful anything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(config: &Path, user: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["token", "create", "--user", user, "--config"])
        .arg(config)
        .output()
        .expect("token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.expect("send");
        let st = res.status().as_u16();
        (st, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, id: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/requests/{id}"),
            None,
        )
        .await
        .1
    }

    async fn wait(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.get(id).await;
            if pred(&v) {
                return v;
            }
            assert!(start.elapsed() < T, "timed out waiting for {what}: {v:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn setup(db_url: &str, target: &Target) -> (PathBuf, String, PathBuf) {
    let dir = tempfile::tempdir().expect("dir").keep();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let opts = PolicyOptions {
        listen: format!("127.0.0.1:{port}"),
        lease: "2s",
        ..PolicyOptions::default()
    };
    let config = dir.join("sallyport.toml");
    std::fs::write(&config, policy(db_url, &target.url(), &opts)).expect("write config");
    (config, url, dir.join("server.log"))
}

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

both!(killed_mid_provision_and_while_pending, mid_provision_on);
both!(
    grants_expired_while_down_are_revoked_at_start,
    expired_while_down_on
);

async fn mid_provision_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let target = Target::start().await;
    let (config, url, log) = setup(&db.url, &target);
    let alice = token(&config, "alice");
    let bill = token(&config, "bill");
    let carol = token(&config, "carol");
    let api = |t: &str| Api {
        http: reqwest::Client::new(),
        url: url.clone(),
        token: t.to_owned(),
    };
    let (a, b, c) = (api(&alice), api(&bill), api(&carol));

    let p = start(&config, &url, &log);
    p.ready().await;
    // A pending request, with one approval given before the crash.
    let (st, pending) = a
        .call(reqwest::Method::POST, "/api/v1/requests", Some(json!({ "entitlement": "app/admin", "duration": "10m", "justification": "OPS-7 survive a crash" })))
        .await;
    assert_eq!(st, 201, "{pending}");
    let pid = pending["id"].as_str().expect("id").to_owned();
    let (st, _) = b
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{pid}/reviews"),
            Some(json!({ "verdict": "approve" })),
        )
        .await;
    assert_eq!(st, 200);

    // An approved request whose grant is in flight (the target is slow) when the server dies.
    target.with(|t| t.put_delay = Duration::from_secs(3));
    let (st, r) = a
        .call(reqwest::Method::POST, "/api/v1/requests", Some(json!({ "entitlement": "app/auto", "duration": "10m", "justification": "mid-provision" })))
        .await;
    assert_eq!(st, 201, "{r}");
    let id = r["id"].as_str().expect("id").to_owned();
    let start_wait = Instant::now();
    while target.puts_for(&id) == 0 {
        assert!(start_wait.elapsed() < T, "the grant never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.kill();
    target.with(|t| t.put_delay = Duration::ZERO);

    let p = start(&config, &url, &log);
    p.ready().await;
    let v = a
        .wait(&id, "active after restart", |v| v["state"] == "active")
        .await;
    assert!(target.has_grant(&id), "granted after the restart");
    assert!(v["grant"]["summary"].is_string());
    // The in-flight grant was re-run (the connector is idempotent), and activated once.
    let (_, audit) = Api {
        http: reqwest::Client::new(),
        url: url.clone(),
        token: token(&config, "root"),
    }
    .call(
        reqwest::Method::GET,
        &format!("/api/v1/audit?subject={id}&action=grant.activated"),
        None,
    )
    .await;
    assert_eq!(audit["events"].as_array().map(Vec::len), Some(1), "{audit}");

    // The pending request kept its first approval; the second one completes it.
    let v = a.get(&pid).await;
    assert_eq!(v["state"], "pending");
    assert_eq!(v["reviews"].as_array().map(Vec::len), Some(1));
    let (st, _) = c
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/requests/{pid}/reviews"),
            Some(json!({ "verdict": "approve" })),
        )
        .await;
    assert_eq!(st, 200);
    a.wait(&pid, "active", |v| v["state"] == "active").await;
    assert_eq!(target.puts_for(&pid), 1);
    p.kill();

    let out = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.cleanup().await;
}

async fn expired_while_down_on(backend: Backend) {
    let db = db_or_skip!(backend);
    let target = Target::start().await;
    let (config, url, log) = setup(&db.url, &target);
    let a = Api {
        http: reqwest::Client::new(),
        url: url.clone(),
        token: token(&config, "alice"),
    };
    let p = start(&config, &url, &log);
    p.ready().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (st, r) = a
            .call(reqwest::Method::POST, "/api/v1/requests", Some(json!({ "entitlement": "app/auto", "duration": "2s", "justification": format!("short {i}") })))
            .await;
        assert_eq!(st, 201, "{r}");
        ids.push(r["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        a.wait(id, "active", |v| v["state"] == "active").await;
    }
    p.kill();
    // Down past every grant's end: only the cloud-side expiry could act now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        ids.iter().all(|id| target.has_grant(id)),
        "nothing revoked while down"
    );

    let restarted = Instant::now();
    let p = start(&config, &url, &log);
    p.ready().await;
    for id in &ids {
        let v = a
            .wait(id, "expired and revoked", |v| {
                v["state"] == "expired" && v["revocation"]["status"] == "done"
            })
            .await;
        assert_eq!(v["revocation"]["reason"], "expired");
        assert!(!target.has_grant(id));
    }
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "overdue work ran at start-up"
    );
    p.kill();
    db.cleanup().await;
}
