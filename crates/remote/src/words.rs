//! One spelling per variant for the enums that cross a process boundary as words (host states,
//! steps, cache use): `as_str` writes it, `FromStr` reads it back, and a word that names no
//! variant is an error, never a default.

/// A word that names no variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {word:?} (expected one of: {})", expected.join(", "))]
pub struct UnknownWord {
    /// What the word should have named ("host state", "step", "cache use").
    pub what: &'static str,
    pub word: String,
    pub expected: &'static [&'static str],
}

/// `as_str`, `ALL`, `WORDS` and `FromStr` for a fieldless enum, from one table of
/// `Variant => "word"`.
macro_rules! words {
    ($ty:ident, $what:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            /// Every variant's word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The variant's word on the wire (JSON events, reports, the summary).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $word),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::words::UnknownWord;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok($ty::$variant),)+
                    _ => Err($crate::words::UnknownWord {
                        what: $what,
                        word: s.to_string(),
                        expected: $ty::WORDS,
                    }),
                }
            }
        }
    };
}

pub(crate) use words;
