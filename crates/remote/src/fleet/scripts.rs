//! The shell the fleet runs on a host besides the probe and the uploads (see upload.rs): the
//! child's wrapper, and the scripts that stop the child and remove the run dir. Every path and
//! word that reaches a shell goes through `quote` (or `word`).

use crate::upload::{self, quote};

/// How the child's wrapper starts what it says about the binary it refuses to start.
pub(super) const WRAPPER_PREFIX: &str = "mgmt-remote: ";

/// The file in the run dir in which the wrapper records the child's pid and start time.
pub(super) const PID_FILE: &str = "mgmt.pid";

/// A word for the shell: bare when it cannot mean anything else there, quoted otherwise.
pub(super) fn word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain { s.to_string() } else { quote(s) }
}

/// The remote command line: `bin` with `args` (already resolved), under a wrapper. The wrapper
/// prints the pid (and its start time, so a recycled pid is never killed) before anything
/// else, and refuses a binary whose hash is wrong: this is the check every start goes through.
/// With `stamp` (the cache's, see `upload::stamp_path`) it then records which file it
/// verified, taken before hashing so a change during the hash shows, and written only when it
/// differs (a temp file and a rename; failures are ignored: the stamp only saves the next probe
/// a hash); a binary that fails the check loses its stamp.
///
/// With `sudo` (the words of `Sudo::words`) the verified binary is exec'd through them, as
/// root: the pid recorded is sudo's (it waits for its command and relays signals to it).
pub(super) fn child_command(
    bin: &str,
    stamp: Option<&str>,
    hash: &str,
    run_dir: &str,
    args: &[String],
    sudo: Option<&str>,
) -> String {
    let args: Vec<String> = args.iter().map(|a| word(a)).collect();
    let bin_q = quote(bin);
    let pid_file = quote(&format!("{run_dir}/{PID_FILE}"));
    let (stat, forget, record) = match stamp {
        Some(stamp) => {
            let stamp = quote(stamp);
            let stat_id = upload::STAT_ID;
            (
                format!("v=$({stat_id} {bin_q} 2>/dev/null) || v=; "),
                // A wrong binary must not keep a stamp: the next probe hashes it and replaces it.
                format!("rm -f {stamp}; "),
                format!(
                    "if [ -n \"$v\" ]; then w=; if [ -f {stamp} ]; then read -r w < {stamp} || w=; fi; \
                     [ \"$v\" = \"$w\" ] || {{ printf '%s\\n' \"$v\" > {stamp}.$$ && mv -f {stamp}.$$ {stamp}; }} 2>/dev/null; fi; "
                ),
            )
        }
        None => (String::new(), String::new(), String::new()),
    };
    format!(
        "st=$(sed 's/^.*) //' /proc/$$/stat | cut -d' ' -f20); echo \"$$ $st\" > {pid_file}; \
         echo \"mgmt-pid: $$ $st\"; {stat}\
         if ! {check}; then \
         echo \"{WRAPPER_PREFIX}\"{bin_q}\" does not match sha256 {hash}\" >&2; {forget}exit 126; fi; {record}\
         {as_root}exec {sudo}{bin_q} {}",
        args.join(" "),
        check = upload::sha256_is(&bin_q, hash),
        as_root = if sudo.is_some() {
            format!("command -v sudo >/dev/null 2>&1 || {{ echo '{NO_SUDO}' >&2; exit 127; }}; ")
        } else {
            String::new()
        },
        sudo = sudo.map(|w| format!("{w} ")).unwrap_or_default(),
    )
}

/// What the wrapper says on a host without sudo.
pub(super) const NO_SUDO: &str = "sudo is not installed on this host (not in PATH)";

/// The recorded child: pid and its start time from /proc.
pub(super) type Pid = (u32, String);

