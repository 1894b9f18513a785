//! AWS on the engineer's machine: `creds` (AWS `credential_process`), `exec`, `env` and
//! `aws-config`.
//!
//! Credentials are cached per server, profile and entitlement in the user's cache directory
//! (`$XDG_CACHE_HOME/sallyport/creds`, mode 0600), and refreshed when little time is left, so
//! that every AWS command does not cost a round trip to Sallyport.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::access::{Conn, wait_for};
use super::client::{Client, write_private};
use super::{Output, exit};

/// Refresh cached credentials when less than this is left.
const REFRESH_WINDOW_MS: i64 = 5 * 60 * 1000;

/// How to get credentials when there is no active grant.
#[derive(Debug, Clone, Args, Default)]
pub struct RequestOpts {
    /// File a request when there is no active grant (needs --reason).
    #[arg(long)]
    pub request: bool,
    /// Why (with --request).
    #[arg(long)]
    pub reason: Option<String>,
    /// How long (with --request; default: the entitlement's default).
    #[arg(long)]
    pub duration: Option<String>,
    /// A ticket (with --request).
    #[arg(long)]
    pub ticket: Option<String>,
    /// Wait for the request to be approved and active (with --request).
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "1h")]
    pub timeout: String,
}

/// The `credential_process` document, plus what the cache needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    #[serde(rename = "Version")]
    version: u8,
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: String,
    #[serde(rename = "SessionToken")]
    session_token: String,
    #[serde(rename = "Expiration")]
    expiration: String,
    #[serde(rename = "SallyportRequestId", default)]
    request_id: String,
    #[serde(rename = "SallyportFetchedAt", default)]
    fetched_at_ms: i64,
}

impl Cached {
    fn expiration_ms(&self) -> i64 {
        self.expiration
            .parse::<jiff::Timestamp>()
            .map_or(0, |t| t.as_millisecond())
    }

