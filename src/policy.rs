//! The live policy: a checked [`Config`] with its plugins loaded and every entitlement's settings
//! accepted by its plugins' `validate`. Built at start-up and on reload (SIGHUP); a reload that
//! fails keeps the previous policy.

use std::collections::BTreeMap;
use std::path::Path;

use std::sync::Arc;

use crate::attest::Attestor;
use crate::cloud::aws::AwsCloud;
use crate::cloud::azure::AzureCloud;
use crate::config::{Config, EntitlementConfig, Problem, Problems};
use crate::domain::Principal;
use crate::plugin::{
    BUILTINS, Manifest, Plugin, PluginHost, Services, ValidateFailure, World, format_setting_errors,
};

/// What a principal may do beyond requesting and reviewing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// May revoke and cancel anything, and read the whole audit log.
    pub admin: bool,
    /// May read the whole audit log.
    pub auditor: bool,
}

/// The configuration with its plugins loaded.
#[derive(Debug)]
pub struct Policy {
    /// The configuration.
    pub config: Config,
    plugins: BTreeMap<String, Plugin>,
    attestor: Option<Arc<Attestor>>,
}

impl Policy {
    /// Load the built-in and directory plugins, then check every entitlement against them.
    pub async fn build(config: Config, host: &PluginHost) -> Result<Policy, Problems> {
        let mut problems = Vec::new();
        let mut plugins = BTreeMap::new();
        let aws = match &config.aws {
            None => None,
            Some(a) => match AwsCloud::new(a, &config.secrets).await {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    problems.push(Problem {
                        path: "aws".into(),
                        message: e,
                    });
                    None
                }
            },
        };
        let azure = match &config.azure {
            None => None,
            Some(a) => match AzureCloud::new(a, &config.secrets) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    problems.push(Problem {
                        path: "azure".into(),
                        message: e,
                    });
                    None
                }
            },
        };
        let services = Services {
            secrets: config.secrets.clone(),
            aws,
            azure,
        };
        let mut load = |manifest_text: &str, bytes: &[u8], origin: &str| {
            let mut m = match Manifest::parse(manifest_text) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(Problem {
                        path: origin.to_owned(),
                        message: e,
                    });
                    return;
                }
            };
            if plugins.contains_key(&m.name) {
                problems.push(Problem {
                    path: origin.to_owned(),
                    message: format!(
                        "a plugin named `{}` is already loaded (built-in names are reserved)",
                        m.name
                    ),
                });
                return;
            }
            if let Some(extra) = config.plugin_capabilities.get(&m.name) {
                m.capabilities.merge(extra);
            }
            match host.load_with(m, bytes, &services) {
                Ok(p) => {
                    plugins.insert(p.identity().name.clone(), p);
                }
                Err(e) => problems.push(Problem {
                    path: origin.to_owned(),
                    message: e.to_string(),
                }),
            }
        };
        for b in BUILTINS {
            load(b.manifest, b.wasm, &format!("built-in plugin `{}`", b.name));
        }
        if let Some(dir) = &config.plugin_dir {
            match read_plugin_dir(dir) {
                Ok(found) => {
                    for (path, manifest, bytes) in found {
                        load(&manifest, &bytes, &path);
                    }
                }
                Err(p) => problems.push(p),
            }
        }
        for name in config.plugin_capabilities.keys() {
            if !plugins.contains_key(name) {
                problems.push(Problem {
                    path: format!("plugins.capabilities.{name}"),
                    message: format!("no plugin named `{name}` is loaded"),
                });
            }
        }
        let mut uses = Vec::new();
        for (i, e) in config.entitlements.iter().enumerate() {
            let path = format!("entitlements[{i}] ({})", e.rules.id);
            uses.push((path.clone(), "connector", &e.connector, World::Connector));
            uses.push((path, "approval", &e.approval, World::Approval));
        }
        for (i, a) in config.actions.iter().enumerate() {
            let path = format!("actions[{i}] ({})", a.rules.id);
            uses.push((path, "approval", &a.approval, World::Approval));
        }
        {
            for (path, what, use_, world) in uses {
                let Some(plugin) = plugins.get(&use_.plugin) else {
                    let known: Vec<&str> = plugins
                        .values()
                        .filter(|p| p.world() == world)
                        .map(|p| p.identity().name.as_str())
                        .collect();
                    problems.push(Problem {
                        path: format!("{path}.{what}.plugin"),
                        message: format!(
                            "no {world} plugin named `{}`; loaded: {}",
                            use_.plugin,
                            known.join(", ")
                        ),
                    });
                    continue;
                };
                if plugin.world() != world {
                    problems.push(Problem {
                        path: format!("{path}.{what}.plugin"),
                        message: format!(
                            "`{}` is a {} plugin; a {what} needs a {world} plugin",
                            use_.plugin,
                            plugin.world()
                        ),
                    });
                    continue;
                }
                match plugin.validate(&use_.settings).await {
                    Ok(()) => {}
                    Err(ValidateFailure::Invalid(errs)) => {
                        for err in errs {
                            problems.push(Problem {
                                path: if err.path.is_empty() {
                                    format!("{path}.{what}.settings")
                                } else {
                                    format!("{path}.{what}.settings.{}", err.path)
                                },
                                message: err.message,
                            });
                        }
                    }
                    Err(ValidateFailure::Plugin(pe)) => problems.push(Problem {
                        path: format!("{path}.{what}.settings"),
                        message: format!("could not be checked: {pe}"),
                    }),
                }
                if let Some(grant) = &plugin.manifest().capabilities.aws {
                    aws_reach(
                        &format!("{path}.{what}"),
                        &use_.plugin,
                        &use_.settings,
                        &grant.arns,
                        config.aws.is_some(),
                        &mut problems,
                    );
                }
            }
        }
        let attestor = if config.attestation.signing_keys.is_empty() {
            if !config.actions.is_empty() {
                problems.push(Problem {
                    path: "attestation.signing_keys".into(),
                    message: "action kinds are configured, so approvals need a key to sign their attestations: `sallyport attestation keygen --out FILE`, then list FILE here".into(),
                });
            }
            None
        } else {
            match Attestor::load(&config.attestation.signing_keys) {
                Ok(a) => {
                    for k in a.keys() {
                        if config
                            .attestation
                            .withdrawn_keys
                            .iter()
                            .any(|w| w == k.kid())
                        {
                            problems.push(Problem {
                                path: "attestation.withdrawn_keys".into(),
                                message: format!(
                                    "key {} is withdrawn but still listed in signing_keys",
                                    k.kid()
                                ),
                            });
                        }
                    }
                    Some(Arc::new(a))
                }
                Err(p) => {
                    problems.push(p);
                    None
                }
            }
        };
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        Ok(Policy {
            config,
            plugins,
            attestor,
        })
    }

    /// An entitlement.
    pub fn entitlement(&self, id: &str) -> Option<&EntitlementConfig> {
        self.config.entitlement(id)
    }

    /// The attestation signer, when keys are configured.
    pub fn attestor(&self) -> Option<&Arc<Attestor>> {
        self.attestor.as_ref()
    }

    /// An action kind.
    pub fn action(&self, name: &str) -> Option<&crate::config::ActionKindConfig> {
        self.config.action(name)
    }

    /// A loaded plugin.
    pub fn plugin(&self, name: &str) -> Option<&Plugin> {
        self.plugins.get(name)
    }

    /// Every loaded plugin.
    pub fn plugins(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins.values()
    }

    /// A principal's roles.
    pub fn roles(&self, p: &Principal) -> Roles {
        let a = &self.config.auth;
        let has = |users: &[String], groups: &[String]| {
            users.contains(&p.id) || groups.iter().any(|g| p.groups.contains(g))
        };
        let admin = has(&a.admin_users, &a.admin_groups);
        Roles {
            admin,
            auditor: admin || has(&a.auditor_users, &a.auditor_groups),
        }
    }

    /// A principal from the static directory.
    pub fn directory_principal(&self, id: &str) -> Option<Principal> {
        self.config.user(id).map(|u| Principal {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            groups: u.groups.clone(),
        })
    }
}

