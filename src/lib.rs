//! # Sallyport
//!
//! A self-hosted just-in-time access server: nobody holds standing access; people request an
//! entitlement for a while with a reason, a policy decides who must approve, a connector grants
//! exactly that access for exactly that window and takes it away when the window ends, and every
//! step lands in a tamper-evident audit log.
//!
//! ## Bird's-eye view
//!
//! Approval policies and connectors are sandboxed WebAssembly components (the contract is
//! `wit/`, package `sallyport:plugin@0.1.0`). The server core never trusts a plugin: any failure
//! of a plugin is a denial or a failed grant, never access.
//!
//! ## Code map
//!
//! - [`plugin`]: the only user of wasmtime. Loads components, checks their imports against
//!   their manifest's grants, runs each call in a fresh sandbox with a deadline and a memory cap.
//!   `plugin/bindings.rs` is the only `bindgen!` site; `plugin/caps.rs` holds the host
//!   capabilities plugins may import (`log`, `http`, and `aws`/`azure`, which answer
//!   "capability not available" until their integrations are configured).
//! - [`secret`]: secret values that never print.
//! - [`cli`]: the command line (clap).
//! - `plugins/`: guest crates (built-in plugins and test-only abuse guests), compiled to
//!   `wasm32-wasip2` by `build.rs` and embedded in the binary.
//!
//! ## Architecture invariants
//!
//! - **Fail closed.** A plugin trap, timeout, memory exhaustion, full pool or malformed answer is a
//!   typed [`plugin::PluginError`]; callers can only turn it into a denial or a failed grant.
//! - **No ambient authority.** Plugins get no filesystem, environment, sockets or clock; a plugin
//!   importing a capability its manifest does not grant is refused at load.
//! - **Plugins read no clock.** Every time a plugin needs (`now`, `expires-at`) is passed in.
//! - **Secrets never print.** [`secret::Secret`] redacts itself; the `http` capability injects
//!   secret header values by name so plugins never see them.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod plugin;
pub mod policy;
pub mod secret;
pub mod service;
pub mod store;
