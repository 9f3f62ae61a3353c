//! The git-jit broker: identity exchange, policy, signing, the grant store, the Git gateway
//! and the audit log, as a library with a thin binary.
//!
//! # Layout
//!
//! Modules sit on floors, lowest first; none uses a module on its own floor or above
//! (`tests/layers.rs` checks it, docs/architecture.md draws it).
//! 1. [`clock`], [`config`] (plain serde data), [`keys`], [`jose`] (JWT signatures on
//!    `ring`), [`metrics`], [`outbound`] (what every client for a peer shares).
//! 2. Pure domain: [`identity`], [`token`], [`audit`] (chain), [`ratelimit`], [`devissuer`],
//!    [`notify`] (approval webhooks).
//! 3. [`policy`] (decides on verified identities), [`store`] (grants, audit events).
//! 4. [`recorder`] (writes audit events), [`error`]; 5. [`revocation`], [`approval`] (the
//!    life of approval requests), [`runtime`] (the admin runtime: admin and background work
//!    off the request runtime's threads).
//! 6. Services: [`gatekeeper`] (the one decision on a Git request), [`exchange`],
//!    [`admin`], [`gateway`] (Git smart-HTTP and upstreams), [`introspection`] (who may
//!    introspect), [`console`] (the security console's sessions, sign-in and pages).
//! 7. [`compile`]: `Config` → runtime objects, once, for `check-config` and `serve`.
//! 8. [`state`]: `AppState` and the narrow sub-states handlers take.
//! 9. [`http`]: routes and handlers, [`app`] and [`run`].
//! 10. [`commands`]: the subcommands' bodies; `main.rs` only parses flags.
#![forbid(unsafe_code)]

pub mod admin;
pub mod approval;
pub mod audit;
pub mod clock;
pub mod commands;
pub mod compile;
pub mod config;
pub mod console;
pub mod devissuer;
pub mod error;
pub mod exchange;
pub mod gatekeeper;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod introspection;
pub mod jose;
pub mod keys;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod policy;
pub mod preflight;
pub mod ratelimit;
pub mod recorder;
pub mod redis_conn;
pub mod revocation;
pub mod runtime;
pub mod ssh;
pub mod state;
pub mod store;
pub mod token;

pub use http::{MAX_API_BODY, app, run};
pub use state::AppState;
