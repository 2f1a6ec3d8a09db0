//! The native API's wire types: what `/v1` writes, documented for the OpenAPI document.
//! Request bodies are read as JSON and validated by `odometer-core` (which reports every
//! problem); the `*Input` types here document their shape.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// How events are aggregated.
#[derive(Debug, Serialize, ToSchema)]
pub struct AggregationDto {
    /// `count`, `sum`, `min`, `max`, `mean`, `latest`, `unique_count`, `weighted_sum` or
    /// `custom_sql`.
    #[serde(rename = "type")]
    #[schema(example = "sum")]
    pub kind: String,
    /// The property path read per event (not for `count` and `custom_sql`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Sum, unique_count and weighted_sum only: carry state across periods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurring: Option<bool>,
    /// Computes the per-event value instead of `field` (semantics 4.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<Option<String>>,
    /// `custom_sql` only: the query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_query: Option<String>,
    /// Kept verbatim for the Zenskar dialect.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub dataschema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub visual_query_builder: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub datasource: Option<Value>,
}

/// A condition every counted event meets.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterDto {
    /// A top-level key or a dotted path (`usage.kind`).
    pub property: String,
    /// `eq`, `ne`, `in`, `not_in`, `exists`, `not_exists`.
    pub op: String,
    #[schema(value_type = Vec<Object>)]
    pub values: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DimensionDto {
    pub key: String,
    pub values: Vec<String>,
}

/// The dimensions usage is split and priced by.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SegmentationDto {
    Single {
        key: String,
        values: Vec<String>,
        /// `other` (default) or `drop`.
        unmatched: String,
    },
    Double {
        dimension1: DimensionDto,
        dimension2: DimensionDto,
        unmatched: String,
    },
    Linked {
        dimension1_key: String,
        dimension2_key: String,
        values: BTreeMap<String, Vec<String>>,
        unmatched: String,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnitConversionDto {
    /// A positive decimal the aggregate is divided by.
    #[schema(example = "1000")]
    pub factor: String,
    /// `none`, `up`, `down`, `nearest`, `nearest_half`, `nearest_decile`.
    pub rounding: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoundingDto {
    /// `round`, `ceil` or `floor`.
    pub function: String,
    /// Decimal places; negative rounds to tens, hundreds, ...
    pub precision: i32,
}

/// Everything a client sets about a metric.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricDefinitionDto {
    pub code: String,
    pub event_code: String,
    pub name: String,
    pub description: Option<String>,
    pub aggregation: AggregationDto,
    pub filters: Vec<FilterDto>,
    pub segmentation: Option<SegmentationDto>,
    pub group_by: Vec<String>,
    pub unit_conversion: Option<UnitConversionDto>,
    pub rounding: Option<RoundingDto>,
    pub product_family_id: Option<String>,
    pub product_id: Option<String>,
}

/// A billable metric.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricDto {
    #[schema(example = "bm_0D6mlR9nS1Yg4xJ2fG8aZq")]
    pub id: String,
    #[serde(flatten)]
    pub definition: MetricDefinitionDto,
    /// The current revision, from 1.
    pub revision: u32,
    pub created_at: String,
    pub updated_at: String,
    pub archived_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// One changed member between two revisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldChangeDto {
    pub path: String,
    #[schema(value_type = Object)]
    pub before: Value,
    #[schema(value_type = Object)]
    pub after: Value,
}

/// An immutable revision of a metric.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricRevisionDto {
    pub metric_id: String,
    pub revision: u32,
    /// When it took effect.
    pub effective_at: String,
    /// What changed from the previous revision.
    pub changes: Vec<FieldChangeDto>,
    pub definition: MetricDefinitionDto,
}

