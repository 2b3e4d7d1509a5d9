//! The pure part of `line`: a file's bytes as lines, and the edits (a line, a block between
//! markers) made on them. Every line keeps its own terminator (`\n`, `\r\n`, or none for a last
//! line without one), so whatever an edit does not touch is given back byte for byte. Matching
//! (equality, regexes) sees a line without its terminator (and without the `\r` of a CRLF
//! line). Lines this adds end with `\n`. No IO here.

use regex::bytes::Regex;

/// One line: its bytes without the terminator, and the terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub body: Vec<u8>,
    pub end: &'static [u8],
}

impl Line {
    pub fn new(body: &[u8]) -> Line {
        Line {
            body: body.to_vec(),
            end: b"\n",
        }
    }
}

/// `data` cut into lines; [`join`] gives `data` back.
pub(crate) fn split(data: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..=i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let (body, end): (&[u8], &'static [u8]) = if let Some(b) = line.strip_suffix(b"\r\n") {
            (b, b"\r\n")
        } else if let Some(b) = line.strip_suffix(b"\n") {
            (b, b"\n")
        } else {
            (line, b"")
        };
        lines.push(Line {
            body: body.to_vec(),
            end,
        });
        rest = next;
    }
    lines
}

pub(crate) fn join(lines: &[Line]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.body.len() + 2).sum());
    for l in lines {
        out.extend_from_slice(&l.body);
        out.extend_from_slice(l.end);
    }
    out
}

/// Where new lines go when nothing there is replaced.
#[derive(Debug, Clone)]
pub(crate) enum Anchor {
    /// At the end of the file (the default).
    Eof,
    /// At the beginning of the file.
    Bof,
    /// After the last line the regex matches (at the end when none does).
    After(Regex),
    /// Before the last line the regex matches (at the end when none does).
    Before(Regex),
}

impl Anchor {
    fn index(&self, lines: &[Line]) -> usize {
        let last = |re: &Regex| lines.iter().rposition(|l| re.is_match(&l.body));
        match self {
            Anchor::Eof => lines.len(),
            Anchor::Bof => 0,
            Anchor::After(re) => last(re).map_or(lines.len(), |i| i + 1),
            Anchor::Before(re) => last(re).unwrap_or(lines.len()),
        }
    }
}

/// Insert `new` at `at`. Appending after a last line without a terminator gives it one.
fn insert(lines: &mut Vec<Line>, at: usize, new: Vec<Line>) {
    if at == lines.len()
        && let Some(last) = lines.last_mut()
        && last.end.is_empty()
    {
        last.end = b"\n";
    }
    lines.splice(at..at, new);
}

/// `line` present: the last line `regexp` matches becomes `line` (keeping its terminator);
/// otherwise, unless the line is already there, it is inserted at `anchor`.
/// `None`: nothing to change.
pub(crate) fn ensure_line(
    data: &[u8],
    line: &[u8],
    regexp: Option<&Regex>,
    anchor: &Anchor,
) -> Option<Vec<u8>> {
    let mut lines = split(data);
    if let Some(re) = regexp
        && let Some(i) = lines.iter().rposition(|l| re.is_match(&l.body))
    {
        if lines[i].body == line {
            return None;
        }
        lines[i].body = line.to_vec();
        return Some(join(&lines));
    }
    if lines.iter().any(|l| l.body == line) {
        return None;
    }
    let at = anchor.index(&lines);
    insert(&mut lines, at, vec![Line::new(line)]);
    Some(join(&lines))
}

/// `line` absent: every line `regexp` matches (without one: every line equal to `line`) goes.
pub(crate) fn remove_lines(data: &[u8], line: &[u8], regexp: Option<&Regex>) -> Option<Vec<u8>> {
    let mut lines = split(data);
    let before = lines.len();
    lines.retain(|l| match regexp {
        Some(re) => !re.is_match(&l.body),
        None => l.body != line,
    });
    (lines.len() != before).then(|| join(&lines))
}

