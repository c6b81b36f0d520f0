//! Wire fidelity and discovery, against real daemons:
//!
//! 1. UserLand's validator1 suite passes through Python's stock
//!    `xmlrpc.client` (every method, several randomized rounds), the dates
//!    and bytes of `manyTypesTest` and of nested structs included;
//! 2. the same methods pass over JSON-RPC, where dates and bytes travel as
//!    ISO 8601 and base64 text;
//! 3. `rpc.discover` on the fixture daemons answers OpenRPC documents that
//!    validate against the vendored meta-schema, and `describe` prints them;
//! 4. bad input gets a short, clear error: a megabyte of it is never
//!    quoted back whole, and values the protocols cannot carry faithfully
//!    (an integer past 64 bits, year 0, a struct that would read as a
//!    tagged value) are refused.
//!
//! The rounds are random but replayable: each has a fixed seed, which a
//! failure names.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;

use forkd_os::Address;
use forkd_tests::{Daemon, TempDir};
use serde_json::{json, Value};

const VALIDATOR: &str = "validator-daemon";
/// The seeds of the randomized rounds.
const SEEDS: [u64; 6] = [1, 2, 3, 5, 8, 13];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a Python script of tests/data/py with `args`.
fn python(script: &str, args: &[String]) -> std::process::Output {
    Command::new("python3")
        .arg(data(&format!("py/{script}")))
        .args(args)
        .env("PYTHONIOENCODING", "utf-8")
        .output()
        .expect("run python3")
}

// 1. validator1 through Python's xmlrpc.client

#[test]
fn validator1_passes_through_pythons_xmlrpc_client() {
    let dir = TempDir::new("wire-validator1-xmlrpc");
    let port = free_port();
    let address: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let d = Daemon::start_at(&dir, VALIDATOR, &address, &[], &[]);
    let url = format!("http://forkd:{}@127.0.0.1:{port}/", d.token());
    let args: Vec<String> = std::iter::once(url).chain(SEEDS.iter().map(u64::to_string)).collect();
    let out = python("validator1.py", &args);
    assert!(out.status.success(), "validator1 failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    let expected: String = SEEDS.iter().map(|s| format!("ROUND {s}: ok\n")).collect();
    assert_eq!(text(&out.stdout), expected);
}

// 2. validator1 over JSON-RPC

/// Deterministic pseudo-random numbers (xorshift64*), one stream per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn text(&mut self, n: i64) -> String {
        let chars: Vec<char> = "abcXYZ019 <>&'\"\u{e9}\u{263a}".chars().collect();
        (0..self.range(0, n)).map(|_| chars[self.range(0, chars.len() as i64 - 1) as usize]).collect()
    }

    fn stooges(&mut self) -> Value {
        json!({"moe": self.range(-1000, 1000), "larry": self.range(-1000, 1000), "curly": self.range(-1000, 1000)})
    }

    /// A date-time in XML-RPC's basic form and in the extended form the
    /// daemon answers over JSON-RPC.
    fn when(&mut self) -> (String, String) {
        let f = [self.range(1, 9999), self.range(1, 12), self.range(1, 28)];
        let t = [self.range(0, 23), self.range(0, 59), self.range(0, 59)];
        (
            format!("{:04}{:02}{:02}T{:02}:{:02}:{:02}", f[0], f[1], f[2], t[0], t[1], t[2]),
            format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", f[0], f[1], f[2], t[0], t[1], t[2]),
        )
    }
}

fn sum(values: &[&Value], member: &str) -> i64 {
    values.iter().map(|v| v[member].as_i64().unwrap()).sum()
}

