//! Property tests of the wire's fidelity: any value, XML-RPC's date-times
//! and byte strings included at any depth, comes back from the XML-RPC
//! codec as itself, and from the JSON-RPC codec as its documented JSON
//! form; and a handler sees the same typed values whichever protocol
//! carried them.

use std::cell::RefCell;
use std::rc::Rc;

use forkd_core::rpc::value::{self, base64_encode};
use forkd_core::rpc::{jsonrpc, xmlrpc, Args, DateTime, Method, ParamType, Params, Registry, Reply, Value};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

fn arb_datetime() -> impl Strategy<Value = DateTime> {
    let date = (1u16..=9999, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60);
    let nanos = prop_oneof![Just(0u32), 0u32..1_000_000_000];
    let offset = proptest::option::of(-(24 * 60 - 1)..(24 * 60i16));
    (date, nanos, offset).prop_map(|((y, mo, d, h, mi, s), nanos, offset)| {
        let t = DateTime::new(y, mo, d, h, mi, s).expect("fields in range");
        t.with_nanosecond(nanos).and_then(|t| t.with_offset(offset)).expect("in range")
    })
}

/// Text that XML 1.0 can carry (the encoder replaces the rest).
fn arb_text() -> impl Strategy<Value = String> {
    "[a-z0-9 <>&'\"\t\n\r\u{e9}\u{263a}\u{1f600}]{0,12}"
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        arb_text().prop_map(Value::from),
        arb_datetime().prop_map(|t| value::datetime(&t)),
        vec(any::<u8>(), 0..40).prop_map(|b| value::bytes(&b)),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(arb_text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The response that carries `v`, turned into a call that carries it:
/// the encoder's output read back by the decoder.
fn through_xmlrpc(v: &Value) -> Value {
    let response = xmlrpc::encode_response(v);
    let call = response
        .replace("<methodResponse>", "<methodCall><methodName>m</methodName>")
        .replace("</methodResponse>", "</methodCall>");
    let mut decoded = xmlrpc::decode_call(call.as_bytes()).unwrap_or_else(|e| panic!("{e:?} decoding {call}"));
    assert_eq!(decoded.params.len(), 1);
    decoded.params.remove(0)
}

/// The JSON of `v` as a JSON-RPC result, parsed back.
fn through_jsonrpc(v: &Value) -> Value {
    let answer: Value = serde_json::from_str(&jsonrpc::encode_result(&Value::from(1), v)).expect("json");
    answer["result"].clone()
}

/// The JSON-RPC form of `v`, built independently of the codec: each
/// date-time as its extended ISO 8601 text, each byte string as base64.
fn json_form(v: &Value) -> Value {
    if let Some(t) = value::as_datetime(v) {
        return Value::from(t.to_string());
    }
    if let Some(b) = value::as_bytes(v) {
        return Value::from(base64_encode(&b));
    }
    match v {
        Value::Array(items) => Value::Array(items.iter().map(json_form).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), json_form(v))).collect()),
        other => other.clone(),
    }
}

/// The args of every call the recording method got, in order.
type Seen = Rc<RefCell<Vec<Vec<Value>>>>;

/// A registry with one method of typed params that records what its
/// handler saw.
fn recording() -> (Registry<()>, Seen) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let mut r = Registry::new();
    r.add(
        Method::new("typed", move |_: &mut (), args: &Args| {
            log.borrow_mut().push(args.values().to_vec());
            Reply::Value(Value::Array(args.values().to_vec()))
        })
        .param(ParamType::DateTime, "when")
        .param(ParamType::Base64, "data")
        .param(ParamType::Any, "rest")
        .returns(ParamType::Array),
    )
    .unwrap();
    (r, seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_value_round_trips_through_xmlrpc(v in arb_value()) {
        prop_assert_eq!(through_xmlrpc(&v), v);
    }

    #[test]
    fn any_value_travels_jsonrpc_in_its_documented_form(v in arb_value()) {
        // Parsed back the same way, as serde_json parses floats only
        // nearly exactly.
        let expected: Value = serde_json::from_str(&json_form(&v).to_string()).expect("json");
        prop_assert_eq!(through_jsonrpc(&v), expected);
    }

    #[test]
    fn a_handler_sees_the_same_values_over_both_protocols(
        t in arb_datetime(),
        data in vec(any::<u8>(), 0..64),
        rest in arb_value(),
    ) {
        let (mut r, seen) = recording();
        let typed = vec![value::datetime(&t), value::bytes(&data), rest.clone()];
        // XML-RPC carries the typed values themselves; JSON-RPC their text.
        let params: String = typed.iter().map(|v| {
            let response = xmlrpc::encode_response(v);
            let start = response.find("<param>").expect("a param") ;
            let end = response.rfind("</param>").expect("a param");
            format!("{}</param>", &response[start..end])
        }).collect();
        let xml = format!("<methodCall><methodName>typed</methodName><params>{params}</params></methodCall>");
        let call = xmlrpc::decode_call(xml.as_bytes()).expect("a call");
        let json = json_form(&Value::Array(typed.clone()));
        let params = Params::Positional(vec![json[0].clone(), json[1].clone(), rest.clone()]);
        let over_xml = r.dispatch(&mut (), "typed", Params::Positional(call.params));
        let over_json = r.dispatch(&mut (), "typed", params);
        prop_assert!(matches!(over_xml, Reply::Value(_)) && matches!(over_json, Reply::Value(_)));
        let seen = seen.borrow();
        prop_assert_eq!(&seen[0][..2], &typed[..2]);
        prop_assert_eq!(&seen[1][..2], &typed[..2]);
        prop_assert_eq!(value::as_datetime(&seen[1][0]), Some(t));
        prop_assert_eq!(value::as_bytes(&seen[1][1]), Some(data));
    }
}
