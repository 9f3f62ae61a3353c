//! The accept loop: every connection the broker serves passes here. A connection over the cap
//! (all connections, or one address's share of them) is closed as soon as it is accepted; a
//! client gets [`ServerConfig::header_read_timeout_secs`] to send a request's headers (hyper's
//! timer, which also runs between kept-alive requests) and may leave its connection silent for
//! at most [`ServerConfig::idle_timeout_secs`]. So half-open or trickling connections cannot
//! hold the process's descriptors, and others still get in. On shutdown, accepting stops, each
//! connection finishes its request in flight, and the loop returns when all are closed.
//!
//! With `[server.tls]` each connection first completes a TLS handshake (within the header-read
//! timeout) and is then served as HTTP/2 or HTTP/1.1, as ALPN chose. A peer in
//! `server.trusted_proxies` is exempt from the per-address share, and its requests carry the
//! client its `X-Forwarded-For` names as their `ConnectInfo`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::proxies::TrustedProxies;
use crate::config::ServerConfig;
use crate::metrics::ConnectionMetrics;
use crate::ratelimit::address_key;

/// Most HTTP/2 streams one connection may have open at once.
const MAX_H2_STREAMS: u32 = 100;

/// What sits between the socket and HTTP: TLS (optional) and the proxies whose
/// `X-Forwarded-For` is believed.
#[derive(Clone, Default)]
pub struct Edge {
    /// Terminate TLS with this acceptor; `None`: plain HTTP/1.1.
    pub tls: Option<TlsAcceptor>,
    /// `server.trusted_proxies`.
    pub proxies: TrustedProxies,
}

/// What the accept loop enforces, resolved from `[server]` and the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections one address (an IPv6 /64) may hold.
    pub per_address: usize,
    /// Time to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest a connection may move no byte.
    pub idle_timeout: Duration,
}

impl ConnectionPolicy {
    /// The policy of `server` in a process that may open `nofile` descriptors.
    pub fn new(server: &ServerConfig, nofile: Option<u64>) -> Self {
        let max_connections = server.connection_cap(nofile);
        Self {
            max_connections,
            per_address: server.per_address_cap(max_connections),
            header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(server.idle_timeout_secs),
        }
    }

    /// The policy of `server` in this process: `RLIMIT_NOFILE` read once, with a warning
    /// when the configured cap (plus the reserve) exceeds it — past it, accepting fails with
    /// "too many open files" before the cap is reached.
    pub fn for_process(server: &ServerConfig) -> Self {
        let nofile = rlimit::Resource::NOFILE.get_soft().ok();
        let policy = Self::new(server, nofile);
        tracing::info!(
            max_connections = policy.max_connections,
            per_address = policy.per_address,
            header_read_timeout_secs = policy.header_read_timeout.as_secs(),
            idle_timeout_secs = policy.idle_timeout.as_secs(),
            rlimit_nofile = nofile,
            "connection limits"
        );
        if let Some(limit) = nofile {
            let needed = (policy.max_connections as u64).saturating_add(crate::config::FD_RESERVE);
            if needed > limit {
                tracing::warn!(
                    max_connections = policy.max_connections,
                    rlimit_nofile = limit,
                    "server.max_connections plus a reserve of {} descriptors exceeds the process's \
                     descriptor limit (RLIMIT_NOFILE): raise the limit (e.g. LimitNOFILE= in the \
                     systemd unit) or lower the cap",
                    crate::config::FD_RESERVE
                );
            }
        }
        policy
    }
}

#[cfg(test)]
impl ConnectionPolicy {
    /// Eight connections, a 30 s header read timeout and `idle_timeout`: test servers.
    pub(crate) fn small(idle_timeout: Duration) -> Self {
        Self {
            max_connections: 8,
            per_address: 8,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout,
        }
    }
}

/// Why a connection was not admitted: the label of `jit_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The cap on all connections.
    Capacity,
    /// The address's share of it.
    AddressShare,
}

impl Over {
    fn label(self) -> &'static str {
        match self {
            Over::Capacity => "capacity",
            Over::AddressShare => "address_share",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<String, usize>,
}

/// The connections open, in total and by address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max: usize,
    per_address: usize,
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnectionLimits>,
    key: String,
}

impl ConnectionLimits {
    /// Limits of `max` connections, `per_address` of them from one address.
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_address,
            counts: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock cannot leave the counts half-updated.
        match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Admits a connection from `ip`, or says which cap it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Over> {
        self.admit_from(ip, false)
    }

