//! The SSH gate's question (`POST /ssh/check`, asked by `jit-ssh-gate` on the Git server's
//! host): may this certificate run this Git command, and may this push go through?
//!
//! The certificate is checked by the one [`Gatekeeper`] (CA signature and time window, then
//! the store: a revoked grant is refused on the next connection), and a push's ref updates
//! by the HTTP gateway's own receive-pack code ([`decide`], [`decide_targets`]): the gate read
//! the command list with the same parser and looked up which pushed names are symbolic refs
//! in the repository. Every answer is an audit event (`via: ssh`), recorded before it is
//! given.

use jit_proto::ssh::{
    GitCommand, MAX_PUSH_UPDATES, SshCheck, SshDecision, SshPush, SshRefusedRef, SshService,
};

use crate::gatekeeper::{Door, Gatekeeper, RequestInfo};
use crate::gateway::push::{denial_text, updates_json};
use crate::gateway::receive_pack::{Command, CommandList, decide, decide_targets};

/// What the gate says of the program asking (kept in the audit trail).
const USER_AGENT: &str = "jit-ssh-gate";

/// Why a question could not be asked (the gate sent something no gate sends).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshCheckError {
    /// The command is not a Git command git-jit serves.
    #[error("command: {0}")]
    Command(#[from] jit_proto::ssh::GitCommandError),
    /// More ref updates than a push may carry.
    #[error("a push may update at most {MAX_PUSH_UPDATES} refs")]
    TooManyUpdates,
    /// Ref updates for a command that is not a push.
    #[error("ref updates were sent for a command that is not git-receive-pack")]
    NotAPush,
}

/// Answers one [`SshCheck`].
pub async fn check(gatekeeper: &Gatekeeper, q: &SshCheck) -> Result<SshDecision, SshCheckError> {
    let command = GitCommand::parse(&q.command)?;
    if let Some(push) = &q.push {
        if command.service != SshService::ReceivePack {
            return Err(SshCheckError::NotAPush);
        }
        if push.updates.len() > MAX_PUSH_UPDATES {
            return Err(SshCheckError::TooManyUpdates);
        }
    }
    let needed = command.needed_scope();
    let info = RequestInfo {
        client: q.client.clone(),
        user_agent: Some(USER_AGENT.to_owned()),
        via: Door::Ssh,
    };
    let allowed = match gatekeeper.check_ssh(&q.certificate, &needed, &info).await {
        Ok(a) => a,
        Err(d) => {
            return Ok(SshDecision {
                allowed: false,
                message: Some(d.message()),
                subject: None,
                jti: None,
                refused: Vec::new(),
            });
        }
    };
    let mut decision = SshDecision {
        allowed: true,
        message: None,
        subject: Some(allowed.claims.sub.clone()),
        jti: Some(allowed.claims.jti.clone()),
        refused: Vec::new(),
    };
    let Some(push) = &q.push else {
        if let Err(d) = gatekeeper.allow(&allowed, &info, None).await {
            decision.allowed = false;
            decision.message = Some(d.message());
        }
        return Ok(decision);
    };
    let list = command_list(push);
    let metrics = gatekeeper.audit.metrics();
    let updates = updates_json(&list, &metrics);
    let refs = &allowed.claims.refs;
    let mut refused = decide(&list.commands, refs);
    if refused.is_empty() && !refs.is_empty() {
        refused = decide_targets(&list.commands, &push.symrefs, refs);
    }
    if refused.is_empty() {
        if let Err(d) = gatekeeper.allow(&allowed, &info, Some(updates)).await {
            decision.allowed = false;
            decision.message = Some(d.message());
        }
        return Ok(decision);
    }
    let denial = denial_text(&refused, &metrics);
    decision.allowed = false;
    decision.message = Some(
        match gatekeeper
            .refuse_push(&allowed, &info, denial.clone(), updates)
            .await
        {
            Some(limited) => limited.message(),
            None => denial,
        },
    );
    decision.refused = refused
        .into_iter()
        .map(|r| SshRefusedRef {
            refname: r.refname,
            reason: r.reason,
        })
        .collect();
    Ok(decision)
}