/// One round of the eight methods over JSON-RPC, inputs from `seed`.
fn jsonrpc_round(d: &Daemon, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let call = |method: &str, params: Value| {
        d.call(&format!("validator1.{method}"), params).unwrap_or_else(|e| panic!("seed {seed}: {method}: {e}"))
    };
    let structs: Vec<Value> = (0..rng.range(1, 10)).map(|_| rng.stooges()).collect();
    let curly = sum(&structs.iter().collect::<Vec<_>>(), "curly");
    assert_eq!(call("arrayOfStructsTest", json!([structs])), json!(curly), "seed {seed}");

    let s = rng.text(60);
    let count = |c: char| s.chars().filter(|&x| x == c).count();
    let counts = json!({"ctLeftAngleBrackets": count('<'), "ctRightAngleBrackets": count('>'),
        "ctAmpersands": count('&'), "ctApostrophes": count('\''), "ctQuotes": count('"')});
    assert_eq!(call("countTheEntities", json!({"text": s})), counts, "seed {seed}");

    let st = rng.stooges();
    let total = sum(&[&st], "moe") + sum(&[&st], "larry") + sum(&[&st], "curly");
    assert_eq!(call("easyStructTest", json!([st])), json!(total), "seed {seed}");

    let nested = json!({"n": rng.range(-1 << 40, 1 << 40), "s": rng.text(20), "none": null,
        "substruct": {"list": [rng.text(5), 1.5, true, [], {}], "deep": {"deeper": {"x": rng.range(0, 9)}}}});
    assert_eq!(call("echoStructTest", json!([nested])), nested, "seed {seed}");

    // Dates and bytes travel as text; the daemon answers them canonical.
    let (basic, extended) = rng.when();
    let n = rng.range(-1 << 40, 1 << 40);
    let flag = rng.range(0, 1) == 1;
    let word = rng.text(40);
    let double = rng.range(-1_000_000, 1_000_000) as f64 / 64.0;
    let many = call("manyTypesTest", json!([n, flag, word, double, basic, "AAEC/f7/"]));
    assert_eq!(many, json!([n, flag, word, double, extended, "AAEC/f7/"]), "seed {seed}");

    let strings: Vec<String> = (0..rng.range(100, 200)).map(|_| rng.text(10)).collect();
    let ends = format!("{}{}", strings[0], strings[strings.len() - 1]);
    assert_eq!(call("moderateSizeArrayCheck", json!([strings])), json!(ends), "seed {seed}");

    let mut calendar = serde_json::Map::new();
    for year in ["1999", "2000", "2001"] {
        let months: serde_json::Map<String, Value> = (1..=12)
            .map(|m| {
                let mut days = serde_json::Map::new();
                days.insert("01".into(), rng.stooges());
                for _ in 0..rng.range(0, 3) {
                    days.insert(format!("{:02}", rng.range(2, 28)), rng.stooges());
                }
                (format!("{m:02}"), Value::Object(days))
            })
            .collect();
        calendar.insert(year.into(), Value::Object(months));
    }
    let day = &calendar["2000"]["04"]["01"];
    let total = sum(&[day], "moe") + sum(&[day], "larry") + sum(&[day], "curly");
    assert_eq!(call("nestedStructTest", json!({"calendar": calendar})), json!(total), "seed {seed}");

    let n = rng.range(-1 << 40, 1 << 40);
    let times = json!({"times10": n * 10, "times100": n * 100, "times1000": n * 1000});
    assert_eq!(call("simpleStructReturnTest", json!([n])), times, "seed {seed}");
}

#[test]
fn validator1_passes_over_jsonrpc() {
    let dir = TempDir::new("wire-validator1-jsonrpc");
    let d = Daemon::start(&dir, VALIDATOR, &[], &[]);
    for seed in SEEDS {
        jsonrpc_round(&d, seed);
    }
    // Bad input is a clear error, and the daemon runs on.
    let bad = d.call("validator1.manyTypesTest", json!([1, true, "s", 1.0, "1998-13-01T00:00:00", "AAEC"]));
    let message = bad.expect_err("an invalid date-time is refused").to_string();
    assert!(message.contains("param 'dateTime' expects dateTime.iso8601, got string"), "{message}");
    let missing = d.call("validator1.easyStructTest", json!([{"moe": 1}])).expect_err("a missing member");
    assert!(missing.to_string().contains("expected an integer member 'larry'"), "{missing}");
    assert_eq!(d.call("validator1.simpleStructReturnTest", json!([1])).unwrap()["times10"], json!(10));
}

// 3. rpc.discover and describe

/// The fixture daemons whose documents are validated, with the
/// environment that keeps each small.
const FIXTURES: &[(&str, &[(&str, &str)])] = &[
    ("echo-daemon", &[]),
    ("copy-daemon", &[]),
    ("pool-daemon", &[("POOL_SIZE", "1"), ("POOL_WORKERS", "1")]),
    (VALIDATOR, &[]),
];

