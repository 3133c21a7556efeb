//! The client IP of a request: the TCP peer, unless the peer is a trusted
//! proxy; only then is the one header the proxies write (`X-Forwarded-For`,
//! or `Forwarded` when configured so) read, right to left, and the first hop
//! that is not a trusted proxy is the client. A hop that cannot be read
//! ends the walk: what lies left of it is the client's own say.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use super::ForwardedHeader;

/// The proxies whose forwarding header is believed, and which header.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proxies {
    pub(crate) trusted: Vec<IpNet>,
    pub(crate) header: ForwardedHeader,
}

impl Proxies {
    fn trust(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// The client IP of a request from `peer` with `headers`. IPv4 addresses
/// mapped into IPv6 (a dual-stack listener's peers) are taken as IPv4.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &Proxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !proxies.trust(peer) {
        return peer;
    }
    // Split on bytes: a value the client made unreadable (not ASCII) must
    // not hide the hops a trusted proxy appended after it.
    let hops: Vec<&[u8]> = headers
        .get_all(proxies.header.name())
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .collect();
    if hops.is_empty() {
        warn_of_the_other_header(headers, proxies.header);
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        let address = match proxies.header {
            ForwardedHeader::XForwardedFor => Some(hop),
            ForwardedHeader::Forwarded => forwarded_for(hop),
        };
        let Some(ip) = address.and_then(parse_hop) else {
            // A hop we cannot read ends the chain we can believe.
            break;
        };
        client = ip.to_canonical();
        if !proxies.trust(client) {
            break;
        }
    }
    client
}

/// Says once (a setting to fix, not an event) that a trusted proxy sent the
/// header `forwarded_header` does not name and none of the one it does:
/// every client behind it is counted as the proxy.
fn warn_of_the_other_header(headers: &HeaderMap, header: ForwardedHeader) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let other = match header {
        ForwardedHeader::XForwardedFor => ForwardedHeader::Forwarded,
        ForwardedHeader::Forwarded => ForwardedHeader::XForwardedFor,
    };
    if headers.contains_key(other.name())
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            target: super::RATE_LIMIT_TARGET,
            sent = %other.name(),
            read = %header.name(),
            "a trusted proxy sends a forwarding header rate_limit.forwarded_header does not name; \
             its clients are all counted as the proxy (set forwarded_header to the one it writes)"
        );
    }
}

/// The `for=` parameter of one `Forwarded` element.
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    element.split(|&byte| byte == b';').find_map(|pair| {
        let at = pair.iter().position(|&byte| byte == b'=')?;
        let (name, value) = (pair[..at].trim_ascii(), pair[at + 1..].trim_ascii());
        name.eq_ignore_ascii_case(b"for").then(|| {
            value
                .strip_prefix(b"\"")
                .and_then(|quoted| quoted.strip_suffix(b"\""))
                .unwrap_or(value)
        })
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `::1`,
/// `[::1]` or `[::1]:80`.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::rate_limit::config::parse_net;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(trusted: &[&str], header: ForwardedHeader) -> Proxies {
        Proxies {
            trusted: trusted.iter().map(|net| parse_net(net).unwrap()).collect(),
            header,
        }
    }

    fn behind(trusted: &[&str]) -> Proxies {
        proxies(trusted, ForwardedHeader::XForwardedFor)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2")]);
        assert_eq!(
            client_ip(ip("9.9.9.9"), &h, &behind(&["10.0.0.0/8"])),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.1.1.1, 10.0.0.7")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &behind(&["10.0.0.0/8"])),
            ip("1.1.1.1")
        );
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https",
        )]);
        let forwarded = proxies(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &forwarded), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_hops_stop_the_walk() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, not-an-ip")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &behind(&["10.0.0.1"])),
            ip("10.0.0.1")
        );
        // An element without `for=` is a hop that cannot be read.
        let h = headers(&[("forwarded", "for=9.9.9.9, proto=https")]);
        let forwarded = proxies(&["10.0.0.1"], ForwardedHeader::Forwarded);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &forwarded), ip("10.0.0.1"));
    }

    /// Only the header the proxies write is read: the other one is the
    /// client's own, passed through.
    #[test]
    fn the_header_the_proxies_do_not_write_is_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "9.9.9.9"),
            ("forwarded", "for=203.0.113.5"),
        ]);
        let forwarded = proxies(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &forwarded), ip("203.0.113.5"));
        let h = headers(&[("forwarded", "for=9.9.9.9")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &behind(&["10.0.0.0/8"])),
            ip("10.0.0.1"),
            "no X-Forwarded-For: the proxy is all we know"
        );
    }

    /// A client's unreadable bytes, to which the proxy appended the real
    /// address, do not hide it (nor fall back to another header).
    #[test]
    fn an_unreadable_value_does_not_hide_what_the_proxy_appended() {
        let mut h = headers(&[("forwarded", "for=9.9.9.9")]);
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff, 203.0.113.5").unwrap(),
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &behind(&["10.0.0.0/8"])),
            ip("203.0.113.5")
        );
    }

    /// A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`.
    #[test]
    fn ipv4_mapped_peers_and_hops_are_ipv4() {
        let h = headers(&[("x-forwarded-for", "::ffff:1.1.1.1")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &behind(&["10.0.0.0/8"])),
            ip("1.1.1.1")
        );
        assert_eq!(
            client_ip(ip("::ffff:9.9.9.9"), &h, &behind(&["10.0.0.0/8"])),
            ip("9.9.9.9")
        );
    }
}
