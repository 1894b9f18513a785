//! `sallyport action …`: ask approval for one action from a pipeline or a shell, wait for it, and
//! consume an attestation. Non-interactive: progress goes to stderr one line at a time, the
//! attestation to stdout.
//!
//! `action request` exit codes: 0 approved (the attestation is printed), 1 denied (or
//! cancelled, revoked), 2 no decision before `--timeout` (or the request timed out on the
//! server), 3 any other error.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::Output;
use super::access::Conn;
use super::client::{Client, ClientError, seg};

/// Exit codes of `action request` (and `action consume`).
pub mod code {
    /// Approved (consume: consumed).
    pub const APPROVED: u8 = 0;
    /// Denied, cancelled or revoked (consume: refused).
    pub const DENIED: u8 = 1;
    /// No decision in time.
    pub const TIMED_OUT: u8 = 2;
    /// Anything else: bad usage, unreachable server, refused token...
    pub const ERROR: u8 = 3;
}

/// Poll interval while waiting.
const POLL: Duration = Duration::from_secs(2);
/// A line saying we are still waiting, at most this often when nothing changes.
const HEARTBEAT: Duration = Duration::from_secs(60);

#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Ask approval for one action; with --wait, wait for the decision and print the
    /// attestation. Exit codes: 0 approved, 1 denied, 2 timed out, 3 any other error.
    Request(RequestArgs),
    /// Use an attestation once (a service's or a pipeline's last step before acting).
    /// Exit codes: 0 consumed, 1 refused (used, expired, parameters differ), 3 other errors.
    Consume {
        /// The action request id (the attestation's `jti`).
        id: String,
        /// The attestation; `-` reads it from stdin.
        #[arg(long, env = "SALLYPORT_ATTESTATION", hide_env_values = true)]
        attestation: String,
        /// The parameters about to be acted on (checked against the approved digest).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The action kind, e.g. `deploy/production`.
    kind: String,
    /// A parameter, repeatable: `--param version=v1.4.2 --param service=api`.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Why (shown to approvers).
    #[arg(long)]
    reason: String,
    /// Wait for the decision.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (exit 2).
    #[arg(long, default_value = "30m")]
    timeout: String,
    /// A pipeline's OIDC workload token (e.g. GitHub Actions' ID token), instead of an API
    /// token. `SALLYPORT_ID_TOKEN` works too.
    #[arg(long, env = "SALLYPORT_ID_TOKEN", hide_env_values = true)]
    id_token: Option<String>,
    /// Read the workload token from this file (Kubernetes, GitLab, Jenkins credentials).
    #[arg(long, conflicts_with = "id_token")]
    id_token_file: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Run an `action` subcommand.
pub async fn run(conn: &Conn, cmd: ActionCommand) -> u8 {
    match cmd {
        ActionCommand::Request(a) => request(conn, a).await,
        ActionCommand::Consume {
            id,
            attestation,
            params,
            output,
        } => consume(conn, &id, &attestation, &params, output).await,
    }
}

fn parse_params(params: &[String]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            return Err(format!("--param `{p}`: expected KEY=VALUE"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("--param `{p}`: the key is empty"));
        }
        if out
            .insert(k.to_owned(), Value::String(v.to_owned()))
            .is_some()
        {
            return Err(format!("--param `{k}` is given twice"));
        }
    }
    Ok(out)
}

fn error(output: Output, code: u8, message: &str) -> u8 {
    match output {
        Output::Text => eprintln!("error: {message}"),
        Output::Json => println!("{}", json!({ "ok": false, "error": message })),
    }
    code
}

fn api_error(output: Output, e: &ClientError) -> u8 {
    match output {
        Output::Text => eprintln!("error: {e}"),
        Output::Json => println!(
            "{}",
            json!({ "ok": false, "code": e.code, "error": e.message, "request_id": e.request_id, "status": e.status })
        ),
    }
    code::ERROR
}

