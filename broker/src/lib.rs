//! The git-jit broker: identity exchange, policy, signing, the grant store, the Git gateway
//! and the audit log, as a library with a thin binary.
#![forbid(unsafe_code)]

pub mod audit;
pub mod clock;
pub mod keys;
pub mod store;
pub mod token;
