//! Audit trail lines, through the scanner `audit verify` trusts to hash a line as it stands:
//! any input is `None` or a line, never a panic; a line it takes is exactly serde_json's form
//! of the event it parses to, with the same chain members and the same chain hash; the full
//! way's duplicate-key check never panics.
#![no_main]

use jit_broker::audit::canonical::unique_keys;
use jit_broker::audit::{AuditEvent, Canonical, Links, chain_hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let _ = unique_keys(line);
    let Some(c) = Canonical::scan(line) else {
        return;
    };
    let e: AuditEvent = serde_json::from_str(line).expect("a taken line parses");
    assert_eq!(
        serde_json::to_string(&e).expect("json"),
        line.strip_suffix('\n').unwrap_or(line),
        "a taken line is serde_json's own form"
    );
    assert_eq!(c.seq(), e.seq);
    assert_eq!(c.links(line), Links::of(&e));
    let digest: String = c.digest(line).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, chain_hash(&e));
    assert_eq!(c.check_hash(line).matches(), e.hash == chain_hash(&e));
});
