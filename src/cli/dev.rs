//! `sallyport dev`: a zero-config server on embedded SQLite with demo users, the built-in
//! plugins, and sample entitlements that work with no cloud (the `http` connector against a
//! demo target the dev server hosts itself).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::client::write_private;
use crate::app::{App, Options};
use crate::config::{Config, ParseOptions};
use crate::secret::Secret;

/// The dev policy, written to the data directory at every start so people can read (and copy) it.
pub fn dev_config(listen: SocketAddr, public_url: &str) -> String {
    format!(
        r#"# Sallyport dev mode policy. Regenerated at every `sallyport dev` start: copy it to make
# your own, then run `sallyport serve --config FILE` (add `--dev` to keep the dev login).

[server]
listen = "{listen}"
public_url = "{public_url}"

[database]
url = "sqlite://sallyport.db"

[auth]
admin_groups = ["platform-admins"]
auditor_groups = ["auditors"]

[jobs]
lease = "10s"

# The demo target's API token, read from a file (0600) beside this one.
[secrets.demo_target_token]
file = "demo-target-token"

# The built-in `http` connector may call only the dev server, with only this secret.
[plugins.capabilities.http.http]
allow = ["{origin}"]
secrets = ["demo_target_token"]

[[users]]
id = "alice"
name = "Alice (engineer)"
email = "alice@example.com"
groups = ["eng"]

[[users]]
id = "bob"
name = "Bob (team lead)"
email = "bob@example.com"
groups = ["eng", "leads"]

[[users]]
id = "carol"
name = "Carol (security)"
email = "carol@example.com"
groups = ["security"]

[[users]]
id = "dave"
name = "Dave (platform admin)"
email = "dave@example.com"
groups = ["platform-admins", "auditors"]

[[entitlements]]
id = "demo/app-admin"
description = "Admin on the demo app: a team lead and security must approve"
max_duration = "4h"
default_duration = "1h"
requester_groups = ["eng"]
justification_pattern = '\S.{{9,}}'
pending_ttl = "1h"

[entitlements.connector]
plugin = "http"
[entitlements.connector.settings.grant]
method = "PUT"
url = "{public_url}demo/target/grants/{{{{request.id}}}}"
headers = {{ x-api-key = {{ secret = "demo_target_token" }} }}
body = {{ user = "{{{{requester.id}}}}", role = "app-admin", until = "{{{{expires_at}}}}" }}
[entitlements.connector.settings.revoke]
method = "DELETE"
url = "{public_url}demo/target/grants/{{{{request.id}}}}"
headers = {{ x-api-key = {{ secret = "demo_target_token" }} }}

[entitlements.approval]
plugin = "quorum"
[entitlements.approval.settings]
stages = [
  {{ name = "team lead", groups = ["leads"], count = 1 }},
  {{ name = "security", groups = ["security"], count = 1 }},
]

[[entitlements]]
id = "demo/read-only"
description = "Read-only on the demo app: engineers get up to 1h at once; longer needs a lead"
max_duration = "8h"
default_duration = "1h"
requester_groups = ["eng"]

[entitlements.connector]
plugin = "http"
[entitlements.connector.settings.grant]
method = "PUT"
url = "{public_url}demo/target/grants/{{{{request.id}}}}"
headers = {{ x-api-key = {{ secret = "demo_target_token" }} }}
body = {{ user = "{{{{requester.id}}}}", role = "read-only", until = "{{{{expires_at}}}}" }}
[entitlements.connector.settings.revoke]
method = "DELETE"
url = "{public_url}demo/target/grants/{{{{request.id}}}}"
headers = {{ x-api-key = {{ secret = "demo_target_token" }} }}

[entitlements.approval]
plugin = "quorum"
[entitlements.approval.settings]
stages = [{{ name = "team lead", groups = ["leads"], count = 1 }}]
auto_approve = [{{ name = "engineers, up to 1h", requester_groups = ["eng"], max_duration = "1h" }}]

[[entitlements]]
id = "demo/break-glass"
description = "Emergency admin: security approves, or the requester self-approves with a long justification (flagged loudly)"
max_duration = "1h"
default_duration = "30m"
requester_groups = ["eng"]
break_glass = true
ticket_required = true

[entitlements.connector]
plugin = "http"
[entitlements.connector.settings.grant]
method = "PUT"
url = "{public_url}demo/target/grants/{{{{request.id}}}}"
headers = {{ x-api-key = {{ secret = "demo_target_token" }} }}
body = {{ user = "{{{{requester.id}}}}", role = "emergency-admin", until = "{{{{expires_at}}}}" }}
[entitlements.connector.settings.revoke]
method = "DELETE"
url = "{public_url}demo/target/grants/{{{{request.id}}}}"
headers = {{ x-api-key = {{ secret = "demo_target_token" }} }}

[entitlements.approval]
plugin = "quorum"
[entitlements.approval.settings]
stages = [{{ name = "security", groups = ["security"], count = 1 }}]
break_glass = {{ enabled = true, min_justification_chars = 30 }}

# Approval of one action rather than a role: a pipeline (or an engineer) asks to deploy one
# version of one service; a team lead approves; the approval is a signed attestation, good for
# 15 minutes and one use (`sallyport action request deploy/demo ... --wait`).
[attestation]
signing_keys = ["attestation-key.pem"]

[[actions]]
name = "deploy/demo"
description = "Deploy one version of one demo service: a team lead approves"
validity = "15m"
pending_ttl = "1h"
requester_groups = ["eng"]

[actions.parameters.service]
type = "string"
required = true
pattern = "[a-z][a-z0-9-]{{0,40}}"
description = "the service to deploy"

[actions.parameters.version]
type = "string"
required = true
pattern = 'v[0-9]+\.[0-9]+\.[0-9]+'
description = "the release tag"

[actions.approval]
plugin = "quorum"
[actions.approval.settings]
stages = [{{ name = "team lead", groups = ["leads"], count = 1 }}]
"#,
        origin = public_url.trim_end_matches('/'),
    )
}

