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
