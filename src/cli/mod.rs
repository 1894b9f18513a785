//! The command line: the server (`serve`, `dev`), its administration (`config check`,
//! `audit verify|export`, `token create`), plugin tools, and the client commands that talk to a
//! server through its JSON API. Every command that prints accepts `--output json`.

mod access;
mod action_cmd;
mod aws_cmd;
mod client;
mod dev;
mod plugin_cmd;
mod server_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use access::Conn;

/// Sallyport: just-in-time access for cloud IAM.
#[derive(Debug, Parser)]
#[command(name = "sallyport", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a zero-config dev server: SQLite, demo users, sample entitlements, a demo target.
    Dev {
        /// Where the database, the generated policy and the demo token live.
        #[arg(long, default_value = ".sallyport-dev")]
        data_dir: PathBuf,
        /// Address to listen on (`127.0.0.1:0` picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run the server with a policy file.
    Serve {
        /// The policy file (TOML).
        #[arg(long, short, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
        /// Also mount the dev login and the demo target (never in production).
        #[arg(long)]
        dev: bool,
    },
    /// Check a policy file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Verify or export the audit chain (reads the database directly).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Issue API tokens directly in the database (automation, bootstrap).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect and check WebAssembly plugins.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// Sign in to a server and store a token (0600) for the other commands.
    Login {
        /// Sign in as this demo user of a dev server (no browser).
        #[arg(long)]
        dev_user: Option<String>,
        /// Do not open a browser: print the sign-in URL to open yourself.
        #[arg(long)]
        no_browser: bool,
        /// Give up waiting for the browser after this long.
        #[arg(long, default_value = "5m")]
        timeout: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke the stored token and forget it.
    Logout {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Who the stored token signs in as.
    Whoami {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List entitlements and whether you may request them.
    Entitlements {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Request an entitlement. Exit code with --wait: 0 active, 3 denied, 4 timed out, 5 failed.
    Request {
        #[command(flatten)]
        args: access::RequestArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Wait for a request to become active (or be refused). Exit codes as for `request --wait`.
    Wait {
        /// The request id.
        id: String,
        /// Give up after this long.
        #[arg(long, default_value = "1h")]
        timeout: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List requests.
    Requests {
        /// `mine`, `review` (waiting for you) or `all` (admins and auditors see everyone's).
        #[arg(long, default_value = "mine")]
        scope: String,
        /// Only these states, comma-separated (e.g. `pending,active`).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one request: reviews, grant, revocation.
    Show {
        /// The request id.
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Approve a request you are eligible to review.
    Approve {
        /// The request id.
        id: String,
        /// A comment for the record.
        #[arg(long)]
        comment: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Deny a request you are eligible to review.
    Deny {
        /// The request id.
        id: String,
        /// Why (shown to the requester).
        #[arg(long)]
        reason: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Withdraw your pending request.
    Cancel {
        /// The request id.
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke approved or active access (admins and the request's approvers).
    Revoke {
        /// The request id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print AWS `credential_process` JSON for your active grant (cached, 0600, refreshed
    /// before expiry). With --request --reason it requests access first when there is none.
    Creds {
        /// The entitlement, e.g. `aws/prod/admin`.
        entitlement: String,
        #[command(flatten)]
        ask: aws_cmd::RequestOpts,
    },
    /// Run a command with the `AWS_*` variables of your active grant.
    Exec {
        /// The entitlement.
        entitlement: String,
        #[command(flatten)]
        ask: aws_cmd::RequestOpts,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print `export AWS_...` lines for a shell: `eval "$(sallyport env ENT)"`.
    Env {
        /// The entitlement.
        entitlement: String,
        #[command(flatten)]
        ask: aws_cmd::RequestOpts,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print (or with --write, merge into ~/.aws/config) profiles that use `credential_process`.
    AwsConfig {
        /// The entitlements.
        entitlements: Vec<String>,
        /// A region for the profiles.
        #[arg(long)]
        region: Option<String>,
        /// Merge into `$AWS_CONFIG_FILE` (default ~/.aws/config), replacing these profiles only.
        #[arg(long)]
        write: bool,
    },
    /// Ask approval for one action (a deployment, a migration) and use its attestation.
    #[command(subcommand)]
    Action(action_cmd::ActionCommand),
    /// Manage the keys that sign action attestations.
    #[command(subcommand)]
    Attestation(AttestationCommand),
    /// End your active grant now.
    Done {
        /// The request id.
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum AttestationCommand {
    /// Write a new Ed25519 signing key (PKCS#8 PEM, 0600; never overwrites). List it first in
    /// `[attestation] signing_keys` to sign with it; keys removed from the list stay published
    /// until the tokens they signed expire.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check everything, including each plugin's `validate`; non-zero exit on any problem.
    Check {
        /// The policy file.
        file: PathBuf,
        /// Do not read secrets (environment variables, files) that are not available here.
        #[arg(long)]
        skip_secrets: bool,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain; exit 1 naming the first bad event.
    Verify {
        /// The server's policy file (for its database).
        #[arg(long, short, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print events as JSON lines.
    Export {
        /// The server's policy file (for its database).
        #[arg(long, short, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
        /// Only `jsonl` for now.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Events at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Events before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token for a user of the configuration's [[users]]; prints it once.
    Create {
        /// The server's policy file (for its database and users).
        #[arg(long, short, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
        /// The user.
        #[arg(long)]
        user: String,
        /// A label.
        #[arg(long, default_value = "automation")]
        name: String,
        /// Lifetime.
        #[arg(long, default_value = "30d")]
        ttl: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
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
    /// Success (with `--wait`: access is active).
    pub const OK: u8 = 0;
    /// The operation failed, or what was checked is invalid.
    pub const FAILED: u8 = 1;
    /// Bad usage (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// Refused: denied, cancelled, revoked, or not allowed.
    pub const REFUSED: u8 = 3;
    /// No decision in time.
    pub const TIMED_OUT: u8 = 4;
    /// Approved, but the connector failed to grant access.
    pub const PROVISION_FAILED: u8 = 5;
}

/// Run the CLI with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(
        cli.command,
        Command::Dev { .. } | Command::Serve { .. }
    ));
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
    let code = rt.block_on(run(cli));
    ExitCode::from(code)
}

async fn run(cli: Cli) -> u8 {
    let conn = cli.conn;
    match cli.command {
        Command::Dev { data_dir, listen } => match dev::run(data_dir, listen).await {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                exit::FAILED
            }
        },
        Command::Serve { config, dev } => server_cmd::serve(config, dev).await,
        Command::Config(ConfigCommand::Check {
            file,
            skip_secrets,
            output,
        }) => server_cmd::check(file, skip_secrets, output).await,
        Command::Audit(AuditCommand::Verify { config, output }) => {
            server_cmd::audit_verify(config, output).await
        }
        Command::Audit(AuditCommand::Export {
            config,
            format,
            since,
            until,
        }) => {
            if format != "jsonl" {
                eprintln!("error: --format: only `jsonl` is supported");
                return exit::USAGE;
            }
            server_cmd::audit_export(config, since, until).await
        }
        Command::Token(TokenCommand::Create {
            config,
            user,
            name,
            ttl,
            output,
        }) => server_cmd::token_create(config, user, name, ttl, output).await,
        Command::Plugin(cmd) => plugin_cmd::run(cmd).await,
        Command::Login {
            dev_user,
            no_browser,
            timeout,
            output,
        } => match dev_user {
            Some(u) => access::login(&conn, u, output).await,
            None => access::browser_login(&conn, no_browser, &timeout, output).await,
        },
        Command::Logout { output } => access::logout(&conn, output).await,
        Command::Whoami { output } => access::whoami(&conn, output).await,
        Command::Entitlements { output } => access::entitlements(&conn, output).await,
        Command::Request { args, output } => access::request(&conn, args, output).await,
        Command::Wait {
            id,
            timeout,
            output,
        } => access::wait(&conn, &id, &timeout, output).await,
        Command::Requests {
            scope,
            state,
            limit,
            output,
        } => access::requests(&conn, &scope, state.as_deref(), limit, output).await,
        Command::Show { id, output } => access::show(&conn, &id, output).await,
        Command::Approve {
            id,
            comment,
            output,
        } => {
            access::act(
                &conn,
                &id,
                "reviews",
                json!({ "verdict": "approve", "comment": comment }),
                output,
            )
            .await
        }
        Command::Deny { id, reason, output } => {
            access::act(
                &conn,
                &id,
                "reviews",
                json!({ "verdict": "deny", "comment": reason }),
                output,
            )
            .await
        }
        Command::Cancel { id, output } => {
            access::act(&conn, &id, "cancel", json!({}), output).await
        }
        Command::Revoke { id, reason, output } => {
            access::act(&conn, &id, "revoke", json!({ "reason": reason }), output).await
        }
        Command::Action(cmd) => action_cmd::run(&conn, cmd).await,
        Command::Attestation(AttestationCommand::Keygen { out }) => {
            match crate::attest::write_new_key(&out) {
                Ok(kid) => {
                    println!("{}", out.display());
                    eprintln!("wrote a new Ed25519 signing key, kid {kid}");
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::FAILED
                }
            }
        }
        Command::Done { id, output } => access::act(&conn, &id, "end", json!({}), output).await,
        Command::Creds { entitlement, ask } => aws_cmd::creds(&conn, &entitlement, &ask).await,
        Command::Exec {
            entitlement,
            ask,
            command,
        } => aws_cmd::exec(&conn, &entitlement, &ask, &command).await,
        Command::Env {
            entitlement,
            ask,
            output,
        } => aws_cmd::env(&conn, &entitlement, &ask, output).await,
        Command::AwsConfig {
            entitlements,
            region,
            write,
        } => aws_cmd::aws_config(&conn, &entitlements, region.as_deref(), write),
    }
}

fn init_tracing(server: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if server { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("SALLYPORT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
