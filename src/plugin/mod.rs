//! The plugin platform: the only user of wasmtime.
//!
//! Approval policies and connectors are WebAssembly components implementing the
//! `sallyport:plugin@0.1.0` contract in `wit/`. This module loads them ([`PluginHost::load`]),
//! checks what they import against what their [`Manifest`] grants (refusing the rest at load), and
//! runs every call in a fresh, deadline- and memory-capped sandbox.
//!
//! Invariants:
//! - One `Engine` per host (pooling allocator, epoch interruption); components are compiled once
//!   and cached by the SHA-256 of their bytes; an `InstancePre` per plugin is built at load.
//! - A fresh `Store` per call, with the manifest's deadline and memory cap; no WASI filesystem,
//!   environment, sockets or clock.
//! - Every failure is a typed [`PluginError`]; a decision or a grant only comes from a well-formed
//!   answer of a call that finished in time.

mod bindings;
mod builtin;
mod caps;
mod error;
mod host;
pub mod manifest;

use std::fmt;

pub use bindings::http::ResponseHeader;
pub use bindings::policy::{EvaluationContext, Requirement as RawRequirement};
pub use bindings::provisioner::{
    CredentialSet, CredentialsRequest, GenericCredentials, GrantRequest, RevokeReason,
    RevokeRequest,
};
pub use bindings::types::{
    AccessRequest, ActionRequest, AwsCredentials, Channel, KeyValue, Principal, Review,
    SettingError, Subject, Verdict,
};
pub use builtin::{BUILTINS, Builtin};
pub use error::{LoadError, PluginError};
pub use host::{HostConfig, Inspection, Plugin, PluginHost, Services};
pub use manifest::{Capabilities, Limits, Manifest};

/// Paths of the test-only abuse guests (`plugins/testing/*`), for the test suite.
#[doc(hidden)]
pub mod test_guests {
    include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
}

/// The two kinds of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// Exports `sallyport:plugin/policy`: decides approvals.
    Approval,
    /// Exports `sallyport:plugin/provisioner`: grants and revokes access.
    Connector,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Approval => "approval",
            World::Connector => "connector",
        })
    }
}

/// Which plugin (and exactly which build of it) produced an answer. Recorded with every decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginIdentity {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// Hex SHA-256 of the component's bytes.
    pub sha256: String,
}

/// A well-formed approval decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Decision {
    /// Approved.
    Approve {
        /// Why.
        reason: String,
        /// The approval relies on the requester approving their own request.
        break_glass: bool,
    },
    /// Denied.
    Deny {
        /// Why.
        reason: String,
    },
    /// Waiting for these requirements (all of them, satisfied or not).
    Pending {
        /// The requirements.
        requirements: Vec<Requirement>,
    },
}

/// One group of people whose approval is needed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Requirement {
    /// Stage name.
    pub name: String,
    /// Users who may satisfy it.
    pub users: Vec<String>,
    /// Groups whose members may satisfy it.
    pub groups: Vec<String>,
    /// Approvals needed.
    pub needed: u32,
    /// Who counted so far.
    pub approved_by: Vec<String>,
}

impl Requirement {
    /// Is it met?
    pub fn satisfied(&self) -> bool {
        self.approved_by.len() >= self.needed as usize
    }

    /// May this principal satisfy it?
    pub fn admits(&self, id: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == id) || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// A decision and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The decision.
    pub decision: Decision,
    /// The plugin that made it.
    pub plugin: PluginIdentity,
}

/// What a connector put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Opaque JSON handle, passed back to revoke and credentials.
    pub handle: serde_json::Value,
    /// One line for people.
    pub summary: String,
    /// The plugin that did it.
    pub plugin: PluginIdentity,
}

/// A connector's own account of a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Not supported by this connector.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Unusable settings.
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    /// The target refused.
    #[error("denied by the target: {0}")]
    Denied(String),
    /// Temporary: may succeed later.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl ConnectorError {
    /// May a retry succeed?
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient(_))
    }
}

/// Why a connector call did not succeed: the sandbox failed, or the connector said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorFailure {
    /// The sandbox failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The connector reported an error.
    #[error("connector `{plugin}`: {error}")]
    Connector {
        /// Plugin name.
        plugin: String,
        /// Its error.
        error: ConnectorError,
    },
}

impl ConnectorFailure {
    /// May a retry succeed?
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectorFailure::Plugin(p) => p.is_transient(),
            ConnectorFailure::Connector { error, .. } => error.is_transient(),
        }
    }
}

/// Why `validate` did not accept settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidateFailure {
    /// The plugin rejected the settings.
    #[error("{}", format_setting_errors(.0))]
    Invalid(Vec<SettingError>),
    /// The sandbox failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// `path: message; path: message`.
pub fn format_setting_errors(errors: &[SettingError]) -> String {
    errors
        .iter()
        .map(|e| {
            if e.path.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.path, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Redacted credentials: `Debug` never shows the secret parts.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials(pub CredentialSet);

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            CredentialSet::Aws(c) => f
                .debug_struct("AwsCredentials")
                .field("access_key_id", &c.access_key_id)
                .field("expiration", &c.expiration)
                .finish_non_exhaustive(),
            CredentialSet::Generic(g) => f
                .debug_struct("GenericCredentials")
                .field(
                    "keys",
                    &g.values.iter().map(|kv| &kv.key).collect::<Vec<_>>(),
                )
                .field("expiration", &g.expiration)
                .finish_non_exhaustive(),
        }
    }
}
