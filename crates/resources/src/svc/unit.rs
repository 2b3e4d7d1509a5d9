//! systemd unit names: systemd's own rules for which names are valid, the `.service` suffix
//! added to a bare name (as `systemctl` does), and the D-Bus object path systemd gives a unit.
//! Pure: no IO.

use std::fmt;

/// The unit types systemd knows (`systemd.unit(5)`): a name ending in `.<one of these>` is
/// taken as written, any other name gets `.service` appended.
pub const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "device",
    "slice",
    "scope",
];

/// systemd's `UNIT_NAME_MAX` is 256 with the terminating NUL.
pub const MAX_LEN: usize = 255;

/// A valid, complete unit name (`sshd.service`, `getty@tty1.service`, `backup.timer`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitName(String);

impl UnitName {
    /// `name` as a unit: `.service` is appended unless it already ends in a unit type's
    /// suffix; then the whole name must be one systemd accepts for a unit that can be started
    /// (a plain unit or a template's instance, not a bare template). The error says why not.
    pub fn parse(name: &str) -> Result<UnitName, String> {
        if name.is_empty() {
            return Err("a unit name must not be empty".to_string());
        }
        let full = match name.rsplit_once('.') {
            Some((_, suffix)) if UNIT_TYPES.contains(&suffix) => name.to_string(),
            _ => format!("{name}.service"),
        };
        let Some((prefix, _)) = full.rsplit_once('.') else {
            unreachable!("a unit name always has a suffix here");
        };
        if let Some(bad) = prefix.chars().find(|c| !valid_char(*c)) {
            return Err(format!(
                "`{name}` is not a valid unit name: {} is not allowed (systemd allows ASCII \
                 letters, digits and `:-_.\\@`; `systemd-escape` turns other text into a valid \
                 name)",
                describe(bad)
            ));
        }
        if prefix.is_empty() {
            return Err(format!(
                "`{name}` is not a valid unit name: it has nothing before its suffix"
            ));
        }
        if full.len() > MAX_LEN {
            return Err(format!(
                "`{name}` is not a valid unit name: `{full}` is longer than {MAX_LEN} characters"
            ));
        }
        if let Some((template, instance)) = prefix.split_once('@') {
            if template.is_empty() {
                return Err(format!(
                    "`{name}` is not a valid unit name: it must not start with `@`"
                ));
            }
            if instance.is_empty() {
                return Err(format!(
                    "`{name}` is a template, which cannot be started or enabled by itself: name \
                     an instance (`{template}@INSTANCE{}`)",
                    &full[prefix.len()..]
                ));
            }
        }
        Ok(UnitName(full))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The unit's type: `service`, `timer`, ...
    pub fn unit_type(&self) -> &str {
        self.0.rsplit_once('.').map_or("", |(_, t)| t)
    }

    /// The object path systemd serves this unit at when it has loaded it under this name
    /// (an alias is served at its unit's own path: ask `LoadUnit` for that).
    pub fn object_path(&self) -> String {
        format!("/org/freedesktop/systemd1/unit/{}", escape_label(&self.0))
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// systemd's `VALID_CHARS` plus `@`, the template/instance separator.
fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@')
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        '/' => "`/`".to_string(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

/// An object path element as systemd makes one (`sd_bus_path_encode`): ASCII letters, and
/// digits except in the first place, stay; every other byte becomes `_` and two lower-case hex
/// digits; the empty string is `_`.
pub fn escape_label(s: &str) -> String {
    if s.is_empty() {
        return "_".to_string();
    }
    let mut out = String::with_capacity(s.len() * 3);
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> String {
        UnitName::parse(name).map(|u| u.0).unwrap_or_else(|e| e)
    }

    #[test]
    fn a_bare_name_is_a_service() {
        assert_eq!(unit("purpleidea"), "purpleidea.service");
        assert_eq!(unit("sshd.service"), "sshd.service");
        assert_eq!(unit("backup.timer"), "backup.timer");
        assert_eq!(unit("tmp.mount"), "tmp.mount");
        assert_eq!(unit("multi-user.target"), "multi-user.target");
        // Not a unit type: part of the name.
        assert_eq!(unit("php8.2-fpm"), "php8.2-fpm.service");
        assert_eq!(unit("foo.bar"), "foo.bar.service");
        assert_eq!(unit("getty@tty1"), "getty@tty1.service");
        assert_eq!(unit("user@0.service"), "user@0.service");
        assert_eq!(
            unit(r"dev-disk-by\x2dlabel-x.device"),
            r"dev-disk-by\x2dlabel-x.device"
        );
        assert_eq!(unit("a:b_c"), "a:b_c.service");
        assert_eq!(UnitName::parse("x.socket").unwrap().unit_type(), "socket");
    }

    #[test]
    fn invalid_names_say_why() {
        for (name, why) in [
            ("", "a unit name must not be empty"),
            (
                "my service",
                "`my service` is not a valid unit name: a space is not allowed (systemd allows \
                 ASCII letters, digits and `:-_.\\@`; `systemd-escape` turns other text into a \
                 valid name)",
            ),
            (
                "../etc/passwd",
                "`../etc/passwd` is not a valid unit name: `/` is not allowed (systemd allows \
                 ASCII letters, digits and `:-_.\\@`; `systemd-escape` turns other text into a \
                 valid name)",
            ),
            (
                "café",
                "`café` is not a valid unit name: `é` is not allowed (systemd allows ASCII \
                 letters, digits and `:-_.\\@`; `systemd-escape` turns other text into a valid \
                 name)",
            ),
            (
                ".service",
                "`.service` is not a valid unit name: it has nothing before its suffix",
            ),
            (
                "@foo",
                "`@foo` is not a valid unit name: it must not start with `@`",
            ),
            (
                "getty@",
                "`getty@` is a template, which cannot be started or enabled by itself: name an \
                 instance (`getty@INSTANCE.service`)",
            ),
            (
                "getty@.service",
                "`getty@.service` is a template, which cannot be started or enabled by itself: \
                 name an instance (`getty@INSTANCE.service`)",
            ),
        ] {
            assert_eq!(unit(name), why, "{name:?}");
        }
        assert!(unit("a\tb").contains("the control character U+0009"));
        // 255 characters in all is the most systemd takes.
        let longest = "a".repeat(MAX_LEN - ".service".len());
        assert_eq!(unit(&longest), format!("{longest}.service"));
        let too_long = format!("{longest}b");
        assert!(
            unit(&too_long).ends_with("is longer than 255 characters"),
            "{}",
            unit(&too_long)
        );
    }

    #[test]
    fn object_paths_are_escaped_as_systemd_does() {
        let path = |n: &str| UnitName::parse(n).unwrap().object_path();
        assert_eq!(
            path("dbus"),
            "/org/freedesktop/systemd1/unit/dbus_2eservice"
        );
        assert_eq!(
            path("systemd-journald"),
            "/org/freedesktop/systemd1/unit/systemd_2djournald_2eservice"
        );
        assert_eq!(
            path("getty@tty1"),
            "/org/freedesktop/systemd1/unit/getty_40tty1_2eservice"
        );
        // A leading digit is escaped, later ones are not.
        assert_eq!(
            path("0day1"),
            "/org/freedesktop/systemd1/unit/_30day1_2eservice"
        );
        assert_eq!(escape_label(""), "_");
    }
}
