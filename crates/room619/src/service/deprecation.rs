//! [`Deprecation`]: a service version on its way out. Its HTTP responses and
//! gRPC response metadata carry `Deprecation: true` and, when a sunset date
//! is set, `Sunset: <HTTP-date>` (RFC 8594); a warning is logged at most once
//! a minute per service while it is called.
//!
//! `Deprecation: true` is the form of the IETF draft that most clients and
//! gateways understand; RFC 9745's `@<unix-time>` form needs the date the
//! deprecation began, which room619 does not ask for.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The `Deprecation` response header.
pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
/// The `Sunset` response header (RFC 8594).
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");
/// How often a deprecated service that is being called logs a warning.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A deprecated service version (see
/// [`ServiceBuilder::deprecated`](super::ServiceBuilder::deprecated)).
pub struct Deprecation {
    sunset: Option<SystemTime>,
    sunset_header: Option<HeaderValue>,
    /// Seconds since the epoch of the last warning (0: never).
    last_warned: AtomicU64,
}

impl Deprecation {
    pub(crate) fn new(sunset: Option<SystemTime>) -> Self {
        let sunset_header = sunset.and_then(http_date);
        Self {
            sunset,
            sunset_header,
            last_warned: AtomicU64::new(0),
        }
    }

    /// Whether the sunset, if any, can be sent as an HTTP date (1970 to
    /// 9999).
    pub(crate) fn is_valid(&self) -> bool {
        self.sunset.is_none() || self.sunset_header.is_some()
    }

    /// When the version goes away, if announced.
    #[must_use]
    pub fn sunset(&self) -> Option<SystemTime> {
        self.sunset
    }

    /// Adds the headers to a response of `service`, and warns (rate-limited).
    pub(crate) fn mark(&self, headers: &mut HeaderMap, service: &dyn fmt::Display) {
        headers.insert(DEPRECATION, HeaderValue::from_static("true"));
        if let Some(sunset) = &self.sunset_header {
            headers.insert(SUNSET, sunset.clone());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let last = self.last_warned.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY.as_secs()
            && self
                .last_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %service,
                sunset = ?self.sunset_header,
                "a deprecated service version is still being called"
            );
        }
    }
}

impl fmt::Debug for Deprecation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deprecation")
            .field("sunset", &self.sunset_header)
            .finish_non_exhaustive()
    }
}

/// `at` as an HTTP date; `None` before 1970 or after 9999, which
/// `httpdate` cannot write (it panics).
fn http_date(at: SystemTime) -> Option<HeaderValue> {
    /// 10000-01-01T00:00:00Z.
    const YEAR_10000: u64 = 253_402_300_800;
    let since = at.duration_since(UNIX_EPOCH).ok()?;
    if since.as_secs() >= YEAR_10000 {
        return None;
    }
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crate::ServiceBuilder;

    #[test]
    fn a_sunset_no_http_date_can_carry_is_refused_by_build_not_a_panic() {
        let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        let before_1970 = UNIX_EPOCH.checked_sub(Duration::from_secs(1)).unwrap();
        for sunset in [year_10000, before_1970] {
            let err = ServiceBuilder::new("users", "1.0.0")
                .unwrap()
                .deprecated(Some(sunset))
                .build()
                .unwrap_err();
            assert!(err.message().contains("between 1970 and 9999"), "{err}");
        }
        let last = year_10000 - Duration::from_secs(1);
        for sunset in [UNIX_EPOCH, last, SystemTime::now()] {
            ServiceBuilder::new("users", "1.0.0")
                .unwrap()
                .deprecated(Some(sunset))
                .build()
                .unwrap();
        }
    }
}
