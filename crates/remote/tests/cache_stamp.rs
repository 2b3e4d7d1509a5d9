//! The binary cache's stamp: the probe skips hashing a cached binary the child's wrapper has
//! verified (and that has not changed since), while the wrapper still hashes it before every
//! start. A changed binary is hashed and replaced; a binary whose stamp was forged to match is
//! still refused before it runs, and loses its stamp so the next run replaces it.

mod common;

use common::*;
use remote::CacheUse;
use testbed::{Testbed, TestbedConfig};

const STAT_ID: &str = "stat -L -c '%d:%i:%s:%y:%z'";

fn sh_out(bed: &Testbed, h: &testbed::Host, cmd: &str) -> String {
    let out = bed.exec(h, cmd).unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Overwrites the cached binary in place with content of the same size, so only its hash (and
/// its times) tell it apart.
fn tamper_same_size(bed: &Testbed, h: &testbed::Host, bin: &str) {
    sh_out(
        bed,
        h,
        &format!(
            "n=$(wc -c < {bin}); {{ printf '#!/bin/sh\\necho evil\\nexit 0\\n'; head -c \"$n\" /dev/zero | tr '\\0' '#'; }} \
             | head -c \"$n\" > {bin}.new && cat {bin}.new > {bin} && rm {bin}.new"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrapper_stamps_what_it_verified_and_the_probe_trusts_only_an_unchanged_file() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "stamped", "echo ran\n");
    let cfg = config(&bed, &bin);
    let dir = format!("/root/.cache/mgmt/bin/{}", cfg.binary_hash);
    let cached = format!("{dir}/mgmt");
    let stamp = format!("{dir}.verified");

    // First run: uploaded, then verified by the wrapper, which records the file it checked.
    let (report, events) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);
    assert_eq!(report.hosts[0].cache, CacheUse::Miss);
    assert_eq!(outputs(&events, "h1"), vec!["ran".to_string()]);
    let id = sh_out(&bed, h, &format!("{STAT_ID} {cached}"));
    assert_eq!(sh_out(&bed, h, &format!("cat {stamp}")), id);

    // Second run: a hit on the stamp; the stamp is left as it was.
    let (report, _) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);
    assert_eq!(report.hosts[0].cache, CacheUse::Hit);
    assert_eq!(sh_out(&bed, h, &format!("cat {stamp}")), id);

    // Changed in place, same size: the stamp no longer matches, the probe hashes, finds it
    // wrong and replaces it; what runs is the real binary.
    tamper_same_size(&bed, h, &cached);
    let (report, events) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);
    assert_eq!(report.hosts[0].cache, CacheUse::Miss);
    assert_eq!(outputs(&events, "h1"), vec!["ran".to_string()]);
    assert_eq!(remote_sha256(&bed, h, &cached), cfg.binary_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_stamp_does_not_let_a_wrong_binary_run() {
    let bed = Testbed::up(TestbedConfig::hosts(1)).unwrap();
    let h = &bed.hosts()[0];
    let tmp = tempfile::tempdir().unwrap();
    let bin = script(tmp.path(), "forged", "echo ran\n");
    let cfg = config(&bed, &bin);
    let dir = format!("/root/.cache/mgmt/bin/{}", cfg.binary_hash);
    let cached = format!("{dir}/mgmt");
    let stamp = format!("{dir}.verified");
    let (report, _) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);

    tamper_same_size(&bed, h, &cached);
    sh_out(&bed, h, &format!("{STAT_ID} {cached} > {stamp}"));
    let (report, events) = run(cfg.clone(), vec![alias(h)]).await;
    assert_eq!(
        report.hosts[0].cache,
        CacheUse::Hit,
        "the probe trusted the stamp"
    );
    let (_, error) = failure(&report, "h1");
    assert!(
        error.contains("refused to start") && error.contains("does not match sha256"),
        "{error}"
    );
    let out = outputs(&events, "h1");
    assert!(
        !out.iter().any(|l| l.contains("evil")),
        "the wrong binary ran: {out:?}"
    );
    assert!(!bed.exists(h, &stamp), "the refused binary kept its stamp");

    // The next run hashes it in the probe and replaces it.
    let (report, events) = run(cfg.clone(), vec![alias(h)]).await;
    assert_done(&report);
    assert_eq!(report.hosts[0].cache, CacheUse::Miss);
    assert_eq!(outputs(&events, "h1"), vec!["ran".to_string()]);
}
