//! Test helpers: our embedded server on a free port, a real etcd (`testbed::Etcd`), waiting
//! under deadlines, and the raw etcd v3 API (`raw`).
//! Never sleeps to synchronise: readiness is polled under a deadline.
#![allow(dead_code)]

pub mod raw;

use std::time::{Duration, Instant};

use store::{ServerConfig, ServerHandle};
use tokio_util::sync::CancellationToken;

pub async fn start_ours() -> ServerHandle {
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    store::serve(cfg, CancellationToken::new())
        .await
        .expect("embedded server starts")
}

/// A real etcd, single node, on loopback (the test bed's: free ports, a fresh data dir, killed
/// and removed on drop).
pub async fn real_etcd() -> testbed::Etcd {
    tokio::task::spawn_blocking(|| testbed::Etcd::start().expect("etcd starts"))
        .await
        .unwrap()
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `url` as the one endpoint `Store::connect` takes.
pub fn urls(url: &str) -> Vec<store::StoreUrl> {
    vec![url.parse().expect("a store url")]
}
