//! The `bastion` binary: a thin shell over the library crates.
//!
//! Commands: `demo`, `serve`, `check`, `migrate`, `tenants`, `users`, `audit verify`,
//! `killswitch`, `psp-sandbox`, `jobs`, `reconcile`, `webhooks rotate-secret`, `tabletop`. Each
//! returns an
//! `anyhow::Result`; the exit code is 0 on success, 1 on findings or refusal, 2 on usage
//! errors (clap).

mod commands;
mod demo;
mod payments;
mod runtime;
mod tabletop;

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
        /// Charge through this Stripe-compatible PSP instead of the demo's own sandbox
        /// (e.g. a `bastion psp-sandbox` started separately); needs --psp-api-key-file.
        #[arg(long)]
        psp_url: Option<String>,
        /// File holding the API key of --psp-url.
        #[arg(long)]
        psp_api_key_file: Option<PathBuf>,
        /// How long a payment call holds its idempotency key before a retry resumes it
        /// (seconds; default 60). Lower only to test crash recovery.
        #[arg(long)]
        payment_lease_secs: Option<i64>,
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
        /// Test knob: answer PaymentIntent creations this many milliseconds late (after
        /// recording them), to exercise crash recovery.
        #[arg(long, default_value_t = 0)]
        create_delay_ms: u64,
        /// A Bastion config: the sandbox refuses to start when its profile is not `dev`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Reconcile one UTC day: the ledger against the PSP's balance transactions (and its
    /// daily report with `[payments.psp] daily_report = true`). Prints the report; every
    /// drift item is alerted and audited. Exit 0 on a clean day, 1 on drift.
    Reconcile {
        /// The config of the instance (`[database]`, `[payments.psp]`).
        #[arg(long)]
        config: PathBuf,
        /// The day, `YYYY-MM-DD` (UTC).
        #[arg(long)]
        date: String,
        /// Narrow the report to one tenant (slug); PSP money no tenant claims stays listed.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Webhook signing secrets.
    Webhooks {
        #[command(subcommand)]
        cmd: WebhooksCmd,
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
    /// The tabletop exercise: live attacks on the vendor-quote rollout, one report. Without
    /// --url it starts its own demo instance (fresh data dir). Exit 1 if any scenario fails.
    Tabletop {
        /// Drive this running instance through its public HTTP interface instead.
        #[arg(long)]
        url: Option<String>,
        /// Demo credentials of the --url instance (default: DIR/demo-credentials.json).
        #[arg(long)]
        credentials: Option<PathBuf>,
        /// Data dir: of the --url instance (audit evidence, webhook secret), or where the
        /// self-started one keeps its data (default: a fresh temporary dir).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Self-started on PostgreSQL: URL of a role that may create schemas and roles. With
        /// --url: the instance's database as its application role (audit evidence).
        #[arg(long)]
        database_url: Option<String>,
        /// App dir the self-started instance serves (default: examples/vendor-quote).
        #[arg(long)]
        app: Option<PathBuf>,
        /// Write the report to FILE.md and FILE.json instead of printing it.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Run only the scenarios whose id contains this text.
        #[arg(long)]
        only: Option<String>,
    },
}

/// `bastion webhooks ...`
#[derive(Debug, Subcommand)]
enum WebhooksCmd {
    /// Rotate a provider's signing secret: writes a new secret to a new 0600 file and prints
    /// the `secret_files` list to configure (old and new both accepted) and, once, the new
    /// secret to register at the PSP. `--retire OLD_FILE` prints the list without OLD_FILE.
    RotateSecret {
        /// The config holding `[[payments.webhooks]]`.
        #[arg(long)]
        config: PathBuf,
        /// The provider (`[[payments.webhooks]] provider`).
        #[arg(long)]
        provider: String,
        /// Retire this secret file instead of adding a new one.
        #[arg(long)]
        retire: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The tabletop's output is its report; the instance it starts logs warnings only.
    let level = if matches!(cli.command, Command::Tabletop { .. }) {
        "warn"
    } else {
        "info"
    };
    runtime::init_tracing(level);
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
                psp_url,
                psp_api_key_file,
                payment_lease_secs,
                model_url,
                model,
                model_key_file,
                model_region,
            } => {
                let pg = database_url.map(|url| demo::Postgres { url, app_role });
                let psp = demo::PaymentOptions {
                    psp_url,
                    psp_api_key_file,
                    lease_secs: payment_lease_secs,
                };
                let agent = demo::agent_section(model_url, model, model_key_file, model_region)?;
                demo::run(&data, &listen, app.as_deref(), pg, psp, agent).await
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
                config,
                create_delay_ms,
            } => {
                payments::refuse_sandbox_outside_dev(config.as_deref())?;
                commands::psp_sandbox(
                    &listen,
                    &api_key_file,
                    webhook_url.as_deref(),
                    webhook_secret_file.as_deref(),
                    create_delay_ms,
                )
                .await
            }
            Command::Killswitch { db, cmd } => commands::killswitch(&db, cmd).await,
            Command::Audit { cmd } => commands::audit(cmd).await,
            Command::Tabletop {
                url,
                credentials,
                data,
                database_url,
                app,
                report,
                only,
            } => {
                tabletop::run(tabletop::Options {
                    url,
                    credentials,
                    data,
                    database_url,
                    app,
                    report,
                    only,
                })
                .await
            }
            Command::Reconcile {
                config,
                date,
                tenant,
                json,
            } => payments::reconcile_cmd(&config, &date, tenant.as_deref(), json).await,
            Command::Webhooks {
                cmd:
                    WebhooksCmd::RotateSecret {
                        config,
                        provider,
                        retire,
                    },
            } => payments::rotate_secret(&config, &provider, retire.as_deref()).await,
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
