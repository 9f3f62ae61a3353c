//! Git's pkt-line framing (gitprotocol-common(5)): a 4-hex-digit length that counts itself,
//! then the payload; `0000` is a flush. Parsing is incremental — [`parse`] says how many bytes
//! a complete packet took, or that more are needed — so a caller can read a stream without
//! buffering more than the packets it wants to keep.
//!
//! Only the framing of protocol v0/v1 is accepted: the v2 special packets `0001` (delimiter)
//! and `0002` (response end) never occur in a receive-pack request and are refused together
//! with the always invalid `0003`.

/// The largest packet, header included (`LARGE_PACKET_MAX` in git).
pub const MAX_PACKET_LEN: usize = 65520;
/// The largest payload of one packet.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN - 4;
/// A flush packet.
pub const FLUSH: &[u8] = b"0000";

/// Why bytes are not a valid pkt-line stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    /// The length prefix is not four hexadecimal digits.
    #[error("pkt-line length {0:?} is not four hex digits")]
    BadHex(String),
    /// Lengths 1–3 are special (v2) or invalid, and never valid here.
    #[error("pkt-line length {0} is reserved and not valid here")]
    Reserved(usize),
    /// The length exceeds git's maximum packet size.
    #[error("pkt-line length {0} exceeds the maximum of {MAX_PACKET_LEN}")]
    TooLong(usize),
    /// The input ended inside a packet.
    #[error("input ends inside a pkt-line ({have} of {need} bytes)")]
    Truncated {
        /// Bytes the packet needs.
        need: usize,
        /// Bytes that were there.
        have: usize,
    },
}

/// One packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0000`.
    Flush,
    /// A data packet's payload (possibly empty for `0004`).
    Data(&'a [u8]),
}

impl<'a> Packet<'a> {
    /// The payload without one trailing LF, as git's readers strip it.
    pub fn line(self) -> Option<&'a [u8]> {
        match self {
            Packet::Flush => None,
            Packet::Data(d) => Some(d.strip_suffix(b"\n").unwrap_or(d)),
        }
    }
}

/// Parses the packet at the start of `buf`: `Ok(Some((packet, consumed)))`, or `Ok(None)`
/// when `buf` holds only part of a valid packet. Errors as soon as the prefix is known bad.
pub fn parse(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, PktError> {
    let Some(head) = buf.get(..4) else {
        // Check what is there already, so "zz" fails now rather than after more input.
        if !buf.iter().all(u8::is_ascii_hexdigit) {
            return Err(PktError::BadHex(String::from_utf8_lossy(buf).into_owned()));
        }
        return Ok(None);
    };
    let len = parse_len(head)?;
    match len {
        0 => return Ok(Some((Packet::Flush, 4))),
        1..=3 => return Err(PktError::Reserved(len)),
        n if n > MAX_PACKET_LEN => return Err(PktError::TooLong(n)),
        _ => {}
    }
    match buf.get(4..len) {
        Some(payload) => Ok(Some((Packet::Data(payload), len))),
        None => Ok(None),
    }
}

/// Parses a complete buffer: every packet, failing on trailing partial data.
pub fn parse_all(mut buf: &[u8]) -> Result<Vec<Packet<'_>>, PktError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match parse(buf)? {
            Some((p, n)) => {
                out.push(p);
                buf = &buf[n..];
            }
            None => return Err(truncated(buf)),
        }
    }
    Ok(out)
}

/// The error for input that ends inside the packet at the start of `rest`.
pub fn truncated(rest: &[u8]) -> PktError {
    let need = rest.get(..4).and_then(|h| parse_len(h).ok()).unwrap_or(4);
    PktError::Truncated {
        need,
        have: rest.len(),
    }
}

fn parse_len(head: &[u8]) -> Result<usize, PktError> {
    let bad = || PktError::BadHex(String::from_utf8_lossy(head).into_owned());
    // from_str_radix would accept a leading '+'; git does not.
    if !head.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let text = std::str::from_utf8(head).map_err(|_| bad())?;
    usize::from_str_radix(text, 16).map_err(|_| bad())
}

/// Appends one data packet holding `payload` to `out` (`0004` for an empty one). Payloads
/// longer than [`MAX_PAYLOAD_LEN`] are split over several packets (callers only send short
/// lines).
pub fn write_data(out: &mut Vec<u8>, payload: &[u8]) {
    if payload.is_empty() {
        out.extend_from_slice(b"0004");
        return;
    }
    for chunk in payload.chunks(MAX_PAYLOAD_LEN) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 4).as_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Appends a flush packet to `out`.
