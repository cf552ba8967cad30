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
