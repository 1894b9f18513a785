//! `sallyport plugin check` and `sallyport plugin list`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{Output, exit};
use crate::plugin::{
    BUILTINS, HostConfig, LoadError, Manifest, PluginHost, ValidateFailure, World, manifest,
};
use crate::secret::SecretStore;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Check a plugin component: its world, API version, capabilities, and its verdict on settings.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Its manifest (`plugin.toml`). Without one, every capability the component imports is
        /// granted with empty allow-lists, just to run `validate`.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Settings to validate: JSON text, or `@FILE` to read them from a file.
        #[arg(long)]
        settings: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List the built-in plugins with their versions and hashes.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

pub async fn run(cmd: PluginCommand) -> u8 {
    match cmd {
        PluginCommand::Check {
            file,
            manifest,
            settings,
            output,
        } => check(file, manifest, settings, output).await,
        PluginCommand::List { output } => list(output),
    }
}

fn host() -> Result<PluginHost, String> {
    PluginHost::new(HostConfig {
        slots: 4,
        ..HostConfig::default()
    })
    .map_err(|e| e.to_string())
}

fn fail(output: Output, file: &std::path::Path, msg: &str) -> u8 {
    match output {
        Output::Text => eprintln!("error: {msg}"),
        Output::Json => println!(
            "{}",
            json!({"file": file.display().to_string(), "ok": false, "error": msg})
        ),
    }
    exit::FAILED
}

async fn check(
    file: PathBuf,
    manifest_path: Option<PathBuf>,
    settings: Option<String>,
    output: Output,
) -> u8 {
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => return fail(output, &file, &format!("{}: {e}", file.display())),
    };
    let manifest = match &manifest_path {
        None => None,
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| Manifest::parse(&t))
        {
            Ok(m) => Some(m),
            Err(e) => return fail(output, &file, &format!("{}: {e}", p.display())),
        },
    };
    let settings = match settings {
        None => None,
        Some(s) => {
            let text = match s.strip_prefix('@') {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) => return fail(output, &file, &format!("{path}: {e}")),
                },
                None => s,
            };
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                return fail(output, &file, &format!("--settings is not JSON: {e}"));
            }
            Some(text)
        }
    };
    let host = match host() {
        Ok(h) => h,
        Err(e) => return fail(output, &file, &e),
    };
    let display_name = manifest
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_else(|| {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().to_lowercase().replace('_', "-"))
                .unwrap_or_default();
            if manifest::valid_name(&stem) {
                stem
            } else {
                "plugin".into()
            }
        });
    let inspection = match host.inspect(&display_name, &bytes) {
        Ok(i) => i,
        Err(e) => return fail(output, &file, &e.to_string()),
    };
    let manifest = manifest.unwrap_or_else(|| {
        Manifest::for_inspection(&display_name, inspection.world, &inspection.capabilities)
    });
    let plugin = host.load(manifest, &bytes, &SecretStore::new());
    let (plugin, load_error) = match plugin {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e)),
    };
    let validation = match (&plugin, &settings) {
        (Some(p), Some(s)) => Some(p.validate(s).await),
        _ => None,
    };

    let ok = load_error.is_none() && validation.as_ref().is_none_or(|v| v.is_ok());
    let world_export = match inspection.world {
        World::Approval => "sallyport:plugin/policy",
        World::Connector => "sallyport:plugin/provisioner",
    };
    match output {
        Output::Json => {
            let validate = match &validation {
                None => json!(null),
                Some(Ok(())) => json!({"ok": true}),
                Some(Err(ValidateFailure::Invalid(errs))) => json!({
                    "ok": false,
                    "errors": errs.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>(),
                }),
                Some(Err(ValidateFailure::Plugin(e))) => {
                    json!({"ok": false, "plugin_error": {"code": e.code(), "message": e.to_string()}})
                }
            };
            let doc = json!({
                "file": file.display().to_string(),
                "ok": ok,
                "sha256": inspection.sha256,
                "world": inspection.world,
                "api_version": inspection.api_version.to_string(),
                "capabilities": inspection.capabilities,
                "imports": inspection.imports,
                "manifest": plugin.as_ref().map(|p| {
                    let m = p.manifest();
                    json!({
                        "name": m.name,
                        "version": m.version.to_string(),
                        "granted": m.capabilities.names(),
                        "timeout_ms": m.limits.timeout.as_millis() as u64,
                        "memory_mib": m.limits.memory_bytes >> 20,
                    })
                }),
                "load_error": load_error.as_ref().map(LoadError::to_string),
                "validate": validate,
            });
            println!("{doc:#}");
        }
        Output::Text => {
            println!("file:          {}", file.display());
            println!("sha256:        {}", inspection.sha256);
            println!(
                "world:         {} (exports {world_export}@{})",
                inspection.world, inspection.api_version
            );
            println!(
                "api version:   {} (this Sallyport implements {})",
                inspection.api_version,
                manifest::API_VERSION
            );
            let mut caps = vec!["log"];
            caps.extend(inspection.capabilities.iter());
            println!("capabilities:  {} (imported)", caps.join(", "));
            if let Some(p) = &plugin {
                let m = p.manifest();
                if manifest_path.is_some() {
                    println!("plugin:        {} {}", m.name, m.version);
                    println!("granted:       {}", m.capabilities.names().join(", "));
                }
                println!(
                    "limits:        {} ms, {} MiB per call",
                    m.limits.timeout.as_millis(),
                    m.limits.memory_bytes >> 20
                );
            }
            if let Some(e) = &load_error {
                println!("load:          REFUSED");
                eprintln!("error: {e}");
            }
            match &validation {
                None if load_error.is_none() => {
                    println!("validate:      not run (pass --settings JSON to check settings)")
                }
                None => {}
                Some(Ok(())) => println!("validate:      ok"),
                Some(Err(ValidateFailure::Invalid(errs))) => {
                    println!("validate:      {} problem(s)", errs.len());
                    for e in errs {
                        if e.path.is_empty() {
                            println!("  - {}", e.message);
                        } else {
                            println!("  - {}: {}", e.path, e.message);
                        }
                    }
                }
                Some(Err(ValidateFailure::Plugin(e))) => {
                    println!("validate:      FAILED");
                    eprintln!("error: {e}");
                }
            }
        }
    }
    if ok { exit::OK } else { exit::FAILED }
}

fn list(output: Output) -> u8 {
    use sha2::Digest;
    let mut rows = Vec::new();
    for b in BUILTINS {
        let m = match Manifest::parse(b.manifest) {
            Ok(m) => m,
            Err(e) => {
                eprintln!(
                    "error: built-in plugin `{}` has a bad manifest: {e}",
                    b.name
                );
                return exit::FAILED;
            }
        };
        rows.push((m, hex::encode(sha2::Sha256::digest(b.wasm)), b.wasm.len()));
    }
    match output {
        Output::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|(m, h, len)| {
                    json!({
                        "name": m.name,
                        "version": m.version.to_string(),
                        "world": m.world,
                        "description": m.description,
                        "sha256": h,
                        "size_bytes": len,
                    })
                })
                .collect();
            println!("{:#}", json!(v));
        }
        Output::Text => {
            println!(
                "{:<10} {:<8} {:<10} {:<64}  DESCRIPTION",
                "NAME", "VERSION", "WORLD", "SHA256"
            );
            for (m, h, _) in &rows {
                println!(
                    "{:<10} {:<8} {:<10} {h:<64}  {}",
                    m.name,
                    m.version.to_string(),
                    m.world.to_string(),
                    m.description
                );
            }
        }
    }
    exit::OK
}
