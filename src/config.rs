//! The policy file: one TOML document holding the server, database, plugins, users, roles and
//! entitlements. Unknown keys are errors; every problem names the entry it is about.
//!
//! [`Config::parse`] checks everything that needs no plugin; [`crate::policy::Policy::build`]
//! loads the plugins and runs each entitlement's settings through their `validate`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::{EntitlementRules, parse_duration};
use crate::plugin::Capabilities;
use crate::plugin::manifest::RawCapabilities;
use crate::secret::{Secret, SecretStore};

/// One problem with the configuration, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// A path into the document, e.g. `entitlements[1] (aws/prod).max_duration`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    plugins: RawPlugins,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    jobs: RawJobs,
    aws: Option<RawAws>,
    azure: Option<RawAzure>,
    oidc: Option<RawOidc>,
    smtp: Option<RawSmtp>,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    entitlements: Vec<RawEntitlement>,
    #[serde(default)]
    actions: Vec<RawAction>,
    #[serde(default)]
    attestation: RawAttestation,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: String,
    #[serde(default)]
    description: String,
    validity: Option<String>,
    pending_ttl: Option<String>,
    #[serde(default)]
    requester_groups: Vec<String>,
    #[serde(default)]
    requester_users: Vec<String>,
    #[serde(default)]
    pipelines: Vec<RawPipeline>,
    #[serde(default)]
    parameters: BTreeMap<String, RawParam>,
    #[serde(default)]
    link_only_approval: bool,
    #[serde(default)]
    watchers: Vec<String>,
    approval: RawPluginUse,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    issuer: String,
    audience: String,
    subject: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    required: bool,
    pattern: Option<String>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawAttestation {
    #[serde(default)]
    signing_keys: Vec<PathBuf>,
    #[serde(default)]
    withdrawn_keys: Vec<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    request_timeout: Option<String>,
    max_body_bytes: Option<usize>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    url_env: Option<String>,
    max_connections: Option<u32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    dir: Option<PathBuf>,
    slots: Option<u32>,
    #[serde(default)]
    capabilities: BTreeMap<String, RawCapabilities>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    admin_users: Vec<String>,
    #[serde(default)]
    admin_groups: Vec<String>,
    #[serde(default)]
    auditor_users: Vec<String>,
    #[serde(default)]
    auditor_groups: Vec<String>,
    token_ttl: Option<String>,
    session_ttl: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: String,
    client_id: String,
    client_secret_secret: Option<String>,
    scopes: Option<Vec<String>>,
    id_claim: Option<String>,
    groups_claim: Option<String>,
    display_name: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    lease: Option<String>,
    concurrency: Option<u32>,
    provision_attempts: Option<u32>,
    retry_max: Option<String>,
    cleanup_delay: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<String>,
    endpoint_url: Option<String>,
    access_key_id_secret: Option<String>,
    secret_access_key_secret: Option<String>,
    session_token_secret: Option<String>,
    max_attempts: Option<u32>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawAzure {
    credential: Option<String>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret_secret: Option<String>,
    federated_token_file: Option<PathBuf>,
    authority_host: Option<String>,
    arm_endpoint: Option<String>,
    arm_audience: Option<String>,
    graph_endpoint: Option<String>,
    graph_audience: Option<String>,
    ca_file: Option<PathBuf>,
    max_attempts: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    security: Option<String>,
    username: Option<String>,
    password_secret: Option<String>,
    from: String,
    timeout: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    expiring_lead: Option<String>,
    #[serde(default)]
    watchers: Vec<String>,
    max_attempts: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    url: Option<String>,
    url_secret: Option<String>,
    format: Option<String>,
    signing_secret: Option<String>,
    events: Option<Vec<String>>,
    entitlements: Option<Vec<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: Option<String>,
    file: Option<PathBuf>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawUser {
    id: String,
    email: Option<String>,
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawEntitlement {
    id: String,
    #[serde(default)]
    description: String,
    max_duration: String,
    default_duration: Option<String>,
    #[serde(default)]
    requester_groups: Vec<String>,
    #[serde(default)]
    requester_users: Vec<String>,
    justification_pattern: Option<String>,
    #[serde(default)]
    ticket_required: bool,
    pending_ttl: Option<String>,
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    link_only_approval: bool,
    #[serde(default)]
    watchers: Vec<String>,
    connector: RawPluginUse,
    approval: RawPluginUse,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPluginUse {
    plugin: String,
    #[serde(default = "empty_table")]
    settings: toml::Value,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(toml::map::Map::new())
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL people and links use to reach this server.
    pub public_url: url::Url,
    /// Longest an HTTP request may take.
    pub request_timeout: std::time::Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
}

/// Database settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://...` (a secret: it may hold a password).
    pub url: Secret,
    /// Pool size.
    pub max_connections: u32,
}

/// Sallyport's own AWS access (`[aws]`): what backs the plugins' `aws` capability.
#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    /// Region; default from the standard chain.
    pub region: Option<String>,
    /// Endpoint override (an emulator, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Secret holding the access key id; without it, the standard credential chain is used.
    pub access_key_id_secret: Option<String>,
    /// Secret holding the secret access key.
    pub secret_access_key_secret: Option<String>,
    /// Secret holding a session token.
    pub session_token_secret: Option<String>,
    /// Attempts per call (throttling and transient errors are retried with backoff).
    pub max_attempts: u32,
}

/// How Sallyport signs in to Microsoft Entra ID (`[azure] credential`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureCredential {
    /// An app registration's client secret (`client_secret_secret`).
    ClientSecret,
    /// Workload identity federation: a federated token file (Kubernetes, CI).
    WorkloadIdentity,
    /// The managed identity of the VM or App Service Sallyport runs on.
    ManagedIdentity,
    /// The signed-in Azure CLI (`az login`), for development.
    AzureCli,
}

impl AzureCredential {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AzureCredential::ClientSecret => "client_secret",
            AzureCredential::WorkloadIdentity => "workload_identity",
            AzureCredential::ManagedIdentity => "managed_identity",
            AzureCredential::AzureCli => "azure_cli",
        }
    }
}

