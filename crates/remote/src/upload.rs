//! Getting bytes onto a host: the cache probe (which also makes the run dir), the binary upload
//! over SFTP (temp name + posix-rename, atomic under concurrent runs) with an exec-channel
//! fallback, and atomic small-file writes (graphs, credentials) that keep data out of argv.
//! The probe seeds the run dir with every file the caller gives (graph, credentials, the files
//! a host hands on) from its stdin, in the same exec.
//!
//! Every remote path that reaches a shell goes through `quote`. Nothing here may put file
//! contents (the store secret above all) on a command line.

use futures::StreamExt;
use russh::ChannelMsg;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};

use crate::error::{ChildExit, Error, Step};
use crate::session::Session;

/// Quotes `s` for a POSIX shell.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Identifies one version of a file without reading it: device, inode, size, mtime and ctime
/// (with nanoseconds where `stat` shows them). Any write or replacement changes it, and ctime
/// cannot be set back by an unprivileged user. Empty output (no GNU/busybox `stat`) never
/// matches: the hash is computed then.
pub(crate) const STAT_ID: &str = "stat -L -c '%d:%i:%s:%y:%z'";

/// A shell condition that holds when the file named by the shell word `file` (quoted by the
/// caller) has the sha256 `hash`. OpenSSL's digest when the host has it: it uses the CPU's SHA
/// instructions, 13 ms for our 13 MB binary where coreutils' `sha256sum` takes 48, and this
/// runs before every start on every host. Otherwise `sha256sum`. Anything unexpected (neither
/// tool, an error, odd output) is a mismatch: the binary is refused, never run unchecked. Sets
/// the shell variable `mh`.
pub fn sha256_is(file: &str, hash: &str) -> String {
    format!(
        "{{ mh=$(openssl dgst -sha256 -r {file} 2>/dev/null) || mh=; mh=${{mh%% *}}; \
         [ ${{#mh}} -eq 64 ] || {{ mh=$(sha256sum {file} 2>/dev/null) || mh=; mh=${{mh%% *}}; }}; \
         [ \"$mh\" = {hash} ]; }}",
        hash = quote(hash)
    )
}

/// Where the cached binary's stamp lives: the `STAT_ID` of the file as it was when its hash was
/// last found right (written by the child's wrapper, which hashes it before every start). It
/// only lets the probe skip a second hash of the same file; it never lets a binary run unchecked.
pub(crate) fn stamp_path(bin_dir: &str) -> String {
    format!("{}.verified", bin_dir.trim_end_matches('/'))
}

/// What the probe found.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// Absolute directory the binary lives in (cache dir, or the run dir without caching).
    pub bin_dir: String,
    pub hit: bool,
    pub run_dir: String,
    /// `PID-START` of the sshd process serving this connection: upload temp files carry it in
    /// their name, so the next run's sweep knows whether their upload still runs.
    pub conn: String,
    /// How many stale run dirs and upload temp files the probe removed.
    pub swept: u32,
}

/// A file the run dir starts with (the graph, the child's credentials, the files a host hands
/// on), written by the probe from its stdin so its bytes (the store secret above all) are never
/// in an argv.
pub(crate) struct SeedFile<'a> {
    /// A plain file name, checked by the caller.
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub mode: u32,
}

