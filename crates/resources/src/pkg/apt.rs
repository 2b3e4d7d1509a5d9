//! Talking to apt: what it offers (`apt-cache policy`), the one transaction that brings a group
//! to its states (`apt-get install` with `name`, `name=version` and `name-`), and its errors.
//!
//! Building command lines and reading apt's output are pure (and tested); `run` is the only
//! thing here that starts a process. A running apt is never killed: interrupting dpkg half way
//! leaves the machine needing `dpkg --configure -a`, so a cancelled check_apply lets it finish
//! in the background (in its own process group, out of reach of a ^C at the terminal).

use std::collections::HashMap;
use std::process::Stdio;

use resource::ResourceError;
use tokio::process::Command;

use super::version;

/// How long apt waits for another apt or dpkg to release dpkg's lock before it fails.
pub(crate) const LOCK_TIMEOUT_SECS: u32 = 60;

/// How many of apt's last lines an error carries.
const ERROR_LINES: usize = 8;

/// What apt knows about one package (`apt-cache policy`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub installed: Option<String>,
    pub candidate: Option<String>,
    /// Every version apt could install (its version table), in apt's order.
    pub versions: Vec<String>,
}

/// What `apt-cache policy NAME...` printed (with `LC_ALL=C`), by package as apt names it (a
/// bare name, or `name:arch` for a foreign instance). A package apt does not know is absent.
pub(crate) fn parse_policy(out: &str) -> HashMap<String, Policy> {
    let mut all = HashMap::new();
    let mut current: Option<(String, Policy)> = None;
    let mut in_table = false;
    for line in out.lines() {
        if !line.starts_with(' ') {
            if let Some(name) = line.strip_suffix(':')
                && !name.is_empty()
            {
                if let Some((n, p)) = current.take() {
                    all.insert(n, p);
                }
                current = Some((name.to_string(), Policy::default()));
                in_table = false;
            }
            continue;
        }
        let Some((_, policy)) = current.as_mut() else {
            continue;
        };
        let trimmed = line.trim();
        let none = |v: &str| (v != "(none)" && !v.is_empty()).then(|| v.to_string());
        if let Some(v) = trimmed.strip_prefix("Installed:") {
            policy.installed = none(v.trim());
        } else if let Some(v) = trimmed.strip_prefix("Candidate:") {
            policy.candidate = none(v.trim());
        } else if trimmed == "Version table:" {
            in_table = true;
        } else if in_table {
            // A version line is indented 5 (` *** ` marks the installed one); the lines of
            // sources under it are indented 8.
            let indent = line.len() - line.trim_start().len();
            let version_line = line.starts_with(" *** ") || indent == 5;
            if version_line
                && let Some(v) = trimmed.trim_start_matches("*** ").split_whitespace().next()
            {
                policy.versions.push(v.to_string());
            }
        }
    }
    if let Some((n, p)) = current {
        all.insert(n, p);
    }
    all
}

/// The policy for `name` as a graph names it: exact, or the only instance of a bare name.
pub(crate) fn policy_of<'a>(all: &'a HashMap<String, Policy>, name: &str) -> Option<&'a Policy> {
    all.get(name).or_else(|| {
        let mut instances = all
            .iter()
            .filter(|(n, _)| n.split_once(':').is_some_and(|(p, _)| p == name));
        match (instances.next(), instances.next()) {
            (Some((_, p)), None) => Some(p),
            _ => None,
        }
    })
}

/// The version string apt has for `wanted` (equal as dpkg compares, e.g. `0:1.0` and `1.0`):
/// what `name=version` must say for apt to find it.
pub(crate) fn known_version<'a>(policy: &'a Policy, wanted: &str) -> Option<&'a str> {
    policy
        .versions
        .iter()
        .find(|v| version::compare(v, wanted).is_eq())
        .map(String::as_str)
}

/// What the transaction does to one package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Install the candidate (`name`): installs, repairs or upgrades to the candidate.
    Install,
    /// Install exactly this version (`name=version`), as apt spells it.
    Version(String),
    /// Remove, keeping configuration files (`name-`).
    Remove,
    /// Remove with configuration files.
    Purge,
}

/// Transaction-wide options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub allow_unauthenticated: bool,
    pub allow_downgrades: bool,
}

/// The options every apt-get command gets: no questions, keep changed configuration files,
/// wait for dpkg's lock instead of failing.
fn common(argv: &mut Vec<String>, flags: Flags) {
    argv.extend(
        [
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
        ]
        .map(String::from),
    );
    argv.push(format!("DPkg::Lock::Timeout={LOCK_TIMEOUT_SECS}"));
    if flags.allow_unauthenticated {
        argv.push("--allow-unauthenticated".into());
    }
    if flags.allow_downgrades {
        argv.push("--allow-downgrades".into());
    }
}

