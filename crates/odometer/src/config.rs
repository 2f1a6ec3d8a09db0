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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("odometer-data"),
            listen: "127.0.0.1:8080".into(),
            log: "info".into(),
        }
    }
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
}

impl Config {
    /// Merges the sources in order of precedence. A named config file must exist; the default
    /// one is read only when present.
    pub fn load(global: &GlobalArgs, listen: Option<String>) -> anyhow::Result<Config> {
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
        let flags =
            FlagOverrides { data_dir: global.data_dir.clone(), listen, log: global.log.clone() };
        figment = figment.merge(Serialized::defaults(flags));
        let config: Config = figment.extract().context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.listen_addr()?;
        if self.data_dir.as_os_str().is_empty() {
            bail!("data_dir must not be empty");
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().with_context(|| {
            format!("listen address '{}' is not HOST:PORT (like 127.0.0.1:8080)", self.listen)
        })
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
            let config = Config::load(&global, None).unwrap();
            assert_eq!(config.data_dir, PathBuf::from("from-file"));
            assert_eq!(config.listen, "127.0.0.1:9000");

            jail.set_env("ODOMETER_LISTEN", "127.0.0.1:9001");
            let config = Config::load(&global, None).unwrap();
            assert_eq!(config.listen, "127.0.0.1:9001");
            assert_eq!(config.log, "debug");

            let global = GlobalArgs { data_dir: Some("from-flag".into()), ..GlobalArgs::default() };
            let config = Config::load(&global, Some("127.0.0.1:9002".into())).unwrap();
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
            jail.set_env("ODOMETER_TEST_POSTGRES_URL", "postgres://127.0.0.1:1/postgres");
            assert_eq!(Config::load(&GlobalArgs::default(), None).unwrap(), Config::default());
            Ok(())
        });
    }

    #[test]
    fn defaults_without_any_source() {
        figment::Jail::expect_with(|_jail| {
            let config = Config::load(&GlobalArgs::default(), None).unwrap();
            assert_eq!(config, Config::default());
            Ok(())
        });
    }

    #[test]
    fn bad_values_and_unknown_settings_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("odometer.toml", "colour = \"red\"")?;
            assert!(Config::load(&GlobalArgs::default(), None).is_err());
            jail.create_file("odometer.toml", "")?;
            let err = Config::load(&GlobalArgs::default(), Some("nowhere".into())).unwrap_err();
            assert!(err.to_string().contains("listen address"), "{err}");
            let missing =
                GlobalArgs { config: Some("missing.toml".into()), ..GlobalArgs::default() };
            assert!(Config::load(&missing, None).is_err());
            Ok(())
        });
    }
}
