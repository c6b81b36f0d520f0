//! The client's token lookup and its refusals of unsafe token files.

use super::*;
use forkd_os::testing::TempDir;
use std::os::unix::fs::PermissionsExt;

const T: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn token_file(dir: &TempDir, content: &str, mode: u32) -> PathBuf {
    let path = dir.join("daemon.token");
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn found(t: &str, source: TokenSource) -> Lookup {
    Lookup::Found(t.to_string(), source)
}

#[test]
fn token_lookup_prefers_given_then_env_then_file() {
    let dir = TempDir::new("token-order");
    let file = token_file(&dir, &format!("{T}\n"), 0o600);
    let env = || Some(OsString::from("from-env"));
    assert_eq!(find_token(Some("given"), env(), Some(&file)).unwrap(), found("given", TokenSource::Given));
    assert_eq!(find_token(None, env(), Some(&file)).unwrap(), found("from-env", TokenSource::Env));
    assert_eq!(find_token(None, None, Some(&file)).unwrap(), found(T, TokenSource::File(file.clone())));
    assert_eq!(
        find_token(None, Some(OsString::new()), Some(&file)).unwrap(),
        found(T, TokenSource::File(file.clone())),
        "an empty FORKD_TOKEN is unset"
    );
    assert_eq!(find_token(None, None, None).unwrap(), Lookup::Missing(None));
}

#[test]
fn a_missing_token_file_is_no_token_and_says_where_it_was_looked_for() {
    let dir = TempDir::new("token-missing");
    let file = dir.join("daemon.token");
    assert_eq!(find_token(None, None, Some(&file)).unwrap(), Lookup::Missing(Some(file.clone())));
    let e = ClientError::NoToken { address: "tcp://127.0.0.1:1".parse().unwrap(), token_file: Some(file.clone()) };
    assert_eq!(
        e.to_string(),
        format!("tcp://127.0.0.1:1: no token: pass --token, set FORKD_TOKEN, or read access to {}", file.display())
    );
}

#[test]
fn a_token_file_readable_by_others_is_refused_but_a_given_token_still_goes() {
    let dir = TempDir::new("token-exposed");
    let file = token_file(&dir, T, 0o644);
    let e = find_token(None, None, Some(&file)).unwrap_err();
    assert!(matches!(e, ClientError::TokenFile { error: TokenFileError::Exposed(_), .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("token file {}: may be read by group or others (mode 0644): chmod 600 it", file.display())
    );
    assert_eq!(find_token(Some("given"), None, Some(&file)).unwrap(), found("given", TokenSource::Given));
    assert_eq!(find_token(None, Some("e".into()), Some(&file)).unwrap(), found("e", TokenSource::Env));
}

#[test]
fn a_symlinked_token_file_is_refused() {
    let dir = TempDir::new("token-symlink");
    let target = token_file(&dir, T, 0o600);
    let link = dir.join("link.token");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = find_token(None, None, Some(&link)).unwrap_err();
    assert!(matches!(e, ClientError::TokenFile { error: TokenFileError::Symlink, .. }), "{e:?}");
    assert_eq!(find_token(Some("given"), None, Some(&link)).unwrap(), found("given", TokenSource::Given));
}

#[test]
fn a_token_file_that_is_no_file_or_holds_no_token_is_refused() {
    let dir = TempDir::new("token-bad");
    let e = find_token(None, None, Some(dir.path())).unwrap_err();
    assert!(matches!(e, ClientError::TokenFile { error: TokenFileError::NotRegular, .. }), "{e:?}");
    let empty = token_file(&dir, " \n", 0o600);
    let e = find_token(None, None, Some(&empty)).unwrap_err();
    assert!(matches!(e, ClientError::TokenFile { error: TokenFileError::Malformed, .. }), "{e:?}");
    let big = token_file(&dir, &"a".repeat(5000), 0o600);
    let e = find_token(None, None, Some(&big)).unwrap_err();
    assert!(matches!(e, ClientError::TokenFile { error: TokenFileError::TooLarge, .. }), "{e:?}");
}

/// A daemon stand-in on loopback tcp that answers each line with the
/// next of `answers` (`$ID` replaced by the request's id), and returns
/// the lines it got.
fn fake_daemon(answers: &'static [&'static str]) -> (Address, std::thread::JoinHandle<Vec<Value>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = Address::Tcp(listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut got = Vec::new();
        for answer in answers {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let request: Value = serde_json::from_str(&line).unwrap();
            let answer = answer.replace("$ID", &request["id"].to_string());
            got.push(request);
            writer.write_all(format!("{answer}\n").as_bytes()).unwrap();
        }
        got
    });
    (address, server)
}

const OK: &str = r#"{"jsonrpc":"2.0","result":true,"id":$ID}"#;
const REFUSED: &str = r#"{"jsonrpc":"2.0","error":{"code":-32006,"message":"unauthorized"},"id":$ID}"#;

#[test]
fn on_tcp_the_token_goes_first_and_once() {
    let (address, server) = fake_daemon(&[OK, OK, OK]);
    let options = ConnectOptions::new(Duration::from_secs(30)).token(T);
    let mut c = Client::connect_env(&address, &options, None).unwrap();
    c.call("a", Value::Null).unwrap();
    c.call("b", Value::Null).unwrap();
    drop(c);
    let got = server.join().unwrap();
    assert_eq!(got[0]["method"], "rpc.authenticate");
    assert_eq!(got[0]["params"], json!({ "token": T }));
    assert_eq!((&got[1]["method"], &got[2]["method"]), (&json!("a"), &json!("b")));
}

#[test]
fn a_refused_token_says_where_it_came_from() {
    let (address, server) = fake_daemon(&[REFUSED]);
    let options = ConnectOptions::new(Duration::from_secs(30));
    let e = Client::connect_env(&address, &options, Some("wrong".into())).unwrap_err();
    assert!(matches!(e, ClientError::TokenRefused { from: TokenSource::Env, .. }), "{e:?}");
    assert!(e.to_string().ends_with("the token in FORKD_TOKEN is refused"), "{e}");
    server.join().unwrap();
}

#[test]
fn without_a_token_a_refusal_tells_where_the_client_looked() {
    let dir = TempDir::new("token-none");
    let file = dir.join("daemon.token");
    let (address, server) = fake_daemon(&[REFUSED]);
    let options = ConnectOptions::new(Duration::from_secs(30)).token_file(&file);
    let mut c = Client::connect_env(&address, &options, None).unwrap();
    let e = c.call("daemon.info", Value::Null).unwrap_err();
    assert!(matches!(&e, ClientError::NoToken { token_file: Some(p), .. } if *p == file), "{e:?}");
    assert_eq!(server.join().unwrap()[0]["method"], "daemon.info", "nothing is sent before the call");
}

#[test]
fn debug_hides_the_token() {
    let o = ConnectOptions::new(Duration::from_secs(1)).token(T);
    assert!(!format!("{o:?}").contains(T));
}

/// A daemon stand-in that takes one connection after another: on the
/// n-th it answers each line with the next of `script[n]`, `None`
/// closing the connection unanswered, `Some("")` writing half an answer
/// first. Returns the methods it got, by connection.
fn closing_daemon(script: Vec<Vec<Option<&'static str>>>) -> (Address, std::thread::JoinHandle<Vec<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = Address::Tcp(listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let mut got = Vec::new();
        for answers in script {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut methods = Vec::new();
            for answer in answers {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let request: Value = serde_json::from_str(&line).unwrap();
                methods.push(request["method"].as_str().unwrap_or("").to_string());
                match answer {
                    None => break,
                    Some("") => {
                        writer.write_all(b"{\"jsonrpc\":\"2.0\",").unwrap();
                        break;
                    }
                    Some(a) => writer
                        .write_all(format!("{}\n", a.replace("$ID", &request["id"].to_string())).as_bytes())
                        .unwrap(),
                }
            }
            got.push(methods);
        }
        got
    });
    (address, server)
}

