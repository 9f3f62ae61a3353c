//! The one end-to-end test binary. Each module exercises one area against real processes
//! started by the `jit_e2e` harness (see `tests/src/lib.rs`).

#![forbid(unsafe_code)]

mod admin_cli;
mod approvals;
mod audit_budget;
mod authz_nginx;
mod broker_fail_closed;
mod broker_tls;
mod console;
mod deploy;
mod dev_rebinding;
mod edge;
mod exchange_oidc;
mod first_hour;
mod gateway;
mod harness_broker;
mod harness_ci_issuer;
mod harness_cleanup;
mod harness_git;
mod harness_oidc;
mod harness_redis;
mod helper_flow;
mod key_rotation;
mod operability;
mod ratelimit_redis;
mod redis_sentinel;
mod redis_tls;
mod replicas;
mod ssh;
mod start_checks;
mod store_redis;
mod support;
mod terminal_escapes;