    /// The document AWS tools read (no Sallyport fields).
    fn process_json(&self) -> Value {
        json!({
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expiration,
        })
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SALLYPORT_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("sallyport"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sallyport"))
}

fn cache_path(conn: &Conn, entitlement: &str) -> Option<PathBuf> {
    let key = format!(
        "{}\n{}\n{entitlement}",
        conn.server.trim_end_matches('/'),
        conn.profile
    );
    let name = hex::encode(&Sha256::digest(key.as_bytes())[..16]);
    cache_dir().map(|d| d.join("creds").join(format!("{name}.json")))
}

fn read_cache(path: &Path) -> Option<Cached> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        // Someone else could read it: do not trust or use it.
        let _ = std::fs::remove_file(path);
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Forget cached credentials for an entitlement (after ending the grant).
pub fn forget(conn: &Conn, entitlement: &str) {
    if let Some(p) = cache_path(conn, entitlement) {
        let _ = std::fs::remove_file(p);
    }
}

/// Cached credentials are served while the server is unreachable only if they work this much
/// longer.
const STALE_FLOOR_MS: i64 = 60_000;

fn still_good(c: &Cached, now: i64) -> bool {
    let exp = c.expiration_ms();
    let lifetime = exp - c.fetched_at_ms;
    // Short-lived credentials refresh later, or they would never be served from the cache.
    let window = REFRESH_WINDOW_MS.min(lifetime / 4).max(10_000);
    exp - now > window
}

/// A failure, with its exit code.
struct Fail(u8, String);

async fn mint(c: &Client, entitlement: &str) -> Result<Cached, (u16, String, String)> {
    match c
        .post(
            "/api/v1/credentials",
            &json!({ "entitlement": entitlement }),
        )
        .await
    {
        Ok(v) if v["type"] == "aws" => Ok(Cached {
            version: 1,
            access_key_id: v["access_key_id"].as_str().unwrap_or_default().to_owned(),
            secret_access_key: v["secret_access_key"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            session_token: v["session_token"].as_str().unwrap_or_default().to_owned(),
            expiration: v["expiration"].as_str().unwrap_or_default().to_owned(),
            request_id: v["request_id"].as_str().unwrap_or_default().to_owned(),
            fetched_at_ms: now_ms(),
        }),
        Ok(v) => Err((
            200,
            "not_aws".into(),
            format!(
                "`{entitlement}` hands out {} credentials, not AWS ones",
                v["type"].as_str().unwrap_or("other")
            ),
        )),
        Err(e) => Err((e.status, e.code.clone(), e.to_string())),
    }
}

/// Get AWS credentials for an entitlement: from the cache, from the server, or (with
/// `--request`) by requesting access and waiting for it.
async fn credentials(conn: &Conn, entitlement: &str, ask: &RequestOpts) -> Result<Cached, Fail> {
    let path = cache_path(conn, entitlement);
    let cached = path.as_deref().and_then(read_cache);
    if let Some(c) = &cached
        && still_good(c, now_ms())
    {
        return Ok(c.clone());
    }
    let client = conn.signed_in().map_err(|e| Fail(exit::FAILED, e))?;
    let minted = match mint(&client, entitlement).await {
        Ok(c) => c,
        // Time to refresh, but the server cannot answer right now: credentials that still work
        // for a while are better than none (a revoked grant's are denied by AWS anyway).
        Err((status, _, msg))
            if (status == 0 || status >= 500)
                && cached
                    .as_ref()
                    .is_some_and(|c| c.expiration_ms() - now_ms() > STALE_FLOOR_MS) =>
        {
            eprintln!("warning: could not refresh the credentials ({msg}); using the cached ones");
            return cached.ok_or(Fail(exit::FAILED, msg));
        }
        Err((_, code, msg)) if code == "no_active_grant" => {
            if let Some(p) = &path {
                let _ = std::fs::remove_file(p);
            }
            if !ask.request {
                return Err(Fail(exit::FAILED, msg));
            }
            let Some(reason) = ask.reason.clone().filter(|r| !r.trim().is_empty()) else {
                return Err(Fail(
                    exit::USAGE,
                    "--request needs --reason TEXT (why you need the access)".into(),
                ));
            };
            // Re-running (or an interrupted --wait) must not file the same request twice.
            let open = client
                .get(&format!(
                    "/api/v1/requests?scope=mine&state=pending,approved,provisioning&limit=1&entitlement={}",
                    url::form_urlencoded::byte_serialize(entitlement.as_bytes()).collect::<String>()
                ))
                .await
                .map_err(|e| Fail(exit::FAILED, e.to_string()))?;
            let r = if let Some(r) = open["requests"].get(0).cloned() {
                eprintln!(
                    "you already asked for {entitlement}: {} is {}; waiting for it instead of asking again",
                    r["id"].as_str().unwrap_or_default(),
                    r["state"].as_str().unwrap_or_default()
                );
                r
            } else {
                let mut body = json!({ "entitlement": entitlement, "justification": reason });
                if let Some(d) = &ask.duration {
                    body["duration"] = Value::String(d.clone());
                }
                if let Some(t) = &ask.ticket {
                    body["ticket"] = Value::String(t.clone());
                }
                let r = client
                    .post("/api/v1/requests", &body)
                    .await
                    .map_err(|e| Fail(exit::FAILED, e.to_string()))?;
                eprintln!(
                    "requested {entitlement}: {}",
                    r["id"].as_str().unwrap_or_default()
                );
                r
            };
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            if r["state"] == "denied" {
                return Err(Fail(
                    exit::REFUSED,
                    format!("denied: {}", r["reason"].as_str().unwrap_or("")),
                ));
            }
            if !ask.wait {
                return Err(Fail(
                    exit::TIMED_OUT,
                    format!(
                        "not active yet; add --wait, or run `sallyport wait {id}` and try again"
                    ),
                ));
            }
            let timeout = crate::domain::parse_duration(&ask.timeout)
                .map(Duration::from_secs)
                .map_err(|e| Fail(exit::USAGE, format!("--timeout: {e}")))?;
            let (code, last) = wait_for(&client, &id, timeout, Output::Text).await;
            if code != exit::OK {
                let state = last
                    .as_ref()
                    .and_then(|v| v["state"].as_str())
                    .unwrap_or("not active");
                let why = last
                    .as_ref()
                    .and_then(|v| v["reason"].as_str())
                    .unwrap_or("");
                return Err(Fail(code, format!("{state}: {why}")));
            }
            mint(&client, entitlement)
                .await
                .map_err(|(_, _, m)| Fail(exit::FAILED, m))?
        }
        Err((_, code, msg)) => {
            let exit_code = if code == "forbidden" {
                exit::REFUSED
            } else {
                exit::FAILED
            };
            return Err(Fail(exit_code, msg));
        }
    };
    if let Some(p) = &path {
        let text = serde_json::to_vec(&minted).unwrap_or_default();
        if let Err(e) = write_private(p, &text) {
            eprintln!("warning: could not cache the credentials: {e}");
        }
    }
    Ok(minted)
}

/// `sallyport creds ENT`: the `credential_process` JSON on stdout, nothing else.
pub async fn creds(conn: &Conn, entitlement: &str, ask: &RequestOpts) -> u8 {
    match credentials(conn, entitlement, ask).await {
        Ok(c) => {
            println!("{}", c.process_json());
            exit::OK
        }
        Err(Fail(code, msg)) => {
            eprintln!("sallyport: {msg}");
            code
        }
    }
}

fn aws_vars(c: &Cached) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", c.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", c.secret_access_key.clone()),
        ("AWS_SESSION_TOKEN", c.session_token.clone()),
        ("AWS_CREDENTIAL_EXPIRATION", c.expiration.clone()),
    ]
}

