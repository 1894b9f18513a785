//! Commands that run or administer a server directly: `serve`, `config check`, `audit verify`,
//! `audit export`, `token create`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Output, exit};
use crate::app::{App, Options};
use crate::config::{Config, ParseOptions, Problems};
use crate::domain::{Channel, parse_duration};
use crate::plugin::{HostConfig, PluginHost};
use crate::policy::Policy;
use crate::service::{Service, now_ms};
use crate::store::{AuditFilter, SqlStore, Store, WriteCtx};

fn problems_out(output: Output, file: &Path, p: &Problems) -> u8 {
    match output {
        Output::Text => {
            eprintln!("{}: {} problem(s)", file.display(), p.0.len());
            for x in &p.0 {
                eprintln!("  - {x}");
            }
        }
        Output::Json => println!(
            "{}",
            json!({
                "file": file.display().to_string(),
                "ok": false,
                "problems": p.0.iter().map(|x| json!({"path": x.path, "message": x.message})).collect::<Vec<_>>(),
            })
        ),
    }
    exit::FAILED
}

fn fail(output: Output, msg: &str) -> u8 {
    match output {
        Output::Text => eprintln!("error: {msg}"),
        Output::Json => println!("{}", json!({ "ok": false, "error": msg })),
    }
    exit::FAILED
}

/// `sallyport serve --config FILE [--dev]`.
pub async fn serve(config_path: PathBuf, dev: bool) -> u8 {
    let config = match Config::load(&config_path, ParseOptions::default()) {
        Ok(c) => c,
        Err(p) => return problems_out(Output::Text, &config_path, &p),
    };
    let demo_token = if dev {
        config.secrets.get("demo_target_token").cloned()
    } else {
        None
    };
    let app = match App::start(
        config,
        Options {
            dev,
            demo_token,
            config_path: Some(config_path),
            ..Options::default()
        },
    )
    .await
    {
        Ok(a) => a,
        Err(e) => return fail(Output::Text, &format!("{e:#}")),
    };
    eprintln!("Sallyport is serving on {}", app.url());
    match app.run_until_signalled().await {
        Ok(()) => exit::OK,
        Err(e) => fail(Output::Text, &format!("{e:#}")),
    }
}

/// `sallyport config check FILE`: everything, including each plugin's `validate`.
pub async fn check(file: PathBuf, skip_secrets: bool, output: Output) -> u8 {
    let config = match Config::load(&file, ParseOptions { skip_secrets }) {
        Ok(c) => c,
        Err(p) => return problems_out(output, &file, &p),
    };
    let host = match PluginHost::new(HostConfig {
        slots: 4,
        ..HostConfig::default()
    }) {
        Ok(h) => h,
        Err(e) => return fail(output, &e.to_string()),
    };
    let n = config.entitlements.len();
    let users = config.users.len();
    match Policy::build(config, &host).await {
        Ok(policy) => {
            let plugins: Vec<String> = policy
                .plugins()
                .map(|p| format!("{} {}", p.identity().name, p.identity().version))
                .collect();
            match output {
                Output::Text => println!(
                    "{}: ok ({n} entitlement(s), {users} user(s); plugins: {})",
                    file.display(),
                    plugins.join(", ")
                ),
                Output::Json => println!(
                    "{}",
                    json!({ "file": file.display().to_string(), "ok": true, "entitlements": n, "users": users, "plugins": plugins })
                ),
            }
            exit::OK
        }
        Err(p) => problems_out(output, &file, &p),
    }
}

async fn open_store(config_path: &Path) -> Result<SqlStore, String> {
    let config = Config::load(config_path, ParseOptions::default()).map_err(|p| p.to_string())?;
    SqlStore::connect(config.database.url.expose(), 2)
        .await
        .map_err(|e| format!("opening the database: {e}"))
}

/// `sallyport audit verify --config FILE`.
pub async fn audit_verify(config_path: PathBuf, output: Output) -> u8 {
    let store = match open_store(&config_path).await {
        Ok(s) => s,
        Err(e) => return fail(output, &e),
    };
    let report = match store.verify_audit().await {
        Ok(r) => r,
        Err(e) => return fail(output, &format!("reading the audit log: {e}")),
    };
    store.close().await;
    match output {
        Output::Json => println!(
            "{}",
            json!({ "ok": report.ok(), "events": report.events, "head_seq": report.head_seq, "first_bad": report.first_bad })
        ),
        Output::Text => match &report.first_bad {
            None => println!(
                "audit chain ok: {} event(s), head at {}",
                report.events, report.head_seq
            ),
            Some(b) => eprintln!("audit chain BROKEN at event {}: {}", b.seq, b.problem),
        },
    }
    if report.ok() { exit::OK } else { exit::FAILED }
}

