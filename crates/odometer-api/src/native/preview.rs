//! `POST /v1/metrics/{id_or_code}/preview`: a proposed update evaluated on real usage, nothing
//! saved (semantics 6.4).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use odometer_core::intake::parse_timestamp;
use odometer_core::time::format_micros;
use odometer_core::Problems;
use odometer_store::preview::{preview_metric_update, PreviewError, PreviewRequest};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::dto::{FieldChangeDto, MetricDto};
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, PathParams, Tenant};
use super::mapping;
use crate::AppState;

/// Body of a preview: `{"patch": {...}, "from", "to", "customers"?}`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PreviewInput {
    /// A JSON merge patch, exactly as `PATCH /v1/metrics/{id}` takes it.
    #[schema(value_type = Object)]
    patch: Value,
    /// Start of the period, inclusive (RFC 3339 or Unix seconds).
    from: String,
    /// End of the period, exclusive.
    to: String,
    /// External ids of the customers to evaluate; every customer when absent.
    customers: Option<Vec<String>>,
}

/// One customer in a preview.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewRowDto {
    pub customer: String,
    /// The period's total under the current definition (null when the aggregation has no value).
    pub current: Option<String>,
    /// The period's total under the proposed definition.
    pub proposed: Option<String>,
    /// `proposed - current`, an absent value counting as 0.
    pub difference: Option<String>,
    /// Per active subscription whose plan charges the metric: the charges' amount over the
    /// period under each definition.
    pub amounts: Vec<AmountPreviewDto>,
}

/// A subscription's charges on the metric under the current and the proposed definition.
#[derive(Debug, Serialize, ToSchema)]
pub struct AmountPreviewDto {
    pub subscription: String,
    pub plan: String,
    pub currency: String,
    pub current: String,
    pub proposed: String,
    pub difference: String,
}

/// A preview: what the patch would change, and its effect on each customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewDto {
    /// The metric as it is (nothing was saved).
    pub metric: MetricDto,
    /// The definition the patch would produce, in the metric's wire form (without ids).
    #[schema(value_type = Object)]
    pub proposed: Value,
    pub changes: Vec<FieldChangeDto>,
    /// Locked fields (semantics 6.3) the patch changes.
    pub locked_fields: Vec<String>,
    /// Whether saving this patch would be refused with `metric_locked` (the metric is attached
    /// to a plan and the patch changes locked fields).
    pub would_be_refused: bool,
    pub from: String,
    pub to: String,
    /// Sorted by the size of the difference, largest first.
    pub results: Vec<PreviewRowDto>,
}

fn read_request(body: &Value) -> Result<PreviewRequest, ApiError> {
    let mut problems = Problems::new();
    let Some(members) = body.as_object() else {
        problems.push("", "invalid_type", "the body must be a JSON object");
        return Err(ApiError::invalid(problems));
    };
    for key in members.keys() {
        if !matches!(key.as_str(), "patch" | "from" | "to" | "customers") {
            problems.push(key, "unknown_field", "is not a member of a preview");
        }
    }
    let patch = match members.get("patch") {
        Some(patch @ Value::Object(_)) => Some(patch.clone()),
        Some(_) => {
            problems.push("patch", "invalid_type", "must be a JSON merge patch (an object)");
            None
        }
        None => {
            problems.push("patch", "missing_field", "is required");
            None
        }
    };
    let mut instant = |name: &str| match members.get(name) {
        None => {
            problems.push(name, "missing_field", "is required");
            None
        }
        Some(value) => match parse_timestamp(value) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(name, "invalid_timestamp", e.message);
                None
            }
        },
    };
    let (from, to) = (instant("from"), instant("to"));
    let customers = match members.get("customers") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(id) => ids.push(id.to_owned()),
                    None => problems.push(
                        format!("customers[{i}]"),
                        "invalid_type",
                        "must be a customer's external id",
                    ),
                }
            }
            Some(ids)
        }
        Some(_) => {
            problems.push("customers", "invalid_type", "must be a list of external ids");
            None
        }
    };
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            problems.push("to", "invalid_period", "must be after from");
        }
    }
    match (patch, from, to) {
        (Some(patch), Some(from), Some(to)) if problems.is_empty() => {
            Ok(PreviewRequest { patch, from, to, customers })
        }
        _ => Err(ApiError::invalid(problems)),
    }
}

impl From<PreviewError> for ApiError {
    fn from(err: PreviewError) -> Self {
        match err {
            PreviewError::Invalid(problems) => Self::invalid(problems),
            PreviewError::TooManyCustomers => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "too_many_customers", err.to_string())
            }
            PreviewError::Usage(usage) => super::usage::usage_error(usage),
            PreviewError::Pricing(code, message) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            PreviewError::Store(store) => store.into(),
        }
    }
}

/// Preview a metric update on real usage, without saving it.
///
/// The patch is applied to the live definition as `PATCH` would apply it, then both definitions
/// are evaluated over `[from, to)` for the named customers (or all of them). Locked-field
/// changes are reported (`would_be_refused`) rather than refused, so their effect can be seen.
#[utoipa::path(post, path = "/v1/metrics/{id_or_code}/preview", tag = "metrics",
    params(("id_or_code" = String, Path, description = "`bm_...` id or code")),
    request_body = PreviewInput,
    responses(
        (status = 200, description = "per customer: current, proposed, difference", body = PreviewDto),
        (status = 404, description = "unknown metric or customer", body = ErrorBody),
        (status = 422, description = "invalid patch or period", body = ErrorBody),
    ),
    security(("api_key" = [])))]
pub async fn preview_metric(
    tenant: Tenant,
    State(state): State<AppState>,
    PathParams(id_or_code): PathParams<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<PreviewDto>, ApiError> {
    let request = read_request(&body)?;
    let preview = preview_metric_update(
        state.catalog.as_ref(),
        state.events.as_ref(),
        tenant.organization_id,
        &id_or_code,
        &request,
    )
    .await?;
    Ok(Json(PreviewDto {
        metric: mapping::metric(&preview.metric),
        proposed: preview.proposed.to_json(),
        changes: preview.changes.iter().map(mapping::field_change).collect(),
        locked_fields: preview.locked_fields.iter().map(|f| (*f).to_owned()).collect(),
        would_be_refused: preview.would_be_refused,
        from: format_micros(&request.from),
        to: format_micros(&request.to),
        results: preview
            .rows
            .into_iter()
            .map(|r| PreviewRowDto {
                customer: r.customer,
                current: r.current.map(|d| d.to_string()),
                proposed: r.proposed.map(|d| d.to_string()),
                difference: r.difference.map(|d| d.normalize().to_string()),
                amounts: r
                    .amounts
                    .into_iter()
                    .map(|a| {
                        let precision = odometer_core::pricing::minor_units(&a.currency) as usize;
                        AmountPreviewDto {
                            subscription: a.subscription,
                            plan: a.plan_code,
                            currency: a.currency,
                            current: format!("{:.*}", precision, a.current),
                            proposed: format!("{:.*}", precision, a.proposed),
                            difference: format!("{:.*}", precision, a.difference),
                        }
                    })
                    .collect(),
            })
            .collect(),
    }))
}