/// `describe`'s output, checked against `rpc.discover` itself: the
/// document of the running daemon, whole.
fn described(d: &Daemon, bin_name: &str) -> Value {
    let out = d.control(bin_name, &["describe"]);
    assert!(out.status.success(), "{bin_name} describe: {}", text(&out.stderr));
    let document: Value = serde_json::from_slice(&out.stdout).expect("describe prints JSON");
    assert_eq!(document, d.call("rpc.discover", Value::Null).unwrap(), "describe prints rpc.discover's answer");
    document
}

#[test]
fn rpc_discover_documents_of_the_fixtures_validate_against_the_openrpc_meta_schema() {
    let dir = TempDir::new("wire-openrpc");
    let mut files = Vec::new();
    for (bin_name, env) in FIXTURES {
        let own = TempDir::new(&format!("wire-openrpc-{bin_name}"));
        let d = Daemon::start(&own, bin_name, &[], env);
        let document = described(&d, bin_name);
        // Generated from the registry: every method it answers, no other.
        let names: Vec<Value> = document["methods"].as_array().unwrap().iter().map(|m| m["name"].clone()).collect();
        assert_eq!(Value::Array(names.clone()), d.call("system.listMethods", Value::Null).unwrap(), "{bin_name}");
        assert!(names.contains(&json!("rpc.discover")), "{bin_name}: rpc.discover describes itself");
        let info = d.call("daemon.info", Value::Null).unwrap();
        assert_eq!(document["info"]["title"], info["description"], "{bin_name}");
        assert_eq!(document["info"]["version"], info["version"], "{bin_name}");
        let file = dir.join(&format!("{bin_name}.openrpc.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
        files.push(file.to_string_lossy().into_owned());
    }
    let args: Vec<String> = std::iter::once(data("").to_string_lossy().into_owned()).chain(files.clone()).collect();
    let out = python("validate_openrpc.py", &args);
    assert!(out.status.success(), "invalid documents:\n{}{}", text(&out.stdout), text(&out.stderr));
    let expected: String = files.iter().map(|f| format!("valid {f}\n")).collect();
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn the_validator_tells_the_meta_schema_what_it_refuses() {
    // The validation is real: a document that breaks the meta-schema (a
    // param without a schema, a schema that is not one) is refused.
    let dir = TempDir::new("wire-openrpc-invalid");
    let bad = json!({"openrpc": "1.3.2", "info": {"title": "x", "version": "1"},
        "methods": [{"name": "m", "params": [{"name": "p"}], "result": {"name": "r", "schema": {"type": 7}}}]});
    let file = dir.join("bad.json");
    std::fs::write(&file, bad.to_string()).unwrap();
    let out =
        python("validate_openrpc.py", &[data("").to_string_lossy().into_owned(), file.to_string_lossy().into_owned()]);
    assert!(!out.status.success(), "a broken document passed: {}", text(&out.stdout));
    assert!(text(&out.stdout).starts_with("invalid "), "{}", text(&out.stdout));
}

#[test]
fn describe_text_lists_each_method_with_its_types_description_and_errors() {
    let dir = TempDir::new("wire-describe-text");
    let d = Daemon::start(&dir, "copy-daemon", &[], &[]);
    let out = d.control("copy-daemon", &["describe", "--text"]);
    assert!(out.status.success(), "describe --text: {}", text(&out.stderr));
    let listing = text(&out.stdout);
    let version = d.call("daemon.info", Value::Null).unwrap()["version"].as_str().unwrap().to_string();
    assert!(listing.starts_with(&format!("Copy Daemon {version} (OpenRPC 1.3.2)\n")), "{listing}");
    for line in [
        "handyman.changename(name: string) -> struct\n    Change the name of the handyman worker",
        "-32001 No worker of that name",
        "worker.status() -> array\nworker.status(name: string) -> array\n",
        "worker.scale(name: string, instances: int) -> int\n",
        "rpc.discover() -> struct\n",
        "system.multicall(requests: array) -> array\n",
    ] {
        assert!(listing.contains(line), "missing {line:?} in:\n{listing}");
    }
}

// 4. bad input: short, clear errors

/// The body of the answer to one HTTP POST of `body` as `content_type`.
fn post(d: &Daemon, content_type: &str, body: &str) -> String {
    let Address::Unix(path) = &d.socket else { panic!("not a unix socket: {}", d.socket) };
    let mut s = UnixStream::connect(path).expect("connect to the daemon");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or(answer)
}

fn xml_call(method: &str, params: &[&str]) -> String {
    let params: String = params.iter().map(|p| format!("<param>{p}</param>")).collect();
    format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"
    )
}

#[test]
fn a_megabyte_of_invalid_input_gets_a_short_fault_and_the_daemon_runs_on() {
    let dir = TempDir::new("wire-huge-fault");
    let d = Daemon::start(&dir, VALIDATOR, &[], &[]);
    let huge = ">".repeat(1_000_000);
    let many = "validator1.manyTypesTest";
    for (body, code) in [
        (xml_call(many, &[&format!("<value><base64>{huge}</base64></value>")]), -32600),
        (xml_call(many, &[&format!("<value><boolean>{huge}</boolean></value>")]), -32600),
        (xml_call(many, &[&format!("<value><int>{huge}</int></value>")]), -32600),
        (xml_call(&"m".repeat(1_000_000), &[]), -32601),
    ] {
        let fault = post(&d, "text/xml", &body);
        assert!(fault.len() < 1024, "a {}-byte fault", fault.len());
        assert!(fault.contains(&format!("<int>{code}</int>")) && fault.contains('\u{2026}'), "{fault}");
    }
    let json = format!(r#"{{"jsonrpc":"2.0","method":"{}","id":1}}"#, "m".repeat(1_000_000));
    let error = post(&d, "application/json", &json);
    assert!(error.len() < 1024 && error.contains("-32601"), "{} bytes: {}", error.len(), &error[..200]);
    assert_eq!(d.call("validator1.simpleStructReturnTest", json!([1])).unwrap()["times10"], json!(10));
}

#[test]
fn values_the_wire_cannot_carry_faithfully_are_refused() {
    let dir = TempDir::new("wire-refused");
    let d = Daemon::start(&dir, VALIDATOR, &[], &[]);
    // Integers past 64 bits, which once became 0.
    for n in ["9223372036854775808", "18446744073709551615"] {
        let n: Value = serde_json::from_str(n).unwrap();
        let error = d.call("validator1.simpleStructReturnTest", json!([n])).expect_err("past i64").to_string();
        assert!(error.contains("-32602") && error.contains("expects int, got int out of range"), "{error}");
    }
    // Year 0, which Python's datetime cannot hold.
    let error = d
        .call("validator1.manyTypesTest", json!([1, true, "s", 1.0, "0000-01-10T07:53:26", "AAEC"]))
        .expect_err("year 0")
        .to_string();
    assert!(error.contains("param 'dateTime' expects dateTime.iso8601"), "{error}");
    let date = "<value><dateTime.iso8601>00000101T00:00:00</dateTime.iso8601></value>";
    let fault = post(&d, "text/xml", &xml_call("validator1.echoStructTest", &[date]));
    assert!(fault.contains("<int>-32600</int>") && fault.contains("00000101T00:00:00"), "{fault}");
    // A struct whose only member is a tag's name stays no struct.
    for name in ["$base64", "$dateTime.iso8601"] {
        let one = format!("<value><struct><member><name>{name}</name><value>aGk=</value></member></struct></value>");
        let fault = post(&d, "text/xml", &xml_call("validator1.echoStructTest", &[&one]));
        assert!(fault.contains("<int>-32600</int>") && fault.contains(&format!("'{name}'")), "{fault}");
    }
    assert_eq!(d.call("validator1.simpleStructReturnTest", json!([1])).unwrap()["times10"], json!(10));
}

#[test]
fn pythons_client_in_iso_8859_1_is_understood() {
    let dir = TempDir::new("wire-latin-1");
    let port = free_port();
    let address: Address = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let d = Daemon::start_at(&dir, VALIDATOR, &address, &[], &[]);
    let url = format!("http://forkd:{}@127.0.0.1:{port}/", d.token());
    let script = "import sys, xmlrpc.client as x\n\
        p = x.ServerProxy(sys.argv[1], encoding='iso-8859-1', use_builtin_types=True)\n\
        v = {'s': 'caf\\u00e9 \\u263a <&>'}\n\
        r = p.validator1.echoStructTest(v)\n\
        print('ok' if r == v else 'got %r' % (r,))\n";
    let out = Command::new("python3").args(["-c", script, &url]).env("PYTHONIOENCODING", "utf-8").output().unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");
}
