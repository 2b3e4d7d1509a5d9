//! A real single-node etcd server on loopback for tests: free ports, a fresh data directory,
//! readiness by its /health endpoint. It never listens beyond 127.0.0.1 and is killed (by its
//! own pid) and its data removed when the value is dropped.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::TestbedError;
use crate::util::{find_program, mkdir, random_token, tail, wait_until};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running etcd. Dropping it stops the server and removes its data.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    client: SocketAddr,
}

impl Etcd {
    /// Starts etcd on free loopback ports and waits until it reports healthy.
    pub fn start() -> Result<Etcd, TestbedError> {
        Self::start_in(&std::env::temp_dir())
    }

    /// The same, with its data under `parent` (a benchmark wants it on disk, not on tmpfs).
    pub fn start_in(parent: &Path) -> Result<Etcd, TestbedError> {
        let etcd = find_program("etcd", "etcd-server")?;
        let dir = parent.join(format!(
            "mgmt-testbed-etcd-{}-{}",
            std::process::id(),
            random_token(6)?
        ));
        mkdir(&dir, 0o700)?;
        // Free ports are picked by binding port 0 and releasing it; another process can grab
        // one in between, so a start that dies is retried with new ports.
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start(&etcd, &dir) {
                Ok(started) => return Ok(started),
                Err(e @ TestbedError::EtcdDied { .. }) => last_err = Some(e),
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Err(last_err.expect("three attempts were made"))
    }

    fn try_start(etcd: &Path, dir: &Path) -> Result<Etcd, TestbedError> {
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let data = dir.join("data");
        let _ = fs::remove_dir_all(&data);
        let log_path = dir.join("etcd.log");
        let log =
            fs::File::create(&log_path).map_err(|e| TestbedError::io("create", &log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| TestbedError::io("dup", &log_path, e))?;
        let child = Command::new(etcd)
            .arg("--name=testbed")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=testbed={peer_url}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| TestbedError::Spawn {
                program: "etcd".to_string(),
                source,
            })?;
        let mut server = Etcd {
            child,
            dir: dir.to_path_buf(),
            client,
        };
        let mut died = None;
        let ready = wait_until(READY_TIMEOUT, || {
            if let Ok(Some(status)) = server.child.try_wait() {
                died = Some(status);
                return true;
            }
            healthy(client)
        });
        if let Some(status) = died {
            // Keep the directory for the retry; only the server value goes.
            let dir = std::mem::take(&mut server.dir);
            drop(server);
            return Err(TestbedError::EtcdDied {
                status,
                tail: tail(&log_path, 5),
                log: dir.join("etcd.log"),
            });
        }
        if !ready {
            return Err(TestbedError::Timeout {
                what: format!("etcd on {client_url}"),
                timeout: READY_TIMEOUT,
            });
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, for `--seeds` and etcd clients.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }

    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// The directory holding its data and log (removed on drop).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server and removes its data.
    pub fn stop(self) {}
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> Result<SocketAddr, TestbedError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| TestbedError::io("bind", "127.0.0.1:0", e))?;
    listener
        .local_addr()
        .map_err(|e| TestbedError::io("bind", "127.0.0.1:0", e))
}

/// etcd's own readiness answer: `GET /health` says `"health":"true"` once it has a leader.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}
