//! `plugin.toml`: what a plugin is, what it may touch, and how much it may use.
//!
//! The manifest is an operator-controlled document: it sits next to the `.wasm` in the plugin
//! directory (or is embedded for built-ins, where the operator's configuration adds grants).
//! A capability table being present grants the interface; its lists say which origins, ARNs or
//! scopes. Nothing is granted by default except `log`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::World;

/// The WIT package version this host implements.
pub const API_VERSION: semver::Version = semver::Version::new(0, 1, 0);

/// Hard ceilings no manifest can exceed.
pub const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Hard ceiling for connector calls.
pub const MAX_CONNECTOR_TIMEOUT: Duration = Duration::from_secs(300);
/// Hard ceiling on any plugin's linear memory (also the pool's slot size).
pub const MAX_MEMORY_BYTES: u64 = 256 << 20;

/// A parsed, validated `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Plugin name: lower-case letters, digits and `-`.
    pub name: String,
    /// The plugin's own version.
    pub version: semver::Version,
    /// Which world it implements.
    pub world: World,
    /// The WIT API version it was built against, when stated.
    pub api_version: Option<semver::Version>,
    /// One line for people.
    pub description: String,
    /// Per-call limits.
    pub limits: Limits,
    /// Granted host capabilities.
    pub capabilities: Capabilities,
    /// Connectors only: call `revoke` (reason `expired`) once more at the natural end of a grant
    /// that was revoked or ended early, to remove what the early revoke left behind (aws-sts's
    /// deny policy). Off by default: for a connector whose access is not scoped to one request
    /// (a group membership), that second call could take away a newer grant's access.
    pub cleanup_at_end: bool,
}

/// Per-call resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one call, host calls included.
    pub timeout: Duration,
    /// Linear memory cap in bytes.
    pub memory_bytes: u64,
}

impl Limits {
    /// Safe defaults per world: approval 100 ms / 32 MiB; connector 30 s / 64 MiB.
    pub fn default_for(world: World) -> Self {
        match world {
            World::Approval => Limits {
                timeout: Duration::from_millis(100),
                memory_bytes: 32 << 20,
            },
            World::Connector => Limits {
                timeout: Duration::from_secs(30),
                memory_bytes: 64 << 20,
            },
        }
    }
}

/// Host capabilities granted to a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Outgoing HTTP, when granted.
    pub http: Option<HttpGrant>,
    /// AWS calls, when granted.
    pub aws: Option<AwsGrant>,
    /// Azure calls, when granted.
    pub azure: Option<AzureGrant>,
}

impl Capabilities {
    /// Add the operator's grants to a manifest's own (used for built-ins, whose embedded manifest
    /// cannot know the operator's origins, ARNs or scopes).
    pub fn merge(&mut self, extra: &Capabilities) {
        if let Some(h) = &extra.http {
            let mine = self.http.get_or_insert_with(HttpGrant::default);
            extend_unique(&mut mine.allow, &h.allow);
            mine.secrets.extend(h.secrets.iter().cloned());
        }
        if let Some(a) = &extra.aws {
            let mine = self.aws.get_or_insert_with(AwsGrant::default);
            extend_unique(&mut mine.arns, &a.arns);
        }
        if let Some(a) = &extra.azure {
            let mine = self.azure.get_or_insert_with(AzureGrant::default);
            extend_unique(&mut mine.scopes, &a.scopes);
        }
    }

    /// Names of the granted capabilities, for display.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = vec!["log"];
        if self.http.is_some() {
            v.push("http");
        }
        if self.aws.is_some() {
            v.push("aws");
        }
        if self.azure.is_some() {
            v.push("azure");
        }
        v
    }
}

/// Append the items of `extra` that `list` lacks, keeping order.
fn extend_unique<T: Clone + PartialEq>(list: &mut Vec<T>, extra: &[T]) {
    for item in extra {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// Which origins a plugin may call and which secrets it may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGrant {
    /// Allowed origins.
    pub allow: Vec<OriginPattern>,
    /// Names of secrets the host may inject into headers.
    pub secrets: BTreeSet<String>,
}

/// Which AWS resources a plugin may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsGrant {
    /// ARN patterns (`*` matches any run of characters).
    pub arns: Vec<String>,
}

/// Which Azure scopes a plugin may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureGrant {
    /// Scope prefixes, e.g. `/subscriptions/<id>/resourceGroups/<rg>`.
    pub scopes: Vec<String>,
}

/// An allowed origin: `https://api.example.com`, `https://*.example.com`, `http://127.0.0.1:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or IP literal, lower-case; a leading `*.` matches any subdomain (not the apex).
    pub host: String,
    /// Port; `None` means any port.
    pub port: Option<u16>,
}

