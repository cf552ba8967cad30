use super::*;
use serde_json::json;

fn code(body: &str) -> i64 {
    parse(body.as_bytes()).unwrap_err().code
}

fn one(body: &[u8]) -> Inbound {
    match parse(body).unwrap() {
        Body::One(m) => m,
        Body::Batch(_) => panic!("a batch"),
    }
}

#[test]
fn malformed_json_is_parse_error() {
    assert_eq!(code("{"), PARSE_ERROR);
    assert_eq!(code(""), PARSE_ERROR);
    assert_eq!(code("\u{0}"), PARSE_ERROR);
}

#[test]
fn not_a_message_is_invalid_request() {
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
        one(br#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#),
        Inbound::Request {
            id: "a".into(),
            method: "ping".into(),
            params: None
        }
    );
    assert_eq!(
        one(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
        Inbound::Notification {
            method: "notifications/initialized".into(),
            params: None
        }
    );
    assert_eq!(
        one(br#"{"jsonrpc":"2.0","id":7,"result":{"ok":true}}"#),
        Inbound::Response {
            id: 7.into(),
            outcome: Ok(json!({"ok": true}))
        }
    );
}

#[test]
fn an_array_is_a_batch_whose_members_are_checked_one_by_one() {
    let Body::Batch(items) =
        parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, 42, []]"#).unwrap()
    else {
        panic!("not a batch")
    };
    assert_eq!(items.len(), 3);
    assert!(from_value(items[0].clone()).is_ok());
    assert_eq!(
        from_value(items[1].clone()).unwrap_err().code,
        INVALID_REQUEST
    );
    // A batch inside a batch is not a message.
    assert_eq!(
        from_value(items[2].clone()).unwrap_err().code,
        INVALID_REQUEST
    );
    assert!(matches!(parse(b"[]").unwrap(), Body::Batch(v) if v.is_empty()));
}

#[test]
fn envelopes_carry_their_values_whole() {
    let result = json!({ "content": [{ "type": "text", "text": "hi" }], "isError": false });
    assert_eq!(
        response(&json!(7), result.clone()),
        json!({ "jsonrpc": "2.0", "id": 7, "result": result })
    );
    let err = RpcError::new(INVALID_PARAMS, "no such tool");
    assert_eq!(
        error_response(None, &err),
        json!({ "jsonrpc": "2.0", "id": null, "error": err.to_value() })
    );
    assert_eq!(
        notification("notifications/progress", json!({ "progress": 1 })),
        json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": { "progress": 1 } })
    );
}