/// `NAME.wasm` with its manifest `NAME.toml` beside it, for every `.wasm` in `dir`.
fn read_plugin_dir(dir: &Path) -> Result<Vec<(String, String, Vec<u8>)>, Problem> {
    let err = |message: String| Problem {
        path: "plugins.dir".into(),
        message,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| err(format!("cannot read {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    paths.sort();
    for wasm in paths {
        let shown = wasm.display().to_string();
        let manifest_path = wasm.with_extension("toml");
        let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| Problem {
            path: shown.clone(),
            message: format!(
                "its manifest {} cannot be read: {e}; every plugin needs NAME.toml beside NAME.wasm",
                manifest_path.display()
            ),
        })?;
        let bytes = std::fs::read(&wasm).map_err(|e| Problem {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        out.push((shown, manifest, bytes));
    }
    Ok(out)
}

/// Plugin setting errors as one line (for messages).
pub fn setting_errors_text(f: &ValidateFailure) -> String {
    match f {
        ValidateFailure::Invalid(e) => format_setting_errors(e),
        ValidateFailure::Plugin(p) => p.to_string(),
    }
}

/// Catch at `config check` what would otherwise fail every grant of an AWS connector: no `[aws]`
/// section, or an ARN in the settings (a top-level string or list of strings) that the plugin's
/// capability does not reach.
fn aws_reach(
    path: &str,
    plugin: &str,
    settings: &str,
    arns: &[String],
    configured: bool,
    problems: &mut Vec<Problem>,
) {
    if !configured {
        problems.push(Problem {
            path: format!("{path}.plugin"),
            message: format!(
                "`{plugin}` calls AWS, but there is no [aws] section: add one (region, and credentials unless the standard chain has them), or every grant fails"
            ),
        });
    }
    let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(settings)
    else {
        return;
    };
    for (k, v) in &o {
        let values: Vec<&str> = match v {
            serde_json::Value::String(x) => vec![x.as_str()],
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
            _ => continue,
        };
        // A templated ARN (`{{requester.id}}`) is known only at grant time, when the host checks it.
        for arn in values
            .into_iter()
            .filter(|x| x.starts_with("arn:") && !x.contains("{{"))
        {
            if !arns
                .iter()
                .any(|p| crate::plugin::manifest::arn_matches(p, arn))
            {
                problems.push(Problem {
                    path: format!("{path}.settings.{k}"),
                    message: format!(
                        "`{arn}` is not among the ARNs `{plugin}` may touch; add a pattern for it to [plugins.capabilities.{plugin}.aws] arns, or every grant fails"
                    ),
                });
            }
        }
    }
}
