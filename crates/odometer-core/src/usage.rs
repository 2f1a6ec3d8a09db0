//! Usage queries and results (semantics sections 1.3-1.5, 4 and 5): what a backend is asked
//! and what it must answer, identically to the reference engine.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The default cap on the number of groups a query may return (semantics 3, `group_by`).
pub const DEFAULT_GROUP_LIMIT: usize = 10_000;

/// How a period is cut into windows (semantics 1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSize {
    /// The whole period is one window.
    None,
    Minute,
    Hour,
    Day,
    Month,
}

impl WindowSize {
    pub const ALL: [WindowSize; 5] = [Self::None, Self::Minute, Self::Hour, Self::Day, Self::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == text)
    }
}

/// One usage question for one customer and one metric revision.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// Start of the period, inclusive.
    pub from: DateTime<Utc>,
    /// End of the period, exclusive.
    pub to: DateTime<Utc>,
    pub window: WindowSize,
    /// The IANA zone windows align to.
    pub timezone: chrono_tz::Tz,
    /// Which of the metric's `group_by` keys to split by (a subset, in the metric's order).
    pub group_by: Vec<String>,
    /// Only events ingested at or before this instant count (semantics 1.5).
    pub as_of: Option<DateTime<Utc>>,
    /// More groups than this in any window fails with `too_many_groups`.
    pub group_limit: usize,
}

/// Which segment of the metric's segmentation a group is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// The metric has no segmentation.
    None,
    /// The listed dimension values, in the segmentation's key order.
    Matched(Vec<String>),
    /// Events outside the matrix, under `unmatched: other`.
    Other,
}

/// What identifies a group within a window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupKey {
    pub segment: Segment,
    /// The value of each queried `group_by` key, in query order; `None` when the event lacks
    /// it. Values are the property's text (a JSON string as is; numbers and booleans as their
    /// JSON text).
    pub group_by: Vec<Option<String>>,
}

/// One group of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupUsage {
    pub key: GroupKey,
    /// After unit conversion and rounding; `None` for min/max/mean/latest with no value.
    pub value: Option<Decimal>,
    /// Events that counted (passed filters and had a value).
    pub events_count: u64,
    /// Events that passed the filters but lacked the value (or the expression could not be
    /// evaluated for them).
    pub events_skipped: u64,
}

/// One window of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowUsage {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Computed by the aggregation over all the window's counted events (semantics 4.9), then
    /// converted and rounded like a group value.
    pub total: Option<Decimal>,
    /// Groups in [`GroupKey`] order. A window without events has no groups.
    pub groups: Vec<GroupUsage>,
    /// Events outside the segmentation matrix under `unmatched: drop`.
    pub events_excluded: u64,
}

/// The answer to a [`UsageQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageResult {
    /// Consecutive windows covering `[from, to)`, in time order.
    pub windows: Vec<WindowUsage>,
}

/// Why a usage query cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("the period is empty: 'from' must be before 'to'")]
    EmptyPeriod,
    #[error("'{key}' is not one of the metric's group_by keys")]
    UnknownGroupKey { key: String },
    #[error("the query would return more than {limit} groups")]
    TooManyGroups { limit: usize },
    #[error("the period is cut into more than {limit} windows")]
    TooManyWindows { limit: usize },
    #[error("custom_sql metrics are not computed by this engine yet")]
    UnsupportedAggregation,
    /// A sum, level, integral or converted value does not fit in a decimal (28 significant
    /// digits, about 7.9e28).
    #[error("a value does not fit in a decimal (arithmetic overflow)")]
    Overflow,
    /// A SQL metric's query failed when it ran (semantics 7).
    #[error("the SQL metric failed: {message}")]
    SqlFailed { message: String },
    /// A SQL metric's query ran past its time limit and was stopped.
    #[error("the SQL metric ran longer than {millis} ms and was stopped")]
    SqlTimeout { millis: u64 },
}

impl UsageError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptyPeriod => "invalid_period",
            Self::UnknownGroupKey { .. } => "unknown_group_key",
            Self::TooManyGroups { .. } => "too_many_groups",
            Self::TooManyWindows { .. } => "too_many_windows",
            Self::UnsupportedAggregation => "unsupported_aggregation",
            Self::Overflow => "overflow",
            Self::SqlFailed { .. } => "sql_failed",
            Self::SqlTimeout { .. } => "sql_timeout",
        }
    }
}
