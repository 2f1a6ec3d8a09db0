//! Configuration: defaults, then a TOML file, then `ODOMETER_*` variables, then flags, merged
//! (with figment) into one [`Config`] the rest of the program trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::cli::GlobalArgs;

/// The config file looked for in the working directory when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "odometer.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Address `serve` listens on.
    pub listen: String,
    /// Log filter (tracing's env-filter syntax).
    pub log: String,
    /// Server mode's catalog: `postgres://...`; `None` is the embedded SQLite catalog in
    /// `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    /// Server mode's event store: `clickhouse://...` (needs a PostgreSQL `catalog`, which
    /// holds its exactly-once ledger); `None` is the embedded DuckDB store in `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// Address of the Prometheus endpoint (`GET /metrics`, no API key: keep it on a private
    /// address); `None` serves no metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Ingest requests (every dialect) handled at once; more are answered 429 with
    /// `retry-after` (load shedding).
    pub max_ingest_in_flight: usize,
    /// Usage questions (usage, current usage, previews, estimates) handled at once; more are
    /// answered 429.
    pub max_queries_in_flight: usize,
    /// The native API's rate limit per API key: requests at once...
    pub rate_limit_burst: u64,
    /// ... and per second after that.
    pub rate_limit_per_second: f64,
}

/// Where the catalog lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogBackend {
    /// SQLite in the data directory.
    Embedded(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

/// Where the events live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsBackend {
    /// DuckDB in the data directory.
    Embedded(PathBuf),
    /// ClickHouse, with the exactly-once ledger in the PostgreSQL catalog's database.
    ClickHouse { url: String, ledger: String },
}

impl Default for Config {
    fn default() -> Self {
        let defaults = odometer_api::Limits::default();
        Self {
            data_dir: PathBuf::from("odometer-data"),
            listen: "127.0.0.1:8080".into(),
            log: "info".into(),
            catalog: None,
            events: None,
            metrics_listen: None,
            max_ingest_in_flight: defaults.shed.max_ingest_in_flight,
            max_queries_in_flight: defaults.shed.max_queries_in_flight,
            rate_limit_burst: defaults.native_burst,
            rate_limit_per_second: defaults.native_per_second,
        }
    }
}

/// Settings a subcommand takes as flags of its own (`serve --listen --catalog --events
/// --metrics-listen`).
#[derive(Debug, Clone, Default)]
pub struct CommandFlags {
    pub listen: Option<String>,
    pub catalog: Option<String>,
    pub events: Option<String>,
    pub metrics_listen: Option<String>,
}

/// Values given as flags; only those given override the rest.
#[derive(Debug, Default, Serialize)]
struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<String>,
}

impl Config {
    /// Merges the sources in order of precedence. A named config file must exist; the default
    /// one is read only when present.
    pub fn load(global: &GlobalArgs, command: CommandFlags) -> anyhow::Result<Config> {
        let file = match &global.config {
            Some(path) => {
                if !path.is_file() {
                    bail!("config file {} does not exist", path.display());
                }
                Some(path.clone())
            }
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &file {
            figment = figment.merge(Toml::file(file));
        }
        // ODOMETER_CONFIG names the file itself, not a setting; ODOMETER_URL and
        // ODOMETER_API_KEY belong to the commands that talk HTTP (read by clap);
        // ODOMETER_TEST_* name the servers of the test suites (scripts/servers).
        figment = figment.merge(
            Env::prefixed("ODOMETER_")
                .ignore(&["config", "url", "api_key"])
                .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_")),
        );
        let flags = FlagOverrides {
            data_dir: global.data_dir.clone(),
            listen: command.listen,
            log: global.log.clone(),
            catalog: command.catalog,
            events: command.events,
            metrics_listen: command.metrics_listen,
        };
        figment = figment.merge(Serialized::defaults(flags));
        let config: Config = figment.extract().context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        self.metrics_addr()?;
        if self.max_ingest_in_flight == 0 || self.max_queries_in_flight == 0 {
            bail!("max_ingest_in_flight and max_queries_in_flight must be at least 1");
        }
        if self.rate_limit_burst == 0
            || !(self.rate_limit_per_second.is_finite() && self.rate_limit_per_second > 0.0)
        {
            bail!("rate_limit_burst must be at least 1 and rate_limit_per_second above 0");
        }
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir must not be empty");
        }
        self.catalog_backend()?;
        self.events_backend()?;
        Ok(())
    }

