use serde_json::json;

use super::{canonical_json, canonical_object};

#[test]
fn member_order_and_whitespace_do_not_matter() {
    let a: serde_json::Value =
        serde_json::from_str(r#"{ "b": [1, {"y":2,"x":1}], "a": "é\n" }"#).unwrap();
    let b: serde_json::Value =
        serde_json::from_str(r#"{"a":"é\n","b":[1,{"x":1,"y":2}]}"#).unwrap();
    assert_eq!(canonical_json(&a), canonical_json(&b));
    assert_eq!(
        String::from_utf8(canonical_json(&a)).unwrap(),
        r#"{"a":"é\n","b":[1,{"x":1,"y":2}]}"#
    );
}

#[test]
fn names_sort_by_utf16_code_units() {
    // U+FB01 sorts after U+1F600 in UTF-16 (0xD83D < 0xFB01), unlike by code point.
    let v = json!({"\u{fb01}": 1, "\u{1f600}": 2, "a": 3});
    assert_eq!(
        String::from_utf8(canonical_json(&v)).unwrap(),
        "{\"a\":3,\"\u{1f600}\":2,\"\u{fb01}\":1}"
    );
}

#[test]
fn a_spliced_member_lands_where_the_canonical_order_puts_it() {
    for (map, key) in [
        (json!({}), "hash"),
        (json!({"a": 1}), "hash"),
        (json!({"z": 1}), "hash"),
        (json!({"a": [1, {"y": 2, "x": 1}], "z": "é"}), "hash"),
        (json!({"\u{fb01}": 1, "a": 3}), "\u{1f600}"),
        (json!({"a": 1, "hash": "old", "z": 2}), "hash"),
    ] {
        let map = map.as_object().unwrap();
        let value = json!("0123abcd");
        let spliced = canonical_object(map, key);
        let mut without = map.clone();
        without.remove(key);
        assert_eq!(spliced.bytes(), canonical_json(&json!(without)));
        let mut with = map.clone();
        with.insert(key.to_string(), value.clone());
        assert_eq!(
            String::from_utf8(spliced.with(&value)).unwrap(),
            String::from_utf8(canonical_json(&json!(with))).unwrap()
        );
    }
}

mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::super::{canonical_json, canonical_object};

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_]{0,6}",
            any::<String>().prop_map(|s| s.chars().take(4).collect()),
            Just("\u{fb01}".to_string()),
            Just("\u{1f600}".to_string()),
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(name(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Splicing a member in gives exactly the canonical bytes of the object with it (set
        /// or replaced), and the bytes without it are those of the object without it.
        #[test]
        fn splicing_equals_serialising_again(
            members in prop::collection::btree_map(name(), value(), 0..8),
            key in name(),
            added in value(),
        ) {
            let map: Map<String, Value> = members.into_iter().collect();
            let spliced = canonical_object(&map, &key);
            let mut without = map.clone();
            without.remove(&key);
            prop_assert_eq!(spliced.bytes(), canonical_json(&Value::Object(without)));
            let mut with = map.clone();
            with.insert(key.clone(), added.clone());
            prop_assert_eq!(spliced.with(&added), canonical_json(&Value::Object(with)));
        }

        /// Canonical bytes parse back to the same value, and names are in UTF-16 order.
        #[test]
        fn canonical_bytes_round_trip_and_names_are_ordered(v in value()) {
            let bytes = canonical_json(&v);
            let back: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back, &v);
            if let Value::Object(m) = &v {
                let text = String::from_utf8(bytes.clone()).unwrap();
                let mut names: Vec<&String> = m.keys().collect();
                names.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
                let mut last = 0;
                for n in names {
                    let quoted = serde_json::to_string(&json!({ n.as_str(): Value::Null })).unwrap();
                    let member = &quoted[1..quoted.len() - 6];
                    let at = text[last..].find(member).map(|i| i + last);
                    prop_assert!(at.is_some(), "{} not after {} in {}", member, last, text);
                    last = at.unwrap_or(last) + member.len();
                }
            }
        }

        /// Names compare as their UTF-16 code units do, shared beginnings included.
        #[test]
        fn names_compare_by_utf16_code_units(common in name(), a in name(), b in name()) {
            let (a, b) = (format!("{common}{a}"), format!("{common}{b}"));
            prop_assert_eq!(
                super::super::utf16_cmp(&a, &b),
                a.encode_utf16().cmp(b.encode_utf16())
            );
        }

        /// A string is written as serde_json writes it, escapes and all.
        #[test]
        fn strings_are_written_as_serde_json_writes_them(
            s in any::<String>(),
            plain in "[ -~]{0,40}",
            controls in "[\\x00-\\x7f\\u{80}-\\u{9f}\\u{2028}\\u{fffe}]{0,20}",
        ) {
            for text in [s, plain, controls] {
                let mut out = Vec::new();
                super::super::write_string(&text, &mut out);
                prop_assert_eq!(out, serde_json::to_vec(&text).unwrap());
            }
        }

        /// Hex written in one buffer is `hex::encode`'s.
        #[test]
        fn hex_lower_is_hex_encode(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(super::super::hex_lower(&bytes), hex::encode(&bytes));
        }
    }
}
