//! Benchmark: our embedded etcd server beside a real etcd (`/usr/bin/etcd`, single node, data
//! dir in a temp dir on disk, its defaults) on the same machine in the same run. Measures put
//! and range throughput with N concurrent clients (one connection each) and watch event latency
//! (put -> event received), then prints a markdown table. Run it with `bench/store.sh`.
//!
//! It is a measurement, not a test: it asserts nothing about speed.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use store::ServerConfig;
use store::pb::etcdserverpb::kv_client::KvClient;
use store::pb::etcdserverpb::watch_client::WatchClient;
use store::pb::etcdserverpb::watch_request::RequestUnion;
use store::pb::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchRequest};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const CLIENTS: [usize; 3] = [1, 16, 64];
const KEYS: usize = 1000;
const WATCH_SAMPLES: usize = 1000;

fn phase() -> Duration {
    let secs = std::env::var("STORE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// A real etcd with its data on disk (`/var/tmp`), as a user would run it.
async fn start_etcd() -> testbed::Etcd {
    tokio::task::spawn_blocking(|| {
        testbed::Etcd::start_in(std::path::Path::new("/var/tmp")).expect("etcd starts")
    })
    .await
    .unwrap()
}

/// One connection (an HTTP/2 channel) to `url`.
async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

/// etcd's range end for every key starting with `prefix` (non-empty, not all 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let i = prefix.iter().rposition(|&b| b < 0xff).unwrap();
    let mut end = prefix[..=i].to_vec();
    end[i] += 1;
    end
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Range,
}

/// Operations per second with `n` clients hammering for one phase.
async fn throughput(url: &str, n: usize, op: Op) -> f64 {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(KvClient::new(connect(url).await));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let value = vec![b'v'; 64];
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let (stop, done, value) = (stop.clone(), done.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = i * 7919;
            while !stop.load(Ordering::Relaxed) {
                k = (k + 1) % KEYS;
                let key = format!("bench/{k:04}");
                match op {
                    Op::Put => {
                        c.put(put(key, value.clone())).await.unwrap();
                    }
                    Op::Range => {
                        let req = RangeRequest {
                            key: key.into(),
                            ..Default::default()
                        };
                        c.range(req).await.unwrap();
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(phase()).await;
    stop.store(true, Ordering::Relaxed);
    let ops = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    ops as f64 / secs
}

/// p50 and p99 of put -> watch event latency, in milliseconds.
async fn watch_latency(url: &str) -> (f64, f64) {
    let mut writer = KvClient::new(connect(url).await);
    let mut watcher = WatchClient::new(connect(url).await);
    // The request side stays open (the sender lives as long as the stream is read).
    let (requests, rx) = tokio::sync::mpsc::channel(1);
    requests
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"lat/".to_vec(),
                range_end: prefix_end(b"lat/"),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    let mut stream = watcher
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created);
    let base = Instant::now();
    let reader = tokio::spawn(async move {
        let _requests = requests;
        let mut lat = Vec::with_capacity(WATCH_SAMPLES);
        while lat.len() < WATCH_SAMPLES {
            let resp = stream.message().await.unwrap().unwrap();
            let now = base.elapsed().as_nanos() as u64;
            for ev in &resp.events {
                let sent: u64 = std::str::from_utf8(&ev.kv.as_ref().unwrap().value)
                    .unwrap()
                    .parse()
                    .unwrap();
                lat.push((now - sent) as f64 / 1e6);
            }
        }
        lat
    });
    for i in 0..WATCH_SAMPLES {
        let stamp = base.elapsed().as_nanos() as u64;
        writer
            .put(put(format!("lat/{}", i % 10), stamp.to_string()))
            .await
            .unwrap();
    }
    let mut lat = reader.await.unwrap();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (pct(0.50), pct(0.99))
}

struct Results {
    put: Vec<f64>,
    range: Vec<f64>,
    p50: f64,
    p99: f64,
}

async fn measure(url: &str) -> Results {
    // Keys to read exist before the range phase.
    let mut c = KvClient::new(connect(url).await);
    for k in 0..KEYS {
        c.put(put(format!("bench/{k:04}"), vec![b'v'; 64]))
            .await
            .unwrap();
    }
    let mut put = Vec::new();
    let mut range = Vec::new();
    for n in CLIENTS {
        put.push(throughput(url, n, Op::Put).await);
        range.push(throughput(url, n, Op::Range).await);
    }
    let (p50, p99) = watch_latency(url).await;
    Results {
        put,
        range,
        p50,
        p99,
    }
}

fn main() {
    // Our server gets a runtime (two workers) of its own, as if it were its own process;
    // the load generator runs on another.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let handle = server_rt
        .block_on(store::serve(
            ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..ServerConfig::default()
            },
            cancel.clone(),
        ))
        .expect("embedded server starts");
    let ours_url = handle.client_url();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (ours, theirs) = rt.block_on(async {
        eprintln!("measuring the embedded server at {ours_url} ...");
        let ours = measure(&ours_url).await;
        let etcd = start_etcd().await;
        eprintln!("measuring etcd at {} ...", etcd.client_url());
        let theirs = measure(&etcd.client_url()).await;
        (ours, theirs)
    });
    server_rt.block_on(handle.shutdown());

    println!(
        "| operation | clients | mgmt embedded | etcd {} | ratio |",
        etcd_version()
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, n) in CLIENTS.iter().enumerate() {
        println!(
            "| put (ops/s) | {n} | {:.0} | {:.0} | {:.2}x |",
            ours.put[i],
            theirs.put[i],
            ours.put[i] / theirs.put[i]
        );
    }
    for (i, n) in CLIENTS.iter().enumerate() {
        println!(
            "| range, 1 key (ops/s) | {n} | {:.0} | {:.0} | {:.2}x |",
            ours.range[i],
            theirs.range[i],
            ours.range[i] / theirs.range[i]
        );
    }
    println!(
        "| watch latency p50 (ms) | 1 | {:.3} | {:.3} | |",
        ours.p50, theirs.p50
    );
    println!(
        "| watch latency p99 (ms) | 1 | {:.3} | {:.3} | |",
        ours.p99, theirs.p99
    );
}

fn etcd_version() -> String {
    Command::new("/usr/bin/etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_else(|| "?".to_string())
}