pub fn write_flush(out: &mut Vec<u8>) {
    out.extend_from_slice(FLUSH);
}

/// Wraps `data` in side-band channel `band` packets (side-band-64k framing).
pub fn write_sideband(out: &mut Vec<u8>, band: u8, data: &[u8]) {
    for chunk in data.chunks(MAX_PAYLOAD_LEN - 1) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 5).as_bytes());
        out.push(band);
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_data_and_flush() {
        let got = parse_all(b"0009hello0000000aworld\n0004").expect("valid");
        assert_eq!(
            got,
            vec![
                Packet::Data(b"hello"),
                Packet::Flush,
                Packet::Data(b"world\n"),
                Packet::Data(b""),
            ]
        );
        assert_eq!(got[2].line(), Some(&b"world"[..]));
        assert_eq!(Packet::Flush.line(), None);
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let mut buf = b"000A".to_vec();
        buf.extend_from_slice(b"abcdef");
        assert_eq!(
            parse(&buf).expect("valid"),
            Some((Packet::Data(b"abcdef"), 10))
        );
    }

    #[test]
    fn incomplete_needs_more() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"00"), Ok(None));
        assert_eq!(parse(b"0009hell"), Ok(None));
    }

    #[test]
    fn bad_hex_is_refused_early() {
        for bad in [
            &b"zzzz"[..],
            b"00g1abc",
            b"+00a",
            b" 00a",
            b"-001",
            b"0x10",
            b"z",
        ] {
            assert!(
                matches!(parse(bad), Err(PktError::BadHex(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn reserved_lengths_are_refused() {
        for (input, n) in [(&b"0001"[..], 1), (b"0002", 2), (b"0003xyz", 3)] {
            assert_eq!(parse(input), Err(PktError::Reserved(n)));
        }
    }

    #[test]
    fn oversized_lengths_are_refused() {
        assert_eq!(parse(b"fff1"), Err(PktError::TooLong(0xfff1)));
        assert_eq!(parse(b"ffff"), Err(PktError::TooLong(0xffff)));
        let mut max = b"fff0".to_vec();
        max.resize(MAX_PACKET_LEN, b'x');
        assert!(matches!(
            parse(&max),
            Ok(Some((Packet::Data(_), MAX_PACKET_LEN)))
        ));
    }

    #[test]
    fn truncation_is_reported_by_parse_all() {
        assert_eq!(
            parse_all(b"0009hel"),
            Err(PktError::Truncated { need: 9, have: 7 })
        );
        assert_eq!(
            parse_all(b"0000000"),
            Err(PktError::Truncated { need: 4, have: 3 })
        );
    }

    #[test]
    fn writers_round_trip() {
        let mut out = Vec::new();
        write_data(&mut out, b"unpack ok\n");
        write_flush(&mut out);
        assert_eq!(out, b"000eunpack ok\n0000");
        let big = vec![b'a'; MAX_PAYLOAD_LEN + 10];
        let mut out = Vec::new();
        write_data(&mut out, &big);
        let packets = parse_all(&out).expect("valid");
        assert_eq!(packets.len(), 2);

        let mut sb = Vec::new();
        write_sideband(&mut sb, 1, b"0000");
        assert_eq!(sb, b"0009\x010000");
    }

    /// Found by the `receive_pack` fuzz target: `0004` parses as an empty data packet, but
    /// writing that packet back wrote nothing, so parse → write → parse lost it.
    #[test]
    fn an_empty_payload_is_written_as_an_empty_packet() {
        let mut out = Vec::new();
        write_data(&mut out, b"");
        assert_eq!(out, b"0004");
        assert_eq!(parse_all(&out), Ok(vec![Packet::Data(b"")]));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A cheap stand-in for the fuzz target (fuzz/): pseudo-random bytes biased towards
        // hex digits must parse or fail, never panic, and consumed lengths must stay in bounds.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            for i in 0..len {
                let r = seed.rotate_left(i as u32) as u8;
                buf.push(if r.is_multiple_of(3) {
                    r
                } else {
                    b"0123456789abcdef"[(r % 16) as usize]
                });
            }
            if let Ok(Some((_, n))) = parse(&buf) {
                assert!(n <= buf.len() && n >= 4);
            }
            let _ = parse_all(&buf);
        }
    }
}
