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
pub(super) fn child_command(
    bin: &str,
    stamp: Option<&str>,
    hash: &str,
    run_dir: &str,
    args: &[String],
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
         exec {bin_q} {}",
        args.join(" "),
        check = upload::sha256_is(&bin_q, hash),
    )
}

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
           if [ \"$lead\" = \"$p\" ]; then \
             for f in /proc/[0-9]*/stat; do \
               g=$(sed 's/^.*) //' \"$f\" 2>/dev/null) || continue; set -- $g; \
               if [ \"$4\" = \"$p\" ]; then q=${{f#/proc/}}; kill -KILL \"${{q%/stat}}\" 2>/dev/null; fi; \
             done; \
           fi; \
         fi"
    )
}

/// Stops the child (see [`stop_script`]) and always succeeds.
pub(super) fn kill_script(pid: Option<&Pid>, run_dir: &str, force: bool) -> String {
    format!("{}; exit 0", stop_script(pid, run_dir, force))
}

/// Stops a child that may still run (a no-op when it is gone), then removes the run dir.
pub(super) fn cleanup_script(pid: Option<&Pid>, run_dir: &str, force: bool) -> String {
    format!(
        "{}; rm -rf -- {}",
        stop_script(pid, run_dir, force),
        quote(run_dir)
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
        let c = child_command("/c/mgmt", Some("/c.verified"), "ab", "/tmp/mgmt.X", &args);
        assert!(
            c.ends_with(
                "exec '/c/mgmt' run --hostname 'h 1' --seeds http://127.0.0.1:4000 \
                 --yaml /tmp/mgmt.X/g.yaml --converged-timeout=5 'it'\\''s'"
            ),
            "{c}"
        );
        assert!(c.contains("> '/tmp/mgmt.X/mgmt.pid'"), "{c}");
        assert!(c.contains("rm -f '/c.verified'"), "{c}");
        let plain = child_command("/c/mgmt", None, "ab", "/r", &[]);
        assert!(!plain.contains("verified"), "{plain}");
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
        assert!(s.ends_with("rm -rf -- '/tmp/mgmt.X'"), "{s}");
    }
}
