use clap::Parser;
use dgidgi::cli::{AdminTask, Cli, Command};
use dgidgi::config::Config;
use dgidgi::startup::{create_operator_key, Application};
use dgidgi::store::Store;
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr must not turn a log line into a panic.
        .log_internal_errors(false)
        .init();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dgidgi: {e}");
            std::process::exit(2);
        }
    };
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Admin {
            task: AdminTask::CreateKey { operator, name },
        } => {
            if !operator {
                eprintln!("dgidgi: only --operator keys are made here; tenant keys come from POST /api/v1/api-keys");
                std::process::exit(2);
            }
            create_key(config, &name).await
        }
    };
    if let Err(e) = outcome {
        eprintln!("dgidgi: {e:#}");
        std::process::exit(1);
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    if let Some(key) = &app.bootstrap_key {
        println!("The database had no operator key, so one was created. It is shown this once:");
        println!("{key}");
    }
    app.run_until_stopped().await?;
    tracing::info!("dgidgi stopped");
    Ok(())
}

async fn create_key(config: Config, name: &str) -> anyhow::Result<()> {
    let store = Store::connect(&config.database).await?;
    store.migrate().await?;
    let key = create_operator_key(&store, name).await?;
    store.close().await;
    println!("{key}");
    Ok(())
}