    /// Admits a connection from `ip`, counted in its address's share unless `unshared` (a
    /// trusted proxy, which carries many clients), or says which cap it is over.
    pub fn admit_from(self: &Arc<Self>, ip: IpAddr, unshared: bool) -> Result<Permit, Over> {
        let key = address_key(&ip.to_string());
        let mut counts = self.lock();
        if counts.total >= self.max {
            return Err(Over::Capacity);
        }
        let held = counts.by_address.get(&key).copied().unwrap_or(0);
        if held >= self.per_address && !unshared {
            return Err(Over::AddressShare);
        }
        counts.total += 1;
        counts.by_address.insert(key.clone(), held + 1);
        Ok(Permit {
            limits: self.clone(),
            key,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&self.key);
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it was accepted.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records when it last moved a byte.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a client over the cap is told, when its socket takes it without waiting.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 45\r\nretry-after: 1\r\nconnection: close\r\n\r\ngit-jit: too many connections; retry shortly\n";

/// Serves `router` on `listener` under `policy` until `shutdown` completes, counting in
/// `metrics`. Each request carries its peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    policy: ConnectionPolicy,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_edge(listener, router, policy, Edge::default(), metrics, shutdown).await
}

/// [`serve`] behind `edge`: TLS when it has an acceptor, and each request's
/// `ConnectInfo<SocketAddr>` the client a trusted proxy names (port 0), else the peer.
pub async fn serve_edge(
    listener: TcpListener,
    router: Router,
    policy: ConnectionPolicy,
    edge: Edge,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = ConnectionLimits::new(policy.max_connections, policy.per_address);
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow with the server's age.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: the pending connection stays queued; wait a
                // little rather than spin on the same error.
                metrics.refused("accept_error");
                tracing::error!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match limits.admit_from(peer.ip(), edge.proxies.contains(peer.ip())) {
            Ok(p) => p,
            Err(over) => {
                metrics.refused(over.label());
                // Best effort, never waiting: the socket's buffer takes it or it is dropped.
                let _ = stream.try_write(OVER_CAPACITY);
                drop(stream);
                continue;
            }
        };
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            policy,
            edge.clone(),
            metrics.clone(),
            permit,
            stopped.clone(),
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Accept errors that concern one connection only (the client went away before it was
/// accepted): the next accept goes on at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Serves one connection until it ends, times out, or shutdown lets its request finish.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    policy: ConnectionPolicy,
    edge: Edge,
    metrics: ConnectionMetrics,
    permit: Permit,
    stopped: watch::Receiver<bool>,
) {
    metrics.open(1);
    let activity = Activity::new();
    let tracked = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    let proxies = edge.proxies;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        let client = proxies.client(peer.ip(), request.headers());
        let seen = if client == peer.ip() {
            peer
        } else {
            SocketAddr::new(client, 0)
        };
        request.extensions_mut().insert(ConnectInfo(seen));
        router.clone().oneshot(request)
    });
    let life = Life {
        policy,
        activity: &activity,
        metrics: &metrics,
        stopped,
    };
    match edge.tls {
        None => drive(TokioIo::new(tracked), false, service, life).await,
        Some(acceptor) => {
            // A handshake gets the time a request's headers get; a slow one is a slow client.
            match tokio::time::timeout(policy.header_read_timeout, acceptor.accept(tracked)).await {
                Err(_) => metrics.timed_out("tls_handshake"),
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                Ok(Ok(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    drive(TokioIo::new(tls), h2, service, life).await;
                }
            }
        }
    }
    metrics.open(-1);
    drop(permit);
}

/// How a connection ended: `None` when the idle timeout closed it.
type Ended = Option<Result<(), Box<dyn std::error::Error + Send + Sync>>>;

/// What bounds a connection's life: its timeouts, its traffic, the shutdown signal.
struct Life<'a> {
    policy: ConnectionPolicy,
    activity: &'a Activity,
    metrics: &'a ConnectionMetrics,
    stopped: watch::Receiver<bool>,
}

/// Serves HTTP/1.1 (or HTTP/2 when `h2`) on `io` until the connection ends, idles out, or a
/// shutdown lets its requests in flight finish.
async fn drive<I, S, B>(io: I, h2: bool, service: S, life: Life<'_>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Life {
        policy,
        activity,
        metrics,
        mut stopped,
    } = life;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(policy.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    let ended: Ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break Some(ended),
            () = activity.idle_for(policy.idle_timeout) => {
                metrics.timed_out("idle");
                break None;
            }
            changed = stopped.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    };
    report(ended, metrics);
}

