//! The git-jit broker: identity exchange, policy, signing, the grant store, the Git gateway
//! and the audit log, as a library with a thin binary.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod clock;
pub mod commands;
pub mod compile;
pub mod config;
pub mod devissuer;
pub mod error;
pub mod exchange;
pub mod gatekeeper;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod recorder;
pub mod revocation;
pub mod state;
pub mod store;
pub mod token;

pub use http::{MAX_API_BODY, app, run};
pub use state::AppState;
