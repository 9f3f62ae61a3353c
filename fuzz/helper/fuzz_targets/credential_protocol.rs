//! git's credential protocol as the helper reads it from stdin: any bytes are an error
//! value, never a panic; an accepted request written back reads as the same request; and
//! what the helper derives from it (the needed scope, the answer) never panics either.
#![no_main]

use jit_helper::challenge::needed_scope;
use jit_helper::protocol::{Answer, Request};
use jit_proto::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = Request::read(data) else {
        return;
    };
    let mut written = Vec::new();
    req.write(&mut written)
        .expect("an accepted request is writable");
    let again = Request::read(written.as_slice()).expect("a written request parses");
    assert_eq!(again, req);
    let _ = needed_scope(&req.wwwauth, req.path.as_deref());
    let _ = Answer::for_token(&req, Secret::new("t"), 1).write(std::io::sink());
});