/// The lines of a managed block (markers included), found by its markers.
fn find_block(lines: &[Line], begin: &[u8], end: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let b = lines.iter().rposition(|l| l.body == begin);
    let e = lines.iter().rposition(|l| l.body == end);
    match (b, e) {
        (None, None) => Ok(None),
        (Some(b), Some(e)) if b < e => Ok(Some((b, e))),
        (b, e) => {
            let at =
                |i: Option<usize>| i.map_or("missing".to_string(), |i| format!("line {}", i + 1));
            Err(format!(
                "the markers of the block are broken (`{}` {}, `{}` {}): mend the file by hand",
                String::from_utf8_lossy(begin),
                at(b),
                String::from_utf8_lossy(end),
                at(e)
            ))
        }
    }
}

/// The block present: between `begin` and `end` markers, replacing the block that is there,
/// else inserted at `anchor`.
pub(crate) fn ensure_block(
    data: &[u8],
    begin: &[u8],
    end: &[u8],
    block: &[String],
    anchor: &Anchor,
) -> Result<Option<Vec<u8>>, String> {
    let mut lines = split(data);
    let mut wanted = vec![Line::new(begin)];
    wanted.extend(block.iter().map(|l| Line::new(l.as_bytes())));
    wanted.push(Line::new(end));
    match find_block(&lines, begin, end)? {
        Some((b, e)) => {
            let same = e - b + 1 == wanted.len()
                && lines[b..=e]
                    .iter()
                    .zip(&wanted)
                    .all(|(a, w)| a.body == w.body);
            if same {
                return Ok(None);
            }
            // The END line keeps its terminator (a file may end without one).
            if let Some(last) = wanted.last_mut() {
                last.end = lines[e].end;
            }
            lines.splice(b..=e, wanted);
        }
        None => {
            let at = anchor.index(&lines);
            insert(&mut lines, at, wanted);
        }
    }
    Ok(Some(join(&lines)))
}

