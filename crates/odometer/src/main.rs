//! The `odometer` binary: parses the command line, loads the configuration and runs one
//! subcommand. The only crate that names a storage backend.

mod bench;
mod cli;
mod commands;
mod config;
mod import;
mod remote;
mod serve;
mod soak;
mod stores;
mod telemetry;
mod usage;

use std::process::ExitCode;

/// jemalloc rather than the system allocator or mimalloc: ingest allocates many short-lived
/// values (JSON documents, strings, request and response buffers, Arrow batches of the
/// columnarizer), freed on other threads than they were allocated on. Measured on W1M
/// (release, 2 cores): glibc 74-86k events/s, mimalloc 92-108k (its default purge delay of
/// 10 ms hands freed pages back to the OS, so the next allocation faults them in again and
/// zeroes them: 15% of the CPU), jemalloc 124-126k with the least memory; jemalloc keeps
/// freed pages for seconds by default.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::{CommandFlags, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = match &cli.command {
        Command::Serve(args) => CommandFlags {
            listen: args.listen.clone(),
            catalog: args.catalog.clone(),
            events: args.events.clone(),
            metrics_listen: args.metrics_listen.clone(),
        },
        _ => CommandFlags::default(),
    };
    let config = match Config::load(&cli.global, flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(_) => serve::run(&config).await,
            Command::Init(args) => commands::init(&config, &args).await,
            Command::Organizations(cmd) => commands::organizations(&config, cmd).await,
            Command::Keys(cmd) => commands::keys(&config, cmd).await,
            Command::Metrics(cmd) => commands::metrics(&config, cmd).await,
            Command::Events(cli::EventsCommand::Import(args)) => import::run(args).await,
            Command::Usage(args) => usage::run(args).await,
            Command::Bench(args) => bench::run(&args).await,
            Command::Soak(args) => soak::run(&args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(remote::exit_status(&err))
        }
    }
}

/// Logs go to standard error, so standard output carries only what a command prints.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
