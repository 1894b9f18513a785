//! Whole-server benchmarks, on SQLite and (when `TEST_DATABASE_URL` or `PG*` name a server) on
//! PostgreSQL:
//!
//! 1. **Lifecycles per second**: `wrk` (a real HTTP load generator, `apt install wrk`) POSTs
//!    requests for an auto-approved entitlement; each is approved by the real `quorum` plugin
//!    and provisioned by the real `http` connector against a local target. Reported: requests
//!    that reached `active` per second, creation-to-active latency p50/p99 (from the database),
//!    and wrk's own HTTP latency.
//! 2. **Expiry lateness**: 10,000 active grants expire over a few seconds; reported is how late
//!    (after `expires_at`) each was ended, p50/p99/max.
//!
//! Run: `cargo bench --bench lifecycle` (PostgreSQL too: `pg_virtualenv -v 15 cargo bench --bench lifecycle`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path as AxPath;
use axum::http::StatusCode;
use axum::routing::put;
use sallyport::app::{App, Options};
use sallyport::config::{Config, ParseOptions};
use sallyport::domain::{Channel, Principal};
use sallyport::service::{Caller, CreateInput};
use sallyport::store::WriteCtx;
use sqlx::Row;

const WRK_SECONDS: u64 = 10;
const WRK_CONNECTIONS: u32 = 32;
const EXPIRY_GRANTS: usize = 10_000;

fn pg_admin_url() -> Option<String> {
    if let Ok(u) = std::env::var("TEST_DATABASE_URL") {
        return Some(u);
    }
    let host = std::env::var("PGHOST").ok()?;
    let port = std::env::var("PGPORT").unwrap_or_else(|_| "5432".into());
    let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
    let pass = std::env::var("PGPASSWORD").unwrap_or_default();
    Some(format!("postgres://{user}:{pass}@{host}:{port}/postgres"))
}

async fn admin_exec(admin: &str, sql: &str) {
    let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(admin)
        .await
        .expect("connect");
    sqlx::Executor::execute(&mut c, sql).await.expect(sql);
    let _ = sqlx::Connection::close(c).await;
}

/// A database URL for one run, and how to drop it.
async fn database(backend: &str, dir: &Path) -> Option<(String, Option<(String, String)>)> {
    sqlx::any::install_default_drivers();
    match backend {
        "sqlite" => Some((
            format!(
                "sqlite://{}",
                dir.join(format!("bench-{}.db", uuid::Uuid::new_v4().simple()))
                    .display()
            ),
            None,
        )),
        _ => {
            let admin = pg_admin_url()?;
            let name = format!("sallyport_bench_{}", uuid::Uuid::new_v4().simple());
            admin_exec(&admin, &format!("CREATE DATABASE {name}")).await;
            let cut = admin.rfind('/').unwrap_or(admin.len());
            Some((format!("{}/{name}", &admin[..cut]), Some((admin, name))))
        }
    }
}

async fn target() -> String {
    let app = Router::new().route(
        "/grants/{id}",
        put(|AxPath(_id): AxPath<String>| async { StatusCode::OK })
            .delete(|AxPath(_id): AxPath<String>| async { StatusCode::NO_CONTENT }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

fn config(db: &str, target: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[database]
url = "{db}"
max_connections = 16
[jobs]
concurrency = 64
lease = "30s"
[plugins.capabilities.http.http]
allow = ["http://127.0.0.1:*"]
[[users]]
id = "alice"
groups = ["eng"]
[[entitlements]]
id = "bench/auto"
max_duration = "2h"
requester_groups = ["eng"]
[entitlements.connector]
plugin = "http"
[entitlements.connector.settings]
grant = {{ method = "PUT", url = "{target}/grants/{{{{request.id}}}}", body = {{ user = "{{{{requester.id}}}}", until = "{{{{expires_at}}}}" }} }}
revoke = {{ method = "DELETE", url = "{target}/grants/{{{{request.id}}}}" }}
[entitlements.approval]
plugin = "quorum"
[entitlements.approval.settings]
auto_approve = [{{ name = "eng", requester_groups = ["eng"] }}]
"#
    )
}

async fn start(db: &str, target: &str) -> App {
    let c = Config::parse(&config(db, target), Path::new("."), ParseOptions::default())
        .unwrap_or_else(|p| panic!("{p}"));
    App::start(c, Options::default()).await.expect("start")
}

fn pct(v: &mut [i64], q: f64) -> i64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// (created_at, activated_at or expiry lateness) rows straight from the database.
async fn rows(db: &str, sql: &str) -> Vec<(i64, i64)> {
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(db)
        .await
        .expect("connect");
    let out = sqlx::query(sql)
        .fetch_all(&pool)
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1)))
        .collect();
    pool.close().await;
    out
}

