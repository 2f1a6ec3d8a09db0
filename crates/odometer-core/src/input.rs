//! Reading untrusted JSON objects into typed values while collecting every problem.
//!
//! Serde stops at the first error and loses the field path; inputs from clients go through
//! [`ObjectReader`] instead, which reads member by member, records a [`Problem`] for each
//! missing, mistyped or unknown member, and lets validation carry on.

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::problem::{index, join, Problems};

/// The JSON type of a value, as messages name it.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads the members of one JSON object, remembering which were read.
#[derive(Debug)]
pub struct ObjectReader<'a> {
    path: String,
    map: &'a Map<String, Value>,
    read: Vec<&'a str>,
}

impl<'a> ObjectReader<'a> {
    /// A reader for `value` at `path`; `None` (with a problem recorded) when it is not an object.
    pub fn new(path: &str, value: &'a Value, problems: &mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self { path: path.to_owned(), map, read: Vec::new() }),
            other => {
                problems.push(
                    path,
                    "invalid_type",
                    format!("expected an object, got {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The member, if present and not null.
    pub fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        self.read.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value),
        }
    }

    /// Reports each of `members` that is present (even as null) as `read_only`: what the
    /// server assigns cannot be written.
    pub fn refuse_read_only(&mut self, members: &[&'a str], problems: &mut Problems) {
        for &member in members {
            if self.has(member) {
                self.get(member);
                problems.push(
                    self.path(member),
                    "read_only",
                    "is set by odometer and cannot be written",
                );
            }
        }
    }

    /// Whether the member is present at all (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Whether the member is present and not null.
    pub fn has_value(&self, key: &str) -> bool {
        !matches!(self.map.get(key), None | Some(Value::Null))
    }

    /// A required string member, 1 to `max_chars` characters.
    pub fn required_string(
        &mut self,
        key: &'a str,
        max_chars: usize,
        problems: &mut Problems,
    ) -> Option<String> {
        let path = self.path(key);
        match self.get(key) {
            None => {
                problems.push(path, "missing_field", "is required");
                None
            }
            Some(value) => string_value(&path, value, max_chars, problems),
        }
    }

    /// An optional string member (absent or null is `None`), 1 to `max_chars` characters.
    pub fn optional_string(
        &mut self,
        key: &'a str,
        max_chars: usize,
        problems: &mut Problems,
    ) -> Option<String> {
        let path = self.path(key);
        self.get(key).and_then(|value| string_value(&path, value, max_chars, problems))
    }

    /// An optional boolean member; absent or null is `default`.
    pub fn bool_or(&mut self, key: &'a str, default: bool, problems: &mut Problems) -> bool {
        let path = self.path(key);
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                problems.push(
                    path,
                    "invalid_type",
                    format!("expected a boolean, got {}", type_name(other)),
                );
                default
            }
        }
    }

    /// An optional array member; absent or null is an empty slice.
    pub fn array(&mut self, key: &'a str, problems: &mut Problems) -> &'a [Value] {
        let path = self.path(key);
        match self.get(key) {
            None => &[],
            Some(Value::Array(items)) => items,
            Some(other) => {
                problems.push(
                    path,
                    "invalid_type",
                    format!("expected an array, got {}", type_name(other)),
                );
                &[]
            }
        }
    }

    /// Records an `unknown_field` problem for every member that was never read.
    pub fn finish(self, problems: &mut Problems) {
        for key in self.map.keys() {
            if !self.read.contains(&key.as_str()) {
                problems.push(join(&self.path, key), "unknown_field", "is not a known field");
            }
        }
    }
}

/// A string of 1 to `max_chars` characters without control characters.
pub fn string_value(
    path: &str,
    value: &Value,
    max_chars: usize,
    problems: &mut Problems,
) -> Option<String> {
    let Value::String(text) = value else {
        problems.push(path, "invalid_type", format!("expected a string, got {}", type_name(value)));
        return None;
    };
    let chars = text.chars().count();
    if chars == 0 {
        problems.push(path, "invalid_value", "must not be empty");
        None
    } else if chars > max_chars {
        problems.push(path, "too_long", format!("must be at most {max_chars} characters"));
        None
    } else if text.chars().any(char::is_control) {
        problems.push(path, "invalid_value", "must not contain control characters");
        None
    } else {
        Some(text.clone())
    }
}

/// A list of distinct strings (each 1 to `max_chars` characters).
pub fn distinct_strings(
    path: &str,
    items: &[Value],
    max_chars: usize,
    problems: &mut Problems,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        if let Some(text) = string_value(&item_path, item, max_chars, problems) {
            if out.contains(&text) {
                problems.push(item_path, "duplicate_value", format!("'{text}' is listed twice"));
            } else {
                out.push(text);
            }
        }
    }
    out
}

