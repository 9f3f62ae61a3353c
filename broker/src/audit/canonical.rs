//! The canonical line of an audit event: exactly what serde_json writes for an
//! [`AuditEvent`](super::AuditEvent) — struct order and skip rules, `data` keys sorted, no
//! whitespace, serde_json's own string escapes — which is what the file sink writes.
//!
//! [`Canonical::scan`] proves a line is that form and finds the members the chain checks,
//! without building the event. For such a line the chain hash is the SHA-256 of its own bytes
//! with the `id` member cut out and the `hash` value emptied: the very bytes
//! [`chain_hash`](super::chain_hash) serialises, so both ways give one answer. A line the
//! scanner cannot prove canonical (other spacing, key order or escapes, a float, an unknown
//! member, a duplicate key, a checkpoint) is `None`, and is checked the full way: parsed and
//! re-serialised. The scanner only ever refuses what it is unsure of; the tests below hold it
//! to serde_json byte for byte.

use std::ops::Range;

use sha2::{Digest as _, Sha256};

use super::{Lane, Links, ReplicaRef};

/// How deep `data` values may nest on the fast path (deeper ones go the full way).
const MAX_DEPTH: u8 = 32;

/// The optional string members between `event` and `data`, in struct order.
const OPTIONAL_STRINGS: [&[u8]; 10] = [
    b",\"subject\":",
    b",\"idp\":",
    b",\"repo\":",
    b",\"scope\":",
    b",\"role\":",
    b",\"jti\":",
    b",\"reason\":",
    b",\"denial\":",
    b",\"client\":",
    b",\"user_agent\":",
];

/// A line proven to be the canonical JSON of an event that is not a checkpoint: where its
/// chain members are (byte ranges into that line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    seq: u64,
    lane: Option<Lane>,
    /// The whole `"id":"…",` member, and its value.
    id: Option<(Range<usize>, Range<usize>)>,
    replica: Option<(Range<usize>, u64, Range<usize>)>,
    prev: Range<usize>,
    /// The `hash` value, after its opening quote.
    hash: Range<usize>,
}

impl Canonical {
    /// `line` (one trailing `\n` allowed) if it is exactly the canonical JSON of an event other
    /// than `audit.checkpoint`, and its chain members contain no escape; `None` otherwise.
    pub fn scan(line: &str) -> Option<Self> {
        let b = line.strip_suffix('\n').unwrap_or(line).as_bytes();
        let mut s = Scanner { b, i: 0 };
        s.lit(b"{\"v\":")?;
        if s.uint()? > u64::from(u32::MAX) {
            return None;
        }
        let id = if s.peek(b",\"id\":\"") {
            let start = s.i + 1;
            s.i += 6;
            let value = s.plain()?;
            // The member and the comma after it (`ts` always follows).
            Some((start..s.i + 1, value))
        } else {
            None
        };
        s.lit(b",\"ts\":")?;
        s.int()?;
        s.lit(b",\"event\":")?;
        let event = s.plain()?;
        if b.get(event) == Some(b"audit.checkpoint".as_slice()) {
            return None;
        }
        for member in OPTIONAL_STRINGS {
            if s.eat(member) {
                s.string()?;
            }
        }
        if s.eat(b",\"data\":") && !s.object(0)? {
            // An empty map is skipped, never written as `{}`.
            return None;
        }
        let lane = if s.eat(b",\"lane\":") {
            if s.eat(b"\"evidence\"") {
                Some(Lane::Evidence)
            } else {
                s.lit(b"\"traffic\"")?;
                Some(Lane::Traffic)
            }
        } else {
            None
        };
        let replica = if s.eat(b",\"replica\":") {
            s.lit(b"{\"name\":")?;
            let name = s.plain()?;
            s.lit(b",\"seq\":")?;
            let seq = s.uint()?;
            s.lit(b",\"prev\":")?;
            let prev = s.plain()?;
            s.lit(b"}")?;
            Some((name, seq, prev))
        } else {
            None
        };
        s.lit(b",\"seq\":")?;
        let seq = s.uint()?;
        s.lit(b",\"prev\":")?;
        let prev = s.plain()?;
        s.lit(b",\"hash\":")?;
        let hash = s.plain()?;
        s.lit(b"}")?;
        (s.i == b.len()).then_some(Self {
            seq,
            lane,
            id,
            replica,
            prev,
            hash,
        })
    }

