//! `switchboard`: the whole product in one binary.

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use switchboard_config::{LogFormat, Settings};
use switchboard_domain::phone::E164;
use switchboard_services::App;
use switchboard_services::tenancy::{self, BotKind, NewTenant, TwilioCredentials};

/// mimalloc instead of glibc's malloc: the webhook path allocates on many threads, where
/// glibc's arenas spent ~10% of the server threads' time (`perf`, bench `--only-ingest`).
/// Built without transparent huge pages (the workspace's `no_thp` feature), which kept ~18 MB
/// of its arena resident in an idle process.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Customer texting for small businesses on their own Twilio numbers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web app, API and webhooks (the default), with in-process workers.
    Serve {
        /// Only serve HTTP; run `switchboard worker` elsewhere.
        #[arg(long)]
        no_worker: bool,
    },
    /// Run only the job workers.
    Worker {
        /// Also serve `/health`, `/ready` and `/metrics` (this process's job and send series)
        /// on this address, e.g. `0.0.0.0:9091`, for a metrics scraper.
        #[arg(long)]
        metrics_bind: Option<std::net::SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Administration commands.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a tenant with one number; prints its id and an API key (shown once).
    CreateTenant {
        /// Business name customers see in compliance replies.
        #[arg(long)]
        name: String,
        /// The tenant's number, E.164 (e.g. +14155550100).
        #[arg(long)]
        phone: String,
        /// IANA time zone of the business.
        #[arg(long, default_value = "America/Chicago")]
        time_zone: String,
        /// The tenant's own Twilio account SID (AC…).
        #[arg(long, requires = "twilio_auth_token")]
        twilio_account_sid: Option<String>,
        /// The tenant's own Twilio auth token (stored encrypted).
        #[arg(long, requires = "twilio_account_sid")]
        twilio_auth_token: Option<String>,
        /// Do not answer texts with the built-in qualification bot.
        #[arg(long)]
        no_bot: bool,
    },
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.rust_log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight work");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    init_logging(&settings);
    match cli.command.unwrap_or(Command::Serve { no_worker: false }) {
        Command::Serve { no_worker } => {
            let bind = settings.bind;
            let app = App::start(settings).await?;
            tracing::info!(
                "Switchboard on http://{bind} (public URL {})",
                app.settings.public_url("")
            );
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("BIND: cannot listen on {bind}"))?;
            switchboard::serve(app, listener, !no_worker, shutdown_signal()).await
        }
        Command::Worker { metrics_bind } => {
            let app = App::start(settings).await?;
            let listener = match metrics_bind {
                Some(addr) => Some(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("--metrics-bind: cannot listen on {addr}"))?,
                ),
                None => None,
            };
            switchboard::work(app, listener, shutdown_signal()).await
        }
        Command::Migrate => {
            // Opening the database applies pending migrations.
            App::start(Settings {
                demo_seed: false,
                ..settings
            })
            .await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::CreateTenant {
                    name,
                    phone,
                    time_zone,
                    twilio_account_sid,
                    twilio_auth_token,
                    no_bot,
                },
        } => {
            let number = E164::parse(&phone).map_err(|e| anyhow::anyhow!("--phone: {e}"))?;
            let twilio = twilio_account_sid
                .zip(twilio_auth_token)
                .map(|(sid, token)| TwilioCredentials {
                    account_sid: sid,
                    auth_token: SecretString::from(token),
                });
            let app = App::start(Settings {
                demo_seed: false,
                ..settings
            })
            .await?;
            let created = tenancy::create_tenant(
                &app,
                NewTenant {
                    name,
                    time_zone,
                    number,
                    bot: if no_bot {
                        BotKind::None
                    } else {
                        BotKind::Qualify
                    },
                    twilio,
                },
            )
            .await
            .context("create-tenant")?;
            println!("tenant_id={}", created.tenant_id);
            println!("api_key={}", created.api_key.expose_secret());
            println!(
                "webhooks: {} (A message comes in)",
                app.settings.public_url("/webhooks/twilio/sms")
            );
            Ok(())
        }
    }
}
