//! Tests of the registry itself: what it refuses, how handlers read their
//! arguments, and which values each param type accepts.

use super::test_rig::*;
use super::*;

#[test]
fn registry_refuses_bad_methods() {
    let mut r = registry();
    let noop = || Method::new("my.echo", |_: &mut Ctx, _: &Args| Reply::Value(Value::Null));
    let errors = [
        r.add(noop()).unwrap_err(),
        r.add(Method::new("system.listMethods", |_: &mut Ctx, _: &Args| Reply::Value(Value::Null))).unwrap_err(),
        r.add(Method::new("", |_: &mut Ctx, _: &Args| Reply::Value(Value::Null))).unwrap_err(),
        r.add(Method::new("rpc.x", |_: &mut Ctx, _: &Args| Reply::Value(Value::Null))).unwrap_err(),
        r.add(
            Method::new("dup.param", |_: &mut Ctx, _: &Args| Reply::Value(Value::Null))
                .param(ParamType::Int, "a")
                .param(ParamType::String, "a"),
        )
        .unwrap_err(),
    ];
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(text.join("\n"), @r"
    add method 'my.echo': name already registered
    add method 'system.listMethods': name already registered
    add method: empty name
    add method 'rpc.x': names starting with 'rpc.' are reserved
    add method 'dup.param': param 'a' declared twice
    ");
    assert!(matches!(errors[0], AddError::Duplicate(ref n) if n == "my.echo"));
}

#[test]
fn args_by_name_and_position() {
    let mut r: Registry<Vec<String>> = Registry::new();
    r.add(
        Method::new("t", |seen: &mut Vec<String>, args: &Args| {
            seen.push(format!(
                "{:?} {:?} {:?} {} {}",
                args.get_str("name"),
                args.get_i64("n"),
                args.index(1),
                args.len(),
                args.signature()
            ));
            Reply::Value(Value::Null)
        })
        .param(ParamType::String, "name")
        .param(ParamType::Int, "n"),
    )
    .unwrap();
    let mut seen = Vec::new();
    r.dispatch(&mut seen, "t", Params::Positional(vec![Value::from("a"), Value::from(1)]));
    let named: Map<String, Value> = serde_json::from_str(r#"{"n":2,"name":"b"}"#).unwrap();
    r.dispatch(&mut seen, "t", Params::Named(named));
    assert_eq!(seen, ["Some(\"a\") Some(1) Some(Number(1)) 2 0", "Some(\"b\") Some(2) Some(Number(2)) 2 0"]);
}

#[test]
fn typed_handlers_take_their_params_by_name_or_position_and_return_anything_into_reply() {
    #[derive(serde::Deserialize)]
    struct Greet {
        name: String,
        times: Option<i64>,
    }
    let mut r: Registry<()> = Registry::new();
    r.add(
        Method::typed("greet", |_: &mut (), p: Greet| -> Result<String, RpcError> {
            match p.times {
                Some(n) if n < 0 => Err(RpcError::invalid_params("times must not be negative")),
                n => Ok(format!("hello {}", p.name).repeat(n.unwrap_or(1) as usize)),
            }
        })
        .param(ParamType::String, "name")
        .signature()
        .param(ParamType::String, "name")
        .param(ParamType::Int, "times"),
    )
    .unwrap();
    r.add(
        Method::typed("pair", |_: &mut (), (a, b): (i64, String)| serde_json::json!([b, a]))
            .param(ParamType::Int, "a")
            .param(ParamType::String, "b"),
    )
    .unwrap();
    r.add(Method::new("text", |_: &mut (), _: &Args| "plain text")).unwrap();
    let named = |j: &str| Params::Named(serde_json::from_str(j).unwrap());
    let answer = |r: &mut Registry<()>, m: &str, p: Params| match r.dispatch(&mut (), m, p) {
        Reply::Value(v) => Ok(v),
        Reply::Error(e) => Err((e.code, e.message)),
        other => panic!("{other:?}"),
    };
    assert_eq!(answer(&mut r, "greet", named(r#"{"name":"x"}"#)), Ok(Value::from("hello x")));
    assert_eq!(
        answer(&mut r, "greet", Params::Positional(vec![Value::from("y"), Value::from(2)])),
        Ok(Value::from("hello yhello y"))
    );
    assert_eq!(answer(&mut r, "greet", named(r#"{"name":"x","times":-1}"#)).unwrap_err().0, codes::INVALID_PARAMS);
    // A call that fits no declared signature is refused before the type is made.
    assert_eq!(answer(&mut r, "greet", named(r#"{"name":1}"#)).unwrap_err().0, codes::INVALID_PARAMS);
    // A tuple takes the params in their declared order, named or not.
    assert_eq!(answer(&mut r, "pair", named(r#"{"b":"s","a":7}"#)), Ok(serde_json::json!(["s", 7])));
    assert_eq!(answer(&mut r, "text", Params::None), Ok(Value::from("plain text")));
}

#[test]
fn param_types() {
    use serde_json::json;
    let values = [json!("s"), json!(1), json!(-1), json!(1.5), json!(true), json!([]), json!({}), json!(null)];
    let mut table = String::new();
    for ty in [
        ParamType::String,
        ParamType::Int,
        ParamType::Double,
        ParamType::Boolean,
        ParamType::Array,
        ParamType::Struct,
        ParamType::Null,
        ParamType::Any,
    ] {
        let accepted: Vec<String> = values.iter().filter(|v| ty.accepts(v)).map(|v| v.to_string()).collect();
        table.push_str(&format!("{ty}: {}\n", accepted.join(" ")));
    }
    insta::assert_snapshot!(table, @r#"
    string: "s"
    int: 1 -1
    double: 1 -1 1.5
    boolean: true
    array: []
    struct: {}
    nil: null
    mixed: "s" 1 -1 1.5 true [] {} null
    "#);
}

#[test]
#[should_panic(expected = "outside -32099..=-32000")]
fn server_error_code_out_of_range_panics() {
    let _ = RpcError::server_error(-32603, "not a server error");
}
