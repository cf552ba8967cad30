use super::*;

fn code(body: &str) -> i64 {
    parse(body.as_bytes()).unwrap_err().code
}

#[test]
fn malformed_json_is_parse_error() {
    assert_eq!(code("{"), PARSE_ERROR);
    assert_eq!(code(""), PARSE_ERROR);
    assert_eq!(code("\u{0}"), PARSE_ERROR);
}

#[test]
fn not_a_message_is_invalid_request() {
    assert_eq!(code("[]"), INVALID_REQUEST);
    assert_eq!(code("42"), INVALID_REQUEST);
    assert_eq!(code(r#"{"method":"x"}"#), INVALID_REQUEST);
    assert_eq!(
        code(r#"{"jsonrpc":"1.0","method":"x","id":1}"#),
        INVALID_REQUEST
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","method":3,"id":1}"#),
        INVALID_REQUEST
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","method":"x","id":{}}"#),
        INVALID_REQUEST
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","method":"x","id":1.5}"#),
        INVALID_REQUEST
    );
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","method":"x","id":1,"params":[1]}"#),
        INVALID_REQUEST
    );
    assert_eq!(code(r#"{"jsonrpc":"2.0","id":1}"#), INVALID_REQUEST);
    assert_eq!(
        code(r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#),
        INVALID_REQUEST
    );
}

#[test]
fn kinds() {
    assert_eq!(
        parse(br#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#).unwrap(),
        Inbound::Request {
            id: "a".into(),
            method: "ping".into(),
            params: None
        }
    );
    assert_eq!(
        parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
        Inbound::Notification {
            method: "notifications/initialized".into(),
            params: None
        }
    );
    assert_eq!(
        parse(br#"{"jsonrpc":"2.0","id":7,"result":{"ok":true}}"#).unwrap(),
        Inbound::Response {
            id: 7.into(),
            outcome: Ok(json!({"ok": true}))
        }
    );
}
