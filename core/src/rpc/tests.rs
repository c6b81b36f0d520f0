//! Data-driven tests of the RPC layer: every case feeds bytes to a [`Conn`]
//! backed by a test registry and snapshots everything the connection says
//! back, so the snapshots in `snapshots/` read as a transcript of the
//! protocol: `-->` is what the client sent, `<--` what it got.

use super::test_rig::*;
use super::*;

#[test]
fn jsonrpc_spec_examples() {
    let transcript = check(&[
        (
            "positional parameters 1",
            br#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}
"#,
        ),
        (
            "positional parameters 2",
            br#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}
"#,
        ),
        (
            "named parameters 1",
            br#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}
"#,
        ),
        (
            "named parameters 2",
            br#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}
"#,
        ),
        (
            "a notification",
            br#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}
"#,
        ),
        (
            "a notification without params",
            br#"{"jsonrpc": "2.0", "method": "foobar"}
"#,
        ),
        (
            "non-existent method",
            br#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}
"#,
        ),
        (
            "invalid JSON",
            br#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]
"#,
        ),
        (
            "invalid Request object",
            br#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}
"#,
        ),
        (
            "batch, invalid JSON",
            br#"[ {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method" ]
"#,
        ),
        ("empty Array", b"[]\n"),
        ("invalid Batch (but not empty)", b"[1]\n"),
        ("invalid Batch", b"[1,2,3]\n"),
        (
            "batch",
            br#"[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}, {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"}, {"foo": "boo"}, {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"}, {"jsonrpc": "2.0", "method": "get_data", "id": "9"}]
"#,
        ),
        (
            "batch, all notifications",
            br#"[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]
"#,
        ),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn jsonrpc_ids() {
    let transcript = check(&[
        ("string id", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"x\"],\"id\":\"abc\"}\n"),
        ("null id is answered", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"x\"],\"id\":null}\n"),
        ("negative id", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"x\"],\"id\":-7}\n"),
        ("fractional id", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"x\"],\"id\":1.5}\n"),
        ("large id", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"x\"],\"id\":18446744073709551615}\n"),
        ("object id", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"x\"],\"id\":{\"a\":1}}\n"),
        ("array id", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"x\"],\"id\":[1]}\n"),
        ("boolean id", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"x\"],\"id\":true}\n"),
        ("id echoed on invalid request", b"{\"jsonrpc\":\"1.0\",\"method\":\"my.echo\",\"id\":9}\n"),
        ("notification that fails is silent", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[1]}\n"),
        (
            "notification reaches its method",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.notify\",\"params\":{\"message\":\"hi\"}}\n",
        ),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn jsonrpc_errors() {
    let transcript = check(&[
        (
            "-32700 parse error closes",
            b"{\"jsonrpc\":\n{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"never\"],\"id\":1}\n",
        ),
        ("-32700 trailing garbage", b"{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":1} x\n"),
        ("-32700 not utf-8", b"\"\xff\"\n"),
        ("-32600 not an object", b"\"hello\"\n"),
        ("-32600 jsonrpc missing", b"{\"method\":\"get_data\",\"id\":1}\n"),
        ("-32600 jsonrpc 1.0", b"{\"jsonrpc\":\"1.0\",\"method\":\"get_data\",\"id\":1}\n"),
        ("-32600 jsonrpc number", b"{\"jsonrpc\":2.0,\"method\":\"get_data\",\"id\":1}\n"),
        ("-32600 method missing", b"{\"jsonrpc\":\"2.0\",\"id\":1}\n"),
        ("-32600 params is a string", b"{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"params\":\"x\",\"id\":1}\n"),
        ("-32600 params is null", b"{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"params\":null,\"id\":1}\n"),
        (
            "-32600 does not close",
            b"{\"jsonrpc\":\"2.0\",\"method\":1,\"id\":1}\n{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":2}\n",
        ),
        ("-32601 method not found", b"{\"jsonrpc\":\"2.0\",\"method\":\"no.such\",\"id\":1}\n"),
        ("-32601 rpc. names", b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.other\",\"id\":1}\n"),
        (
            "-32602 missing param (named)",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":{\"messag\":\"x\"},\"id\":1}\n",
        ),
        ("-32602 missing param (no params)", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"id\":1}\n"),
        ("-32602 wrong type (positional)", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[1],\"id\":1}\n"),
        (
            "-32602 wrong type (named)",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"params\":{\"a\":1,\"b\":2.5},\"id\":1}\n",
        ),
        ("-32602 too many params", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"a\",\"b\"],\"id\":1}\n"),
        ("-32602 too few params", b"{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"params\":[1],\"id\":1}\n"),
        (
            "-32602 params to a method without",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"params\":[1],\"id\":1}\n",
        ),
        (
            "-32602 unexpected named param",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":{\"message\":\"x\",\"extra\":1},\"id\":1}\n",
        ),
        (
            "-32602 no signature of that length",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.multi\",\"params\":[1,\"a\",3],\"id\":1}\n",
        ),
        (
            "-32602 signature of that length, wrong type",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.multi\",\"params\":[1,2],\"id\":1}\n",
        ),
        (
            "second signature matches",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.multi\",\"params\":[1,\"a\"],\"id\":1}\n",
        ),
        ("-32602 got double", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[1.5],\"id\":1}\n"),
        ("-32602 got boolean", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[false],\"id\":1}\n"),
        ("-32602 got array", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[[]],\"id\":1}\n"),
        ("-32602 got struct", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[{}],\"id\":1}\n"),
        ("-32602 got nil", b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[null],\"id\":1}\n"),
        (
            "-32602 nil expected",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.types\",\"params\":[\"s\",1,1,true,[],{},0],\"id\":1}\n",
        ),
        (
            "every type accepted",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.types\",\"params\":[\"s\",1,1,true,[],{},null],\"id\":1}\n",
        ),
        ("-32603 internal error", b"{\"jsonrpc\":\"2.0\",\"method\":\"test.fail\",\"id\":1}\n"),
        ("server error with data", b"{\"jsonrpc\":\"2.0\",\"method\":\"test.busy\",\"id\":1}\n"),
        (
            "server error from a handler",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"params\":[9223372036854775807,1],\"id\":1}\n",
        ),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn ndjson_framing() {
    let mut long_line = br#"{"jsonrpc":"2.0","method":"my.echo","params":[""#.to_vec();
    long_line.extend_from_slice(&[b'x'; 200]);
    long_line.extend_from_slice(b"\"],\"id\":1}\n");
    let mut small = Harness::with_limits(Limits { max_request: 100, ..Limits::default() });
    small.feed(&long_line[..150]);
    let before_newline = small.transcript();
    let mut small = Harness::with_limits(Limits { max_request: 100, ..Limits::default() });
    small.feed(b"{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":1}\n");
    small.feed(&long_line);
    let whole_line = small.transcript();
    let transcript = format!(
        "{}### too large before its newline\n{before_newline}\n### too large after a good line\n{whole_line}",
        check(&[
            (
                "pipelined lines answered in order",
                b"{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"params\":[1,2],\"id\":1}\n{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"params\":[3,4],\"id\":2}\n",
            ),
            (
                "blank lines, whitespace and CRLF",
                b"  \n\r\n\t{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":1}\r\n\n",
            ),
            ("incomplete line waits", b"{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":1}"),
            ("XML on the line protocol is not JSON", b"<methodCall/>\n"),
        ])
    );
    insta::assert_snapshot!(transcript);
}

#[test]
fn introspection_over_jsonrpc() {
    let transcript = check(&[
        ("listMethods", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.listMethods\",\"id\":1}\n"),
        ("methodSignature", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.methodSignature\",\"params\":[\"my.echo\"],\"id\":1}\n"),
        ("methodSignature, two signatures", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.methodSignature\",\"params\":[\"test.multi\"],\"id\":1}\n"),
        ("methodSignature, no params", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.methodSignature\",\"params\":[\"get_data\"],\"id\":1}\n"),
        ("methodSignature of itself", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.methodSignature\",\"params\":{\"method\":\"system.methodSignature\"},\"id\":1}\n"),
        ("methodSignature, unknown", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.methodSignature\",\"params\":[\"no.such\"],\"id\":1}\n"),
        ("methodHelp", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.methodHelp\",\"params\":[\"my.echo\"],\"id\":1}\n"),
        ("methodHelp, no description", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.methodHelp\",\"params\":[\"sum\"],\"id\":1}\n"),
        ("methodHelp, unknown", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.methodHelp\",\"params\":[\"no.such\"],\"id\":1}\n"),
        ("getCapabilities", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.getCapabilities\",\"id\":1}\n"),
        (
            "multicall",
            br#"{"jsonrpc":"2.0","method":"system.multicall","params":[[{"methodName":"my.echo","params":["hi"]},{"methodName":"test.add","params":{"a":1,"b":2}},{"methodName":"get_data"},{"methodName":"no.such","params":[]},{"methodName":"my.echo","params":[1]},{"methodName":"test.defer","params":[]},{"methodName":"system.multicall","params":[[]]},{"params":[]},{"methodName":"my.echo","params":"x"},"entry"]],"id":1}
"#,
        ),
        ("multicall, not an array", b"{\"jsonrpc\":\"2.0\",\"method\":\"system.multicall\",\"params\":[{}],\"id\":1}\n"),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn xmlrpc_over_http() {
    let echo = xml_call("my.echo", &["<value><string>I'm &lt;here&gt; &amp; there</string></value>"]);
    let bare = xml_call("my.echo", &["<value>  bare  text </value>"]);
    let types = xml_call(
        "test.identity",
        &["<value><struct>\
            <member><name>int</name><value><int>42</int></value></member>\
            <member><name>i4</name><value><i4>-7</i4></value></member>\
            <member><name>i8</name><value><i8>9000000000</i8></value></member>\
            <member><name>boolean</name><value><boolean>1</boolean></value></member>\
            <member><name>double</name><value><double>-2.5</double></value></member>\
            <member><name>integral double</name><value><double>3</double></value></member>\
            <member><name>date</name><value><dateTime.iso8601>19980717T14:08:55</dateTime.iso8601></value></member>\
            <member><name>base64</name><value><base64>eW91IGNhbid0IHJlYWQgdGhpcyE=</base64></value></member>\
            <member><name>nil</name><value><nil/></value></member>\
            <member><name>empty string</name><value><string/></value></member>\
            <member><name>cdata</name><value><string><![CDATA[<raw> & ]]>text</string></value></member>\
            <member><name>array</name><value><array><data><value>a</value><value><int>1</int></value><value><array><data/></array></value></data></array></value></member>\
            <member><name>escapes</name><value>tab\there &#x263A; &#13;</value></member>\
          </struct></value>"],
    );
    let add = xml_call("test.add", &["<value><i4>40</i4></value>", "<value><int>2</int></value>"]);
    let transcript = check_owned(&[
        ("call", post("text/xml", &echo)),
        ("bare value is a string", post("text/xml", &bare)),
        ("every value type round-trips", post("text/xml", &types)),
        ("int params", post("text/xml", &add)),
        ("415: no XML or JSON type runs nothing", post("application/octet-stream", &xml_call("get_data", &[]))),
        ("no params element", post("text/xml", "<methodCall><methodName>get_data</methodName></methodCall>")),
        ("fault: method not found", post("text/xml", &xml_call("no.such", &[]))),
        ("fault: invalid params", post("text/xml", &xml_call("my.echo", &["<value><int>1</int></value>"]))),
        ("fault: internal error", post("text/xml", &xml_call("test.fail", &[]))),
        ("fault: -32700 unclosed element", post("text/xml", "<methodCall><methodName>x</methodName>")),
        ("fault: -32700 mismatched tags", post("text/xml", "<methodCall><methodName>x</methodCall></methodName>")),
        ("fault: -32700 unknown entity", post("text/xml", "<methodCall><methodName>&bogus;</methodName></methodCall>")),
        ("fault: -32600 not a methodCall", post("text/xml", "<methodResponse/>")),
        ("fault: -32600 empty methodName", post("text/xml", "<methodCall><methodName> </methodName></methodCall>")),
        ("fault: -32600 bad int", post("text/xml", &xml_call("test.identity", &["<value><int>4x</int></value>"]))),
        (
            "fault: -32600 bad boolean",
            post("text/xml", &xml_call("test.identity", &["<value><boolean>yes</boolean></value>"])),
        ),
        (
            "fault: -32600 unknown type",
            post("text/xml", &xml_call("test.identity", &["<value><float>1</float></value>"])),
        ),
        (
            "fault: -32700 content after the call",
            post("text/xml", "<methodCall><methodName>get_data</methodName></methodCall>trailing"),
        ),
        (
            "i8 round-trips",
            post("text/xml", &xml_call("test.identity", &["<value><i8>-9223372036854775808</i8></value>"])),
        ),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn xmlrpc_deep_nesting_is_refused() {
    let depth = 2000;
    let mut value = String::new();
    for _ in 0..depth {
        value.push_str("<value><array><data>");
    }
    for _ in 0..depth {
        value.push_str("</data></array></value>");
    }
    let body = xml_call("test.identity", &[&value]);
    let mut h = Harness::new();
    h.feed(&post("text/xml", &body));
    let out = String::from_utf8(h.take()).unwrap();
    assert!(out.contains("<int>-32600</int>"), "{out}");
    assert!(out.contains("nested over 128 deep"), "{out}");
}

#[test]
fn introspection_over_xmlrpc() {
    let multicall = xml_call(
        "system.multicall",
        &["<value><array><data>\
            <value><struct><member><name>methodName</name><value>my.echo</value></member>\
              <member><name>params</name><value><array><data><value>hi</value></data></array></value></member></struct></value>\
            <value><struct><member><name>methodName</name><value>no.such</value></member>\
              <member><name>params</name><value><array><data/></array></value></member></struct></value>\
          </data></array></value>"],
    );
    let transcript = check_owned(&[
        ("listMethods", post("text/xml", &xml_call("system.listMethods", &[]))),
        ("methodSignature", post("text/xml", &xml_call("system.methodSignature", &["<value>my.echo</value>"]))),
        ("methodHelp", post("text/xml", &xml_call("system.methodHelp", &["<value>my.echo</value>"]))),
        ("getCapabilities", post("text/xml", &xml_call("system.getCapabilities", &[]))),
        ("multicall", post("text/xml", &multicall)),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn http() {
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
    let call = r#"{"jsonrpc":"2.0","method":"my.echo","params":{"message":"hi"},"id":1}"#;
    let pipelined = [
        post("application/json", call),
        get("/health"),
        post("text/xml", &xml_call("test.add", &["<value><int>1</int></value>", "<value><int>2</int></value>"])),
        post("application/json", r#"{"jsonrpc":"2.0","method":"test.notify","params":["x"]}"#),
    ]
    .concat();
    let too_large =
        format!("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", Limits::default().max_request + 1);
    let mut big_head = b"GET /health HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    while big_head.len() <= MAX_HEAD {
        big_head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let many_headers: String = (0..40).map(|i| format!("X-{i}: a\r\n")).collect();
    let transcript = check_owned(&[
        ("JSON-RPC call", post("application/json", call)),
        ("415: text/plain, as a browser form may send, runs nothing", post("text/plain", call)),
        (
            "the spec's batch with invalid JSON, as written there",
            post(
                "application/json",
                "[\n  {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n  {\"jsonrpc\": \"2.0\", \"method\"\n]",
            ),
        ),
        ("JSON-RPC batch", post("application/json", r#"[{"jsonrpc":"2.0","method":"get_data","id":1},{"jsonrpc":"2.0","method":"test.notify","params":["x"]}]"#)),
        ("notification gets 204", post("application/json", r#"{"jsonrpc":"2.0","method":"test.notify","params":["x"]}"#)),
        ("parse error keeps the connection", post("application/json", "{\"jsonrpc\"")),
        ("empty body", post("application/json", "")),
        ("health", get("/health")),
        ("health with a query", get("/health?verbose=1")),
        ("pipelined, answered in order", pipelined),
        ("client asks to close", b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("HTTP/1.0 closes", b"GET /health HTTP/1.0\r\n\r\n".to_vec()),
        ("HTTP/1.0 keep-alive", b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec()),
        ("400 bad head", b"POST / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n".to_vec()),
        ("400 bad content-length", b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1x\r\n\r\n".to_vec()),
        ("400 conflicting content-lengths", b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec()),
        ("400 both framings", b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()),
        ("404 unknown path", get("/nope")),
        ("405 other method", b"DELETE /rpc HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("405 HEAD", b"HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()),
        ("411 no content-length", b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\r\n{}".to_vec()),
        ("411 chunked", b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_vec()),
        ("413 body too large", too_large.into_bytes()),
        ("431 head too large", big_head),
        ("431 too many headers", format!("GET /health HTTP/1.1\r\nHost: localhost\r\n{many_headers}\r\n").into_bytes()),
        ("incomplete body waits", b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n{\"a\"".to_vec()),
    ]);
    insta::assert_snapshot!(transcript);
}

#[test]
fn http_expect_continue() {
    let mut h = Harness::new();
    let body = r#"{"jsonrpc":"2.0","method":"get_data","id":1}"#;
    let head = format!("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len());
    h.feed(head.as_bytes());
    let interim = h.transcript();
    h.feed(&body.as_bytes()[..5]);
    let nothing_more = h.transcript();
    h.feed(&body.as_bytes()[5..]);
    let transcript =
        format!("### head\n{interim}\n### part of the body\n{nothing_more}\n### rest of the body\n{}", h.transcript());
    insta::assert_snapshot!(transcript);
}

#[test]
fn deferred_answers_keep_request_order() {
    let mut h = Harness::new();
    h.feed(
        b"{\"jsonrpc\":\"2.0\",\"method\":\"test.defer\",\"id\":\"first\"}\n\
          {\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"second\"],\"id\":\"second\"}\n\
          [{\"jsonrpc\":\"2.0\",\"method\":\"test.defer\",\"id\":\"b1\"},{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":\"b2\"},{\"jsonrpc\":\"2.0\",\"method\":\"test.defer\",\"id\":\"b3\"},{\"jsonrpc\":\"2.0\",\"method\":\"test.defer\"}]\n\
          {\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":\"last\"}\n",
    );
    let mut transcript = format!("### fed\n{}", h.transcript());
    h.complete(1, Ok(Value::from("b1 done")));
    transcript.push_str(&format!("### completed 1 (batch part, still waiting for 0)\n{}", h.transcript()));
    h.complete(0, Ok(Value::from("first done")));
    transcript.push_str(&format!("### completed 0\n{}", h.transcript()));
    h.complete(3, Ok(Value::from("notification: ignored")));
    h.complete(99, Ok(Value::from("unknown: ignored")));
    transcript.push_str(&format!("### completed 3 (a notification) and 99 (unknown)\n{}", h.transcript()));
    h.complete(2, Err(RpcError::server_error(-32010, "worker gone")));
    transcript.push_str(&format!("### completed 2 with an error\n{}", h.transcript()));
    h.complete(2, Ok(Value::from("twice: ignored")));
    transcript.push_str(&format!("### completed 2 again\n{}", h.transcript()));
    insta::assert_snapshot!(transcript);
}

#[test]
fn deferred_over_http() {
    let mut h = Harness::new();
    h.feed(
        &[
            post("text/xml", &xml_call("test.defer", &[])),
            post("application/json", r#"{"jsonrpc":"2.0","method":"test.defer","id":7}"#),
            b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
        ]
        .concat(),
    );
    let mut transcript = format!("### fed\n{}", h.transcript());
    h.complete(1, Ok(serde_json::json!({"answer": 42})));
    transcript.push_str(&format!("### completed the JSON call\n{}", h.transcript()));
    h.complete(0, Err(RpcError::internal_error("worker crashed")));
    transcript.push_str(&format!("### completed the XML call with a fault\n{}", h.transcript()));
    insta::assert_snapshot!(transcript);
}

#[test]
fn duplicate_defer_id_is_an_error() {
    let mut registry: Registry<()> = Registry::new();
    registry.add(Method::new("same", |_: &mut (), _: &Args| Reply::Deferred(DeferId(5)))).unwrap();
    let mut conn = Conn::new(Limits::default());
    let line =
        b"[{\"jsonrpc\":\"2.0\",\"method\":\"same\",\"id\":1},{\"jsonrpc\":\"2.0\",\"method\":\"same\",\"id\":2}]\n";
    conn.handle_bytes(line, &mut |m, p| registry.dispatch(&mut (), m, p));
    assert_eq!(conn.pending_deferred(), 1);
    conn.complete(DeferId(5), Ok(Value::from("ok")));
    insta::assert_snapshot!(String::from_utf8_lossy(conn.output()), @r#"[{"jsonrpc":"2.0","result":"ok","id":1},{"jsonrpc":"2.0","error":{"code":-32603,"message":"defer id 5 already pending"},"id":2}]"#);
}

#[test]
fn malformed_line_closes_after_earlier_answers() {
    let mut h = Harness::new();
    h.feed(b"{\"jsonrpc\":\"2.0\",\"method\":\"test.defer\",\"id\":1}\nnot json\n{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":2}\n");
    assert!(h.conn.is_closing());
    assert!(!h.conn.should_close(), "a deferred answer is still owed");
    assert!(h.conn.output().is_empty());
    h.complete(0, Ok(Value::Null));
    insta::assert_snapshot!(h.transcript(), @r#"
    <-- {"jsonrpc":"2.0","result":null,"id":1}\n
    <-- {"jsonrpc":"2.0","error":{"code":-32700,"message":"invalid json: expected ident at line 1 column 2"},"id":null}\n
    [closed]
    "#);
}

#[test]
fn eof() {
    // An incomplete line is dropped, complete ones are answered.
    let mut h = Harness::new();
    h.feed(b"{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":1}\n{\"jsonrpc\":\"2.0\"");
    h.conn.handle_eof();
    assert!(h.conn.is_closing());
    assert!(!h.conn.wants_read());
    assert!(!h.conn.should_close(), "output not flushed yet");
    let out = h.take();
    assert_eq!(out, b"{\"jsonrpc\":\"2.0\",\"result\":[\"hello\",5],\"id\":1}\n");
    assert!(h.conn.should_close());

    // A deferred answer is still delivered after EOF.
    let mut h = Harness::new();
    h.feed(b"{\"jsonrpc\":\"2.0\",\"method\":\"test.defer\",\"id\":1}\n");
    h.conn.handle_eof();
    assert!(!h.conn.should_close());
    h.complete(0, Ok(Value::from(1)));
    assert!(!h.conn.should_close());
    assert_eq!(h.take(), b"{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":1}\n");
    assert!(h.conn.should_close());

    // Nothing owed: closes at once; bytes after EOF are dropped.
    let mut h = Harness::new();
    h.feed(b"GET /hea");
    h.conn.handle_eof();
    h.feed(b"lth HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(h.conn.should_close());
    assert!(h.conn.output().is_empty());
}

#[test]
fn backpressure_on_output() {
    let limits = Limits { max_output: 100, ..Limits::default() };
    let request = b"{\"jsonrpc\":\"2.0\",\"method\":\"my.echo\",\"params\":[\"0123456789012345678901234567890123456789\"],\"id\":1}\n";
    let mut h = Harness::with_limits(limits);
    h.feed(&request.repeat(5));
    // One answer (~70 bytes) fits, the second crosses the limit: the rest
    // waits in the input buffer.
    let answer_len = h.conn.output().len() / 2;
    assert_eq!(h.conn.output().len(), 2 * answer_len);
    assert!(!h.conn.wants_read());
    assert!(!h.conn.is_closing());
    let mut answers = 0;
    while !h.conn.output().is_empty() {
        answers += h.take().split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    }
    assert_eq!(answers, 5);
    assert!(h.conn.wants_read());
}

#[test]
fn backpressure_on_pending_answers() {
    let limits = Limits { max_pending: 2, ..Limits::default() };
    let mut h = Harness::with_limits(limits);
    let defer = b"{\"jsonrpc\":\"2.0\",\"method\":\"test.defer\",\"id\":1}\n";
    h.feed(&defer.repeat(4));
    assert_eq!(h.conn.pending_deferred(), 2);
    assert!(!h.conn.wants_read());
    h.complete(0, Ok(Value::from(0)));
    // One slot freed: the third request runs.
    assert_eq!(h.conn.pending_deferred(), 2);
    h.complete(1, Ok(Value::from(1)));
    h.complete(2, Ok(Value::from(2)));
    h.complete(3, Ok(Value::from(3)));
    assert_eq!(h.conn.pending_deferred(), 0);
    assert!(h.conn.wants_read());
    assert_eq!(h.take().iter().filter(|&&b| b == b'\n').count(), 4);
}

/// Inputs whose output must not depend on how they are split into reads.
fn split_inputs() -> Vec<Vec<u8>> {
    vec![
        b"{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"params\":[1,2],\"id\":1}\r\n\n[{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":2},{\"jsonrpc\":\"2.0\",\"method\":\"test.notify\",\"params\":[\"n\"]},3]\n{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":4}\n{\"jsonrpc\"\n".to_vec(),
        [
            post("application/json", r#"{"jsonrpc":"2.0","method":"my.echo","params":["a"],"id":1}"#),
            b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            post("text/xml", &xml_call("test.add", &["<value><int>1</int></value>", "<value><int>2</int></value>"])),
            b"PUT / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ]
        .concat(),
        b"POST".to_vec(),
        b"  PO".to_vec(),
    ]
}

fn run_chunks(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut h = Harness::new();
    for chunk in chunks {
        h.feed(chunk);
    }
    let out = h.take();
    (out, h.conn.is_closing())
}

#[test]
fn output_does_not_depend_on_read_boundaries() {
    for input in split_inputs() {
        let whole = run_chunks(&[&input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(run_chunks(&[a, b]), whole, "split at {at} of {:?}", String::from_utf8_lossy(&input));
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run_chunks(&bytes), whole, "byte by byte");
    }
}
