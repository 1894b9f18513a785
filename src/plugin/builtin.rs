//! Built-in plugins, compiled from `plugins/` by `build.rs` and embedded in the binary.

/// A plugin shipped inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Crate name (also the manifest name).
    pub name: &'static str,
    /// Its `plugin.toml`.
    pub manifest: &'static str,
    /// Its component bytes.
    pub wasm: &'static [u8],
}

/// Every built-in plugin, sorted by name.
pub static BUILTINS: &[Builtin] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

impl Builtin {
    /// Find one by name.
    pub fn get(name: &str) -> Option<&'static Builtin> {
        BUILTINS.iter().find(|b| b.name == name)
    }
}