/// An exact decimal from a JSON number or a string holding one (`"1000"`, `2.5`, `1e3`): the
/// one numeric reading of semantics 2.4, shared by validation, intake and the engine.
///
/// With serde_json's `arbitrary_precision`, a number keeps its original digits, so this never
/// goes through a binary float.
pub fn decimal_value(value: &Value) -> Option<Decimal> {
    crate::expression::json_to_decimal(value)
}

/// Parses `-12`, `3.5`, `1e3`, `2.5E-2` exactly; rejects whitespace, `+4`, `.5`, `NaN`, `inf`
/// and values that a decimal cannot hold exactly.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    crate::expression::parse_decimal_str(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reader_collects_missing_mistyped_and_unknown_members() {
        let value = json!({"name": 5, "extra": true, "flag": "yes"});
        let mut problems = Problems::new();
        let mut reader = ObjectReader::new("metric", &value, &mut problems).unwrap();
        assert_eq!(reader.required_string("code", 10, &mut problems), None);
        assert_eq!(reader.required_string("name", 10, &mut problems), None);
        assert!(!reader.bool_or("flag", false, &mut problems));
        reader.finish(&mut problems);
        let found: Vec<(&str, &str)> = problems.iter().map(|p| (p.path.as_str(), p.code)).collect();
        assert_eq!(
            found,
            [
                ("metric.code", "missing_field"),
                ("metric.name", "invalid_type"),
                ("metric.flag", "invalid_type"),
                ("metric.extra", "unknown_field"),
            ]
        );
    }

    #[test]
    fn strings_are_checked_for_length_and_control_characters() {
        let mut problems = Problems::new();
        assert_eq!(string_value("a", &json!("ok"), 2, &mut problems), Some("ok".into()));
        assert_eq!(string_value("b", &json!(""), 2, &mut problems), None);
        assert_eq!(string_value("c", &json!("abc"), 2, &mut problems), None);
        assert_eq!(string_value("d", &json!("a\u{0}"), 2, &mut problems), None);
        let codes: Vec<&str> = problems.iter().map(|p| p.code).collect();
        assert_eq!(codes, ["invalid_value", "too_long", "invalid_value"]);
    }

    #[test]
    fn distinct_strings_reports_duplicates_by_index() {
        let mut problems = Problems::new();
        let items = [json!("eu"), json!("us"), json!("eu")];
        assert_eq!(distinct_strings("values", &items, 10, &mut problems), ["eu", "us"]);
        assert_eq!(problems.0[0].path, "values[2]");
        assert_eq!(problems.0[0].code, "duplicate_value");
    }

    #[test]
    fn decimals_are_exact_and_strict() {
        let cases = [
            (json!(0.1), Some("0.1")),
            (json!("1000"), Some("1000")),
            (json!("-12"), Some("-12")),
            (json!("1e3"), Some("1000")),
            (json!(" 4 "), None),
            (json!("+4"), None),
            (json!(".5"), None),
            (json!("NaN"), None),
            (json!(true), None),
            (json!("99999999999999999999999999999999"), None),
        ];
        for (value, expected) in cases {
            let got = decimal_value(&value).map(|d| d.normalize().to_string());
            assert_eq!(got.as_deref(), expected, "{value}");
        }
    }
}
