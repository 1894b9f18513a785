//! `sallyport plugin check` and `sallyport plugin list`, run as a user would.

use std::process::{Command, Output};

use sallyport::plugin::test_guests as g;

fn sallyport(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(args)
        .output()
        .expect("run sallyport")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Write a built-in to a temp file, as a platform team would have it on disk.
fn builtin_file(dir: &tempfile::TempDir, name: &str) -> (String, String) {
    let b = sallyport::plugin::Builtin::get(name).expect("builtin");
    let wasm = dir.path().join(format!("{name}.wasm"));
    let manifest = dir.path().join("plugin.toml");
    std::fs::write(&wasm, b.wasm).expect("write wasm");
    std::fs::write(&manifest, b.manifest).expect("write manifest");
    (wasm.display().to_string(), manifest.display().to_string())
}

#[test]
fn check_a_good_plugin_with_good_settings() {
    let dir = tempfile::tempdir().expect("tmp");
    let (wasm, manifest) = builtin_file(&dir, "quorum");
    let o = sallyport(&[
        "plugin",
        "check",
        &wasm,
        "--manifest",
        &manifest,
        "--settings",
        r#"{"stages":[{"users":["bob","carol"],"count":2}]}"#,
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("world:         approval"), "{out}");
    assert!(out.contains("api version:   0.1.0"), "{out}");
    assert!(out.contains("capabilities:  log"), "{out}");
    assert!(out.contains("plugin:        quorum 0.1.0"), "{out}");
    assert!(out.contains("validate:      ok"), "{out}");
}

#[test]
fn check_reports_bad_settings_with_paths_and_fails() {
    let dir = tempfile::tempdir().expect("tmp");
    let (wasm, _) = builtin_file(&dir, "quorum");
    let settings = dir.path().join("s.json");
    std::fs::write(&settings, r#"{"stages":[{"users":["bob"],"count":3}]}"#).expect("write");
    let o = sallyport(&[
        "plugin",
        "check",
        &wasm,
        "--settings",
        &format!("@{}", settings.display()),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains("stages[0].count"), "{out}");
}

#[test]
fn check_json_output_lists_capabilities() {
    let dir = tempfile::tempdir().expect("tmp");
    let (wasm, manifest) = builtin_file(&dir, "http");
    let o = sallyport(&[
        "plugin",
        "check",
        &wasm,
        "--manifest",
        &manifest,
        "--output",
        "json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(v["world"], "connector");
    assert_eq!(v["api_version"], "0.1.0");
    assert_eq!(v["capabilities"], serde_json::json!(["http"]));
    assert_eq!(v["manifest"]["granted"], serde_json::json!(["log", "http"]));
    assert_eq!(v["sha256"].as_str().map(str::len), Some(64));
}

#[test]
fn check_refuses_bad_files_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    // Not wasm at all.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "hello").expect("write");
    let o = sallyport(&["plugin", "check", &junk.display().to_string()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("not a WebAssembly file"), "{out}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A core module rather than a component.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let (_, err) = text(&sallyport(&[
        "plugin",
        "check",
        &core.display().to_string(),
    ]));
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );
    // Missing file.
    let o = sallyport(&["plugin", "check", "/nonexistent/x.wasm"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("No such file"), "{err}");
    // Settings that are not JSON.
    let (wasm, _) = builtin_file(&dir, "quorum");
    let o = sallyport(&["plugin", "check", &wasm, "--settings", "{nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("not JSON"));
    // A bad manifest names its problem.
    let m = dir.path().join("bad.toml");
    std::fs::write(&m, "name = \"q\"\nversion = \"1\"\nworld = \"approval\"\n").expect("write");
    let o = sallyport(&[
        "plugin",
        "check",
        &wasm,
        "--manifest",
        &m.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("version"), "{}", text(&o).1);
}

#[test]
fn check_refuses_forbidden_and_future_guests() {
    let o = sallyport(&["plugin", "check", g::ABUSE_FUTURE_API]);
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(err.contains("@0.2.0") && err.contains("0.1.x"), "{err}");
    let o = sallyport(&["plugin", "check", g::ABUSE_FS_READER]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("never gives plugins"), "{}", text(&o).1);
}

#[test]
fn check_refuses_ungranted_capability() {
    let dir = tempfile::tempdir().expect("tmp");
    let m = dir.path().join("plugin.toml");
    std::fs::write(
        &m,
        "name = \"sneaky\"\nversion = \"0.1.0\"\nworld = \"connector\"\n[capabilities.http]\nallow = []\n",
    )
    .expect("write");
    let o = sallyport(&[
        "plugin",
        "check",
        g::ABUSE_SNEAKY,
        "--manifest",
        &m.display().to_string(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains("load:          REFUSED"), "{out}");
    assert!(err.contains("grants no `aws` capability"), "{err}");
}

#[test]
fn list_shows_builtins_with_hashes() {
    let o = sallyport(&["plugin", "list", "--output", "json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let names: Vec<_> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        names.contains(&"quorum".to_owned()) && names.contains(&"http".to_owned()),
        "{names:?}"
    );
    for p in v.as_array().expect("array") {
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64));
        assert!(p["version"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let o = sallyport(&["plugin", "list"]);
    let (out, _) = text(&o);
    assert!(
        out.lines().next().is_some_and(|l| l.starts_with("NAME")),
        "{out}"
    );
}
