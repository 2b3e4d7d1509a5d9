//! Split a command line into argv the way a POSIX shell would for plain words and quotes
//! (no expansion of variables, globs or substitutions). Used by `exec` when no `shell` is set.
//! Pure: never runs anything.

/// Why a command line could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unterminated {0} quote")]
    Unterminated(&'static str),
    #[error("trailing backslash")]
    TrailingBackslash,
}

/// Split `line` into words: whitespace separates, `'...'` is literal, `"..."` allows `\"`,
/// `\\`, `\$` and `` \` `` escapes, and a backslash outside quotes escapes the next character.
pub fn split(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists even when empty (`''`), so track it separately from its text.
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::Unterminated("single")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(SplitError::Unterminated("double")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(SplitError::Unterminated("double")),
                    }
                }
            }
            '\\' => match chars.next() {
                // A backslash-newline continues the line.
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(SplitError::TrailingBackslash),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split("echo hello  world").unwrap(),
            ["echo", "hello", "world"]
        );
        assert_eq!(
            split(r#"printf '%s\n' "a b" c\ d ''"#).unwrap(),
            ["printf", r"%s\n", "a b", "c d", ""]
        );
        assert_eq!(
            split(r#"echo "say \"hi\" \$HOME \n""#).unwrap(),
            ["echo", r#"say "hi" $HOME \n"#]
        );
        assert_eq!(split("a'b'\"c\"d").unwrap(), ["abcd"]);
        assert_eq!(split("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn reports_broken_quoting() {
        assert_eq!(split("echo 'oops"), Err(SplitError::Unterminated("single")));
        assert_eq!(
            split("echo \"oops"),
            Err(SplitError::Unterminated("double"))
        );
        assert_eq!(split("echo oops\\"), Err(SplitError::TrailingBackslash));
    }
}
