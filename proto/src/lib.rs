//! Wire types shared by the git-jit broker and helper: the whole contract between them, and
//! nothing else. No I/O, no async: types, parsers and their canonical printers.
//!
//! Every wire shape has exactly one type here that both builds and parses it; both sides use
//! it, so the two can never drift apart. Secrets travel in [`Secret`], whose `Debug` and
//! `Display` print `<redacted>`.
//!
//! # Layout
//!
//! - [`scope`]: repository paths (the one normaliser) and `repo:<path>:<actions>` scopes.
//! - [`refs`]: ref names and the ref patterns a write grant is narrowed to.
//! - [`glob`]: the anchored `*`/`**` matcher behind ref and repository patterns.
//! - [`token`]: the claims of a git-jit token and its JOSE `typ`.
//! - [`time`]: NumericDates and lifetimes, bounded before any arithmetic.
//! - [`secret`]: [`Secret`], the wrapper that never prints its content.
//! - [`exchange`]: the RFC 8693 token exchange form (`POST /oauth/token`) and its git-jit
//!   parameters (`role`, `reason`, `ttl`, `refs`); the answer is [`api::TokenResponse`].
//! - [`approval`]: approval requests (`/v1/requests`) and the token endpoint's pending
//!   answer (`authorization_pending`, `slow_down`, …).
//! - [`api`]: the other OAuth bodies: token response, RFC 6749 errors, introspection,
//!   server metadata.
//! - [`challenge`]: `WWW-Authenticate` challenge lists and the gateway's Bearer challenge.
//! - [`credential`]: the `Authorization` header's Bearer or Basic credential.
//! - [`admin`]: the admin API's bodies and query strings (`/v1/grants`, `/v1/revoke`,
//!   `/v1/audit`).
//! - [`audit`]: the audit event as stored, served and read, and its kinds.
//! - [`ssh`]: Git over SSH: the public key an SSH certificate is asked for, the command sshd
//!   passes to `jit-ssh-gate` (normalised like HTTP paths), the gate's question to the broker.
//! - [`display`]: text for people (tables, CSV cells): control characters and formulas made
//!   inert.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod api;
pub mod approval;
pub mod audit;
pub mod challenge;
pub mod credential;
pub mod display;
pub mod exchange;
pub mod glob;
pub mod refs;
pub mod scope;
pub mod secret;
pub mod ssh;
pub mod time;
pub mod token;

#[cfg(test)]
mod testrng;

pub use audit::{AuditEvent, EventKind};
pub use challenge::BearerChallenge;
pub use credential::Credential;
pub use exchange::ExchangeRequest;
pub use refs::RefPattern;
pub use scope::{Action, Actions, RepoPath, Scope, ScopeError};
pub use secret::Secret;
pub use token::Claims;
