//! [`ConfigArgs`]: the configuration's command-line flags, for binaries to
//! flatten into their own `clap` parser.

use std::{net::SocketAddr, path::PathBuf};

use super::{Config, ConfigError, ConfigLoader, LogFormat, Overrides};

/// Flags that locate and override the configuration.
///
/// ```
/// use clap::Parser;
/// use room619::config::ConfigArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     config: ConfigArgs,
/// }
///
/// let cli = Cli::parse_from(["app", "--listen", "127.0.0.1:0", "--services", "echo"]);
/// let config = cli.config.loader().without_env().load().unwrap();
/// assert_eq!(config.node.services, ["echo"]);
/// ```
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "ROOM619_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address serving gRPC and HTTP (overrides `node.listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Separate address for the admin endpoints (overrides `node.admin_listen`).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Comma-separated services to run (overrides `node.services`).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub services: Option<Vec<String>>,
    /// Log filter such as `info` or `room619=debug` (overrides `log.level`).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log output: auto, json or pretty (overrides `log.format`).
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    pub log_format: Option<LogFormat>,
}

impl ConfigArgs {
    /// A loader with the file and the flags of these arguments as sources
    /// (and the process environment, unless the caller turns it off).
    pub fn loader(&self) -> ConfigLoader {
        let mut loader = ConfigLoader::new().overrides(self.overrides());
        if let Some(path) = &self.config {
            loader = loader.file(path);
        }
        loader
    }

    /// Loads and validates the configuration these arguments point to.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key when any source is invalid.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.loader().load()
    }

    /// The flags as overrides of the other sources, for example to reload
    /// the same configuration later
    /// ([`NodeBuilder::watch_config`](crate::node::NodeBuilder::watch_config)).
    pub fn overrides(&self) -> Overrides {
        let mut overrides = Overrides::new();
        if let Some(listen) = self.listen {
            overrides = overrides.set("node.listen", listen.to_string());
        }
        if let Some(admin) = self.admin_listen {
            overrides = overrides.set("node.admin_listen", admin.to_string());
        }
        if let Some(services) = &self.services {
            overrides = overrides.set("node.services", services.clone());
        }
        if let Some(level) = &self.log_level {
            overrides = overrides.set("log.level", level.clone());
        }
        if let Some(format) = self.log_format {
            let name = match format {
                LogFormat::Json => "json",
                LogFormat::Pretty => "pretty",
                LogFormat::Auto => "auto",
            };
            overrides = overrides.set("log.format", name);
        }
        overrides
    }
}

fn parse_format(value: &str) -> Result<LogFormat, String> {
    match value {
        "auto" => Ok(LogFormat::Auto),
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        other => Err(format!("`{other}` is not one of auto, json, pretty")),
    }
}