/// `sallyport audit export --config FILE [--since T] [--until T]`: JSON lines on stdout.
pub async fn audit_export(
    config_path: PathBuf,
    since: Option<String>,
    until: Option<String>,
) -> u8 {
    let parse = |flag: &str, t: &str| -> Result<i64, String> {
        t.parse::<jiff::Timestamp>()
            .map(|x| x.as_millisecond())
            .or_else(|_| t.parse::<i64>())
            .map_err(|_| {
                format!("{flag}: `{t}` is not an RFC 3339 time, e.g. 2026-01-31T00:00:00Z")
            })
    };
    let since = match since.as_deref().map(|t| parse("--since", t)).transpose() {
        Ok(v) => v,
        Err(e) => return fail(Output::Text, &e),
    };
    let until = match until.as_deref().map(|t| parse("--until", t)).transpose() {
        Ok(v) => v,
        Err(e) => return fail(Output::Text, &e),
    };
    let store = match open_store(&config_path).await {
        Ok(s) => s,
        Err(e) => return fail(Output::Text, &e),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = None;
    loop {
        let page = match store
            .audit(&AuditFilter {
                since,
                until,
                after_seq: after,
                limit: 5000,
                ..AuditFilter::default()
            })
            .await
        {
            Ok(p) => p,
            Err(e) => return fail(Output::Text, &format!("reading the audit log: {e}")),
        };
        for e in &page {
            let line = serde_json::to_string(e).unwrap_or_default();
            if writeln!(out, "{line}").is_err() {
                return exit::FAILED;
            }
        }
        match page.last() {
            Some(last) if page.len() == 5000 => after = Some(last.seq),
            _ => break,
        }
    }
    let _ = out.flush();
    store.close().await;
    exit::OK
}

/// `sallyport token create --config FILE --user ID`: issue an API token directly in the database
/// (for automation and for bootstrapping before any sign-in exists).
pub async fn token_create(
    config_path: PathBuf,
    user: String,
    name: String,
    ttl: String,
    output: Output,
) -> u8 {
    let ttl = match parse_duration(&ttl) {
        Ok(t) => t,
        Err(e) => return fail(output, &format!("--ttl: {e}")),
    };
    let config = match Config::load(&config_path, ParseOptions::default()) {
        Ok(c) => c,
        Err(p) => return problems_out(output, &config_path, &p),
    };
    let store = match SqlStore::connect(config.database.url.expose(), 2).await {
        Ok(s) => s,
        Err(e) => return fail(output, &format!("opening the database: {e}")),
    };
    let host = match PluginHost::new(HostConfig {
        slots: 2,
        ..HostConfig::default()
    }) {
        Ok(h) => h,
        Err(e) => return fail(output, &e.to_string()),
    };
    let policy = match Policy::build(config, &host).await {
        Ok(p) => p,
        Err(p) => return problems_out(output, &config_path, &p),
    };
    let Some(principal) = policy.directory_principal(&user) else {
        return fail(
            output,
            &format!("no user `{user}` in the configuration's [[users]]"),
        );
    };
    let service = Service::new(
        std::sync::Arc::new(store.clone()),
        policy,
        host,
        std::sync::Arc::default(),
    );
    let res = service
        .issue_token(&principal, &name, ttl, Channel::Api, &WriteCtx::default())
        .await;
    store.close().await;
    match res {
        Ok((token, rec)) => {
            match output {
                Output::Text => {
                    println!("{token}");
                    eprintln!(
                        "token {} for {} expires {} (shown once; store it as a secret)",
                        rec.id,
                        rec.user_id,
                        jiff::Timestamp::from_millisecond(rec.expires_at)
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    );
                }
                Output::Json => println!(
                    "{}",
                    json!({ "ok": true, "token": token, "token_id": rec.id, "user": rec.user_id, "expires_at_ms": rec.expires_at, "issued_at_ms": now_ms() })
                ),
            }
            exit::OK
        }
        Err(e) => fail(output, &e.to_string()),
    }
}
