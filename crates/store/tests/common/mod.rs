//! Test helpers: our embedded server on a free port, a real `/usr/bin/etcd` on free loopback
//! ports with a temporary data dir (killed by pid on drop), and waiting under deadlines.
//! Never sleeps to synchronise: readiness is polled under a deadline.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd, single node, on loopback.
pub struct RealEtcd {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

impl RealEtcd {
    pub async fn start() -> RealEtcd {
        assert!(
            Path::new("/usr/bin/etcd").exists(),
            "/usr/bin/etcd is needed (apt-get install etcd-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        let mut etcd = RealEtcd {
            child,
            _dir: dir,
            url,
        };
        let url = etcd.url.clone();
        let ready = wait_until(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                match etcd_client::Client::connect([url], None).await {
                    Ok(mut c) => c.get("health", None).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        if !ready {
            let _ = etcd.child.kill();
            panic!("etcd did not become ready");
        }
        etcd
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
