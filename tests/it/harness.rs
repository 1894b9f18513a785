//! Test harness for the server: databases (SQLite files, throw-away PostgreSQL databases), a
//! real local HTTP target for the `http` connector, an in-process server on port 0, and an API
//! client. Every wait is bounded.

#![allow(dead_code, reason = "each suite uses a different subset")]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as AxPath, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use sallyport::app::{App, Options};
use sallyport::config::{Config, ParseOptions};
use sallyport::domain::Channel;
use sallyport::store::WriteCtx;
use serde_json::{Value, json};

/// A database for one test; dropped (PostgreSQL) or deleted (SQLite) at the end.
#[derive(Debug)]
pub struct Db {
    pub url: String,
    pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server to create test databases in: `TEST_DATABASE_URL`, or the `PG*`
/// variables `pg_virtualenv` exports. `None` when neither is set.
pub fn pg_admin_url() -> Option<String> {
    if let Ok(u) = std::env::var("TEST_DATABASE_URL")
        && !u.is_empty()
    {
        return Some(u);
    }
    let host = std::env::var("PGHOST").ok()?;
    let port = std::env::var("PGPORT").unwrap_or_else(|_| "5432".into());
    let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
    let pass = std::env::var("PGPASSWORD").unwrap_or_default();
    let db = std::env::var("PGDATABASE").unwrap_or_else(|_| "postgres".into());
    Some(if host.starts_with('/') {
        format!("postgres://{user}:{pass}@localhost:{port}/{db}?host={host}")
    } else {
        format!("postgres://{user}:{pass}@{host}:{port}/{db}")
    })
}

fn with_db(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let cut = base.rfind('/').unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..cut]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Db {
    pub async fn new(backend: Backend) -> Option<Db> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("sallyport.db").display());
                Some(Db {
                    url,
                    pg: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin = pg_admin_url()?;
                let name = format!("sallyport_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .expect("connect to the PostgreSQL test server");
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create the test database");
                let _ = sqlx::Connection::close(conn).await;
                Some(Db {
                    url: with_db(&admin, &name),
                    pg: Some((admin, name)),
                    _dir: None,
                })
            }
        }
    }

    /// Drop the PostgreSQL database (SQLite files go with the temp dir).
    pub async fn cleanup(mut self) {
        if let Some((admin, name)) = self.pg.take() {
            drop_pg(&admin, &name).await;
        }
    }
}

async fn drop_pg(admin: &str, name: &str) {
    if let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await {
        let _ = sqlx::Executor::execute(
            &mut conn,
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
        )
        .await;
        let _ = sqlx::Connection::close(conn).await;
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // A test that panicked before `cleanup` still leaves nothing behind.
        if let Some((admin, name)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_pg(&admin, &name));
                }
            })
            .join();
        }
    }
}

/// Skip a PostgreSQL test when no server is configured (CI runs them under `pg_virtualenv`).
#[macro_export]
macro_rules! db_or_skip {
    ($backend:expr) => {
        match $crate::harness::Db::new($backend).await {
            Some(db) => db,
            None => {
                assert!(
                    std::env::var_os("SALLYPORT_REQUIRE_POSTGRES").is_none(),
                    "SALLYPORT_REQUIRE_POSTGRES is set but no PostgreSQL is configured (TEST_DATABASE_URL or PG*)"
                );
                eprintln!("skipped: no PostgreSQL (set TEST_DATABASE_URL or run under pg_virtualenv)");
                return;
            }
        }
    };
}

/// What the target has seen and what it should do.
#[derive(Debug, Default)]
pub struct TargetState {
    /// Grants in place: id -> body.
    pub grants: BTreeMap<String, Value>,
    /// Every PUT, in order (request id).
    pub puts: Vec<String>,
    /// Every DELETE, in order.
    pub deletes: Vec<String>,
    /// Answer grants with this status instead of granting.
    pub fail_grants_with: Option<u16>,
    /// Fail this many DELETEs with 503 before succeeding.
    pub fail_revokes: u32,
    /// Sleep this long before answering a PUT.
    pub put_delay: Duration,
}

/// A real local HTTP server playing the target system of the `http` connector.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<TargetState>>,
}

impl Target {
    pub async fn start() -> Target {
        let state = Arc::new(Mutex::new(TargetState::default()));
        let app = Router::new()
            .route("/grants", get(target_list))
            .route("/grants/{id}", put(target_put).delete(target_delete))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind target");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Target { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut TargetState) -> R) -> R {
        f(&mut self.state.lock().expect("target state"))
    }