/// One line about where the request stands.
fn progress_line(v: &Value) -> String {
    let state = v["state"].as_str().unwrap_or("?");
    if state != "pending" {
        return state.to_owned();
    }
    let mut parts = Vec::new();
    for r in v["requirements"].as_array().into_iter().flatten() {
        let have = r["approved_by"].as_array().map_or(0, Vec::len);
        let need = r["needed"].as_u64().unwrap_or(0);
        let mut who: Vec<String> = Vec::new();
        who.extend(
            r["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|g| format!("group {g}")),
        );
        who.extend(
            r["users"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned),
        );
        parts.push(format!(
            "{} {have}/{need} ({})",
            r["name"].as_str().unwrap_or("approval"),
            who.join(", ")
        ));
    }
    if parts.is_empty() {
        "pending".into()
    } else {
        format!("pending: {}", parts.join("; "))
    }
}

fn finish(v: &Value, output: Output) -> u8 {
    let state = v["state"].as_str().unwrap_or("");
    let has_attestation = v["attestation"].as_str().is_some_and(|a| !a.is_empty());
    let code = match state {
        // Approved means an attestation in hand, nothing less (`cmd && deploy` must be safe).
        "active" if has_attestation => code::APPROVED,
        "active" => code::ERROR,
        "denied" | "cancelled" | "revoked" | "ended" | "expired" => code::DENIED,
        // Filed without --wait: not approved (yet), like a wait that ran out at once.
        "timed_out" | "pending" => code::TIMED_OUT,
        _ => code::ERROR,
    };
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "ok": code == code::APPROVED,
                "id": v["id"], "kind": v["entitlement"], "state": state,
                "params_digest": v["action"]["params_digest"],
                "valid_until": v["action"]["valid_until"],
                "reason": v["reason"],
                "attestation": v["attestation"],
            })
        ),
        Output::Text => match state {
            "active" if !has_attestation => eprintln!(
                "approved, but its attestation is no longer usable (expired or not yours): {}",
                v["id"].as_str().unwrap_or("")
            ),
            "active" => {
                eprintln!(
                    "approved: {} {} (valid until {})",
                    v["entitlement"].as_str().unwrap_or(""),
                    v["id"].as_str().unwrap_or(""),
                    v["action"]["valid_until"].as_str().unwrap_or("?")
                );
                if let Some(a) = v["attestation"].as_str() {
                    println!("{a}");
                }
            }
            "pending" => {
                eprintln!(
                    "filed: {} ({})",
                    v["id"].as_str().unwrap_or(""),
                    progress_line(v)
                );
                println!("{}", v["id"].as_str().unwrap_or(""));
            }
            _ => eprintln!(
                "{state}: {}",
                v["reason"].as_str().unwrap_or("no reason given")
            ),
        },
    }
    code
}

