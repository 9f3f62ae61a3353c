//! git's credential protocol as the helper reads it from stdin, and the answer it writes.
//!
//! Input: the request bytes, optionally followed by a 0xFF byte and the text of a token the
//! broker might return (anything: a hostile broker or a bug could send it).
//!
//! Properties: never a panic; an accepted request written back reads as the same request;
//! what the helper derives from it (the needed scope) never panics; an answer is either
//! refused (a token that would inject a line, or none) or is exactly the expected `key=value`
//! lines, with the token as the value of the one secret key and nothing after the last newline.
#![no_main]

use jit_helper::challenge::needed_scope;
use jit_helper::protocol::{Answer, Request};
use jit_proto::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (request, token) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (
            &data[..i],
            String::from_utf8_lossy(&data[i + 1..]).into_owned(),
        ),
        None => (data, "t0k3n".to_owned()),
    };
    let Ok(req) = Request::read(request) else {
        return;
    };
    let mut written = Vec::new();
    req.write(&mut written)
        .expect("an accepted request is writable");
    let again = Request::read(written.as_slice()).expect("a written request parses");
    assert_eq!(again, req);
    let _ = needed_scope(&req.wwwauth, req.path.as_deref());

    let answer = Answer::for_token(&req, Secret::new(token.clone()), 1_700_000_000);
    let mut out = Vec::new();
    match answer.write(&mut out) {
        Err(_) => {
            assert!(token.is_empty() || token.contains(['\n', '\r', '\0']));
            assert!(out.is_empty(), "a refused answer wrote something");
        }
        Ok(()) => {
            assert!(!token.is_empty() && !token.contains(['\n', '\r', '\0']));
            let text = String::from_utf8(out).expect("the answer is text");
            let body = text
                .strip_suffix('\n')
                .expect("the answer ends with a newline");
            let keys: Vec<&str> = body
                .split('\n')
                .map(|line| line.split_once('=').expect("key=value").0)
                .collect();
            let expected: &[&str] = if req.offers("authtype") {
                &[
                    "capability[]",
                    "authtype",
                    "credential",
                    "password_expiry_utc",
                    "ephemeral",
                ]
            } else {
                &["username", "password", "password_expiry_utc"]
            };
            assert_eq!(keys, expected);
            let secret_key = if req.offers("authtype") {
                "credential"
            } else {
                "password"
            };
            let values: Vec<&str> = body
                .split('\n')
                .filter_map(|line| line.split_once('='))
                .filter(|(k, _)| *k == secret_key)
                .map(|(_, v)| v)
                .collect();
            assert_eq!(values, [token.as_str()]);
        }
    }
});