/// The shell that splits the probe's stdin, saved whole as `"$r/.seed"` and checked for its
/// size, into the `seed` files (in order, back to back) in the run dir `"$r"`. Each is cut out
/// of the saved file (`tail -c +N | head -c LEN`), never read from the pipe itself: a `head`
/// reading a shared pipe may take more than its share.
fn seed_script(seed: &[SeedFile<'_>]) -> String {
    let total: usize = seed.iter().map(|f| f.bytes.len()).sum();
    let mut script = format!(
        "cat > \"$r/.seed\"; \
         if [ \"$(wc -c < \"$r/.seed\")\" -ne {total} ]; then echo 'the run dir files arrived incomplete' >&2; exit 1; fi; "
    );
    let mut offset = 0;
    for f in seed {
        let path = format!("\"$r\"/{}", quote(f.name));
        script.push_str(&format!(
            "tail -c +{from} \"$r/.seed\" | head -c {len} > {path}; chmod {mode:o} {path}; ",
            from = offset + 1,
            len = f.bytes.len(),
            mode = f.mode,
        ));
        offset += f.bytes.len();
    }
    script.push_str("rm -f \"$r/.seed\"; ");
    script
}

/// One exec: resolve the cache dir, check the cached binary, create the run dir 0700 and write
/// the `seed` files into it (one exec rather than three: each exec channel is a login shell
/// and a handful of processes on the host, on every host of every run). The check
/// is the hash, unless the binary is exactly the file the wrapper last verified (its stamp
/// matches): the wrapper hashes it again before it runs anyway, so hashing 13 MB twice per run
/// bought nothing. A binary changed since (tampered, corrupted, replaced) has another stamp and is
/// hashed here, and replaced when wrong, as before.
pub(crate) async fn probe(
    s: &Session,
    hash: &str,
    caching: bool,
    tmp_prefix: &str,
    seed: &[SeedFile<'_>],
) -> Result<Probe, Error> {
    let template = quote(&format!(
        "{}/mgmt.XXXXXXXX",
        tmp_prefix.trim_end_matches('/')
    ));
    let cache = if caching {
        format!(
            "c=\"$HOME/.cache/mgmt/bin/{hash}\"; mkdir -p \"$c\"; \
             v=$({STAT_ID} \"$c/mgmt\" 2>/dev/null) || v=; w=; \
             if [ -f \"$c.verified\" ]; then read -r w < \"$c.verified\" || w=; fi; \
             if [ -f \"$c/mgmt\" ] && {{ {{ [ -n \"$v\" ] && [ \"$v\" = \"$w\" ]; }} \
             || {check}; }}; \
             then s=hit; else s=miss; fi",
            check = sha256_is("\"$c/mgmt\"", hash)
        )
    } else {
        "c=\"$r\"; s=miss".to_string()
    };
    // A failure after the run dir exists removes it: nobody else knows its name yet.
    let script = format!(
        "set -e; umask 077; {sweep}r=$(mktemp -d {template}); trap 'rm -rf \"$r\"' EXIT; {own}{cache}; \
         {seed}trap - EXIT; printf 'bin=%s\\nstatus=%s\\nrun=%s\\nconn=%s\\n' \"$c\" \"$s\" \"$r\" \"$conn\"",
        sweep = crate::fleet::scripts::sweep_script(tmp_prefix),
        own = crate::fleet::scripts::own_script(),
        seed = seed_script(seed),
    );
    let stdin: Vec<u8> = seed.iter().flat_map(|f| f.bytes.iter().copied()).collect();
    let out = s
        .run_ok("cache probe", &sh(&script), Some(&stdin), Step::Probe)
        .await?;
    let text = String::from_utf8_lossy(&out);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).map(str::to_string))
            .filter(|v| v.starts_with('/'))
    };
    let value = |k: &str| text.lines().find_map(|l| l.strip_prefix(k));
    let conn = value("conn=").filter(|c| {
        c.split_once('-').is_some_and(|(p, s)| {
            !p.is_empty()
                && !s.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && s.bytes().all(|b| b.is_ascii_digit())
        })
    });
    let (Some(bin_dir), Some(status), Some(run_dir), Some(conn)) =
        (field("bin="), value("status="), field("run="), conn)
    else {
        return Err(Error::Protocol {
            host: s.label.clone(),
            step: Step::Probe,
            message: format!("cannot parse probe output {:?}", text.trim()),
        });
    };
    Ok(Probe {
        bin_dir,
        hit: status == "hit",
        run_dir,
        conn: conn.to_string(),
        swept: value("swept=").and_then(|n| n.parse().ok()).unwrap_or(0),
    })
}

/// Wraps a script so it runs under /bin/sh whatever the user's login shell is.
pub(crate) fn sh(script: &str) -> String {
    format!("exec /bin/sh -c {}", quote(script))
}

pub(crate) fn random_suffix() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}{:x}", hex::encode(b), nanos as u32 ^ std::process::id())
}

/// Uploads the binary as `<dir>/mgmt` (0755). Returns how many bytes went over the wire.
pub(crate) async fn upload_binary(
    s: &Session,
    dir: &str,
    conn: &str,
    bytes: &[u8],
    hash: &str,
) -> Result<u64, Error> {
    let target = format!("{dir}/mgmt");
    match open_sftp(s).await? {
        Some(sftp) => {
            let tmp = format!("{dir}/.mgmt.{conn}.{}.tmp", random_suffix());
            let r = sftp_upload(s, &sftp, &tmp, &target, bytes).await;
            if let Err(e) = r {
                return Err(explain_upload_failure(s, dir, bytes.len(), e).await);
            }
            let _ = sftp.close_session();
        }
        None => {
            tracing::info!(host = %s.label, "no sftp subsystem, streaming the binary over exec");
            let script = format!(
                "umask 077; t=$(mktemp {dir}/.mgmt.{conn}.XXXXXXXX) || exit 1; \
                 if cat > \"$t\" && {check} && chmod 0755 \"$t\" \
                 && mv -f \"$t\" {target}; then exit 0; else rm -f \"$t\"; exit 1; fi",
                dir = quote(dir),
                target = quote(&target),
                check = sha256_is("\"$t\"", hash),
            );
            if let Err(e) = s
                .run_ok("binary upload", &sh(&script), Some(bytes), Step::Upload)
                .await
            {
                return Err(explain_upload_failure(s, dir, bytes.len(), e).await);
            }
        }
    }
    Ok(bytes.len() as u64)
}

