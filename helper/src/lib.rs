//! git-jit's client side: the git credential helper (`git-credential-jit`) and the `git jit`
//! command share this library. See DESIGN.md "Helper".
#![forbid(unsafe_code)]

pub mod cache;
pub mod challenge;
pub mod config;
pub mod protocol;
