//! Who is asking: the peer address of the connection, or — only when that peer is a configured
//! trusted proxy — the address the proxies recorded in `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::AppState;

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    base: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, canonical(ip)) {
            // IPv4 in the top 32 bits, so the prefix counts from the same end as for IPv6.
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(base)) << 96, self.prefix)
                    == masked(u128::from(u32::from(ip)) << 96, self.prefix)
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                masked(u128::from(base), self.prefix) == masked(u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        128.. => bits,
        _ => bits & !(u128::MAX >> prefix),
    }
}

/// IPv4 peers on a dual-stack socket arrive as `::ffff:a.b.c.d`; compare them as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text.trim().split_once('/').map_or((text.trim(), None), |(a, p)| (a, Some(p)));
        let base = canonical(address.parse::<IpAddr>().map_err(|_| format!("{text:?} is not an IP address or range"))?);
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| format!("{text:?}: bad prefix"))?,
        };
        Ok(Self { base, prefix })
    }
}

/// The client's address as the defenses see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(client_ip(parts, &state.settings.trusted_proxies))
    }
}

/// The peer, or the nearest address in `X-Forwarded-For` that is not a trusted proxy, walking
/// from the right (the entries on the left are whatever the client claimed).
pub fn client_ip(parts: &Parts, trusted: &[IpRange]) -> ClientIp {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| canonical(addr.ip()));
    let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
    if !is_trusted(peer) {
        return ClientIp(peer);
    }
    let forwarded = parts.headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok());
    let hops: Vec<IpAddr> =
        forwarded.flat_map(|value| value.split(',')).filter_map(|hop| hop.trim().parse().ok()).map(canonical).collect();
    let client = hops.iter().rev().copied().find(|&hop| !is_trusted(hop));
    ClientIp(client.or_else(|| hops.first().copied()).unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut request = Request::get("/").body(()).expect("request");
        for value in forwarded {
            request.headers_mut().append("x-forwarded-for", value.parse().expect("header"));
        }
        let peer: SocketAddr = peer.parse().expect("peer");
        request.extensions_mut().insert(ConnectInfo(peer));
        request.into_parts().0
    }

    fn ranges(text: &[&str]) -> Vec<IpRange> {
        text.iter().map(|t| t.parse().expect("range")).collect()
    }

    #[test]
    fn ranges_parse_and_match() {
        let range: IpRange = "10.0.0.0/8".parse().expect("range");
        assert!(range.contains("10.200.3.4".parse().expect("ip")));
        assert!(range.contains("::ffff:10.1.1.1".parse().expect("ip")));
        assert!(!range.contains("11.0.0.1".parse().expect("ip")));
        let one: IpRange = "127.0.0.1".parse().expect("range");
        assert!(one.contains("127.0.0.1".parse().expect("ip")) && !one.contains("127.0.0.2".parse().expect("ip")));
        let v6: IpRange = "fd00::/8".parse().expect("range");
        assert!(v6.contains("fd12::1".parse().expect("ip")) && !v6.contains("fe80::1".parse().expect("ip")));
        assert!("0.0.0.0/0".parse::<IpRange>().expect("range").contains("8.8.8.8".parse().expect("ip")));
        for bad in ["", "10.0.0.0/33", "nonsense", "1.2.3.4/x"] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let none = ranges(&[]);
        assert_eq!(client_ip(&parts("1.2.3.4:5", &["9.9.9.9"]), &none).0.to_string(), "1.2.3.4");
        let proxies = ranges(&["10.0.0.0/8"]);
        let behind = parts("10.0.0.7:5", &["6.6.6.6, 7.7.7.7", "10.0.0.9"]);
        assert_eq!(client_ip(&behind, &proxies).0.to_string(), "7.7.7.7", "the rightmost untrusted hop");
        let no_header = parts("10.0.0.7:5", &[]);
        assert_eq!(client_ip(&no_header, &proxies).0.to_string(), "10.0.0.7");
        let garbage = parts("10.0.0.7:5", &["not-an-ip"]);
        assert_eq!(client_ip(&garbage, &proxies).0.to_string(), "10.0.0.7");
    }
}