/// A metric to create. `code`, `name` and `aggregation` are required; `event_code` defaults to
/// `code`. On `PATCH`, every member is optional (JSON merge patch: absent = unchanged, `null`
/// clears), and `revision` may name the revision being patched (409 `revision_conflict` if it
/// is not the current one).
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricInput {
    pub code: Option<String>,
    pub event_code: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub aggregation: Option<AggregationDto>,
    pub filters: Option<Vec<FilterDto>>,
    pub segmentation: Option<SegmentationDto>,
    pub group_by: Option<Vec<String>>,
    pub unit_conversion: Option<UnitConversionDto>,
    pub rounding: Option<RoundingDto>,
    pub product_family_id: Option<String>,
    pub product_id: Option<String>,
}

/// A customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerDto {
    #[schema(example = "cus_0D6mlR9nS1Yg4xJ2fG8aZq")]
    pub id: String,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// IANA time zone; UTC when null.
    pub timezone: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// A customer to create (`external_id` required); on `PATCH` every member is optional.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerInput {
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub timezone: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationSettingsDto {
    pub accept_unknown_codes: bool,
    pub create_customers_on_first_sight: bool,
    pub future_timestamp_tolerance_seconds: u32,
}

/// The organization the API key belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationDto {
    pub id: String,
    pub name: String,
    pub settings: OrganizationSettingsDto,
    pub created_at: String,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListDto<T: ToSchema> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Liveness and store reachability.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDto {
    /// `ok` or `unavailable`.
    pub status: String,
    /// `ok`, or what is wrong with the catalog.
    pub catalog: String,
    /// `ok`, or what is wrong with the event store.
    pub events: String,
}

/// A stored event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDto {
    pub transaction_id: String,
    pub code: String,
    /// The customer's external id.
    pub customer: String,
    pub timestamp: String,
    #[schema(value_type = Object)]
    pub properties: Value,
    /// Ingestion sequence, strictly increasing per organization.
    pub sequence: u64,
    pub ingested_at: String,
}

/// Why an event was rejected.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectionDto {
    pub code: String,
    pub message: String,
}

/// One event's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResultDto {
    pub transaction_id: Option<String>,
    /// `accepted`, `duplicate` or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RejectionDto>,
}

/// The answer to an ingestion: each event's outcome, in order, and the counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestAnswerDto {
    pub results: Vec<IngestResultDto>,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// The metric revision a usage answer used.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageMetricDto {
    pub id: String,
    pub code: String,
    pub revision: u32,
}

/// One group of one window.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageGroupDto {
    /// The segmentation dimension values (`{"region": "eu"}`), `"other"` for events outside
    /// the matrix, or null when the metric has no segmentation.
    #[schema(value_type = Object)]
    pub segment: Value,
    /// The queried `group_by` keys and this group's values (null when the events lack it).
    #[schema(value_type = Object)]
    pub group_by: Value,
    /// A decimal string; null for min, max, mean and latest with no value.
    pub value: Option<String>,
    pub events_count: u64,
    /// Events that passed the filters but lacked the value.
    pub events_skipped: u64,
}

/// One window of a usage answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageWindowDto {
    pub from: String,
    pub to: String,
    /// The aggregation over all the window's events (never a sum of group values unless the
    /// aggregation is additive).
    pub total: Option<String>,
    /// Events outside the segmentation under `unmatched: drop`.
    pub events_excluded: u64,
    pub groups: Vec<UsageGroupDto>,
}

/// A usage answer for one customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDto {
    pub metric: UsageMetricDto,
    pub customer: String,
    pub from: String,
    pub to: String,
    pub window: String,
    pub timezone: String,
    pub as_of: Option<String>,
    pub group_by: Vec<String>,
    pub windows: Vec<UsageWindowDto>,
    /// How the answer was computed: `index` (the usage index's precomputed state),
    /// `index+edges` (the state, with the buckets at the period's or windows' edges that are
    /// not on the 15-minute grid read from the events) or `events` (the stored events).
    #[schema(example = "index")]
    pub answered_from: String,
    /// Why the answer comes from the events (`building`, `as_of`, `not_indexed`,
    /// `unaligned_windows`, `removals`, `inexact`, `custom_sql`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_reason: Option<String>,
}