    pub fn has_grant(&self, id: &str) -> bool {
        self.with(|s| s.grants.contains_key(id))
    }

    pub fn puts_for(&self, id: &str) -> usize {
        self.with(|s| s.puts.iter().filter(|p| *p == id).count())
    }
}

type Shared = State<Arc<Mutex<TargetState>>>;

async fn target_list(State(s): Shared) -> Json<Value> {
    Json(json!({ "grants": s.lock().expect("state").grants }))
}

async fn target_put(
    State(s): Shared,
    AxPath(id): AxPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let delay = {
        let mut st = s.lock().expect("state");
        st.puts.push(id.clone());
        st.put_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut st = s.lock().expect("state");
    if let Some(code) = st.fail_grants_with {
        return (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(json!({ "error": "grant refused by the test target" })),
        );
    }
    st.grants.insert(id.clone(), body);
    (StatusCode::OK, Json(json!({ "id": id })))
}

async fn target_delete(State(s): Shared, AxPath(id): AxPath<String>) -> StatusCode {
    let mut st = s.lock().expect("state");
    st.deletes.push(id.clone());
    if st.fail_revokes > 0 {
        st.fail_revokes -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if st.grants.remove(&id).is_some() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// Options for the test policy.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    pub pending_ttl: &'static str,
    pub lease: &'static str,
    pub break_glass: bool,
    pub retry_max: &'static str,
    pub max_body_bytes: usize,
    pub listen: String,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            pending_ttl: "1h",
            lease: "2s",
            break_glass: false,
            retry_max: "2s",
            max_body_bytes: 16 * 1024,
            listen: "127.0.0.1:0".into(),
        }
    }
}

/// The test policy: users, roles, and entitlements using the http connector against `target`.
pub fn policy(db_url: &str, target: &str, o: &PolicyOptions) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
max_body_bytes = {max_body}

[database]
url = "{db_url}"
max_connections = 8

[auth]
admin_users = ["root"]
auditor_groups = ["audit"]

[jobs]
lease = "{lease}"
retry_max = "{retry_max}"
provision_attempts = 2

[plugins.capabilities.http.http]
allow = ["http://127.0.0.1:*"]

[[users]]
id = "alice"
groups = ["eng"]
[[users]]
id = "bob"
groups = ["eng", "leads"]
[[users]]
id = "bill"
groups = ["leads"]
[[users]]
id = "carol"
groups = ["security"]
[[users]]
id = "eve"
groups = ["sales"]
[[users]]
id = "root"
groups = []
[[users]]
id = "ann"
groups = ["audit"]

[[entitlements]]
id = "app/admin"
description = "two stages"
max_duration = "2h"
requester_groups = ["eng"]
justification_pattern = "^[A-Z]+-[0-9]+ "
pending_ttl = "{ttl}"
break_glass = {break_glass}
[entitlements.connector]
plugin = "http"
[entitlements.connector.settings]
grant = {{ method = "PUT", url = "{target}/grants/{{{{request.id}}}}", body = {{ user = "{{{{requester.id}}}}", until = "{{{{expires_at}}}}" }} }}
revoke = {{ method = "DELETE", url = "{target}/grants/{{{{request.id}}}}" }}
timeout_ms = 5000
[entitlements.approval]
plugin = "quorum"
[entitlements.approval.settings]
stages = [{{ name = "lead", groups = ["leads"], count = 1 }}, {{ name = "security", groups = ["security"], count = 1 }}]
break_glass = {{ enabled = {break_glass}, min_justification_chars = 10 }}

[[entitlements]]
id = "app/auto"
description = "auto-approved for eng"
max_duration = "1h"
requester_groups = ["eng"]
[entitlements.connector]
plugin = "http"
[entitlements.connector.settings]
grant = {{ method = "PUT", url = "{target}/grants/{{{{request.id}}}}", body = {{ user = "{{{{requester.id}}}}" }} }}
revoke = {{ method = "DELETE", url = "{target}/grants/{{{{request.id}}}}" }}
timeout_ms = 5000
[entitlements.approval]
plugin = "quorum"
[entitlements.approval.settings]
auto_approve = [{{ name = "eng", requester_groups = ["eng"] }}]
"#,
        listen = o.listen,
        max_body = o.max_body_bytes,
        lease = o.lease,
        retry_max = o.retry_max,
        ttl = o.pending_ttl,
        break_glass = o.break_glass,
    )
}

