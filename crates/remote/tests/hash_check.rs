//! The shell check every host runs on the binary before it starts (`remote::sha256_is`), run
//! by a real /bin/sh with and without openssl on its PATH.

/// Runs `sha256_is` in a real /bin/sh with `path` as PATH.
fn hash_check(file: &std::path::Path, hash: &str, path: &str) -> bool {
    let script = format!(
        "if {}; then echo same; else echo differs; fi",
        remote::sha256_is(&format!("'{}'", file.display()), hash)
    );
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim() == "same"
}

#[test]
fn the_hash_check_uses_openssl_or_sha256sum_and_refuses_otherwise() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("bin");
    std::fs::write(&f, b"abc").unwrap();
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let wrong = abc.replace('b', "c");
    let with_both = "/usr/bin:/bin";
    assert!(hash_check(&f, abc, with_both));
    assert!(!hash_check(&f, &wrong, with_both));
    assert!(!hash_check(&d.path().join("missing"), abc, with_both));
    // Without openssl on the host, coreutils' sha256sum decides.
    let only_coreutils = d.path().join("only");
    std::fs::create_dir(&only_coreutils).unwrap();
    let sum = ["/usr/bin/sha256sum", "/bin/sha256sum"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("sha256sum");
    std::os::unix::fs::symlink(sum, only_coreutils.join("sha256sum")).unwrap();
    let p = only_coreutils.to_string_lossy();
    assert!(hash_check(&f, abc, &p));
    assert!(!hash_check(&f, &wrong, &p));
    // With neither tool nothing is ever "the same".
    assert!(!hash_check(&f, abc, "/nonexistent"));
}
