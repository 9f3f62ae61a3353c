//! The gateway's pkt-line decoder and receive-pack command-list parser on arbitrary bytes.
//!
//! Properties: never a panic; every packet the gateway's decoder accepts is decoded
//! identically (same kind, payload and length) by gix-packetline's decoder, the differential
//! oracle, and the two agree on "needs more input"; the only frames they may disagree on are
//! the ones the gateway refuses on purpose (`0001`/`0002`, v2 specials that never occur in a
//! receive-pack request) and `0004` (an empty data packet git writes and gix refuses). The
//! command-list parser gives the same result however the input is split, consumes no more
//! than it was given, and every command it accepts re-encodes to pkt-lines that parse to the
//! same command list.
#![no_main]

use gix_packetline::PacketLineRef;
use gix_packetline::decode::{self, Stream};
use jit_broker::gateway::pktline::{self, Packet, PktError};
use jit_broker::gateway::receive_pack::{CommandList, CommandParser, decide, refusal_report};
use jit_proto::RefPattern;
use libfuzzer_sys::fuzz_target;

/// Compares the two decoders on the packet at the start of `buf`.
fn differential(buf: &[u8]) {
    let ours = pktline::parse(buf);
    let theirs = decode::streaming(buf);
    let head = buf.get(..4);
    match (&ours, &theirs) {
        (
            Ok(Some((Packet::Flush, n))),
            Ok(Stream::Complete {
                line,
                bytes_consumed,
            }),
        ) => {
            assert_eq!(*line, PacketLineRef::Flush);
            assert_eq!((*n, *bytes_consumed), (4, 4));
        }
        (
            Ok(Some((Packet::Data(p), n))),
            Ok(Stream::Complete {
                line,
                bytes_consumed,
            }),
        ) => {
            assert_eq!(*line, PacketLineRef::Data(p));
            assert_eq!(n, bytes_consumed);
            assert_eq!(*n, p.len() + 4);
        }
        // gix refuses the empty data packet `0004`; git itself writes and reads it.
        (Ok(Some((Packet::Data(p), 4))), Err(_)) => assert!(p.is_empty()),
        (Ok(None), Ok(Stream::Incomplete { .. })) => {}
        // With fewer than four bytes gix waits; the gateway refuses non-hex prefixes early.
        (Err(PktError::BadHex(_)), Ok(Stream::Incomplete { .. })) => {
            assert!(buf.len() < 4);
        }
        // The v2 specials are refused on purpose.
        (
            Err(PktError::Reserved(1 | 2)),
            Ok(Stream::Complete {
                line,
                bytes_consumed: 4,
            }),
        ) => {
            assert!(matches!(
                line,
                PacketLineRef::Delimiter | PacketLineRef::ResponseEnd
            ));
        }
        (Err(_), Err(_)) => {}
        _ => panic!("decoders disagree on {head:?}: gateway {ours:?}, gix {theirs:?}"),
    }
}

fn run(data: &[u8], step: usize) -> Option<(usize, CommandList)> {
    let mut parser = CommandParser::new();
    let mut end = 0;
    loop {
        end = (end + step).min(data.len());
        match parser.advance(&data[..end]) {
            Ok(Some(n)) => {
                assert!(n <= end);
                let list = parser.finish().ok()?;
                return Some((n, list));
            }
            Ok(None) if end == data.len() => return None,
            Ok(None) => {}
            Err(_) => return None,
        }
    }
}

/// Writes a command list back as a receive-pack request head.
fn encode(list: &CommandList) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..list.shallow {
        pktline::write_data(&mut out, format!("shallow {}", "1".repeat(40)).as_bytes());
    }
    for (i, c) in list.commands.iter().enumerate() {
        let mut line = format!("{} {} {}", c.old, c.new, c.refname).into_bytes();
        if i == 0 {
            line.push(0);
            line.extend_from_slice(list.capabilities.join(" ").as_bytes());
        }
        line.push(b'\n');
        pktline::write_data(&mut out, &line);
    }
    pktline::write_flush(&mut out);
    if list.has_capability("push-options") && !list.commands.is_empty() {
        for o in &list.push_options {
            pktline::write_data(&mut out, format!("{o}\n").as_bytes());
        }
        pktline::write_flush(&mut out);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // Every packet boundary of the stream, and every suffix start, through both decoders.
    let mut rest = data;
    loop {
        differential(rest);
        match pktline::parse(rest) {
            Ok(Some((_, n))) => {
                assert!((4..=rest.len()).contains(&n));
                rest = &rest[n..];
            }
            _ => break,
        }
    }
    if let Ok(packets) = pktline::parse_all(data) {
        let mut again = Vec::new();
        for p in &packets {
            match p {
                Packet::Flush => pktline::write_flush(&mut again),
                Packet::Data(d) => pktline::write_data(&mut again, d),
            }
        }
        assert_eq!(pktline::parse_all(&again).as_ref(), Ok(&packets));
    }

    let step = 1 + data.first().copied().unwrap_or(0) as usize % 17;
    let whole = run(data, data.len().max(1));
    let pieces = run(data, step);
    assert_eq!(whole, pieces);
    let Some((_, list)) = whole else {
        return;
    };
    let Ok(allowed) = RefPattern::parse("refs/heads/hotfix/*") else {
        return;
    };
    let refused = decide(&list.commands, std::slice::from_ref(&allowed));
    assert!(refused.len() <= list.commands.len());
    let _ = refusal_report(&list, &refused);
    // A command list whose shallow lines we cannot reproduce exactly is still re-encoded
    // with placeholder ids: only the count is kept.
    let encoded = encode(&list);
    if let Some((n, again)) = run(&encoded, encoded.len().max(1)) {
        assert_eq!(n, encoded.len());
        assert_eq!(again.commands, list.commands);
        assert_eq!(again.capabilities, list.capabilities);
        assert_eq!(again.shallow, list.shallow);
    }
});
