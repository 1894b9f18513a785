//! Shared test helpers.

#![allow(dead_code, reason = "each suite uses a different subset")]

use sallyport::plugin::{
    AccessRequest, Capabilities, Channel, EvaluationContext, HostConfig, LoadError, Manifest,
    Plugin, PluginHost, Principal, Review, Subject, Verdict,
};
use sallyport::secret::SecretStore;

/// A host with a few slots.
pub fn host() -> PluginHost {
    host_with(HostConfig {
        slots: 8,
        ..HostConfig::default()
    })
}

pub fn host_with(cfg: HostConfig) -> PluginHost {
    PluginHost::new(cfg).expect("plugin host")
}

/// Load a built-in with extra capability grants and secrets.
pub fn builtin(
    host: &PluginHost,
    name: &str,
    extra_caps: Option<&str>,
    secrets: &SecretStore,
) -> Plugin {
    let b = sallyport::plugin::Builtin::get(name).expect("builtin exists");
    let mut m = Manifest::parse(b.manifest).expect("builtin manifest");
    if let Some(toml_text) = extra_caps {
        let raw: sallyport::plugin::manifest::RawCapabilities =
            toml::from_str(toml_text).expect("caps toml");
        let caps: Capabilities = raw.parse().expect("caps");
        m.capabilities.merge(&caps);
    }
    host.load(m, b.wasm, secrets).expect("load builtin")
}

/// Load a test guest with a manifest given as TOML text.
pub fn guest(host: &PluginHost, path: &str, manifest: &str) -> Result<Plugin, LoadError> {
    let bytes = std::fs::read(path).expect("guest wasm built by build.rs");
    let m = Manifest::parse(manifest).expect("test manifest");
    host.load(m, &bytes, &SecretStore::new())
}

pub fn approval_manifest(name: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"approval\"\n{extra}")
}

pub fn connector_manifest(name: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nversion = \"0.1.0\"\nworld = \"connector\"\n{extra}")
}

pub fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.into(),
        email: Some(format!("{id}@example.com")),
        display_name: None,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// 2026-11-23T10:00:00Z, a Monday.
pub const MONDAY_10_UTC: i64 = 1_795_428_000_000;

pub fn access_request(
    requester: Principal,
    duration_seconds: u64,
    justification: &str,
) -> AccessRequest {
    AccessRequest {
        id: "req-1".into(),
        entitlement: "aws/prod/admin".into(),
        requester,
        duration_seconds,
        justification: justification.into(),
        ticket: None,
        created_at: MONDAY_10_UTC,
    }
}

pub fn review(reviewer: Principal, approve: bool) -> Review {
    Review {
        reviewer,
        verdict: if approve {
            Verdict::Approve
        } else {
            Verdict::Deny
        },
        comment: None,
        at: MONDAY_10_UTC,
        channel: Channel::Web,
    }
}

pub fn eval_ctx(
    req: AccessRequest,
    settings: &str,
    reviews: Vec<Review>,
    now: i64,
) -> EvaluationContext {
    EvaluationContext {
        subject: Subject::Access(req),
        settings: settings.into(),
        reviews,
        now,
    }
}