/// The block absent: its lines, markers included, go.
pub(crate) fn remove_block(
    data: &[u8],
    begin: &[u8],
    end: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let mut lines = split(data);
    Ok(match find_block(&lines, begin, end)? {
        None => None,
        Some((b, e)) => {
            lines.drain(b..=e);
            Some(join(&lines))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    fn text(v: Option<Vec<u8>>) -> Option<String> {
        v.map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn split_and_join_give_the_bytes_back() {
        for data in [
            &b""[..],
            b"a",
            b"a\n",
            b"a\r\nb\n",
            b"\n\n",
            b"x\r\n\r\ny",
            b"\xff\xfe\n",
        ] {
            assert_eq!(join(&split(data)), data);
        }
        let lines = split(b"a\r\nb");
        assert_eq!(lines[0].body, b"a");
        assert_eq!(lines[0].end, b"\r\n");
        assert_eq!(lines[1].end, b"");
    }

    #[test]
    fn a_regexp_replaces_the_last_line_it_matches_keeping_the_rest() {
        let data = b"#PermitRootLogin yes\r\nPort 22\nPermitRootLogin yes\nX 1";
        let r = re("^#?PermitRootLogin");
        assert_eq!(
            text(ensure_line(
                data,
                b"PermitRootLogin no",
                Some(&r),
                &Anchor::Eof
            ))
            .unwrap(),
            "#PermitRootLogin yes\r\nPort 22\nPermitRootLogin no\nX 1"
        );
        // Already so: nothing to do.
        let done = b"PermitRootLogin no\n";
        assert_eq!(
            ensure_line(done, b"PermitRootLogin no", Some(&r), &Anchor::Eof),
            None
        );
        // A CRLF line keeps its terminator when replaced.
        assert_eq!(
            text(ensure_line(
                b"a=1\r\nb=2\r\n",
                b"a=3",
                Some(&re("^a=")),
                &Anchor::Eof
            ))
            .unwrap(),
            "a=3\r\nb=2\r\n"
        );
    }

    #[test]
    fn a_line_not_there_is_inserted_at_its_anchor() {
        let data = b"[main]\nx=1\n[other]\ny=2";
        let add = |anchor: Anchor| text(ensure_line(data, b"new", None, &anchor)).unwrap();
        assert_eq!(add(Anchor::Eof), "[main]\nx=1\n[other]\ny=2\nnew\n");
        assert_eq!(add(Anchor::Bof), "new\n[main]\nx=1\n[other]\ny=2");
        assert_eq!(
            add(Anchor::After(re(r"^\[main\]"))),
            "[main]\nnew\nx=1\n[other]\ny=2"
        );
        assert_eq!(
            add(Anchor::Before(re(r"^\["))),
            "[main]\nx=1\nnew\n[other]\ny=2"
        );
        // No match: the end (the last line without a terminator gets one).
        assert_eq!(
            add(Anchor::After(re("^nothing"))),
            "[main]\nx=1\n[other]\ny=2\nnew\n"
        );
        assert_eq!(
            text(ensure_line(b"", b"new", None, &Anchor::Eof)).unwrap(),
            "new\n"
        );
        // Present anywhere (also as a CRLF line): nothing to do.
        assert_eq!(
            ensure_line(b"a\r\nnew\r\n", b"new", None, &Anchor::Bof),
            None
        );
        // A regexp that matches nothing while the line is there: nothing to do either.
        assert_eq!(
            ensure_line(b"new\n", b"new", Some(&re("^old")), &Anchor::Eof),
            None
        );
    }

    #[test]
    fn absent_removes_every_matching_line() {
        let data = b"a\nb\r\na\nc";
        assert_eq!(text(remove_lines(data, b"a", None)).unwrap(), "b\r\nc");
        assert_eq!(
            text(remove_lines(data, b"", Some(&re("^[ab]")))).unwrap(),
            "c"
        );
        assert_eq!(remove_lines(data, b"zz", None), None);
    }

    #[test]
    fn a_block_is_inserted_replaced_and_removed_between_its_markers() {
        let (b, e) = (&b"# BEGIN x"[..], &b"# END x"[..]);
        let block = ["one".to_string(), "two".to_string()];
        let data = b"keep\r\nlast";
        let with = text(ensure_block(data, b, e, &block, &Anchor::Eof).unwrap()).unwrap();
        assert_eq!(with, "keep\r\nlast\n# BEGIN x\none\ntwo\n# END x\n");
        assert_eq!(
            ensure_block(with.as_bytes(), b, e, &block, &Anchor::Eof),
            Ok(None)
        );
        let changed = text(
            ensure_block(with.as_bytes(), b, e, &["three".to_string()], &Anchor::Bof).unwrap(),
        )
        .unwrap();
        assert_eq!(changed, "keep\r\nlast\n# BEGIN x\nthree\n# END x\n");
        assert_eq!(
            text(remove_block(changed.as_bytes(), b, e).unwrap()).unwrap(),
            "keep\r\nlast\n"
        );
        assert_eq!(remove_block(b"keep\n", b, e), Ok(None));
        // The END line keeps a missing final newline.
        let open_end = b"# BEGIN x\nold\n# END x";
        assert_eq!(
            text(ensure_block(open_end, b, e, &block, &Anchor::Eof).unwrap()).unwrap(),
            "# BEGIN x\none\ntwo\n# END x"
        );
        // Inserted after the anchor.
        assert_eq!(
            text(ensure_block(b"a\nb\n", b, e, &block, &Anchor::After(re("^a"))).unwrap()).unwrap(),
            "a\n# BEGIN x\none\ntwo\n# END x\nb\n"
        );
    }

    #[test]
    fn broken_markers_are_an_error_not_a_guess() {
        let (b, e) = (&b"# BEGIN x"[..], &b"# END x"[..]);
        let err = ensure_block(b"# END x\n# BEGIN x\n", b, e, &[], &Anchor::Eof).unwrap_err();
        assert_eq!(
            err,
            "the markers of the block are broken (`# BEGIN x` line 2, `# END x` line 1): mend the file by hand"
        );
        let err = remove_block(b"# BEGIN x\n", b, e).unwrap_err();
        assert!(err.contains("`# END x` missing"), "{err}");
    }
}
