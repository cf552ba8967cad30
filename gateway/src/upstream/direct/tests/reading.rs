//! Reading an answer's events: where an event ends across chunks, and which message answers
//! the request.

use super::*;

#[test]
fn an_events_end_is_found_across_chunks() {
    let mut tail = [0u8; 2];
    // "data: x\n" then "\ndata: y": the event ended at the start of the second chunk.
    assert_eq!(still_open(0, &mut tail, b"data: x\n"), 8);
    assert_eq!(still_open(8, &mut tail, b"\ndata: y"), 7);
    // CRLF, split after "\r\n\r".
    let mut tail = [0u8; 2];
    assert_eq!(still_open(0, &mut tail, b"data: x\r\n\r"), 10);
    assert_eq!(still_open(11, &mut tail, b"\ndata"), 4);
    // No end: the event grows.
    assert_eq!(still_open(4, &mut tail, b": more"), 10);
    // CR only.
    let mut tail = [0u8; 2];
    assert_eq!(still_open(0, &mut tail, b"data: x\r"), 8);
    assert_eq!(still_open(8, &mut tail, b"\rdata"), 4);
    // Ends within the chunk, twice: what follows the last end is open.
    let mut tail = [0u8; 2];
    assert_eq!(still_open(0, &mut tail, b"data: a\n\ndata: b\n\nda"), 2);
}

proptest! {
    /// Whatever an upstream sends as an event's data, reading it never panics, and only a
    /// message with the request's own id is ever its answer.
    #[test]
    fn only_the_requests_own_id_answers_it(data in ".{0,200}", id in any::<u64>(), other in any::<i64>()) {
        let ours = Value::from(id);
        if let Event::Answer(a) = classify(&data, &ours) {
            prop_assert_eq!(a.id, Some(ours.clone()));
        }
        let foreign = json!({ "jsonrpc": "2.0", "id": other, "result": {} });
        let verdict = classify(&foreign.to_string(), &ours);
        prop_assert_eq!(matches!(verdict, Event::Answer(_)), ours == other);
        let named = json!({ "jsonrpc": "2.0", "id": data, "result": {} });
        prop_assert!(!matches!(classify(&named.to_string(), &ours), Event::Answer(_)));
        // A null result is an answer (not an object: refused), not something to wait past.
        let null = json!({ "jsonrpc": "2.0", "id": id, "result": null });
        let Event::Answer(a) = classify(&null.to_string(), &ours) else {
            return Err(TestCaseError::fail("a null result is not taken as the answer"));
        };
        prop_assert!(matches!(super::read::answer(a), Err(Failure::Unreadable(_))));
    }
}
