//! Compiles every plugin crate in `plugins/` to `wasm32-wasip2` and embeds the built-ins.
//!
//! The guests build in their own cargo workspace and their own target dir (beside ours, never
//! inside the directory this build holds a lock on), so the nested cargo cannot deadlock.
//! Built-ins are the direct children of `plugins/` holding a `plugin.toml`; crates under
//! `plugins/testing/` are abuse guests whose paths the test suite gets from `test_guests.rs`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let plugins = root.join("plugins");
    println!("cargo:rerun-if-changed=plugins");
    println!("cargo:rerun-if-changed=plugins/.cargo/config.toml");
    println!("cargo:rerun-if-changed=wit");
    println!("cargo:rerun-if-env-changed=SALLYPORT_PLUGIN_TARGET_DIR");

    check_target_installed();

    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out: use <target>/... beside it.
    let target_dir = env::var_os("SALLYPORT_PLUGIN_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            out.ancestors()
                .nth(4)
                .map(|p| p.join("sallyport-plugins"))
                .unwrap_or_else(|| out.join("sallyport-plugins"))
        });

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // Run from plugins/ so that plugins/.cargo/config.toml (guest link flags) applies.
    cmd.current_dir(&plugins)
        .arg("build")
        .arg("--release")
        .arg("--workspace")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags meant for the host build must not leak into the guests' build.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PROFILE_RELEASE_LTO",
        "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        eprintln!("error: could not run `{cargo}` to build the plugins: {e}");
        exit(1)
    });
    if !status.success() {
        eprintln!(
            "error: building the plugins in {} for {TARGET} failed (see above)",
            plugins.display()
        );
        exit(1);
    }

    let packages = workspace_packages(&cargo, &plugins);
    let wasm_dir = target_dir.join(TARGET).join("release");
    let embed_dir = out.join("plugins");
    fs::create_dir_all(&embed_dir).expect("create OUT_DIR/plugins");

    let mut builtins = String::from("&[\n");
    let mut guests = String::new();
    for pkg in &packages {
        let wasm = wasm_dir.join(format!("{}.wasm", pkg.lib_name));
        if !wasm.exists() {
            eprintln!(
                "error: expected {} after building the plugins",
                wasm.display()
            );
            exit(1);
        }
        let rel = pkg.dir.strip_prefix(&plugins).unwrap_or(&pkg.dir);
        let is_test_guest = rel.starts_with("testing");
        let manifest = pkg.dir.join("plugin.toml");
        if is_test_guest {
            let konst = pkg.name.to_uppercase().replace('-', "_");
            writeln!(
                guests,
                "/// Path of the `{}` test guest.\npub const {konst}: &str = {:?};",
                pkg.name,
                wasm.display().to_string()
            )
            .expect("write");
        } else if manifest.exists() {
            let copy = embed_dir.join(format!("{}.wasm", pkg.name));
            fs::copy(&wasm, &copy).expect("copy plugin wasm");
            writeln!(
                builtins,
                "    Builtin {{ name: {:?}, manifest: include_str!({:?}), wasm: include_bytes!({:?}) }},",
                pkg.name,
                manifest.display().to_string(),
                copy.display().to_string()
            )
            .expect("write");
        }
    }
    builtins.push(']');
    fs::write(out.join("builtins.rs"), builtins).expect("write builtins.rs");
    fs::write(out.join("test_guests.rs"), guests).expect("write test_guests.rs");
}

fn check_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot
        .as_deref()
        .map(|s| s.join("lib").join("rustlib").join(TARGET).is_dir())
        .unwrap_or(false);
    if !installed {
        eprintln!(
            "\nerror: the Rust target `{TARGET}` is not installed.\n\
             Sallyport compiles its built-in plugins to WebAssembly components for it.\n\
             Install it with:\n\n    rustup target add {TARGET}\n\n\
             (or run `rustup toolchain install` in the repository: it reads rust-toolchain.toml)\n"
        );
        exit(1);
    }
}

struct Package {
    name: String,
    lib_name: String,
    dir: PathBuf,
}

/// The plugin workspace's packages and their cdylib names, from `cargo metadata`.
fn workspace_packages(cargo: &str, plugins: &Path) -> Vec<Package> {
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| {
            eprintln!("error: cargo metadata for the plugins: {e}");
            exit(1)
        });
    if !output.status.success() {
        eprintln!(
            "error: cargo metadata for the plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        exit(1);
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let mut out = Vec::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let manifest_path = PathBuf::from(p["manifest_path"].as_str().unwrap_or_default());
        let lib = p["targets"].as_array().into_iter().flatten().find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        });
        let Some(lib) = lib else { continue };
        let lib_name = lib["name"].as_str().unwrap_or_default().replace('-', "_");
        let dir = manifest_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        out.push(Package {
            name,
            lib_name,
            dir,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
