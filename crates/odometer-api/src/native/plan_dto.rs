//! The native API's wire types for plans, their charges and subscriptions, documented for the
//! OpenAPI document. Request bodies are read as JSON and validated by `odometer-core`; the
//! `*Input` types here document their shape.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A catalog item as another resource names it: its id and its current code.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefDto {
    pub id: String,
    pub code: String,
}

/// One bucket of a charge: the events whose properties have one of the listed values for every
/// key (the most specific matching filter wins), priced by its own properties.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChargeFilterDto {
    /// Property key (or dotted path) -> the values that match.
    #[schema(example = json!({"region": ["eu", "us"]}))]
    pub values: BTreeMap<String, Vec<String>>,
    /// The bucket's price, in the charge's model (decimals as strings).
    #[schema(value_type = Object)]
    pub properties: Value,
    pub invoice_display_name: Option<String>,
}

/// One charge of a plan: the usage of a metric priced by a charge model.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChargeDto {
    /// `ch_...`; kept when the plan is replaced with a charge naming it.
    #[schema(example = "ch_0D6mlR9nS1Yg4xJ2fG8aZq")]
    pub id: String,
    /// The metric whose usage is priced.
    pub metric: RefDto,
    /// `standard`, `graduated`, `volume`, `package` or `percentage`.
    #[schema(example = "graduated")]
    pub charge_model: String,
    /// The model's properties: `{"amount"}` (standard), `{"graduated_ranges": [...]}`,
    /// `{"volume_ranges": [...]}`, `{"amount", "package_size", "free_units"}` (package),
    /// `{"rate", "fixed_amount", "free_units_per_events", "free_units_per_total_aggregation",
    /// "per_transaction_min_amount", "per_transaction_max_amount"}` (percentage). They price
    /// the events no filter matches.
    #[schema(value_type = Object)]
    pub properties: Value,
    pub filters: Vec<PlanChargeFilterDto>,
    /// Property keys whose values split the usage into groups, each priced on its own.
    pub pricing_group_keys: Vec<String>,
    pub invoice_display_name: Option<String>,
}

/// A plan: a base amount billed every interval, and charges that price usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanDto {
    #[schema(example = "plan_0D6mlR9nS1Yg4xJ2fG8aZq")]
    pub id: String,
    pub code: String,
    pub name: String,
    pub description: Option<String>,
    /// `weekly`, `monthly`, `quarterly` or `yearly`.
    pub interval: String,
    /// ISO 4217 code: three uppercase letters.
    #[schema(example = "EUR")]
    pub currency: String,
    /// The base amount billed every period.
    #[schema(example = "49.9")]
    pub amount: String,
    /// Whether the base amount is billed at the start of a period (else at its end).
    pub pay_in_advance: bool,
    pub charges: Vec<PlanChargeDto>,
    pub created_at: String,
    pub updated_at: String,
    /// Only on the answer of a delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// A charge to define. `id` names an existing charge of the plan (on `PUT`) to keep its id;
/// leave it out for a new charge.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChargeInput {
    pub id: Option<String>,
    /// The metric's id (`bm_...`) or code.
    pub metric: String,
    pub charge_model: String,
    #[schema(value_type = Object)]
    pub properties: Value,
    pub filters: Option<Vec<PlanChargeFilterDto>>,
    pub pricing_group_keys: Option<Vec<String>>,
    pub invoice_display_name: Option<String>,
}

/// A plan to create, or the whole new definition of a plan (`PUT`). `amount` is 0 and
/// `pay_in_advance` false when absent; decimals may be strings or numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanInput {
    pub code: String,
    pub name: String,
    pub description: Option<String>,
    pub interval: String,
    pub currency: String,
    pub amount: Option<String>,
    pub pay_in_advance: Option<bool>,
    pub charges: Option<Vec<PlanChargeInput>>,
}

/// A customer's subscription to a plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionDto {
    #[schema(example = "sub_0D6mlR9nS1Yg4xJ2fG8aZq")]
    pub id: String,
    pub external_id: String,
    /// The customer's external id.
    pub customer: String,
    pub plan: RefDto,
    pub name: Option<String>,
    /// `active`, or `terminated` (terminated, or past `ended_at`), as of the answer.
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// When it was terminated, if it was.
    pub terminated_at: Option<String>,
    /// `calendar`, `anniversary` or a date `YYYY-MM-DD` whose day starts every period.
    pub billing_anchor: String,
    /// The IANA zone its periods follow.
    pub timezone: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A subscription to create. `started_at` defaults to now, `billing_anchor` to `calendar`,
/// `timezone` to the customer's (else UTC).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionInput {
    pub external_id: String,
    /// The customer's external id.
    pub customer: String,
    /// The plan's id (`plan_...`) or code.
    pub plan: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub billing_anchor: Option<String>,
    pub timezone: Option<String>,
    pub name: Option<String>,
}

/// A JSON merge patch of a subscription: only these members may change (`null` clears;
/// a cleared `billing_anchor` is `calendar`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionPatchInput {
    pub name: Option<String>,
    pub ended_at: Option<String>,
    pub billing_anchor: Option<String>,
}
