//! The `bastion` binary: a thin shell over the library crates.
//!
//! Commands: `demo`, `serve`, `check`, `migrate`, `tenants`, `users`, `audit verify`,
//! `killswitch`. Each returns an
//! `anyhow::Result`; the exit code is 0 on success, 1 on findings or refusal, 2 on usage
//! errors (clap).

mod commands;
mod demo;
mod runtime;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Bastion: a secure-by-construction backend for AI-built business apps.
#[derive(Debug, Parser)]
#[command(name = "bastion", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the vendor-quote example with two seeded tenants (dev profile, plain HTTP on
    /// loopback). Writes DIR/demo-credentials.json.
    Demo {
        /// Data directory (created if absent).
        #[arg(long, default_value = "./bastion-data")]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// App directory (default: examples/vendor-quote, or the copy built into the binary).
        #[arg(long)]
        app: Option<PathBuf>,
        /// Use PostgreSQL instead of DIR/bastion.db: the URL of a role that may create the
        /// schema and roles (e.g. `postgres://postgres@127.0.0.1/test`). The demo migrates as
        /// that role, creates the login role --app-role if missing, and serves as it.
        #[arg(long)]
        database_url: Option<String>,
        /// The application role the demo connects as on PostgreSQL.
        #[arg(long, default_value = "bastion_app")]
        app_role: String,
        /// An OpenAI-compatible chat-completions API root for `/v1/agent/chat` (e.g. a local
        /// llama.cpp or Ollama at `http://127.0.0.1:11434/v1`). Without it the demo's agent
        /// is the offline provider, labelled as such in every reply.
        #[arg(long)]
        model_url: Option<String>,
        /// The model name for --model-url.
        #[arg(long, default_value = "default")]
        model: String,
        /// File holding the API key for --model-url (read from the file only; optional for
        /// a local server). Also `BASTION_MODEL_KEY_FILE`.
        #[arg(long, env = "BASTION_MODEL_KEY_FILE")]
        model_key_file: Option<PathBuf>,
        /// Where --model-url processes data (the demo tenants are `eu`). Default: `local`
        /// for a loopback URL; required otherwise.
        #[arg(long)]
        model_region: Option<String>,
    },
    /// Production entry point: refuses to start on an unsafe config.
    Serve {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate an app (manifest, schemas, Cedar policies) and/or a PostgreSQL database's
    /// tenant isolation. Exit 1 with findings.
    Check {
        /// Folder holding app.toml.
        app_dir: Option<PathBuf>,
        /// PostgreSQL URL of the application role: run the isolation self-check.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Apply the PostgreSQL schema as the owner role and grant the application role.
    Migrate {
        /// URL of the owner (migrator) role.
        #[arg(long)]
        database_url: String,
        /// The application role to grant row privileges to (it must already exist).
        #[arg(long)]
        app_role: String,
    },
    /// Manage tenants.
    Tenants {
        #[command(flatten)]
        db: commands::DbArgs,
        #[command(subcommand)]
        cmd: commands::TenantsCmd,
    },
    /// Manage users.
    Users {
        #[command(flatten)]
        db: commands::DbArgs,
        #[command(subcommand)]
        cmd: commands::UsersCmd,
    },
    /// A test-mode payment service provider (Stripe-compatible subset) on loopback, for the
    /// demo and tests. Never part of `bastion serve`.
    PspSandbox {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:8420")]
        listen: String,
        /// File holding the API key clients must present (`sk_test_…`).
        #[arg(long)]
        api_key_file: PathBuf,
        /// Where to deliver signed webhooks (e.g. http://127.0.0.1:8080/v1/webhooks/stripe).
        #[arg(long)]
        webhook_url: Option<String>,
        /// File holding the webhook signing secret (`whsec_…`).
        #[arg(long)]
        webhook_secret_file: Option<PathBuf>,
    },
    /// Background jobs: the dead-letter queue.
    Jobs {
        #[command(flatten)]
        db: commands::DbArgs,
        #[command(subcommand)]
        cmd: commands::JobsCmd,
    },
    /// Kill switches: stop tool calls globally, per tool, per tenant, or per tool of a tenant.
    Killswitch {
        #[command(flatten)]
        db: commands::DbArgs,
        #[command(subcommand)]
        cmd: commands::KillSwitchCmd,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        cmd: commands::AuditCmd,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    runtime::init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Demo {
                data,
                listen,
                app,
                database_url,
                app_role,
                model_url,
                model,
                model_key_file,
                model_region,
            } => {
                let pg = database_url.map(|url| demo::Postgres { url, app_role });
                let agent = demo::agent_section(model_url, model, model_key_file, model_region)?;
                demo::run(&data, &listen, app.as_deref(), pg, agent).await
            }
            Command::Serve { config } => runtime::serve(&config).await,
            Command::Check {
                app_dir,
                database_url,
            } => commands::check(app_dir.as_deref(), database_url.as_deref()).await,
            Command::Migrate {
                database_url,
                app_role,
            } => commands::migrate(&database_url, &app_role).await,
            Command::Tenants { db, cmd } => commands::tenants(&db, cmd).await,
            Command::Users { db, cmd } => commands::users(&db, cmd).await,
            Command::Jobs { db, cmd } => commands::jobs(&db, cmd).await,
            Command::PspSandbox {
                listen,
                api_key_file,
                webhook_url,
                webhook_secret_file,
            } => {
                commands::psp_sandbox(
                    &listen,
                    &api_key_file,
                    webhook_url.as_deref(),
                    webhook_secret_file.as_deref(),
                )
                .await
            }
            Command::Killswitch { db, cmd } => commands::killswitch(&db, cmd).await,
            Command::Audit { cmd } => commands::audit(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
