//! `WWW-Authenticate` values as git passes them in `wwwauth[]`, through jit-proto's one
//! parser: any string is an error value, never a panic; accepted challenges render to a
//! canonical form that parses back to the same challenges and renders identically; a Bearer
//! challenge that parses writes back to a value that parses to itself; and the helper's
//! scope policy on top never panics.
#![no_main]

use jit_helper::challenge::needed_scope;
use jit_proto::challenge::{BearerChallenge, parse_challenges, render_challenges};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data).into_owned();
    let _ = needed_scope(std::slice::from_ref(&value), Some("acme/api.git"));
    if let Ok(bearer) = BearerChallenge::parse(&value) {
        let written = bearer.to_header_value();
        let again = BearerChallenge::parse(&written).expect("a written challenge parses");
        assert_eq!(again.to_header_value(), written);
    }
    let Ok(challenges) = parse_challenges(&value) else {
        return;
    };
    let rendered = render_challenges(&challenges);
    let again = parse_challenges(&rendered).expect("rendered challenges parse");
    assert_eq!(again, challenges);
    assert_eq!(render_challenges(&again), rendered);
});
