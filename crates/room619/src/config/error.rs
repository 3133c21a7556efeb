//! [`ConfigError`]: which key is wrong and why.

use std::fmt;

/// An invalid configuration: the key (dotted path such as
/// `limits.max_header_bytes`), where the value came from, and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    source_name: Option<String>,
    problem: String,
}

impl ConfigError {
    /// A problem with the value at `key`.
    #[must_use]
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            source_name: None,
            problem: problem.into(),
        }
    }

    /// Records where the bad value came from (a file, an environment variable).
    #[must_use]
    pub fn with_source_name(mut self, source_name: impl Into<String>) -> Self {
        self.source_name = Some(source_name.into());
        self
    }

    /// The dotted path of the offending key; empty when the whole document is
    /// at fault (for example a TOML syntax error).
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong with the value.
    #[must_use]
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration")?;
        if !self.key.is_empty() {
            write!(f, " at `{}`", self.key)?;
        }
        if let Some(source) = &self.source_name {
            write!(f, " (from {source})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for crate::Error {
    fn from(err: ConfigError) -> Self {
        crate::Error::config(err.to_string()).with_source(err)
    }
}
