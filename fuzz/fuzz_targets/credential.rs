//! `Authorization` header values from untrusted clients (the gateway, `/authz`, the admin
//! API) through `Credential::parse`: any string is an error value, never a panic; an accepted
//! credential is never empty and writes back to a value that parses to the same credential.
#![no_main]

use jit_proto::credential::Credential;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(credential) = Credential::parse(value) else {
        return;
    };
    assert!(!credential.token().expose().is_empty());
    let written = credential.to_header_value();
    assert_eq!(Credential::parse(written.expose()).as_ref(), Ok(&credential));
});
