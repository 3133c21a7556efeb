//! [`Counter`]: what a request is counted as under a rule.

use std::{
    fmt::{self, Write as _},
    net::IpAddr,
};

/// What one request is counted as: the rule's id and who is calling. Its
/// text, `{rule}|sub:{subject}`, `{rule}|key:{subject}`, `{rule}|ip:{address}`
/// or `{rule}|in-process`, names the counter, in this process and in Redis
/// (the same on every node).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counter<'a> {
    pub(crate) rule: &'a str,
    pub(crate) by: By<'a>,
}

/// Who a request is counted by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum By<'a> {
    /// The authenticated principal's subject.
    Subject(&'a str),
    /// The subject of the API key that authenticated the request.
    ApiKey(&'a str),
    /// The client's address; an IPv6 one is counted by its `/64`.
    Ip(IpAddr),
    /// A colocated client's in-process call.
    InProcess,
}

impl By<'_> {
    /// What follows the rule, before the subject or address.
    fn prefix(self) -> &'static str {
        match self {
            Self::Subject(_) => "|sub:",
            Self::ApiKey(_) => "|key:",
            Self::Ip(_) => "|ip:",
            Self::InProcess => "|in-process",
        }
    }
}

impl Counter<'_> {
    /// The counter's name, built with one allocation of the right size and
    /// without the formatting machinery (but for an address).
    pub(crate) fn key(&self) -> String {
        // An IPv6 prefix is at most 39 characters and its `/64`.
        let address = if matches!(self.by, By::Ip(_)) { 42 } else { 0 };
        let subject = match self.by {
            By::Subject(subject) | By::ApiKey(subject) => subject.len(),
            By::Ip(_) | By::InProcess => 0,
        };
        let mut key =
            String::with_capacity(self.rule.len() + self.by.prefix().len() + subject + address);
        self.write_key(&mut key);
        key
    }

    /// Appends the counter's name to `key`.
    pub(crate) fn write_key(&self, key: &mut String) {
        key.push_str(self.rule);
        key.push_str(self.by.prefix());
        match self.by {
            By::Subject(subject) | By::ApiKey(subject) => key.push_str(subject),
            By::Ip(ip) => {
                if write!(key, "{}", Counted(ip)).is_err() {
                    // Writing into a `String` does not fail; should it, the
                    // counter is the rule's "unknown address" one.
                    key.push('?');
                }
            }
            By::InProcess => {}
        }
    }
}

impl fmt::Display for Counter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = self.by.prefix();
        write!(f, "{}{prefix}", self.rule)?;
        match self.by {
            By::Subject(subject) | By::ApiKey(subject) => f.write_str(subject),
            By::Ip(ip) => write!(f, "{}", Counted(ip)),
            By::InProcess => Ok(()),
        }
    }
}

/// An address as it is counted: an IPv4 one whole, an IPv6 one by its
/// `/64`, the prefix one host (one customer line) gets, so that it cannot
/// take a fresh counter with each of its addresses.
struct Counted(IpAddr);

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}"),
            IpAddr::V6(ip) => {
                let prefix = u128::from(ip) & !(u128::from(u64::MAX));
                write!(f, "{}/64", std::net::Ipv6Addr::from(prefix))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{By, Counter};

    #[test]
    fn keys_are_the_rule_then_who_is_counted() {
        let rule = "GET /v1/orders";
        for (by, expected) in [
            (By::Subject("alice"), "GET /v1/orders|sub:alice"),
            (By::ApiKey("ci-bot"), "GET /v1/orders|key:ci-bot"),
            (By::Ip([10, 0, 0, 7].into()), "GET /v1/orders|ip:10.0.0.7"),
            (
                By::Ip("2001:db8:0:7:ffff:ffff:1.2.3.4".parse().unwrap()),
                "GET /v1/orders|ip:2001:db8:0:7::/64",
            ),
            (By::InProcess, "GET /v1/orders|in-process"),
        ] {
            let counter = Counter { rule, by };
            assert_eq!(counter.key(), expected);
            assert_eq!(counter.to_string(), expected);
        }
    }
}
