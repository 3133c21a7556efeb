//! [`ConfigLoader`]: merges defaults, a TOML file, the environment and
//! explicit overrides with `figment`, then validates.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use figment::{
    Figment, Metadata, Profile, Provider,
    providers::{Format, Serialized, Toml},
    value::{Dict, Map, Value},
};

use super::{Config, ConfigError};

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "ROOM619_";
/// Separates nesting levels in an environment variable's name.
const ENV_SEPARATOR: &str = "__";
/// Environment variables with the prefix that are not configuration keys.
const ENV_RESERVED: &[&str] = &["CONFIG"];

/// Builds a [`Config`] from its sources, in increasing precedence: defaults,
/// TOML file or text, `ROOM619_*` environment, [`Overrides`].
///
/// A variable `ROOM619_SECTION__KEY` sets `section.key`; another with the
/// prefix is an error (an unknown key), except `ROOM619_CONFIG` and the
/// service links Kubernetes adds for a Service named `room619` or
/// `room619-<name>` (`ROOM619_SERVICE_HOST`, `ROOM619_PORT_8080_TCP`...).
///
/// ```
/// use room619::config::{ConfigLoader, Overrides};
///
/// let config = ConfigLoader::new()
///     .toml_str("[node]\nname = \"from-toml\"")
///     .without_env()
///     .overrides(Overrides::new().set("node.listen", "127.0.0.1:9000"))
///     .load()
///     .unwrap();
/// assert_eq!(config.node.name, "from-toml");
/// assert_eq!(config.node.listen.port(), 9000);
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    toml: Option<String>,
    env: EnvSource,
    overrides: Overrides,
}

#[derive(Debug, Default)]
enum EnvSource {
    #[default]
    Process,
    Vars(Vec<(OsString, OsString)>),
    Off,
}

impl ConfigLoader {
    /// A loader with defaults and the process environment as its sources.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads this TOML file; it must exist. Default: no file.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Uses this TOML text (after the file, if both are given). Default: none.
    pub fn toml_str(mut self, toml: impl Into<String>) -> Self {
        self.toml = Some(toml.into());
        self
    }

    /// Ignores the environment. Default: the process environment is read.
    pub fn without_env(mut self) -> Self {
        self.env = EnvSource::Off;
        self
    }

    /// Reads overrides from these variables instead of the process
    /// environment (only those starting with `ROOM619_` count).
    pub fn env_vars<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.env = EnvSource::Vars(vars);
        self
    }

    /// Applies these overrides last (CLI flags, tests). Default: none.
    pub fn overrides(mut self, overrides: Overrides) -> Self {
        self.overrides = overrides;
        self
    }

    /// Merges the sources and validates the result.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key (and the source it came from) when the
    /// file is missing or does not parse, a key is unknown, a value has the
    /// wrong type, or validation fails.
    pub fn load(self) -> Result<Config, ConfigError> {
        if let Some(path) = &self.file
            && !path.is_file()
        {
            return Err(ConfigError::new(
                "",
                format!("config file {} does not exist", path.display()),
            ));
        }
        let mut env = match self.env {
            EnvSource::Process => Some(EnvVars::from_vars(std::env::vars_os())?),
            EnvSource::Vars(vars) => Some(EnvVars::from_vars(vars)?),
            EnvSource::Off => None,
        };
        let config = loop {
            let mut figment = Figment::from(Serialized::defaults(Config::default()));
            if let Some(path) = &self.file {
                figment = figment.merge(Toml::file_exact(path));
            }
            if let Some(toml) = &self.toml {
                figment = figment.merge(Toml::string(toml));
            }
            if let Some(env) = &env {
                figment = figment.merge(env.clone());
            }
            match figment.merge(self.overrides.clone()).extract::<Config>() {
                Ok(config) => break config,
                // `ROOM619_NODE__NAME=007` is the name "007", not the number 7.
                Err(err) if env.as_mut().is_some_and(|env| env.as_text(&err)) => {}
                Err(err) => return Err(from_figment(&err)),
            }
        };
        config.validate()?;
        Ok(config)
    }
}

