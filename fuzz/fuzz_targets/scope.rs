//! Scopes, repository paths and ref patterns from untrusted text (token requests, request
//! paths, config) must never panic, and whatever parses must print back to itself.
#![no_main]

use jit_proto::refs::{RefPattern, check_ref_name};
use jit_proto::{RepoPath, Scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scope) = Scope::parse(text) {
        let printed = scope.to_string();
        assert_eq!(Scope::parse(&printed).as_ref(), Ok(&scope));
        assert!(!printed.contains("..") || printed.contains("..."));
    }
    if let Ok(path) = RepoPath::parse(text) {
        assert_eq!(RepoPath::parse(path.as_str()).as_ref(), Ok(&path));
        assert!(path.segments().all(|s| s != "." && s != ".." && !s.is_empty()));
    }
    if let Ok(pattern) = RefPattern::parse(text) {
        let _ = pattern.matches("refs/heads/main");
        let _ = pattern.within(&pattern);
    }
    let _ = check_ref_name(text);
});
