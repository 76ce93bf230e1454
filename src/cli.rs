//! The command line: the server (`dgidgi [serve]`, `dgidgi admin create-key --operator`)
//! and a client of a running server (`projects`, `agents`, `runs`, `chat`), which reads
//! `DGIDGI_API_URL` and `DGIDGI_API_KEY`.

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "dgidgi",
    version,
    about = "The DgiDgi One API server and its command-line client"
)]
pub struct Cli {
    /// How the server logs: `pretty` for people, `json` (one object per line) for machines.
    /// A server flag: give it before the command (`dgidgi --log-format json serve`).
    #[arg(long, value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
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
    /// Projects of the key's tenant.
    Projects {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        action: ProjectAction,
    },
    /// Agents, and running them.
    Agents {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Runs of an agent.
    Runs {
        #[command(flatten)]
        out: Output,
        #[command(subcommand)]
        action: RunAction,
    },
    /// Chat in a session: type a message, watch the reply stream (end with Ctrl-D). Names
    /// a session, or creates one in --project (its id is printed first).
    Chat {
        /// The session id (`ses_...`); leave it out to create a session in --project.
        #[arg(required_unless_present = "project")]
        session: Option<String>,
        /// Create a new session in this project.
        #[arg(long, conflicts_with = "session")]
        project: Option<String>,
        /// The new session's title.
        #[arg(long, requires = "project")]
        title: Option<String>,
        /// The new session's instructions to the model.
        #[arg(long, requires = "project")]
        system_prompt: Option<String>,
    },
}

/// How client commands print.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Output {
    /// Print the API's `data` as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
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

#[derive(Debug, Subcommand)]
pub enum ProjectAction {
    /// List the tenant's projects, newest first.
    List,
    /// Create a project and print it.
    Create {
        /// The project's name.
        name: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        language: Option<String>,
    },
    /// Show one project.
    Get {
        /// The project id (`proj_...`).
        id: String,
    },
    /// Delete a project.
    Delete {
        /// The project id (`proj_...`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// List the tenant's agents, newest first.
    List,
    /// Create an agent and print it.
    Create {
        /// The agent's name.
        name: String,
        /// Its instructions to the model.
        #[arg(long)]
        system_prompt: Option<String>,
        /// The configured provider it uses (the server's default when left out).
        #[arg(long)]
        provider: Option<String>,
        /// The model it asks for (the provider's default when left out).
        #[arg(long)]
        model: Option<String>,
        /// Built-in tools, comma-separated (write_file,read_file,list_files).
        #[arg(long, value_delimiter = ',')]
        tools: Vec<String>,
        /// low, medium or high.
        #[arg(long)]
        autonomy: Option<String>,
    },
    /// Run an agent on a goal and wait for its end (or follow it with --stream).
    Execute {
        /// The agent id (`agt_...`).
        agent: String,
        /// What the agent should do.
        goal: String,
        /// The project it works in.
        #[arg(long)]
        project: String,
        /// Print tokens and tool calls as they happen.
        #[arg(long)]
        stream: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunAction {
    /// Show one run: status, steps, output, usage, error, artifacts.
    Get {
        /// The run id (`run_...`).
        run: String,
        /// The agent the run belongs to.
        #[arg(long)]
        agent: String,
    },
    /// Cancel a run (a queued one never starts; a running one stops at once).
    Cancel {
        /// The run id (`run_...`).
        run: String,
        /// The agent the run belongs to.
        #[arg(long)]
        agent: String,
    },
    /// Approve tool calls a run waits on (`requires_action`); it resumes once every
    /// pending call is answered.
    Approve {
        /// The run id (`run_...`).
        run: String,
        /// The agent the run belongs to.
        #[arg(long)]
        agent: String,
        /// A pending tool call's id (repeat for several); `runs get` lists them.
        #[arg(long = "call", required = true)]
        calls: Vec<String>,
        /// Run the call with these arguments (a JSON object) instead of the model's.
        #[arg(long)]
        arguments: Option<String>,
    },
    /// Deny tool calls a run waits on: the model gets the denial (and reason) as the
    /// tool's result.
    Deny {
        /// The run id (`run_...`).
        run: String,
        /// The agent the run belongs to.
        #[arg(long)]
        agent: String,
        /// A pending tool call's id (repeat for several).
        #[arg(long = "call", required = true)]
        calls: Vec<String>,
        /// Why, for the model.
        #[arg(long)]
        reason: Option<String>,
    },
}
