//! The head of a `git-receive-pack` request: the command list a push sends before its pack
//! (gitprotocol-pack(5), "Reference Update Request"), the decision on its ref updates, and
//! the report-status answer that makes `git push` print a refusal per ref.
//!
//! ```text
//! update-request = *shallow-line command-list [push-options] [pack]
//! shallow-line   = PKT-LINE("shallow" SP oid)
//! command-list   = PKT-LINE(old SP new SP ref NUL capabilities) *PKT-LINE(old SP new SP ref) flush
//! push-options   = *PKT-LINE(option) flush          ; only with the push-options capability
//! ```
//!
//! A lone flush is an empty request (git's authentication probe). Signed pushes (`push-cert`)
//! are refused: their commands sit inside the certificate and are not parsed here.

use std::collections::BTreeMap;

use jit_proto::RefPattern;
use jit_proto::glob::Text;
use jit_proto::refs::check_ref_name;

use super::pktline::{self, Packet, PktError};

/// The most bytes of shallow lines, commands and push options the gateway buffers.
pub const MAX_COMMAND_LIST: usize = 1024 * 1024;

/// The most ref updates one push may carry. Every update is checked against every pattern of
/// the grant (and, for a ref-limited grant, looked up on the upstream), so the count bounds
/// what one request costs; a client pushing more refs at once (a mirror of a large
/// repository) splits them into several pushes.
pub const MAX_PUSH_COMMANDS: usize = 1000;

/// How much of a grant's pattern list a refusal reason repeats, in bytes.
const SHOWN_PATTERNS_MAX: usize = 300;

/// Why a receive-pack request head is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The pkt-line framing is broken.
    #[error(transparent)]
    Pkt(#[from] PktError),
    /// The command list is larger than [`MAX_COMMAND_LIST`].
    #[error("push command list exceeds {MAX_COMMAND_LIST} bytes")]
    TooLarge,
    /// More than [`MAX_PUSH_COMMANDS`] ref updates.
    #[error(
        "push updates more than {MAX_PUSH_COMMANDS} refs at once; push them in several smaller pushes"
    )]
    TooManyCommands,
    /// The body ended before the command list did.
    #[error("push request ends inside its command list")]
    Truncated,
    /// A flush where a command was required.
    #[error("misplaced flush packet in the push command list")]
    MisplacedFlush,
    /// A line that is not `old SP new SP ref`.
    #[error("malformed push command: {0}")]
    BadCommand(String),
    /// A `shallow` line without a valid object id.
    #[error("malformed shallow line")]
    BadShallow,
    /// A push option that is not text.
    #[error("malformed push option")]
    BadOption,
    /// A signed push, whose commands the gateway cannot check.
    #[error("signed pushes (push-cert) are not supported by the git-jit gateway")]
    SignedPush,
}

/// What a command does to its ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// The ref does not exist yet (old is all zeros).
    Create,
    /// The ref moves (fast-forward or forced: the gateway cannot tell).
    Update,
    /// The ref is deleted (new is all zeros).
    Delete,
}

impl UpdateKind {
    /// `create`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateKind::Create => "create",
            UpdateKind::Update => "update",
            UpdateKind::Delete => "delete",
        }
    }
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The ref's current object id (zeros: create).
    pub old: String,
    /// The ref's new object id (zeros: delete).
    pub new: String,
    /// The ref name, as sent (checked by [`decide`], not here).
    pub refname: String,
}

impl Command {
    /// Create, update or delete.
    pub fn kind(&self) -> UpdateKind {
        if is_zero(&self.old) {
            UpdateKind::Create
        } else if is_zero(&self.new) {
            UpdateKind::Delete
        } else {
            UpdateKind::Update
        }
    }
}

fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// A parsed request head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandList {
    /// The ref updates, in order.
    pub commands: Vec<Command>,
    /// Capabilities sent on the first command.
    pub capabilities: Vec<String>,
    /// Push options (`git push -o`).
    pub push_options: Vec<String>,
    /// Number of shallow lines.
    pub shallow: usize,
}

impl CommandList {
    /// Whether the client sent capability `name` (exactly, or as `name=value`).
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c == name || c.strip_prefix(name).is_some_and(|r| r.starts_with('=')))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Shallow,
    Commands,
    Options,
    Done,
}

/// An incremental parser: feed it the growing buffer of the request body until it returns
/// the number of bytes the head occupied.
#[derive(Debug)]
pub struct CommandParser {
    state: State,
    pos: usize,
    list: CommandList,
}