/// Sallyport's own Azure access (`[azure]`): what backs the plugins' `azure` capability.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// How to get tokens.
    pub credential: AzureCredential,
    /// The Entra tenant (directory) id or domain; from `AZURE_TENANT_ID` when absent (workload
    /// identity).
    pub tenant_id: Option<String>,
    /// The app registration's client id (a user-assigned managed identity's client id).
    pub client_id: Option<String>,
    /// Secret holding the client secret.
    pub client_secret_secret: Option<String>,
    /// The federated token file (workload identity); from `AZURE_FEDERATED_TOKEN_FILE` when absent.
    pub federated_token_file: Option<PathBuf>,
    /// The Entra authority, `https://login.microsoftonline.com` by default (sovereign clouds
    /// differ).
    pub authority_host: String,
    /// Azure Resource Manager's endpoint.
    pub arm_endpoint: String,
    /// The audience of ARM tokens (the scope asked is `<audience>/.default`).
    pub arm_audience: String,
    /// Microsoft Graph's endpoint (user principal names are resolved there).
    pub graph_endpoint: String,
    /// The audience of Graph tokens.
    pub graph_audience: String,
    /// Extra trusted root certificates (PEM) for Azure calls: a private CA or a TLS-inspecting
    /// proxy.
    pub ca_file: Option<PathBuf>,
    /// Attempts per call (throttling and server errors are retried, honouring `Retry-After`).
    pub max_attempts: u32,
}

/// Job queue settings.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// How long a claimed job is held before another worker may take it (renewed while it runs).
    pub lease_ms: i64,
    /// Jobs run at once per replica.
    pub concurrency: u32,
    /// Attempts at provisioning before the request fails.
    pub provision_attempts: u32,
    /// Longest wait between retries.
    pub retry_max_ms: i64,
    /// How long after a grant's natural end the end-of-grant clean-up runs (room for the
    /// cloud's clock to agree that the grant has ended).
    pub cleanup_delay_ms: i64,
}

/// Roles beyond requesting and reviewing.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Users who are admins.
    pub admin_users: Vec<String>,
    /// Groups whose members are admins.
    pub admin_groups: Vec<String>,
    /// Users who may read the whole audit log.
    pub auditor_users: Vec<String>,
    /// Groups whose members may read the whole audit log.
    pub auditor_groups: Vec<String>,
    /// Lifetime of API tokens issued at login.
    pub token_ttl_secs: u64,
    /// Lifetime of a browser session.
    pub session_ttl_secs: u64,
}

/// Sign-in with an OpenID Connect provider (`[oidc]`).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL (discovery at `/.well-known/openid-configuration`).
    pub issuer: String,
    /// This client's id at the provider.
    pub client_id: String,
    /// The secret (under `[secrets]`) holding the client secret; none for a public client.
    pub client_secret_secret: Option<String>,
    /// Scopes asked for (always including `openid`).
    pub scopes: Vec<String>,
    /// The claim that becomes the user id (`email` by default; `sub`, `preferred_username`).
    pub id_claim: String,
    /// The claim holding the user's groups (a list of strings, or one string).
    pub groups_claim: String,
    /// The provider's name on the sign-in button.
    pub display_name: String,
}

/// How Sallyport talks to its mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (refused if the server cannot).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only to a server on loopback.
    Plain,
}

/// `[smtp]`: the mail server.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Host name (checked against the TLS certificate).
    pub host: String,
    /// Port (587 for STARTTLS, 465 for TLS, 25 for plain unless set).
    pub port: u16,
    /// Encryption.
    pub security: SmtpSecurity,
    /// User name for AUTH, if any.
    pub username: Option<String>,
    /// The secret (under `[secrets]`) holding the password.
    pub password_secret: Option<String>,
    /// `From:` address, e.g. `Sallyport <sallyport@example.com>`.
    pub from: String,
    /// Connection and command timeout.
    pub timeout: std::time::Duration,
}

/// `[notify]`: what people are told, when.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// How long before a grant ends its holder is warned.
    pub expiring_lead_secs: u64,
    /// Told about every request's outcome (addresses or user ids).
    pub watchers: Vec<String>,
    /// Attempts at one delivery before it is given up (default 2000: about a week).
    pub max_attempts: u32,
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// Sallyport's JSON, signed with HMAC-SHA256 (`X-Sallyport-Signature`).
    Json,
    /// A Slack incoming webhook message.
    Slack,
    /// A Microsoft Teams message with an Adaptive Card.
    Teams,
}

/// `[[webhooks]]`: one receiver of notifications.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Name (in logs and deliveries).
    pub name: String,
    /// The URL, given inline.
    pub url: Option<String>,
    /// The secret holding the URL (Slack and Teams URLs are credentials).
    pub url_secret: Option<String>,
    /// Body format.
    pub format: WebhookFormat,
    /// The secret holding the HMAC key (required for `json`).
    pub signing_secret: Option<String>,
    /// Topics sent (all when empty).
    pub events: Vec<String>,
    /// Entitlement patterns (`aws/prod/*`); all when empty.
    pub entitlements: Vec<String>,
}

impl WebhookConfig {
    /// Does this webhook want `topic` about `entitlement`?
    pub fn wants(&self, topic: &str, entitlement: &str) -> bool {
        (self.events.is_empty() || self.events.iter().any(|e| e == topic))
            && (self.entitlements.is_empty()
                || self.entitlements.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => entitlement.starts_with(prefix),
                    None => p == entitlement,
                }))
    }
}

/// Topics a notification can be about.
pub const TOPICS: &[&str] = &[
    "review_needed",
    "approved",
    "denied",
    "active",
    "expiring",
    "expired",
    "revoked",
    "ended",
    "cancelled",
    "timed_out",
    "failed",
    "break_glass",
];

/// A user of the static directory (and the dev-mode user picker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: String,
    /// E-mail.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
}

/// A plugin and its settings, as an entitlement uses it.
#[derive(Debug, Clone)]
pub struct PluginUse {
    /// Plugin name.
    pub plugin: String,
    /// Settings as JSON text.
    pub settings: String,
}

/// An entitlement as configured.
#[derive(Debug, Clone)]
pub struct EntitlementConfig {
    /// The rules the domain enforces.
    pub rules: EntitlementRules,
    /// For people.
    pub description: String,
    /// The connector.
    pub connector: PluginUse,
    /// The approval policy.
    pub approval: PluginUse,
    /// An e-mailed approval link acts without signing in (possession of the link suffices).
    pub link_only_approval: bool,
    /// Told about this entitlement's outcomes (addresses or user ids).
    pub watchers: Vec<String>,
}

/// Pipelines allowed to ask for an action: tokens from `issuer`, for `audience`, whose subject
/// matches `subject` (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineRule {
    /// The OIDC issuer, exactly as the token's `iss` (e.g.
    /// `https://token.actions.githubusercontent.com`).
    pub issuer: String,
    /// The audience the token must be issued for.
    pub audience: String,
    /// The subject pattern, e.g. `repo:acme/app:ref:refs/heads/main` or `repo:acme/app:*`.
    pub subject: String,
}