/// Counts a connection that ended on the header-read timeout; logs other errors.
fn report(ended: Ended, metrics: &ConnectionMetrics) {
    if let Some(Err(e)) = ended {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            metrics.timed_out("header_read");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_and_each_addresss_share_hold_and_free_on_drop() {
        let limits = ConnectionLimits::new(4, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let c: IpAddr = "192.0.2.3".parse().expect("ip");
        let a1 = limits.admit(a).expect("a1");
        let a2 = limits.admit(a).expect("a2");
        assert_eq!(limits.admit(a).expect_err("share"), Over::AddressShare);
        let _b1 = limits.admit(b).expect("b1");
        let _b2 = limits.admit(b).expect("b2");
        assert_eq!(limits.admit(c).expect_err("full"), Over::Capacity);
        assert_eq!(limits.open(), 4);
        drop(a1);
        assert_eq!(limits.open(), 3);
        let _c1 = limits.admit(c).expect("a place was freed");
        assert_eq!(limits.admit(a).expect_err("full again"), Over::Capacity);
        drop(a2);
        let _a3 = limits.admit(a).expect("a again");
        // One IPv6 host holds its whole /64: the share is per /64.
        let limits = ConnectionLimits::new(10, 1);
        let _v6 = limits
            .admit("2001:db8::1".parse().expect("ip"))
            .expect("first");
        assert_eq!(
            limits
                .admit("2001:db8::2".parse().expect("ip"))
                .expect_err("same /64"),
            Over::AddressShare
        );
    }

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Bound on anything the tests wait for; only a broken server reaches it.
    const BOUND: Duration = Duration::from_secs(30);

    /// A server on a free port with a 1 s idle timeout: `/ok`; `/wait`, which says it
    /// `entered` and answers once `release`d; `/upload`, which reads its whole body.
    async fn server(
        entered: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
    ) -> (
        SocketAddr,
        ConnectionMetrics,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let router = Router::new()
            .route("/ok", get(|| async { "ok\n" }))
            .route(
                "/wait",
                get(move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "released\n"
                }),
            )
            .route(
                "/upload",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let policy = ConnectionPolicy::small(Duration::from_secs(1));
        let metrics = ConnectionMetrics::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(
            listener,
            router,
            policy,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, metrics, stop, served)
    }

    async fn read_until(s: &mut TcpStream, needle: &str) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&out).contains(needle) {
            let n = tokio::time::timeout(BOUND, s.read(&mut buf))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(
                n > 0,
                "closed before {needle:?}: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn closed(s: &mut TcpStream) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(BOUND, s.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }

    /// Shutdown stops accepting, lets the request in flight finish, closes kept-alive
    /// connections, and returns.
    #[tokio::test]
    async fn graceful_shutdown_finishes_requests_in_flight() {
        let entered = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let (addr, _, stop, served) = server(entered.clone(), release.clone()).await;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        read_until(&mut idle, "ok\n").await;
        let mut busy = TcpStream::connect(addr).await.expect("connect");
        busy.write_all(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        // The request is in its handler before shutdown begins.
        entered.notified().await;
        let _ = stop.send(());
        assert!(
            closed(&mut idle).await,
            "the kept-alive connection is closed"
        );
        release.notify_one();
        let answer = read_until(&mut busy, "released\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        tokio::time::timeout(BOUND, served)
            .await
            .expect("serve returns")
            .expect("joined")
            .expect("served");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }

    /// An upload that stalls mid-body is closed after the idle timeout, and counted.
    #[tokio::test]
    async fn a_stalled_upload_is_closed_after_the_idle_timeout() {
        let (addr, metrics, _stop, _served) = server(Arc::default(), Arc::default()).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
            .await
            .expect("write");
        assert!(closed(&mut s).await, "closed within {BOUND:?}");
        assert_eq!(metrics.counts("idle"), (0, 1));
    }

    #[test]
    fn the_policy_follows_the_config_and_the_descriptor_limit() {
        let server = ServerConfig::default();
        let p = ConnectionPolicy::new(&server, Some(256));
        assert_eq!((p.max_connections, p.per_address), (96, 48));
        assert_eq!(p.header_read_timeout, Duration::from_secs(10));
        assert_eq!(p.idle_timeout, Duration::from_secs(300));
    }
}
