//! Text that goes to ClickHouse and comes back: string literals in SQL, and fields of the
//! `TabSeparated` format.
//!
//! ClickHouse 18.16 has no server-side query parameters, so every string a query names (an
//! organization, a customer, a property key, a filter value) is pasted into the SQL as a
//! literal made by [`literal`], and every number is formatted from a Rust integer or decimal,
//! never from text a client sent. Inserts carry their rows in the body, as `TabSeparated`
//! fields made by [`tsv_field`]; answers come back in the same format and are read with
//! [`tsv_rows`].
//!
//! Both escapings are ClickHouse's backslash escapes. A literal escapes the backslash, the
//! single quote and every control character, so it never spans lines, never ends early and
//! never holds a byte the parser treats specially; everything else (all of Unicode) passes as
//! UTF-8.

/// `text` as a ClickHouse string literal, quotes included.
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A comma-separated list of literals, for `IN (...)` and array constructors.
pub fn literals<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    texts.into_iter().map(literal).collect::<Vec<_>>().join(", ")
}

/// Appends `text` as one `TabSeparated` field (no tab, no newline left unescaped).
pub fn tsv_field(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
}

/// A field of an answer that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable TabSeparated answer: {0}")]
pub struct TsvError(pub String);

/// One field of a `TabSeparated` answer, unescaped; `None` for `\N` (NULL).
pub fn tsv_unescape(field: &str) -> Result<Option<String>, TsvError> {
    if field == "\\N" {
        return Ok(None);
    }
    if !field.contains('\\') {
        return Ok(Some(field.to_owned()));
    }
    let bytes = field.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&next) = bytes.get(i + 1) else {
            return Err(TsvError("a field ends with a backslash".into()));
        };
        i += 2;
        out.push(match next {
            b'\\' => b'\\',
            b't' => b'\t',
            b'n' => b'\n',
            b'r' => b'\r',
            b'0' => 0,
            b'b' => 8,
            b'f' => 12,
            b'a' => 7,
            b'v' => 11,
            b'x' => {
                let hex = field
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| TsvError("a bad \\x escape".into()))?;
                i += 2;
                hex
            }
            // ClickHouse escapes quotes too; any other escaped character stands for itself.
            other => other,
        });
    }
    String::from_utf8(out).map(Some).map_err(|_| TsvError("a field is not UTF-8".into()))
}

/// The rows of a `TabSeparated` answer, each field unescaped; every row must have `columns`
/// fields.
pub fn tsv_rows(body: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>, TsvError> {
    let mut rows = Vec::new();
    for line in body.split('\n') {
        if line.is_empty() && columns > 0 {
            // The answer ends with a newline; a one-column empty string would be an empty
            // line too, so callers never ask for a lone string column that may be empty.
            continue;
        }
        let fields: Vec<Option<String>> =
            line.split('\t').map(tsv_unescape).collect::<Result<_, _>>()?;
        if fields.len() != columns {
            return Err(TsvError(format!("{} fields where {columns} were expected", fields.len())));
        }
        rows.push(fields);
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_what_would_end_or_break_them() {
        let cases = [
            ("plain", "'plain'"),
            ("", "''"),
            ("o'clock", r"'o\'clock'"),
            (r"back\slash", r"'back\\slash'"),
            (r"\'", r"'\\\''"),
            ("two\nlines", r"'two\nlines'"),
            ("tab\there", r"'tab\there'"),
            ("nul\0byte", r"'nul\0byte'"),
            ("bell\u{7}", r"'bell\x07'"),
            ("ü ✓ 🙂", "'ü ✓ 🙂'"),
            ("'; DROP TABLE events; --", r"'\'; DROP TABLE events; --'"),
        ];
        for (text, expected) in cases {
            assert_eq!(literal(text), expected, "{text:?}");
        }
        assert_eq!(literals(["a", "b'"]), r"'a', 'b\''");
    }

    #[test]
    fn tsv_fields_round_trip() {
        let texts = [
            "plain",
            "",
            "tab\tnew\nline\rcarriage",
            r"back\slash \N \t",
            "nul\0 \u{8} \u{c}",
            "ü ✓ 🙂 \"quoted\" 'single'",
            "\\",
        ];
        for text in texts {
            let mut field = String::new();
            tsv_field(text, &mut field);
            assert!(!field.contains('\t') && !field.contains('\n'), "{field:?}");
            assert_eq!(tsv_unescape(&field).unwrap().as_deref(), Some(text), "{text:?}");
        }
        assert_eq!(tsv_unescape("\\N").unwrap(), None, "NULL");
        assert_eq!(tsv_unescape(r"o\'clock").unwrap().as_deref(), Some("o'clock"));
        assert_eq!(tsv_unescape(r"\x41").unwrap().as_deref(), Some("A"));
        assert!(tsv_unescape("trailing\\").is_err());
        assert!(tsv_unescape(r"\xZZ").is_err());
    }

    #[test]
    fn tsv_rows_check_their_width() {
        let rows = tsv_rows("a\t\\N\nb\\tc\td\n", 2).unwrap();
        assert_eq!(
            rows,
            [vec![Some("a".into()), None], vec![Some("b\tc".into()), Some("d".into())]]
        );
        assert!(tsv_rows("a\tb\tc\n", 2).is_err());
        assert_eq!(tsv_rows("", 3).unwrap(), Vec::<Vec<Option<String>>>::new());
    }
}