async fn wait_settled(app: &App, what: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let c = app.service.store().counts().await.expect("counts");
        let busy: i64 = c
            .requests
            .iter()
            .filter(|(s, _)| matches!(s.as_str(), "pending" | "approved" | "provisioning"))
            .map(|(_, n)| n)
            .sum();
        if busy == 0 && c.revocations_pending == 0 {
            return;
        }
        assert!(start.elapsed() < limit, "{what}: still {busy} in flight");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lifecycles(backend: &str, dir: &Path) {
    let Some((db, drop)) = database(backend, dir).await else {
        println!("{backend}: skipped (no PostgreSQL configured)");
        return;
    };
    let target = target().await;
    let app = start(&db, &target).await;
    let policy = app.service.policy();
    let alice = policy.directory_principal("alice").expect("alice");
    let (token, _) = app
        .service
        .issue_token(&alice, "bench", 3600, Channel::Api, &WriteCtx::default())
        .await
        .expect("token");
    let script = dir.join("post.lua");
    let mut f = std::fs::File::create(&script).expect("script");
    writeln!(
        f,
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = '{{"entitlement":"bench/auto","duration":"1h","justification":"load test"}}'"#
    )
    .expect("write");
    let url = format!("{}/api/v1/requests", app.url());
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{WRK_CONNECTIONS}"),
            &format!("-d{WRK_SECONDS}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(&url)
        .output()
        .await
        .expect("wrk is installed (apt install wrk)");
    let wrk = String::from_utf8_lossy(&out.stdout).into_owned();
    wait_settled(&app, "provisioning", Duration::from_secs(300)).await;
    let active = rows(&db, "SELECT created_at, CAST(expires_at - 3600000 AS BIGINT) FROM requests WHERE state = 'active'").await;
    let n = active.len();
    let first = active.iter().map(|r| r.0).min().unwrap_or(0);
    let last = active.iter().map(|r| r.1).max().unwrap_or(0);
    let mut lat: Vec<i64> = active.iter().map(|(c, a)| a - c).collect();
    let secs = (last - first) as f64 / 1000.0;
    let line = |k: &str| {
        wrk.lines()
            .find(|l| l.trim_start().starts_with(k))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    println!(
        "| {backend} | {n} | {:.0} lifecycles/s | {} ms | {} ms | {} | {} |",
        n as f64 / secs,
        pct(&mut lat, 0.50),
        pct(&mut lat, 0.99),
        line("50%"),
        line("99%"),
    );
    let non_2xx = wrk
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .unwrap_or("")
        .trim()
        .to_owned();
    if !non_2xx.is_empty() {
        println!("  wrk: {non_2xx}");
    }
    app.shutdown().await;
    if let Some((admin, name)) = drop {
        admin_exec(&admin, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
    }
}

async fn expiry(backend: &str, dir: &Path) {
    let Some((db, drop)) = database(backend, dir).await else {
        println!("{backend}: skipped (no PostgreSQL configured)");
        return;
    };
    let target = target().await;
    let app = start(&db, &target).await;
    let policy = app.service.policy();
    let caller = Caller {
        principal: policy.directory_principal("alice").expect("alice"),
        roles: policy.roles(&Principal {
            id: "alice".into(),
            email: None,
            name: None,
            groups: vec![],
        }),
        token_id: None,
    };
    // 10,000 grants, all expiring within a few seconds of each other.
    let created = Instant::now();
    let svc = Arc::new(app.service.clone());
    let mut tasks = Vec::new();
    let per_task = EXPIRY_GRANTS / 32;
    for _ in 0..32 {
        let svc = svc.clone();
        let caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                svc.create_request(
                    &caller,
                    CreateInput {
                        entitlement: "bench/auto".into(),
                        duration_secs: Some(45),
                        justification: "expiry bench".into(),
                        ticket: None,
                    },
                    Channel::Api,
                    &WriteCtx::default(),
                )
                .await
                .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let n = per_task * 32;
    wait_settled(&app, "activation", Duration::from_secs(300)).await;
    let ready = created.elapsed();
    assert!(
        ready < Duration::from_secs(44),
        "activation took {ready:?}: grants would expire before all were active"
    );
    // Wait for every grant to expire and be revoked.
    let start = Instant::now();
    loop {
        let c = app.service.store().counts().await.expect("counts");
        let active: i64 = c
            .requests
            .iter()
            .filter(|(s, _)| s.as_str() == "active")
            .map(|(_, n)| n)
            .sum();
        if active == 0 && c.revocations_pending == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "expiry stalled: {active} active"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let late = rows(
        &db,
        "SELECT seq, at FROM audit_events WHERE action = 'grant.expired'",
    )
    .await;
    assert_eq!(late.len(), n);
    let events = app
        .service
        .store()
        .audit(&sallyport::store::AuditFilter {
            action: Some("grant.expired".into()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("audit");
    let mut l: Vec<i64> = events
        .iter()
        .filter_map(|e| e.after.get("lateness_ms").and_then(|v| v.as_i64()))
        .collect();
    let max = l.iter().copied().max().unwrap_or(0);
    println!(
        "| {backend} | {n} | {} ms | {} ms | {max} ms | activated in {:.1} s |",
        pct(&mut l, 0.50),
        pct(&mut l, 0.99),
        ready.as_secs_f64()
    );
    app.shutdown().await;
    if let Some((admin, name)) = drop {
        admin_exec(&admin, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then this only
    // proves it builds (it needs wrk and minutes of load).
    if !std::env::args().any(|a| a == "--bench") {
        println!("lifecycle benchmark: run it with `cargo bench --bench lifecycle`");
        return;
    }
    // A name filter selects a part: `lifecycle` or `expiry`.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    rt.block_on(async {
        if want("lifecycle") {
            println!("\n| database | lifecycles | throughput | create→active p50 | create→active p99 | wrk POST p50 | wrk POST p99 |");
            println!("| --- | --- | --- | --- | --- | --- | --- |");
            lifecycles("sqlite", dir.path()).await;
            lifecycles("postgres", dir.path()).await;
        }
        if want("expiry") {
            println!("\n| database | grants | lateness p50 | lateness p99 | max | |");
            println!("| --- | --- | --- | --- | --- | --- |");
            expiry("sqlite", dir.path()).await;
            expiry("postgres", dir.path()).await;
        }
    });
}