/// What an SFTP status means, in the words of the errno it stands for (SFTP v3 has a handful
/// of codes; OpenSSH's server sends `Failure` for everything else, ENOSPC included).
fn sftp_meaning(e: &russh_sftp::client::error::Error) -> Option<&'static str> {
    use russh_sftp::client::error::Error as E;
    match e {
        E::Status(st) => Some(match st.status_code {
            StatusCode::NoSuchFile => "no such file or directory",
            StatusCode::PermissionDenied => "permission denied",
            StatusCode::BadMessage => "the server could not read a request (bad message)",
            StatusCode::NoConnection | StatusCode::ConnectionLost => "the connection was lost",
            StatusCode::OpUnsupported => "the server does not support the operation",
            StatusCode::Eof => "unexpected end of file",
            StatusCode::Failure | StatusCode::Ok => return None,
        }),
        _ => None,
    }
}

/// The plain reason an upload into `dir` failed: a full disk is checked for (`df`) since the
/// server's status cannot say it, then the SFTP status's meaning, then the error as it came.
async fn explain_upload_failure(s: &Session, dir: &str, size: usize, e: Error) -> Error {
    if matches!(e, Error::Silent { .. }) {
        return e;
    }
    let df = format!("df -Pk {} | tail -n 1", quote(dir));
    let free_kib = match s.run(&sh(&df), None, Step::Upload).await {
        Ok(out) if out.status == ChildExit::Code(0) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse::<u64>().ok()),
        _ => None,
    };
    let need_kib = (size as u64).div_ceil(1024);
    let reason = match (free_kib, &e) {
        (Some(free), _) if free < need_kib + 64 => {
            format!("no space left on device ({free} KiB free, {need_kib} KiB needed)")
        }
        (_, Error::Sftp { source, .. }) => match sftp_meaning(source) {
            Some(m) => m.to_string(),
            None => e.to_string(),
        },
        _ => e.to_string(),
    };
    Error::Upload {
        host: s.label.clone(),
        dir: dir.to_string(),
        reason,
    }
}

/// Opens the sftp subsystem; `None` when the host has none.
async fn open_sftp(s: &Session) -> Result<Option<RawSftpSession>, Error> {
    let mut ch = s
        .handle
        .channel_open_session()
        .await
        .map_err(Error::ssh(&s.label, Step::Upload))?;
    ch.request_subsystem(true, "sftp")
        .await
        .map_err(Error::ssh(&s.label, Step::Upload))?;
    loop {
        match ch.wait().await {
            Some(ChannelMsg::Success) => break,
            Some(ChannelMsg::Failure) | Some(ChannelMsg::Close) | None => return Ok(None),
            Some(_) => {}
        }
    }
    Ok(Some(RawSftpSession::new(ch.into_stream())))
}

fn sftp_err(s: &Session) -> impl Fn(russh_sftp::client::error::Error) -> Error + '_ {
    move |source| Error::Sftp {
        host: s.label.clone(),
        source,
    }
}

/// SSH string encoding, for the posix-rename extension payload.
fn ssh_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