    /// The event's `seq`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The chain members of `line` (the line this was scanned from).
    pub fn links<'a>(&self, line: &'a str) -> Links<'a> {
        let at = |r: &Range<usize>| line.get(r.clone()).unwrap_or_default();
        Links {
            seq: self.seq,
            id: self.id.as_ref().map(|(_, v)| at(v)),
            lane: self.lane,
            prev: at(&self.prev),
            hash: at(&self.hash),
            replica: self.replica.as_ref().map(|(name, seq, prev)| ReplicaRef {
                name: at(name),
                seq: *seq,
                prev: at(prev),
            }),
        }
    }

    /// The chain digest of `line` (the line this was scanned from): SHA-256 of the line
    /// without its `id` member and with an empty `hash` value.
    pub fn digest(&self, line: &str) -> [u8; 32] {
        let b = line.as_bytes();
        // The opening quote of the hash value.
        let open = self.hash.start.saturating_sub(1);
        let (head, rest) = match &self.id {
            Some((member, _)) => (..member.start, member.end..open),
            None => (..0, 0..open),
        };
        let mut h = Sha256::new();
        h.update(b.get(head).unwrap_or_default());
        h.update(b.get(rest).unwrap_or_default());
        h.update(b"\"\"}");
        h.finalize().into()
    }
}

/// A canonical line whose stated hash was checked against its digest
/// ([`Canonical::check_hash`]) — a check each line needs on its own, so it may be done on
/// another thread than the one that follows the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    canonical: Canonical,
    matches: bool,
}

impl Hashed {
    /// The line's members.
    pub fn canonical(&self) -> &Canonical {
        &self.canonical
    }

    /// Whether the hash the line states is its digest, written as [`chain_hash`](super::chain_hash)
    /// writes it (64 lowercase hex digits).
    pub fn matches(&self) -> bool {
        self.matches
    }
}

impl Canonical {
    /// Checks the hash `line` (the line this was scanned from) states against its digest.
    pub fn check_hash(self, line: &str) -> Hashed {
        let mut hex = [0u8; 64];
        let matches = hex::encode_to_slice(self.digest(line), &mut hex).is_ok()
            && line.as_bytes().get(self.hash.clone()) == Some(hex.as_slice());
        Hashed {
            canonical: self,
            matches,
        }
    }
}

/// Refuses a line in which some object names a key twice (the event's own members or any
/// map inside `data`): serde_json keeps the last copy, other readers may keep the first, so
/// such a line has no one meaning. The scanner refuses these lines too; this is the check of
/// the full way.
pub fn unique_keys(line: &str) -> Result<(), String> {
    serde_json::from_str::<Unique>(line)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Any JSON value, walked only to find an object that names a key twice.
struct Unique;

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Unique)
    }
}

