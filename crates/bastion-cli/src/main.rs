//! The `bastion` binary: a thin shell over the library crates.
//!
//! Commands: `demo`, `serve`, `check`, `tenants`, `users`, `audit verify`. Each returns an
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
    },
    /// Production entry point: refuses to start on an unsafe config.
    Serve {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate an app: manifest, schemas and Cedar policies. Exit 1 with findings.
    Check {
        /// Folder holding app.toml.
        app_dir: PathBuf,
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
            Command::Demo { data, listen, app } => demo::run(&data, &listen, app.as_deref()).await,
            Command::Serve { config } => runtime::serve(&config).await,
            Command::Check { app_dir } => commands::check(&app_dir),
            Command::Tenants { db, cmd } => commands::tenants(&db, cmd).await,
            Command::Users { db, cmd } => commands::users(&db, cmd).await,
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
