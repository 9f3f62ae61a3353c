//! The admin runtime: a small tokio runtime of its own, on threads the OS schedules at a lower
//! priority, for the work that answers no Git request — the admin API's and the console's
//! reads (grant listings, audit reads and exports, pages), tidying after revocations, the
//! approval requests' expiry sweep and webhook deliveries — so that none of it competes with
//! `/authz`, the token exchange and the gateway for the request runtime's workers.
//!
//! Its [`THREADS`] worker thread is named [`THREAD_NAME`] and runs under `SCHED_BATCH` at nice
//! [`NICE`]: when the machine is busy the request runtime's threads get the CPU first (about
//! ten times the admin thread's share), when it is idle admin work runs at full speed. Failing
//! to lower the priority (a platform or sandbox that refuses it) is logged, not fatal.
//!
//! Work handed over keeps its request: the request id ([`crate::recorder::in_request`]: its
//! audit events and log lines name it) and the tracing span go with it, and dropping the
//! waiting request (a client gone, a timeout) cancels the work, as it did on the request
//! runtime. A panic is raised again in the waiting request.
//!
//! While it is polled, admin work sees the runtime that handed it over as the current one, so
//! what it starts that outlives it — the audit writer, a store or rate-limit connection's
//! reader task, an HTTP client's pooled connection — runs on the request runtime, which uses
//! them too. The exception is [`AdminRuntime::run_keeping_spawns`], for what belongs here: the
//! store's admin connection is opened through it at start, so the replies of listings and
//! tidying are read on the admin thread.
//!
//! [`AdminRuntime::inline`] (the default, for tests and embedding) runs everything on the
//! caller's runtime, as if there were no admin runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::recorder::{in_request, with_request_id};

/// The name of the admin runtime's threads.
pub const THREAD_NAME: &str = "jit-admin";

/// Worker threads of the admin runtime: admin work is occasional and a single thread is enough
/// for it, and one is all it may take from the request runtime on a busy machine.
pub const THREADS: usize = 1;

/// The nice value of the admin runtime's threads (0 is the default; 19 the lowest priority).
pub const NICE: i32 = 10;

/// Why admin work did not finish.
#[derive(Debug, thiserror::Error)]
pub enum AdminWorkError {
    /// The admin runtime shut down before the work finished.
    #[error("the admin runtime stopped before the work finished")]
    Stopped,
}

/// Where admin and background work runs: the admin runtime, or inline. Cheap to clone; the
/// runtime shuts down (without waiting for work in flight) when the last clone is dropped.
#[derive(Clone, Default)]
pub struct AdminRuntime {
    own: Option<Arc<Owned>>,
}

impl std::fmt::Debug for AdminRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.handle() {
            Some(_) => write!(
                f,
                "AdminRuntime({THREADS} thread {THREAD_NAME:?}, nice {NICE})"
            ),
            None => f.write_str("AdminRuntime(inline)"),
        }
    }
}

/// The runtime itself, shut down in the background when dropped: it may be dropped inside
/// the request runtime, where waiting for its threads is not allowed.
struct Owned {
    runtime: Option<Runtime>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl AdminRuntime {
    /// Starts the admin runtime: [`THREADS`] thread named [`THREAD_NAME`], at lower priority.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name(THREAD_NAME)
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        tracing::debug!(
            threads = THREADS,
            nice = NICE,
            "admin and background work runs on its own runtime"
        );
        Ok(Self {
            own: Some(Arc::new(Owned {
                runtime: Some(runtime),
            })),
        })
    }

    /// No admin runtime: work runs where it is handed over.
    pub fn inline() -> Self {
        Self::default()
    }

    fn handle(&self) -> Option<&Handle> {
        self.own
            .as_ref()
            .and_then(|o| o.runtime.as_ref())
            .map(Runtime::handle)
    }

    /// Runs `work` on the admin runtime and waits for it, carrying the current request id and
    /// tracing span. Dropping the returned future cancels the work; a panic in it is raised
    /// again here.
    pub async fn run<F>(&self, work: F) -> Result<F::Output, AdminWorkError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(admin) = self.handle() else {
            return Ok(work.await);
        };
        let id = with_request_id(|id| id.map(str::to_owned));
        let work = in_request(id, SpawnsOn::caller(work)).instrument(tracing::Span::current());
        let task = CancelOnDrop(admin.spawn(work));
        match task.await {
            Ok(output) => Ok(output),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(AdminWorkError::Stopped),
        }
    }

    /// Starts background `work` (a worker loop) on the admin runtime; it runs until it ends or
    /// the returned handle is aborted.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle() {
            Some(admin) => admin.spawn(SpawnsOn::caller(work)),
            None => tokio::spawn(work),
        }
    }

    /// Runs `work` on the admin runtime with that runtime current, so the tasks it starts
    /// (a connection's reader) run there too; waits for it. `None` if the runtime stopped
    /// first.
    pub async fn run_keeping_spawns<F>(&self, work: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle() {
            Some(admin) => CancelOnDrop(admin.spawn(work)).await.ok(),
            None => Some(work.await),
        }
    }

    /// Calls `f` with the admin runtime current (inline: the caller's), so the tasks it
    /// starts (e.g. webhook delivery loops) run there.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.handle() {
            Some(admin) => {
                let _entered = admin.enter();
                f()
            }
            None => f(),
        }
    }
}

