//! Measurement: the memory of the process that hosts the embedded store (a remote run's
//! initiator) before and after one host writes 240 values of 1 MB under its own prefix with its
//! own credentials, while two other hosts watch the exports (one collecting, one never
//! reading). The server runs in a child process of its own, so its RSS is the initiator's
//! alone; the attacking and watching hosts are this process. Run with
//! `cargo bench -p store --bench attack`; it prints a markdown table.
//!
//! Two configurations: `limited` is the default `ServerConfig` (quotas and history budget);
//! `unlimited` lifts them (no host quota, no total quota, no history budget, a 4 MiB request
//! limit), as the server was before it had them.
//!
//! It is a measurement, not a test: it asserts nothing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use store::{Quota, ServerConfig, Store, StoreUrl};
use tokio_util::sync::CancellationToken;

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
const PUTS: usize = 240;
const VALUE: usize = 1_000_000;

fn config(mode: &str) -> ServerConfig {
    let base = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    match mode {
        "limited" => base,
        _ => ServerConfig {
            history_bytes: None,
            max_request_bytes: 4 << 20,
            quota_backend_bytes: None,
            host_quota: Quota::UNLIMITED,
            ..base
        },
    }
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The child: the embedded server with one user per host, auth on. Prints `url URL`, then
/// answers each `rss` line on stdin with `rss RSS_KIB HWM_KIB ACCOUNTED_BYTES`.
fn serve(mode: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(store::serve(config(mode), CancellationToken::new()))
        .expect("embedded server starts");
    for h in HOSTS {
        server.add_host_user(h, &format!("pw-{h}")).unwrap();
    }
    server.enable_auth("rootpw").unwrap();
    println!("url {}", server.client_url());
    for line in std::io::stdin().lock().lines() {
        match line.as_deref() {
            Ok("rss") => {
                let (rss, hwm) = rss();
                println!("rss {rss} {hwm} {}", server.memory().total());
            }
            _ => break,
        }
    }
    rt.block_on(server.shutdown());
}

struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ServerProcess {
    fn start(mode: &str) -> (ServerProcess, String) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("MGMT_ATTACK_SERVER", mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server process starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("url ").expect("a url").to_string();
        (
            ServerProcess {
                child,
                stdin,
                stdout,
            },
            url,
        )
    }

    /// (RSS MiB, peak RSS MiB, accounted MiB).
    fn rss(&mut self) -> (f64, f64, f64) {
        writeln!(self.stdin, "rss").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let n: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        (n[0] / 1024.0, n[1] / 1024.0, n[2] / (1024.0 * 1024.0))
    }

    fn stop(mut self) {
        writeln!(self.stdin, "quit").unwrap();
        let _ = self.child.wait();
    }
}

struct Row {
    mode: String,
    before: (f64, f64, f64),
    after_new: (f64, f64, f64),
    after_overwrite: (f64, f64, f64),
    refused: usize,
    secs: f64,
}

async fn attack(mode: &str) -> Row {
    let (mut server, url) = ServerProcess::start(mode);
    let urls: Vec<StoreUrl> = vec![url.parse().unwrap()];
    let login = |h: &str| {
        let urls = urls.clone();
        let creds = (h.to_string(), format!("pw-{h}"));
        async move { Store::connect(&urls, Some(creds)).await.unwrap() }
    };
    let (h1, h2, h3) = (login("h1").await, login("h2").await, login("h3").await);
    // h2 collects every change, as a host does; h3 watches and never reads.
    let mut collector = h2.watch_exports().await.unwrap();
    let collecting = tokio::spawn(async move { while collector.next().await.is_ok() {} });
    let mut idle = h3.watch_exports().await.unwrap();
    let _ = idle.next().await;
    let before = server.rss();
    let start = Instant::now();
    let value = vec![b'x'; VALUE];
    let mut refused = 0;
    for i in 0..PUTS {
        let key = format!("{}file/{i}", store::keys::exported_host("h1"));
        if h1.put(&key, value.clone()).await.is_err() {
            refused += 1;
        }
    }
    let after_new = server.rss();
    let key = format!("{}file/0", store::keys::exported_host("h1"));
    for i in 0..PUTS {
        let _ = h1.put(&key, vec![b'a' + (i % 26) as u8; VALUE]).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let after_overwrite = server.rss();
    collecting.abort();
    drop(idle);
    server.stop();
    Row {
        mode: mode.to_string(),
        before,
        after_new,
        after_overwrite,
        refused,
        secs,
    }
}

fn main() {
    if let Ok(mode) = std::env::var("MGMT_ATTACK_SERVER") {
        serve(&mode);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<Row> = ["unlimited", "limited"]
        .iter()
        .map(|mode| {
            eprintln!("attacking the {mode} server ...");
            rt.block_on(attack(mode))
        })
        .collect();
    let mib = |m: (f64, f64, f64)| format!("{:.0} (peak {:.0}, accounted {:.1})", m.0, m.1, m.2);
    println!(
        "| server | RSS MiB before | after {PUTS} new keys of 1 MB | after {PUTS} overwrites of 1 MB | puts refused | seconds |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} |",
            r.mode,
            mib(r.before),
            mib(r.after_new),
            mib(r.after_overwrite),
            r.refused,
            r.secs
        );
    }
}
