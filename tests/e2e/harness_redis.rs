//! The harness's redis-server: start, crash, start again on the same port; a cluster forms.

use anyhow::Result;
use jit_e2e::process::port_is_open;
use jit_e2e::{RedisCluster, RedisServer};

async fn set_get(url: &str, key: &str) -> Result<String> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query_async(&mut con)
        .await?;
    Ok(redis::cmd("GET").arg(key).query_async(&mut con).await?)
}

#[test]
fn redis_stops_and_starts_again_on_the_same_port() -> Result<()> {
    crate::support::run(async move {
        let mut redis = RedisServer::start().await?;
        let port = redis.port();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
        assert_eq!(set_get(&redis.url(), "k").await?, "v");

        redis.stop()?;
        assert!(!port_is_open(port), "port still open after stop");
        assert!(set_get(&redis.url(), "k").await.is_err());

        redis.start_again().await?;
        assert_eq!(redis.port(), port);
        assert_eq!(set_get(&redis.url(), "k2").await?, "v");
        drop(redis);
        assert!(!port_is_open(port), "redis-server survived its drop");
        Ok(())
    })
}

#[test]
fn redis_cluster_of_three_masters_forms() -> Result<()> {
    crate::support::run(async move {
        let cluster = RedisCluster::start().await?;
        assert_eq!(cluster.urls().len(), 3);
        let client = redis::cluster::ClusterClient::new(cluster.urls())?;
        let mut con = client.get_async_connection().await?;
        // Keys in different slots land on different masters.
        for key in ["alpha", "bravo", "charlie", "delta", "echo"] {
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(key)
                .query_async(&mut con)
                .await?;
            let got: String = redis::cmd("GET").arg(key).query_async(&mut con).await?;
            assert_eq!(got, key);
        }
        Ok(())
    })
}