/// Explicit values by dotted key, applied over every other source.
///
/// ```
/// use room619::config::Overrides;
///
/// let overrides = Overrides::new()
///     .set("log.level", "debug")
///     .set("node.services", vec!["echo".to_owned()]);
/// ```
#[derive(Debug, Default, Clone)]
#[must_use]
pub struct Overrides {
    entries: Vec<(String, Value)>,
}

impl Overrides {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (a dotted path such as `node.listen`) to `value`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.entries.push((key.into(), value.into()));
        self
    }

    /// Whether no override is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Provider for Overrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flags")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in &self.entries {
            let path: Vec<&str> = key.split('.').collect();
            insert(&mut dict, &path, value.clone());
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// `ROOM619_SECTION__KEY=value` variables as a figment provider whose errors
/// name the variable.
#[derive(Debug, Clone)]
struct EnvVars {
    dict: Dict,
    /// Each variable's text by key path, for values read as another type
    /// than the one their key takes (see [`EnvVars::as_text`]).
    text: Vec<(Vec<String>, String)>,
}

impl EnvVars {
    fn from_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let mut dict = Dict::new();
        let mut text = Vec::new();
        for (name, value) in vars {
            let Some(name) = name.to_str() else { continue };
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if key.is_empty() || ENV_RESERVED.contains(&key) || is_service_link(key) {
                continue;
            }
            let Some(value) = value.to_str() else {
                return Err(ConfigError::new(env_key(key), "value is not valid UTF-8")
                    .with_source_name(format!("environment variable {name}")));
            };
            let path: Vec<String> = key
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            let typed = value
                .parse::<Value>()
                .unwrap_or_else(|never| match never {});
            // The application's keys are not known here, so there is no
            // retry as text (below): a value is typed only when the type
            // keeps its text whole (`8080`, `true`, a list), else it stays
            // text (`007`). `Config::app` reads either as its key wants.
            if keys.first() == Some(&"app") {
                let lossless = match &typed {
                    Value::Num(..) | Value::Bool(..) => {
                        serde_json::to_string(&typed).is_ok_and(|again| again == value)
                    }
                    Value::Array(..) | Value::Dict(..) => true,
                    _ => false,
                };
                let kept = if lossless {
                    typed
                } else {
                    Value::from(value.to_owned())
                };
                insert(&mut dict, &keys, kept);
                continue;
            }
            insert(&mut dict, &keys, typed);
            text.push((path, value.to_owned()));
        }
        Ok(Self { dict, text })
    }

    /// Takes the variable that `err` is about as text, when `err` says a
    /// value read as a number, a boolean or a list is at a key that takes
    /// a string; whether it did (each variable is taken so once at most).
    /// A variable's value is typed by its look (`1024`, `true`,
    /// `[a, b]`); its key decides in the end.
    fn as_text(&mut self, err: &figment::Error) -> bool {
        let figment::error::Kind::InvalidType(found, expected) = &err.kind else {
            return false;
        };
        if expected != "a string" || matches!(found, figment::error::Actual::Str(_)) {
            return false;
        }
        let Some(position) = self.text.iter().position(|(path, _)| *path == err.path) else {
            return false;
        };
        let (path, text) = self.text.swap_remove(position);
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        insert(&mut self.dict, &keys, Value::from(text));
        true
    }
}

/// Whether `key` (a variable's name after [`ENV_PREFIX`]) is one of the
/// variables Kubernetes gives a pod for every Service of its namespace,
/// which a Service named `room619` or `room619-<name>` puts under the
/// prefix: `ROOM619_SERVICE_HOST`, `ROOM619_<NAME>_SERVICE_PORT_<PORT>`,
/// `ROOM619_PORT`, `ROOM619_<NAME>_PORT_8080_TCP_ADDR`... No configuration
/// key has those names (every key has a section, `__`), and failing the
/// start on them would stop every node of the namespace.
fn is_service_link(key: &str) -> bool {
    if key.contains(ENV_SEPARATOR) {
        return false;
    }
    let parts: Vec<&str> = key.split('_').collect();
    parts
        .iter()
        .enumerate()
        .any(|(at, part)| match (*part, &parts[at + 1..]) {
            ("SERVICE", ["HOST" | "PORT", ..]) | ("PORT", []) => true,
            ("PORT", [port, "TCP" | "UDP" | "SCTP", rest @ ..]) => {
                port.bytes().all(|b| b.is_ascii_digit())
                    && matches!(rest, [] | ["PROTO" | "PORT" | "ADDR"])
            }
            _ => false,
        })
}