impl Default for CommandParser {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandParser {
    /// A parser at the start of a request body.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            pos: 0,
            list: CommandList::default(),
        }
    }

    /// Parses what `buf` (the body so far, always from its first byte) adds. Returns
    /// `Some(len)` once the head is complete: `buf[len..]` is the pack, to be streamed.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, CommandError> {
        while self.state != State::Done {
            let rest = buf.get(self.pos..).unwrap_or_default();
            let Some((packet, used)) = pktline::parse(rest)? else {
                if buf.len() > MAX_COMMAND_LIST {
                    return Err(CommandError::TooLarge);
                }
                return Ok(None);
            };
            self.pos += used;
            if self.pos > MAX_COMMAND_LIST {
                return Err(CommandError::TooLarge);
            }
            self.step(packet)?;
        }
        Ok(Some(self.pos))
    }

    /// The parsed head, once [`advance`](Self::advance) returned `Some`.
    pub fn finish(self) -> Result<CommandList, CommandError> {
        match self.state {
            State::Done => Ok(self.list),
            _ => Err(CommandError::Truncated),
        }
    }

    fn step(&mut self, packet: Packet<'_>) -> Result<(), CommandError> {
        let Some(line) = packet.line() else {
            self.state = match self.state {
                // A lone flush: git's probe before a large push.
                State::Start => State::Done,
                State::Shallow => return Err(CommandError::MisplacedFlush),
                State::Commands if self.list.has_capability("push-options") => State::Options,
                State::Commands | State::Options | State::Done => State::Done,
            };
            return Ok(());
        };
        match self.state {
            State::Start | State::Shallow => {
                if let Some(oid) = line.strip_prefix(b"shallow ") {
                    if !is_oid(oid) {
                        return Err(CommandError::BadShallow);
                    }
                    self.list.shallow += 1;
                    self.state = State::Shallow;
                    return Ok(());
                }
                if line.starts_with(b"push-cert") {
                    return Err(CommandError::SignedPush);
                }
                let (command, caps) = match line.iter().position(|&b| b == 0) {
                    Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
                    None => (line, None),
                };
                if let Some(caps) = caps {
                    let caps = std::str::from_utf8(caps).map_err(|_| {
                        CommandError::BadCommand("capabilities are not text".into())
                    })?;
                    self.list.capabilities = caps
                        .split(' ')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                self.push_command(command)?;
                self.state = State::Commands;
            }
            State::Commands => self.push_command(line)?,
            State::Options => {
                let option = std::str::from_utf8(line).map_err(|_| CommandError::BadOption)?;
                if option.contains('\0') {
                    return Err(CommandError::BadOption);
                }
                self.list.push_options.push(option.to_owned());
            }
            State::Done => {}
        }
        Ok(())
    }
}

impl CommandParser {
    fn push_command(&mut self, line: &[u8]) -> Result<(), CommandError> {
        if self.list.commands.len() >= MAX_PUSH_COMMANDS {
            return Err(CommandError::TooManyCommands);
        }
        self.list.commands.push(parse_command(line)?);
        Ok(())
    }
}

fn is_oid(b: &[u8]) -> bool {
    (b.len() == 40 || b.len() == 64) && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let bad = |why: &str| CommandError::BadCommand(why.to_owned());
    let text = std::str::from_utf8(line).map_err(|_| bad("not text"))?;
    let mut parts = text.splitn(3, ' ');
    let (Some(old), Some(new), Some(refname)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected '<old> <new> <ref>'"));
    };
    if !is_oid(old.as_bytes()) || !is_oid(new.as_bytes()) || old.len() != new.len() {
        return Err(bad("object ids must be 40 or 64 lowercase hex digits"));
    }
    if is_zero(old) && is_zero(new) {
        return Err(bad("old and new object ids are both zero"));
    }
    if refname.contains('\0') {
        return Err(bad("capabilities after the first command"));
    }
    Ok(Command {
        old: old.to_owned(),
        new: new.to_owned(),
        refname: refname.to_owned(),
    })
}

/// Why one ref update was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefRefusal {
    /// The ref.
    pub refname: String,
    /// The reason, as shown by `git push` after `[remote rejected]`.
    pub reason: String,
}

