//! Repository paths from the network: the raw path-and-query of a Git smart-HTTP request as
//! the gateway and `/authz` classify it (`gateway::classify`), and `RepoPath::parse` itself.
//!
//! Properties: never a panic; an accepted path is normalised (no `.git`, no empty, `.` or
//! `..` segment, no leading `-`, only `A-Z a-z 0-9 . _ - /`, within the length limits) and
//! parses to itself; a classified request names exactly the repository and endpoint its raw
//! path spells (no decoding: the repository text appears verbatim in the request), and the
//! canonical request rebuilt from them classifies to the same thing.
#![no_main]

use http::Method;
use jit_broker::gateway::classify;
use jit_proto::RepoPath;
use jit_proto::scope::{MAX_PATH_LEN, MAX_SEGMENT_LEN, MAX_SEGMENTS};
use libfuzzer_sys::fuzz_target;

fn check_path(path: &RepoPath) {
    let s = path.as_str();
    assert_eq!(RepoPath::parse(s).as_ref(), Ok(path));
    assert_eq!(RepoPath::parse(&format!("{s}.git")).as_ref(), Ok(path));
    assert!(!s.is_empty() && s.len() <= MAX_PATH_LEN);
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    );
    let segments: Vec<&str> = path.segments().collect();
    assert!(!segments.is_empty() && segments.len() <= MAX_SEGMENTS);
    assert_eq!(segments.join("/"), s);
    for seg in segments {
        assert!(!seg.is_empty() && seg != "." && seg != "..");
        assert!(seg.len() <= MAX_SEGMENT_LEN && !seg.starts_with('-'));
        assert!(!seg.to_ascii_lowercase().ends_with(".git"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = RepoPath::parse(text) {
        check_path(&path);
        assert!(text == path.as_str() || text == format!("{}.git", path.as_str()));
    }
    for method in [Method::GET, Method::POST] {
        let Ok(request) = classify(&method, text) else {
            continue;
        };
        check_path(&request.repo);
        let (raw_path, _) = text.split_once('?').unwrap_or((text, ""));
        assert!(raw_path.starts_with(&format!("/{}", request.repo)));
        assert!(raw_path.ends_with(&format!("/{}", request.endpoint.suffix())));
        let mut canonical = format!("/{}.git/{}", request.repo, request.endpoint.suffix());
        if let Some(q) = request.endpoint.query() {
            canonical = format!("{canonical}?{q}");
        }
        assert_eq!(classify(&method, &canonical).as_ref(), Ok(&request));
        assert_eq!(request.needed_scope().repo, request.repo);
        assert_eq!(
            request.needed_scope().actions,
            request.endpoint.service().action().into()
        );
    }
});
