//! AWS credential minting, in one run against `moto_server`:
//!
//! 1. a direct STS AssumeRole with aws-sdk-rust (the baseline), against
//! 2. `POST /api/v1/credentials` through Sallyport (authentication, the active-grant lookup, the
//!    `aws-sts` plugin in a fresh sandbox, the host's AssumeRole, the audit event),
//!
//! reporting p50/p99 and the ratio; and 3. `sallyport creds` served from its cache, as the AWS
//! CLI runs it (a whole process per call).
//!
//! Run: `cargo bench --bench aws` (needs `pip install 'moto[server]'`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sallyport::app::{App, Options};
use sallyport::config::{Config, ParseOptions};
use sallyport::domain::Channel;
use sallyport::service::{Caller, CreateInput, CredentialsFor};
use sallyport::store::WriteCtx;

/// Pairs of mints; `SALLYPORT_BENCH_N` overrides it (e.g. for a profiler to attach).
fn pairs() -> usize {
    std::env::var("SALLYPORT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}
const CLI_N: usize = 100;

fn pct(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("aws benchmark: run it with `cargo bench --bench aws`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let Ok(moto) = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("skipped: moto_server is not installed (pip install 'moto[server]')");
        return;
    };
    // Killed when the benchmark ends, even by a panic.
    let _moto = Reaper(moto);
    let moto_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let start = Instant::now();
    while http
        .get(format!("{moto_url}/moto-api/"))
        .send()
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto_url)
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await;
    let iam = aws_sdk_iam::Client::new(&conf);
    let sts = aws_sdk_sts::Client::new(&conf);
    iam.create_role()
        .role_name("bench")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#)
        .max_session_duration(3600)
        .send()
        .await
        .expect("role");

    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("k"), "testing").expect("k");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[database]
url = "sqlite://{db}"
[aws]
region = "us-east-1"
endpoint_url = "{moto_url}"
access_key_id_secret = "k"
secret_access_key_secret = "k"
[secrets.k]
file = "k"
[plugins.capabilities.aws-sts.aws]
arns = ["arn:aws:iam::123456789012:role/bench"]
[[users]]
id = "alice"
groups = ["eng"]
[[entitlements]]
id = "aws/bench"
max_duration = "2h"
requester_groups = ["eng"]
[entitlements.connector]
plugin = "aws-sts"
settings = {{ role_arn = "arn:aws:iam::123456789012:role/bench" }}
[entitlements.approval]
plugin = "quorum"
settings = {{ auto_approve = [{{ requester_groups = ["eng"] }}] }}
"#,
        db = dir.path().join("db.sqlite").display()
    );
    let config =
        Config::parse(&text, dir.path(), ParseOptions::default()).unwrap_or_else(|p| panic!("{p}"));
    let app = App::start(config, Options::default()).await.expect("start");
    let policy = app.service.policy();
    let alice = policy.directory_principal("alice").expect("alice");
    let caller = Caller {
        roles: policy.roles(&alice),
        principal: alice.clone(),
        token_id: None,
    };
    let r = app
        .service
        .create_request(
            &caller,
            CreateInput {
                entitlement: "aws/bench".into(),
                duration_secs: Some(7200),
                justification: "bench".into(),
                ticket: None,
            },
            Channel::Api,
            &WriteCtx::default(),
        )
        .await
        .expect("request");
    let start = Instant::now();
    loop {
        let cur = app
            .service
            .store()
            .get_request(&r.id)
            .await
            .expect("get")
            .expect("exists");
        if cur.state.as_str() == "active" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not active: {:?}",
            cur.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (token, _) = app
        .service
        .issue_token(&alice, "bench", 3600, Channel::Api, &WriteCtx::default())
        .await
        .expect("token");

    // Warm both paths.
    for _ in 0..20 {
        let _ = sts
            .assume_role()
            .role_arn("arn:aws:iam::123456789012:role/bench")
            .role_session_name("warm")
            .send()
            .await;
        let _ = http
            .post(format!("{}/api/v1/credentials", app.url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "entitlement": "aws/bench" }))
            .send()
            .await;
    }
    let policy_doc = r#"{"Version":"2012-10-17","Statement":[{"Sid":"SallyportGrantWindow","Effect":"Allow","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"2099-01-01T00:00:00Z"}}},{"Sid":"SallyportGrantEnd","Effect":"Deny","Action":"*","Resource":"*","Condition":{"DateGreaterThanEquals":{"aws:CurrentTime":"2099-01-01T00:00:00Z"}}}]}"#;
    let n = pairs();
    eprintln!("measuring {n} pairs");
    let mut direct = Vec::with_capacity(n);
    let mut through = Vec::with_capacity(n);
    let mut in_process = Vec::with_capacity(n);
    // Interleave the two so drift in moto affects both alike.
    for i in 0..n {
        let t = Instant::now();
        let out = sts
            .assume_role()
            .role_arn("arn:aws:iam::123456789012:role/bench")
            .role_session_name(format!("sp-alice-{i}"))
            .duration_seconds(3600)
            .policy(policy_doc)
            .source_identity("alice")
            .tags(
                aws_sdk_sts::types::Tag::builder()
                    .key("sallyport-requester")
                    .value("alice")
                    .build()
                    .expect("tag"),
            )
            .tags(
                aws_sdk_sts::types::Tag::builder()
                    .key("sallyport-request")
                    .value(&r.id)
                    .build()
                    .expect("tag"),
            )
            .tags(
                aws_sdk_sts::types::Tag::builder()
                    .key("sallyport-entitlement")
                    .value("aws/bench")
                    .build()
                    .expect("tag"),
            )
            .send()
            .await
            .expect("assume");
        direct.push(t.elapsed());
        assert!(out.credentials().is_some());
        let t = Instant::now();
        let res = http
            .post(format!("{}/api/v1/credentials", app.url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "entitlement": "aws/bench" }))
            .send()
            .await
            .expect("credentials");
        assert!(res.status().is_success(), "{:?}", res.text().await);
        let _ = res.bytes().await;
        through.push(t.elapsed());
        let t = Instant::now();
        app.service
            .credentials(
                &caller,
                CredentialsFor::Entitlement("aws/bench".into()),
                &WriteCtx::default(),
            )
            .await
            .expect("in-process mint");
        in_process.push(t.elapsed());
    }
    let (d50, d99) = (pct(&mut direct, 0.5), pct(&mut direct, 0.99));
    let (s50, s99) = (pct(&mut through, 0.5), pct(&mut through, 0.99));
    let (i50, i99) = (pct(&mut in_process, 0.5), pct(&mut in_process, 0.99));
    println!();
    println!("| credential mint ({n} calls each, moto) | p50 | p99 |");
    println!("| --- | --- | --- |");
    println!(
        "| direct STS AssumeRole (aws-sdk-rust) | {:.2} ms | {:.2} ms |",
        ms(d50),
        ms(d99)
    );
    println!(
        "| through Sallyport (`POST /api/v1/credentials`) | {:.2} ms | {:.2} ms |",
        ms(s50),
        ms(s99)
    );
    println!(
        "| the same mint in process (no HTTP hop) | {:.2} ms | {:.2} ms |",
        ms(i50),
        ms(i99)
    );
    println!(
        "| ratio | {:.2}× | {:.2}× |",
        s50.as_secs_f64() / d50.as_secs_f64(),
        s99.as_secs_f64() / d99.as_secs_f64()
    );

    // The CLI's cache hit, as the AWS CLI runs it: one process per call.
    let home = dir.path().join("home");
    let run_cli = || {
        Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .args(["creds", "aws/bench"])
            .env("SALLYPORT_SERVER", app.url())
            .env("SALLYPORT_TOKEN", &token)
            .env("SALLYPORT_CACHE_DIR", home.join("cache"))
            .env("SALLYPORT_CONFIG_DIR", home.join("config"))
            .stdout(Stdio::null())
            .status()
            .expect("sallyport creds")
    };
    assert!(run_cli().success(), "first call fills the cache");
    let mut hits = Vec::with_capacity(CLI_N);
    for _ in 0..CLI_N {
        let t = Instant::now();
        assert!(run_cli().success());
        hits.push(t.elapsed());
    }
    println!();
    println!(
        "`sallyport creds` from the cache ({CLI_N} processes): p50 {:.2} ms, p99 {:.2} ms wall per call",
        ms(pct(&mut hits, 0.5)),
        ms(pct(&mut hits, 0.99))
    );
    app.shutdown().await;
}

struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