/// Lowers the calling thread's priority to `SCHED_BATCH` at nice [`NICE`]; a failure is a
/// warning (once), not fatal.
fn lower_priority() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let Err(e) = set_low_priority() else {
        return;
    };
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error = %e,
            "cannot lower the admin runtime's thread priority: admin work competes with requests at equal priority"
        );
    }
}

#[cfg(target_os = "linux")]
fn set_low_priority() -> Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    // The crate maps its portable 0..=99 onto nice 19..=-20 (39 steps, rounded down): 22 is
    // nice 10 ([`NICE`]; a test reads the thread's nice value back).
    let value = ThreadPriorityValue::try_from(22u8)?;
    thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    )
    .map_err(|e| format!("{e:?}"))
}

#[cfg(not(target_os = "linux"))]
fn set_low_priority() -> Result<(), String> {
    Err("lowering a thread's priority is implemented on Linux only".into())
}

/// `work`, polled with the runtime that handed it over entered: what it spawns runs there.
struct SpawnsOn<F> {
    caller: Option<Handle>,
    work: Pin<Box<F>>,
}

impl<F: Future> SpawnsOn<F> {
    /// `work`, spawning onto the runtime of the calling thread (if any).
    fn caller(work: F) -> Self {
        Self {
            caller: Handle::try_current().ok(),
            work: Box::pin(work),
        }
    }
}

impl<F: Future> Future for SpawnsOn<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.caller.as_ref().map(Handle::enter);
        this.work.as_mut().poll(cx)
    }
}

/// A task that is aborted when its waiter is dropped.
struct CancelOnDrop<T>(JoinHandle<T>);

impl<T> Future for CancelOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(str::to_owned)
    }

    /// The nice value of the calling thread (Linux: field 19 of /proc/thread-self/stat).
    #[cfg(target_os = "linux")]
    fn nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields after the command name (in parentheses, which may hold spaces): state is 3.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        rest.split(' ')
            .nth(16)
            .expect("nice")
            .parse()
            .expect("number")
    }

    #[tokio::test]
    async fn work_runs_on_the_admin_thread_at_lower_priority_and_spawns_on_the_caller() {
        let admin = AdminRuntime::start().expect("runtime");
        let here = thread_name();
        let (name, spawned_on, policy_nice) = admin
            .run(async {
                let spawned = tokio::spawn(async { thread_name() }).await.expect("task");
                #[cfg(target_os = "linux")]
                let policy_nice = Some((
                    thread_priority::thread_schedule_policy().expect("policy"),
                    nice(),
                ));
                #[cfg(not(target_os = "linux"))]
                let policy_nice: Option<()> = None;
                (thread_name(), spawned, policy_nice)
            })
            .await
            .expect("ran");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        assert_ne!(here.as_deref(), Some(THREAD_NAME));
        // What admin work starts belongs to the runtime that handed it over.
        assert_eq!(spawned_on, here);
        #[cfg(target_os = "linux")]
        assert_eq!(
            policy_nice,
            Some((
                thread_priority::ThreadSchedulePolicy::Normal(
                    thread_priority::NormalThreadSchedulePolicy::Batch
                ),
                NICE
            ))
        );
        #[cfg(not(target_os = "linux"))]
        let _ = policy_nice;

        // Work of its own stays on it.
        let kept = admin
            .run_keeping_spawns(async { tokio::spawn(async { thread_name() }).await })
            .await
            .expect("ran")
            .expect("task");
        assert_eq!(kept.as_deref(), Some(THREAD_NAME));
        let background = admin.spawn(async { thread_name() }).await.expect("task");
        assert_eq!(background.as_deref(), Some(THREAD_NAME));
        let entered = admin.enter(|| tokio::spawn(async { thread_name() }));
        assert_eq!(entered.await.expect("task").as_deref(), Some(THREAD_NAME));
    }

    #[tokio::test]
    async fn inline_runs_here() {
        let admin = AdminRuntime::inline();
        let here = thread_name();
        let name = admin.run(async { thread_name() }).await.expect("ran");
        assert_eq!(name, here);
        assert_eq!(admin.spawn(async { 7 }).await.expect("task"), 7);
    }

    #[tokio::test]
    async fn the_request_id_goes_along_and_a_dropped_waiter_cancels() {
        let admin = AdminRuntime::start().expect("runtime");
        let id = in_request(
            Some("req-42".into()),
            admin.run(async { with_request_id(|id| id.map(str::to_owned)) }),
        )
        .await
        .expect("ran");
        assert_eq!(id.as_deref(), Some("req-42"));

        // Work whose waiter is dropped is aborted: its guard is dropped without it finishing.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<bool>();
        struct Guard(Option<tokio::sync::oneshot::Sender<bool>>, bool);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(self.1);
                }
            }
        }
        let waiter = tokio::spawn({
            let admin = admin.clone();
            async move {
                admin
                    .run(async move {
                        let mut guard = Guard(Some(dropped_tx), false);
                        let _ = started_tx.send(());
                        std::future::pending::<()>().await;
                        guard.1 = true;
                    })
                    .await
            }
        });
        started_rx.await.expect("started");
        waiter.abort();
        assert_eq!(dropped_rx.await, Ok(false), "cancelled, never finished");
    }

    #[tokio::test]
    #[should_panic(expected = "admin work failed")]
    async fn a_panic_is_raised_in_the_waiter() {
        let admin = AdminRuntime::start().expect("runtime");
        let _ = admin
            .run(async {
                if thread_name().as_deref() == Some(THREAD_NAME) {
                    panic!("admin work failed");
                }
            })
            .await;
    }
}
