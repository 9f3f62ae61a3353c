//! `server.trusted_proxies`: which peers may say who their client is. A request from one of
//! them is served as if it came from the client its `X-Forwarded-For` names, so rate limits,
//! the audit trail's `ip` and loopback checks see the client, not the proxy; from anyone else
//! the header is only text.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::parse_net;

/// Entries of `X-Forwarded-For` read at most: a longer chain is cut at the left, which can
/// only make the answer a proxy nearer to us.
const MAX_HOPS: usize = 32;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// The proxies `entries` name (validated by the config; an entry that does not parse is
    /// skipped, trusting less).
    pub fn new(entries: &[String]) -> Self {
        Self {
            nets: entries.iter().filter_map(|e| parse_net(e)).collect(),
        }
    }

    /// Whether `ip` is one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The client of a request that `peer` sent with `headers`: `peer` itself unless it is a
    /// trusted proxy; then the right-most `X-Forwarded-For` entry that is not a trusted proxy
    /// (each proxy appends the address it saw, so entries right of that one were written by
    /// proxies we trust, and those left of it by the client, who may lie). An entry that is
    /// not an address stops the walk at the proxy that wrote the one after it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev().take(MAX_HOPS) {
            match parse_entry(entry) {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return canonical(ip),
                None => return client,
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an address, optionally `[v6]` or with a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = e.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    e.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

/// An IPv4 address mapped into IPv6 (a dual-stack listener's peers) as the IPv4 it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let p = TrustedProxies::new(&["10.0.0.0/8".into(), "192.0.2.7".into()]);
        let h = xff(&["198.51.100.1"]);
        // Anyone else: the header is ignored.
        assert_eq!(p.client(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(p.client(ip("192.0.2.8"), &h), ip("192.0.2.8"));
        // A trusted proxy: the client it names.
        assert_eq!(p.client(ip("10.1.2.3"), &h), ip("198.51.100.1"));
        assert_eq!(p.client(ip("192.0.2.7"), &h), ip("198.51.100.1"));
        assert_eq!(
            p.client(ip("::ffff:10.1.2.3"), &h),
            ip("198.51.100.1"),
            "a v4-mapped peer is its IPv4 address"
        );
        // No header: the proxy itself.
        assert_eq!(p.client(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        // Nothing trusted: never the header.
        assert_eq!(
            TrustedProxies::default().client(ip("10.1.2.3"), &h),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn a_forged_left_part_of_the_chain_is_not_believed() {
        let p = TrustedProxies::new(&["10.0.0.0/8".into()]);
        // The client sent "X-Forwarded-For: 127.0.0.1"; the proxy appended what it saw.
        let h = xff(&["127.0.0.1, 198.51.100.1"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("198.51.100.1"));
        // Two proxies of ours: the one nearer the client is skipped too; several lines.
        let h = xff(&["127.0.0.1", "198.51.100.1, 10.9.9.9"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("198.51.100.1"));
        // Garbage stops the walk at the last proxy we trust.
        let h = xff(&["198.51.100.1, garbage, 10.9.9.9"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("10.9.9.9"));
        // Ports and brackets as some proxies write them.
        let h = xff(&["[2001:db8::1]:4711"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("2001:db8::1"));
        let h = xff(&["198.51.100.1:4711"]);
        assert_eq!(p.client(ip("10.0.0.1"), &h), ip("198.51.100.1"));
    }

    /// Through the accept loop: a trusted proxy's requests carry the client it names as their
    /// `ConnectInfo` (what rate limits, the audit `ip` and loopback checks read), and its
    /// connections are not held to one address's share; anyone else's header is ignored.
    #[tokio::test]
    async fn the_listener_serves_a_trusted_proxys_requests_as_the_clients() {
        use std::net::SocketAddr;
        use std::time::Duration;

        use axum::extract::ConnectInfo;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        use crate::http::listener::{ConnectionPolicy, Edge, serve_edge};

        async fn start(proxies: &[&str]) -> SocketAddr {
            let router = axum::Router::new().route(
                "/ip",
                axum::routing::get(|ConnectInfo(a): ConnectInfo<SocketAddr>| async move {
                    a.ip().to_string()
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let policy = ConnectionPolicy {
                per_address: 1,
                ..ConnectionPolicy::small(Duration::from_secs(30))
            };
            let edge = Edge {
                tls: None,
                proxies: TrustedProxies::new(
                    &proxies.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>(),
                ),
            };
            tokio::spawn(serve_edge(
                listener,
                router,
                policy,
                edge,
                crate::metrics::ConnectionMetrics::default(),
                std::future::pending(),
            ));
            addr
        }

        async fn ask(s: &mut tokio::net::TcpStream) -> String {
            s.write_all(
                b"GET /ip HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 127.0.0.9, 198.51.100.7\r\n\r\n",
            )
            .await
            .expect("write");
            // The whole answer: the head, then content-length bytes of body.
            let mut out = Vec::new();
            let mut buf = [0u8; 512];
            loop {
                let text = String::from_utf8_lossy(&out).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .expect("content-length");
                    if body.len() >= len {
                        return body.to_owned();
                    }
                }
                let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
                    .await
                    .expect("in time")
                    .expect("read");
                assert!(n > 0, "closed: {text}");
                out.extend_from_slice(&buf[..n]);
            }
        }

        let trusting = start(&["127.0.0.1"]).await;
        let mut one = tokio::net::TcpStream::connect(trusting).await.expect("c1");
        assert_eq!(ask(&mut one).await, "198.51.100.7");
        // A second connection from the proxy, past a share of 1: admitted.
        let mut two = tokio::net::TcpStream::connect(trusting).await.expect("c2");
        assert_eq!(ask(&mut two).await, "198.51.100.7");

        let ignoring = start(&[]).await;
        let mut three = tokio::net::TcpStream::connect(ignoring).await.expect("c3");
        assert_eq!(ask(&mut three).await, "127.0.0.1");
    }
}
