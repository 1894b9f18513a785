//! Client commands: sign in, request, review, revoke, list. They talk to a server only through
//! the JSON API.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use super::client::{self, Client, ClientError, StoredToken, seg};
use super::{Output, exit};

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// The Sallyport server URL.
    #[arg(
        long,
        env = "SALLYPORT_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// A name for this login, to hold several identities on one server (e.g. `bob`).
    #[arg(
        long,
        env = "SALLYPORT_PROFILE",
        default_value = "default",
        global = true
    )]
    pub profile: String,
    /// Use this token instead of the stored login.
    #[arg(long, env = "SALLYPORT_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl Conn {
    pub(super) fn client(&self) -> Result<Client, String> {
        let token = match &self.token {
            Some(t) => Some(t.clone()),
            None => client::load_token(&self.server, &self.profile)?.map(|t| t.token),
        };
        Client::new(&self.server, token)
    }

    pub(super) fn signed_in(&self) -> Result<Client, String> {
        let c = self.client()?;
        if self.token.is_none() && client::load_token(&self.server, &self.profile)?.is_none() {
            return Err(format!(
                "not signed in to {} (profile `{}`): run `sallyport login --server {}{}`",
                self.server,
                self.profile,
                self.server,
                if self.profile == "default" {
                    String::new()
                } else {
                    format!(" --profile {}", self.profile)
                }
            ));
        }
        Ok(c)
    }
}

/// Print an error the way every command does, and give the exit code.
fn fail(output: Output, e: &str) -> u8 {
    match output {
        Output::Text => eprintln!("error: {e}"),
        Output::Json => println!("{}", json!({ "ok": false, "error": e })),
    }
    exit::FAILED
}

