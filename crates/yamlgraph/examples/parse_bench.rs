//! Times `yamlgraph::parse` on a generated graph of 10,000 `file` resources (about 0.9 MB of
//! YAML, the size of the project's warm-run benchmark) with the real registry, and prints the
//! median and fastest of several runs next to the cost of the YAML scanner alone (the floor no
//! change in this crate can go below).
//!
//! Run with `cargo run --release -p yamlgraph --example parse_bench [RESOURCES] [RUNS]`.
//! Measured on the project's 2-core machine: 55-61 ms median with saphyr's `YamlLoader` trees,
//! 29-30 ms with this crate's own nodes, the scanner alone 15.6 ms.
//! Never writes anything: the graph is generated in memory.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use saphyr_parser::{Event, EventReceiver, Parser};

fn graph_text(resources: usize) -> String {
    let mut text = String::from("graph: bench\nresources:\n  file:\n");
    for i in 0..resources {
        // `write!` to a String cannot fail.
        let _ = write!(
            text,
            "  - name: f{i}\n    path: /tmp/x/f{i}\n    content: \"i am file {i} of the benchmark graph\\n\"\n"
        );
    }
    text
}

/// Counts events: the parser's work without building anything.
struct Count(usize);

impl EventReceiver<'_> for Count {
    fn on_event(&mut self, _: Event<'_>) {
        self.0 += 1;
    }
}

/// Median and minimum of `runs` timings of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[0])
}

fn ms(d: Duration) -> String {
    format!("{:8.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let resources: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(15)
        .max(1);
    let text = graph_text(resources);
    let registry = resources::registry();

    let spec = yamlgraph::parse("bench.yaml", &text, &registry).expect("the bench graph is valid");
    assert_eq!(spec.resources.len(), resources);

    let (scan_med, scan_min) = time(runs, || {
        let mut count = Count(0);
        Parser::new_from_str(&text)
            .load(&mut count, true)
            .expect("the bench graph is valid YAML");
        std::hint::black_box(count.0);
    });
    let (parse_med, parse_min) = time(runs, || {
        let spec = yamlgraph::parse("bench.yaml", &text, &registry).expect("valid");
        std::hint::black_box(spec);
    });

    println!(
        "{resources} file resources, {:.2} MB of YAML, {runs} runs",
        text.len() as f64 / 1e6
    );
    println!("{:<22} {:>11} {:>11}", "phase", "median", "fastest");
    println!(
        "{:<22} {} {}",
        "scanner+parser events",
        ms(scan_med),
        ms(scan_min)
    );
    println!(
        "{:<22} {} {}",
        "yamlgraph::parse",
        ms(parse_med),
        ms(parse_min)
    );
}