impl OriginPattern {
    /// Parse `scheme://host[:port|:*]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!("`{s}`: expected scheme://host[:port], e.g. https://api.example.com")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{s}`: scheme must be http or https"));
        }
        if rest.contains('/') || rest.contains('@') || rest.contains('?') || rest.contains('#') {
            return Err(format!("`{s}`: an origin has no path, user or query"));
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = if let Some(h) = rest.strip_prefix('[') {
            let (h, after) = h
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: unterminated IPv6 literal"))?;
            let port = match after {
                "" => None,
                a => Some(
                    a.strip_prefix(':')
                        .ok_or_else(|| format!("`{s}`: unexpected `{a}` after the IPv6 literal"))?,
                ),
            };
            (format!("[{}]", h.to_ascii_lowercase()), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (rest.to_ascii_lowercase(), None),
            }
        };
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{s}`: bad port `{p}`"))?,
            ),
        };
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty() || bare.contains('*') {
            return Err(format!(
                "`{s}`: host must be a name or address; `*.` is allowed only as a prefix"
            ));
        }
        Ok(OriginPattern { scheme, host, port })
    }

    /// Does this pattern allow `url`?
    pub fn matches(&self, url: &url::Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        };
        let port_ok = match (self.port, url.port_or_known_default()) {
            (None, _) => true,
            (Some(p), Some(q)) => p == q,
            (Some(_), None) => false,
        };
        host_ok && port_ok
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            None => write!(f, "{}://{}:*", self.scheme, self.host),
            Some(p) => write!(f, "{}://{}:{}", self.scheme, self.host, p),
        }
    }
}

/// Does an ARN match a pattern where `*` stands for any run of characters (`?` for one)?
pub fn arn_matches(pattern: &str, arn: &str) -> bool {
    glob_match(pattern.as_bytes(), arn.as_bytes())
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with single-star backtracking: linear in practice, no recursion.
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Is `scope` equal to or below one of the allowed scope prefixes (compared case-insensitively,
/// segment by segment, as Azure does)?
pub fn scope_allowed(allowed: &[String], scope: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
    let scope = norm(scope);
    allowed.iter().any(|a| {
        let a = norm(a);
        !a.is_empty() && (scope == a || scope.starts_with(&format!("{a}/")))
    })
}

// ---- parsing ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    name: String,
    version: String,
    world: String,
    api_version: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    cleanup_at_end: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    timeout_ms: Option<u64>,
    memory_mib: Option<u64>,
}

/// The `[capabilities]` table, shared with the operator's configuration.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCapabilities {
    http: Option<RawHttp>,
    aws: Option<RawAws>,
    azure: Option<RawAzure>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawAws {
    #[serde(default)]
    arns: Vec<String>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawAzure {
    #[serde(default)]
    scopes: Vec<String>,
}

impl RawCapabilities {
    /// Validate into [`Capabilities`]; errors name the offending entry.
    pub fn parse(self) -> Result<Capabilities, String> {
        let http = match self.http {
            None => None,
            Some(h) => {
                let mut allow = Vec::new();
                for (i, a) in h.allow.iter().enumerate() {
                    allow.push(
                        OriginPattern::parse(a)
                            .map_err(|e| format!("capabilities.http.allow[{i}]: {e}"))?,
                    );
                }
                let mut secrets = BTreeSet::new();
                for (i, s) in h.secrets.iter().enumerate() {
                    if !valid_ident(s) {
                        return Err(format!(
                            "capabilities.http.secrets[{i}]: `{s}` is not a secret name (letters, digits, `_`, `-`)"
                        ));
                    }
                    secrets.insert(s.clone());
                }
                Some(HttpGrant { allow, secrets })
            }
        };
        let aws = match self.aws {
            None => None,
            Some(a) => {
                for (i, arn) in a.arns.iter().enumerate() {
                    if !arn.starts_with("arn:") {
                        return Err(format!(
                            "capabilities.aws.arns[{i}]: `{arn}` is not an ARN pattern (it must start with `arn:`)"
                        ));
                    }
                }
                Some(AwsGrant { arns: a.arns })
            }
        };
        let azure = match self.azure {
            None => None,
            Some(a) => {
                for (i, s) in a.scopes.iter().enumerate() {
                    if !s.starts_with('/') || s.contains('*') {
                        return Err(format!(
                            "capabilities.azure.scopes[{i}]: `{s}` is not a scope (e.g. /subscriptions/<id>/resourceGroups/<name>; no wildcards)"
                        ));
                    }
                }
                Some(AzureGrant { scopes: a.scopes })
            }
        };
        Ok(Capabilities { http, aws, azure })
    }
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Is this a valid plugin name?
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Manifest {
    /// Parse and validate a `plugin.toml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| e.to_string())?;
        if !valid_name(&raw.name) {
            return Err(format!(
                "name: `{}` is not a plugin name (lower-case letters, digits and `-`, starting with a letter)",
                raw.name
            ));
        }
        let version = semver::Version::parse(&raw.version)
            .map_err(|e| format!("version: `{}`: {e}", raw.version))?;
        let world = match raw.world.as_str() {
            "approval" => World::Approval,
            "connector" => World::Connector,
            other => {
                return Err(format!(
                    "world: `{other}` is not a world; expected `approval` or `connector`"
                ));
            }
        };
        let api_version = match raw.api_version {
            None => None,
            Some(v) => {
                let v =
                    semver::Version::parse(&v).map_err(|e| format!("api-version: `{v}`: {e}"))?;
                if !api_compatible(&v) {
                    return Err(format!(
                        "api-version: {v} is not supported; this Sallyport implements sallyport:plugin@{API_VERSION} (compatible: {})",
                        compatible_range()
                    ));
                }
                Some(v)
            }
        };
        let defaults = Limits::default_for(world);
        let max_timeout = match world {
            World::Approval => MAX_APPROVAL_TIMEOUT,
            World::Connector => MAX_CONNECTOR_TIMEOUT,
        };
        let timeout = match raw.limits.timeout_ms {
            None => defaults.timeout,
            Some(0) => return Err("limits.timeout-ms: must be at least 1".into()),
            Some(ms) if Duration::from_millis(ms) > max_timeout => {
                return Err(format!(
                    "limits.timeout-ms: {ms} is over the ceiling of {} ms for {world} plugins",
                    max_timeout.as_millis()
                ));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let memory_bytes = match raw.limits.memory_mib {
            None => defaults.memory_bytes,
            Some(0) => return Err("limits.memory-mib: must be at least 1".into()),
            Some(m) if m.saturating_mul(1 << 20) > MAX_MEMORY_BYTES => {
                return Err(format!(
                    "limits.memory-mib: {m} is over the ceiling of {} MiB",
                    MAX_MEMORY_BYTES >> 20
                ));
            }
            Some(m) => m << 20,
        };
        let capabilities = raw.capabilities.parse()?;
        if raw.cleanup_at_end && world != World::Connector {
            return Err("cleanup-at-end: only connectors revoke access".into());
        }
        Ok(Manifest {
            name: raw.name,
            version,
            world,
            api_version,
            description: raw.description,
            limits: Limits {
                timeout,
                memory_bytes,
            },
            capabilities,
            cleanup_at_end: raw.cleanup_at_end,
        })
    }

    /// A manifest for a component inspected without one (used by `plugin check`): the given world,
    /// default limits, and the named capabilities granted with empty allow-lists.
    pub fn for_inspection(name: &str, world: World, capabilities: &[&str]) -> Self {
        let mut caps = Capabilities::default();
        for c in capabilities {
            match *c {
                "http" => caps.http = Some(HttpGrant::default()),
                "aws" => caps.aws = Some(AwsGrant::default()),
                "azure" => caps.azure = Some(AzureGrant::default()),
                _ => {}
            }
        }
        Manifest {
            name: name.to_owned(),
            version: semver::Version::new(0, 0, 0),
            world,
            api_version: None,
            description: String::new(),
            limits: Limits::default_for(world),
            capabilities: caps,
            cleanup_at_end: false,
        }
    }
}

