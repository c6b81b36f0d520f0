//! The wire's fidelity, as transcripts: every XML-RPC type and the corners
//! of its grammar, the JSON-RPC forms of the typed values, and the OpenRPC
//! document of the test registry.

use super::test_rig::*;
use super::*;

fn json_call(method: &str, params: &str) -> Vec<u8> {
    format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\",\"params\":{params},\"id\":1}}\n").into_bytes()
}

#[test]
fn typed_values_over_xmlrpc() {
    let date = "<value><dateTime.iso8601>19980310T07:53:26</dateTime.iso8601></value>";
    // Python's xmlrpc.client breaks base64 into lines and pads elements.
    let bytes = "<value><base64>\nAAEC/f7/\n</base64></value>";
    let nested = format!(
        "<value><struct><member><name>outer</name><value><array><data>{date}\
         <value><struct><member><name>blob</name>{bytes}</member></struct></value></data></array></value>\
         </member></struct></value>"
    );
    let spaced = "<?xml version=\"1.0\"?>\n<methodCall>\n  <methodName> test.identity </methodName>\n  \
         <params>\n    <param>\n      <value>\n        <array>\n          <data>\n            \
         <value> <i8>-9000000000</i8> </value>\n            <value><double>1.5e3</double></value>\n            \
         <value><double>-2E-2</double></value>\n            <value><int>2147483648</int></value>\n            \
         <value><nil/></value>\n            <value><array><data/></array></value>\n            \
         <value><struct/></value>\n            <value/>\n            <value>&lt;&#65;&amp;&gt;</value>\n            \
         <value><string><![CDATA[<b>]]> &quot;&apos;</string></value>\n          </data>\n        </array>\n      \
         </value>\n    </param>\n  </params>\n</methodCall>\n";
    let multicall = "<value><array><data>\
         <value><struct><member><name>methodName</name><value>test.typed</value></member>\
         <member><name>params</name><value><array><data>{date}{bytes}</data></array></value></member></struct></value>\
         <value><struct><member><name>methodName</name><value>test.typed</value></member>\
         <member><name>params</name><value><array><data><value>x</value></data></array></value></member></struct></value>\
         <value><struct><member><name>methodName</name><value>no.such</value></member></struct></value>\
         </data></array></value>"
        .replace("{date}", date)
        .replace("{bytes}", bytes);
    let transcript = check_owned(&[
        (
            "a date-time and bytes, nested, come back as themselves",
            post("text/xml", &xml_call("test.identity", &[&nested])),
        ),
        ("the handler sees them typed", post("text/xml", &xml_call("test.typed", &[date, bytes]))),
        (
            "extended form and offset, written in the basic form",
            post(
                "text/xml",
                &xml_call(
                    "test.identity",
                    &["<value><dateTime.iso8601>1998-03-10T07:53:26.5+01:00</dateTime.iso8601></value>"],
                ),
            ),
        ),
        ("whitespace, i8, exponents, nil, empty containers, entities, CDATA", post("text/xml", spaced)),
        (
            "fault: an invalid date-time",
            post(
                "text/xml",
                &xml_call("test.identity", &["<value><dateTime.iso8601>19981310T07:53:26</dateTime.iso8601></value>"]),
            ),
        ),
        (
            "fault: invalid base64",
            post("text/xml", &xml_call("test.identity", &["<value><base64>AAE!</base64></value>"])),
        ),
        ("fault: a date where a string is declared", post("text/xml", &xml_call("my.echo", &[date]))),
        ("multicall: a fault per entry", post("text/xml", &xml_call("system.multicall", &[&multicall]))),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn typed_values_over_jsonrpc() {
    let transcript = check_owned(&[
        (
            "declared params take the texts, typed for the handler",
            json_call("test.typed", r#"["19980310T07:53:26","AAEC/f7/"]"#),
        ),
        ("by name", json_call("test.typed", r#"{"data":"","when":"2024-02-29T23:59:59Z"}"#)),
        (
            "tagged values are written as their text",
            json_call("test.identity", r#"[{"a":[{"$dateTime.iso8601":"1998-03-10T07:53:26"},{"$base64":"aGk="}]}]"#),
        ),
        ("an invalid tag is a plain struct", json_call("test.identity", r#"[{"$base64":"!"}]"#)),
        ("invalid params: not a date-time", json_call("test.typed", r#"["1998-03-10","aGk="]"#)),
        ("invalid params: not base64", json_call("test.typed", r#"["19980310T07:53:26","a"]"#)),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn openrpc_document_of_the_test_registry() {
    let mut r = registry();
    r.set_info("Test Daemon", "1.2.3");
    let document = match r.dispatch(&mut Ctx::default(), "rpc.discover", Params::None) {
        Reply::Value(document) => document,
        other => panic!("rpc.discover answered {other:?}"),
    };
    let names: Vec<&str> = document["methods"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    let listed: Vec<&str> = r.names().collect();
    assert_eq!(names, listed, "every method is described, rpc.discover included");
    insta::assert_json_snapshot!(document);
}

/// What a fresh connection answers to `input`, HTTP head and all.
fn answer(input: &[u8]) -> String {
    let mut h = Harness::new();
    h.feed(input);
    String::from_utf8(h.take()).unwrap()
}

/// The body of an HTTP answer.
fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or(answer, |(_, body)| body)
}

#[test]
fn a_huge_invalid_value_gets_a_short_fault_in_both_codecs() {
    let huge = ">".repeat(1_000_000);
    let xml = |param: &str| post("text/xml", &xml_call("test.identity", &[param]));
    let cases = [
        (xml(&format!("<value><base64>{huge}</base64></value>")), "-32600"),
        (xml(&format!("<value><boolean>{huge}</boolean></value>")), "-32600"),
        (xml(&format!("<value><int>{huge}</int></value>")), "-32600"),
        (xml(&format!("<value><dateTime.iso8601>{huge}</dateTime.iso8601></value>")), "-32600"),
        (xml(&format!("<value><{}/></value>", "x".repeat(1_000_000))), "-32600"),
        (post("text/xml", &xml_call(&"m".repeat(1_000_000), &[])), "-32601"),
        (json_call(&"m".repeat(1_000_000), "[]"), "-32601"),
    ];
    for (input, code) in cases {
        let answer = answer(&input);
        assert!(answer.len() < 1024, "{} bytes answered: {}", answer.len(), &answer[..200]);
        assert!(answer.contains(code) && answer.contains('…'), "{answer}");
    }
}

#[test]
fn faults_are_held_to_the_output_bound() {
    let mut h = Harness::with_limits(Limits { max_output: 300, ..Limits::default() });
    let quoted = "<value><base64>".to_string() + &">".repeat(200) + "</base64></value>";
    h.feed(&post("text/xml", &xml_call("test.identity", &[&quoted])));
    let answer = String::from_utf8(h.take()).unwrap();
    assert!(body(&answer).contains("<int>-32005</int>"), "{answer}");
    assert!(body(&answer).contains("answer too large"), "{answer}");
}

#[test]
fn a_struct_of_one_reserved_member_is_refused_over_xmlrpc() {
    let member = |name: &str, value: &str| format!("<member><name>{name}</name><value>{value}</value></member>");
    for (name, text) in [("$base64", "aGk="), ("$dateTime.iso8601", "1998-03-10T07:53:26")] {
        for declared in ["test.identity", "test.typed"] {
            let one = format!("<value><struct>{}</struct></value>", member(name, text));
            let call = xml_call(declared, &[&one, &one]);
            let answer = answer(&post("text/xml", &call));
            assert!(body(&answer).contains("<int>-32600</int>"), "{answer}");
            assert!(body(&answer).contains(&format!("only member is '{name}'")), "{answer}");
        }
        // With another member it is a plain struct, and comes back as one.
        let two = format!("<value><struct>{}{}</struct></value>", member(name, text), member("x", "1"));
        let answer = answer(&post("text/xml", &xml_call("test.identity", &[&two])));
        assert!(body(&answer).contains(&format!("<name>{name}</name><value><string>{text}</string>")), "{answer}");
    }
}

#[test]
fn a_jsonrpc_tagged_object_is_the_typed_value_as_documented() {
    let tagged = r#"{"$base64":"aGk="}"#;
    let struct_param = format!(r#"["s",1,1.5,true,[],{tagged},null]"#);
    let refused = answer(&json_call("test.types", &struct_param));
    assert!(
        refused.contains(r#""code":-32602"#) && refused.contains("param 't' expects struct, got base64"),
        "{refused}"
    );
    let typed = answer(&json_call("test.typed", &format!(r#"[{{"$dateTime.iso8601":"19980310T07:53:26"}},{tagged}]"#)));
    assert!(typed.contains(r#""year":1998"#) && typed.contains(r#""length":2"#), "{typed}");
    assert_eq!(
        answer(&json_call("test.identity", &format!("[{tagged}]"))),
        "{\"jsonrpc\":\"2.0\",\"result\":\"aGk=\",\"id\":1}\n"
    );
}

#[test]
fn an_int_outside_64_bits_is_invalid_params() {
    for n in ["9223372036854775808", "18446744073709551615"] {
        let answer = answer(&json_call("test.add", &format!("[{n},1]")));
        assert!(answer.contains(r#""code":-32602"#), "{n}: {answer}");
        assert!(answer.contains("param 'a' expects int, got int out of range"), "{answer}");
    }
    let edge = answer(&json_call("test.add", "[-9223372036854775808,0]"));
    assert!(edge.contains(r#""result":-9223372036854775808"#), "{edge}");
    for ty in ["int", "i4", "i8"] {
        let over = format!("<value><{ty}>9223372036854775808</{ty}></value>");
        let answer = answer(&post("text/xml", &xml_call("test.add", &[&over, "<value><int>1</int></value>"])));
        assert!(body(&answer).contains(&format!("invalid &lt;{ty}&gt; '9223372036854775808'")), "{answer}");
    }
}

#[test]
fn year_zero_is_refused_in_both_codecs() {
    let xml = "<value><dateTime.iso8601>00000101T00:00:00</dateTime.iso8601></value>";
    let answer_xml = answer(&post("text/xml", &xml_call("test.identity", &[xml])));
    assert!(body(&answer_xml).contains("invalid &lt;dateTime.iso8601&gt; '00000101T00:00:00'"), "{answer_xml}");
    let answer_json = answer(&json_call("test.typed", r#"["0000-01-10T07:53:26","aGk="]"#));
    assert!(answer_json.contains("param 'when' expects dateTime.iso8601, got string"), "{answer_json}");
}

#[test]
fn latin_1_documents_are_read_and_other_encodings_refused() {
    let mut latin = b"<?xml version='1.0' encoding='iso-8859-1'?>\n<methodCall><methodName>my.echo</methodName>\
        <params><param><value><string>caf\xe9 &#9786;</string></value></param></params></methodCall>"
        .to_vec();
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        latin.len()
    )
    .into_bytes();
    request.append(&mut latin);
    let answer_latin = answer(&request);
    assert!(body(&answer_latin).contains("<string>café ☺</string>"), "{answer_latin}");
    let utf16 = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><methodCall><methodName>my.echo</methodName></methodCall>";
    let refused = answer(&post("text/xml", utf16));
    assert!(
        body(&refused).contains("<int>-32700</int>") && body(&refused).contains("'utf-16' is not supported"),
        "{refused}"
    );
}

#[test]
fn the_document_lists_every_code_of_the_table() {
    let document = match registry().dispatch(&mut Ctx::default(), "rpc.discover", Params::None) {
        Reply::Value(document) => document,
        other => panic!("rpc.discover answered {other:?}"),
    };
    let errors = document["components"]["errors"].as_object().unwrap();
    let listed: Vec<i64> = errors.values().map(|e| e["code"].as_i64().unwrap()).collect();
    let table: Vec<i64> = codes::TABLE.iter().map(|(_, code, _)| *code).collect();
    assert_eq!(listed.len(), table.len());
    for code in table.iter().chain(&[-32001, -32002, -32003, -32004, -32005, -32006, -32007, -32700, -32600]) {
        assert!(listed.contains(code), "{code} missing from {listed:?}");
    }
}