fn api_fail(output: Output, e: &ClientError) -> u8 {
    match output {
        Output::Text => eprintln!("error: {e}"),
        Output::Json => println!(
            "{}",
            json!({ "ok": false, "code": e.code, "error": e.message, "request_id": e.request_id, "status": e.status })
        ),
    }
    match e.code.as_str() {
        "self_review" | "not_eligible" | "forbidden" | "not_requestable" => exit::REFUSED,
        _ => exit::FAILED,
    }
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// One line per request.
fn request_table(list: &[Value]) {
    if list.is_empty() {
        println!("(none)");
        return;
    }
    println!(
        "{:<36}  {:<12}  {:<28}  {:<12}  {:<8}  CREATED",
        "ID", "STATE", "ENTITLEMENT", "REQUESTER", "DURATION"
    );
    for r in list {
        println!(
            "{:<36}  {:<12}  {:<28}  {:<12}  {:<8}  {}",
            s(r, "id"),
            s(r, "state"),
            s(r, "entitlement"),
            s(&r["requester"], "id"),
            s(r, "duration"),
            s(r, "created_at"),
        );
    }
}

fn requirements_text(r: &Value) -> String {
    let reqs = r["requirements"].as_array().cloned().unwrap_or_default();
    reqs.iter()
        .map(|q| {
            let who: Vec<String> = q["users"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str().map(|u| format!("user {u}")))
                .chain(
                    q["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|g| g.as_str().map(|g| format!("group {g}"))),
                )
                .collect();
            format!(
                "{} {}/{} ({})",
                s(q, "name"),
                q["approved_by"].as_array().map_or(0, Vec::len),
                q["needed"].as_u64().unwrap_or(0),
                who.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A request in full.
fn request_text(r: &Value) {
    println!("request      {}", s(r, "id"));
    println!("entitlement  {}", s(r, "entitlement"));
    println!("requester    {}", s(&r["requester"], "id"));
    println!("state        {}", s(r, "state"));
    println!("duration     {}", s(r, "duration"));
    println!("reason       {}", s(r, "justification"));
    if let Some(t) = r["ticket"].as_str() {
        println!("ticket       {t}");
    }
    println!("created      {}", s(r, "created_at"));
    if s(r, "state") == "pending" {
        println!("needs        {}", requirements_text(r));
        println!("times out    {}", s(r, "pending_until"));
    }
    if let Some(why) = r["approval_reason"].as_str() {
        println!("approved     {why}");
    }
    if let Some(why) = r["reason"].as_str() {
        println!("outcome      {why}");
    }
    if r["break_glass"].as_bool() == Some(true) {
        println!("BREAK-GLASS  approved by the requester's own review");
    }
    for rv in r["reviews"].as_array().into_iter().flatten() {
        let comment = rv["comment"]
            .as_str()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        println!(
            "review       {} {} via {} at {}{comment}",
            s(&rv["reviewer"], "id"),
            s(rv, "verdict"),
            s(rv, "channel"),
            s(rv, "at"),
        );
    }
    if r["grant"].is_object() {
        let g = &r["grant"];
        println!("granted      {}", s(g, "summary"));
        println!("active from  {}", s(g, "activated_at"));
        println!(
            "expires      {} ({} s left)",
            s(g, "expires_at"),
            g["seconds_left"].as_i64().unwrap_or(0)
        );
    }
    if r["revocation"].is_object() {
        let v = &r["revocation"];
        let status = s(v, "status");
        println!("revocation   {} ({})", status, s(v, "reason"));
        if status == "pending"
            && let Some(e) = v["last_error"].as_str()
        {
            println!(
                "             failed {} time(s), retrying: {e}",
                v["failed_attempts"].as_u64().unwrap_or(0)
            );
        }
    }
}

/// `sallyport login`.
pub async fn login(conn: &Conn, user: String, output: Output) -> u8 {
    let c = match Client::new(&conn.server, None) {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cli".into());
    let res = match c
        .post(
            "/api/v1/dev/login",
            &json!({ "user": user, "token_name": format!("cli on {host}") }),
        )
        .await
    {
        Ok(v) => v,
        Err(e) if e.status == 404 && e.code == "not_found" && e.message.contains("route") => {
            return fail(
                output,
                &format!(
                    "{} is not a dev server: `--dev-user` only works with `sallyport dev`",
                    conn.server
                ),
            );
        }
        Err(e) => return api_fail(output, &e),
    };
    signed_in(conn, &res, output)
}

/// Store the token a login answered with (0600) and say who is signed in.
fn signed_in(conn: &Conn, res: &Value, output: Output) -> u8 {
    let stored = StoredToken {
        token: s(res, "token").to_owned(),
        token_id: s(res, "token_id").to_owned(),
        user: s(&res["user"], "id").to_owned(),
        expires_at: s(res, "expires_at").to_owned(),
    };
    if let Err(e) = client::save_token(&conn.server, &conn.profile, stored.clone()) {
        return fail(output, &format!("could not store the token: {e}"));
    }
    match output {
        Output::Text => println!(
            "signed in to {} as {} (profile `{}`) until {}",
            conn.server, stored.user, conn.profile, stored.expires_at
        ),
        Output::Json => println!(
            "{}",
            json!({ "ok": true, "server": conn.server, "profile": conn.profile, "user": stored.user, "expires_at": stored.expires_at })
        ),
    }
    exit::OK
}

/// `sallyport login`: sign in through the browser. Listens on 127.0.0.1 (random port), opens
/// the server's CLI sign-in page with a PKCE challenge and a state, receives a one-time code on
/// the loopback listener, and exchanges it (with the verifier) for a token stored 0600.
pub async fn browser_login(conn: &Conn, no_browser: bool, timeout: &str, output: Output) -> u8 {
    let wait = match crate::domain::parse_duration(timeout) {
        Ok(s) => Duration::from_secs(s.max(1)),
        Err(e) => return fail(output, &format!("--timeout: {e}")),
    };
    let (verifier, state) = (crate::secret::random_b64(), crate::secret::random_b64());
    let challenge = crate::secret::pkce_challenge(&verifier);
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return fail(output, &format!("cannot listen on 127.0.0.1: {e}")),
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => return fail(output, &format!("cannot listen on 127.0.0.1: {e}")),
    };
    let url = format!(
        "{}/cli/login?port={port}&state={state}&code_challenge={challenge}",
        conn.server.trim_end_matches('/')
    );
    eprintln!("Sign in to {} in your browser:\n\n  {url}\n", conn.server);
    if !no_browser {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        let opened = std::process::Command::new(opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok();
        if !opened {
            eprintln!("(could not open a browser: open the address above yourself)");
        }
    }
    eprintln!(
        "Waiting for the browser (up to {})...",
        crate::domain::format_duration(wait.as_secs())
    );
    let code = match tokio::time::timeout(wait, receive_code(&listener, &state)).await {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => return fail(output, &e),
        Err(_) => {
            return fail(
                output,
                "no answer from the browser in time; run `sallyport login` again",
            );
        }
    };
    let c = match Client::new(&conn.server, None) {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "this computer".into());
    let res = match c
        .post(
            "/api/v1/cli/token",
            &json!({ "code": code, "code_verifier": verifier, "name": format!("cli on {host}") }),
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return api_fail(output, &e),
    };
    signed_in(conn, &res, output)
}

/// Serve the loopback listener until the browser brings `/callback?code=..&state=..` with our
/// state. Other requests (favicons, a stale tab) get a 404 and are ignored; at most 50.
async fn receive_code(listener: &tokio::net::TcpListener, state: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for _ in 0..50 {
        let (mut sock, _) = listener
            .accept()
            .await
            .map_err(|e| format!("the loopback listener failed: {e}"))?;
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        // Read the request head (bounded: 8 KiB, 5 s).
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
        })
        .await;
        if read.is_err() {
            continue;
        }
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let target = head
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let parsed = url::Url::parse(&format!("http://127.0.0.1{target}")).ok();
        let param = |k: &str| {
            parsed.as_ref().and_then(|u| {
                u.query_pairs()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.into_owned())
            })
        };
        let is_callback = parsed.as_ref().is_some_and(|u| u.path() == "/callback");
        let (status, body, result) = match (is_callback, param("code"), param("state")) {
            (true, Some(code), Some(st)) if st == state => (
                "200 OK",
                "<!doctype html><title>Sallyport</title><h1>Signed in</h1><p>The command line is signed in. You can close this tab.</p>",
                Some(Ok(code)),
            ),
            (true, _, Some(_)) => (
                "400 Bad Request",
                "<!doctype html><title>Sallyport</title><h1>Sign-in failed</h1><p>This answer belongs to another sign-in. Run <code>sallyport login</code> again.</p>",
                Some(Err("the browser answered for another sign-in (state mismatch); run `sallyport login` again".to_owned())),
            ),
            _ => ("404 Not Found", "not found", None),
        };
        let res = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(res.as_bytes()).await;
        let _ = sock.shutdown().await;
        if let Some(r) = result {
            return r;
        }
    }
    Err("too many unrelated requests on the loopback listener".into())
}

/// `sallyport logout`: revoke the token on the server and forget it.
pub async fn logout(conn: &Conn, output: Output) -> u8 {
    let stored = match client::load_token(&conn.server, &conn.profile) {
        Ok(Some(t)) => t,
        Ok(None) => return fail(output, "not signed in"),
        Err(e) => return fail(output, &e),
    };
    let revoked = match Client::new(&conn.server, Some(stored.token.clone())) {
        Ok(c) => c
            .delete(&format!("/api/v1/tokens/{}", seg(&stored.token_id)))
            .await
            .is_ok(),
        Err(_) => false,
    };
    if let Err(e) = client::forget_token(&conn.server, &conn.profile) {
        return fail(output, &e);
    }
    match output {
        Output::Text => println!(
            "signed out{}",
            if revoked {
                ""
            } else {
                " (the server could not be told; the token expires on its own)"
            }
        ),
        Output::Json => println!("{}", json!({ "ok": true, "revoked": revoked })),
    }
    exit::OK
}

/// `sallyport whoami`.
pub async fn whoami(conn: &Conn, output: Output) -> u8 {
    let c = match conn.signed_in() {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    match c.get("/api/v1/me").await {
        Ok(v) => {
            match output {
                Output::Json => print_json(&v),
                Output::Text => {
                    let p = &v["principal"];
                    let groups: Vec<&str> = p["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let mut roles = vec![];
                    if v["roles"]["admin"].as_bool() == Some(true) {
                        roles.push("admin");
                    }
                    if v["roles"]["auditor"].as_bool() == Some(true) {
                        roles.push("auditor");
                    }
                    println!("{} on {}", s(p, "id"), c.base());
                    println!("groups: {}", groups.join(", "));
                    if !roles.is_empty() {
                        println!("roles:  {}", roles.join(", "));
                    }
                }
            }
            exit::OK
        }
        Err(e) => api_fail(output, &e),
    }
}

/// `sallyport entitlements`.
pub async fn entitlements(conn: &Conn, output: Output) -> u8 {
    let c = match conn.signed_in() {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    match c.get("/api/v1/entitlements").await {
        Ok(v) => {
            match output {
                Output::Json => print_json(&v),
                Output::Text => {
                    let list = v["entitlements"].as_array().cloned().unwrap_or_default();
                    println!(
                        "{:<28}  {:<8}  {:<8}  {:<5}  DESCRIPTION",
                        "ENTITLEMENT", "MAX", "DEFAULT", "YOU"
                    );
                    for e in list {
                        println!(
                            "{:<28}  {:<8}  {:<8}  {:<5}  {}",
                            s(&e, "id"),
                            s(&e, "max_duration"),
                            s(&e, "default_duration"),
                            if e["requestable"].as_bool() == Some(true) {
                                "yes"
                            } else {
                                "no"
                            },
                            s(&e, "description"),
                        );
                    }
                }
            }
            exit::OK
        }
        Err(e) => api_fail(output, &e),
    }
}

/// What `request --wait` and `wait` conclude from a request's state.
fn outcome_code(state: &str) -> Option<u8> {
    match state {
        "active" => Some(exit::OK),
        "denied" | "cancelled" | "revoked" => Some(exit::REFUSED),
        "timed_out" => Some(exit::TIMED_OUT),
        "failed" => Some(exit::PROVISION_FAILED),
        "expired" | "ended" => Some(exit::FAILED),
        _ => None,
    }
}

/// Poll a request until it is decided and active (or final), showing progress on stderr.
pub(super) async fn wait_for(
    c: &Client,
    id: &str,
    timeout: Duration,
    output: Output,
) -> (u8, Option<Value>) {
    let tty = std::io::stderr().is_terminal() && output == Output::Text;
    let started = Instant::now();
    let spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut last_line = String::new();
    let mut tick = 0usize;
    let mut last: Option<Value> = None;
    loop {
        match c.get(&format!("/api/v1/requests/{}", seg(id))).await {
            Ok(r) => {
                let state = s(&r, "state").to_owned();
                if let Some(code) = outcome_code(&state) {
                    if tty {
                        eprint!("\r\x1b[2K");
                    }
                    return (code, Some(r));
                }
                let line = match state.as_str() {
                    "pending" => format!("pending: waiting for {}", requirements_text(&r)),
                    other => format!("{other}: putting access in place"),
                };
                if tty {
                    tick += 1;
                    eprint!(
                        "\r\x1b[2K{} {line} ({}s)",
                        spinner[tick % spinner.len()],
                        started.elapsed().as_secs()
                    );
                } else if line != last_line && output == Output::Text {
                    eprintln!("{line}");
                }
                last_line = line;
                last = Some(r);
            }
            Err(e) if e.status == 0 || e.status >= 500 => {
                // The server is restarting or unreachable for a moment: keep waiting.
                if output == Output::Text && !tty {
                    eprintln!("server unavailable ({e}); still waiting");
                }
            }
            Err(e) => {
                if tty {
                    eprint!("\r\x1b[2K");
                }
                return (api_fail(output, &e), None);
            }
        }
        if started.elapsed() >= timeout {
            if tty {
                eprint!("\r\x1b[2K");
            }
            return (exit::TIMED_OUT, last);
        }
        tokio::time::sleep(Duration::from_millis(if tty { 250 } else { 1000 })).await;
    }
}

fn report_outcome(code: u8, r: Option<&Value>, output: Output, timeout: Duration) -> u8 {
    match output {
        Output::Json => {
            let mut v = r.cloned().unwrap_or(Value::Null);
            if code == exit::TIMED_OUT && v.is_object() && s(&v, "state") == "pending" {
                v["wait_timed_out"] = Value::Bool(true);
            }
            print_json(&v);
        }
        Output::Text => {
            let Some(r) = r else { return code };
            let id = s(r, "id");
            match s(r, "state") {
                "active" => {
                    let g = &r["grant"];
                    println!(
                        "active: {} until {} ({})",
                        s(r, "entitlement"),
                        s(g, "expires_at"),
                        s(g, "summary")
                    );
                    println!("end it early with: sallyport done {id}");
                }
                "pending" => eprintln!(
                    "still pending after {} s; keep waiting with `sallyport wait {id}`",
                    timeout.as_secs()
                ),
                state => {
                    let why = r["reason"].as_str().unwrap_or("");
                    eprintln!("{state}: {why}");
                }
            }
        }
    }
    code
}

/// Arguments of `sallyport request`.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// The entitlement, e.g. `demo/app-admin` (`sallyport entitlements` lists them).
    pub entitlement: String,
    /// How long, e.g. `30m`, `1h`, `1h30m` (default: the entitlement's default).
    #[arg(long)]
    pub duration: Option<String>,
    /// Why you need it.
    #[arg(long)]
    pub reason: String,
    /// A change or incident ticket.
    #[arg(long)]
    pub ticket: Option<String>,
    /// Wait until access is active (or refused), showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit code 4).
    #[arg(long, default_value = "1h")]
    pub timeout: String,
}

fn parse_wait(t: &str) -> Result<Duration, String> {
    crate::domain::parse_duration(t)
        .map(Duration::from_secs)
        .map_err(|e| format!("--timeout: {e}"))
}

/// `sallyport request`.
pub async fn request(conn: &Conn, a: RequestArgs, output: Output) -> u8 {
    let timeout = match parse_wait(&a.timeout) {
        Ok(t) => t,
        Err(e) => return fail(output, &e),
    };
    let c = match conn.signed_in() {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    let mut body = json!({ "entitlement": a.entitlement, "justification": a.reason });
    if let Some(d) = &a.duration {
        body["duration"] = Value::String(d.clone());
    }
    if let Some(t) = &a.ticket {
        body["ticket"] = Value::String(t.clone());
    }
    let r = match c.post("/api/v1/requests", &body).await {
        Ok(r) => r,
        Err(e) => return api_fail(output, &e),
    };
    let id = s(&r, "id").to_owned();
    if !a.wait {
        match output {
            Output::Json => print_json(&r),
            Output::Text => {
                println!("{id}");
                match s(&r, "state") {
                    "pending" => eprintln!(
                        "pending: needs {}; follow it with `sallyport wait {id}`",
                        requirements_text(&r)
                    ),
                    "denied" => {
                        eprintln!("denied: {}", r["reason"].as_str().unwrap_or(""));
                        return exit::REFUSED;
                    }
                    other => eprintln!("{other}: {}", r["reason"].as_str().unwrap_or("")),
                }
            }
        }
        return if s(&r, "state") == "denied" {
            exit::REFUSED
        } else {
            exit::OK
        };
    }
    if output == Output::Text {
        eprintln!("requested {id}");
    }
    let (code, last) = wait_for(&c, &id, timeout, output).await;
    report_outcome(code, last.as_ref().or(Some(&r)), output, timeout)
}

/// `sallyport wait ID`.
pub async fn wait(conn: &Conn, id: &str, timeout: &str, output: Output) -> u8 {
    let timeout = match parse_wait(timeout) {
        Ok(t) => t,
        Err(e) => return fail(output, &e),
    };
    let c = match conn.signed_in() {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    let (code, last) = wait_for(&c, id, timeout, output).await;
    report_outcome(code, last.as_ref(), output, timeout)
}

/// `sallyport requests`.
pub async fn requests(
    conn: &Conn,
    scope: &str,
    state: Option<&str>,
    limit: u32,
    output: Output,
) -> u8 {
    let c = match conn.signed_in() {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    let mut path = format!("/api/v1/requests?scope={}&limit={limit}", seg(scope));
    if let Some(st) = state {
        path.push_str(&format!("&state={}", seg(st)));
    }
    match c.get(&path).await {
        Ok(v) => {
            match output {
                Output::Json => print_json(&v),
                Output::Text => {
                    request_table(v["requests"].as_array().map_or(&[][..], Vec::as_slice))
                }
            }
            exit::OK
        }
        Err(e) => api_fail(output, &e),
    }
}

/// `sallyport show ID`.
pub async fn show(conn: &Conn, id: &str, output: Output) -> u8 {
    let c = match conn.signed_in() {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    match c.get(&format!("/api/v1/requests/{}", seg(id))).await {
        Ok(v) => {
            match output {
                Output::Json => print_json(&v),
                Output::Text => request_text(&v),
            }
            exit::OK
        }
        Err(e) => api_fail(output, &e),
    }
}

/// A POST action on a request: review, cancel, revoke, end.
pub async fn act(conn: &Conn, id: &str, what: &str, body: Value, output: Output) -> u8 {
    let c = match conn.signed_in() {
        Ok(c) => c,
        Err(e) => return fail(output, &e),
    };
    match c
        .post(&format!("/api/v1/requests/{}/{what}", seg(id)), &body)
        .await
    {
        Ok(v) => {
            if what == "end"
                && let Some(ent) = v["entitlement"].as_str()
            {
                super::aws_cmd::forget(conn, ent);
            }
            match output {
                Output::Json => print_json(&v),
                Output::Text => {
                    let state = s(&v, "state");
                    match state {
                        "pending" => println!(
                            "{} is pending: needs {}",
                            s(&v, "id"),
                            requirements_text(&v)
                        ),
                        _ => println!(
                            "{} is {state}{}",
                            s(&v, "id"),
                            v["reason"]
                                .as_str()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        ),
                    }
                }
            }
            exit::OK
        }
        Err(e) => api_fail(output, &e),
    }
}