/// An in-process server.
#[derive(Debug)]
pub struct Server {
    pub app: App,
    pub http: reqwest::Client,
    pub tokens: Mutex<BTreeMap<String, String>>,
}

impl Server {
    pub async fn start(config_text: &str) -> Server {
        Self::start_in(config_text, Path::new(".")).await
    }

    /// Start with relative paths in the configuration (secret files) resolved against `base`.
    pub async fn start_in(config_text: &str, base: &Path) -> Server {
        Self::start_with(config_text, base, Options::default()).await
    }

    /// Start with these options (dev mode, no worker, ...).
    pub async fn start_with(config_text: &str, base: &Path, options: Options) -> Server {
        let config = Config::parse(config_text, base, ParseOptions::default())
            .unwrap_or_else(|p| panic!("test config: {p}"));
        let app = App::start(
            config,
            Options {
                shutdown_grace: Some(Duration::from_secs(2)),
                ..options
            },
        )
        .await
        .expect("server starts");
        Server {
            app,
            http: reqwest::Client::new(),
            tokens: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn url(&self) -> String {
        self.app.url()
    }

    /// A token for a directory user (issued once per user).
    pub async fn token(&self, user: &str) -> String {
        if let Some(t) = self.tokens.lock().expect("tokens").get(user) {
            return t.clone();
        }
        let policy = self.app.service.policy();
        let p = policy.directory_principal(user).expect("directory user");
        let (t, _) = self
            .app
            .service
            .issue_token(&p, "test", 3600, Channel::Api, &WriteCtx::default())
            .await
            .expect("token");
        self.tokens
            .lock()
            .expect("tokens")
            .insert(user.into(), t.clone());
        t
    }

    async fn send(
        &self,
        user: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(u) = user {
            req = req.bearer_auth(self.token(u).await);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        self.send(Some(user), reqwest::Method::GET, path, None)
            .await
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> (u16, Value) {
        self.send(Some(user), reqwest::Method::POST, path, Some(body))
            .await
    }

    /// File a request and return its JSON (asserting 201).
    /// File a request and return its id.
    pub async fn request_id(
        &self,
        user: &str,
        entitlement: &str,
        duration: &str,
        why: &str,
    ) -> String {
        let v = self.request(user, entitlement, duration, why).await;
        v["id"].as_str().expect("id").to_owned()
    }

    pub async fn request(&self, user: &str, entitlement: &str, duration: &str, why: &str) -> Value {
        let (s, v) = self
            .post(
                user,
                "/api/v1/requests",
                json!({ "entitlement": entitlement, "duration": duration, "justification": why }),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    pub async fn approve(&self, user: &str, id: &str) -> (u16, Value) {
        self.post(
            user,
            &format!("/api/v1/requests/{id}/reviews"),
            json!({ "verdict": "approve" }),
        )
        .await
    }

    pub async fn state(&self, id: &str) -> Value {
        let (s, v) = self.get("root", &format!("/api/v1/requests/{id}")).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Wait (bounded) until the request satisfies `pred`.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let v = self.state(id).await;
            if pred(&v) {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        self.wait_for(id, state, timeout, |v| v["state"] == state)
            .await
    }

    pub async fn audit_count(&self) -> usize {
        let (s, v) = self.get("root", "/api/v1/audit?limit=10000").await;
        assert_eq!(s, 200, "{v}");
        v["events"].as_array().map_or(0, Vec::len)
    }

    pub async fn stop(self) {
        self.app.shutdown().await;
    }
}

/// Poll `f` until it is true, for at most `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port that was free a moment ago (bound to port 0, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// An executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A test partner is missing: skip (`None`), or fail when `require` (set by `.ci/run`) says
/// the tests must not be skipped.
pub fn missing<T>(require: &str, what: &str) -> Option<T> {
    assert!(
        std::env::var_os(require).is_none(),
        "{require} is set but {what}"
    );
    eprintln!("skipped: {what}");
    None
}

/// `sallyport config check FILE`: (exit code, stdout and stderr together).
pub fn config_check(file: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(["config", "check"])
        .arg(file)
        .output()
        .expect("config check");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A child process killed (and reaped) when the guard goes, even when a test panics.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
