//! The `grpc-timeout` wire format, also used by `x-request-timeout`.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// The gRPC deadline header.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// The HTTP deadline header room619 reads and sends (same syntax).
pub const HTTP_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");

/// The largest value the format allows: 8 digits.
const MAX_VALUE: u64 = 99_999_999;

/// Parses a `grpc-timeout` value such as `100m` (100 ms) or `5S`.
///
/// # Errors
///
/// A message saying what is wrong when the value is empty, has more than 8
/// digits, a non-digit, or an unknown unit.
pub fn parse_timeout(value: &[u8]) -> Result<Duration, String> {
    let Some((&unit, digits)) = value.split_last() else {
        return Err("empty timeout".to_owned());
    };
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(
            "timeout must be 1 to 8 digits followed by a unit (H, M, S, m, u, n)".to_owned(),
        );
    }
    let amount: u64 = digits
        .iter()
        .fold(0, |acc, digit| acc * 10 + u64::from(digit - b'0'));
    let duration = match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        other => {
            return Err(format!(
                "unknown timeout unit `{}` (expected H, M, S, m, u or n)",
                char::from(other).escape_default()
            ));
        }
    };
    Ok(duration)
}

/// Encodes a duration in the finest unit that fits 8 digits.
#[must_use]
pub fn encode_timeout(timeout: Duration) -> HeaderValue {
    let candidates = [
        (timeout.as_nanos(), 'n'),
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (u128::from(timeout.as_secs()), 'S'),
        (u128::from(timeout.as_secs() / 60), 'M'),
        (u128::from(timeout.as_secs() / 3600), 'H'),
    ];
    let (amount, unit) = candidates
        .into_iter()
        .find(|(amount, _)| *amount <= u128::from(MAX_VALUE))
        .unwrap_or((u128::from(MAX_VALUE), 'H'));
    let text = format!("{amount}{unit}");
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("99999999H"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_timeout(b"2H").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_timeout(b"3M").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_timeout(b"4S").unwrap(), Duration::from_secs(4));
        assert_eq!(parse_timeout(b"5m").unwrap(), Duration::from_millis(5));
        assert_eq!(parse_timeout(b"6u").unwrap(), Duration::from_micros(6));
        assert_eq!(parse_timeout(b"7n").unwrap(), Duration::from_nanos(7));
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in [
            &b""[..],
            b"m",
            b"123456789m",
            b"12x",
            b"-1m",
            b"1.5S",
            b"\xffm",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encoding_round_trips_within_the_unit() {
        for timeout in [
            Duration::from_nanos(1),
            Duration::from_millis(250),
            Duration::from_secs(3),
            Duration::from_secs(86_400 * 365),
        ] {
            let encoded = encode_timeout(timeout);
            let parsed = parse_timeout(encoded.as_bytes()).unwrap();
            assert!(parsed <= timeout, "{timeout:?} -> {encoded:?}");
            assert!(
                timeout.checked_sub(parsed).unwrap() < Duration::from_secs(3600),
                "{timeout:?} -> {encoded:?}"
            );
        }
    }

    #[test]
    fn huge_durations_saturate() {
        assert_eq!(encode_timeout(Duration::MAX), "99999999H");
    }
}
