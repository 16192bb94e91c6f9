//! Trusted proxies (`TRUSTED_PROXIES`, SPEC §2 and §5b): the CIDR blocks whose
//! `X-Forwarded-For` names the client, so that clients behind a load balancer get
//! their own rate-limit buckets instead of sharing the balancer's. Hand-written:
//! parsing `addr/len` and masking are a few lines, not worth a crate.

use std::net::{IpAddr, SocketAddr};

/// An address block: `10.0.0.0/8`, `fd00::/8`, or a bare address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses one block; the error says what is wrong with it. Bits set after the
    /// prefix (`10.0.0.1/8`) are refused: they usually mean a typo, not a network.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) if (1..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_digit()) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{s:?} has a prefix length over {max}"))?,
            Some(_) => return Err(format!("{s:?} has no valid prefix length")),
        };
        let cidr = Cidr { net, len };
        if cidr.masked(net) != bits(net) {
            return Err(format!("{s:?} has bits set after the /{len} prefix"));
        }
        Ok(cidr.canonical())
    }

    /// Parses a comma list; empty entries are skipped.
    pub fn parse_list(s: &str) -> Result<Vec<Cidr>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(Cidr::parse)
            .collect()
    }

    /// Is `ip` in this block? IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && self.masked(ip) == bits(self.net)
    }

    /// `ip`'s bits with everything after the prefix cleared.
    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host = width - u32::from(self.len);
        bits(ip) & u128::MAX.checked_shl(host).unwrap_or(0)
    }

    /// `::ffff:10.0.0.0/104` is `10.0.0.0/8`, so it matches the canonical peers.
    fn canonical(self) -> Cidr {
        match self.net {
            IpAddr::V6(v6) if self.len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    net: IpAddr::V4(v4),
                    len: self.len - 96,
                },
                None => self,
            },
            _ => self,
        }
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The client's address (SPEC §5b). The peer's own, unless the peer is a trusted
/// proxy; then `X-Forwarded-For` is walked from the right — each trusted proxy
/// appends the address it got the request from — past trusted proxies to the first
/// address that is not one. Entries left of it were written by the client and are
/// never believed. An entry that is not an address ends the walk at the last proxy
/// that was trusted. `hops` are the header's comma-separated entries in order.
pub fn client<'a>(
    peer: IpAddr,
    hops: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let trusts = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let mut client = peer.to_canonical();
    if !trusts(client) {
        return client;
    }
    for hop in hops.rev() {
        match parse_hop(hop.trim()) {
            Some(ip) => client = ip,
            None => break,
        }
        if !trusts(client) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`[::1]:80`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn parses_blocks_and_bare_addresses() {
        let list =
            Cidr::parse_list(" 10.0.0.0/8, 192.0.2.7,fd00::/8 ,::1, 0.0.0.0/0,").expect("ok");
        assert_eq!(list.len(), 5);
        let [ten, one, fd, lo6, all] = [0, 1, 2, 3, 4].map(|i| list[i]);
        assert!(ten.contains(ip("10.255.1.2")) && !ten.contains(ip("11.0.0.1")));
        assert!(
            ten.contains(ip("::ffff:10.1.2.3")),
            "mapped IPv6 counts as IPv4"
        );
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        assert!(fd.contains(ip("fd12:3456::1")) && !fd.contains(ip("fe80::1")));
        assert!(lo6.contains(ip("::1")) && !lo6.contains(ip("127.0.0.1")));
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("2001:db8::1")));
        assert_eq!(
            Cidr::parse("::/0").map(|c| c.contains(ip("2001:db8::1"))),
            Ok(true)
        );
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").expect("ok");
        assert_eq!(mapped, ten);
        assert_eq!(Cidr::parse_list(""), Ok(vec![]));
    }

    #[test]
    fn refuses_what_is_not_a_block() {
        for (bad, why) in [
            ("10.0.0.0/33", "over 32"),
            ("fe80::/129", "over 128"),
            ("10.0.0/8", "not an IP address"),
            ("proxy.local", "not an IP address"),
            ("10.0.0.0/", "no valid prefix"),
            ("10.0.0.0/+8", "no valid prefix"),
            ("10.0.0.0/0008", "no valid prefix"),
            ("10.0.0.1/8", "bits set after the /8"),
            ("fd00::1/8", "bits set after the /8"),
            ("10.0.0.0/8 10.1.0.0/16", "no valid prefix"),
        ] {
            let e = Cidr::parse(bad).expect_err(bad);
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn walks_forwarded_for_from_the_right_past_trusted_proxies() {
        let trusted = Cidr::parse_list("127.0.0.1, 10.0.0.0/8").expect("ok");
        let client = |peer: &str, xff: &str| super::client(ip(peer), xff.split(','), &trusted);
        // An untrusted peer is the client whatever it claims.
        assert_eq!(client("198.51.100.1", "203.0.113.7"), ip("198.51.100.1"));
        assert_eq!(client("127.0.0.1", "203.0.113.7"), ip("203.0.113.7"));
        assert_eq!(
            client("127.0.0.1", "1.1.1.1, 203.0.113.7, 10.0.0.2"),
            ip("203.0.113.7")
        );
        assert_eq!(
            client("::ffff:127.0.0.1", " [2001:db8::7]:443 "),
            ip("2001:db8::7")
        );
        assert_eq!(client("127.0.0.1", "::ffff:203.0.113.7"), ip("203.0.113.7"));
        // Garbage stops the walk at the last trusted hop; so does an empty header.
        assert_eq!(
            client("127.0.0.1", "203.0.113.7, junk, 10.0.0.2"),
            ip("10.0.0.2")
        );
        assert_eq!(client("127.0.0.1", ""), ip("127.0.0.1"));
        // Only trusted hops: the left-most is as far as anyone can tell.
        assert_eq!(client("127.0.0.1", "10.0.0.3, 10.0.0.2"), ip("10.0.0.3"));
        let none = super::client(ip("127.0.0.1"), "203.0.113.7".split(','), &[]);
        assert_eq!(
            none,
            ip("127.0.0.1"),
            "no trusted proxies: the header is ignored"
        );
    }
}
