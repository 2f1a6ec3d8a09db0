//! The command line as typed: subcommands and flags, before they are merged with the config
//! file and the environment into a [`crate::config::Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Create and list organizations (each with its own metrics, customers, events and keys)
    #[command(subcommand, alias = "orgs")]
    Organizations(OrganizationsCommand),
    /// Create, list and revoke API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List, show, create and update billable metrics
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Send events to a running server (`events import FILE`)
    #[command(subcommand)]
    Events(EventsCommand),
    /// Ask a running server how much customers used of a metric in a period
    Usage(UsageArgs),
    /// Run the standard benchmark (spec/performance.md) against a fresh embedded instance
    Bench(crate::bench::BenchArgs),
    /// Overload a fresh `odometer serve` with concurrent ingest and queries for minutes, and
    /// check it sheds with 429, never answers 5xx, loses nothing and keeps its memory bounded
    Soak(crate::soak::SoakArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Server mode: the PostgreSQL catalog every replica shares (also `catalog` in the config
    /// file, ODOMETER_CATALOG) [default: the embedded SQLite catalog in the data directory]
    #[arg(long, value_name = "postgres://...")]
    pub catalog: Option<String>,
    /// Server mode: the ClickHouse event store every replica shares; needs a PostgreSQL
    /// catalog, which keeps its exactly-once ledger (also `events`, ODOMETER_EVENTS)
    /// [default: the embedded DuckDB store in the data directory]
    #[arg(long, value_name = "clickhouse://...")]
    pub events: Option<String>,
    /// Serve Prometheus metrics (`GET /metrics`, no API key) on this address, apart from the
    /// API (also `metrics_listen`, ODOMETER_METRICS_LISTEN) [default: no metrics endpoint]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Name of the organization
    #[arg(long, default_value = "default")]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum OrganizationsCommand {
    /// Create another organization and print its first API key once
    Create {
        /// Name of the organization
        #[arg(long)]
        name: String,
    },
    /// List the data directory's organizations
    List,
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

/// Where the running server is and the key to call it with, for the commands that talk HTTP
/// (they never open the data directory: the server holds its lock).
#[derive(Debug, Args, Clone)]
pub struct RemoteArgs {
    /// Base URL of a running `odometer serve`
    #[arg(long, env = "ODOMETER_URL", default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub url: String,
    /// API key of the organization to act for (required; `odometer keys create` makes one)
    #[arg(long, env = "ODOMETER_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Import events from an NDJSON or CSV file into a running server, in batches
    #[command(after_help = IMPORT_AFTER_HELP)]
    Import(ImportArgs),
}

const IMPORT_AFTER_HELP: &str = "\
Formats:
  ndjson  one event object per line: {\"transaction_id\", \"code\", \"customer\", \"timestamp\", \"properties\"}
  csv     a header row naming transaction_id, code, customer and optionally timestamp; every
          other non-empty cell becomes a property with its text as value, and a `properties`
          column holding a JSON object is merged over those

Each event is answered accepted, duplicate (already stored: importing the same file twice is
safe) or rejected with a code; a line that is not JSON or not a valid CSV row is rejected
without stopping the import. A batch is retried when the server cannot be reached or answers
5xx or 429.

Exit status:
  0  every event was accepted or a duplicate
  1  some events were rejected (the others were sent; see the summary or --rejects)
  2  usage error (bad flags, missing API key, unreadable file, CSV header without the event columns)
  3  the import stopped before the end (the error names the first line not sent), or could
     not start (server unreachable, API key refused)";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// NDJSON or CSV file of events; `-` reads standard input (then --format is required)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Input format [default: from the extension: .ndjson, .jsonl, .json or .csv]
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Events per request, 1 to 10000
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Send each batch all-or-nothing (`atomic=true`): a batch with a rejected event stores none
    #[arg(long)]
    pub atomic_batches: bool,
    /// Write every rejected event to FILE, one JSON object a line: {"line", "transaction_id", "error"}
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// One JSON event per line
    Ndjson,
    /// A header row, then one event per row
    Csv,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The metric's id or code
    #[arg(long, value_name = "ID_OR_CODE")]
    pub metric: String,
    /// A customer's external id; without it, every customer (the invoice run)
    #[arg(long, value_name = "EXTERNAL_ID")]
    pub customer: Option<String>,
    /// Start of the period, inclusive (RFC 3339 or Unix seconds)
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// End of the period, exclusive (RFC 3339 or Unix seconds)
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// Window size [default: none]
    #[arg(long, value_parser = ["none", "minute", "hour", "day", "month"])]
    pub window: Option<String>,
    /// IANA time zone the windows align to [default: UTC]
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Comma-separated subset of the metric's group_by keys ("" for none) [default: all of them]
    #[arg(long, value_name = "KEYS")]
    pub group_by: Option<String>,
    /// Count only events ingested by then, with the metric revision current then
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// The metric revision to use [default: the latest, or the one current at --as-of]
    #[arg(long, value_name = "N")]
    pub revision: Option<u32>,
    /// Print the server's JSON (without --customer: an array of the per-customer results)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}