/// `sallyport exec ENT -- CMD...`: run CMD with the `AWS_*` variables.
pub async fn exec(conn: &Conn, entitlement: &str, ask: &RequestOpts, cmd: &[String]) -> u8 {
    let Some((program, args)) = cmd.split_first() else {
        eprintln!(
            "error: give a command after `--`, e.g. `sallyport exec {entitlement} -- aws s3 ls`"
        );
        return exit::USAGE;
    };
    let c = match credentials(conn, entitlement, ask).await {
        Ok(c) => c,
        Err(Fail(code, msg)) => {
            eprintln!("error: {msg}");
            return code;
        }
    };
    let mut command = std::process::Command::new(program);
    command.args(args);
    for (k, v) in aws_vars(&c) {
        command.env(k, v);
    }
    // A named profile would take precedence over nothing here, but confuses people: drop it.
    command
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE");
    match command.status() {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => u8::try_from(c).unwrap_or(exit::FAILED),
                (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(exit::FAILED),
                _ => exit::FAILED,
            }
        }
        Err(e) => {
            eprintln!("error: cannot run `{program}`: {e}");
            127
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `sallyport env ENT`: `export` lines for a shell (`eval "$(sallyport env ENT)"`).
pub async fn env(conn: &Conn, entitlement: &str, ask: &RequestOpts, output: Output) -> u8 {
    let c = match credentials(conn, entitlement, ask).await {
        Ok(c) => c,
        Err(Fail(code, msg)) => {
            eprintln!("error: {msg}");
            return code;
        }
    };
    match output {
        Output::Text => {
            for (k, v) in aws_vars(&c) {
                println!("export {k}={}", shell_quote(&v));
            }
        }
        Output::Json => println!(
            "{}",
            Value::Object(
                aws_vars(&c)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::String(v)))
                    .collect()
            )
        ),
    }
    exit::OK
}

/// The profile name for an entitlement: `sallyport-aws-prod-admin`.
pub fn profile_name(entitlement: &str) -> String {
    let slug: String = entitlement
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("sallyport-{slug}")
}

fn quote_arg(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-.:=@+".contains(c))
    {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The `~/.aws/config` sections for the entitlements.
pub fn profiles(conn: &Conn, entitlements: &[String], region: Option<&str>) -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .map_or_else(|| "sallyport".to_owned(), |p| p.display().to_string());
    let mut out = String::new();
    for e in entitlements {
        out.push_str(&format!("[profile {}]\n", profile_name(e)));
        let mut cmd = vec![quote_arg(&exe), "--server".into(), quote_arg(&conn.server)];
        if conn.profile != "default" {
            cmd.push("--profile".into());
            cmd.push(quote_arg(&conn.profile));
        }
        cmd.push("creds".into());
        cmd.push(quote_arg(e));
        out.push_str(&format!("credential_process = {}\n", cmd.join(" ")));
        if let Some(r) = region {
            out.push_str(&format!("region = {r}\n"));
        }
        out.push('\n');
    }
    out
}

/// Replace (or add) sections of an INI-style AWS config, keeping everything else.
pub fn merge_config(existing: &str, sections: &str) -> String {
    let names: Vec<&str> = sections
        .lines()
        .filter(|l| l.starts_with('['))
        .map(str::trim)
        .collect();
    let mut out = String::new();
    let mut skipping = false;
    for line in existing.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skipping = names.contains(&t);
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(sections);
    out
}

fn aws_config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AWS_CONFIG_FILE") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join("config"))
}

/// `sallyport aws-config ENT...`.
pub fn aws_config(conn: &Conn, entitlements: &[String], region: Option<&str>, write: bool) -> u8 {
    if entitlements.is_empty() {
        eprintln!("error: name at least one entitlement");
        return exit::USAGE;
    }
    let sections = profiles(conn, entitlements, region);
    if !write {
        print!("{sections}");
        return exit::OK;
    }
    let Some(path) = aws_config_path() else {
        eprintln!("error: cannot find ~/.aws/config: set HOME or AWS_CONFIG_FILE");
        return exit::FAILED;
    };
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let merged = merge_config(&existing, &sections);
    if let Err(e) = write_private(&path, merged.as_bytes()) {
        eprintln!("error: {e}");
        return exit::FAILED;
    }
    for e in entitlements {
        eprintln!(
            "wrote profile {} to {}: try `aws sts get-caller-identity --profile {}`",
            profile_name(e),
            path.display(),
            profile_name(e)
        );
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_other_profiles() {
        let existing = "[default]\nregion = eu-west-1\n\n[profile sallyport-a]\ncredential_process = old\n\n[profile other]\nregion = us-east-1\n";
        let merged = merge_config(
            existing,
            "[profile sallyport-a]\ncredential_process = new\n\n",
        );
        assert!(merged.contains("[default]\nregion = eu-west-1"));
        assert!(merged.contains("[profile other]\nregion = us-east-1"));
        assert!(merged.contains("credential_process = new"));
        assert!(!merged.contains("credential_process = old"));
        assert_eq!(merged.matches("[profile sallyport-a]").count(), 1);
        assert_eq!(profile_name("aws/prod/admin"), "sallyport-aws-prod-admin");
        assert_eq!(quote_arg("/a b/c"), "\"/a b/c\"");
    }
}
