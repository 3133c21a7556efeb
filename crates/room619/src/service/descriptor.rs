//! [`ServiceDescriptor`]: a service's name, semver version and description.

use std::{fmt, sync::Arc};

use semver::Version;

use super::Deprecation;
use crate::{Error, Result};

/// Who a service is: its name, its semver version and what it does.
///
/// Names are 1 to 63 lowercase ASCII letters, digits, `-`, `_` and `.`,
/// starting with a letter and ending with a letter or digit, with no two
/// `.` in a row, so they are safe in URLs, metric labels, NATS subjects and
/// discovery keys (a DNS name needs them without `_`).
///
/// ```
/// use room619::service::ServiceDescriptor;
///
/// let users = ServiceDescriptor::new("users", "1.4.0").unwrap();
/// assert_eq!(users.version().major, 1);
/// assert!(ServiceDescriptor::new("Users!", "1.0.0").is_err());
/// assert!(ServiceDescriptor::new("users", "one").is_err());
/// assert!(ServiceDescriptor::new("users.", "1.0.0").is_err());
/// assert!(ServiceDescriptor::new("shop..users", "1.0.0").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceDescriptor {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    version: Version,
    description: String,
    deprecation: Option<Arc<Deprecation>>,
}

impl PartialEq for Inner {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.version == other.version
            && self.description == other.description
            && self.deprecation.is_some() == other.deprecation.is_some()
    }
}

impl Eq for Inner {}

impl ServiceDescriptor {
    /// A descriptor for `name` at semver `version`.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` when the name has characters other than lowercase
    /// letters, digits, `-`, `_` and `.` or does not start with a letter, or
    /// the version is not semver.
    pub fn new(name: &str, version: &str) -> Result<Self> {
        validate_name(name)?;
        let version = Version::parse(version).map_err(|err| {
            Error::invalid_argument(format!(
                "service `{name}`: version `{version}` is not semver ({err})"
            ))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                version,
                description: String::new(),
                deprecation: None,
            }),
        })
    }

    /// The same descriptor with a description.
    #[must_use]
    pub fn with_description(self, description: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: self.inner.name.clone(),
                version: self.inner.version.clone(),
                description: description.into(),
                deprecation: self.inner.deprecation.clone(),
            }),
        }
    }

    /// The same descriptor, deprecated, going away at `sunset` if given.
    #[must_use]
    pub fn deprecated(self, sunset: Option<std::time::SystemTime>) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: self.inner.name.clone(),
                version: self.inner.version.clone(),
                description: self.inner.description.clone(),
                deprecation: Some(Arc::new(Deprecation::new(sunset))),
            }),
        }
    }

    /// Whether (and until when) this version is deprecated.
    #[must_use]
    pub fn deprecation(&self) -> Option<&Deprecation> {
        self.inner.deprecation.as_deref()
    }

    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The service's version.
    #[must_use]
    pub fn version(&self) -> &Version {
        &self.inner.version
    }

    /// What the service does.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.inner.description
    }
}

impl fmt::Debug for ServiceDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDescriptor")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version.to_string())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ServiceDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.inner.name, self.inner.version)
    }
}

fn validate_name(name: &str) -> Result<()> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    let starts_with_letter = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    // A NATS subject or discovery key has no empty token: no `.` last or
    // twice in a row.
    let ends_well = name
        .bytes()
        .last()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid_chars && starts_with_letter && ends_well && !name.contains("..") && name.len() <= 63 {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "service name `{name}` must be 1 to 63 lowercase letters, digits, `-`, `_` or `.`, \
             starting with a letter, ending with a letter or digit, with no `..`"
        )))
    }
}