fn env_key(key: &str) -> String {
    key.split(ENV_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_, keys| {
            let name = keys.join(ENV_SEPARATOR).to_ascii_uppercase();
            format!("{ENV_PREFIX}{name}")
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// The application's section `name` of the configuration, `section`, as
/// a `T`: read as it is first (as `serde_json` reads it, which any target
/// type takes); when that fails, read again with text taken as the number
/// or boolean a key wants, and a number or boolean as the text a key
/// wants (`ROOM619_APP__SHOP__PORT=8080` for a `u16`; `=8080` for a
/// `String`, and `=007`, kept as text since it is no number's own text).
/// The error names the key and what kind of value was found, never the
/// value.
pub(super) fn app_section<T>(name: &str, section: &serde_json::Value) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned,
{
    /// The section under one key, so that a section of any kind reads (a
    /// provider's data is a table) and error paths start with it.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Section<T> {
        v: T,
    }
    /// At most this many values taken as text (each a key of the section).
    const RETRIES: usize = 256;

    if let Ok(value) = T::deserialize(section) {
        return Ok(value);
    }
    let key = |path: &[String]| {
        ["app", name]
            .into_iter()
            .chain(path.iter().skip(1).map(String::as_str))
            .collect::<Vec<_>>()
            .join(".")
    };
    let mut section = Section { v: section.clone() };
    let mut retries = 0;
    loop {
        let err = match Figment::from(Serialized::defaults(&section)).extract_lossy::<Section<T>>()
        {
            Ok(read) => return Ok(read.v),
            Err(err) => err,
        };
        let wants_text = matches!(
            &err.kind,
            figment::error::Kind::InvalidType(found, expected)
                if expected == "a string"
                    && matches!(
                        found,
                        figment::error::Actual::Bool(_)
                            | figment::error::Actual::Unsigned(_)
                            | figment::error::Actual::Signed(_)
                            | figment::error::Actual::Float(_)
                    )
        );
        if !wants_text || retries == RETRIES || !as_text(&mut section.v, err.path.get(1..)) {
            return Err(ConfigError::new(key(&err.path), problem(&err.kind)));
        }
        retries += 1;
    }
}

/// Turns the number or boolean at `path` in `value` into its text; whether
/// there was one.
fn as_text(value: &mut serde_json::Value, path: Option<&[String]>) -> bool {
    let mut at = value;
    for segment in path.unwrap_or_default() {
        let next = match at {
            serde_json::Value::Object(map) => map.get_mut(segment),
            serde_json::Value::Array(items) => {
                segment.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            }
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    let text = match at {
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::Bool(flag) => flag.to_string(),
        _ => return false,
    };
    *at = serde_json::Value::String(text);
    true
}

/// Turns figment's error into one naming the key and where its value came from.
fn from_figment(err: &figment::Error) -> ConfigError {
    let path = &err.path;
    let mut config_err = ConfigError::new(path.join("."), problem(&err.kind));
    if let Some(metadata) = &err.metadata {
        let source = match &metadata.source {
            Some(figment::Source::File(file)) => format!("{} {}", metadata.name, shown(file)),
            _ => metadata.interpolate(&Profile::Default, path),
        };
        config_err = config_err.with_source_name(source);
    }
    config_err
}

/// What is wrong, as figment's error `kind` says, without quoting the value.
fn problem(kind: &figment::error::Kind) -> String {
    match kind {
        figment::error::Kind::UnknownField(field, expected) => {
            format!(
                "unknown key `{field}` (expected one of: {})",
                expected.join(", ")
            )
        }
        // What was found is named by its kind, never quoted: the value may
        // be a secret, and this error is logged (a reload rejected).
        figment::error::Kind::InvalidType(actual, expected) => {
            format!(
                "invalid type: found {}, expected {expected}",
                unquoted(actual)
            )
        }
        figment::error::Kind::InvalidValue(actual, expected) => {
            format!(
                "invalid value: found {}, expected {expected}",
                unquoted(actual)
            )
        }
        figment::error::Kind::UnknownVariant(_, expected) => {
            format!("unknown value (expected one of: {})", expected.join(", "))
        }
        // The TOML parser's message shows the line it failed on: say where,
        // not what.
        figment::error::Kind::Message(message) => without_source_lines(message),
        kind => kind.to_string(),
    }
}

/// A value found in the configuration, named by its kind only (a number
/// may be a secret too).
fn unquoted(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;

    match actual {
        Actual::Str(_) => "a string".to_owned(),
        Actual::Char(_) => "a character".to_owned(),
        Actual::Bytes(_) => "bytes".to_owned(),
        Actual::Bool(_) => "a boolean".to_owned(),
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer".to_owned(),
        Actual::Float(_) => "a floating-point number".to_owned(),
        Actual::Other(_) => "a value of another kind".to_owned(),
        other => other.to_string(),
    }
}

/// `message` without the lines that quote the source (`3 | secret = "..."`
/// and the caret line under it), as the TOML parser writes them.
fn without_source_lines(message: &str) -> String {
    message
        .lines()
        .filter(|line| {
            let rest = line
                .trim_start()
                .trim_start_matches(|c: char| c.is_ascii_digit());
            !rest.trim_start().starts_with('|')
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn env_overrides_the_file_and_names_the_variable_on_error() {
        let err = ConfigLoader::new()
            .toml_str("[limits]\nhttp_body_limit = 10")
            .env_vars([("ROOM619_LIMITS__HTTP_BODY_LIMIT", "lots")])
            .load()
            .unwrap_err();
        assert_eq!(err.key(), "limits.http_body_limit");
        assert!(
            err.to_string().contains("ROOM619_LIMITS__HTTP_BODY_LIMIT"),
            "{err}"
        );
    }

    #[test]
    fn env_values_are_typed() {
        let config = ConfigLoader::new()
            .env_vars([
                ("ROOM619_LIMITS__HTTP_BODY_LIMIT", "1024"),
                ("ROOM619_NODE__SERVICES", "[echo, users]"),
                ("ROOM619_NODE__DRAIN_TIMEOUT", "5s"),
                ("ROOM619_CONFIG", "/not/a/key"),
                ("OTHER_VAR", "ignored"),
            ])
            .load()
            .unwrap();
        assert_eq!(config.limits.http_body_limit, 1024);
        assert_eq!(config.node.services, ["echo", "users"]);
        assert_eq!(config.node.drain_timeout.as_secs(), 5);
    }

    #[test]
    fn kubernetes_service_links_are_not_taken_for_keys() {
        let links = [
            ("ROOM619_SERVICE_HOST", "10.0.0.11"),
            ("ROOM619_SERVICE_PORT", "8080"),
            ("ROOM619_SERVICE_PORT_HTTP", "8080"),
            ("ROOM619_PORT", "tcp://10.0.0.11:8080"),
            ("ROOM619_PORT_8080_TCP", "tcp://10.0.0.11:8080"),
            ("ROOM619_PORT_8080_TCP_PROTO", "tcp"),
            ("ROOM619_PORT_8080_TCP_PORT", "8080"),
            ("ROOM619_PORT_8080_TCP_ADDR", "10.0.0.11"),
            ("ROOM619_GATEWAY_SERVICE_HOST", "10.0.0.12"),
            ("ROOM619_GATEWAY_PORT_9090_UDP_ADDR", "10.0.0.12"),
            ("ROOM619_NODE__NAME", "pod-1"),
        ];
        let config = ConfigLoader::new().env_vars(links).load().unwrap();
        assert_eq!(config.node.name, "pod-1");

        for typo in ["ROOM619_NODE_NAME", "ROOM619_PORTS", "ROOM619_PORT_X_TCP"] {
            let err = ConfigLoader::new()
                .env_vars([(typo, "x")])
                .load()
                .unwrap_err();
            assert!(err.to_string().contains(typo), "{typo}: {err}");
        }
    }

    #[test]
    fn env_values_that_look_typed_stay_text_where_a_key_takes_text() {
        let config = ConfigLoader::new()
            .env_vars([
                ("ROOM619_NODE__NAME", "007"),
                ("ROOM619_DISCOVERY__NATS__BUCKET", "true"),
                ("ROOM619_LOG__LEVEL", "[warn]"),
                ("ROOM619_LIMITS__HTTP_BODY_LIMIT", "2048"),
            ])
            .load()
            .unwrap();
        assert_eq!(config.node.name, "007", "not the number 7");
        assert_eq!(config.discovery.nats.bucket, "true");
        assert_eq!(config.log.level, "[warn]");
        assert_eq!(
            config.limits.http_body_limit, 2048,
            "a number where one is wanted"
        );

        let err = ConfigLoader::new()
            .env_vars([("ROOM619_LIMITS__HTTP_BODY_LIMIT", "true")])
            .load()
            .unwrap_err();
        assert_eq!(err.key(), "limits.http_body_limit", "{err}");
    }

    /// `app.*` values from the environment used to be typed by their look:
    /// `007` became 7, and a `String` key refused it, quoting the value.
    #[test]
    fn app_values_from_the_environment_take_the_type_of_their_key() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Shop {
            code: String,
            port: u16,
            debug: bool,
            hosts: Vec<String>,
            ratio: f64,
        }

        let config = ConfigLoader::new()
            .env_vars([
                ("ROOM619_APP__SHOP__CODE", "007"),
                ("ROOM619_APP__SHOP__PORT", "8080"),
                ("ROOM619_APP__SHOP__DEBUG", "true"),
                ("ROOM619_APP__SHOP__HOSTS", "[a, b]"),
                ("ROOM619_APP__SHOP__RATIO", "0.5"),
            ])
            .load()
            .unwrap();
        let shop: Shop = config.app("shop").unwrap();
        assert_eq!(shop.code, "007");
        assert_eq!(shop.port, 8080);
        assert!(shop.debug);
        assert_eq!(shop.hosts, ["a", "b"]);
        assert!((shop.ratio - 0.5).abs() < f64::EPSILON);

        for (variable, value, key) in [
            ("ROOM619_APP__SHOP__PORT", "sk_live_51H8", "app.shop.port"),
            ("ROOM619_APP__SHOP__PORT", "123456789", "app.shop.port"),
        ] {
            let config = ConfigLoader::new()
                .env_vars([(variable, value)])
                .load()
                .unwrap();
            let err = config.app::<Shop>("shop").unwrap_err();
            assert_eq!(err.key(), key, "{err}");
            assert!(!err.to_string().contains(value), "quotes the value: {err}");
        }
    }

    /// What `Config::app` read before the environment's values kept their
    /// text reads still: numbers in flattened structs, untagged enums and
    /// `serde_json::Value`, numeric map keys, a section that is no table.
    #[test]
    fn app_sections_read_whatever_they_read_before() {
        use std::collections::HashMap;

        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default)]
        struct Outer {
            #[serde(flatten)]
            inner: Inner,
            either: Option<Either>,
            raw: serde_json::Value,
            ports: HashMap<u16, String>,
        }
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default)]
        struct Inner {
            port: u16,
        }
        #[derive(Debug, serde::Deserialize, PartialEq)]
        #[serde(untagged)]
        enum Either {
            Number(u16),
            Name(String),
        }

        let config = ConfigLoader::new()
            .toml_str("[app.shop.ports]\n8080 = \"http\"\n[app]\nflag = true\n")
            .env_vars([
                ("ROOM619_APP__SHOP__PORT", "8080"),
                ("ROOM619_APP__SHOP__EITHER", "7"),
                ("ROOM619_APP__SHOP__RAW", "42"),
            ])
            .load()
            .unwrap();
        let shop: Outer = config.app("shop").unwrap();
        assert_eq!(shop.inner.port, 8080);
        assert_eq!(shop.either, Some(Either::Number(7)));
        assert_eq!(shop.raw, serde_json::json!(42));
        assert_eq!(shop.ports[&8080], "http");
        assert!(config.app::<bool>("flag").unwrap());
    }

    /// Numbers are named by their kind in errors, as text is: a secret
    /// may be all digits.
    #[test]
    fn errors_name_numbers_by_kind_not_value() {
        #[derive(Debug, Default, serde::Deserialize)]
        struct Keys {
            #[serde(default)]
            _secret: Credentials,
        }
        #[derive(Debug, Default, serde::Deserialize)]
        struct Credentials {
            #[serde(default)]
            _key: String,
        }

        let err = ConfigLoader::new()
            .toml_str("[node]\nname = 123456789")
            .without_env()
            .load()
            .unwrap_err();
        assert_eq!(err.key(), "node.name", "{err}");
        assert!(!err.to_string().contains("123456789"), "{err}");

        let config = Config::from_toml_str("[app.pay]\n_secret = 987654321").unwrap();
        let err = config.app::<Keys>("pay").unwrap_err();
        assert_eq!(err.key(), "app.pay._secret", "{err}");
        assert!(!err.to_string().contains("987654321"), "{err}");
    }

    /// The node's name is a metric label value, which Prometheus text
    /// cannot hold a raw quote, backslash or newline in.
    #[test]
    fn node_names_that_would_break_the_metrics_are_refused() {
        for name in ["a\"b", "a\\b", "a\nb"] {
            let mut config = Config::default();
            config.node.name = name.to_owned();
            let err = config.validate().unwrap_err();
            assert_eq!(err.key(), "node.name", "{err}");
        }
        let mut config = Config::default();
        config.node.name = "shop-eu-1.pod_7".to_owned();
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::from_toml_str("[node]\nlisten_addr = \"127.0.0.1:1\"").unwrap_err();
        assert_eq!(err.key(), "node.listen_addr");
        assert!(err.problem().contains("unknown key"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_file() {
        let mut file = tempfile_in_target("wrong_types.toml");
        writeln!(file.1, "[node]\nlisten = \"not an address\"").unwrap();
        let err = ConfigLoader::new()
            .file(&file.0)
            .without_env()
            .load()
            .unwrap_err();
        assert_eq!(err.key(), "node.listen");
        assert!(err.to_string().contains("wrong_types.toml"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = ConfigLoader::new()
            .file("/definitely/not/here.toml")
            .without_env()
            .load()
            .unwrap_err();
        assert!(err.problem().contains("does not exist"), "{err}");
    }

    #[test]
    fn overrides_win_over_env() {
        let config = ConfigLoader::new()
            .env_vars([("ROOM619_LOG__LEVEL", "warn")])
            .overrides(Overrides::new().set("log.level", "debug"))
            .load()
            .unwrap();
        assert_eq!(config.log.level, "debug");
    }

    fn tempfile_in_target(name: &str) -> (PathBuf, std::fs::File) {
        let dir = std::env::temp_dir().join(format!("room619-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        (path, file)
    }

    /// Configuration errors are logged (a rejected reload): a value, which
    /// may be a secret, is never quoted in them, nor is the line it is on.
    #[test]
    fn errors_never_quote_the_values_or_lines_they_are_about() {
        const CANARY: &str = "canary-7f3e9";
        for toml in [
            format!("[node]\nname = \"x\"\nsecret = \"{CANARY}\\q\"\n"),
            format!("[limits]\nhttp_body_limit = \"{CANARY}\""),
            format!("[node\nname = \"{CANARY}\""),
        ] {
            let err = ConfigLoader::new()
                .toml_str(toml.clone())
                .without_env()
                .load()
                .unwrap_err();
            let shown = err.to_string();
            assert!(!shown.contains(CANARY), "{toml}: {shown}");
        }
        let err = ConfigLoader::new()
            .toml_str(format!("[limits]\nhttp_body_limit = \"{CANARY}\""))
            .without_env()
            .load()
            .unwrap_err();
        assert_eq!(err.key(), "limits.http_body_limit");
        assert!(err.problem().contains("found a string"), "{err}");
        let err = ConfigLoader::new()
            .toml_str("[node]\nname = \"x\\q\"\n")
            .without_env()
            .load()
            .unwrap_err();
        assert!(err.problem().contains("line 2"), "{err}");
    }
}