async fn request(conn: &Conn, a: RequestArgs) -> u8 {
    let output = a.output;
    let timeout = match crate::domain::parse_duration(&a.timeout) {
        Ok(t) => Duration::from_secs(t),
        Err(e) => return error(output, code::ERROR, &format!("--timeout: {e}")),
    };
    let params = match parse_params(&a.params) {
        Ok(p) => p,
        Err(e) => return error(output, code::ERROR, &e),
    };
    let id_token = match (&a.id_token, &a.id_token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) => {
                return error(
                    output,
                    code::ERROR,
                    &format!("--id-token-file {}: {e}", f.display()),
                );
            }
        },
        (None, None) => None,
    };
    let client = match &id_token {
        Some(t) => Client::new(&conn.server, Some(t.clone())),
        None => conn.signed_in(),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => return error(output, code::ERROR, &e),
    };
    let body = json!({ "kind": a.kind, "parameters": params, "reason": a.reason });
    let created = match client.post("/api/v1/actions", &body).await {
        Ok(v) => v,
        Err(e) => return api_error(output, &e),
    };
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    if !a.wait || created["state"] != "pending" {
        return finish(&created, output);
    }
    // A pipeline polls with its wait token: its workload token may expire first.
    let poller = match created["wait_token"].as_str() {
        Some(t) => match Client::new(&conn.server, Some(t.to_owned())) {
            Ok(c) => c,
            Err(e) => return error(output, code::ERROR, &e),
        },
        None => client,
    };
    let start = Instant::now();
    let mut last_line = progress_line(&created);
    eprintln!(
        "waiting for approval of {} {id} (up to {}): {last_line}",
        a.kind,
        crate::domain::format_duration(timeout.as_secs())
    );
    if let Some(url) = created["id"].as_str() {
        eprintln!("review it at {}/requests/{url}", poller.base());
    }
    let mut last_print = Instant::now();
    let mut failures = 0u32;
    // Bounded: at most timeout / POLL polls (plus the final one).
    let max_polls = timeout.as_secs() / POLL.as_secs() + 2;
    for _ in 0..max_polls {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(POLL.min(left)).await;
        match poller.get(&format!("/api/v1/actions/{}", seg(&id))).await {
            Ok(v) => {
                failures = 0;
                if v["state"] != "pending" {
                    return finish(&v, output);
                }
                let line = progress_line(&v);
                if line != last_line || last_print.elapsed() >= HEARTBEAT {
                    eprintln!(
                        "still waiting ({} left): {line}",
                        crate::domain::format_duration(
                            timeout.saturating_sub(start.elapsed()).as_secs()
                        )
                    );
                    last_line = line;
                    last_print = Instant::now();
                }
            }
            Err(e) if e.status == 0 || e.status >= 500 => {
                // A blip (server restart, network): keep waiting, say so once in a while.
                failures += 1;
                // A server that keeps failing is an error, not "no decision".
                if e.status >= 500 && failures >= 10 {
                    return api_error(output, &e);
                }
                if failures == 1 || failures.is_multiple_of(15) {
                    eprintln!("cannot check the request ({e}); retrying");
                }
            }
            Err(e) => return api_error(output, &e),
        }
    }
    // One last look at the deadline: a decision that just came in counts.
    if let Ok(v) = poller.get(&format!("/api/v1/actions/{}", seg(&id))).await
        && v["state"] != "pending"
    {
        return finish(&v, output);
    }
    match output {
        Output::Text => eprintln!(
            "timed out: no decision on {id} within {}; it stays pending on the server",
            crate::domain::format_duration(timeout.as_secs())
        ),
        Output::Json => println!(
            "{}",
            json!({ "ok": false, "id": id, "state": "pending", "error": "timed out waiting for a decision" })
        ),
    }
    code::TIMED_OUT
}

async fn consume(
    conn: &Conn,
    id: &str,
    attestation: &str,
    params: &[String],
    output: Output,
) -> u8 {
    let attestation = if attestation == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            return error(
                output,
                code::ERROR,
                &format!("reading the attestation from stdin: {e}"),
            );
        }
        s.trim().to_owned()
    } else {
        attestation.trim().to_owned()
    };
    // Always the parameters about to run (none for a kind without parameters): the server
    // checks them against the approved digest.
    let body = match parse_params(params) {
        Ok(p) => json!({ "attestation": attestation, "parameters": p }),
        Err(e) => return error(output, code::ERROR, &e),
    };
    // The attestation is the credential; a stored login, if any, names who consumed it.
    let client = match conn.client() {
        Ok(c) => c,
        Err(e) => return error(output, code::ERROR, &e),
    };
    match client
        .post(&format!("/api/v1/actions/{}/consume", seg(id)), &body)
        .await
    {
        Ok(v) => {
            match output {
                Output::Json => println!("{v}"),
                Output::Text => eprintln!("consumed: {} {id}", v["action"].as_str().unwrap_or("")),
            }
            code::APPROVED
        }
        Err(e) => {
            api_error(output, &e);
            match e.code.as_str() {
                "already_consumed" | "expired" | "not_usable" | "digest_mismatch"
                | "unauthenticated" | "invalid_input" => code::DENIED,
                _ => code::ERROR,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse() {
        let p = parse_params(&["a=1".into(), "b=x=y".into()]).expect("ok");
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "x=y");
        assert!(parse_params(&["a".into()]).is_err());
        assert!(parse_params(&["a=1".into(), "a=2".into()]).is_err());
        assert!(parse_params(&["=1".into()]).is_err());
    }
}