impl<'de> serde::de::Visitor<'de> for Unique {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<Unique>()?;
            if let Some(key) = seen.replace(key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
        }
        Ok(Unique)
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self, lit: &[u8]) -> bool {
        self.b.get(self.i..).is_some_and(|r| r.starts_with(lit))
    }

    /// Consumes `lit` if it comes next.
    fn eat(&mut self, lit: &[u8]) -> bool {
        let next = self.peek(lit);
        if next {
            self.i += lit.len();
        }
        next
    }

    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        self.eat(lit).then_some(())
    }

    /// A string as serde_json writes it; returns its inside and whether it holds an escape.
    fn string(&mut self) -> Option<(Range<usize>, bool)> {
        self.lit(b"\"")?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some((start..self.i - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            // Only a control character without a short escape, as `\u00xx`
                            // in lowercase hex.
                            let hex = self.b.get(self.i + 2..self.i + 6)?;
                            let low = match hex[3] {
                                d @ b'0'..=b'9' => d - b'0',
                                d @ b'a'..=b'f' => d - b'a' + 10,
                                _ => return None,
                            };
                            let byte = match &hex[..3] {
                                b"000" => low,
                                b"001" => 0x10 + low,
                                _ => return None,
                            };
                            if matches!(byte, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// Skips, eight bytes at a time, bytes a string holds as they are: none is `"`, `\` or a
    /// control character. Stops at the word holding the first byte that is (or near the end),
    /// which the caller then looks at byte by byte.
    fn skip_plain(&mut self) {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        // The high bit of each byte that is zero: exact for the lowest such byte, which is
        // all that matters here (a word with any is looked at byte by byte).
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        while let Some(word) = self.b.get(self.i..self.i + 8) {
            let Ok(word) = <[u8; 8]>::try_from(word) else {
                return;
            };
            let w = u64::from_le_bytes(word);
            let quote = zero(w ^ (ONES * u64::from(b'"')));
            let backslash = zero(w ^ (ONES * u64::from(b'\\')));
            // A byte below 0x20 (bytes of 0x80 and above never count).
            let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
            if (quote | backslash | control) != 0 {
                return;
            }
            self.i += 8;
        }
    }

    /// A string without escapes: its bytes are its value.
    fn plain(&mut self) -> Option<Range<usize>> {
        match self.string()? {
            (r, false) => Some(r),
            (_, true) => None,
        }
    }

    /// An unsigned integer as serde_json writes it (no sign, no leading zero), up to u64.
    fn uint(&mut self) -> Option<u64> {
        let first = *self.b.get(self.i)?;
        if !first.is_ascii_digit() {
            return None;
        }
        self.i += 1;
        let mut n = u64::from(first - b'0');
        if n == 0 {
            // The member after it starts with `,`, `}` or `]`: `01`, `0.5` fail there.
            return Some(0);
        }
        while let Some(d) = self.b.get(self.i).filter(|d| d.is_ascii_digit()) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        Some(n)
    }

    /// A signed integer as serde_json writes an i64 (never `-0`).
    fn int(&mut self) -> Option<i64> {
        if self.eat(b"-") {
            let n = self.uint()?;
            if n == 0 {
                return None;
            }
            0i64.checked_sub_unsigned(n)
        } else {
            i64::try_from(self.uint()?).ok()
        }
    }

    /// A JSON value as serde_json writes a `serde_json::Value` (integers only).
    fn value(&mut self, depth: u8) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth + 1).map(drop),
            b'[' => self.array(depth + 1),
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'n' => self.lit(b"null"),
            // A negative integer is an i64 (serde_json reads `-0` and smaller as floats).
            b'-' => self.int().map(drop),
            _ => self.uint().map(drop),
        }
    }

    /// An object with keys strictly ascending (a map's order; no duplicates) and without
    /// escapes (so their bytes compare as the keys do); returns whether it has a member.
    fn object(&mut self, depth: u8) -> Option<bool> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.lit(b"{")?;
        if self.eat(b"}") {
            return Some(false);
        }
        let mut last: Option<Range<usize>> = None;
        loop {
            let key = self.plain()?;
            if let Some(last) = last
                && self.b.get(last)? >= self.b.get(key.clone())?
            {
                return None;
            }
            self.lit(b":")?;
            self.value(depth)?;
            last = Some(key);
            if !self.eat(b",") {
                self.lit(b"}")?;
                return Some(true);
            }
        }
    }

    fn array(&mut self, depth: u8) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.lit(b"[")?;
        if self.eat(b"]") {
            return Some(());
        }
        loop {
            self.value(depth)?;
            if !self.eat(b",") {
                return self.lit(b"]");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, ReplicaLink, chain_hash};

    /// A small deterministic generator (xorshift64*), so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a, T>(&mut self, of: &'a [T]) -> &'a T {
            &of[self.below(of.len() as u64) as usize]
        }

        /// A string of up to `max` characters from `alphabet`.
        fn text(&mut self, alphabet: &[char], max: u64) -> String {
            (0..self.below(max + 1))
                .map(|_| *self.pick(alphabet))
                .collect()
        }
    }

    /// Every ASCII character (controls, quote, backslash, DEL) and a few beyond.
    fn any_chars() -> Vec<char> {
        (0u8..=0x7f)
            .map(char::from)
            .chain(['é', '∕', '🙂', '\u{2028}', '\u{feff}'])
            .collect()
    }

    const PLAIN: &[char] = &['a', 'z', '0', '9', '-', '.', ':', '/', '@', ' ', 'é', '🙂'];
    const HEX: &[char] = &[
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f',
    ];

    fn value(rng: &mut Rng, depth: u32, floats: bool) -> serde_json::Value {
        use serde_json::Value;
        let kinds = if depth > 2 { 6 } else { 8 };
        match rng.below(kinds) {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => Value::from(rng.next()),
            3 => Value::from(*rng.pick(&[i64::MIN, -1, -10, i64::MAX, 0])),
            4 => Value::from(rng.text(&any_chars(), 6)),
            5 if floats => Value::from(*rng.pick(&[0.5, -0.0, 1e300, 3.0])),
            5 => Value::from(rng.below(1000)),
            6 => Value::Array(
                (0..rng.below(3))
                    .map(|_| value(rng, depth + 1, floats))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.below(3))
                    .map(|_| (rng.text(PLAIN, 4), value(rng, depth + 1, floats)))
                    .collect(),
            ),
        }
    }

    /// A random event. `plain`: its chain members and `data` keys need no escape and `data`
    /// holds no float, so its line is one the scanner must take.
    fn event(rng: &mut Rng, plain: bool) -> AuditEvent {
        let chars = any_chars();
        let chain_chars: &[char] = if plain { PLAIN } else { &chars };
        let kinds = ["grant.issued", "access.allowed", "approval.granted", ""];
        let mut e = AuditEvent::new(*rng.pick(&kinds), rng.next() as i64);
        e.v = rng.below(3) as u32;
        e.id = (rng.below(2) == 0).then(|| rng.text(chain_chars, 8));
        for field in [
            &mut e.subject,
            &mut e.idp,
            &mut e.repo,
            &mut e.scope,
            &mut e.role,
            &mut e.jti,
            &mut e.reason,
            &mut e.denial,
            &mut e.client,
            &mut e.user_agent,
        ] {
            *field = (rng.below(2) == 0).then(|| rng.text(&chars, 12));
        }
        let key_chars: &[char] = if plain { PLAIN } else { &chars };
        for _ in 0..rng.below(4) {
            let key = rng.text(key_chars, 5);
            let v = value(rng, 0, !plain);
            e.data.insert(key, v);
        }
        e.lane = *rng.pick(&[None, Some(Lane::Evidence), Some(Lane::Traffic)]);
        e.replica = (rng.below(2) == 0).then(|| ReplicaLink {
            name: rng.text(chain_chars, 6),
            seq: rng.next(),
            prev: rng.text(HEX, 64),
        });
        e.seq = rng.next();
        e.prev = if plain {
            rng.text(HEX, 64)
        } else {
            rng.text(chain_chars, 8)
        };
        e.hash = chain_hash(&e);
        e
    }

    /// What a scanned line must agree on with its parsed event: the line is exactly its
    /// serialisation, the members the chain reads are its members, the digest is its chain
    /// hash.
    fn agrees(line: &str, c: &Canonical) {
        let e: AuditEvent = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("scanned but serde_json refuses it ({err}): {line}"));
        assert_eq!(
            serde_json::to_string(&e).expect("json"),
            line.trim_end_matches('\n'),
            "scanned but not canonical"
        );
        assert_eq!(c.links(line), Links::of(&e), "{line}");
        assert_eq!(hex::encode(c.digest(line)), chain_hash(&e), "{line}");
        assert_eq!(
            c.clone().check_hash(line).matches(),
            e.hash == chain_hash(&e),
            "{line}"
        );
        assert_ne!(e.event, crate::audit::EventKind::AuditCheckpoint);
    }

    #[test]
    fn lines_serde_json_writes_scan_with_the_same_members_and_hash() {
        let mut rng = Rng(0x5eed_0000_0000_0011);
        for _ in 0..3000 {
            let e = event(&mut rng, true);
            let line = serde_json::to_string(&e).expect("json") + "\n";
            let c = Canonical::scan(&line).unwrap_or_else(|| panic!("not taken: {line}"));
            agrees(&line, &c);
            assert_eq!(hex::encode(c.digest(&line)), e.hash);
        }
    }

    /// Soundness: whatever the scanner takes — random events of any content, and those lines
    /// edited byte by byte — is exactly serde_json's form of what it parses to.
    #[test]
    fn the_scanner_takes_nothing_but_serde_jsons_own_form() {
        const EDITS: &[u8] = b" \t\r\n,:{}[]\"\\/-+0123456789.eEabfnrtulsx";
        let mut rng = Rng(0x5eed_0000_0000_0022);
        let (mut taken, mut edited_taken) = (0, 0);
        for _ in 0..4000 {
            let plain = rng.below(2) == 0;
            let line = serde_json::to_string(&event(&mut rng, plain)).expect("json");
            if let Some(c) = Canonical::scan(&line) {
                agrees(&line, &c);
                taken += 1;
            }
            for _ in 0..8 {
                let mut b = line.clone().into_bytes();
                let at = rng.below(b.len() as u64) as usize;
                match rng.below(4) {
                    0 => {
                        b.remove(at);
                    }
                    1 => b.insert(at, *rng.pick(EDITS)),
                    2 => b[at] = *rng.pick(EDITS),
                    _ => {
                        // A copy of a stretch of the line (a repeated member, key or value).
                        let end = (at + 1 + rng.below(40) as usize).min(b.len());
                        let piece = b[at..end].to_vec();
                        let to = rng.below(b.len() as u64) as usize;
                        b.splice(to..to, piece);
                    }
                }
                let Ok(edited) = String::from_utf8(b) else {
                    continue;
                };
                if let Some(c) = Canonical::scan(&edited) {
                    agrees(&edited, &c);
                    edited_taken += 1;
                }
            }
        }
        // The property was exercised, not vacuously true.
        assert!(taken > 1000 && edited_taken > 100, "{taken} {edited_taken}");
    }

    /// Every spelling serde_json would not write is left to the full check.
    #[test]
    fn other_spellings_are_not_taken() {
        let mut e = AuditEvent::new("grant.issued", 5)
            .with("a", 1)
            .with("b", "x");
        e.id = Some("7".into());
        e.subject = Some("alice".into());
        e.lane = Some(Lane::Evidence);
        e.seq = 3;
        e.prev = "ab".repeat(32);
        e.hash = chain_hash(&e);
        let line = serde_json::to_string(&e).expect("json");
        let c = Canonical::scan(&line).expect("the canonical line is taken");
        agrees(&line, &c);
        let cases = [
            ("\"ts\":5", "\"ts\": 5"),
            ("\"ts\":5", "\"ts\":05"),
            ("\"ts\":5", "\"ts\":5.0"),
            ("\"ts\":5", "\"ts\":5e0"),
            ("{\"v\":2", "{\"v\":2 "),
            ("{\"v\":2", "{\"v\":4294967296"),
            ("\"a\":1,\"b\":\"x\"", "\"b\":\"x\",\"a\":1"),
            ("\"a\":1,\"b\":\"x\"", "\"a\":1,\"a\":1,\"b\":\"x\""),
            ("\"a\":1,\"b\":\"x\"", "\"a\":2,\"a\":1,\"b\":\"x\""),
            ("\"a\":1", "\"a\":-0"),
            ("\"a\":1", "\"a\":1.0"),
            ("\"a\":1", "\"a\":18446744073709551616"),
            ("\"a\":1", "\"\\u0061\":1"),
            ("\"b\":\"x\"", "\"b\":\"\\u0078\""),
            ("\"b\":\"x\"", "\"b\":\"x\\/\""),
            ("\"b\":\"x\"", "\"b\":\"\\u000A\""),
            ("\"b\":\"x\"", "\"b\":\"\\u000a\""),
            ("\"b\":\"x\"", "\"b\":\"\\u0008\""),
            ("\"subject\":\"alice\"", "\"subject\":\"alic\\u0065\""),
            (
                "\"subject\":\"alice\"",
                "\"subject\":\"alice\",\"subject\":\"alice\"",
            ),
            ("\"subject\":\"alice\"", "\"subject\":\"alice\",\"extra\":1"),
            ("\"lane\":\"evidence\"", "\"lane\":\"Evidence\""),
            ("\"id\":\"7\"", "\"id\":7"),
            ("\"hash\":\"", "\"hash\":\"\\u0030"),
            ("\"hash\":\"", "\"hash\" :\""),
            (
                "\"event\":\"grant.issued\"",
                "\"event\":\"grant.issu\\u0065d\"",
            ),
            (
                "\"event\":\"grant.issued\"",
                "\"event\":\"audit.checkpoint\"",
            ),
        ];
        for (from, to) in cases {
            assert!(line.contains(from), "{from}");
            let edited = line.replacen(from, to, 1);
            assert_eq!(Canonical::scan(&edited), None, "taken: {edited}");
        }
        for tail in ["\r\n", " \n", "\n\n", " "] {
            assert_eq!(Canonical::scan(&format!("{line}{tail}")), None, "{tail:?}");
        }
        // An empty map is skipped when written, never `{}`.
        e.data.clear();
        let line = serde_json::to_string(&e).expect("json");
        assert!(Canonical::scan(&line).is_some());
        let edited = line.replacen(",\"lane\"", ",\"data\":{},\"lane\"", 1);
        assert_eq!(Canonical::scan(&edited), None, "{edited}");
    }

    /// The escapes serde_json writes, character by character, are the ones taken.
    #[test]
    fn every_escape_serde_json_writes_is_taken() {
        for c in any_chars() {
            let mut e = AuditEvent::new("grant.issued", 1);
            e.reason = Some(format!("<{c}>"));
            e.data
                .insert(format!("k{}", u32::from(c)), c.to_string().into());
            e.hash = chain_hash(&e);
            let line = serde_json::to_string(&e).expect("json");
            let scanned = Canonical::scan(&line).unwrap_or_else(|| panic!("{c:?}: {line}"));
            agrees(&line, &scanned);
        }
    }

    /// Strings are stepped through eight bytes at a time: a quote, a backslash or a control
    /// character at any offset of a long string is still seen, whatever the bytes around it.
    #[test]
    fn the_word_wise_string_step_misses_no_byte() {
        for fill in ["a", "\u{7f}", "é", "🙂"] {
            for at in 0..20 {
                for c in any_chars() {
                    let text = format!("{}{c}{}", fill.repeat(at), fill.repeat(17));
                    let mut e = AuditEvent::new("grant.issued", 1);
                    e.reason = Some(text.clone());
                    e.data.insert("k".repeat(at + 1), text.into());
                    e.hash = chain_hash(&e);
                    let line = serde_json::to_string(&e).expect("json");
                    let scanned = Canonical::scan(&line).unwrap_or_else(|| panic!("{line}"));
                    agrees(&line, &scanned);
                    // The same character raw where serde_json escapes it: never taken.
                    let escaped = serde_json::to_string(&c.to_string()).expect("json");
                    if escaped.len() > c.len_utf8() + 2 {
                        let raw = line.replacen(&escaped[1..escaped.len() - 1], &c.to_string(), 1);
                        assert_eq!(Canonical::scan(&raw), None, "{raw:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        assert_eq!(
            unique_keys(r#"{"a":{"b":[{"c":1,"d":2}]},"e":1.5}"#),
            Ok(())
        );
        for dup in [
            r#"{"a":1,"a":1}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"x":{"b":1,"b":2}}"#,
            r#"{"x":[{"c":1,"c":null}]}"#,
        ] {
            let err = unique_keys(dup).expect_err(dup);
            assert!(err.contains("duplicate key"), "{dup}: {err}");
        }
    }

    /// Sealing serialises once and splices the hash in: the line it gives is exactly the
    /// event's JSON, the hash exactly its chain hash, for events of any content (with or
    /// without a store id, which takes the long way).
    #[test]
    fn a_sealed_line_is_the_events_json_and_its_hash_the_chain_hash() {
        let mut rng = Rng(0x5eed_0000_0000_0033);
        for _ in 0..3000 {
            let plain = rng.below(2) == 0;
            let mut e = event(&mut rng, plain);
            e.hash = rng.text(&any_chars(), 70);
            let sealed = crate::audit::seal(e.clone());
            assert_eq!(sealed.event.hash, chain_hash(&sealed.event));
            e.hash.clone_from(&sealed.event.hash);
            assert_eq!(sealed.event, e);
            assert_eq!(
                sealed.line,
                serde_json::to_string(&sealed.event).expect("json")
            );
        }
    }
}