/// Checks every update against the grant's ref patterns (empty: every ref) and git's ref
/// name rules. Deletes and forced updates are ref updates like any other: a pattern applies to
/// every way of changing the refs it names. Each ref is prepared once for all patterns
/// ([`Text`]): the whole decision costs at most commands × pattern bytes × ref words.
pub fn decide(commands: &[Command], allowed: &[RefPattern]) -> Vec<RefRefusal> {
    decide_counted(commands, allowed, &mut 0)
}

/// [`decide`], adding the matcher's work to `steps`.
pub fn decide_counted(
    commands: &[Command],
    allowed: &[RefPattern],
    steps: &mut u64,
) -> Vec<RefRefusal> {
    commands
        .iter()
        .filter_map(|c| {
            let reason = if let Err(e) = check_ref_name(&c.refname) {
                format!("git-jit: invalid ref name: {e}")
            } else if !allows(allowed, &c.refname, steps) {
                format!(
                    "git-jit: ref not allowed by grant: allowed {}",
                    shown_patterns(allowed)
                )
            } else {
                return None;
            };
            Some(RefRefusal {
                refname: c.refname.clone(),
                reason,
            })
        })
        .collect()
}

fn allows(allowed: &[RefPattern], name: &str, steps: &mut u64) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let text = Text::new(name);
    allowed.iter().any(|p| p.matches_text(&text, steps))
}