/// Shell that stops the child: TERM then KILL its process group, but only if the pid still
/// belongs to the process we started (same start time), since pids get recycled. Without a pid
/// from the output (cancelled right after exec), the pid file in the run dir is used.
///
/// The child's own commands (exec resources) run in process groups of their own, which a child
/// that had to be killed could not stop: when the child leads its session (sshd makes one per
/// exec channel), every process left in that session is killed too. While any of them lives,
/// the kernel cannot hand the session's id to a new process, so this never hits a stranger.
///
/// A child run through sudo: the pid is sudo's, which leads the session with its root command
/// in its process group. The script then runs as root itself (see `sudo::run_ok_as_root`):
/// sudo relays TERM but not KILL, and the login user may signal neither the root command nor
/// what it started.
pub(super) fn stop_script(pid: Option<&Pid>, run_dir: &str, force: bool) -> String {
    let tries = if force { 0 } else { 30 };
    let load = match pid {
        Some((p, st)) => format!("p={p}; st={st}"),
        None => format!(
            "p=; st=; {{ read -r p st < {}; }} 2>/dev/null; \
             case \"$p$st\" in *[!0-9]*) p= ;; esac",
            quote(&format!("{run_dir}/{PID_FILE}"))
        ),
    };
    format!(
        "{load}; \
         alive() {{ f=$(sed 's/^.*) //' /proc/$p/stat 2>/dev/null) || return 1; set -- $f; \
         sid=$4; [ \"$1\" != Z ] && [ \"${{20}}\" = \"$st\" ]; }}; \
         if [ -n \"$p\" ] && alive; then \
           lead=$sid; \
           kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; \
           i=0; while [ $i -lt {tries} ] && alive; do sleep 0.1; i=$((i+1)); done; \
           if alive; then kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null; fi; \
           i=0; while [ $i -lt 20 ] && alive; do sleep 0.1; i=$((i+1)); done; \
           if alive; then echo \"the child (pid $p) is still running after SIGKILL\" >&2; exit 3; fi; \
           if [ \"$lead\" = \"$p\" ]; then \
             for f in /proc/[0-9]*/stat; do \
               g=$(sed 's/^.*) //' \"$f\" 2>/dev/null) || continue; set -- $g; \
               if [ \"$4\" = \"$p\" ]; then q=${{f#/proc/}}; kill -KILL \"${{q%/stat}}\" 2>/dev/null; fi; \
             done; \
           fi; \
         fi"
    )
}

/// Stops the child (see [`stop_script`]); fails (status 3, with a message) only when the child
/// is still alive afterwards.
pub(super) fn kill_script(pid: Option<&Pid>, run_dir: &str, force: bool) -> String {
    format!("{}; exit 0", stop_script(pid, run_dir, force))
}

/// Stops a child that may still run (a no-op when it is gone), then removes the run dir. A
/// child that cannot be stopped keeps its dir (it is live) and fails the script, as does a dir
/// that cannot be removed: both are the host's cleanup failing, reported as such.
pub(super) fn cleanup_script(pid: Option<&Pid>, run_dir: &str, force: bool) -> String {
    format!(
        "{}; rm -rf -- {dir} || exit 4; if [ -e {dir} ]; then echo \"{dir} is still there\" >&2; exit 4; fi",
        stop_script(pid, run_dir, force),
        dir = quote(run_dir)
    )
}

/// The file in the run dir naming the SSH connection that made it: the pid and start time of
/// the sshd process serving that connection (the parent of every command run on it), which
/// lives exactly as long as the connection.
pub(super) const OWNER_FILE: &str = "owner";

/// A shell function `alive PID START`: whether PID runs and started at START (clock ticks
/// after boot, field 22 of /proc/PID/stat), so a recycled pid never counts.
pub(crate) const ALIVE_FN: &str = "alive_as() { f=$(sed 's/^.*) //' /proc/$1/stat 2>/dev/null) || return 1; \
     want=$2; set -- $f; [ \"$1\" != Z ] && [ \"${20}\" = \"$want\" ]; }; ";

/// Shell for the probe, run before it makes its own run dir: removes the run dirs under
/// `tmp_prefix` and the upload temp files in the binary cache that nobody owns any more, and
/// prints `swept=N` (how many). A run dir is live while its child (its pid file) or the
/// connection that made it (its owner file) lives; one with neither file is left alone for an
/// hour (a probe of an older version could be making it). An upload temp file carries its
/// connection's pid and start time in its name (see `upload`); one without is left for an hour.
/// Only entries the login user owns are touched, never through a symlink.
pub(crate) fn sweep_script(tmp_prefix: &str) -> String {
    let prefix = quote(tmp_prefix.trim_end_matches('/'));
    format!(
        "{ALIVE_FN}n=0; \
         for d in {prefix}/mgmt.????????; do \
           [ -d \"$d\" ] && [ ! -L \"$d\" ] && [ -O \"$d\" ] || continue; \
           live=; known=; \
           for f in {PID_FILE} {OWNER_FILE}; do \
             [ -f \"$d/$f\" ] || continue; known=1; \
             p=; st=; {{ read -r p st < \"$d/$f\"; }} 2>/dev/null || true; \
             case \"$p$st\" in ''|*[!0-9]*) continue ;; esac; \
             if alive_as \"$p\" \"$st\"; then live=1; fi; \
           done; \
           [ -z \"$live\" ] || continue; \
           if [ -z \"$known\" ] && [ -z \"$(find \"$d\" -maxdepth 0 -mmin +60 2>/dev/null)\" ]; then continue; fi; \
           rm -rf -- \"$d\" 2>/dev/null && n=$((n+1)); \
         done; \
         for t in \"$HOME\"/.cache/mgmt/bin/*/.mgmt.*; do \
           [ -f \"$t\" ] && [ ! -L \"$t\" ] && [ -O \"$t\" ] || continue; \
           o=${{t##*/.mgmt.}}; o=${{o%%.*}}; p=${{o%-*}}; st=${{o#*-}}; \
           case \"$o\" in *-*) ;; *) p=; st=;; esac; \
           case \"$p$st\" in ''|*[!0-9]*) \
             [ -n \"$(find \"$t\" -maxdepth 0 -mmin +60 2>/dev/null)\" ] || continue ;; \
           *) ! alive_as \"$p\" \"$st\" || continue ;; esac; \
           rm -f -- \"$t\" 2>/dev/null && n=$((n+1)); \
         done; \
         echo \"swept=$n\"; "
    )
}

