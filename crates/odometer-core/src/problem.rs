//! Validation problems: every rejected field, with its path, a machine code and a message.
//!
//! Validation never stops at the first problem: it collects all of them so a client can fix
//! a definition in one round trip. Paths are dotted, with array indexes in brackets
//! (`segmentation.values[2]`).

use serde::Serialize;

/// One problem with one field of an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where: `aggregation.field`, `filters[1].op`; empty for the document itself.
    pub path: String,
    /// What, for machines: `missing_field`, `invalid_value`, `unknown_field`, ...
    pub code: &'static str,
    /// What, for people: lowercase, no trailing period.
    pub message: String,
}

/// All the problems found in one input; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
#[error("{}", self.summary())]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(
        &mut self,
        path: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.0.push(Problem { path: path.into(), code, message: message.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// The code of the first problem: the specific code an error envelope leads with.
    pub fn first_code(&self) -> &'static str {
        self.0.first().map_or("validation_failed", |p| p.code)
    }

    /// `Ok(value)` when nothing was found, else these problems.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// One line for people: the first problem, and how many more there are.
    pub fn summary(&self) -> String {
        let Some(first) = self.0.first() else {
            return "invalid input".to_owned();
        };
        let head = if first.path.is_empty() {
            first.message.clone()
        } else {
            format!("{}: {}", first.path, first.message)
        };
        match self.0.len() {
            1 => head,
            2 => format!("{head} (and 1 more problem)"),
            n => format!("{head} (and {} more problems)", n - 1),
        }
    }
}

/// Joins a path and a member name: `join("a", "b") == "a.b"`, `join("", "b") == "b"`.
pub fn join(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_owned()
    } else {
        format!("{path}.{member}")
    }
}

/// Appends an array index: `index("values", 2) == "values[2]"`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_first_problem_and_counts_the_rest() {
        let mut problems = Problems::new();
        assert_eq!(problems.first_code(), "validation_failed");
        problems.push("aggregation.field", "missing_field", "is required for sum");
        assert_eq!(problems.summary(), "aggregation.field: is required for sum");
        problems.push("name", "missing_field", "is required");
        assert_eq!(
            problems.summary(),
            "aggregation.field: is required for sum (and 1 more problem)"
        );
        problems.push("", "invalid_type", "expected an object");
        assert!(problems.summary().ends_with("(and 2 more problems)"));
        assert_eq!(problems.first_code(), "missing_field");
    }

    #[test]
    fn paths_join_members_and_indexes() {
        assert_eq!(join("", "code"), "code");
        assert_eq!(join("segmentation", "values"), "segmentation.values");
        assert_eq!(index("filters", 3), "filters[3]");
    }
}
