//! What every HTTP client the broker builds for a peer it calls shares: an issuer's
//! discovery and keys, the console's token endpoint, approval webhooks and the Git upstreams.
//!
//! A pooled connection is kept idle for at most [`POOL_IDLE`], less than the shortest
//! keep-alive of the servers those peers commonly run (Node's and Apache httpd's 5 s, nginx's
//! 75 s). With reqwest's own 90 s, a request can go out on a connection in the same instant
//! the peer closes it for idleness; the request then fails with "connection closed before
//! message completed", and a `POST` (a push, a code exchange) is not safe to send again. A
//! burst still reuses its connections: they are idle only between requests.

use std::time::Duration;

/// How long a pooled connection to a peer may stay idle before it is dropped.
pub const POOL_IDLE: Duration = Duration::from_secs(4);

/// The `User-Agent` the broker sends on its own requests (the gateway forwards the Git
/// client's instead).
pub const USER_AGENT: &str = concat!("git-jit-broker/", env!("CARGO_PKG_VERSION"));

/// A client builder with the process's one TLS provider (ring) installed, [`POOL_IDLE`], and
/// redirects not followed (a caller that wants them says so).
pub fn client_builder() -> reqwest::ClientBuilder {
    client_builder_keeping(POOL_IDLE)
}

/// [`client_builder`] for a peer whose keep-alive is known to the operator: a pooled
/// connection is dropped once idle for `idle`; zero keeps none (a connection per request).
pub fn client_builder_keeping(idle: Duration) -> reqwest::ClientBuilder {
    // Installing the provider again is a no-op: the binary installs it at start, a library
    // user (check-config, tests) gets it here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if idle.is_zero() {
        builder.pool_max_idle_per_host(0)
    } else {
        builder.pool_idle_timeout(idle)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A keep-alive HTTP/1.1 server that counts the connections it accepts and never closes
    /// one itself.
    async fn counting_server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    /// Sends `n` requests one after another, `pause` apart, and answers how many connections
    /// the server accepted for them.
    async fn connections_for(client: reqwest::ClientBuilder, n: usize, pause: Duration) -> usize {
        let (url, accepted) = counting_server().await;
        let client = client.build().expect("client");
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            let answer = client.get(&url).send().await.expect("request");
            assert_eq!(answer.text().await.expect("body"), "ok");
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn requests_in_a_burst_share_a_connection() {
        assert_eq!(
            connections_for(client_builder(), 5, Duration::ZERO).await,
            1
        );
    }

    /// The idle limit is what keeps a request off a connection the peer is closing: a
    /// connection idle longer than [`POOL_IDLE`] is never used again.
    #[tokio::test]
    async fn a_connection_idle_past_the_limit_is_not_reused() {
        let pause = POOL_IDLE + Duration::from_millis(500);
        assert_eq!(connections_for(client_builder(), 2, pause).await, 2);
    }

    #[tokio::test]
    async fn keeping_none_opens_a_connection_per_request() {
        let none = client_builder_keeping(Duration::ZERO);
        assert_eq!(connections_for(none, 3, Duration::ZERO).await, 3);
    }
}
