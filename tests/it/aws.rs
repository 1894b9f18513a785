//! AWS end to end: a real AWS API emulator (`moto_server`) driven by the real aws-sdk-rust inside
//! Sallyport, the real `aws-sts` and `aws-iam` plugins, and the real AWS CLI reading credentials
//! through `sallyport creds` as its `credential_process`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Db, Reaped, Server, free_port, missing, which};

const BIN: &str = env!("CARGO_BIN_EXE_sallyport");
const ACCOUNT: &str = "123456789012";
const T: Duration = Duration::from_secs(30);

/// A moto server on a random loopback port.
pub struct Moto {
    _child: Reaped,
    pub url: String,
}

/// Start moto, or `None` when it is not installed (CI requires it with SALLYPORT_REQUIRE_AWS).
pub async fn moto() -> Option<Moto> {
    if which("moto_server").is_none() || which("aws").is_none() {
        return missing(
            "SALLYPORT_REQUIRE_AWS",
            "moto_server or the aws CLI is not installed (pip install 'moto[server]' awscli)",
        );
    }
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let url = format!("http://127.0.0.1:{port}");
    let m = Moto {
        _child: Reaped(child),
        url,
    };
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{}/moto-api/", m.url)).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(start.elapsed() < T, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(m)
}

/// An IAM client of the test itself, talking to moto directly.
pub async fn iam(moto: &Moto) -> aws_sdk_iam::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_sdk_iam::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_iam::Client::new(&conf)
}

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"]}]}"#;

/// Roles, a user, a group and a policy in moto.
pub async fn seed(iam: &aws_sdk_iam::Client) {
    for (role, max) in [("prod-admin", 3600), ("outside", 3600)] {
        iam.create_role()
            .role_name(role)
            .assume_role_policy_document(TRUST)
            .max_session_duration(max)
            .send()
            .await
            .expect("create role");
    }
    iam.create_user()
        .user_name("alice")
        .send()
        .await
        .expect("user");
    iam.create_group()
        .group_name("oncall")
        .send()
        .await
        .expect("group");
    iam.create_policy()
        .policy_name("ReadStuff")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}"#)
        .send()
        .await
        .expect("policy");
}

/// Quorum settings that approve everyone in `eng` at once.
const AUTO: &str = r#"auto_approve = [{ requester_groups = ["eng"] }]"#;

/// An entitlement `eng` may request: its connector's settings and its quorum settings, as TOML
/// lines.
fn entitlement(id: &str, max: &str, plugin: &str, settings: &str, approval: &str) -> String {
    format!(
        r#"
[[entitlements]]
id = "{id}"
max_duration = "{max}"
requester_groups = ["eng"]
[entitlements.connector]
plugin = "{plugin}"
[entitlements.connector.settings]
{settings}
[entitlements.approval]
plugin = "quorum"
[entitlements.approval.settings]
{approval}
"#
    )
}

/// The Sallyport policy for these tests, with AWS pointed at moto; returns (text, base dir).
pub fn config(db_url: &str, moto: &Moto) -> (String, PathBuf) {
    let dir = tempfile::tempdir().expect("dir").keep();
    std::fs::write(dir.join("aws-key"), "testing").expect("key");
    std::fs::write(dir.join("aws-secret"), "testing").expect("secret");
    let iam = |ent: &str, extra: &str| {
        let settings = if extra.starts_with("user_arn") {
            extra.to_owned()
        } else {
            format!("user_arn = \"arn:aws:iam::{ACCOUNT}:user/{{{{requester.id}}}}\"\n{extra}")
        };
        entitlement(ent, "2h", "aws-iam", &settings, AUTO)
    };
    let sts = |ent: &str, role: &str| {
        entitlement(
            ent,
            "4h",
            "aws-sts",
            &format!(
                "role_arn = \"arn:aws:iam::{ACCOUNT}:role/{role}\"\ntags = {{ team = \"platform\" }}"
            ),
            AUTO,
        )
    };
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[database]
url = "{db_url}"
[auth]
admin_users = ["root"]
[jobs]
lease = "5s"
retry_max = "2s"
cleanup_delay = "3s"
[aws]
region = "us-east-1"
endpoint_url = "{moto}"
access_key_id_secret = "aws_key"
secret_access_key_secret = "aws_secret"
max_attempts = 2
[secrets.aws_key]
file = "aws-key"
[secrets.aws_secret]
file = "aws-secret"
[plugins.capabilities.aws-sts.aws]
arns = ["arn:aws:iam::{ACCOUNT}:role/prod-*"]
[plugins.capabilities.aws-iam.aws]
arns = ["arn:aws:iam::{ACCOUNT}:user/*", "arn:aws:iam::{ACCOUNT}:group/oncall", "arn:aws:iam::{ACCOUNT}:policy/ReadStuff"]
[[users]]
id = "alice"
groups = ["eng"]
[[users]]
id = "root"
{sts1}{sts2}{inline}{attach}{group}"#,
        moto = moto.url,
        sts1 = sts("aws/prod-admin", "prod-admin"),
        // Another account's user: only the running grant knows the ARN (it names the
        // requester), so only the host's check at call time can refuse it.
        sts2 = iam(
            "aws/outside",
            &format!(
                "user_arn = \"arn:aws:iam::999999999999:user/{{{{requester.id}}}}\"\ngroup_arn = \"arn:aws:iam::{ACCOUNT}:group/oncall\""
            )
        ),
        inline = iam(
            "aws/inline",
            r#"inline_policy = { Version = "2012-10-17", Statement = [{ Effect = "Allow", Action = "s3:ListBucket", Resource = "*" }] }"#
        ),
        attach = iam(
            "aws/attach",
            &format!(r#"attach_policy_arn = "arn:aws:iam::{ACCOUNT}:policy/ReadStuff""#)
        ),
        group = iam(
            "aws/group",
            &format!(r#"group_arn = "arn:aws:iam::{ACCOUNT}:group/oncall""#)
        ),
    );
    (text, dir)
}

fn ms(t: &Value) -> i64 {
    t.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_millisecond())
}

