//! Running git for an allowed connection. A fetch is `git upload-pack` on the process's own
//! stdin and stdout. A push goes through the gate: `git receive-pack`'s ref advertisement is
//! relayed to the client, the client's command list is read with the HTTP gateway's parser
//! and decided by the broker, and only an allowed push reaches `git receive-pack`; a refused
//! one gets git's report-status naming every refused ref, and `git receive-pack` an empty
//! command list, so nothing changes.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jit_broker::gateway::receive_pack::{CommandParser, RefRefusal, refusal_report};
use jit_proto::ssh::{SshCheck, SshPush, SshRefUpdate};

use crate::GateError;
use crate::broker::Broker;

/// How long a refused push's upload is read (and discarded) so the client sees the answer
/// rather than a broken pipe.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// Bytes read at once.
const CHUNK: usize = 64 * 1024;

/// `git upload-pack <dir>` on this process's stdin and stdout; its exit code.
pub fn upload_pack(dir: &Path) -> std::io::Result<i32> {
    let status = Command::new("git").arg("upload-pack").arg(dir).status()?;
    Ok(status.code().unwrap_or(1))
}

/// Copies `from` to `to` as it arrives, flushing each piece (pkt-lines must not wait in a
/// buffer), until `from` ends or `to` is gone.
fn pump(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

/// A push: see the module documentation. Returns the exit code.
pub async fn receive_pack(
    dir: &Path,
    broker: &Broker,
    mut question: SshCheck,
) -> Result<i32, GateError> {
    let mut child = Command::new("git")
        .arg("receive-pack")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let (Some(mut git_in), Some(git_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(GateError::Io(std::io::Error::other(
            "git receive-pack has no pipes",
        )));
    };
    let advertised = std::thread::spawn(move || pump(git_out, std::io::stdout()));

    let mut stdin = std::io::stdin();
    let mut head = Vec::new();
    let mut parser = CommandParser::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = stdin.read(&mut buf)?;
        head.extend_from_slice(&buf[..n]);
        let done = parser
            .advance(&head)
            .map_err(|e| GateError::Denied(format!("git-jit: malformed push: {e}")))?
            .is_some();
        if done || n == 0 {
            break;
        }
    }
    let list = parser
        .finish()
        .map_err(|e| GateError::Denied(format!("git-jit: malformed push: {e}")))?;
    if list.commands.is_empty() {
        // Nothing to update ("Everything up-to-date"): git receive-pack sees the same flush.
        git_in.write_all(&head)?;
        drop(git_in);
        let status = child.wait()?;
        let _ = advertised.join();
        return Ok(status.code().unwrap_or(1));
    }
    let names: BTreeSet<&str> = list.commands.iter().map(|c| c.refname.as_str()).collect();
    let symrefs = crate::repo::symrefs(dir, &names)?;
    question.push = Some(SshPush {
        updates: list
            .commands
            .iter()
            .map(|c| SshRefUpdate {
                old: c.old.clone(),
                new: c.new.clone(),
                refname: c.refname.clone(),
            })
            .collect(),
        symrefs,
    });
    let decision = match broker.ask(&question).await {
        Ok(d) => d,
        Err(e) => jit_proto::ssh::SshDecision {
            allowed: false,
            message: Some(e.to_string()),
            subject: None,
            jti: None,
            refused: Vec::new(),
        },
    };
    if decision.allowed {
        git_in.write_all(&head)?;
        git_in.flush()?;
        std::thread::spawn(move || pump(std::io::stdin(), git_in));
        let status = child.wait()?;
        let _ = advertised.join();
        return Ok(status.code().unwrap_or(1));
    }

    // Refused: git receive-pack gets no command, the client its report.
    git_in.write_all(b"0000")?;
    drop(git_in);
    let _ = child.wait();
    let _ = advertised.join();
    let (drained, done) = mpsc::channel();
    std::thread::spawn(move || {
        pump(std::io::stdin(), std::io::sink());
        let _ = drained.send(());
    });
    let message = decision
        .message
        .unwrap_or_else(|| "git-jit: push refused".to_owned());
    let refused: Vec<RefRefusal> = if decision.refused.is_empty() {
        list.commands
            .iter()
            .map(|c| RefRefusal {
                refname: c.refname.clone(),
                reason: message.clone(),
            })
            .collect()
    } else {
        decision
            .refused
            .into_iter()
            .map(|r| RefRefusal {
                refname: r.refname,
                reason: r.reason,
            })
            .collect()
    };
    match refusal_report(&list, &refused) {
        Some(report) => {
            let mut out = std::io::stdout();
            out.write_all(&report)?;
            out.flush()?;
        }
        None => eprintln!("{message}"),
    }
    let _ = done.recv_timeout(DRAIN_LIMIT);
    Ok(1)
}
