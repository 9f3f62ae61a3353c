//! `WWW-Authenticate` values as git passes them in `wwwauth[]`: any string is an error value,
//! never a panic; accepted challenges render to a canonical form that parses back to the
//! same challenges and renders identically; scope extraction never panics.
#![no_main]

use jit_helper::challenge::{needed_scope, parse_challenges, render_challenges};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data).into_owned();
    let _ = needed_scope(std::slice::from_ref(&value), Some("acme/api.git"));
    let Ok(challenges) = parse_challenges(&value) else {
        return;
    };
    let rendered = render_challenges(&challenges);
    let again = parse_challenges(&rendered).expect("rendered challenges parse");
    assert_eq!(again, challenges);
    assert_eq!(render_challenges(&again), rendered);
});
