//! The audit cursor of `/v1/audit` (`cursor=`, untrusted): any text is refused with a reason
//! or read as a place, never a panic; a place read back encodes to a cursor that reads back
//! the same, within the length bound.
#![no_main]

use jit_proto::admin::{AuditCursor, MAX_AUDIT_CURSOR_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = AuditCursor::decode(text) else {
        return;
    };
    let again = c.encode();
    assert!(again.len() <= MAX_AUDIT_CURSOR_LEN);
    assert_eq!(AuditCursor::decode(&again), Ok(c));
});
