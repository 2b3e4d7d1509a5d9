//! Records the git commit the binary is built from, for `mgmt --version`:
//! `MGMT_GIT_COMMIT` is `<12 hex>[-dirty] <commit date>`, or `unknown` when there is no git, no
//! `.git` directory (a tarball) or `.git` is a file (a worktree or submodule: not followed).
//! Nothing here may fail the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let commit = manifest
        .map(|m| m.join("../.."))
        .and_then(|root| describe(&root))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MGMT_GIT_COMMIT={commit}");
}

fn describe(root: &Path) -> Option<String> {
    let git = root.join(".git");
    if !git.is_dir() {
        return None;
    }
    watch(&git);
    let hash = git_out(root, &["rev-parse", "--short=12", "HEAD"])?;
    if hash.len() != 12 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Without optional locks `git status` does not rewrite the index (which is watched below:
    // a rewrite would rerun this script on every build).
    let dirty = git_out(root, &["--no-optional-locks", "status", "--porcelain"])
        .is_some_and(|s| !s.is_empty());
    let date = git_out(root, &["show", "-s", "--format=%cs", "HEAD"]).unwrap_or_default();
    let mut out = hash;
    if dirty {
        out.push_str("-dirty");
    }
    if !date.is_empty() && !date.contains(char::is_whitespace) {
        out.push(' ');
        out.push_str(&date);
    }
    Some(out)
}

/// Reruns this script when HEAD moves: HEAD itself and its reflog, the branch it points to
/// (loose or packed) and the index (commits and staging). An unstaged edit alone does not rerun
/// it: `-dirty` is as of the last of those.
fn watch(git: &Path) {
    let mut files = vec![
        git.join("HEAD"),
        git.join("logs/HEAD"),
        git.join("packed-refs"),
        git.join("index"),
    ];
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(r) = head.trim().strip_prefix("ref: ")
        // Only a plain ref under .git/refs/: never a path leaving the directory.
        && r.starts_with("refs/")
        && !r.split('/').any(|c| c == "..")
    {
        files.push(git.join(r));
    }
    for f in files.iter().filter(|f| f.is_file()) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
}

/// stdout of `git -C root ARGS`, trimmed; None when git is missing or fails.
fn git_out(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()
        .map(|s| s.trim().to_string())
}
