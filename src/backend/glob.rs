//! Redis's glob rules for SCAN's MATCH, for the memory store: `*` any run of bytes, `?` one
//! byte, `[abc]`, `[^a]` and `[a-z]` one byte of a set, and `\` making the next byte literal.
//! Bytes, not characters, as Redis matches them.

enum Token {
    Star,
    AnyByte,
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
    Byte(u8),
}

pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    pub fn new(pattern: &str) -> Pattern {
        let bytes = pattern.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let token = match bytes[i] {
                b'*' => {
                    if !matches!(tokens.last(), Some(Token::Star)) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                    continue;
                }
                b'?' => Token::AnyByte,
                b'\\' if i + 1 < bytes.len() => {
                    i += 1;
                    Token::Byte(bytes[i])
                }
                b'[' => {
                    i += 1;
                    let negated = bytes.get(i) == Some(&b'^');
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    // An unclosed class ends with the pattern, as in Redis.
                    while i < bytes.len() && bytes[i] != b']' {
                        let low = if bytes[i] == b'\\' && i + 1 < bytes.len() {
                            i += 1;
                            bytes[i]
                        } else {
                            bytes[i]
                        };
                        if bytes.get(i + 1) == Some(&b'-') && i + 2 < bytes.len() {
                            let high = bytes[i + 2];
                            ranges.push((low.min(high), low.max(high)));
                            i += 3;
                        } else {
                            ranges.push((low, low));
                            i += 1;
                        }
                    }
                    Token::Class { negated, ranges }
                }
                byte => Token::Byte(byte),
            };
            tokens.push(token);
            i += 1;
        }
        Pattern { tokens }
    }

    /// The bytes every matching text starts with.
    pub fn literal_start(&self) -> Vec<u8> {
        self.tokens
            .iter()
            .map_while(|token| match token {
                Token::Byte(byte) => Some(*byte),
                _ => None,
            })
            .collect()
    }

    pub fn matches(&self, text: &[u8]) -> bool {
        let (mut t, mut p) = (0, 0);
        // Where to go on from after the last `*`: every token matches exactly one byte but
        // `*`, so resuming from the last star with one more byte taken by it is enough.
        let mut resume: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    resume = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Some(token) if token.matches(text[t]) => {
                    t += 1;
                    p += 1;
                    continue;
                }
                _ => {}
            }
            match resume {
                Some((after_star, taken)) => {
                    resume = Some((after_star, taken + 1));
                    p = after_star;
                    t = taken + 1;
                }
                None => return false,
            }
        }
        self.tokens[p..]
            .iter()
            .all(|token| matches!(token, Token::Star))
    }
}

impl Token {
    fn matches(&self, byte: u8) -> bool {
        match self {
            Token::Star | Token::AnyByte => true,
            Token::Byte(expected) => *expected == byte,
            Token::Class { negated, ranges } => {
                ranges
                    .iter()
                    .any(|(low, high)| (*low..=*high).contains(&byte))
                    != *negated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn follows_redis_glob_rules() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:1", true),
            ("user:*", "users:1", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("h[ae]llo", "hello", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("[\\]]", "]", true),
            ("*a*b*c", "xxaxxbxxc", true),
            ("*a*b*c", "xxaxxbxx", false),
            ("a*", "b", false),
            ("**x", "x", true),
            ("[abc", "b", true),
            ("", "", true),
            ("", "a", false),
            ("é?", "é!", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(text.as_bytes()),
                *expected,
                "{pattern} ~ {text}"
            );
        }
        assert_eq!(Pattern::new("user\\*:*").literal_start(), b"user*:");
    }
}