/// Is a plugin built against `v` usable by this host? Same major (and, for 0.x, same minor).
/// The versions [`api_compatible`] accepts, for messages: `0.1.x` (or `1.x` once 1.0 is out).
pub fn compatible_range() -> String {
    if API_VERSION.major == 0 {
        format!("0.{}.x", API_VERSION.minor)
    } else {
        format!("{}.x", API_VERSION.major)
    }
}

pub fn api_compatible(v: &semver::Version) -> bool {
    if API_VERSION.major == 0 {
        v.major == 0 && v.minor == API_VERSION.minor
    } else {
        v.major == API_VERSION.major
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns() {
        let p = OriginPattern::parse("https://api.example.com").expect("valid");
        assert!(p.matches(&url::Url::parse("https://api.example.com/x").expect("url")));
        assert!(p.matches(&url::Url::parse("https://API.example.com:443/").expect("url")));
        assert!(!p.matches(&url::Url::parse("http://api.example.com/").expect("url")));
        assert!(!p.matches(&url::Url::parse("https://api.example.com:8443/").expect("url")));
        assert!(!p.matches(&url::Url::parse("https://evil-api.example.com/").expect("url")));
        let w = OriginPattern::parse("https://*.example.com").expect("valid");
        assert!(w.matches(&url::Url::parse("https://a.b.example.com/").expect("url")));
        assert!(!w.matches(&url::Url::parse("https://example.com/").expect("url")));
        assert!(!w.matches(&url::Url::parse("https://badexample.com/").expect("url")));
        let any = OriginPattern::parse("http://127.0.0.1:*").expect("valid");
        assert!(any.matches(&url::Url::parse("http://127.0.0.1:9999/").expect("url")));
        assert!(!any.matches(&url::Url::parse("http://127.0.0.2:9999/").expect("url")));
        assert!(OriginPattern::parse("ftp://x").is_err());
        assert!(OriginPattern::parse("https://x/path").is_err());
        assert!(OriginPattern::parse("https://a*b.com").is_err());
        assert!(OriginPattern::parse("https://user@x").is_err());
        let v6 = OriginPattern::parse("http://[::1]:8080").expect("valid");
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", Some(8080)));
        assert!(OriginPattern::parse("https://[::1]junk").is_err());
        assert!(OriginPattern::parse("https://[::1").is_err());
    }

    #[test]
    fn merged_grants_hold_no_duplicates() {
        let origin = |s| OriginPattern::parse(s).expect("valid");
        let mut mine = Capabilities {
            http: Some(HttpGrant {
                allow: vec![origin("https://a.example"), origin("https://b.example")],
                secrets: BTreeSet::new(),
            }),
            ..Capabilities::default()
        };
        let extra = Capabilities {
            http: Some(HttpGrant {
                allow: vec![origin("https://c.example"), origin("https://a.example")],
                secrets: BTreeSet::new(),
            }),
            ..Capabilities::default()
        };
        mine.merge(&extra);
        let hosts: Vec<_> = mine
            .http
            .expect("http")
            .allow
            .into_iter()
            .map(|o| o.host)
            .collect();
        assert_eq!(hosts, ["a.example", "b.example", "c.example"]);
    }

    #[test]
    fn arn_globs() {
        assert!(arn_matches(
            "arn:aws:iam::123456789012:role/sallyport-*",
            "arn:aws:iam::123456789012:role/sallyport-admin"
        ));
        assert!(!arn_matches(
            "arn:aws:iam::123456789012:role/sallyport-*",
            "arn:aws:iam::123456789012:role/admin"
        ));
        assert!(arn_matches(
            "arn:aws:iam::*:role/x",
            "arn:aws:iam::1:role/x"
        ));
        assert!(!arn_matches(
            "arn:aws:iam::1:role/x",
            "arn:aws:iam::1:role/xy"
        ));
    }

    #[test]
    fn scopes() {
        let allowed = vec!["/subscriptions/abc/resourceGroups/rg1".to_owned()];
        assert!(scope_allowed(
            &allowed,
            "/subscriptions/abc/resourceGroups/rg1"
        ));
        assert!(scope_allowed(
            &allowed,
            "/subscriptions/ABC/resourcegroups/rg1/providers/x"
        ));
        assert!(!scope_allowed(
            &allowed,
            "/subscriptions/abc/resourceGroups/rg10"
        ));
        assert!(!scope_allowed(&allowed, "/subscriptions/abc"));
    }

    #[test]
    fn manifest_defaults_and_errors() {
        let m = Manifest::parse("name = \"quorum\"\nversion = \"0.1.0\"\nworld = \"approval\"\n")
            .expect("valid");
        assert_eq!(m.limits, Limits::default_for(World::Approval));
        assert!(m.capabilities.http.is_none());
        let e =
            Manifest::parse("name = \"q\"\nversion = \"0.1.0\"\nworld = \"approval\"\nextra = 1\n")
                .expect_err("unknown key");
        assert!(e.contains("extra"), "{e}");
        let e = Manifest::parse(
            "name = \"q\"\nversion = \"0.1.0\"\nworld = \"approval\"\n[limits]\ntimeout-ms = 999999\n",
        )
        .expect_err("over ceiling");
        assert!(e.contains("ceiling"), "{e}");
        let e = Manifest::parse(
            "name = \"q\"\nversion = \"0.1.0\"\nworld = \"approval\"\napi-version = \"0.2.0\"\n",
        )
        .expect_err("future api");
        assert!(e.contains("not supported"), "{e}");
        let e = Manifest::parse("name = \"Q!\"\nversion = \"0.1.0\"\nworld = \"approval\"\n")
            .expect_err("bad name");
        assert!(e.starts_with("name:"), "{e}");
        assert!(!m.cleanup_at_end, "off unless asked for");
        let c = Manifest::parse(
            "name = \"c\"\nversion = \"0.1.0\"\nworld = \"connector\"\ncleanup-at-end = true\n",
        )
        .expect("connector may ask");
        assert!(c.cleanup_at_end);
        let e = Manifest::parse(
            "name = \"q\"\nversion = \"0.1.0\"\nworld = \"approval\"\ncleanup-at-end = true\n",
        )
        .expect_err("approvals revoke nothing");
        assert!(e.starts_with("cleanup-at-end:"), "{e}");
    }
}