/// The apt-get command lines for `ops` (in order): one `apt-get install` with `name`,
/// `name=version` and `name-`, made `--purge` when the removals are all purges. apt has no way
/// to purge some packages and only remove others in one command, so a mix of both needs a
/// second command: `apt-get purge` for the purges.
pub(crate) fn commands(ops: &[(String, Op)], flags: Flags) -> Vec<Vec<String>> {
    let removes = ops.iter().any(|(_, op)| *op == Op::Remove);
    let purges: Vec<&String> = ops
        .iter()
        .filter(|(_, op)| *op == Op::Purge)
        .map(|(n, _)| n)
        .collect();
    let purge_apart = removes && !purges.is_empty();
    let mut install = vec!["apt-get".to_string(), "install".to_string()];
    common(&mut install, flags);
    install.push("--no-install-recommends".into());
    if !purges.is_empty() && !purge_apart {
        install.push("--purge".into());
    }
    let before = install.len();
    for (name, op) in ops {
        match op {
            Op::Install => install.push(name.clone()),
            Op::Version(v) => install.push(format!("{name}={v}")),
            Op::Remove => install.push(format!("{name}-")),
            Op::Purge if !purge_apart => install.push(format!("{name}-")),
            Op::Purge => {}
        }
    }
    let mut out = Vec::new();
    if install.len() > before {
        out.push(install);
    }
    if purge_apart {
        let mut purge = vec!["apt-get".to_string(), "purge".to_string()];
        common(&mut purge, flags);
        purge.extend(purges.into_iter().cloned());
        out.push(purge);
    }
    out
}

/// `apt-get update`: only run when a package or version we must install is unknown to apt.
pub(crate) fn update_command() -> Vec<String> {
    let mut argv = vec![
        "apt-get".to_string(),
        "update".to_string(),
        "-q".to_string(),
    ];
    argv.extend([
        "-o".to_string(),
        format!("DPkg::Lock::Timeout={LOCK_TIMEOUT_SECS}"),
    ]);
    argv
}

/// A dry run (`-s`, changes nothing, needs no lock) of installing `args`: its errors are apt's
/// own words about what it cannot find.
pub(crate) fn simulate_command(args: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = ["apt-get", "install", "-s", "-q", "--no-install-recommends"]
        .map(String::from)
        .to_vec();
    argv.extend(args.iter().cloned());
    argv
}

pub(crate) fn policy_command(names: &[&str]) -> Vec<String> {
    let mut argv = vec!["apt-cache".to_string(), "policy".to_string()];
    argv.extend(names.iter().map(|n| n.to_string()));
    argv
}

/// A finished command.
#[derive(Debug)]
pub(crate) struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// What apt said when it failed, trimmed to what matters: its `E:` lines when there are any,
/// else the last lines of its stderr, else of its stdout.
pub(crate) fn apt_message(out: &Output) -> String {
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    let stderr = lines(&out.stderr);
    let errors: Vec<String> = stderr
        .iter()
        .filter(|l| l.starts_with("E:"))
        .cloned()
        .collect();
    let chosen = if !errors.is_empty() {
        errors
    } else if !stderr.is_empty() {
        stderr
    } else {
        lines(&out.stdout)
    };
    let skip = chosen.len().saturating_sub(ERROR_LINES);
    chosen[skip..].join("; ")
}