    /// The catalog named by `catalog` (a `postgres://` or `postgresql://` URL), else the
    /// embedded one.
    pub fn catalog_backend(&self) -> anyhow::Result<CatalogBackend> {
        match self.catalog.as_deref().filter(|c| !c.is_empty()) {
            None => Ok(CatalogBackend::Embedded(self.catalog_path())),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(CatalogBackend::Postgres(url.to_owned()))
            }
            Some(other) => bail!(
                "catalog '{}' is not a postgres:// URL (leave it out for the embedded catalog)",
                redacted(other)
            ),
        }
    }

    /// The event store named by `events` (a `clickhouse://` URL), else the embedded one.
    pub fn events_backend(&self) -> anyhow::Result<EventsBackend> {
        match self.events.as_deref().filter(|e| !e.is_empty()) {
            None => Ok(EventsBackend::Embedded(self.events_path())),
            Some(url) if url.starts_with("clickhouse://") => match self.catalog_backend()? {
                CatalogBackend::Postgres(ledger) => {
                    Ok(EventsBackend::ClickHouse { url: url.to_owned(), ledger })
                }
                CatalogBackend::Embedded(_) => bail!(
                    "the clickhouse event store keeps its exactly-once ledger in the PostgreSQL \
                     catalog: give a postgres:// catalog too (--catalog, ODOMETER_CATALOG)"
                ),
            },
            Some(other) => bail!(
                "events '{}' is not a clickhouse:// URL (leave it out for the embedded store)",
                redacted(other)
            ),
        }
    }

    /// Where the data is, for people (URLs without their passwords).
    pub fn describe_stores(&self) -> String {
        let catalog = match self.catalog_backend() {
            Ok(CatalogBackend::Postgres(url)) => redacted(&url),
            _ => self.catalog_path().display().to_string(),
        };
        let events = match self.events_backend() {
            Ok(EventsBackend::ClickHouse { url, .. }) => redacted(&url),
            _ => self.events_path().display().to_string(),
        };
        format!("catalog {catalog}, events {events}")
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().with_context(|| {
            format!("listen address '{}' is not HOST:PORT (like 127.0.0.1:8080)", self.listen)
        })
    }

    /// The server's bounds: load shedding and the native rate limit.
    pub fn limits(&self) -> odometer_api::Limits {
        odometer_api::Limits {
            shed: odometer_api::shed::Limits {
                max_ingest_in_flight: self.max_ingest_in_flight,
                max_queries_in_flight: self.max_queries_in_flight,
            },
            native_burst: self.rate_limit_burst,
            native_per_second: self.rate_limit_per_second,
        }
    }

    /// Where `GET /metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        let Some(addr) = self.metrics_listen.as_deref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let parsed: SocketAddr = addr.parse().with_context(|| {
            format!("metrics_listen address '{addr}' is not HOST:PORT (like 127.0.0.1:9090)")
        })?;
        // Port 0 is "any free port": two of them are never the same socket.
        if parsed.port() != 0 && self.listen_addr().is_ok_and(|api| api == parsed) {
            bail!("metrics_listen must differ from listen: /metrics needs no API key");
        }
        Ok(Some(parsed))
    }

    /// The SQLite catalog inside the data directory.
    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.sqlite3")
    }

    /// The DuckDB event store inside the data directory.
    pub fn events_path(&self) -> PathBuf {
        self.data_dir.join("events.duckdb")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// A URL with its password replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.split_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
// figment's Jail closures return its (large) error type by design.
#[allow(clippy::unwrap_used, clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "odometer.toml",
                "data_dir = \"from-file\"\nlisten = \"127.0.0.1:9000\"\nlog = \"debug\"",
            )?;
            let global = GlobalArgs::default();
            let config = Config::load(&global, CommandFlags::default()).unwrap();
            assert_eq!(config.data_dir, PathBuf::from("from-file"));
            assert_eq!(config.listen, "127.0.0.1:9000");

            jail.set_env("ODOMETER_LISTEN", "127.0.0.1:9001");
            let config = Config::load(&global, CommandFlags::default()).unwrap();
            assert_eq!(config.listen, "127.0.0.1:9001");
            assert_eq!(config.log, "debug");

            let global = GlobalArgs { data_dir: Some("from-flag".into()), ..GlobalArgs::default() };
            let config = Config::load(
                &global,
                CommandFlags { listen: Some("127.0.0.1:9002".into()), ..CommandFlags::default() },
            )
            .unwrap();
            assert_eq!(config.listen, "127.0.0.1:9002");
            assert_eq!(config.data_dir, PathBuf::from("from-flag"));
            Ok(())
        });
    }

    #[test]
    fn the_http_commands_and_test_suites_variables_are_not_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ODOMETER_URL", "http://127.0.0.1:9000");
            jail.set_env("ODOMETER_API_KEY", "odo_secret");
            jail.set_env("ODOMETER_TEST_POSTGRES_URL", "postgres://test/server");
            assert_eq!(
                Config::load(&GlobalArgs::default(), CommandFlags::default()).unwrap(),
                Config::default()
            );
            Ok(())
        });
    }

    #[test]
    fn server_mode_from_file_environment_and_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "odometer.toml",
                "catalog = \"postgres://u:p@db/file\"\nevents = \"clickhouse://ch/file\"",
            )?;
            let config = Config::load(&GlobalArgs::default(), CommandFlags::default()).unwrap();
            assert_eq!(
                config.events_backend().unwrap(),
                EventsBackend::ClickHouse {
                    url: "clickhouse://ch/file".into(),
                    ledger: "postgres://u:p@db/file".into()
                }
            );
            assert_eq!(
                config.describe_stores(),
                "catalog postgres://u:***@db/file, events clickhouse://ch/file"
            );
            jail.set_env("ODOMETER_CATALOG", "postgresql://db/env");
            jail.set_env("ODOMETER_EVENTS", "clickhouse://ch/env");
            let config = Config::load(&GlobalArgs::default(), CommandFlags::default()).unwrap();
            assert_eq!(
                config.catalog_backend().unwrap(),
                CatalogBackend::Postgres("postgresql://db/env".into())
            );
            let flags = CommandFlags {
                catalog: Some("postgres://db/flag".into()),
                events: Some("clickhouse://ch/flag".into()),
                ..CommandFlags::default()
            };
            let config = Config::load(&GlobalArgs::default(), flags).unwrap();
            assert_eq!(config.catalog.as_deref(), Some("postgres://db/flag"));
            assert_eq!(config.events.as_deref(), Some("clickhouse://ch/flag"));
            Ok(())
        });
    }

    #[test]
    fn clickhouse_events_need_a_postgres_catalog() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ODOMETER_EVENTS", "clickhouse://ch/x");
            let err = Config::load(&GlobalArgs::default(), CommandFlags::default()).unwrap_err();
            assert!(format!("{err:#}").contains("postgres:// catalog"), "{err:#}");
            jail.set_env("ODOMETER_CATALOG", "mysql://u:secret@db/x");
            let err = Config::load(&GlobalArgs::default(), CommandFlags::default()).unwrap_err();
            let message = format!("{err:#}");
            assert!(
                message.contains("not a postgres:// URL") && !message.contains("secret"),
                "{message}"
            );
            Ok(())
        });
    }

    #[test]
    fn bounds_are_settings_and_must_be_positive() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "odometer.toml",
                "max_ingest_in_flight = 8\nmax_queries_in_flight = 9\nrate_limit_burst = 10",
            )?;
            jail.set_env("ODOMETER_RATE_LIMIT_PER_SECOND", "2.5");
            let limits =
                Config::load(&GlobalArgs::default(), CommandFlags::default()).unwrap().limits();
            assert_eq!(limits.shed.max_ingest_in_flight, 8);
            assert_eq!(limits.shed.max_queries_in_flight, 9);
            assert_eq!(limits.native_burst, 10);
            assert!((limits.native_per_second - 2.5).abs() < f64::EPSILON);
            jail.set_env("ODOMETER_MAX_INGEST_IN_FLIGHT", "0");
            let err = Config::load(&GlobalArgs::default(), CommandFlags::default()).unwrap_err();
            assert!(err.to_string().contains("at least 1"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn defaults_without_any_source() {
        figment::Jail::expect_with(|_jail| {
            let config = Config::load(&GlobalArgs::default(), CommandFlags::default()).unwrap();
            assert_eq!(config, Config::default());
            Ok(())
        });
    }

    #[test]
    fn bad_values_and_unknown_settings_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("odometer.toml", "colour = \"red\"")?;
            assert!(Config::load(&GlobalArgs::default(), CommandFlags::default()).is_err());
            jail.create_file("odometer.toml", "")?;
            let err = Config::load(
                &GlobalArgs::default(),
                CommandFlags { listen: Some("nowhere".into()), ..CommandFlags::default() },
            )
            .unwrap_err();
            assert!(err.to_string().contains("listen address"), "{err}");
            let missing =
                GlobalArgs { config: Some("missing.toml".into()), ..GlobalArgs::default() };
            assert!(Config::load(&missing, CommandFlags::default()).is_err());
            Ok(())
        });
    }
}
