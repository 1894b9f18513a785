//! One integration-test binary; a module per suite.

mod actions;
mod aws;
mod azure;
mod azure_fake;
mod browser_harness;
mod crash;
mod harness;
mod lifecycle;
mod mail_harness;
mod notify;
mod plugin_abuse;
mod plugin_cli;
mod plugin_http;
mod plugin_quorum;
mod server_cli;
mod store;
mod support;
mod web;
