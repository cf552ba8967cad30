//! Which upstream addresses need an explicit `allow_private: true`.
//!
//! An upstream URL that names, or resolves to, a loopback, private, link-local (including the
//! cloud metadata address), unique-local, shared, unspecified, multicast or otherwise
//! non-public address is refused unless its server entry allows private addresses. IPv4 addresses
//! written inside IPv6 (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4) are judged as the
//! IPv4 address they carry; the deprecated IPv4-compatible `::/96` and Teredo are refused whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public address, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => non_public_v4(v4),
            None => non_public_v6(v6),
        },
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        (169, 254, _) => "a link-local address (the cloud metadata service lives here)",
        _ if ip.is_private() => "a private address",
        (100, b, _) if (64..128).contains(&b) => "a shared (carrier-grade NAT) address",
        (192, 0, 0) => "an IETF protocol address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18 | 19, _) => "a benchmarking address",
        _ if ip.is_multicast() => "a multicast address",
        _ if a >= 240 => "a reserved or broadcast address",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        [a, ..] if a & 0xffc0 == 0xfe80 => "a link-local address",
        [a, ..] if a & 0xfe00 == 0xfc00 => "a unique-local (private) address",
        [a, ..] if a & 0xffc0 == 0xfec0 => "a site-local address",
        [a, ..] if a & 0xff00 == 0xff00 => "a multicast address",
        // The rest of `::/96`: deprecated IPv4-compatible forms with nothing routable behind them.
        [0, 0, 0, 0, 0, 0, _, _] => "an IPv4-compatible address",
        // Teredo hides an IPv4 address (obscured) and reaches it through a relay.
        [0x2001, 0x0000, ..] => "a Teredo tunnel address",
        // Local-use NAT64 (RFC 8215) and IPv4-translated (SIIT) forms reach IPv4 via a translator.
        [0x64, 0xff9b, 1, ..] => "a local-use NAT64 address",
        [0, 0, 0, 0, 0xffff, 0, _, _] => "an IPv4-translated address",
        [0x2001, 0x0db8, ..] => "a documentation address",
        [0x0100, 0, 0, 0, ..] => "a discard-only address",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries: mapped, NAT64 or 6to4. (IPv4-compatible `::/96`
/// is refused whole.)
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(tail(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(tail(hi, lo)),
        [0x2002, hi, lo, ..] => Some(tail(hi, lo)),
        _ => None,
    }
}

/// The host of an `http(s)://` URL, without brackets, and its port (default by scheme).
pub fn url_host(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    // Only a plain ASCII host and port: userinfo, backslashes, percent-escapes and
    // internationalised names are read differently by different URL parsers.
    if !authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return None;
    }
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// Why a URL's host, judged without DNS, is not public: an IP literal in a non-public range, or
/// a name that means this machine (`localhost`, `*.localhost`).
pub fn literal_host_problem(host: &str) -> Option<&'static str> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return non_public(ip);
    }
    let h = host.trim_end_matches('.');
    if h == "localhost" || h.ends_with(".localhost") {
        return Some("a loopback name");
    }
    // Forms like `2130706433` or `0x7f.1` that some resolvers read as IPv4.
    if h.split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_hexdigit() || b == b'x'))
        && h.bytes().next().is_some_and(|b| b.is_ascii_digit())
    {
        return Some("a numeric host that is not a dotted-quad address");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_ranges_including_ipv4_inside_ipv6() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "255.255.255.255",
            "224.0.0.1",
            "64:ff9b:1::a9fe:a9fe",
            "::ffff:0:808:808",
            "::8.8.8.8",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(non_public(ip).is_some(), "{bad}");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(non_public(ip), None, "{good}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// An IPv4 address inside one of the ranges that are never public.
        fn private_v4() -> impl Strategy<Value = Ipv4Addr> {
            let ranges: [(u32, u32); 12] = [
                (0x0000_0000, 8),  // 0/8
                (0x0a00_0000, 8),  // 10/8
                (0x6440_0000, 10), // 100.64/10
                (0x7f00_0000, 8),  // 127/8
                (0xa9fe_0000, 16), // 169.254/16
                (0xac10_0000, 12), // 172.16/12
                (0xc000_0000, 24), // 192.0.0/24
                (0xc0a8_0000, 16), // 192.168/16
                (0xc612_0000, 15), // 198.18/15
                (0xe000_0000, 4),  // 224/4
                (0xf000_0000, 4),  // 240/4
                (0xc000_0200, 24), // 192.0.2/24
            ];
            (0..ranges.len(), any::<u32>()).prop_map(move |(i, r)| {
                let (base, len) = ranges[i];
                Ipv4Addr::from(base | (r >> len))
            })
        }

        proptest! {
            #[test]
            fn every_address_in_a_private_range_is_refused(ip in private_v4()) {
                prop_assert!(non_public(IpAddr::V4(ip)).is_some(), "{ip}");
            }

            #[test]
            fn ipv4_inside_ipv6_is_judged_as_the_ipv4_it_carries(ip in any::<Ipv4Addr>()) {
                let v4 = non_public(IpAddr::V4(ip));
                let [a, b, c, d] = ip.octets();
                let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
                for v6 in [
                    ip.to_ipv6_mapped(),
                    Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
                    Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
                ] {
                    prop_assert_eq!(non_public(IpAddr::V6(v6)), v4, "{}", v6);
                }
                // The IPv4-compatible form is never public, whatever it carries.
                prop_assert!(non_public(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo))).is_some());
            }

            #[test]
            fn a_literal_host_is_judged_as_its_address(ip in any::<IpAddr>()) {
                prop_assert_eq!(literal_host_problem(&ip.to_string()), non_public(ip));
            }

            #[test]
            fn a_numeric_host_is_refused_without_dns(n in any::<u32>(), hex in any::<bool>()) {
                let host = match hex { true => format!("0x{n:x}"), false => n.to_string() };
                prop_assert!(literal_host_problem(&host).is_some(), "{host}");
            }

            #[test]
            fn url_hosts_round_trip_for_addresses(ip in any::<IpAddr>(), port in 1u16..) {
                let url = match ip {
                    IpAddr::V4(v4) => format!("http://{v4}:{port}/mcp"),
                    IpAddr::V6(v6) => format!("http://[{v6}]:{port}/mcp"),
                };
                prop_assert_eq!(url_host(&url), Some((ip.to_string(), port)));
            }

            #[test]
            fn an_authority_with_userinfo_escapes_or_non_ascii_is_no_url(
                left in "[a-z0-9.]{1,12}",
                odd in prop::sample::select(vec!['@', '%', '\\', 'ü', ' ', '\t']),
                right in "[a-z0-9.]{1,12}",
            ) {
                let url = format!("https://{left}{odd}{right}/mcp");
                prop_assert_eq!(url_host(&url), None);
            }
        }
    }

    #[test]
    fn hosts_and_ports_from_urls() {
        assert_eq!(
            url_host("http://127.0.0.1:9100/mcp"),
            Some(("127.0.0.1".into(), 9100))
        );
        assert_eq!(url_host("https://[::1]/mcp"), Some(("::1".into(), 443)));
        assert_eq!(
            url_host("https://Example.com:8443/x?y"),
            Some(("example.com".into(), 8443))
        );
        // Forms URL parsers disagree on are not URLs here.
        assert_eq!(url_host("http://127.0.0.1\\@public.example/mcp"), None);
        assert_eq!(url_host("https://u:p@example.com/"), None);
        assert_eq!(url_host("https://bücher.example/"), None);
        assert_eq!(url_host("https://ex%61mple.com/"), None);
        assert_eq!(url_host("ftp://x"), None);
        assert!(literal_host_problem("localhost").is_some());
        assert!(literal_host_problem("api.localhost").is_some());
        assert!(literal_host_problem("2130706433").is_some());
        assert!(literal_host_problem("0x7f.1").is_some());
        assert!(literal_host_problem("example.com").is_none());
        assert!(literal_host_problem("8.8.8.8").is_none());
    }
}
