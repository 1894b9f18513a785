//! One integration-test binary; a module per suite.

mod plugin_abuse;
mod plugin_cli;
mod plugin_http;
mod plugin_quorum;
mod support;
