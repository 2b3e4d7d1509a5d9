//! The travelling binary (what `--remote` copies to hosts) is static: it runs on any x86-64
//! Linux whatever its libc. `scripts/build-static` builds it; `scripts/test` builds it before
//! running the suite, so this test checks the real artefact.

use std::path::Path;
use std::process::Command;

#[test]
fn the_travelling_binary_is_static_and_runs() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-unknown-linux-gnu/release/mgmt");
    assert!(
        bin.exists(),
        "{} is missing: run `bash scripts/build-static` (scripts/test does)",
        bin.display()
    );
    let ldd = Command::new("ldd").arg(&bin).output().expect("run ldd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        !text.contains("=>"),
        "the binary links shared libraries:\n{text}"
    );
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "{text}"
    );
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("run the static binary");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("mgmt "),
        "{:?}",
        out
    );
}
