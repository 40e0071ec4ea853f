//! Replies of many values (`mget`, stream entries) cross to JS as one JSON text, which JS parses
//! once: one string and one `JSON.parse` instead of one of each per value. A stored value goes
//! in as it is when it is JSON, or as a JSON string of its text when it is not, so JS gets
//! what parsing it alone would give: the parsed value, or the raw string.
//!
//! `is_json` follows `JSON.parse`'s grammar exactly (ECMA-404: no comments, no trailing commas,
//! whitespace only space, tab, CR and LF), and it is iterative, as V8's parser is, so no nesting
//! depth is refused that `JSON.parse` would take.

/// Whether `JSON.parse(text)` would succeed.
pub fn is_json(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut at = skip_space(bytes, 0);
    // The arrays and objects open around `at`: true for an object.
    let mut open: Vec<bool> = Vec::new();
    loop {
        // A value starts at `at`.
        match start_value(bytes, at) {
            None => return false,
            Some(Start::Whole(end)) => at = skip_space(bytes, end),
            Some(Start::Opened { object, inside }) => {
                open.push(object);
                at = inside;
                continue;
            }
        }
        // After a value: close what is complete, or go on to the next member.
        loop {
            let Some(&in_object) = open.last() else {
                return at == bytes.len();
            };
            match (bytes.get(at), in_object) {
                (Some(b','), false) => {
                    at = skip_space(bytes, at + 1);
                    break;
                }
                (Some(b','), true) => match member_key(bytes, skip_space(bytes, at + 1)) {
                    Some(after_key) => {
                        at = after_key;
                        break;
                    }
                    None => return false,
                },
                (Some(b']'), false) | (Some(b'}'), true) => {
                    open.pop();
                    at = skip_space(bytes, at + 1);
                }
                _ => return false,
            }
        }
    }
}

enum Start {
    /// A value that ends here (a scalar, or an empty array or object).
    Whole(usize),
    /// An array or object with members, whose first value starts at `inside`.
    Opened { object: bool, inside: usize },
}

fn start_value(bytes: &[u8], at: usize) -> Option<Start> {
    let whole = |end: Option<usize>| end.map(Start::Whole);
    match *bytes.get(at)? {
        b'"' => whole(string(bytes, at)),
        b'[' => {
            let inside = skip_space(bytes, at + 1);
            Some(if bytes.get(inside) == Some(&b']') {
                Start::Whole(inside + 1)
            } else {
                Start::Opened {
                    object: false,
                    inside,
                }
            })
        }
        b'{' => {
            let inside = skip_space(bytes, at + 1);
            if bytes.get(inside) == Some(&b'}') {
                return Some(Start::Whole(inside + 1));
            }
            Some(Start::Opened {
                object: true,
                inside: member_key(bytes, inside)?,
            })
        }
        b't' => whole(literal(bytes, at, b"true")),
        b'f' => whole(literal(bytes, at, b"false")),
        b'n' => whole(literal(bytes, at, b"null")),
        _ => whole(number(bytes, at)),
    }
}

/// `"key" :` and the space after it.
fn member_key(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let after = skip_space(bytes, string(bytes, at)?);
    (bytes.get(after) == Some(&b':')).then(|| skip_space(bytes, after + 1))
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    bytes[at..].starts_with(word).then_some(at + word.len())
}

fn digits(bytes: &[u8], at: usize) -> usize {
    at + bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

fn number(bytes: &[u8], mut at: usize) -> Option<usize> {
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    match bytes.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at = digits(bytes, at),
        _ => return None,
    }
    if bytes.get(at) == Some(&b'.') {
        let end = digits(bytes, at + 1);
        if end == at + 1 {
            return None;
        }
        at = end;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let end = digits(bytes, at);
        if end == at {
            return None;
        }
        at = end;
    }
    Some(at)
}

/// A string starting at the quote at `at`; returns the index after its closing quote.
fn string(bytes: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    loop {
        match *bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => match *bytes.get(at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                b'u' => {
                    let hex = bytes.get(at + 2..at + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    at += 6;
                }
                _ => return None,
            },
            0..=0x1f => return None,
            _ => at += 1,
        }
    }
}

/// Appends `text` as a JSON string.
pub fn push_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain_from = 0;
    for (i, byte) in text.bytes().enumerate() {
        if !matches!(byte, b'"' | b'\\' | 0..=0x1f) {
            continue;
        }
        out.push_str(&text[plain_from..i]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            _ => {
                out.push_str("\\u00");
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 0xf)] as char);
            }
        }
        plain_from = i + 1;
    }
    out.push_str(&text[plain_from..]);
    out.push('"');
}

/// Appends a stored value as JS should get it: as it is if it is JSON, else as a string.
pub fn push_value(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("null"),
        Some(text) if is_json(text) => out.push_str(text),
        Some(text) => push_string(out, text),
    }
}

/// Appends a stream entry as `{"id":..., "message":...}`: the message is the `data` field when
/// it is JSON (the last `data`, as when fields become an object), else the fields as an object.
pub fn push_entry<'a>(
    out: &mut String,
    id: &str,
    fields: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) {
    out.push_str("{\"id\":");
    push_string(out, id);
    out.push_str(",\"message\":");
    let data = fields.clone().filter(|(name, _)| *name == "data").last();
    match data {
        Some((_, data)) if !data.is_empty() && is_json(data) => out.push_str(data),
        _ => {
            out.push('{');
            // As the fields of @igniter-js/store's own adapter: set one by one on a plain
            // object, where `__proto__` sets nothing.
            let fields = fields.filter(|(name, _)| *name != "__proto__");
            for (i, (name, value)) in fields.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(out, name);
                out.push(':');
                push_string(out, value);
            }
            out.push('}');
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_json_parse_accepts() {
        for text in [
            "0",
            "-0",
            "1.5e+3",
            "-12.25E-2",
            " true ",
            "false",
            "null",
            "\"\"",
            "\"a\\u00e9\\n\\/\"",
            "[]",
            "[ ]",
            "{}",
            "{ }",
            "[1,[2,[3,{}]],{\"a\":[{}]}]",
            "{\"a\":1,\"b\":{\"c\":null}}",
            "\"\\ud800\"",
            "\t\r\n[1]\n",
            "\"é 😀\"",
        ] {
            assert!(is_json(text), "{text}");
        }
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(is_json(&deep));
    }

    #[test]
    fn refuses_what_json_parse_refuses() {
        for text in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "--1",
            "NaN",
            "Infinity",
            "tru",
            "nulls",
            "'a'",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\u{1}\"",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{a:1}",
            "{\"a\" 1}",
            "[1 2]",
            "1 2",
            "[",
            "]",
            "{\"a\":}",
            "\u{a0}1",
            "[1]]",
            "{\"a\":1}}",
        ] {
            assert!(!is_json(text), "{text:?}");
        }
    }

    #[test]
    fn strings_and_entries_come_out_as_json() {
        let mut out = String::new();
        push_string(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\u000a\\u0001é\"");
        out.clear();
        push_entry(&mut out, "1-0", [("data", "{\"n\":1}")].into_iter());
        assert_eq!(out, "{\"id\":\"1-0\",\"message\":{\"n\":1}}");
        out.clear();
        push_entry(
            &mut out,
            "1-1",
            [("data", "not json"), ("x", "y")].into_iter(),
        );
        assert_eq!(
            out,
            "{\"id\":\"1-1\",\"message\":{\"data\":\"not json\",\"x\":\"y\"}}"
        );
    }
}