impl PipelineRule {
    /// Does the subject match the pattern? `*` matches any run of characters (including `/` and
    /// `:`); everything else matches itself.
    pub fn admits_subject(&self, subject: &str) -> bool {
        glob_match(&self.subject, subject)
    }
}

/// `*`-only glob matching, iterative (no backtracking blow-up).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// An action kind as configured.
#[derive(Debug, Clone)]
pub struct ActionKindConfig {
    /// The rules the domain enforces for people (`id` is the kind's name; the durations are the
    /// approval's validity).
    pub rules: EntitlementRules,
    /// For people.
    pub description: String,
    /// Its parameters.
    pub parameters: crate::domain::ParamSchema,
    /// Pipelines that may ask for it.
    pub pipelines: Vec<PipelineRule>,
    /// The approval policy.
    pub approval: PluginUse,
    /// An e-mailed approval link acts without signing in.
    pub link_only_approval: bool,
    /// Told about this kind's outcomes.
    pub watchers: Vec<String>,
}

/// Keys that sign action attestations.
#[derive(Debug, Clone, Default)]
pub struct AttestationConfig {
    /// PKCS#8 Ed25519 private keys (PEM), the first signs. Keys removed from the list stay
    /// published until the last token they signed has expired.
    pub signing_keys: Vec<PathBuf>,
    /// Key ids never to publish or accept again (a compromised key), whatever they signed.
    pub withdrawn_keys: Vec<String>,
}

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server.
    pub server: ServerConfig,
    /// Database.
    pub database: DatabaseConfig,
    /// User plugins directory.
    pub plugin_dir: Option<PathBuf>,
    /// Sandbox slots.
    pub plugin_slots: u32,
    /// Extra capabilities per plugin name.
    pub plugin_capabilities: BTreeMap<String, Capabilities>,
    /// Roles.
    pub auth: AuthConfig,
    /// Jobs.
    pub jobs: JobsConfig,
    /// AWS, when configured.
    pub aws: Option<AwsConfig>,
    /// Azure, when configured.
    pub azure: Option<AzureConfig>,
    /// OpenID Connect sign-in, when configured.
    pub oidc: Option<OidcConfig>,
    /// The mail server (none: no e-mail, or the outbox page in dev mode).
    pub smtp: Option<SmtpConfig>,
    /// Notification settings.
    pub notify: NotifyConfig,
    /// Webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// Secrets, resolved.
    pub secrets: SecretStore,
    /// Static users.
    pub users: Vec<User>,
    /// Entitlements, in file order.
    pub entitlements: Vec<EntitlementConfig>,
    /// Action kinds, in file order.
    pub actions: Vec<ActionKindConfig>,
    /// Attestation signing.
    pub attestation: AttestationConfig,
}

/// Options for [`Config::parse`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    /// Do not read secrets (for `config check` where they are not available).
    pub skip_secrets: bool,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.split('/').all(|seg| {
            !seg.is_empty()
                && seg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && seg.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                })
        })
}

/// `localhost` or a loopback address.
fn is_loopback_host(h: &str) -> bool {
    h == "localhost"
        || h.trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':' | '+'))
}

/// TOML to JSON, for plugin settings.
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

