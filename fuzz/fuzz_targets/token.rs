//! Broker tokens from the network (gateway, /authz, introspection, admin API): verification
//! of arbitrary text never panics and never accepts anything it did not sign.
#![no_main]

use std::sync::{Arc, OnceLock};

use jit_broker::keys::KeyRing;
use jit_broker::token::TokenSigner;
use libfuzzer_sys::fuzz_target;

fn signer() -> &'static TokenSigner {
    static SIGNER: OnceLock<TokenSigner> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let ring = KeyRing::ephemeral().expect("the system random generator works");
        TokenSigner::new(Arc::new(ring), "https://broker.test", "git-jit")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(signer().verify(text, 1_700_000_000).is_err());
    }
});