/// Shell that records the connection running it as the owner of the run dir `"$r"` and sets
/// `conn` to `PID-START` of that connection's sshd process (for upload temp file names).
pub(crate) fn own_script() -> String {
    format!(
        "cst=$(sed 's/^.*) //' /proc/$PPID/stat | cut -d' ' -f20); conn=\"$PPID-$cst\"; \
         echo \"$PPID $cst\" > \"$r\"/{OWNER_FILE}; "
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let args: Vec<String> = [
            "run",
            "--hostname",
            "h 1",
            "--seeds",
            "http://127.0.0.1:4000",
            "--yaml",
            "/tmp/mgmt.X/g.yaml",
            "--converged-timeout=5",
            "it's",
        ]
        .map(String::from)
        .to_vec();
        let c = child_command(
            "/c/mgmt",
            Some("/c.verified"),
            "ab",
            "/tmp/mgmt.X",
            &args,
            None,
        );
        assert!(
            c.ends_with(
                "exec '/c/mgmt' run --hostname 'h 1' --seeds http://127.0.0.1:4000 \
                 --yaml /tmp/mgmt.X/g.yaml --converged-timeout=5 'it'\\''s'"
            ),
            "{c}"
        );
        assert!(c.contains("> '/tmp/mgmt.X/mgmt.pid'"), "{c}");
        assert!(c.contains("rm -f '/c.verified'"), "{c}");
        let plain = child_command("/c/mgmt", None, "ab", "/r", &[], None);
        assert!(!plain.contains("verified"), "{plain}");
        assert!(!plain.contains("sudo"), "{plain}");
        // As root: the same checks as the login user, then the binary through sudo.
        let root = child_command(
            "/c/mgmt",
            None,
            "ab",
            "/r",
            &["run".into()],
            Some("sudo -n --"),
        );
        assert!(
            root.ends_with("exit 127; }; exec sudo -n -- '/c/mgmt' run"),
            "{root}"
        );
        assert!(root.contains("command -v sudo"), "{root}");
        let (before, after) = root.split_once("exec sudo").unwrap();
        assert!(
            before.contains("mgmt.pid") && before.contains("sha256"),
            "{root}"
        );
        assert!(!after.contains("mgmt.pid"), "{root}");
    }

    #[test]
    fn words_are_quoted_unless_plain() {
        assert_eq!(word("--noop"), "--noop");
        assert_eq!(word(""), "''");
        assert_eq!(word("a b"), "'a b'");
        assert_eq!(word("$x"), "'$x'");
        assert_eq!(word("a;b"), "'a;b'");
        assert_eq!(word("~"), "'~'");
    }

    #[test]
    fn stop_and_cleanup_scripts() {
        let pid = (42, "777".to_string());
        let s = kill_script(Some(&pid), "/r", true);
        assert!(
            s.starts_with("p=42; st=777;") && s.ends_with("; exit 0"),
            "{s}"
        );
        assert!(s.contains("$i -lt 0 "), "{s}");
        let s = cleanup_script(None, "/tmp/mgmt.X", false);
        assert!(s.contains("< '/tmp/mgmt.X/mgmt.pid'"), "{s}");
        assert!(s.contains("$i -lt 30 "), "{s}");
        assert!(s.contains("rm -rf -- '/tmp/mgmt.X' || exit 4"), "{s}");
        assert!(s.contains("still running after SIGKILL"), "{s}");
    }

    /// The wrapper for a child run as root, run by /bin/sh on a PATH without sudo: it checks
    /// the binary as before, then says plainly that sudo is missing (exit 127) instead of
    /// running anything.
    #[test]
    fn without_sudo_on_the_host_the_wrapper_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tools");
        std::fs::create_dir(&bin).unwrap();
        // Only what the wrapper needs: never a sudo, whatever this machine has.
        for tool in ["sed", "cut", "sha256sum", "cat"] {
            for d in ["/usr/bin", "/bin"] {
                let p = std::path::Path::new(d).join(tool);
                if p.exists() {
                    std::os::unix::fs::symlink(&p, bin.join(tool)).unwrap();
                    break;
                }
            }
        }
        let child = dir.path().join("mgmt");
        std::fs::write(&child, "#!/bin/sh\necho ran\n").unwrap();
        let hash = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(std::fs::read(&child).unwrap()))
        };
        let run = dir.path().to_string_lossy().into_owned();
        let cmd = child_command(
            &child.to_string_lossy(),
            None,
            &hash,
            &run,
            &["run".into()],
            Some("sudo -n --"),
        );
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .env("PATH", &bin)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(127), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{NO_SUDO}\n"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("mgmt-pid: "), "{stdout}");
        assert!(!stdout.contains("ran"), "{stdout}");
    }

    /// Start time (field 22 of /proc/PID/stat) of a process, as the scripts read it.
    fn start_time(pid: u32) -> String {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(19).unwrap().to_string()
    }

    fn run_sh(script: &str, home: &std::path::Path) -> String {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .env("HOME", home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The sweep, run for real by /bin/sh on this machine's /proc: a dir whose child and owner
    /// are dead goes, one whose child (or owner) lives stays, a recent dir without marks stays;
    /// temp files named for a dead connection go, for a live one stay.
    #[test]
    fn the_sweep_removes_what_nobody_owns_and_nothing_live() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let mine = format!("{me} {}", start_time(me));
        // A process that has ended: its pid is free (or someone else's, with another start).
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        let gone_start = start_time(gone_pid);
        gone.wait().unwrap();
        let dead = format!("{gone_pid} {gone_start}");
        let mk = |name: &str, files: &[(&str, &str)]| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            for (f, text) in files {
                std::fs::write(d.join(f), format!("{text}\n")).unwrap();
            }
            d
        };
        let stale = mk("mgmt.AAAAAAAA", &[(PID_FILE, &dead), (OWNER_FILE, &dead)]);
        let child_lives = mk("mgmt.BBBBBBBB", &[(PID_FILE, &mine), (OWNER_FILE, &dead)]);
        let owner_lives = mk("mgmt.CCCCCCCC", &[(OWNER_FILE, &mine)]);
        let unmarked = mk("mgmt.DDDDDDDD", &[]);
        let garbage = mk(
            "mgmt.EEEEEEEE",
            &[(PID_FILE, "x; rm -rf /"), (OWNER_FILE, "")],
        );
        let not_ours = mk("other.FFFFFFFF", &[(PID_FILE, &dead)]);
        let cache = home.path().join(".cache/mgmt/bin/abc");
        std::fs::create_dir_all(&cache).unwrap();
        let dead_tmp = cache.join(format!(".mgmt.{}.x.tmp", dead.replace(' ', "-")));
        let live_tmp = cache.join(format!(".mgmt.{}.y.tmp", mine.replace(' ', "-")));
        let young_tmp = cache.join(".mgmt.0123abcd.tmp");
        for f in [&dead_tmp, &live_tmp, &young_tmp] {
            std::fs::write(f, "x").unwrap();
        }
        let out = run_sh(&sweep_script(&tmp.path().to_string_lossy()), home.path());
        // The stale dir, the garbage-marked one (marked, nothing alive) and the dead temp file.
        assert_eq!(out.trim(), "swept=3");
        assert!(!stale.exists() && !garbage.exists() && !dead_tmp.exists());
        for kept in [
            &child_lives,
            &owner_lives,
            &unmarked,
            &not_ours,
            &live_tmp,
            &young_tmp,
        ] {
            assert!(kept.exists(), "{} was kept", kept.display());
        }
    }

    /// The probe's owner mark names the process that ran it (the sshd connection, there).
    #[test]
    fn the_owner_mark_names_the_parent_process() {
        let r = tempfile::tempdir().unwrap();
        let script = format!(
            "r={}; {} echo \"$conn\"",
            quote(&r.path().to_string_lossy()),
            own_script()
        );
        let out = run_sh(&script, r.path());
        let me = std::process::id();
        assert_eq!(out.trim(), format!("{me}-{}", start_time(me)));
        let mark = std::fs::read_to_string(r.path().join(OWNER_FILE)).unwrap();
        assert_eq!(mark.trim(), format!("{me} {}", start_time(me)));
    }
}
