//! Debian version strings (`[epoch:]upstream[-revision]`): the checks dpkg makes when it parses
//! one, and dpkg's ordering (`dpkg --compare-versions`), so that `newest` and a pinned version
//! are judged as apt and dpkg judge them. Pure.

use std::cmp::Ordering;

/// Whether `v` is a version dpkg accepts (the checks of dpkg's `parseversion`, with a version
/// that does not start with a digit refused outright, as dpkg does for new packages).
pub(crate) fn check(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("the version is empty".into());
    }
    if v.chars().any(char::is_whitespace) {
        return Err(format!("version `{v}` contains spaces"));
    }
    let (epoch, rest) = match v.split_once(':') {
        Some((epoch, rest)) => (Some(epoch), rest),
        None => (None, v),
    };
    if let Some(epoch) = epoch {
        if epoch.is_empty() {
            return Err(format!("version `{v}`: the epoch before `:` is empty"));
        }
        if !epoch.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "version `{v}`: the epoch `{epoch}` is not a number"
            ));
        }
        if epoch.parse::<i32>().is_err() {
            return Err(format!("version `{v}`: the epoch `{epoch}` is too big"));
        }
    }
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((upstream, revision)) => (upstream, Some(revision)),
        None => (rest, None),
    };
    if upstream.is_empty() {
        return Err(format!("version `{v}`: the upstream version is empty"));
    }
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "version `{v}` does not start with a digit{}",
            if epoch.is_some() {
                " after the epoch"
            } else {
                ""
            }
        ));
    }
    if let Some(bad) = upstream
        .chars()
        .find(|&c| !c.is_ascii_alphanumeric() && !".-+~:".contains(c))
    {
        return Err(format!(
            "version `{v}`: `{bad}` is not allowed in a version"
        ));
    }
    if let Some(revision) = revision {
        if revision.is_empty() {
            return Err(format!("version `{v}`: the revision after `-` is empty"));
        }
        if let Some(bad) = revision
            .chars()
            .find(|&c| !c.is_ascii_alphanumeric() && !".+~".contains(c))
        {
            return Err(format!(
                "version `{v}`: `{bad}` is not allowed in a revision"
            ));
        }
    }
    Ok(())
}

/// dpkg's order of two versions. Lenient, as dpkg is with what its database holds: a missing
/// or unreadable epoch is 0.
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a.trim());
    let (eb, ub, rb) = split(b.trim());
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// Epoch, upstream version and revision (empty when there is none).
fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) => (e.parse().unwrap_or(0), rest),
        None => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// How a character sorts in the non-digit parts: `~` before everything, even the end of the
/// string; the end and digits next; letters; then everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's comparison of one part: alternately a run of non-digits (compared character by
/// character with `order`) and a run of digits (compared as numbers).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each pair as `dpkg --compare-versions` orders it (checked against dpkg 1.21).
    const ORDERED: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Ordering::Equal),
        ("1.0", "1.0-0", Ordering::Equal),
        ("0:1.0", "1.0", Ordering::Equal),
        ("1.0-1", "1.0-01", Ordering::Equal),
        ("1.0", "1.0-1", Ordering::Less),
        ("1.0~rc1", "1.0", Ordering::Less),
        ("1.0~~", "1.0~~a", Ordering::Less),
        ("1.0~~a", "1.0~", Ordering::Less),
        ("1.0~", "1.0", Ordering::Less),
        ("1.0", "1.0a", Ordering::Less),
        ("1.0a", "1.0+", Ordering::Less),
        ("1.0", "1.0+b1", Ordering::Less),
        ("1.0.1", "1.0", Ordering::Greater),
        ("1.9", "1.10", Ordering::Less),
        ("1.010", "1.9", Ordering::Greater),
        ("1:0.1", "2.0", Ordering::Greater),
        ("10:1", "9:2", Ordering::Greater),
        ("2.0~beta-3", "2.0-1", Ordering::Less),
        ("1.2-3", "1.2-3ubuntu1", Ordering::Less),
        ("1.2-3+deb12u1", "1.2-3", Ordering::Greater),
        ("2.36-9+deb12u4", "2.36-9+deb12u10", Ordering::Less),
        ("1.0-1-1", "1.0-1", Ordering::Greater),
        ("a", "b", Ordering::Less),
        ("1.0.", "1.0", Ordering::Greater),
    ];

    #[test]
    fn versions_order_as_dpkg_orders_them() {
        for &(a, b, want) in ORDERED {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn version_checks_say_what_is_wrong() {
        for good in [
            "1.0",
            "1:2.3-4",
            "2.36-9+deb12u4",
            "1.0~rc1+dfsg-1~bpo12+1",
            "0",
            "1.0-a.b",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "the version is empty"),
            ("1 .0", "version `1 .0` contains spaces"),
            (":1.0", "version `:1.0`: the epoch before `:` is empty"),
            ("a:1.0", "version `a:1.0`: the epoch `a` is not a number"),
            (
                "99999999999:1",
                "version `99999999999:1`: the epoch `99999999999` is too big",
            ),
            ("-1", "version `-1`: the upstream version is empty"),
            ("instaled", "version `instaled` does not start with a digit"),
            (
                "1:x",
                "version `1:x` does not start with a digit after the epoch",
            ),
            ("1.0_2", "version `1.0_2`: `_` is not allowed in a version"),
            ("1.0-", "version `1.0-`: the revision after `-` is empty"),
            (
                "1:1.0-a:b",
                "version `1:1.0-a:b`: `:` is not allowed in a revision",
            ),
        ] {
            assert_eq!(check(bad).unwrap_err(), why, "{bad}");
        }
    }
}
