use super::*;

#[test]
fn cursor_round_trip_and_garbage() {
    let c = Cursor {
        server: 2,
        offset: 100,
        upstream: Some("abc".into()),
    };
    let p = json!({ "cursor": c.encode() });
    assert_eq!(Cursor::from_params(Some(&p)).unwrap(), c);
    for bad in [
        json!({"cursor": "!!"}),
        json!({"cursor": 3}),
        json!({"cursor": "e30"}),
    ] {
        assert_eq!(
            Cursor::from_params(Some(&bad)).unwrap_err().face().code,
            Some(crate::jsonrpc::INVALID_PARAMS)
        );
    }
    assert_eq!(Cursor::from_params(None).unwrap(), Cursor::default());
}

#[test]
fn federated_uris_split_at_the_first_plus() {
    assert_eq!(
        split_resource_uri("notes+note://1"),
        Some(("notes", "note://1"))
    );
    assert_eq!(split_resource_uri("a+b+c://x"), Some(("a", "b+c://x")));
    assert_eq!(split_resource_uri("note://1"), None);
    assert_eq!(split_resource_uri("+x"), None);
}
