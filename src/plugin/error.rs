//! Plugin errors. A `PluginError` can only ever become a denial or a failed grant: no code path
//! turns one into access.

use std::time::Duration;

/// Why a plugin could not be loaded. Raised at start-up, on reload and by `plugin check`.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is invalid.
    #[error("plugin manifest: {0}")]
    Manifest(String),
    /// The bytes are not a usable WebAssembly component.
    #[error("plugin `{plugin}`: not a valid WebAssembly component: {reason}")]
    InvalidComponent {
        /// Plugin name.
        plugin: String,
        /// What the compiler said.
        reason: String,
    },
    /// The component targets a contract version this host does not implement.
    #[error(
        "plugin `{plugin}` was built against `{found}`, but this Sallyport implements sallyport:plugin@{supported} (compatible: {}); rebuild it against the `wit/` of this release",
        super::manifest::compatible_range()
    )]
    UnsupportedApi {
        /// Plugin name.
        plugin: String,
        /// The import or export naming the unsupported version.
        found: String,
        /// The version this host implements.
        supported: semver::Version,
    },
    /// The component exports neither world's interface.
    #[error(
        "plugin `{plugin}` exports neither `sallyport:plugin/policy` (approval world) nor `sallyport:plugin/provisioner` (connector world)"
    )]
    NoWorld {
        /// Plugin name.
        plugin: String,
    },
    /// The manifest and the component disagree about the world.
    #[error(
        "plugin `{plugin}`: the manifest says world `{manifest}`, but the component implements `{component}`"
    )]
    WorldMismatch {
        /// Plugin name.
        plugin: String,
        /// World in the manifest.
        manifest: super::World,
        /// World the component exports.
        component: super::World,
    },
    /// The component imports a capability its manifest does not grant.
    #[error(
        "plugin `{plugin}` imports `{import}`, but its manifest grants no `{capability}` capability; add a [capabilities.{capability}] table to grant it"
    )]
    NotGranted {
        /// Plugin name.
        plugin: String,
        /// The import.
        import: String,
        /// The capability it needs.
        capability: &'static str,
    },
    /// The component imports something plugins never get.
    #[error("plugin `{plugin}` imports `{import}`, which Sallyport never gives plugins: {why}")]
    Forbidden {
        /// Plugin name.
        plugin: String,
        /// The import.
        import: String,
        /// Why not, and what to use instead.
        why: &'static str,
    },
    /// Linking failed for another reason (a type mismatch in an import or export).
    #[error("plugin `{plugin}` does not match the sallyport:plugin contract: {reason}")]
    Link {
        /// Plugin name.
        plugin: String,
        /// Details.
        reason: String,
    },
    /// A plugin of that name is already loaded.
    #[error("plugin `{0}` is loaded twice; plugin names must be unique")]
    Duplicate(String),
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Why a plugin call produced no usable answer. Callers turn it into deny / failed, never access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The call ran past its deadline.
    #[error("plugin `{plugin}` timed out after {} ms", limit.as_millis())]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// The deadline it had.
        limit: Duration,
    },
    /// The plugin tried to grow its memory past its cap.
    #[error("plugin `{plugin}` exceeded its memory limit of {} MiB", limit_bytes >> 20)]
    OutOfMemory {
        /// Plugin name.
        plugin: String,
        /// The cap.
        limit_bytes: u64,
    },
    /// The plugin trapped (a panic, an `unreachable`, an out-of-bounds access, `exit`).
    #[error("plugin `{plugin}` crashed: {message}")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// The panic message or trap description.
        message: String,
    },
    /// Every sandbox slot stayed busy for longer than the queue wait.
    #[error("plugin `{plugin}` could not run: all {slots} sandbox slots are busy")]
    Busy {
        /// Plugin name.
        plugin: String,
        /// The pool's size.
        slots: u32,
    },
    /// The plugin answered something that breaks the contract.
    #[error("plugin `{plugin}` gave a malformed answer: {reason}")]
    Malformed {
        /// Plugin name.
        plugin: String,
        /// What was wrong.
        reason: String,
    },
    /// The plugin itself reported an error (`err` from `evaluate`).
    #[error("plugin `{plugin}` reported an error: {message}")]
    Reported {
        /// Plugin name.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// The call was made to a plugin of the wrong world.
    #[error("plugin `{plugin}` is a {actual} plugin, not a {expected} plugin")]
    WrongWorld {
        /// Plugin name.
        plugin: String,
        /// What the caller needed.
        expected: super::World,
        /// What the plugin is.
        actual: super::World,
    },
    /// Anything else the sandbox reported (instantiation failed, a host error).
    #[error("plugin `{plugin}` failed: {message}")]
    Internal {
        /// Plugin name.
        plugin: String,
        /// Details.
        message: String,
    },
}

impl PluginError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PluginError::Timeout { .. } => "plugin_timeout",
            PluginError::OutOfMemory { .. } => "plugin_out_of_memory",
            PluginError::Trap { .. } => "plugin_trap",
            PluginError::Busy { .. } => "plugin_busy",
            PluginError::Malformed { .. } => "plugin_malformed_answer",
            PluginError::Reported { .. } => "plugin_reported_error",
            PluginError::WrongWorld { .. } => "plugin_wrong_world",
            PluginError::Internal { .. } => "plugin_internal",
        }
    }

    /// Could retrying later succeed? (Busy and timeouts may be load; a trap will trap again.)
    pub fn is_transient(&self) -> bool {
        matches!(self, PluginError::Busy { .. } | PluginError::Timeout { .. })
    }
}