impl Config {
    /// Read and check a file. Relative paths in it are relative to the file's directory.
    pub fn load(path: &Path, opts: ParseOptions) -> Result<Config, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base, opts)
    }

    /// Parse and check a document.
    pub fn parse(text: &str, base: &Path, opts: ParseOptions) -> Result<Config, Problems> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_default();
            Problems(vec![Problem {
                path: at,
                message: msg,
            }])
        })?;
        let mut p = Vec::new();
        let mut problem = |path: String, message: String| p.push(Problem { path, message });

        // [server]
        let listen_text = raw.server.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen: SocketAddr = listen_text.parse().unwrap_or_else(|e| {
            problem(
                "server.listen".into(),
                format!("`{listen_text}`: {e}; expected IP:PORT, e.g. 0.0.0.0:8080"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let public_text = raw
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        let public_url = match url::Url::parse(&public_text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(_) | Err(_) => {
                problem(
                    "server.public_url".into(),
                    format!("`{public_text}` is not an http(s) URL"),
                );
                url::Url::parse("http://127.0.0.1:8080/").expect("valid literal")
            }
        };
        let mut dur = |path: &str, v: Option<&str>, default: &str| -> u64 {
            let text = v.unwrap_or(default);
            parse_duration(text).unwrap_or_else(|e| {
                problem(path.to_owned(), e);
                1
            })
        };
        let request_timeout = dur(
            "server.request_timeout",
            raw.server.request_timeout.as_deref(),
            "30s",
        );
        let token_ttl = dur("auth.token_ttl", raw.auth.token_ttl.as_deref(), "12h");
        let session_ttl = dur("auth.session_ttl", raw.auth.session_ttl.as_deref(), "12h");
        let lease = dur("jobs.lease", raw.jobs.lease.as_deref(), "30s");
        let retry_max = dur("jobs.retry_max", raw.jobs.retry_max.as_deref(), "5m");
        let cleanup_delay = dur(
            "jobs.cleanup_delay",
            raw.jobs.cleanup_delay.as_deref(),
            "2m",
        );
        let max_body_bytes = raw.server.max_body_bytes.unwrap_or(64 * 1024);
        if !(1024..=16 << 20).contains(&max_body_bytes) {
            problem(
                "server.max_body_bytes".into(),
                "must be between 1024 and 16777216".into(),
            );
        }

        // [database]
        let url = match (&raw.database.url, &raw.database.url_env) {
            (Some(_), Some(_)) => {
                problem("database".into(), "set `url` or `url_env`, not both".into());
                None
            }
            (Some(u), None) => Some(u.clone()),
            (None, Some(var)) if opts.skip_secrets => Some(format!("postgres://from-env/{var}")),
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Some(v),
                _ => {
                    problem(
                        "database.url_env".into(),
                        format!("environment variable `{var}` is not set"),
                    );
                    None
                }
            },
            (None, None) => Some("sqlite://sallyport.db".into()),
        };
        let url = url.map(|u| {
            // A relative SQLite path is relative to the config file.
            if let Some(rest) = u.strip_prefix("sqlite://")
                && !rest.starts_with('/')
            {
                format!("sqlite://{}", base.join(rest).display())
            } else {
                u
            }
        });
        if let Some(u) = &url
            && !(u.starts_with("sqlite:")
                || u.starts_with("postgres:")
                || u.starts_with("postgresql:"))
        {
            problem(
                "database.url".into(),
                "must start with sqlite:// or postgres://".into(),
            );
        }

        // [secrets]
        let mut secrets = SecretStore::new();
        for (name, s) in &raw.secrets {
            let path = format!("secrets.{name}");
            if !valid_name(name) {
                problem(
                    path.clone(),
                    "secret names use letters, digits, `-`, `_` and `.`".into(),
                );
            }
            let value = match (&s.env, &s.file) {
                (Some(_), Some(_)) | (None, None) => {
                    problem(path, "give exactly one of `env` or `file`".into());
                    continue;
                }
                _ if opts.skip_secrets => Secret::new("<not read>"),
                (Some(var), None) => match std::env::var(var) {
                    Ok(v) => Secret::new(v),
                    Err(_) => {
                        problem(path, format!("environment variable `{var}` is not set"));
                        continue;
                    }
                },
                (None, Some(file)) => {
                    let file = base.join(file);
                    match std::fs::read_to_string(&file) {
                        Ok(v) => Secret::new(v.trim_end_matches(['\r', '\n']).to_owned()),
                        Err(e) => {
                            problem(path, format!("cannot read {}: {e}", file.display()));
                            continue;
                        }
                    }
                }
            };
            secrets.insert(name.clone(), value);
        }

        // [aws]
        let aws = raw.aws.map(|a| {
            for (field, name) in [
                ("access_key_id_secret", &a.access_key_id_secret),
                ("secret_access_key_secret", &a.secret_access_key_secret),
                ("session_token_secret", &a.session_token_secret),
            ] {
                if let Some(n) = name
                    && !raw.secrets.contains_key(n)
                {
                    problem(
                        format!("aws.{field}"),
                        format!("secret `{n}` is not defined under [secrets]"),
                    );
                }
            }
            if a.access_key_id_secret.is_some() != a.secret_access_key_secret.is_some() {
                problem(
                    "aws".into(),
                    "give both access_key_id_secret and secret_access_key_secret, or neither (to use the standard credential chain)".into(),
                );
            }
            if let Some(u) = &a.endpoint_url
                && !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            {
                problem("aws.endpoint_url".into(), format!("`{u}` is not an http(s) URL"));
            }
            let max_attempts = a.max_attempts.unwrap_or(5);
            if !(1..=20).contains(&max_attempts) {
                problem("aws.max_attempts".into(), "must be between 1 and 20".into());
            }
            AwsConfig {
                region: a.region,
                endpoint_url: a.endpoint_url,
                access_key_id_secret: a.access_key_id_secret,
                secret_access_key_secret: a.secret_access_key_secret,
                session_token_secret: a.session_token_secret,
                max_attempts,
            }
        });

        // [azure]
        let azure = raw.azure.map(|a| {
            let credential = match a.credential.as_deref() {
                Some("client_secret") => AzureCredential::ClientSecret,
                Some("workload_identity") => AzureCredential::WorkloadIdentity,
                Some("managed_identity") => AzureCredential::ManagedIdentity,
                Some("azure_cli") => AzureCredential::AzureCli,
                other => {
                    problem(
                        "azure.credential".into(),
                        format!(
                            "{}; use client_secret, workload_identity, managed_identity or azure_cli (development)",
                            other.map_or_else(|| "required".to_owned(), |o| format!("`{o}` is not a credential kind"))
                        ),
                    );
                    AzureCredential::ClientSecret
                }
            };
            let mut required = |field: &str, v: &Option<String>| {
                if v.as_deref().is_none_or(str::is_empty) {
                    problem(
                        format!("azure.{field}"),
                        format!("required with credential = \"{}\"", credential.as_str()),
                    );
                }
            };
            if credential == AzureCredential::ClientSecret {
                required("tenant_id", &a.tenant_id);
                required("client_id", &a.client_id);
                required("client_secret_secret", &a.client_secret_secret);
            }
            if let Some(n) = &a.client_secret_secret {
                if credential != AzureCredential::ClientSecret {
                    problem(
                        "azure.client_secret_secret".into(),
                        "only used with credential = \"client_secret\"".into(),
                    );
                } else if !raw.secrets.contains_key(n) {
                    problem(
                        "azure.client_secret_secret".into(),
                        format!("secret `{n}` is not defined under [secrets]"),
                    );
                }
            }
            if a.federated_token_file.is_some() && credential != AzureCredential::WorkloadIdentity {
                problem(
                    "azure.federated_token_file".into(),
                    "only used with credential = \"workload_identity\"".into(),
                );
            }
            if let Some(t) = &a.tenant_id
                && (t.is_empty()
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            {
                problem(
                    "azure.tenant_id".into(),
                    format!("`{t}` is not a tenant id (a GUID, or a domain such as contoso.onmicrosoft.com)"),
                );
            }
            let mut https = |field: &str, v: Option<String>, default: &str| {
                let v = v.unwrap_or_else(|| default.to_owned());
                match url::Url::parse(&v) {
                    Ok(u) if u.scheme() == "https" && u.host_str().is_some() && u.query().is_none() => {}
                    _ => problem(
                        format!("azure.{field}"),
                        format!("`{v}` is not an https URL"),
                    ),
                }
                v.trim_end_matches('/').to_owned()
            };
            let authority_host = https(
                "authority_host",
                a.authority_host,
                "https://login.microsoftonline.com",
            );
            let arm_endpoint = https("arm_endpoint", a.arm_endpoint, "https://management.azure.com");
            let arm_audience = https("arm_audience", a.arm_audience, "https://management.azure.com");
            let graph_endpoint =
                https("graph_endpoint", a.graph_endpoint, "https://graph.microsoft.com");
            let graph_audience =
                https("graph_audience", a.graph_audience, "https://graph.microsoft.com");
            let max_attempts = a.max_attempts.unwrap_or(5);
            if !(1..=20).contains(&max_attempts) {
                problem("azure.max_attempts".into(), "must be between 1 and 20".into());
            }
            AzureConfig {
                credential,
                tenant_id: a.tenant_id,
                client_id: a.client_id,
                client_secret_secret: a.client_secret_secret,
                federated_token_file: a.federated_token_file.map(|f| base.join(f)),
                authority_host,
                arm_endpoint,
                arm_audience,
                graph_endpoint,
                graph_audience,
                ca_file: a.ca_file.map(|f| base.join(f)),
                max_attempts,
            }
        });

        // [oidc]
        let oidc = raw.oidc.map(|o| {
            match url::Url::parse(&o.issuer) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" && u.host_str().is_some_and(is_loopback_host) => {}
                _ => problem(
                    "oidc.issuer".into(),
                    format!(
                        "`{}` must be an https URL (http only on loopback)",
                        o.issuer
                    ),
                ),
            }
            if o.client_id.trim().is_empty() {
                problem("oidc.client_id".into(), "must not be empty".into());
            }
            if let Some(n) = &o.client_secret_secret
                && !raw.secrets.contains_key(n)
            {
                problem(
                    "oidc.client_secret_secret".into(),
                    format!("secret `{n}` is not defined under [secrets]"),
                );
            }
            let mut scopes = o
                .scopes
                .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
            if !scopes.iter().any(|s| s == "openid") {
                scopes.insert(0, "openid".into());
            }
            if let Some(bad) = scopes.iter().find(|s| {
                s.is_empty()
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
            }) {
                problem(
                    "oidc.scopes".into(),
                    format!("`{bad}` is not a valid scope"),
                );
            }
            OidcConfig {
                issuer: o.issuer,
                client_id: o.client_id,
                client_secret_secret: o.client_secret_secret,
                scopes,
                id_claim: o.id_claim.unwrap_or_else(|| "email".into()),
                groups_claim: o.groups_claim.unwrap_or_else(|| "groups".into()),
                display_name: o.display_name.unwrap_or_else(|| "single sign-on".into()),
            }
        });

        // [smtp], [notify], [[webhooks]]
        let secret_defined = |n: &str| raw.secrets.contains_key(n);
        let smtp = raw.smtp.map(|m| {
            let security = match m.security.as_deref().unwrap_or("starttls") {
                "starttls" => SmtpSecurity::StartTls,
                "tls" => SmtpSecurity::Tls,
                "plain" => SmtpSecurity::Plain,
                other => {
                    problem(
                        "smtp.security".into(),
                        format!("`{other}`: use `starttls`, `tls` or `plain`"),
                    );
                    SmtpSecurity::StartTls
                }
            };
            if m.host.trim().is_empty() || m.host.contains(['/', ' ', ':']) {
                problem(
                    "smtp.host".into(),
                    format!("`{}` is not a host name", m.host),
                );
            }
            if security == SmtpSecurity::Plain && !is_loopback_host(&m.host) {
                problem(
                    "smtp.security".into(),
                    format!(
                        "`plain` sends mail and passwords unencrypted: allowed only to a server on loopback, not `{}`; use `starttls` or `tls`",
                        m.host
                    ),
                );
            }
            if let Some(n) = &m.password_secret
                && !secret_defined(n)
            {
                problem(
                    "smtp.password_secret".into(),
                    format!("secret `{n}` is not defined under [secrets]"),
                );
            }
            if m.password_secret.is_some() != m.username.is_some() {
                problem(
                    "smtp.username".into(),
                    "give both username and password_secret, or neither".into(),
                );
            }
            if m.from.parse::<lettre::message::Mailbox>().is_err() {
                problem(
                    "smtp.from".into(),
                    format!(
                        "`{}` is not an address, e.g. `Sallyport <sallyport@example.com>`",
                        m.from
                    ),
                );
            }
            let timeout = m
                .timeout
                .as_deref()
                .map_or(Ok(10), parse_duration)
                .unwrap_or_else(|e| {
                    problem("smtp.timeout".into(), e);
                    10
                });
            SmtpConfig {
                port: m.port.unwrap_or(match security {
                    SmtpSecurity::StartTls => 587,
                    SmtpSecurity::Tls => 465,
                    SmtpSecurity::Plain => 25,
                }),
                host: m.host,
                security,
                username: m.username,
                password_secret: m.password_secret,
                from: m.from,
                timeout: std::time::Duration::from_secs(timeout.clamp(1, 300)),
            }
        });
        let expiring_lead_secs = match raw.notify.expiring_lead.as_deref() {
            None => 15 * 60,
            Some(t) => parse_duration(t).unwrap_or_else(|e| {
                problem("notify.expiring_lead".into(), e);
                15 * 60
            }),
        };
        let mut check_watchers = |path: String, list: &[String]| {
            for w in list {
                if !valid_name(w) {
                    problem(
                        path.clone(),
                        format!("`{w}` is neither an e-mail address nor a user id"),
                    );
                }
            }
        };
        check_watchers("notify.watchers".into(), &raw.notify.watchers);
        let notify = NotifyConfig {
            expiring_lead_secs,
            watchers: raw.notify.watchers.clone(),
            // With backoff capped at 5 min: about a week of outage before a message is given up.
            max_attempts: raw.notify.max_attempts.unwrap_or(2000).clamp(1, 100_000),
        };
        let mut webhooks = Vec::new();
        let mut hook_names = BTreeSet::new();
        for (i, w) in raw.webhooks.into_iter().enumerate() {
            let path = format!("webhooks[{i}] ({})", w.name);
            if !valid_name(&w.name) || !hook_names.insert(w.name.clone()) {
                problem(
                    format!("{path}.name"),
                    "give each webhook a unique name (letters, digits, - _ .)".into(),
                );
            }
            let format = match w.format.as_deref().unwrap_or("json") {
                "json" => WebhookFormat::Json,
                "slack" => WebhookFormat::Slack,
                "teams" => WebhookFormat::Teams,
                other => {
                    problem(
                        format!("{path}.format"),
                        format!("`{other}`: use `json`, `slack` or `teams`"),
                    );
                    WebhookFormat::Json
                }
            };
            match (&w.url, &w.url_secret) {
                (Some(_), None) if format != WebhookFormat::Json => problem(
                    format!("{path}.url"),
                    "a Slack or Teams webhook URL is a credential: put it in a secret and name it in `url_secret`".into(),
                ),
                (Some(u), None) => match url::Url::parse(u) {
                    Ok(parsed) if parsed.scheme() == "https" => {}
                    Ok(parsed)
                        if parsed.scheme() == "http"
                            && parsed.host_str().is_some_and(is_loopback_host) => {}
                    _ => problem(
                        format!("{path}.url"),
                        "must be an https URL (http only on loopback)".into(),
                    ),
                },
                (None, Some(n)) if !secret_defined(n) => problem(
                    format!("{path}.url_secret"),
                    format!("secret `{n}` is not defined under [secrets]"),
                ),
                (None, Some(_)) => {}
                _ => problem(
                    format!("{path}.url"),
                    "give `url` or `url_secret` (one of them)".into(),
                ),
            }
            match &w.signing_secret {
                Some(n) if !secret_defined(n) => problem(
                    format!("{path}.signing_secret"),
                    format!("secret `{n}` is not defined under [secrets]"),
                ),
                None if format == WebhookFormat::Json => problem(
                    format!("{path}.signing_secret"),
                    "a `json` webhook is signed: name the secret holding its HMAC key".into(),
                ),
                _ => {}
            }
            let events = w.events.unwrap_or_default();
            for e in &events {
                if !TOPICS.contains(&e.as_str()) {
                    problem(
                        format!("{path}.events"),
                        format!("`{e}` is not one of {}", TOPICS.join(", ")),
                    );
                }
            }
            webhooks.push(WebhookConfig {
                name: w.name,
                url: w.url,
                url_secret: w.url_secret,
                format,
                signing_secret: w.signing_secret,
                events,
                entitlements: w.entitlements.unwrap_or_default(),
            });
        }

        // [plugins]
        let mut plugin_capabilities = BTreeMap::new();
        for (name, caps) in raw.plugins.capabilities {
            match caps.parse() {
                Ok(c) => {
                    if let Some(h) = &c.http {
                        for s in &h.secrets {
                            if !raw.secrets.contains_key(s) {
                                problem(
                                    format!("plugins.capabilities.{name}.http.secrets"),
                                    format!("secret `{s}` is not defined under [secrets]"),
                                );
                            }
                        }
                    }
                    plugin_capabilities.insert(name, c);
                }
                Err(e) => problem(format!("plugins.capabilities.{name}"), e),
            }
        }
        let plugin_slots = raw.plugins.slots.unwrap_or(64);
        if !(1..=1024).contains(&plugin_slots) {
            problem("plugins.slots".into(), "must be between 1 and 1024".into());
        }

        // [[users]]
        let mut users = Vec::new();
        let mut seen_users = BTreeSet::new();
        for (i, u) in raw.users.into_iter().enumerate() {
            let path = format!("users[{i}]");
            if !valid_name(&u.id) {
                problem(
                    format!("{path}.id"),
                    format!("`{}`: use letters, digits and - _ . @ : +", u.id),
                );
            }
            if !seen_users.insert(u.id.clone()) {
                problem(
                    format!("{path}.id"),
                    format!("user `{}` is listed twice", u.id),
                );
            }
            for g in &u.groups {
                if !valid_name(g) {
                    problem(
                        format!("{path}.groups"),
                        format!("`{g}` is not a valid group name"),
                    );
                }
            }
            users.push(User {
                id: u.id,
                email: u.email,
                name: u.name,
                groups: u.groups,
            });
        }

        // [[entitlements]]
        let mut entitlements = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, e) in raw.entitlements.into_iter().enumerate() {
            let path = format!("entitlements[{i}] ({})", e.id);
            if !valid_id(&e.id) {
                problem(
                    format!("{path}.id"),
                    "use lower-case letters, digits, `-`, `_`, `.`, in `/`-separated segments, e.g. `aws/prod/admin`".into(),
                );
            }
            if !seen.insert(e.id.clone()) {
                problem(format!("{path}.id"), "defined twice".into());
            }
            let mut d = |field: &str, v: Option<&str>| -> Option<u64> {
                v.and_then(|t| match parse_duration(t) {
                    Ok(s) => Some(s),
                    Err(m) => {
                        problem(format!("{path}.{field}"), m);
                        None
                    }
                })
            };
            let max = d("max_duration", Some(&e.max_duration)).unwrap_or(3600);
            let default = d("default_duration", e.default_duration.as_deref())
                .unwrap_or_else(|| max.min(3600));
            let ttl = d("pending_ttl", e.pending_ttl.as_deref()).unwrap_or(86_400);
            if default > max {
                problem(
                    format!("{path}.default_duration"),
                    "is longer than max_duration".into(),
                );
            }
            let pattern = e.justification_pattern.as_deref().and_then(|re| {
                match regex::RegexBuilder::new(re).size_limit(1 << 20).build() {
                    Ok(r) => Some(r),
                    Err(err) => {
                        problem(format!("{path}.justification_pattern"), format!("{err}"));
                        None
                    }
                }
            });
            if e.requester_groups.is_empty() && e.requester_users.is_empty() {
                problem(
                    format!("{path}.requester_groups"),
                    "nobody could request it: list groups (or `*` for everyone signed in) or requester_users".into(),
                );
            }
            let settings = |what: &str, u: &RawPluginUse| -> Result<String, String> {
                if !u.settings.is_table() {
                    return Err(format!("{what}.settings must be a table"));
                }
                Ok(toml_to_json(&u.settings).to_string())
            };
            let connector = settings("connector", &e.connector).unwrap_or_else(|m| {
                problem(format!("{path}.connector.settings"), m);
                "{}".into()
            });
            let approval = settings("approval", &e.approval).unwrap_or_else(|m| {
                problem(format!("{path}.approval.settings"), m);
                "{}".into()
            });
            entitlements.push(EntitlementConfig {
                rules: EntitlementRules {
                    id: e.id,
                    max_duration_secs: max,
                    default_duration_secs: default,
                    requester_groups: e.requester_groups,
                    requester_users: e.requester_users,
                    justification_pattern: pattern,
                    ticket_required: e.ticket_required,
                    pending_ttl_secs: ttl,
                    break_glass: e.break_glass,
                },
                description: e.description,
                connector: PluginUse {
                    plugin: e.connector.plugin,
                    settings: connector,
                },
                approval: PluginUse {
                    plugin: e.approval.plugin,
                    settings: approval,
                },
                link_only_approval: e.link_only_approval,
                watchers: {
                    for w in &e.watchers {
                        if !valid_name(w) {
                            problem(
                                format!("{path}.watchers"),
                                format!("`{w}` is neither an e-mail address nor a user id"),
                            );
                        }
                    }
                    e.watchers
                },
            });
        }

        // [[actions]]
        let mut actions = Vec::new();
        for (i, a) in raw.actions.into_iter().enumerate() {
            let path = format!("actions[{i}] ({})", a.name);
            if !valid_id(&a.name) {
                problem(
                    format!("{path}.name"),
                    "use lower-case letters, digits, `-`, `_`, `.`, in `/`-separated segments, e.g. `deploy/production`".into(),
                );
            }
            if !seen.insert(a.name.clone()) {
                problem(
                    format!("{path}.name"),
                    "defined twice (action names and entitlement ids share one namespace)".into(),
                );
            }
            let mut d = |field: &str, v: Option<&str>, default: u64| -> u64 {
                v.map_or(default, |t| match parse_duration(t) {
                    Ok(s) => s,
                    Err(m) => {
                        problem(format!("{path}.{field}"), m);
                        default
                    }
                })
            };
            let validity = d("validity", a.validity.as_deref(), 900);
            let ttl = d("pending_ttl", a.pending_ttl.as_deref(), 3600);
            if validity == 0 || validity > 86_400 {
                problem(
                    format!("{path}.validity"),
                    "must be between 1 second and 24h: an approval is for an action about to run"
                        .into(),
                );
            }
            if a.requester_groups.is_empty()
                && a.requester_users.is_empty()
                && a.pipelines.is_empty()
            {
                problem(
                    format!("{path}.requester_groups"),
                    "nobody could ask for it: list requester_groups, requester_users or [[actions.pipelines]]".into(),
                );
            }
            let mut pipelines = Vec::new();
            for (j, pl) in a.pipelines.into_iter().enumerate() {
                let pp = format!("{path}.pipelines[{j}]");
                match url::Url::parse(&pl.issuer) {
                    Ok(u)
                        if u.scheme() == "https"
                            || (u.scheme() == "http"
                                && u.host_str().is_some_and(is_loopback_host)) => {}
                    _ => problem(
                        format!("{pp}.issuer"),
                        format!(
                            "`{}` must be an https URL (plain http only on loopback, for tests)",
                            pl.issuer
                        ),
                    ),
                }
                if pl.audience.trim().is_empty() {
                    problem(format!("{pp}.audience"), "must not be empty".into());
                }
                if pl.subject.trim().is_empty() || pl.subject.starts_with('*') {
                    problem(
                        format!("{pp}.subject"),
                        "must start with literal text (e.g. `repo:acme/app:`): a subject starting with `*` would admit every pipeline the issuer serves".into(),
                    );
                }
                pipelines.push(PipelineRule {
                    issuer: pl.issuer,
                    audience: pl.audience,
                    subject: pl.subject,
                });
            }
            let mut parameters = crate::domain::ParamSchema::new();
            for (name, rp) in a.parameters {
                let pp = format!("{path}.parameters.{name}");
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    problem(
                        pp.clone(),
                        "parameter names use letters, digits, `_`, `-`, `.` (at most 64)".into(),
                    );
                }
                let Some(kind) = crate::domain::ParamType::parse(&rp.kind) else {
                    problem(
                        format!("{pp}.type"),
                        format!("`{}`: use string, integer or boolean", rp.kind),
                    );
                    continue;
                };
                let pattern = rp.pattern.as_deref().and_then(|re| {
                    if kind != crate::domain::ParamType::String {
                        problem(
                            format!("{pp}.pattern"),
                            "only string parameters take a pattern".into(),
                        );
                        return None;
                    }
                    // Anchored: the whole value must match.
                    match regex::RegexBuilder::new(&format!("^(?:{re})$"))
                        .size_limit(1 << 20)
                        .build()
                    {
                        Ok(r) => Some(r),
                        Err(err) => {
                            problem(format!("{pp}.pattern"), format!("{err}"));
                            None
                        }
                    }
                });
                parameters.insert(
                    name,
                    crate::domain::ParamSpec {
                        kind,
                        required: rp.required,
                        pattern,
                        description: rp.description,
                    },
                );
            }
            if parameters.len() > crate::domain::MAX_PARAMS {
                problem(
                    format!("{path}.parameters"),
                    format!("at most {} parameters", crate::domain::MAX_PARAMS),
                );
            }
            let approval = if a.approval.settings.is_table() {
                toml_to_json(&a.approval.settings).to_string()
            } else {
                problem(
                    format!("{path}.approval.settings"),
                    "approval.settings must be a table".into(),
                );
                "{}".into()
            };
            for w in &a.watchers {
                if !valid_name(w) {
                    problem(
                        format!("{path}.watchers"),
                        format!("`{w}` is neither an e-mail address nor a user id"),
                    );
                }
            }
            actions.push(ActionKindConfig {
                rules: EntitlementRules {
                    id: a.name,
                    max_duration_secs: validity,
                    default_duration_secs: validity,
                    requester_groups: a.requester_groups,
                    requester_users: a.requester_users,
                    justification_pattern: None,
                    ticket_required: false,
                    pending_ttl_secs: ttl,
                    break_glass: false,
                },
                description: a.description,
                parameters,
                pipelines,
                approval: PluginUse {
                    plugin: a.approval.plugin,
                    settings: approval,
                },
                link_only_approval: a.link_only_approval,
                watchers: a.watchers,
            });
        }
        let attestation = AttestationConfig {
            signing_keys: raw
                .attestation
                .signing_keys
                .iter()
                .map(|k| base.join(k))
                .collect(),
            withdrawn_keys: raw.attestation.withdrawn_keys,
        };

        if !p.is_empty() {
            return Err(Problems(p));
        }
        Ok(Config {
            server: ServerConfig {
                listen,
                public_url,
                request_timeout: std::time::Duration::from_secs(request_timeout),
                max_body_bytes,
            },
            database: DatabaseConfig {
                url: Secret::new(url.unwrap_or_default()),
                max_connections: raw.database.max_connections.unwrap_or(16).clamp(1, 256),
            },
            plugin_dir: raw.plugins.dir.map(|d| base.join(d)),
            plugin_slots,
            plugin_capabilities,
            auth: AuthConfig {
                admin_users: raw.auth.admin_users,
                admin_groups: raw.auth.admin_groups,
                auditor_users: raw.auth.auditor_users,
                auditor_groups: raw.auth.auditor_groups,
                token_ttl_secs: token_ttl,
                session_ttl_secs: session_ttl,
            },
            jobs: JobsConfig {
                lease_ms: i64::try_from(lease).unwrap_or(30) * 1000,
                concurrency: raw.jobs.concurrency.unwrap_or(16).clamp(1, 256),
                provision_attempts: raw.jobs.provision_attempts.unwrap_or(5).clamp(1, 100),
                retry_max_ms: i64::try_from(retry_max).unwrap_or(300) * 1000,
                cleanup_delay_ms: i64::try_from(cleanup_delay).unwrap_or(120) * 1000,
            },
            aws,
            azure,
            oidc,
            smtp,
            notify,
            webhooks,
            secrets,
            users,
            entitlements,
            actions,
            attestation,
        })
    }

    /// A static user by id.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    /// An entitlement by id.
    pub fn entitlement(&self, id: &str) -> Option<&EntitlementConfig> {
        self.entitlements.iter().find(|e| e.rules.id == id)
    }

    /// An action kind by name.
    pub fn action(&self, name: &str) -> Option<&ActionKindConfig> {
        self.actions.iter().find(|a| a.rules.id == name)
    }

    /// What reviewing and notifying need of a request's entitlement or action kind.
    pub fn review_settings(&self, r: &crate::domain::Request) -> Option<ReviewSettings<'_>> {
        if r.action.is_some() {
            self.action(&r.entitlement).map(|a| ReviewSettings {
                approval: &a.approval,
                link_only_approval: a.link_only_approval,
                watchers: &a.watchers,
            })
        } else {
            self.entitlement(&r.entitlement).map(|e| ReviewSettings {
                approval: &e.approval,
                link_only_approval: e.link_only_approval,
                watchers: &e.watchers,
            })
        }
    }
}

