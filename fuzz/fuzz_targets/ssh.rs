//! What reaches the broker and the gate from SSH clients: `SSH_ORIGINAL_COMMAND`, the public
//! key of an exchange, and a certificate presented to `/ssh/check`.
//!
//! Input: bytes as text, read as all three.
//!
//! Properties: never a panic; an accepted command names a normal repository path (it parses
//! again as the same path, holds no `..`, no leading `/`) and one of the two services; an
//! accepted key is one line of printable ASCII; no input verifies as a certificate of a
//! broker whose CA key the input cannot know.
#![no_main]

use std::sync::{Arc, OnceLock};

use jit_broker::keys::KeyRing;
use jit_broker::token::TokenSigner;
use jit_proto::RepoPath;
use jit_proto::ssh::{GitCommand, SshPublicKey};
use libfuzzer_sys::fuzz_target;

fn signer() -> &'static TokenSigner {
    static SIGNER: OnceLock<TokenSigner> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let ring = KeyRing::ephemeral().expect("key ring");
        TokenSigner::new(Arc::new(ring), "https://b", "git-jit")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = GitCommand::parse(&text) {
        let path = c.repo.as_str();
        assert!(!path.starts_with('/') && !path.split('/').any(|s| s == ".." || s == "."));
        assert_eq!(RepoPath::parse(path).as_ref(), Ok(&c.repo));
        assert!(text.starts_with("git-upload-pack ") || text.starts_with("git-receive-pack ") || text.starts_with("git "));
    }
    if let Ok(k) = SshPublicKey::parse(&text) {
        assert!(k.as_str().bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
    }
    assert!(signer().verify_ssh(&text, 1_700_000_000).is_err());
});
