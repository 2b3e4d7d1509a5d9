//! The exit code of a remote run says whether every host converged cleanly: a resource that
//! fails on one host fails the run (exit 1), while the other hosts still converge.

mod support;

use support::bed::{Bed, files_graph};
use testbed::TestbedConfig;

#[test]
fn a_resource_failing_on_one_host_fails_the_run_but_not_the_others() {
    let bed = Bed::up(TestbedConfig::hosts(2));
    let (h1, h2) = (bed.h(1), bed.h(2));
    let good = bed.graph(
        "good.yaml",
        &files_graph(&bed.url(h1), &[("/tmp/good", "fine\n")]),
    );
    let bad = bed.graph(
        "bad.yaml",
        &format!(
            "graph: bad\nremote: {}\nresources:\n  exec:\n  - name: broken\n    cmd: exit 7\n    shell: /bin/sh\n  file:\n  - name: ok\n    path: /tmp/ok\n    content: \"ok\\n\"\n",
            bed.url(h2)
        ),
    );
    let mut r = bed.start(&[&good, &bad], &["--converged-timeout", "1"]);
    let (st, err) = r.wait();
    assert_eq!(st.code(), Some(1), "{err}");
    assert_eq!(bed.read(h1, "/tmp/good"), "fine\n");
    assert_eq!(
        bed.read(h2, "/tmp/ok"),
        "ok\n",
        "the other resources of the failing host still converge"
    );
    let summary = |host: &str| {
        r.seen
            .iter()
            .find(|v| v["event"] == "host_summary" && v["host"] == host)
            .cloned()
            .unwrap_or_else(|| panic!("no summary for {host}: {:#?}", r.seen))
    };
    assert_eq!(summary(&bed.name(h1))["status"], "ok");
    assert_eq!(summary(&bed.name(h2))["status"], "exit 1");
    for h in [h1, h2] {
        bed.assert_clean(h);
    }
}
