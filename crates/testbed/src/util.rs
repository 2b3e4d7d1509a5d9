//! Small helpers shared by the test bed modules: finding programs, running them with their
//! errors kept, polling a condition under a deadline, writing files with a mode.
//! Never sleeps for a fixed time to "let things settle": every wait has a condition.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::TestbedError;

/// Where a program is, searching PATH and the sbin directories (root's tools live there and a
/// test runner's PATH may lack them).
pub(crate) fn find_program(
    name: &'static str,
    package: &'static str,
) -> Result<PathBuf, TestbedError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if let Ok(meta) = fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(TestbedError::MissingBinary { name, package })
}

/// Runs a command to completion, feeding `stdin`, and turns a non-zero exit into an error that
/// carries its stderr. Secrets go through stdin, never argv.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output, TestbedError> {
    let child = spawn(cmd, stdin.is_some())?;
    finish(cmd, child, stdin)
}

pub(crate) fn spawn(
    cmd: &mut Command,
    piped_stdin: bool,
) -> Result<std::process::Child, TestbedError> {
    cmd.stdin(if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map_err(|source| TestbedError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })
}

/// Waits for a child started by [`spawn`], checking its exit status.
pub(crate) fn finish(
    cmd: &Command,
    mut child: std::process::Child,
    stdin: Option<&[u8]>,
) -> Result<Output, TestbedError> {
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's failure below.
        let _ = pipe.write_all(data);
    }
    let out = child
        .wait_with_output()
        .map_err(|source| TestbedError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            command: describe(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TestbedError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| TestbedError::io("create", path, e))?;
    file.write_all(contents)
        .map_err(|e| TestbedError::io("write", path, e))?;
    // The mode given to open() is filtered by the umask; set it exactly.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| TestbedError::io("chmod", path, e))
}

pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<(), TestbedError> {
    fs::create_dir_all(path).map_err(|e| TestbedError::io("create directory", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| TestbedError::io("chmod", path, e))
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, TestbedError> {
    fs::read_to_string(path).map_err(|e| TestbedError::io("read", path, e))
}

/// Random alphanumeric text from the kernel's generator.
pub(crate) fn random_token(len: usize) -> Result<String, TestbedError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = vec![0u8; len];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| TestbedError::io("read", "/dev/urandom", e))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// Opens (creating) `path` and takes an exclusive flock on it; released when the file closes.
pub(crate) fn lock_exclusive(path: &Path) -> Result<fs::File, TestbedError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| TestbedError::io("open", path, e))?;
    // SAFETY: flock on a file descriptor we own; blocks until the other holders are done.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
        return Err(TestbedError::io(
            "lock",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(file)
}

/// FNV-1a (64 bits) of the parts, each followed by a NUL: a short, stable cache key.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The last lines of a log, for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named_with_its_package() {
        let err = find_program("mgmt-testbed-no-such-program", "some-package").unwrap_err();
        assert_eq!(
            err.to_string(),
            "required program `mgmt-testbed-no-such-program` not found in PATH, /usr/sbin or /sbin \
             (install some-package; scripts/testbed does it)"
        );
        assert!(find_program("sh", "dash").is_ok());
    }

    #[test]
    fn fnv1a_separates_parts() {
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        assert_eq!(fnv1a(&["x"]), fnv1a(&["x"]));
    }
}
