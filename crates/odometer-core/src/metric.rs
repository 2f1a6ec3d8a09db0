//! Billable metric definitions (semantics section 3): the typed model and its canonical JSON.
//!
//! A [`MetricSpec`] is everything a client may set about a metric; [`Metric`] adds what the
//! catalog assigns (id, revision, timestamps). The canonical JSON form of a spec (its serde
//! form) is both what the native API writes and what the catalog stores, so a revision read
//! back a year later is the same document. Untrusted input goes through
//! [`crate::metric_input`], which reports every problem; serde's `Deserialize` here is for
//! trusted, stored documents.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::{MetricId, OrganizationId};

/// How events are aggregated into one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationType {
    Count,
    Sum,
    Min,
    Max,
    Mean,
    Latest,
    UniqueCount,
    WeightedSum,
    CustomSql,
}

impl AggregationType {
    pub const ALL: [AggregationType; 9] = [
        Self::Count,
        Self::Sum,
        Self::Min,
        Self::Max,
        Self::Mean,
        Self::Latest,
        Self::UniqueCount,
        Self::WeightedSum,
        Self::CustomSql,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum => "sum",
            Self::Min => "min",
            Self::Max => "max",
            Self::Mean => "mean",
            Self::Latest => "latest",
            Self::UniqueCount => "unique_count",
            Self::WeightedSum => "weighted_sum",
            Self::CustomSql => "custom_sql",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// Whether the aggregation reads a per-event value (a `field` or an `expression`).
    pub fn reads_value(self) -> bool {
        !matches!(self, Self::Count | Self::CustomSql)
    }

    /// Whether `recurring` is meaningful (semantics section 3).
    pub fn may_recur(self) -> bool {
        matches!(self, Self::Sum | Self::UniqueCount | Self::WeightedSum)
    }

    /// Whether group values add up to the total (semantics 4.9).
    pub fn is_additive(self) -> bool {
        matches!(self, Self::Count | Self::Sum)
    }

    /// Whether one SQL aggregate over the events' values computes it (`count`, `sum`, `min`,
    /// `max`, `mean` as a sum and a count, `unique_count` as a distinct count): what the
    /// stores push down to their databases. `latest`, `weighted_sum` and `custom_sql` are not.
    pub fn is_sql_aggregate(self) -> bool {
        matches!(
            self,
            Self::Count | Self::Sum | Self::Min | Self::Max | Self::Mean | Self::UniqueCount
        )
    }
}

/// The SQL of a `custom_sql` metric and the Zenskar documents kept beside it, verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlDefinition {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visual_query_builder: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasource: Option<Value>,
}

/// What a metric computes from its events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "AggregationDoc", try_from = "AggregationDoc")]
pub struct Aggregation {
    pub kind: AggregationType,
    /// The property path read per event (absent for `count` and `custom_sql`, or when an
    /// expression computes the value).
    pub field: Option<String>,
    pub recurring: bool,
    /// Source of an expression (section 4.10) computing the per-event value.
    pub expression: Option<String>,
    /// Present exactly when `kind` is `custom_sql`.
    pub sql: Option<SqlDefinition>,
}

/// The flat JSON form of [`Aggregation`]: `{"type", "field", "recurring", "expression"}` or
/// `{"type": "custom_sql", "query", ...}`. Written out member by member rather than with
/// `#[serde(flatten)]`, which mishandles exact (arbitrary-precision) numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AggregationDoc {
    #[serde(rename = "type")]
    kind: AggregationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recurring: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expression: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dataschema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    visual_query_builder: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    datasource: Option<Value>,
}

impl From<Aggregation> for AggregationDoc {
    fn from(a: Aggregation) -> Self {
        let mut doc = AggregationDoc {
            kind: a.kind,
            field: None,
            recurring: None,
            expression: None,
            query: None,
            customer_query: None,
            dataschema: None,
            visual_query_builder: None,
            datasource: None,
        };
        match a.sql {
            Some(sql) => {
                doc.query = Some(sql.query);
                doc.customer_query = sql.customer_query;
                doc.dataschema = sql.dataschema;
                doc.visual_query_builder = sql.visual_query_builder;
                doc.datasource = sql.datasource;
            }
            None => {
                doc.field = a.field;
                doc.recurring = Some(a.recurring);
                doc.expression = Some(a.expression);
            }
        }
        doc
    }
}

impl TryFrom<AggregationDoc> for Aggregation {
    type Error = String;
    fn try_from(doc: AggregationDoc) -> Result<Self, String> {
        let sql = match (doc.kind, doc.query) {
            (AggregationType::CustomSql, Some(query)) => Some(SqlDefinition {
                query,
                customer_query: doc.customer_query,
                dataschema: doc.dataschema,
                visual_query_builder: doc.visual_query_builder,
                datasource: doc.datasource,
            }),
            (AggregationType::CustomSql, None) => {
                return Err("a custom_sql aggregation needs a query".to_owned())
            }
            (_, Some(_)) => return Err("only custom_sql aggregations carry a query".to_owned()),
            (_, None) => None,
        };
        Ok(Aggregation {
            kind: doc.kind,
            field: doc.field,
            recurring: doc.recurring.unwrap_or(false),
            expression: doc.expression.flatten(),
            sql,
        })
    }
}

/// A filter's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Ne,
    In,
    NotIn,
    Exists,
    NotExists,
}

