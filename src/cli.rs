//! The command line: `dgidgi [serve]` and `dgidgi admin create-key --operator`.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "dgidgi", version, about = "The DgiDgi One API server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default): applies migrations, then listens on server.host:server.port.
    Serve,
    /// Administrative tasks run against the configured database.
    Admin {
        #[command(subcommand)]
        task: AdminTask,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTask {
    /// Create an API key and print it, alone, on the last line of stdout.
    CreateKey {
        /// A platform-operator key (the only kind this command makes; tenants get theirs
        /// from the API).
        #[arg(long)]
        operator: bool,
        /// A name to tell the key apart in listings.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}