/// The approval side of an entitlement or action kind.
#[derive(Debug, Clone, Copy)]
pub struct ReviewSettings<'a> {
    /// The approval plugin and its settings.
    pub approval: &'a PluginUse,
    /// E-mailed links act without sign-in.
    pub link_only_approval: bool,
    /// Told about outcomes.
    pub watchers: &'a [String],
}

impl Config {}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"

[[users]]
id = "alice"
groups = ["eng"]

[[entitlements]]
id = "demo/x"
max_duration = "2h"
requester_groups = ["eng"]
justification_pattern = "^[A-Z]+-[0-9]+"
[entitlements.connector]
plugin = "http"
settings = { grant = { url = "http://127.0.0.1:1/g" }, revoke = { url = "http://127.0.0.1:1/r" } }
[entitlements.approval]
plugin = "quorum"
settings = { stages = [{ groups = ["leads"], count = 1 }] }
"#;

    #[test]
    fn parses_a_good_file() {
        let c = Config::parse(GOOD, Path::new("/etc/sp"), ParseOptions::default()).expect("ok");
        let e = c.entitlement("demo/x").expect("entitlement");
        assert_eq!(e.rules.max_duration_secs, 7200);
        assert_eq!(e.rules.default_duration_secs, 3600);
        assert_eq!(e.rules.pending_ttl_secs, 86_400);
        assert!(e.approval.settings.contains("\"leads\""));
        assert_eq!(c.database.url.expose(), "sqlite:///etc/sp/sallyport.db");
    }

    #[test]
    fn notifications_are_checked() {
        let parse = |extra: &str| {
            Config::parse(
                &format!("{extra}\n{GOOD}"),
                Path::new("."),
                ParseOptions { skip_secrets: true },
            )
            .map_err(|e| e.to_string())
        };
        let ok = parse(
            r#"
[smtp]
host = "127.0.0.1"
security = "plain"
from = "Sallyport <sp@example.com>"
[notify]
expiring_lead = "10m"
[[webhooks]]
name = "chat"
url_secret = "slack"
format = "slack"
events = ["approved"]
[secrets.slack]
env = "SALLYPORT_TEST_SLACK_URL_UNSET"
"#,
        )
        .expect("good notify config");
        let smtp = ok.smtp.expect("smtp");
        assert_eq!((smtp.port, smtp.security), (25, SmtpSecurity::Plain));
        assert_eq!(ok.notify.expiring_lead_secs, 600);
        assert!(ok.webhooks[0].wants("approved", "any/thing"));
        assert!(!ok.webhooks[0].wants("denied", "any/thing"));
        for (bad, says) in [
            (
                "[smtp]\nhost = \"mail.example.com\"\nsecurity = \"plain\"\nfrom = \"a@b.c\"",
                "loopback",
            ),
            (
                "[smtp]\nhost = \"mail.example.com\"\nfrom = \"not an address\"",
                "smtp.from",
            ),
            (
                "[smtp]\nhost = \"mail.example.com\"\nfrom = \"a@b.c\"\npassword_secret = \"nope\"",
                "not defined",
            ),
            (
                "[[webhooks]]\nname = \"j\"\nurl = \"https://x.example.com/\"",
                "signing_secret",
            ),
            (
                "[[webhooks]]\nname = \"j\"\nurl = \"http://x.example.com/\"\nsigning_secret = \"k\"\n[secrets.k]\nenv = \"K\"",
                "https",
            ),
            (
                "[[webhooks]]\nname = \"j\"\nurl = \"https://hooks.slack.example/T0/B0/XYZ\"\nformat = \"slack\"",
                "credential",
            ),
            (
                "[[webhooks]]\nname = \"j\"\nurl = \"https://x.example.com/\"\nsigning_secret = \"k\"\nevents = [\"approve\"]\n[secrets.k]\nenv = \"K\"",
                "`approve` is not one of",
            ),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn azure_is_checked() {
        let parse = |extra: &str| {
            Config::parse(
                &format!("{extra}\n{GOOD}"),
                Path::new("/etc/sp"),
                ParseOptions { skip_secrets: true },
            )
            .map_err(|e| e.to_string())
        };
        let ok = parse(
            "[azure]\ncredential = \"workload_identity\"\nfederated_token_file = \"token\"\nca_file = \"ca.pem\"",
        )
        .expect("good azure config");
        let a = ok.azure.expect("azure");
        assert_eq!(a.credential, AzureCredential::WorkloadIdentity);
        assert_eq!(a.arm_endpoint, "https://management.azure.com");
        assert_eq!(a.federated_token_file, Some(PathBuf::from("/etc/sp/token")));
        assert_eq!(a.max_attempts, 5);
        for (bad, says) in [
            ("[azure]\ntenant_id = \"t\"", "azure.credential: required"),
            (
                "[azure]\ncredential = \"password\"",
                "`password` is not a credential kind",
            ),
            (
                "[azure]\ncredential = \"client_secret\"",
                "azure.client_secret_secret",
            ),
            (
                "[azure]\ncredential = \"client_secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_secret = \"nope\"",
                "secret `nope` is not defined",
            ),
            (
                "[azure]\ncredential = \"azure_cli\"\nauthority_host = \"http://login.example\"",
                "azure.authority_host",
            ),
            (
                "[azure]\ncredential = \"azure_cli\"\ntenant_id = \"a/b\"",
                "not a tenant id",
            ),
            (
                "[azure]\ncredential = \"managed_identity\"\nfederated_token_file = \"x\"",
                "only used with credential = \"workload_identity\"",
            ),
            (
                "[azure]\ncredential = \"azure_cli\"\nmax_attempts = 0",
                "between 1 and 20",
            ),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let bad = GOOD.replace(
            "max_duration = \"2h\"",
            "max_duration = \"2h\"\nmax_durration = \"1h\"",
        );
        let e = Config::parse(&bad, Path::new("."), ParseOptions::default()).expect_err("bad");
        let s = e.to_string();
        assert!(s.contains("max_durration") && s.contains("line 12"), "{s}");
    }

    #[test]
    fn problems_point_at_the_entry() {
        let bad = GOOD
            .replace("\"2h\"", "\"2x\"")
            .replace("^[A-Z]+-[0-9]+", "([");
        let e = Config::parse(&bad, Path::new("."), ParseOptions::default()).expect_err("bad");
        let s = e.to_string();
        assert!(s.contains("entitlements[0] (demo/x).max_duration"), "{s}");
        assert!(
            s.contains("entitlements[0] (demo/x).justification_pattern"),
            "{s}"
        );
    }
}
