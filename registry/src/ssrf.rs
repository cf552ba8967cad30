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
mod tests;
