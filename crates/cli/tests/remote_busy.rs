//! End-to-end test of the cluster-wide converged exit of `mgmt run --remote` when one host
//! keeps waking up: the run must not end while any host is busy. Kept apart from remote.rs
//! because it depends on how a child publishes its convergence (see the test's comment).

mod support;

use support::bed::{Bed, applied_line, exit_reason, files_graph};
use testbed::TestbedConfig;

#[test]
fn a_busy_host_delays_the_cluster_wide_converged_exit() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let (na, nb) = (bed.name(h1), bed.name(h2));
    let a = bed.graph("a.yaml", &files_graph(&bed.url(h1), &[("/tmp/a", "a\n")]));
    // A timer ticking every second keeps host b from being converged for the 2s asked for.
    let b_quiet = files_graph(&bed.url(h2), &[("/tmp/b", "b\n")]);
    let b_busy = b_quiet.replace("remote:", "  timer:\n  - name: t\n    interval: 1\nremote:");
    let b = bed.graph("b.yaml", &b_busy);
    let mut r = bed.start(&[&a, &b], &["--converged-timeout", "2"]);
    r.wait_event("a applied", |v| applied_line(v, &na, "file[f0]"));
    r.wait_event("b applied", |v| applied_line(v, &nb, "file[f0]"));
    // Host a is converged from here on. Four ticks of b span at least three seconds, more
    // than the timeout: a run that ignored b would have ended before the fourth.
    for _ in 0..4 {
        r.mark();
        r.wait_event("b's timer ticks", |v| applied_line(v, &nb, "timer[t]"));
    }
    assert!(
        !r.seen.iter().any(|v| v["event"] == "exit"),
        "the run ended while host b was busy: {:#?}",
        r.seen
    );
    assert_eq!(bed.read(h1, "/tmp/a"), "a\n");

    // Once b settles, the whole cluster is converged and the run ends by itself.
    r.mark();
    support::write(&b, &b_quiet);
    r.wait_event("b's graph copied", |v| {
        v["event"] == "graph_copied" && v["host"] == nb
    });
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(exit_reason(&r.seen), "converged");
    for h in [h1, h2] {
        bed.assert_clean(h);
    }
}
