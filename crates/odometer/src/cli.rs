//! The command line as typed: subcommands and flags, before they are merged with the config
//! file and the environment into a [`crate::config::Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Odometer: a usage-metering engine. With no configuration it keeps its data in
/// ./odometer-data and listens on 127.0.0.1:8080.
#[derive(Debug, Parser)]
#[command(name = "odometer", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every subcommand accepts. Precedence: flag, then `ODOMETER_*` variable, then the
/// config file, then the default.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// TOML config file [default: ./odometer.toml when it exists]
    #[arg(long, global = true, env = "ODOMETER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store [default: ./odometer-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log filter, such as `info` or `odometer=debug` [default: info]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (creates the first organization and prints its key on first start)
    Serve(ServeArgs),
    /// Create the first organization of a new data directory and print its API key once
    Init(InitArgs),
    /// Create, list and revoke API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List, show, create and update billable metrics
    #[command(subcommand)]
    Metrics(MetricsCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Name of the organization
    #[arg(long, default_value = "default")]
    pub name: String,
}

/// Which organization a command acts for.
#[derive(Debug, Args, Clone)]
pub struct OrgArg {
    /// Organization id (`org_...`); may be left out when the data directory has only one
    #[arg(long, value_name = "ORG_ID")]
    pub org: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it once
    Create {
        #[command(flatten)]
        org: OrgArg,
        /// A name to recognise the key by
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List the organization's keys (never their secrets)
    List {
        #[command(flatten)]
        org: OrgArg,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (`key_...`)
    Revoke {
        #[command(flatten)]
        org: OrgArg,
        key_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// List metrics
    List {
        #[command(flatten)]
        org: OrgArg,
        /// Case-insensitive substring of the code or name
        #[arg(long)]
        search: Option<String>,
        /// Which metrics: `false` (live), `true` (archived only) or `all`
        #[arg(long, default_value = "false")]
        archived: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show one metric (by id or code) as JSON
    Get {
        #[command(flatten)]
        org: OrgArg,
        id_or_code: String,
    },
    /// Create a metric from a JSON definition (a file, or standard input with `-` or no file)
    Create {
        #[command(flatten)]
        org: OrgArg,
        file: Option<PathBuf>,
    },
    /// Update a metric with a JSON merge patch (a file, or standard input)
    Update {
        #[command(flatten)]
        org: OrgArg,
        id_or_code: String,
        file: Option<PathBuf>,
    },
}
