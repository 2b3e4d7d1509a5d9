//! Benchmark: a graph of N file resources applied by `mgmt run --converged-timeout 0`, cold
//! (nothing exists) and warm (nothing to change), beside the floor measured in the same run: a
//! plain program that writes the same N files (cold floor), then stats and reads them (warm
//! floor). Prints a markdown table. Not a test: it asserts nothing, it measures.
//!
//! Usage: bench-files [--mgmt PATH] [--files N] [--runs R]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bench::{Cost, measure, median, ms};

fn content(i: usize) -> String {
    format!("i am file {i} of the benchmark graph\n")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut mgmt = PathBuf::from("target/release/mgmt");
    let mut files = 10_000usize;
    let mut runs = 3usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mgmt" => mgmt = args.next().expect("--mgmt PATH").into(),
            "--files" => files = args.next().expect("--files N").parse().expect("a number"),
            "--runs" => runs = args.next().expect("--runs R").parse().expect("a number"),
            // The floor, run as a child process so its RSS is measured alone.
            "--floor-write" => {
                return floor_write(Path::new(&args.next().expect("DIR")), files_from_env());
            }
            "--floor-check" => {
                return floor_check(Path::new(&args.next().expect("DIR")), files_from_env());
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let me = std::env::current_exe().expect("own path");
    let work = tempfile::tempdir().expect("temp dir");
    let graph = work.path().join("graph.yaml");
    write_graph(&graph, &work.path().join("files"), files);

    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut floor_cold = Vec::new();
    let mut floor_warm = Vec::new();
    let mut floor_plain = Vec::new();
    for _ in 0..runs {
        let dir = work.path().join("files");
        let _ = fs::remove_dir_all(&dir);
        cold.push(run_mgmt(&mgmt, &graph));
        warm.push(run_mgmt(&mgmt, &graph));
        check_tree(&dir, files);

        let fdir = work.path().join("floor");
        let _ = fs::remove_dir_all(&fdir);
        floor_cold.push(
            measure(
                Command::new(&me)
                    .arg("--floor-write")
                    .arg(&fdir)
                    .env("BENCH_FILES", files.to_string()),
            )
            .expect("floor write"),
        );
        floor_warm.push(
            measure(
                Command::new(&me)
                    .arg("--floor-check")
                    .arg(&fdir)
                    .env("BENCH_FILES", files.to_string()),
            )
            .expect("floor check"),
        );
        let _ = fs::remove_dir_all(&fdir);
        floor_plain.push(
            measure(
                Command::new(&me)
                    .arg("--floor-write")
                    .arg(&fdir)
                    .env("BENCH_FILES", files.to_string())
                    .env("BENCH_PLAIN", "1"),
            )
            .expect("plain floor write"),
        );
    }
    let (c, w, fc, fw, fp) = (
        median(cold),
        median(warm),
        median(floor_cold),
        median(floor_warm),
        median(floor_plain),
    );
    println!("{files} file resources, median of {runs} runs (wall ms, peak RSS MiB):\n");
    println!(
        "| phase | mgmt-rs wall ms | floor wall ms | ratio | mgmt-rs peak RSS MiB | floor peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    row("cold (create all; floor: atomic + fsync, as mgmt)", c, fc);
    row("cold, beside the plain floor (no fsync)", c, fp);
    row("warm (nothing to change; floor: stat + read)", w, fw);
}

fn row(name: &str, m: Cost, f: Cost) {
    println!(
        "| {name} | {} | {} | {:.2}x | {:.1} | {:.1} |",
        ms(m.wall),
        ms(f.wall),
        m.wall.as_secs_f64() / f.wall.as_secs_f64(),
        m.peak_rss_kib as f64 / 1024.0,
        f.peak_rss_kib as f64 / 1024.0
    );
}

fn files_from_env() -> usize {
    std::env::var("BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn write_graph(graph: &Path, dir: &Path, n: usize) {
    let mut y = String::from("---\ngraph: bench-files\nresources:\n  file:\n");
    y.push_str(&format!(
        "  - name: dir\n    path: {}/\n    state: exists\n",
        dir.display()
    ));
    for i in 0..n {
        y.push_str(&format!(
            "  - name: f{i}\n    path: {}/f{i}\n    content: {:?}\n    mode: \"0644\"\n",
            dir.display(),
            content(i)
        ));
    }
    fs::write(graph, y).expect("write graph");
}

fn run_mgmt(mgmt: &Path, graph: &Path) -> Cost {
    measure(
        Command::new(mgmt)
            .args([
                "run",
                "--converged-timeout",
                "0",
                "--no-server",
                "--no-watch",
                "--hostname",
                "bench",
                "--yaml",
            ])
            .arg(graph)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    )
    .expect("mgmt run")
}

/// Correctness of what was measured: every file is there with its content.
fn check_tree(dir: &Path, n: usize) {
    for i in 0..n {
        let got =
            fs::read_to_string(dir.join(format!("f{i}"))).expect("file exists after mgmt run");
        assert_eq!(got, content(i), "content of f{i}");
    }
}

/// The floor for "cold": create the directory and write every file with the same guarantees
/// mgmt's file resource gives (temp file in the same directory, write, fsync, rename, fsync of
/// the directory: no reader ever sees a partial file, and a crash loses nothing that was
/// reported written). `BENCH_PLAIN=1` drops the fsyncs: the absolute floor, shown for scale.
fn floor_write(dir: &Path, n: usize) {
    let durable = std::env::var("BENCH_PLAIN").is_err();
    fs::create_dir_all(dir).expect("mkdir");
    let d = fs::File::open(dir).expect("open dir");
    for i in 0..n {
        let p = dir.join(format!("f{i}"));
        let tmp = dir.join(format!(".f{i}.tmp"));
        let mut f = fs::File::create(&tmp).expect("create");
        f.write_all(content(i).as_bytes()).expect("write");
        if durable {
            f.sync_all().expect("fsync");
        }
        drop(f);
        fs::rename(&tmp, &p).expect("rename");
        if durable {
            d.sync_all().expect("fsync dir");
        }
    }
}

/// The floor for "warm": stat and read every file, compare its content.
fn floor_check(dir: &Path, n: usize) {
    let mut differ = 0;
    for i in 0..n {
        let p = dir.join(format!("f{i}"));
        let md = fs::metadata(&p).expect("stat");
        let got = fs::read(&p).expect("read");
        if got != content(i).as_bytes() || md.len() == 0 {
            differ += 1;
        }
    }
    assert_eq!(differ, 0);
}
