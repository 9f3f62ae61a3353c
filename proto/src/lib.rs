//! Wire types shared by the git-jit broker and helper: scopes, ref patterns, token claims,
//! API bodies and the [`Secret`] wrapper. No I/O.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod glob;
pub mod refs;
pub mod scope;
pub mod secret;
pub mod token;

pub use refs::RefPattern;
pub use scope::{Action, Actions, RepoPath, Scope, ScopeError};
pub use secret::Secret;
pub use token::Claims;
