//! The broker's JWT signatures are ring's: installed once, the provider stays, and a token the
//! broker signs verifies through it.

use jsonwebtoken::crypto::CryptoProvider;

#[test]
fn the_ring_provider_is_installed_once_and_stays() {
    assert!(jit_broker::jose::install(), "installed in a fresh process");
    assert!(jit_broker::jose::install(), "a second call keeps it");
    let installed = CryptoProvider::try_get_default().expect("a provider");
    assert!(std::ptr::eq(installed, jit_broker::jose::provider()));
    // The RustCrypto default can no longer take its place.
    assert!(
        jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
            .install_default()
            .is_err()
    );
}