#[test]
fn a_call_closed_before_its_answer_is_sent_again_once_on_a_fresh_connection() {
    let (address, server) = closing_daemon(vec![vec![Some(OK), None], vec![Some(OK), Some(OK)]]);
    let options = ConnectOptions::new(Duration::from_secs(30)).token(T);
    let mut c = Client::connect_env(&address, &options, None).unwrap();
    assert_eq!(c.call("a", Value::Null).unwrap(), json!(true));
    drop(c);
    let got = server.join().unwrap();
    assert_eq!(got, [vec!["rpc.authenticate", "a"], vec!["rpc.authenticate", "a"]], "the token again, then the call");
}

#[test]
fn a_second_close_before_the_answer_is_the_callers() {
    let (address, server) = closing_daemon(vec![vec![None], vec![None]]);
    let mut c = Client::connect_env(&address, &ConnectOptions::new(Duration::from_secs(30)), None).unwrap();
    let e = c.call("a", Value::Null).unwrap_err();
    assert!(matches!(e, ClientError::Closed(_) | ClientError::Io(..)), "{e:?}");
    assert_eq!(server.join().unwrap(), [vec!["a"], vec!["a"]], "sent twice, no more");
}

#[test]
fn a_call_whose_answer_began_is_never_sent_again() {
    let (address, server) = closing_daemon(vec![vec![Some("")]]);
    let mut c = Client::connect_env(&address, &ConnectOptions::new(Duration::from_secs(30)), None).unwrap();
    let e = c.call("a", Value::Null).unwrap_err();
    assert!(matches!(e, ClientError::BadAnswer(_)), "{e:?}");
    assert_eq!(server.join().unwrap(), [vec!["a"]]);
}
