//! The one place host bindings are generated from `wit/`.
//!
//! `connector` is generated first and owns the shared interfaces (`types`, `log`, `http`);
//! `approval` reuses them, so one set of Rust types serves both worlds. Host capabilities that
//! do I/O (`http`, `aws`, `azure`) are async; `log` is sync.

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    reason = "generated code"
)]

/// Bindings for the `connector` world.
pub mod connector {
    wasmtime::component::bindgen!({
        world: "connector",
        path: "wit",
        imports: {
            "sallyport:plugin/http": async,
            "sallyport:plugin/aws": async,
            "sallyport:plugin/azure": async,
        },
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

/// Bindings for the `approval` world.
pub mod approval {
    wasmtime::component::bindgen!({
        world: "approval",
        path: "wit",
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
        with: {
            "sallyport:plugin/types": super::connector::sallyport::plugin::types,
            "sallyport:plugin/log": super::connector::sallyport::plugin::log,
            "sallyport:plugin/http": super::connector::sallyport::plugin::http,
        },
    });
}

pub use approval::exports::sallyport::plugin::policy;
pub use connector::exports::sallyport::plugin::provisioner;
pub use connector::sallyport::plugin::{aws, azure, http, log, types};
