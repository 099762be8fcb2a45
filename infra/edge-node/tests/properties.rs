//! Property test over the predict body the inference component parses (the same code runs
//! natively here and inside the component): any bytes, and JSON shaped like a request, give a
//! batch of exactly `rows * n` finite values or a typed 4xx, never a panic.

use falaj_inference::input::{BodyKind, parse};
use proptest::prelude::*;
use serde_json::Value;

const N: usize = 3;

fn names() -> Vec<String> {
    ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
}

fn cell() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::num::f64::ANY.prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
        Just(Value::from("1.5")),
        Just(Value::from(f64::MAX)),
        "[a-c]{0,2}".prop_map(Value::from),
    ]
}

fn row() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(cell(), 0..5).prop_map(Value::from),
        prop::collection::btree_map("[a-d]{1,2}", cell(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        cell(),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(row(), 0..5).prop_map(|rows| serde_json::json!({ "inputs": rows })
            .to_string()
            .into_bytes()),
        row().prop_map(|r| serde_json::json!({ "inputs": r }).to_string().into_bytes()),
        // Raw f32 rows, NaN and infinities included.
        prop::collection::vec(prop::num::f32::ANY, 0..9)
            .prop_map(|v| v.iter().flat_map(|f| f.to_le_bytes()).collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_predict_body_is_a_full_batch_or_a_typed_4xx(
        kind in prop_oneof![Just(BodyKind::Json), Just(BodyKind::Raw)],
        bytes in body(),
    ) {
        match parse(kind, &bytes, &names(), N) {
            Ok(b) => {
                prop_assert!(b.rows > 0);
                prop_assert_eq!(b.x.len(), b.rows * N);
                prop_assert!(b.x.iter().all(|v| v.is_finite()), "{:?}", b.x);
            }
            Err(e) => {
                prop_assert!((400..500).contains(&e.status), "{e}");
                prop_assert!(!e.code.is_empty());
            }
        }
    }
}
