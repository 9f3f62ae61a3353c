//! Fuzzes the pkt-line parser and the receive-pack command-list parser with arbitrary bytes,
//! fed whole and in pieces: never a panic, consumed lengths within the input, and the same
//! result however the input is split.
#![no_main]

use jit_broker::gateway::pktline;
use jit_broker::gateway::receive_pack::{CommandParser, decide, refusal_report};
use jit_proto::RefPattern;
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], step: usize) -> Option<(usize, usize)> {
    let mut parser = CommandParser::new();
    let mut end = 0;
    loop {
        end = (end + step).min(data.len());
        match parser.advance(&data[..end]) {
            Ok(Some(n)) => {
                assert!(n <= end);
                let list = parser.finish().ok()?;
                let allowed = [RefPattern::parse("refs/heads/hotfix/*").ok()?];
                let refused = decide(&list.commands, &allowed);
                let _ = refusal_report(&list, &refused);
                return Some((n, list.commands.len()));
            }
            Ok(None) if end == data.len() => return None,
            Ok(None) => {}
            Err(_) => return None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, n))) = pktline::parse(data) {
        assert!(n >= 4 && n <= data.len());
    }
    let _ = pktline::parse_all(data);
    let step = 1 + data.first().copied().unwrap_or(0) as usize % 17;
    let whole = run(data, data.len().max(1));
    let pieces = run(data, step);
    assert_eq!(whole, pieces);
});