/// The demo target's token: created once (0600) in the data directory.
fn demo_token(dir: &Path) -> Result<Secret, String> {
    let path = dir.join("demo-target-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if !t.is_empty() {
            return Ok(Secret::new(t));
        }
    }
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    let t = hex::encode(b);
    write_private(&path, t.as_bytes())?;
    Ok(Secret::new(t))
}

/// Run the dev server until interrupted.
pub async fn run(data_dir: PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)?;
    let data_dir = data_dir.canonicalize()?;
    // Bind first to learn the port (listen may be :0), then hand the address to the server.
    let probe = std::net::TcpListener::bind(listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {listen}: {e}; choose another address with `sallyport dev --listen 127.0.0.1:8181`"
        )
    })?;
    let addr = probe.local_addr()?;
    drop(probe);
    let public_url = format!("http://{addr}/");
    let token = demo_token(&data_dir).map_err(|e| anyhow::anyhow!(e))?;
    let key = data_dir.join("attestation-key.pem");
    if !key.exists() {
        crate::attest::write_new_key(&key).map_err(|e| anyhow::anyhow!(e))?;
    }
    let config_path = data_dir.join("sallyport.toml");
    std::fs::write(&config_path, dev_config(addr, &public_url))?;
    let config = Config::load(&config_path, ParseOptions::default())
        .map_err(|p| anyhow::anyhow!("the generated dev policy is invalid (a bug):\n{p}"))?;
    let app = App::start(
        config,
        Options {
            dev: true,
            demo_token: Some(token),
            config_path: Some(config_path.clone()),
            ..Options::default()
        },
    )
    .await?;
    let url = app.url();
    println!(
        r#"Sallyport dev server: {url}
  data:   {data} (SQLite database, policy, demo token)
  policy: {policy}
  users:  alice (eng) · bob (eng, leads) · carol (security) · dave (platform admin, auditor)

Open {url}/ in a browser and sign in as any demo user (no password in dev mode).
There is no mail server in dev mode: the mail Sallyport would send (approval requests with
Approve / Deny links, "your access is active"...) lands in {url}/outbox, and its links work.
Or try it in another terminal (the binary is target/release/sallyport after `cargo build --release`):
  export SALLYPORT_SERVER={url}
  sallyport login --dev-user alice
  sallyport entitlements
  sallyport request demo/read-only --duration 30m --reason "check the dashboards" --wait
  sallyport request demo/app-admin --duration 1h --reason "OPS-42 rotate the app secret" --wait
Then approve it as bob and carol (each their own login profile):
  sallyport --profile bob login --dev-user bob     && sallyport --profile bob requests --scope review
  sallyport --profile bob approve REQUEST_ID
  sallyport --profile carol login --dev-user carol && sallyport --profile carol approve REQUEST_ID
Approve one deployment rather than a role (bob approves; the attestation is printed):
  sallyport action request deploy/demo --param service=api --param version=v1.4.2 \
    --reason "release 1.4.2" --wait --timeout 10m
Watch the demo target, then end early and check the audit chain:
  curl -s -H "x-api-key: $(cat {data}/demo-target-token)" {url}/demo/target/grants
  sallyport done REQUEST_ID
  sallyport audit verify --config {policy}
Press Ctrl-C to stop."#,
        data = data_dir.display(),
        policy = config_path.display(),
    );
    app.run_until_signalled().await
}
