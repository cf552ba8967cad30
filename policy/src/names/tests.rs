use super::*;

#[test]
fn wire_names() {
    assert!(is_wire_tool_name("notes__search_notes"));
    assert!(is_wire_tool_name("a-b_C9"));
    assert!(!is_wire_tool_name(""));
    assert!(!is_wire_tool_name("dotted.name"));
    assert!(!is_wire_tool_name("zero\u{200b}width"));
    assert!(!is_wire_tool_name(&"x".repeat(65)));
}

#[test]
fn split_at_first_separator() {
    assert_eq!(
        split_federated("notes__delete__all"),
        Some(FederatedName {
            server: "notes",
            name: "delete__all"
        })
    );
    assert_eq!(split_federated("notes_search"), None);
    assert_eq!(split_federated("__x"), None);
    assert_eq!(split_federated("notes__"), None);
}