fn command_list(push: &SshPush) -> CommandList {
    CommandList {
        commands: push
            .updates
            .iter()
            .map(|u| Command {
                old: u.old.clone(),
                new: u.new.clone(),
                refname: u.refname.clone(),
            })
            .collect(),
        ..CommandList::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use axum::extract::FromRef as _;
    use jit_proto::ssh::SshRefUpdate;
    use jit_proto::{Claims, RefPattern, Scope};
    use ssh_key::private::{Ed25519Keypair, KeypairData};

    use super::*;
    use crate::audit::AuditQuery;
    use crate::clock::ManualClock;
    use crate::state::AppState;
    use crate::store::memory::MemoryStore;
    use crate::store::{Grant, GrantStore as _, RevokeTarget};

    const NOW_MS: i64 = 1_700_000_000_000;

    struct World {
        state: AppState,
        store: Arc<MemoryStore>,
    }

    fn world() -> World {
        let store = Arc::new(MemoryStore::new(10_000));
        let clock = Arc::new(ManualClock::new(NOW_MS));
        World {
            state: AppState::for_tests(store.clone(), clock),
            store,
        }
    }

    impl World {
        async fn certificate(&self, scope: &str, refs: &[&str]) -> (String, String) {
            let claims = Claims {
                sub: "alice".into(),
                scope: Scope::parse(scope).expect("scope"),
                refs: refs
                    .iter()
                    .map(|r| RefPattern::parse(r).expect("pattern"))
                    .collect(),
                reason: None,
                ..crate::token::tests::claims(NOW_MS / 1000, 600)
            };
            self.store
                .put(&Grant::from_claims(&claims, NOW_MS - 1), NOW_MS)
                .await
                .expect("put");
            let key = ssh_key::PrivateKey::new(
                KeypairData::Ed25519(Ed25519Keypair::from_seed(&[4; 32])),
                "",
            )
            .expect("key");
            let line = key.public_key().to_openssh().expect("line");
            let (cert, _) = self.state.signer.sign_ssh(&claims, &line).expect("cert");
            (cert, claims.jti)
        }

        async fn ask(&self, q: &SshCheck) -> SshDecision {
            check(&Gatekeeper::from_ref(&self.state), q)
                .await
                .expect("asked")
        }

        async fn events(&self) -> Vec<crate::audit::AuditEvent> {
            self.store
                .read_audit(&AuditQuery {
                    limit: 100,
                    ..AuditQuery::default()
                })
                .await
                .expect("audit")
        }
    }

    fn q(cert: &str, command: &str) -> SshCheck {
        SshCheck {
            certificate: cert.into(),
            command: command.into(),
            client: Some("192.0.2.1".into()),
            push: None,
        }
    }

    fn push(updates: &[&str], symrefs: &[(&str, &str)]) -> SshPush {
        SshPush {
            updates: updates
                .iter()
                .map(|r| SshRefUpdate {
                    old: "1".repeat(40),
                    new: "2".repeat(40),
                    refname: (*r).into(),
                })
                .collect(),
            symrefs: symrefs
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[tokio::test]
    async fn reads_within_the_scope_only_and_every_answer_is_audited() {
        let w = world();
        let (cert, jti) = w.certificate("repo:acme/api:read", &[]).await;
        let d = w.ask(&q(&cert, "git-upload-pack 'acme/api.git'")).await;
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.jti.as_deref(), Some(jti.as_str()));
        for other in [
            "git-upload-pack 'acme/api-private.git'",
            "git-receive-pack 'acme/api.git'",
        ] {
            let d = w.ask(&q(&cert, other)).await;
            assert!(!d.allowed, "{other}");
            assert!(
                d.message
                    .as_deref()
                    .unwrap_or("")
                    .contains("token grants repo:acme/api:read")
            );
        }
        let events = w.events().await;
        let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "access.allowed").count(), 1);
        assert_eq!(kinds.iter().filter(|k| **k == "access.denied").count(), 2);
        assert!(events.iter().all(|e| e.data["via"] == "ssh"));
        assert!(
            events
                .iter()
                .all(|e| e.jti.as_deref() == Some(jti.as_str()))
        );
    }

    #[tokio::test]
    async fn a_revoked_grant_is_refused_on_the_next_question() {
        let w = world();
        let (cert, jti) = w.certificate("repo:acme/api:read", &[]).await;
        let ask = q(&cert, "git-upload-pack 'acme/api.git'");
        assert!(w.ask(&ask).await.allowed);
        w.store
            .revoke(&RevokeTarget::Jti(jti), NOW_MS + 1)
            .await
            .expect("revoke");
        let d = w.ask(&ask).await;
        assert!(!d.allowed);
        assert!(
            d.message.as_deref().unwrap_or("").contains("revoked"),
            "{d:?}"
        );
    }

    #[tokio::test]
    async fn foreign_and_garbage_certificates_are_refused() {
        let w = world();
        let (cert, _) = w.certificate("repo:acme/api:read", &[]).await;
        let other = world();
        for c in [
            "garbage".to_owned(),
            String::new(),
            // Signed by another broker's CA.
            other.certificate("repo:acme/api:read", &[]).await.0,
            cert.replace("AAAA", "AAAB"),
        ] {
            let d = w.ask(&q(&c, "git-upload-pack 'acme/api.git'")).await;
            assert!(!d.allowed, "{c}");
        }
        let err = check(
            &Gatekeeper::from_ref(&w.state),
            &q(&cert, "git-upload-pack 'acme/../x.git'"),
        )
        .await;
        assert!(matches!(err, Err(SshCheckError::Command(_))), "{err:?}");
        let mut read_with_updates = q(&cert, "git-upload-pack 'acme/api.git'");
        read_with_updates.push = Some(push(&["refs/heads/main"], &[]));
        let err = check(&Gatekeeper::from_ref(&w.state), &read_with_updates).await;
        assert_eq!(err, Err(SshCheckError::NotAPush));
    }

    #[tokio::test]
    async fn pushes_are_decided_ref_by_ref_with_symbolic_refs() {
        let w = world();
        let (cert, _) = w
            .certificate("repo:acme/api:write", &["refs/heads/fix/*"])
            .await;
        let mut ask = q(&cert, "git-receive-pack 'acme/api.git'");
        assert!(w.ask(&ask).await.allowed, "the advertisement");
        ask.push = Some(push(&["refs/heads/fix/a"], &[]));
        assert!(w.ask(&ask).await.allowed);
        ask.push = Some(push(&["refs/heads/fix/a", "refs/heads/main"], &[]));
        let d = w.ask(&ask).await;
        assert!(!d.allowed);
        assert_eq!(d.refused.len(), 1);
        assert_eq!(d.refused[0].refname, "refs/heads/main");
        assert!(
            d.message
                .as_deref()
                .unwrap_or("")
                .contains("refs/heads/main")
        );
        // A pushed name that is a symbolic ref to a ref outside the grant.
        ask.push = Some(push(
            &["refs/heads/fix/b"],
            &[("refs/heads/fix/b", "refs/heads/main")],
        ));
        let d = w.ask(&ask).await;
        assert!(!d.allowed);
        assert!(d.refused[0].reason.contains("symbolic ref"), "{d:?}");
        ask.push = Some(SshPush {
            updates: vec![
                SshRefUpdate {
                    old: "0".repeat(40),
                    new: "1".repeat(40),
                    refname: "refs/heads/fix/x".into(),
                };
                MAX_PUSH_UPDATES + 1
            ],
            symrefs: BTreeMap::new(),
        });
        let err = check(&Gatekeeper::from_ref(&w.state), &ask).await;
        assert_eq!(err, Err(SshCheckError::TooManyUpdates));
        let events = w.events().await;
        let denied: Vec<_> = events
            .iter()
            .filter(|e| e.event == "access.denied")
            .collect();
        assert_eq!(denied.len(), 2);
        assert!(denied.iter().all(|e| e.data["updates"].is_array()));
    }
}
