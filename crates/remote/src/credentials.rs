//! Store credentials as a file: what the initiator puts in a host's run dir (mode 0600) and the
//! child reads with `--store-credentials`, and what an intermediate hands on for each host of
//! its subtree. One writer ([`Credentials::encode`]) and one parser ([`Credentials::parse`]):
//!
//! ```text
//! user=<name>
//! password=<secret>
//! ```
//!
//! Each key exactly once, nothing else, at most [`MAX_LEN`] bytes. The secret travels in a file,
//! never in argv, and neither `Debug` nor an error message ever shows it.

use std::io::Read;
use std::path::Path;

use crate::fleet::ExtraFile;

/// The largest credentials file accepted: far more than a name and a secret need, little enough
/// that a wrong path (a log, a device) is refused before it is read whole.
pub const MAX_LEN: usize = 4096;

/// A store user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

/// Why credentials cannot be made, written or read. Never carries the password or a line of
/// the file (a malformed line may be the secret).
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the user name is empty")]
    EmptyUser,
    #[error("the {field} contains a line break")]
    LineBreak { field: &'static str },
    #[error("more than {MAX_LEN} bytes")]
    TooLong,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("line {line}: expected `user=<name>` or `password=<secret>`")]
    BadLine { line: usize },
    #[error("line {line}: a second `{key}=` line")]
    Duplicate { line: usize, key: &'static str },
    #[error("no `{key}=` line")]
    Missing { key: &'static str },
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
}

impl Credentials {
    /// Credentials that can be written: a non-empty user, and no line break in either.
    pub fn new(
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<Self, CredentialsError> {
        let (user, password) = (user.into(), password.into());
        if user.is_empty() {
            return Err(CredentialsError::EmptyUser);
        }
        for (field, v) in [("user name", &user), ("password", &password)] {
            if v.contains(['\n', '\r']) {
                return Err(CredentialsError::LineBreak { field });
            }
        }
        let c = Credentials { user, password };
        if c.encoded_len() > MAX_LEN {
            return Err(CredentialsError::TooLong);
        }
        Ok(c)
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `(user, password)`, as the store client takes them.
    pub fn into_parts(self) -> (String, String) {
        (self.user, self.password)
    }

    fn encoded_len(&self) -> usize {
        "user=\npassword=\n".len() + self.user.len() + self.password.len()
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        format!("user={}\npassword={}\n", self.user, self.password).into_bytes()
    }

    /// The file for a run dir: these credentials as `name`, mode 0600.
    pub fn file(&self, name: impl Into<String>) -> ExtraFile {
        ExtraFile {
            name: name.into(),
            bytes: self.encode(),
            mode: 0o600,
        }
    }

    /// Reads what [`Credentials::encode`] wrote (the last line break may be missing).
    pub fn parse(bytes: &[u8]) -> Result<Self, CredentialsError> {
        if bytes.len() > MAX_LEN {
            return Err(CredentialsError::TooLong);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| CredentialsError::NotUtf8)?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let (mut user, mut password) = (None, None);
        for (i, line) in text.split('\n').enumerate() {
            let line_no = i + 1;
            let (key, slot, value) = if let Some(v) = line.strip_prefix("user=") {
                ("user", &mut user, v)
            } else if let Some(v) = line.strip_prefix("password=") {
                ("password", &mut password, v)
            } else {
                return Err(CredentialsError::BadLine { line: line_no });
            };
            if slot.is_some() {
                return Err(CredentialsError::Duplicate { line: line_no, key });
            }
            *slot = Some(value);
        }
        let user = user.ok_or(CredentialsError::Missing { key: "user" })?;
        let password = password.ok_or(CredentialsError::Missing { key: "password" })?;
        Credentials::new(user, password)
    }

    /// Reads and parses a credentials file, refusing one larger than [`MAX_LEN`] without
    /// reading it whole.
    pub fn read(path: &Path) -> Result<Self, CredentialsError> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_LEN as u64 + 1)
            .read_to_end(&mut bytes)?;
        Credentials::parse(&bytes)
    }
}

impl std::fmt::Debug for Credentials {
    // By hand: the password is never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> String {
        Credentials::parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn round_trip() {
        for (u, p) in [
            ("mgmt-h1", "s3cret"),
            ("a=b", "=x=y="),
            ("h", ""),
            ("ü ser", " spaced "),
        ] {
            let c = Credentials::new(u, p).unwrap();
            let back = Credentials::parse(&c.encode()).unwrap();
            assert_eq!(back, c);
            assert_eq!((back.user(), back.password()), (u, p));
        }
        let c = Credentials::new("u", "p").unwrap();
        assert_eq!(c.encode(), b"user=u\npassword=p\n");
        assert_eq!(Credentials::parse(b"user=u\npassword=p").unwrap(), c);
        assert_eq!(Credentials::parse(b"password=p\nuser=u\n").unwrap(), c);
        let f = c.file("store.cred");
        assert_eq!((f.name.as_str(), f.mode), ("store.cred", 0o600));
        assert_eq!(f.bytes, c.encode());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::new("someone", "hunter2").unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(shown.contains("someone"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn what_cannot_be_written_is_refused() {
        assert!(matches!(
            Credentials::new("", "p"),
            Err(CredentialsError::EmptyUser)
        ));
        assert!(matches!(
            Credentials::new("u\n", "p"),
            Err(CredentialsError::LineBreak { field: "user name" })
        ));
        assert!(matches!(
            Credentials::new("u", "p\rq"),
            Err(CredentialsError::LineBreak { field: "password" })
        ));
        assert!(matches!(
            Credentials::new("u", "x".repeat(MAX_LEN)),
            Err(CredentialsError::TooLong)
        ));
    }

    #[test]
    fn malformed_files_are_clear_errors_without_the_secret() {
        assert_eq!(
            err(b""),
            "line 1: expected `user=<name>` or `password=<secret>`"
        );
        assert_eq!(err(b"user=u\n"), "no `password=` line");
        assert_eq!(err(b"password=p\n"), "no `user=` line");
        assert_eq!(err(b"user=\npassword=p\n"), "the user name is empty");
        assert_eq!(
            err(b"user=u\npassword=p\npassword=q\n"),
            "line 3: a second `password=` line"
        );
        let e = err(b"user=u\nhunter2\npassword=p\n");
        assert_eq!(e, "line 2: expected `user=<name>` or `password=<secret>`");
        assert_eq!(err(b"user=u\n\npassword=p\n"), err(b"user=u\nx\n"));
        assert_eq!(
            err(b"user=u\npassword=p\r\n"),
            "the password contains a line break"
        );
        assert_eq!(err(b"user=u\npassword=\xff\n"), "not UTF-8");
        let big = format!("user=u\npassword={}\n", "x".repeat(MAX_LEN));
        assert_eq!(err(big.as_bytes()), format!("more than {MAX_LEN} bytes"));
    }

    #[test]
    fn read_stops_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok");
        std::fs::write(&ok, b"user=u\npassword=p\n").unwrap();
        assert_eq!(Credentials::read(&ok).unwrap().user(), "u");
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; 1 << 20]).unwrap();
        assert!(matches!(
            Credentials::read(&big),
            Err(CredentialsError::TooLong)
        ));
        assert!(matches!(
            Credentials::read(&d.path().join("missing")),
            Err(CredentialsError::Read(_))
        ));
    }
}