/// Runs `argv` (apt-get or apt-cache) to its end, non-interactively, in the C locale so its
/// output can be read, in its own process group, and not killed if this future is dropped.
pub(crate) async fn run(argv: &[String]) -> Result<Output, ResourceError> {
    let (program, args) = argv.split_first().expect("a command line has a program");
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
        .env("APT_LISTCHANGES_FRONTEND", "none")
        .env("LC_ALL", "C")
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false)
        .output()
        .await
        .map_err(|e| ResourceError::failed(format!("cannot run `{program}`: {e}")))?;
    Ok(Output {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "\
pkgt01:
  Installed: (none)
  Candidate: 1.0
  Version table:
     1.0 500
        500 file:/srv/repo ./ Packages
pkgver:
  Installed: 1.0
  Candidate: 2.0
  Version table:
     2.0 500
        500 file:/srv/repo ./ Packages
 *** 1.0 500
        500 file:/srv/repo ./ Packages
        100 /var/lib/dpkg/status
virtual:
  Installed: (none)
  Candidate: (none)
  Version table:
libfoo1:i386:
  Installed: 1.2-1
  Candidate: 1.2-1
  Package pin: 1.2-1
  Version table:
 *** 1.2-1 990
        100 /var/lib/dpkg/status
";

    #[test]
    fn policy_output_gives_candidates_and_versions() {
        let all = parse_policy(POLICY);
        assert_eq!(
            all["pkgt01"],
            Policy {
                installed: None,
                candidate: Some("1.0".into()),
                versions: vec!["1.0".into()],
            }
        );
        assert_eq!(
            all["pkgver"],
            Policy {
                installed: Some("1.0".into()),
                candidate: Some("2.0".into()),
                versions: vec!["2.0".into(), "1.0".into()],
            }
        );
        assert_eq!(all["virtual"], Policy::default());
        assert_eq!(all["libfoo1:i386"].versions, ["1.2-1"]);
        assert_eq!(all.len(), 4);
        // A bare name finds its only instance; an unknown package is absent.
        assert_eq!(
            policy_of(&all, "libfoo1").and_then(|p| p.candidate.as_deref()),
            Some("1.2-1")
        );
        assert!(policy_of(&all, "nosuch").is_none());
        assert_eq!(parse_policy(""), HashMap::new());
        assert_eq!(known_version(&all["pkgver"], "0:1.0"), Some("1.0"));
        assert_eq!(known_version(&all["pkgver"], "3.0"), None);
    }

    fn ops(list: &[(&str, Op)]) -> Vec<(String, Op)> {
        list.iter()
            .map(|(n, o)| (n.to_string(), o.clone()))
            .collect()
    }

    fn lines(cmds: Vec<Vec<String>>) -> Vec<String> {
        cmds.into_iter().map(|c| c.join(" ")).collect()
    }

    const COMMON: &str = "-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o DPkg::Lock::Timeout=60";

    #[test]
    fn one_transaction_for_installs_versions_and_removals() {
        let got = lines(commands(
            &ops(&[
                ("a", Op::Install),
                ("b", Op::Version("2.0-1".into())),
                ("c", Op::Remove),
                ("d", Op::Install),
            ]),
            Flags::default(),
        ));
        assert_eq!(
            got,
            [format!(
                "apt-get install {COMMON} --no-install-recommends a b=2.0-1 c- d"
            )]
        );
    }

    #[test]
    fn purges_join_the_transaction_unless_plain_removals_are_in_it() {
        let got = lines(commands(
            &ops(&[("a", Op::Install), ("p", Op::Purge), ("q", Op::Purge)]),
            Flags::default(),
        ));
        assert_eq!(
            got,
            [format!(
                "apt-get install {COMMON} --no-install-recommends --purge a p- q-"
            )]
        );
        let got = lines(commands(
            &ops(&[("a", Op::Install), ("p", Op::Purge), ("r", Op::Remove)]),
            Flags {
                allow_unauthenticated: true,
                allow_downgrades: true,
            },
        ));
        assert_eq!(
            got,
            [
                format!(
                    "apt-get install {COMMON} --allow-unauthenticated --allow-downgrades --no-install-recommends a r-"
                ),
                format!("apt-get purge {COMMON} --allow-unauthenticated --allow-downgrades p"),
            ]
        );
        // Only purges and removals: the purge command alone needs no install.
        let got = lines(commands(
            &ops(&[("p", Op::Purge), ("r", Op::Remove)]),
            Flags::default(),
        ));
        assert_eq!(
            got,
            [
                format!("apt-get install {COMMON} --no-install-recommends r-"),
                format!("apt-get purge {COMMON} p"),
            ]
        );
        assert!(commands(&[], Flags::default()).is_empty());
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            update_command().join(" "),
            "apt-get update -q -o DPkg::Lock::Timeout=60"
        );
        assert_eq!(
            simulate_command(&["x".into(), "y=1".into()]).join(" "),
            "apt-get install -s -q --no-install-recommends x y=1"
        );
        assert_eq!(
            policy_command(&["a", "b"]).join(" "),
            "apt-cache policy a b"
        );
    }

    #[test]
    fn apt_messages_keep_the_errors() {
        let out = |stdout: &str, stderr: &str| Output {
            success: false,
            code: Some(100),
            stdout: stdout.into(),
            stderr: stderr.into(),
        };
        assert_eq!(
            apt_message(&out(
                "Reading package lists...\nBuilding dependency tree...\n",
                "W: something minor\nE: Unable to locate package nosuch1\nE: Unable to locate package nosuch2\n"
            )),
            "E: Unable to locate package nosuch1; E: Unable to locate package nosuch2"
        );
        assert_eq!(
            apt_message(&out("", "W: only a warning\n")),
            "W: only a warning"
        );
        let many: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            apt_message(&out(&many, "")),
            "line 13; line 14; line 15; line 16; line 17; line 18; line 19; line 20"
        );
    }
}