/// The grant's patterns for a refusal reason, cut after [`SHOWN_PATTERNS_MAX`] bytes.
fn shown_patterns(allowed: &[RefPattern]) -> String {
    let mut out = String::new();
    for (i, p) in allowed.iter().enumerate() {
        if out.len() + p.as_str().len() > SHOWN_PATTERNS_MAX {
            out.push_str(&format!(", … ({} patterns in all)", allowed.len()));
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(p.as_str());
    }
    out
}

/// Checks the refs a push really writes, once [`decide`] allowed the names: `targets` maps
/// each pushed name that is a symbolic ref on the upstream to the ref it points at, which git
/// updates (or deletes) instead. That target must be allowed too.
pub fn decide_targets(
    commands: &[Command],
    targets: &BTreeMap<String, String>,
    allowed: &[RefPattern],
) -> Vec<RefRefusal> {
    let mut steps = 0;
    commands
        .iter()
        .filter_map(|c| {
            let target = targets.get(&c.refname)?;
            let ok = check_ref_name(target).is_ok() && allows(allowed, target, &mut steps);
            (!ok).then(|| RefRefusal {
                refname: c.refname.clone(),
                reason: format!(
                    "git-jit: {} is a symbolic ref to {}, which the grant does not allow: allowed {}",
                    c.refname,
                    shown(target),
                    shown_patterns(allowed)
                ),
            })
        })
        .collect()
}

/// A name from the upstream, as shown in a reason: control characters replaced, cut.
fn shown(name: &str) -> String {
    let mut s: String = name
        .chars()
        .take(300)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if name.chars().nth(300).is_some() {
        s.push('…');
    }
    s
}

/// The report-status answer refusing the whole push: `unpack ok` (nothing was unpacked, but
/// an unpack error would hide the per-ref reasons), then `ng <ref> <reason>` for every
/// command, side-band wrapped when the client asked for it, as git-receive-pack does.
/// `None` when the client asked for no report (it would print nothing).
pub fn refusal_report(list: &CommandList, refused: &[RefRefusal]) -> Option<Vec<u8>> {
    if !(list.has_capability("report-status") || list.has_capability("report-status-v2")) {
        return None;
    }
    let first = refused.first()?;
    let mut report = Vec::new();
    pktline::write_data(&mut report, b"unpack ok\n");
    for c in &list.commands {
        let reason = match refused.iter().find(|r| r.refname == c.refname) {
            Some(r) => r.reason.clone(),
            None => format!(
                "git-jit: push refused as a whole because {} is not allowed",
                first.refname
            ),
        };
        let line = format!("ng {} {}\n", c.refname, one_line(&reason));
        pktline::write_data(&mut report, line.as_bytes());
    }
    pktline::write_flush(&mut report);

    let band_max = if list.has_capability("side-band-64k") {
        pktline::MAX_PAYLOAD_LEN - 1
    } else if list.has_capability("side-band") {
        999
    } else {
        return Some(report);
    };
    let mut out = Vec::new();
    let notice = format!(
        "git-jit: push refused; nothing was sent to the repository ({} of {} ref updates not allowed)\n",
        refused.len(),
        list.commands.len()
    );
    for (band, data) in [(2u8, notice.as_bytes()), (1u8, report.as_slice())] {
        for chunk in data.chunks(band_max) {
            pktline::write_sideband(&mut out, band, chunk);
        }
    }
    pktline::write_flush(&mut out);
    Some(out)
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn pkt(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        pktline::write_data(&mut v, s.as_bytes());
        v
    }

    fn body(lines: &[&str], tail: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for l in lines {
            if l.is_empty() {
                v.extend_from_slice(b"0000");
            } else {
                v.extend(pkt(l));
            }
        }
        v.extend_from_slice(tail);
        v
    }

    fn parse_whole(buf: &[u8]) -> Result<(CommandList, usize), CommandError> {
        let mut p = CommandParser::new();
        match p.advance(buf)? {
            Some(n) => Ok((p.finish()?, n)),
            None => Err(CommandError::Truncated),
        }
    }

    fn pat(s: &str) -> RefPattern {
        RefPattern::parse(s).expect("pattern")
    }

    #[test]
    fn parses_a_push_and_leaves_the_pack() {
        let b = body(
            &[
                &format!("{A} {B} refs/heads/main\0report-status side-band-64k agent=git/2.47\n"),
                &format!("{Z} {B} refs/heads/new\n"),
                &format!("{A} {Z} refs/heads/old\n"),
                "",
            ],
            b"PACK....",
        );
        let (list, n) = parse_whole(&b).expect("valid");
        assert_eq!(&b[n..], b"PACK....");
        let kinds: Vec<_> = list.commands.iter().map(Command::kind).collect();
        assert_eq!(
            kinds,
            [UpdateKind::Update, UpdateKind::Create, UpdateKind::Delete]
        );
        assert_eq!(list.commands[0].refname, "refs/heads/main");
        assert!(list.has_capability("report-status"));
        assert!(list.has_capability("agent"));
        assert!(!list.has_capability("report-status-v2"));
    }

    #[test]
    fn shallow_lines_and_push_options() {
        let b = body(
            &[
                &format!("shallow {A}"),
                &format!("{A} {B} refs/heads/main\0report-status push-options"),
                "",
                "ci.skip",
                "",
            ],
            b"PACK",
        );
        let (list, n) = parse_whole(&b).expect("valid");
        assert_eq!(
            (list.shallow, list.push_options.clone()),
            (1, vec!["ci.skip".to_owned()])
        );
        assert_eq!(&b[n..], b"PACK");
    }

    #[test]
    fn sha256_object_ids() {
        let (a, z) = ("a".repeat(64), "0".repeat(64));
        let b = body(&[&format!("{z} {a} refs/heads/x\0"), ""], b"");
        assert_eq!(
            parse_whole(&b).expect("valid").0.commands[0].kind(),
            UpdateKind::Create
        );
        let mixed = body(&[&format!("{A} {a} refs/heads/x\0"), ""], b"");
        assert!(matches!(
            parse_whole(&mixed),
            Err(CommandError::BadCommand(_))
        ));
    }

    #[test]
    fn lone_flush_is_the_probe() {
        let (list, n) = parse_whole(b"0000").expect("valid");
        assert!(list.commands.is_empty());
        assert_eq!(n, 4);
    }

    #[test]
    fn incremental_feeding_matches_whole_parse() {
        let b = body(
            &[
                &format!("{A} {B} refs/heads/main\0report-status"),
                &format!("{Z} {B} refs/tags/v1"),
                "",
            ],
            b"PACKDATA",
        );
        let mut p = CommandParser::new();
        let mut got = None;
        for end in 0..=b.len() {
            if let Some(n) = p.advance(&b[..end]).expect("valid prefix") {
                got = Some(n);
                break;
            }
        }
        assert_eq!(got, Some(b.len() - 8));
        assert_eq!(p.finish().expect("done").commands.len(), 2);
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cmd = format!("{A} {B} refs/heads/main\0report-status");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (body(&[&cmd], b""), "ends inside"),
            (body(&[&format!("shallow {A}"), ""], b""), "misplaced flush"),
            (body(&[&format!("shallow {}", &A[..39])], b""), "shallow"),
            (body(&["push-cert\0report-status"], b""), "signed pushes"),
            (body(&[&format!("{A} {B}"), ""], b""), "expected"),
            (
                body(&[&format!("{A} {B}refs/heads/x"), ""], b""),
                "expected",
            ),
            (
                body(&[&format!("{} {B} refs/heads/x", "A".repeat(40)), ""], b""),
                "lowercase hex",
            ),
            (
                body(&[&format!("{Z} {Z} refs/heads/x"), ""], b""),
                "both zero",
            ),
            (
                body(&[&cmd, &format!("{A} {B} refs/heads/y\0x"), ""], b""),
                "capabilities after",
            ),
            (body(&[&cmd], b"00"), "ends inside"),
            (body(&[&cmd], b"zzzz"), "hex"),
            (body(&[&cmd], b"0001"), "reserved"),
            (body(&[&cmd], b"fff9"), "exceeds"),
            (
                body(
                    &[&format!("{A} {B} refs/heads/main\0push-options"), ""],
                    b"00",
                ),
                "ends inside",
            ),
        ];
        for (input, needle) in cases {
            let err = parse_whole(&input).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn oversized_command_list_is_refused() {
        let line = pkt(&format!("{A} {B} refs/heads/{}\n", "x".repeat(1000)));
        let mut b = pkt(&format!("{A} {B} refs/heads/main\0report-status"));
        while b.len() <= MAX_COMMAND_LIST {
            b.extend_from_slice(&line);
        }
        assert_eq!(parse_whole(&b).err(), Some(CommandError::TooLarge));
        // Even without a complete packet at the limit.
        let mut p = CommandParser::new();
        let mut partial = pkt(&format!("{A} {B} refs/heads/main\0"));
        partial.extend(std::iter::repeat_n(b'0', 2));
        assert_eq!(p.advance(&partial), Ok(None));
    }

    fn cmd(old: &str, new: &str, r: &str) -> Command {
        Command {
            old: old.into(),
            new: new.into(),
            refname: r.into(),
        }
    }

    #[test]
    fn ref_decisions_cover_create_update_and_delete() {
        let allowed = [pat("refs/heads/hotfix/*"), pat("refs/tags/v*")];
        let ok = [
            cmd(Z, B, "refs/heads/hotfix/a"),
            cmd(A, B, "refs/heads/hotfix/a"),
            cmd(A, Z, "refs/heads/hotfix/a"),
            cmd(Z, B, "refs/tags/v1.0"),
        ];
        assert!(decide(&ok, &allowed).is_empty());
        for c in [
            cmd(Z, B, "refs/heads/main"),
            cmd(A, B, "refs/heads/main"),
            cmd(A, Z, "refs/heads/main"),
            cmd(Z, B, "refs/tags/x1"),
            cmd(Z, B, "refs/heads/hotfix/a/b"),
        ] {
            let refused = decide(std::slice::from_ref(&c), &allowed);
            assert_eq!(refused.len(), 1, "{c:?}");
            assert_eq!(
                refused[0].reason,
                "git-jit: ref not allowed by grant: allowed refs/heads/hotfix/*, refs/tags/v*"
            );
        }
    }

    #[test]
    fn command_count_at_and_past_the_bound() {
        let lines = |n: usize| {
            let mut v = vec![format!("{Z} {B} refs/heads/b0\0report-status")];
            v.extend((1..n).map(|i| format!("{Z} {B} refs/heads/b{i}")));
            v.push(String::new());
            let refs: Vec<&str> = v.iter().map(String::as_str).collect();
            body(&refs, b"")
        };
        let (list, _) = parse_whole(&lines(MAX_PUSH_COMMANDS)).expect("at the bound");
        assert_eq!(list.commands.len(), MAX_PUSH_COMMANDS);
        let err = parse_whole(&lines(MAX_PUSH_COMMANDS + 1)).expect_err("past the bound");
        assert_eq!(err, CommandError::TooManyCommands);
        assert_eq!(
            err.to_string(),
            "push updates more than 1000 refs at once; push them in several smaller pushes"
        );
    }

    #[test]
    fn a_symref_is_decided_on_its_target() {
        let allowed = [pat("refs/heads/hotfix/*")];
        let commands = [
            cmd(A, B, "refs/heads/hotfix/alias"),
            cmd(A, B, "refs/heads/hotfix/plain"),
            cmd(A, B, "refs/heads/hotfix/inside"),
        ];
        let targets: BTreeMap<String, String> = [
            ("refs/heads/hotfix/alias", "refs/heads/main"),
            ("refs/heads/hotfix/inside", "refs/heads/hotfix/real"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        assert!(decide(&commands, &allowed).is_empty());
        let refused = decide_targets(&commands, &targets, &allowed);
        assert_eq!(
            refused,
            [RefRefusal {
                refname: "refs/heads/hotfix/alias".into(),
                reason: "git-jit: refs/heads/hotfix/alias is a symbolic ref to refs/heads/main, \
                         which the grant does not allow: allowed refs/heads/hotfix/*"
                    .into(),
            }]
        );
        // A target git would not accept as a ref name is refused, shown without control bytes.
        let odd: BTreeMap<String, String> = [(
            "refs/heads/hotfix/alias".to_owned(),
            "HEAD\u{1b}[2J".to_owned(),
        )]
        .into();
        let refused = decide_targets(&commands[..1], &odd, &allowed);
        assert!(
            refused[0].reason.contains("symbolic ref to HEAD?[2J"),
            "{refused:?}"
        );
        // Unrestricted grants allow any valid target.
        assert!(decide_targets(&commands, &targets, &[]).is_empty());
    }

    #[test]
    fn refusal_reasons_cut_a_long_pattern_list() {
        let allowed: Vec<RefPattern> = (0..8)
            .map(|i| pat(&format!("refs/heads/{i}/{}", "x".repeat(100))))
            .collect();
        let refused = decide(&[cmd(A, B, "refs/heads/main")], &allowed);
        assert!(refused[0].reason.len() < 600, "{}", refused[0].reason);
        assert!(refused[0].reason.ends_with(", … (8 patterns in all)"));
    }

    #[test]
    fn empty_patterns_allow_every_valid_ref_but_not_bad_names() {
        assert!(decide(&[cmd(A, Z, "refs/heads/main")], &[]).is_empty());
        for bad in [
            "refs/heads/a..b",
            "HEAD",
            "refs/heads/x.lock",
            "refs/heads/a b",
        ] {
            let r = decide(&[cmd(A, B, bad)], &[]);
            assert!(
                r[0].reason.starts_with("git-jit: invalid ref name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn refusal_report_plain_and_sideband() {
        let mut list = CommandList {
            commands: vec![cmd(A, B, "refs/heads/ok"), cmd(A, B, "refs/heads/x")],
            capabilities: vec!["report-status".into()],
            ..CommandList::default()
        };
        let refused = vec![RefRefusal {
            refname: "refs/heads/x".into(),
            reason: "git-jit: nope".into(),
        }];
        let plain = refusal_report(&list, &refused).expect("report");
        let lines: Vec<_> = pktline::parse_all(&plain)
            .expect("valid")
            .into_iter()
            .map(|p| p.line().map(|l| String::from_utf8_lossy(l).into_owned()))
            .collect();
        assert_eq!(
            lines,
            [
                Some("unpack ok".to_owned()),
                Some("ng refs/heads/ok git-jit: push refused as a whole because refs/heads/x is not allowed".to_owned()),
                Some("ng refs/heads/x git-jit: nope".to_owned()),
                None,
            ]
        );

        list.capabilities.push("side-band-64k".into());
        let banded = refusal_report(&list, &refused).expect("report");
        let packets = pktline::parse_all(&banded).expect("valid");
        assert_eq!(packets.last(), Some(&Packet::Flush));
        let mut band1 = Vec::new();
        for p in &packets[..packets.len() - 1] {
            let Packet::Data(d) = p else {
                panic!("flush inside")
            };
            if d[0] == 1 {
                band1.extend_from_slice(&d[1..]);
            } else {
                assert_eq!(d[0], 2);
            }
        }
        assert_eq!(band1, plain);

        list.capabilities = vec![];
        assert_eq!(refusal_report(&list, &refused), None);
    }

    #[test]
    fn arbitrary_heads_never_panic() {
        let seeds: Vec<Vec<u8>> = vec![
            body(
                &[
                    &format!("{A} {B} refs/heads/main\0report-status push-options"),
                    "",
                    "o",
                    "",
                ],
                b"PACK",
            ),
            body(
                &[&format!("shallow {A}"), &format!("{Z} {B} refs/x")],
                b"0000",
            ),
        ];
        let mut x: u32 = 7;
        for seed in seeds {
            for _ in 0..5_000 {
                let mut b = seed.clone();
                for _ in 0..3 {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let i = (x >> 8) as usize % b.len();
                    b[i] = (x >> 24) as u8;
                }
                let _ = parse_whole(&b);
                let _ = parse_whole(&b[..(x as usize) % b.len()]);
            }
        }
    }
}
