use clap::Parser;
use dgidgi::cli::{AdminTask, Cli, Command};
use dgidgi::config::Config;
use dgidgi::startup::{create_operator_key, Application};
use dgidgi::store::Store;

#[actix_web::main]
async fn main() {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if !matches!(command, Command::Serve | Command::Admin { .. }) {
        // A client of a running server: no configuration, no server logs.
        std::process::exit(dgidgi::client::run(command).await);
    }
    dgidgi::telemetry::init_logging(cli.log_format);
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dgidgi: {e}");
            std::process::exit(2);
        }
    };
    let outcome = match command {
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
        _ => unreachable!("client commands returned above"),
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
