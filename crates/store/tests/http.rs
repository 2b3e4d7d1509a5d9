//! `/health`, `/version` and `/metrics` on the embedded server's client port, read with the
//! real `curl` (HTTP/1.1 and h2c) and the metrics parsed by a Prometheus text-format parser;
//! what they count is driven by the real `etcdctl`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};

fn curl(url: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (body.to_string(), status.to_string())
}

fn etcdctl(url: &str, args: &[&str]) {
    let ok = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("etcdctl is installed")
        .success();
    assert!(ok, "etcdctl {args:?}");
}

fn scrape(url: &str) -> Scrape {
    let (body, status) = curl(&format!("{url}/metrics"), &[]);
    assert_eq!(status, "200 1.1");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match found[0].value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_and_metrics_answer_curl_and_count_what_etcdctl_does() {
    let server = common::start_ours().await;
    let url = server.client_url();

    let (body, status) = curl(&format!("{url}/health"), &[]);
    assert_eq!(status, "200 1.1");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["health"], "true", "{body}");
    // The same over h2c, as gRPC clients speak.
    let (body, status) = curl(&format!("{url}/health"), &["--http2-prior-knowledge"]);
    assert_eq!(status, "200 2", "{body}");
    let (body, _) = curl(&format!("{url}/version"), &[]);
    let version: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        version["etcdserver"].as_str().unwrap().starts_with("3."),
        "{body}"
    );

    let before = scrape(&url);
    assert_eq!(value(&before, "etcd_server_has_leader", &[]), 1.0);
    assert_eq!(value(&before, "etcd_debugging_mvcc_keys_total", &[]), 0.0);
    let put = [("grpc_service", "etcdserverpb.KV"), ("grpc_method", "Put")];
    assert_eq!(value(&before, "grpc_server_started_total", &put), 0.0);

    let url2 = url.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..5 {
            etcdctl(&url2, &["put", &format!("k{i}"), "some value"]);
        }
        etcdctl(&url2, &["del", "k0"]);
    })
    .await
    .unwrap();
    let after = scrape(&url);
    assert_eq!(value(&after, "etcd_debugging_mvcc_keys_total", &[]), 4.0);
    assert_eq!(value(&after, "grpc_server_started_total", &put), 5.0);
    let del = [
        ("grpc_service", "etcdserverpb.KV"),
        ("grpc_method", "DeleteRange"),
    ];
    assert_eq!(value(&after, "grpc_server_started_total", &del), 1.0);
    assert!(value(&after, "etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);

    // A watch is counted while it is open, and given back when its client goes.
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(["watch", "k", "--prefix"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let watching = |n: f64| {
        let url = url.clone();
        move || {
            let url = url.clone();
            async move {
                let s = tokio::task::spawn_blocking(move || scrape(&url))
                    .await
                    .unwrap();
                value(&s, "etcd_debugging_mvcc_watcher_total", &[]) == n
                    && value(&s, "etcd_debugging_mvcc_watch_stream_total", &[]) == n
            }
        }
    };
    assert!(
        common::wait_until(Duration::from_secs(20), watching(1.0)).await,
        "the watch was not counted"
    );
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert!(
        common::wait_until(Duration::from_secs(20), watching(0.0)).await,
        "the closed watch was still counted"
    );

    // A made-up method counts as unknown: the table does not grow.
    let (_, status) = curl(
        &format!("{url}/etcdserverpb.KV/Nope"),
        &[
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-H",
            "content-type: application/grpc",
        ],
    );
    assert!(status.starts_with("200 2"), "{status}");
    let last = scrape(&url);
    let unknown = [("grpc_service", "unknown"), ("grpc_method", "unknown")];
    assert_eq!(value(&last, "grpc_server_started_total", &unknown), 1.0);
    assert_eq!(
        last.samples.len(),
        after.samples.len(),
        "a made-up method added a series"
    );
    server.shutdown().await;
}