struct Cli {
    server: String,
    token: String,
    home: PathBuf,
    moto: String,
}

impl Cli {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SALLYPORT_SERVER", &self.server)
            .env("SALLYPORT_TOKEN", &self.token)
            .env("SALLYPORT_CACHE_DIR", self.home.join("cache"))
            .env("SALLYPORT_CONFIG_DIR", self.home.join("config"))
            .env("AWS_CONFIG_FILE", self.home.join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home.join("aws-credentials"),
            )
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd(program).args(args).output().expect("run");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn sallyport(&self, args: &[&str]) -> (i32, String, String) {
        self.run(BIN, args)
    }

    fn aws(&self, profile: &str, args: &[&str]) -> (i32, String, String) {
        let mut all = vec![
            "--profile",
            profile,
            "--endpoint-url",
            &self.moto,
            "--output",
            "json",
        ];
        all.extend_from_slice(args);
        self.run("aws", &all)
    }
}

async fn issued(s: &Server, id: &str) -> usize {
    let (_, v) = s
        .get(
            "root",
            &format!("/api/v1/audit?subject={id}&action=credentials.issued"),
        )
        .await;
    v["events"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_credentials_through_the_aws_cli() {
    let Some(moto) = moto().await else { return };
    let iam = iam(&moto).await;
    seed(&iam).await;
    let db = Db::new(Backend::Sqlite).await.expect("db");
    let (text, base) = config(&db.url, &moto);
    let s = Server::start_in(&text, &base).await;

    // A 2 h grant of a role whose maximum session is 1 h.
    let r = s.request("alice", "aws/prod-admin", "2h", "deploy").await;
    let id = r["id"].as_str().expect("id").to_owned();
    let active = s.wait_state(&id, "active", T).await;
    assert!(
        active["grant"]["summary"]
            .as_str()
            .is_some_and(|x| x.contains("role/prod-admin")),
        "{active}"
    );
    let grant_end = ms(&active["grant"]["expires_at"]);

    // The AWS CLI, configured by `sallyport aws-config`, gets its credentials from Sallyport.
    let home = tempfile::tempdir().expect("home").keep();
    let cli = Cli {
        server: s.url(),
        token: s.token("alice").await,
        home: home.clone(),
        moto: moto.url.clone(),
    };
    let (code, out, err) = cli.sallyport(&[
        "aws-config",
        "aws/prod-admin",
        "--region",
        "us-east-1",
        "--write",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let cfg = std::fs::read_to_string(home.join("aws-config")).expect("aws config");
    assert!(
        cfg.contains("[profile sallyport-aws-prod-admin]") && cfg.contains("credential_process = "),
        "{cfg}"
    );
    let (code, out, err) = cli.aws("sallyport-aws-prod-admin", &["sts", "get-caller-identity"]);
    assert_eq!(code, 0, "aws sts get-caller-identity: {out}{err}");
    let who: Value = serde_json::from_str(&out).expect("json");
    let arn = who["Arn"].as_str().unwrap_or_default();
    assert!(arn.contains(":assumed-role/prod-admin/sp-alice-"), "{who}");

    // The credential_process document: STS never past the role's 1 h, never past the grant.
    let (code, out, _) = cli.sallyport(&["creds", "aws/prod-admin"]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["Version"], 1);
    assert!(doc["AccessKeyId"].as_str().is_some_and(|k| !k.is_empty()));
    let exp = ms(&doc["Expiration"]);
    let now = jiff::Timestamp::now().as_millisecond();
    assert!(
        exp <= grant_end,
        "expiration {exp} after the grant's end {grant_end}"
    );
    assert!(
        exp <= now + 3_600_000 + 5_000,
        "clamped to the role's maximum session (moto does not)"
    );
    assert!(exp >= now + 3_500_000, "as long as allowed: {}", exp - now);
    // The second call is served from the 0600 cache: no new mint.
    let minted = issued(&s, &id).await;
    assert_eq!(cli.sallyport(&["creds", "aws/prod-admin"]).0, 0);
    assert_eq!(issued(&s, &id).await, minted, "served from the cache");
    let cache = std::fs::read_dir(home.join("cache/creds"))
        .expect("cache")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&cache).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // exec and env give the same credentials to other programs.
    let (code, out, err) = cli.sallyport(&[
        "exec",
        "aws/prod-admin",
        "--",
        "aws",
        "--endpoint-url",
        &moto.url,
        "sts",
        "get-caller-identity",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("assumed-role/prod-admin"), "{out}");
    let (code, out, _) = cli.sallyport(&["env", "aws/prod-admin"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("export AWS_ACCESS_KEY_ID='") && out.contains("export AWS_SESSION_TOKEN='"),
        "{out}"
    );

    // A short grant: STS will not go below 900 s, but the credentials end with the grant.
    let short = s
        .request("alice", "aws/prod-admin", "5m", "quick look")
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let v = s.wait_state(&short, "active", T).await;
    let short_end = ms(&v["grant"]["expires_at"]);
    let (st, c) = s
        .post(
            "alice",
            "/api/v1/credentials",
            json!({ "request_id": short }),
        )
        .await;
    assert_eq!(st, 200, "{c}");
    assert!(
        ms(&c["expiration"]) <= short_end && ms(&c["expiration"]) >= short_end - 2_000,
        "{c}"
    );
    assert!(c["grant_expires_at"].is_string());

    // Ending early: no more credentials, and live sessions of this request are denied.
    let (code, out, err) = cli.sallyport(&["done", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let v = s
        .wait_for(&id, "revocation", T, |v| {
            v["revocation"]["status"] == "done"
        })
        .await;
    assert_eq!(v["state"], "ended");
    let deny = iam
        .get_role_policy()
        .role_name("prod-admin")
        .policy_name(format!("sallyport-revoked-{id}"))
        .send()
        .await
        .expect("deny policy on the role");
    let doc = urlencoding_decode(deny.policy_document());
    assert!(
        doc.contains("aws:TokenIssueTime") && doc.contains(&id),
        "{doc}"
    );
    // (The other request is still active, so the entitlement still has credentials.)
    let (st, _) = s
        .post("alice", "/api/v1/credentials", json!({ "request_id": id }))
        .await;
    assert_eq!(st, 404);
    s.post("alice", &format!("/api/v1/requests/{short}/end"), json!({}))
        .await;
    s.wait_for(&short, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    let (code, _, err) = cli.sallyport(&["creds", "aws/prod-admin"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no active grant of `aws/prod-admin`") && err.contains("sallyport request"),
        "{err}"
    );

    // An ARN outside the capability's (another account's user, known only once the grant names
    // its requester) is refused before AWS is called.
    fails_with(
        &s,
        "alice",
        "aws/outside",
        "10m",
        "sneaky",
        &["not among the ARNs"],
    )
    .await;
    s.stop().await;
    db.cleanup().await;
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_grants_carry_their_expiry_and_vanish_on_revoke() {
    let Some(moto) = moto().await else { return };
    let iam = iam(&moto).await;
    seed(&iam).await;
    let db = Db::new(Backend::Sqlite).await.expect("db");
    let (text, base) = config(&db.url, &moto);
    let s = Server::start_in(&text, &base).await;

    // Inline policy: every Allow ends at expires_at.
    let id = s.request_id("alice", "aws/inline", "30m", "debug").await;
    let v = s.wait_state(&id, "active", T).await;
    let end = v["grant"]["expires_at"]
        .as_str()
        .expect("end")
        .parse::<jiff::Timestamp>()
        .expect("ts");
    let p = iam
        .get_user_policy()
        .user_name("alice")
        .policy_name(format!("sallyport-{id}"))
        .send()
        .await
        .expect("inline policy");
    let doc: Value = serde_json::from_str(&urlencoding_decode(p.policy_document())).expect("json");
    let cond = doc["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"]
        .as_str()
        .expect("condition");
    let cond_ms = cond
        .parse::<jiff::Timestamp>()
        .expect("ts")
        .as_millisecond();
    assert!(
        cond_ms <= end.as_millisecond() && end.as_millisecond() - cond_ms < 1000,
        "{cond} vs {end}"
    );
    s.post("alice", &format!("/api/v1/requests/{id}/end"), json!({}))
        .await;
    s.wait_for(&id, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    let gone = iam
        .get_user_policy()
        .user_name("alice")
        .policy_name(format!("sallyport-{id}"))
        .send()
        .await;
    assert!(gone.is_err(), "the inline policy is deleted");

    // Managed policy attached, then detached.
    let id = s.request_id("alice", "aws/attach", "30m", "read").await;
    s.wait_state(&id, "active", T).await;
    let attached = |iam: aws_sdk_iam::Client| async move {
        iam.list_attached_user_policies()
            .user_name("alice")
            .send()
            .await
            .expect("list")
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_name().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    assert_eq!(attached(iam.clone()).await, vec!["ReadStuff".to_owned()]);
    let (st, _) = s
        .post(
            "root",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({ "reason": "done" }),
        )
        .await;
    assert_eq!(st, 200);
    s.wait_for(&id, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert!(attached(iam.clone()).await.is_empty());

    // Group membership, then removal.
    let id = s.request_id("alice", "aws/group", "30m", "on call").await;
    s.wait_state(&id, "active", T).await;
    let members = |iam: aws_sdk_iam::Client| async move {
        iam.get_group()
            .group_name("oncall")
            .send()
            .await
            .expect("group")
            .users()
            .iter()
            .map(|u| u.user_name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(members(iam.clone()).await, vec!["alice".to_owned()]);
    s.post("alice", &format!("/api/v1/requests/{id}/end"), json!({}))
        .await;
    s.wait_for(&id, "revocation", T, |v| {
        v["revocation"]["status"] == "done"
    })
    .await;
    assert!(members(iam.clone()).await.is_empty());

    // No credentials from an IAM grant.
    let id = s.request_id("alice", "aws/group", "30m", "again").await;
    s.wait_state(&id, "active", T).await;
    let (st, v) = s
        .post("alice", "/api/v1/credentials", json!({ "request_id": id }))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("no_credentials")),
        "{v}"
    );
    s.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_gives_no_credentials() {
    let Some(moto) = moto().await else { return };
    let iam = iam(&moto).await;
    seed(&iam).await;
    let db = Db::new(Backend::Sqlite).await.expect("db");
    let (text, base) = config(&db.url, &moto);
    let s = Server::start_in(&text, &base).await;
    let id = s.request_id("alice", "aws/prod-admin", "2s", "brief").await;
    s.wait_state(&id, "active", T).await;
    let (st, c) = s
        .post(
            "alice",
            "/api/v1/credentials",
            json!({ "entitlement": "aws/prod-admin" }),
        )
        .await;
    assert_eq!(st, 200, "{c}");
    s.wait_for(&id, "expiry", T, |v| v["state"] == "expired")
        .await;
    let (st, v) = s
        .post(
            "alice",
            "/api/v1/credentials",
            json!({ "entitlement": "aws/prod-admin" }),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (404, Some("no_active_grant")),
        "{v}"
    );
    let (st, v) = s
        .post("alice", "/api/v1/credentials", json!({ "request_id": id }))
        .await;
    assert_eq!(st, 404, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("expired")),
        "{v}"
    );
    s.stop().await;
    db.cleanup().await;
}

/// A recording proxy in front of moto: every request Sallyport's AWS SDK sends passes through it,
/// so the test can read what went over the wire (moto itself checks none of it).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<Vec<(String, String)>>>>;

struct Recorder {
    url: String,
    seen: Seen,
    /// Answer this many AssumeRole calls with STS's throttling error instead of passing them on.
    throttle: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(upstream: &str) -> Recorder {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, Method, StatusCode, Uri};
        let seen: Seen = Default::default();
        let throttle = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (up, log, slow) = (upstream.to_owned(), seen.clone(), throttle.clone());
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (up, log, client, slow) =
                    (up.clone(), log.clone(), client.clone(), slow.clone());
                async move {
                    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    let assume = form.iter().any(|(k, v)| k == "Action" && v == "AssumeRole");
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(form);
                    if assume
                        && slow
                            .fetch_update(
                                std::sync::atomic::Ordering::SeqCst,
                                std::sync::atomic::Ordering::SeqCst,
                                |n| n.checked_sub(1),
                            )
                            .is_ok()
                    {
                        let mut out = axum::response::Response::new(axum::body::Body::from(
                            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>t</RequestId></ErrorResponse>"#,
                        ));
                        *out.status_mut() = StatusCode::BAD_REQUEST;
                        out.headers_mut().insert(
                            "content-type",
                            axum::http::HeaderValue::from_static("text/xml"),
                        );
                        return out;
                    }
                    let mut rq = client.request(
                        method,
                        format!("{up}{}", uri.path_and_query().map_or("/", |p| p.as_str())),
                    );
                    for (k, v) in &headers {
                        if k != "host" && k != "content-length" {
                            rq = rq.header(k, v);
                        }
                    }
                    match rq.body(body).send().await {
                        Ok(r) => {
                            let status = r.status();
                            let ct = r.headers().get("content-type").cloned();
                            let bytes = r.bytes().await.unwrap_or_default();
                            let mut out =
                                axum::response::Response::new(axum::body::Body::from(bytes));
                            *out.status_mut() = status;
                            if let Some(ct) = ct {
                                out.headers_mut().insert("content-type", ct);
                            }
                            out
                        }
                        Err(e) => {
                            let mut out = axum::response::Response::new(axum::body::Body::from(
                                e.to_string(),
                            ));
                            *out.status_mut() = StatusCode::BAD_GATEWAY;
                            out
                        }
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            url,
            seen,
            throttle,
            task,
        }
    }

    /// The form fields of every call with this `Action`, oldest first.
    fn calls(&self, action: &str) -> Vec<std::collections::HashMap<String, String>> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|f| f.iter().any(|(k, v)| k == "Action" && v == action))
            .map(|f| f.iter().cloned().collect())
            .collect()
    }
}

/// The session tags of an AssumeRole call, as key -> value.
fn tags(
    call: &std::collections::HashMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    (1..=50)
        .filter_map(|i| {
            Some((
                call.get(&format!("Tags.member.{i}.Key"))?.clone(),
                call.get(&format!("Tags.member.{i}.Value"))?.clone(),
            ))
        })
        .collect()
}

/// File a request and wait for it to fail with a reason that says all of `why`.
async fn fails_with(s: &Server, user: &str, ent: &str, duration: &str, reason: &str, why: &[&str]) {
    let id = s.request_id(user, ent, duration, reason).await;
    let v = s.wait_state(&id, "failed", T).await;
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| why.iter().all(|w| r.contains(w))),
        "{v}"
    );
}

async fn has_event(s: &Server, id: &str, action: &str) -> bool {
    let (_, v) = s
        .get(
            "root",
            &format!("/api/v1/audit?subject={id}&action={action}"),
        )
        .await;
    v["events"].as_array().is_some_and(|e| !e.is_empty())
}

async fn in_group(iam: &aws_sdk_iam::Client, user: &str) -> bool {
    iam.get_group()
        .group_name("oncall")
        .send()
        .await
        .expect("group")
        .users()
        .iter()
        .any(|u| u.user_name() == user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_sallyport_sends_to_aws_and_when_it_cleans_up() {
    let Some(moto) = moto().await else { return };
    let iam = iam(&moto).await;
    seed(&iam).await;
    let rec = Recorder::start(&moto.url).await;
    let db = Db::new(Backend::Sqlite).await.expect("db");
    let (text, base) = config(&db.url, &moto);
    let text = text
        .replace(
            &format!("endpoint_url = \"{}\"", moto.url),
            &format!("endpoint_url = \"{}\"", rec.url),
        )
        .replace(
            &format!("arns = [\"arn:aws:iam::{ACCOUNT}:role/prod-*\"]"),
            &format!(
                "arns = [\"arn:aws:iam::{ACCOUNT}:role/prod-*\", \"arn:aws:iam::{ACCOUNT}:policy/ReadStuff\"]"
            ),
        )
        + &entitlement(
            "aws/prod-narrow",
            "4h",
            "aws-sts",
            &format!(
                "role_arn = \"arn:aws:iam::{ACCOUNT}:role/prod-admin\"\npolicy_arns = [\"arn:aws:iam::{ACCOUNT}:policy/ReadStuff\"]"
            ),
            AUTO,
        )
        + &entitlement(
            "aws/prod-missing",
            "1h",
            "aws-sts",
            &format!("role_arn = \"arn:aws:iam::{ACCOUNT}:role/prod-missing\""),
            AUTO,
        )
        + &entitlement(
            "aws/prod-pathed",
            "1h",
            "aws-sts",
            &format!("role_arn = \"arn:aws:iam::{ACCOUNT}:role/prod-x/prod-admin\""),
            AUTO,
        )
        + &entitlement(
            "aws/contractor",
            "1h",
            "aws-iam",
            &format!(
                "user_arn = \"arn:aws:iam::{ACCOUNT}:user/contractors/{{{{requester.id}}}}\"\ngroup_arn = \"arn:aws:iam::{ACCOUNT}:group/oncall\""
            ),
            AUTO,
        );
    let s = Server::start_in(&text, &base).await;

    // A 5 minute grant: STS gets its 900 s floor (the session policy ends it at the grant's end),
    // the session name, source identity and tags name who, what and which request.
    let id = s.request_id("alice", "aws/prod-admin", "5m", "look").await;
    let v = s.wait_state(&id, "active", T).await;
    let end = v["grant"]["expires_at"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .expect("end");
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (st, c) = s
            .post("alice", "/api/v1/credentials", json!({ "request_id": id }))
            .await;
        assert_eq!(st, 200, "{c}");
        keys.push(c["access_key_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_ne!(keys[0], keys[1], "fresh credentials on every call");
    let calls = rec.calls("AssumeRole");
    assert_eq!(calls.len(), 3, "the grant's check and two mints");
    let last_part = id.rsplit('-').next().unwrap_or(&id);
    for c in &calls {
        assert_eq!(
            c["RoleArn"],
            format!("arn:aws:iam::{ACCOUNT}:role/prod-admin")
        );
        assert_eq!(c["DurationSeconds"], "900", "never below STS's minimum");
        assert_eq!(c["RoleSessionName"], format!("sp-alice-{last_part}"));
        assert_eq!(c["SourceIdentity"], "alice");
        let t = tags(c);
        assert_eq!(
            t.get("sallyport-requester").map(String::as_str),
            Some("alice")
        );
        assert_eq!(t.get("sallyport-request"), Some(&id));
        assert_eq!(
            t.get("sallyport-entitlement").map(String::as_str),
            Some("aws/prod-admin")
        );
        assert_eq!(t.get("team").map(String::as_str), Some("platform"));
        assert!(!c.contains_key("PolicyArns.member.1.arn"));
        let transitive: std::collections::BTreeSet<&str> = (1..=3)
            .filter_map(|i| {
                c.get(&format!("TransitiveTagKeys.member.{i}"))
                    .map(String::as_str)
            })
            .collect();
        assert_eq!(
            transitive,
            [
                "sallyport-entitlement",
                "sallyport-request",
                "sallyport-requester"
            ]
            .into(),
            "chained sessions keep the tags the early-revoke deny matches"
        );
        let policy: Value = serde_json::from_str(&c["Policy"]).expect("session policy");
        let end_text = end.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        assert_eq!(policy["Statement"][0]["Effect"], "Allow");
        assert_eq!(
            policy["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"],
            end_text
        );
        assert_eq!(policy["Statement"][1]["Effect"], "Deny");
        assert_eq!(
            policy["Statement"][1]["Condition"]["DateGreaterThanEquals"]["aws:CurrentTime"],
            end_text
        );
    }

    // Managed session policies stay the limit: no Allow of Sallyport's beside them.
    let narrow = s.request_id("alice", "aws/prod-narrow", "1h", "read").await;
    s.wait_state(&narrow, "active", T).await;
    let (st, c) = s
        .post(
            "alice",
            "/api/v1/credentials",
            json!({ "request_id": narrow }),
        )
        .await;
    assert_eq!(st, 200, "{c}");
    let c = rec.calls("AssumeRole").pop().expect("the mint");
    assert_eq!(
        c.get("PolicyArns.member.1.arn").map(String::as_str),
        Some(format!("arn:aws:iam::{ACCOUNT}:policy/ReadStuff").as_str())
    );
    let policy: Value = serde_json::from_str(&c["Policy"]).expect("session policy");
    let statements = policy["Statement"].as_array().cloned().unwrap_or_default();
    assert!(
        !statements.is_empty() && statements.iter().all(|s| s["Effect"] == "Deny"),
        "{policy}"
    );

    // Throttling is retried (the test configures two attempts), and reported when it persists.
    let before = rec.calls("AssumeRole").len();
    rec.throttle.store(1, std::sync::atomic::Ordering::SeqCst);
    let (st, c) = s
        .post(
            "alice",
            "/api/v1/credentials",
            json!({ "request_id": narrow }),
        )
        .await;
    assert_eq!(st, 200, "a throttled call is retried: {c}");
    assert_eq!(rec.calls("AssumeRole").len(), before + 2);
    rec.throttle.store(5, std::sync::atomic::Ordering::SeqCst);
    let (st, c) = s
        .post(
            "alice",
            "/api/v1/credentials",
            json!({ "request_id": narrow }),
        )
        .await;
    assert!(
        st >= 500
            && c["message"]
                .as_str()
                .is_some_and(|m| m.contains("throttling") && m.contains("Rate exceeded")),
        "{st} {c}"
    );
    rec.throttle.store(0, std::sync::atomic::Ordering::SeqCst);

    // A role that does not exist: AWS's NoSuchEntity, said plainly.
    fails_with(
        &s,
        "alice",
        "aws/prod-missing",
        "10m",
        "x",
        &["does not exist", "role/prod-missing"],
    )
    .await;

    // A role ARN the allow-list admits but whose name IAM resolves to another role (here
    // role/prod-admin): the grant fails before anything is minted.
    let assumed = rec.calls("AssumeRole").len();
    fails_with(
        &s,
        "alice",
        "aws/prod-pathed",
        "10m",
        "x",
        &["does not name an entity", "role/prod-admin"],
    )
    .await;
    assert_eq!(rec.calls("AssumeRole").len(), assumed, "nothing minted");

    // An ARN whose path differs from the user's real one is refused, not applied to the
    // same-named user: alice's ARN is user/alice, not user/contractors/alice.
    fails_with(
        &s,
        "alice",
        "aws/contractor",
        "10m",
        "x",
        &["does not name an entity"],
    )
    .await;
    assert!(!in_group(&iam, "alice").await, "nothing was granted");
    assert!(rec.calls("AddUserToGroup").is_empty());

    // Early ends, then the natural ends. aws-sts asked for the end-of-grant clean-up: its deny
    // policy goes. aws-iam did not: its early revoke removed the membership, and a second
    // revoke would take away the newer grant's.
    let a = s.request_id("alice", "aws/prod-admin", "6s", "brief").await;
    let b = s.request_id("alice", "aws/group", "6s", "brief").await;
    let a_end = s.wait_state(&a, "active", T).await["grant"]["expires_at"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .expect("a's end")
        .as_millisecond();
    s.wait_state(&b, "active", T).await;
    for r in [&a, &b] {
        let (st, v) = s
            .post("alice", &format!("/api/v1/requests/{r}/end"), json!({}))
            .await;
        assert_eq!(st, 200, "{v}");
        s.wait_for(r, "revocation", T, |v| v["revocation"]["status"] == "done")
            .await;
    }
    let deny = |iam: aws_sdk_iam::Client, id: String| async move {
        iam.get_role_policy()
            .role_name("prod-admin")
            .policy_name(format!("sallyport-revoked-{id}"))
            .send()
            .await
            .is_ok()
    };
    assert!(deny(iam.clone(), a.clone()).await, "the early end's deny");
    assert!(!in_group(&iam, "alice").await);
    let c = s.request_id("alice", "aws/group", "30m", "on call").await;
    s.wait_state(&c, "active", T).await;
    assert!(in_group(&iam, "alice").await);
    // The clean-up waits `cleanup_delay` (3 s here) past the natural end, for AWS's clock.
    let past_end = a_end + 500 - jiff::Timestamp::now().as_millisecond();
    if past_end > 0 {
        tokio::time::sleep(Duration::from_millis(past_end.unsigned_abs())).await;
    }
    assert!(
        deny(iam.clone(), a.clone()).await,
        "still there just after the end"
    );
    crate::harness::eventually("the deny policy's clean-up", T, || async {
        has_event(&s, &a, "grant.cleaned_up").await
    })
    .await;
    assert!(
        !deny(iam.clone(), a.clone()).await,
        "deleted at the natural end"
    );
    // b's end-of-grant job has run (its row is gone) without calling the connector again.
    let pool = sqlx::SqlitePool::connect(&db.url).await.expect("db");
    crate::harness::eventually("b's end-of-grant job", T, || {
        let (pool, b) = (pool.clone(), b.clone());
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE request_id = ?")
                .bind(&b)
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await;
    pool.close().await;
    assert!(!has_event(&s, &b, "grant.cleaned_up").await);
    assert!(
        in_group(&iam, "alice").await,
        "the newer grant keeps its membership"
    );
    assert_eq!(
        rec.calls("RemoveUserFromGroup").len(),
        1,
        "one removal: the early end's"
    );
    s.stop().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_requests_once_and_waits_for_approval() {
    let Some(moto) = moto().await else { return };
    let iam = iam(&moto).await;
    seed(&iam).await;
    let db = Db::new(Backend::Sqlite).await.expect("db");
    let (text, base) = config(&db.url, &moto);
    let text = text.replace(
        "[[users]]\nid = \"root\"\n",
        "[[users]]\nid = \"root\"\ngroups = [\"leads\"]\n",
    ) + &entitlement(
        "aws/prod-reviewed",
        "4h",
        "aws-sts",
        &format!("role_arn = \"arn:aws:iam::{ACCOUNT}:role/prod-admin\""),
        r#"stages = [{ name = "lead", groups = ["leads"], count = 1 }]"#,
    );
    let s = Server::start_in(&text, &base).await;
    let home = tempfile::tempdir().expect("home").keep();
    let cli = Cli {
        server: s.url(),
        token: s.token("alice").await,
        home,
        moto: moto.url.clone(),
    };

    // Without --request: a clear message says how to ask.
    let (code, _, err) = cli.sallyport(&["creds", "aws/prod-reviewed"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sallyport request aws/prod-reviewed"), "{err}");
    // --request without --wait files it and says so (exit 4: not active yet).
    let (code, _, err) = cli.sallyport(&[
        "creds",
        "aws/prod-reviewed",
        "--request",
        "--reason",
        "INC-1",
    ]);
    assert_eq!(code, 4, "not active yet: {err}");
    assert!(err.contains("requested aws/prod-reviewed: "), "{err}");
    let listed = |v: &Value| v["requests"].as_array().cloned().unwrap_or_default();
    let (_, v) = s
        .get("alice", "/api/v1/requests?entitlement=aws%2Fprod-reviewed")
        .await;
    let open = listed(&v);
    assert_eq!(open.len(), 1, "{v}");
    let id = open[0]["id"].as_str().expect("id").to_owned();
    // Asking again waits for the same request instead of filing another.
    let child = cli
        .cmd(BIN)
        .args([
            "creds",
            "aws/prod-reviewed",
            "--request",
            "--reason",
            "INC-1",
            "--wait",
            "--timeout",
            "60s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("creds --wait");
    crate::harness::eventually("the CLI to start waiting", T, || async {
        // It polls the request as it waits.
        s.state(&id).await["state"] == "pending"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, v) = s
        .post(
            "root",
            &format!("/api/v1/requests/{id}/reviews"),
            json!({ "verdict": "approve", "comment": "ok" }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "you already asked for aws/prod-reviewed: {id} is pending"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("pending: waiting for"),
        "progress: {stderr}"
    );
    let doc: Value = serde_json::from_str(&stdout).expect("credential_process JSON");
    assert_eq!(doc["Version"], 1);
    let (_, v) = s
        .get("alice", "/api/v1/requests?entitlement=aws%2Fprod-reviewed")
        .await;
    assert_eq!(listed(&v).len(), 1, "still one request: {v}");

    // Due for a refresh while the server is down: credentials that work a while longer are
    // served with a warning; ones about to expire are not.
    let file = std::fs::read_dir(cli.home.join("cache/creds"))
        .expect("cache")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    let rewrite = |left_ms: i64| {
        let mut c: Value =
            serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
        let now = jiff::Timestamp::now().as_millisecond();
        c["Expiration"] = json!(
            jiff::Timestamp::from_millisecond(now + left_ms)
                .expect("ts")
                .to_string()
        );
        c["SallyportFetchedAt"] = json!(now - 3_600_000);
        std::fs::write(&file, c.to_string()).expect("write");
    };
    s.stop().await;
    rewrite(180_000);
    let (code, out, err) = cli.sallyport(&["creds", "aws/prod-reviewed"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("using the cached ones"), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["AccessKeyId"],
        doc["AccessKeyId"]
    );
    rewrite(20_000);
    let (code, _, err) = cli.sallyport(&["creds", "aws/prod-reviewed"]);
    assert_eq!(code, 1, "{err}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_knows_what_aws_connectors_can_reach() {
    let Some(moto) = moto().await else { return };
    let dir = tempfile::tempdir().expect("dir");
    let (text, _) = config("sqlite://unused.db", &moto);
    let outside = entitlement(
        "aws/elsewhere",
        "1h",
        "aws-sts",
        &format!("role_arn = \"arn:aws:iam::{ACCOUNT}:role/outside\""),
        AUTO,
    );
    let f = dir.path().join("sallyport.toml");
    // The tests' own configuration passes (its templated ARN is checked at grant time).
    std::fs::write(dir.path().join("aws-key"), "k").expect("key");
    std::fs::write(dir.path().join("aws-secret"), "s").expect("secret");
    std::fs::write(&f, &text).expect("write");
    let (code, out) = crate::harness::config_check(&f);
    assert_eq!(code, 0, "{out}");
    // A role the capability does not reach fails every grant: config check says so.
    std::fs::write(&f, format!("{text}{outside}")).expect("write");
    let (code, out) = crate::harness::config_check(&f);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("aws/elsewhere")
            && out.contains("role_arn")
            && out.contains("not among the ARNs `aws-sts` may touch"),
        "{out}"
    );
    // So does an AWS connector without an [aws] section.
    let start = text.find("[aws]").expect("[aws]");
    let end = text[start..].find("[secrets.aws_key]").expect("secrets") + start;
    std::fs::write(&f, format!("{}{}", &text[..start], &text[end..])).expect("write");
    let (code, out) = crate::harness::config_check(&f);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("there is no [aws] section"), "{out}");
}

/// `sallyport serve` with `[aws]` naming no secrets: its own credentials come from the standard
/// chain (here the environment), and without any it says so instead of retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_credential_chain_and_its_absence() {
    let Some(moto) = moto().await else { return };
    let iam = iam(&moto).await;
    seed(&iam).await;
    let dir = tempfile::tempdir().expect("dir");
    let run = |creds: Option<&str>| {
        let port = free_port();
        let db = dir.path().join(format!("chain-{port}.db"));
        let (text, base) = config(&format!("sqlite://{}", db.display()), &moto);
        let text = text
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            )
            .replace("access_key_id_secret = \"aws_key\"\n", "")
            .replace("secret_access_key_secret = \"aws_secret\"\n", "");
        assert!(!text.contains("_secret = \"aws_"), "{text}");
        let file = base.join(format!("chain-{port}.toml"));
        std::fs::write(&file, &text).expect("write");
        let out = Command::new(BIN)
            .args(["token", "create", "--user", "alice", "--config"])
            .arg(&file)
            .output()
            .expect("token");
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(&file)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", base.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                base.join("no-aws-credentials"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(k) = creds {
            cmd.env("AWS_ACCESS_KEY_ID", k)
                .env("AWS_SECRET_ACCESS_KEY", k);
        }
        let child = cmd.spawn().expect("serve");
        (Reaped(child), format!("http://127.0.0.1:{port}"), token)
    };
    let http = reqwest::Client::new();
    let ask = |url: String, token: String| {
        let http = http.clone();
        async move {
            let start = Instant::now();
            let r: Value = loop {
                if let Ok(r) = http
                    .post(format!("{url}/api/v1/requests"))
                    .bearer_auth(&token)
                    .json(&json!({ "entitlement": "aws/prod-admin", "duration": "30m", "justification": "chain" }))
                    .send()
                    .await
                {
                    break r.json().await.expect("json");
                }
                assert!(start.elapsed() < T, "server did not start");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let id = r["id"].as_str().expect("id").to_owned();
            loop {
                let v: Value = http
                    .get(format!("{url}/api/v1/requests/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("get")
                    .json()
                    .await
                    .expect("json");
                if v["state"] != "pending"
                    && v["state"] != "approved"
                    && v["state"] != "provisioning"
                {
                    return v;
                }
                assert!(start.elapsed() < T, "still {}", v["state"]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Credentials in the environment: the grant checks the role and a mint works.
    let (_server, url, token) = run(Some("from-the-environment"));
    let v = ask(url.clone(), token.clone()).await;
    assert_eq!(v["state"], "active", "{v}");
    let res = http
        .post(format!("{url}/api/v1/credentials"))
        .bearer_auth(&token)
        .json(&json!({ "entitlement": "aws/prod-admin" }))
        .send()
        .await
        .expect("mint");
    assert_eq!(res.status(), 200);

    // None anywhere: the grant fails, and the reason says where Sallyport looks.
    let (_server, url, token) = run(None);
    let v = ask(url, token).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["reason"].as_str().is_some_and(
            |r| r.contains("no usable AWS credentials") && r.contains("standard chain")
        ),
        "{v}"
    );
}