impl FilterOp {
    pub const ALL: [FilterOp; 6] =
        [Self::Eq, Self::Ne, Self::In, Self::NotIn, Self::Exists, Self::NotExists];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::In => "in",
            Self::NotIn => "not_in",
            Self::Exists => "exists",
            Self::NotExists => "not_exists",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == text)
    }
}

/// A condition an event must meet to count: `{property, op, values}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub property: String,
    pub op: FilterOp,
    /// Scalars (strings, numbers, booleans); one for `eq`/`ne`, one or more for `in`/`not_in`,
    /// none for `exists`/`not_exists`.
    #[serde(default)]
    pub values: Vec<Value>,
}

/// What happens to events whose dimension values are outside the segmentation matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// They go to one explicit "other" group.
    #[default]
    Other,
    /// They are excluded, and counted under `events_excluded`.
    Drop,
}

impl Unmatched {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Other => "other",
            Self::Drop => "drop",
        }
    }
}

/// One dimension of a segmentation: a property key and its listed values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimension {
    pub key: String,
    pub values: Vec<String>,
}

/// The dimensions usage is split and priced by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Segmentation {
    Single {
        key: String,
        values: Vec<String>,
        #[serde(default)]
        unmatched: Unmatched,
    },
    Double {
        dimension1: Dimension,
        dimension2: Dimension,
        #[serde(default)]
        unmatched: Unmatched,
    },
    Linked {
        dimension1_key: String,
        dimension2_key: String,
        values: BTreeMap<String, Vec<String>>,
        #[serde(default)]
        unmatched: Unmatched,
    },
}

impl Segmentation {
    /// The property keys the segmentation reads, in order.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Self::Single { key, .. } => vec![key],
            Self::Double { dimension1, dimension2, .. } => vec![&dimension1.key, &dimension2.key],
            Self::Linked { dimension1_key, dimension2_key, .. } => {
                vec![dimension1_key, dimension2_key]
            }
        }
    }

    pub fn unmatched(&self) -> Unmatched {
        match self {
            Self::Single { unmatched, .. }
            | Self::Double { unmatched, .. }
            | Self::Linked { unmatched, .. } => *unmatched,
        }
    }
}

/// How the converted aggregate is rounded (semantics section 3, `unit_conversion.rounding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversionRounding {
    #[default]
    None,
    Up,
    Down,
    Nearest,
    NearestHalf,
    NearestDecile,
}

impl ConversionRounding {
    pub const ALL: [ConversionRounding; 6] =
        [Self::None, Self::Up, Self::Down, Self::Nearest, Self::NearestHalf, Self::NearestDecile];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Up => "up",
            Self::Down => "down",
            Self::Nearest => "nearest",
            Self::NearestHalf => "nearest_half",
            Self::NearestDecile => "nearest_decile",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// The aggregate is divided by `factor`, then rounded by `rounding`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitConversion {
    #[serde(with = "rust_decimal::serde::str")]
    pub factor: Decimal,
    #[serde(default)]
    pub rounding: ConversionRounding,
}

/// The final rounding function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundingFunction {
    Round,
    Ceil,
    Floor,
}

impl RoundingFunction {
    pub const ALL: [RoundingFunction; 3] = [Self::Round, Self::Ceil, Self::Floor];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Round => "round",
            Self::Ceil => "ceil",
            Self::Floor => "floor",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// `rounding {function, precision}`: precision in decimal places, negative for tens, hundreds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rounding {
    pub function: RoundingFunction,
    #[serde(default)]
    pub precision: i32,
}

/// Everything a client sets about a metric. Always valid once constructed by
/// [`crate::metric_input::parse_metric_spec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSpec {
    pub code: String,
    pub event_code: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub aggregation: Aggregation,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub segmentation: Option<Segmentation>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default)]
    pub unit_conversion: Option<UnitConversion>,
    #[serde(default)]
    pub rounding: Option<Rounding>,
    /// Meteroid's product family reference, kept verbatim.
    #[serde(default)]
    pub product_family_id: Option<String>,
    /// Meteroid's product reference, kept verbatim.
    #[serde(default)]
    pub product_id: Option<String>,
}

impl MetricSpec {
    /// The canonical JSON document of this spec.
    pub fn to_json(&self) -> Value {
        // Serializing plain structs of strings, numbers and JSON values cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A metric in the catalog: its current spec and what the catalog assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub id: MetricId,
    pub organization_id: OrganizationId,
    pub spec: MetricSpec,
    /// The number of the current revision, from 1.
    pub revision: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Metric {
    /// A new metric at revision 1, created at `now`, with a fresh id.
    pub fn new(organization_id: OrganizationId, spec: MetricSpec, now: DateTime<Utc>) -> Self {
        Self {
            id: MetricId::new(),
            organization_id,
            spec,
            revision: 1,
            created_at: now,
            updated_at: now,
            archived_at: None,
            deleted_at: None,
        }
    }
}

/// One changed member between two revisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Dotted path of the member (`aggregation.field`, `rounding`).
    pub path: String,
    /// Its value before (JSON null when it was absent).
    pub before: Value,
    /// Its value after (JSON null when it was cleared).
    pub after: Value,
}

/// An immutable revision of a metric (semantics 6.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRevision {
    pub metric_id: MetricId,
    pub revision: u32,
    pub spec: MetricSpec,
    /// When it took effect.
    pub effective_at: DateTime<Utc>,
    /// What changed from the previous revision (empty for revision 1).
    pub changes: Vec<FieldChange>,
}