async fn sftp_upload(
    s: &Session,
    sftp: &RawSftpSession,
    tmp: &str,
    target: &str,
    bytes: &[u8],
) -> Result<(), Error> {
    let tmp = tmp.to_string();
    let version = sftp.init().await.map_err(sftp_err(s))?;
    let posix_rename = version.extensions.contains_key("posix-rename@openssh.com");
    let mut chunk = 32 * 1024;
    if version.extensions.contains_key("limits@openssh.com")
        && let Ok(l) = sftp.limits().await
        && l.max_write_len > 0
    {
        chunk = chunk.min(l.max_write_len as usize);
    }
    let attrs = FileAttributes {
        permissions: Some(0o600),
        ..Default::default()
    };
    let handle = sftp
        .open(
            tmp.clone(),
            OpenFlags::CREATE | OpenFlags::WRITE | OpenFlags::EXCLUDE,
            attrs,
        )
        .await
        .map_err(sftp_err(s))?
        .handle;
    let written = async {
        // Many writes in flight: one at a time would be bound by round trips, not bandwidth.
        let mut inflight = futures::stream::FuturesUnordered::new();
        let mut offset = 0u64;
        for c in bytes.chunks(chunk) {
            if inflight.len() >= 32
                && let Some(r) = inflight.next().await
            {
                r?;
            }
            inflight.push(sftp.write(handle.clone(), offset, c.to_vec()));
            offset += c.len() as u64;
        }
        while let Some(r) = inflight.next().await {
            r?;
        }
        sftp.fsetstat(
            handle.clone(),
            FileAttributes {
                permissions: Some(0o755),
                ..Default::default()
            },
        )
        .await?;
        Ok::<_, russh_sftp::client::error::Error>(())
    }
    .await;
    let closed = sftp.close(handle).await;
    if let Err(e) = written.and(closed.map(|_| ())) {
        let _ = sftp.remove(tmp).await;
        return Err(sftp_err(s)(e));
    }
    if posix_rename {
        let mut data = Vec::new();
        ssh_string(&mut data, &tmp);
        ssh_string(&mut data, target);
        match sftp.extended("posix-rename@openssh.com", data).await {
            Ok(Packet::Status(st)) if st.status_code == StatusCode::Ok => return Ok(()),
            Ok(other) => {
                let _ = sftp.remove(tmp).await;
                return Err(Error::Protocol {
                    host: s.label.clone(),
                    step: Step::Upload,
                    message: format!("posix-rename refused: {other:?}"),
                });
            }
            Err(e) => {
                let _ = sftp.remove(tmp).await;
                return Err(sftp_err(s)(e));
            }
        }
    }
    // Plain SFTP rename fails onto an existing file; mv(1) is rename(2), atomic as well.
    let script = format!("mv -f {} {}", quote(&tmp), quote(target));
    s.run_ok(
        "rename of the uploaded binary",
        &sh(&script),
        None,
        Step::Upload,
    )
    .await?;
    Ok(())
}

/// Writes `bytes` to `<dir>/<name>` atomically (temp file + rename) with `mode`; the bytes
/// travel on stdin, never in argv. The size is checked so a cut connection leaves no torn file.
pub(crate) async fn write_file(
    s: &Session,
    dir: &str,
    name: &str,
    bytes: &[u8],
    mode: u32,
    step: Step,
) -> Result<(), Error> {
    let script = format!(
        "umask 077; t=$(mktemp {dir}/.tmp.XXXXXXXX) || exit 1; \
         if cat > \"$t\" && [ \"$(wc -c < \"$t\")\" -eq {len} ] && chmod {mode:o} \"$t\" \
         && mv -f \"$t\" {target}; then exit 0; else rm -f \"$t\"; exit 1; fi",
        dir = quote(dir),
        len = bytes.len(),
        target = quote(&format!("{dir}/{name}")),
    );
    s.run_ok("file write", &sh(&script), Some(bytes), step)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(sh("echo 'x'"), r"exec /bin/sh -c 'echo '\''x'\'''");
    }

    #[test]
    fn seed_files_are_cut_from_one_saved_stdin() {
        let file = |name, bytes, mode| SeedFile { name, bytes, mode };
        let seed = [
            file("g.yaml", b"graph: g\n".as_slice(), 0o600),
            file("it's", b"", 0o640),
            file("c", b"user=u\n", 0o600),
        ];
        let s = seed_script(&seed);
        assert!(s.starts_with(r#"cat > "$r/.seed"; "#), "{s}");
        assert!(s.contains("-ne 16 ]"), "{s}");
        assert!(
            s.contains(
                r#"tail -c +1 "$r/.seed" | head -c 9 > "$r"/'g.yaml'; chmod 600 "$r"/'g.yaml'; "#
            ),
            "{s}"
        );
        assert!(
            s.contains(r#"tail -c +10 "$r/.seed" | head -c 0 > "$r"/'it'\''s'; chmod 640"#),
            "{s}"
        );
        assert!(
            s.contains(r#"tail -c +10 "$r/.seed" | head -c 7 > "$r"/'c'"#),
            "{s}"
        );
        assert!(s.ends_with(r#"rm -f "$r/.seed"; "#), "{s}");
        // Only lengths and names: never a byte of the files.
        assert!(!s.contains("user=u"), "{s}");
    }
}
