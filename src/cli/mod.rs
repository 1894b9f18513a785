//! The command line. Every command that prints accepts `--output json`.

mod plugin_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Sallyport: just-in-time access for cloud IAM.
#[derive(Debug, Parser)]
#[command(name = "sallyport", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and check WebAssembly plugins.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// For programs.
    Json,
}

/// Exit codes shared by all commands.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The thing checked is invalid, or the operation failed.
    pub const FAILED: u8 = 1;
    /// Bad usage (clap uses 2 as well).
    pub const USAGE: u8 = 2;
}

/// Run the CLI with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Plugin(cmd) => plugin_cmd::run(cmd).await,
        }
    });
    ExitCode::from(code)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SALLYPORT_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
