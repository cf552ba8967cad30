use super::*;

#[test]
fn round_trip() {
    for ms in [0, 1_763_719_200_123, 951_782_400_000, -86_400_000] {
        assert_eq!(parse_time(&rfc3339_ms(ms)), Some(ms), "{}", rfc3339_ms(ms));
    }
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(parse_time("2026-11-21T10:00:00Z"), Some(1_795_255_200_000));
    assert_eq!(parse_time("12345"), Some(12_345));
    for bad in [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-11-21 10:00:00",
        "2026-11-21T10:00:00.x1Z",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}

#[test]
fn stamps_are_written_as_the_formatter_would() {
    let formatted = |ms: i64| {
        let secs = ms.div_euclid(1000);
        let (y, m, d) = civil(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            ms.rem_euclid(1000)
        )
    };
    // Year 0 to 9999 are written digit by digit; outside them, by the formatter.
    let edges = [
        0,
        -1,
        999,
        1_795_255_199_999,
        -62_167_219_200_000,
        -62_167_219_200_001,
        253_402_300_799_999,
        253_402_300_800_000,
    ];
    let mut ms = -70_000_000_000_000_i64;
    let mut all = edges.to_vec();
    while ms < 300_000_000_000_000 {
        all.push(ms);
        ms += 7_777_777_777_777 / 13;
    }
    for ms in all {
        assert_eq!(rfc3339_ms(ms), formatted(ms), "{ms}");
    }
    assert_eq!(rfc3339_ms(1_795_255_200_123), "2026-11-21T10:00:00.123Z");
}
