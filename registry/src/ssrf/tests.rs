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
