//! Plans: what a subscription bills. A base amount every interval, and charges that price the
//! usage of metrics ([`ChargePricing`]). The typed model, its canonical JSON and the validation
//! of untrusted definitions.
//!
//! # Rules
//! - `code`: 1 to 200 characters of a URL-safe alphabet, never shaped like a plan id, so
//!   `/v1/plans/{id_or_code}` is never ambiguous. Unique among the organization's live plans
//!   (the catalog enforces it).
//! - `interval`: `weekly`, `monthly`, `quarterly` or `yearly`.
//! - `currency`: three uppercase ASCII letters (ISO 4217 style, `USD`); the amounts of the
//!   plan's charges are rounded to its minor unit ([`minor_units`]).
//! - `amount`: the base amount billed every period, a decimal of at least 0 with no more
//!   decimal places than the currency's minor unit (`9.99` USD, `1000` JPY); 0 when absent.
//! - `pay_in_advance`: whether the base amount is billed at the start of a period (false: at
//!   its end).
//! - A charge names its metric by id (`bm_...`) or code ([`MetricRef`]); the store resolves it
//!   to a live metric ([`PlanInput::resolve`]). Several charges may read the same metric (each
//!   with its own pricing, filters or group keys).
//! - Charge ids (`ch_...`) are assigned when a charge is created. A replacement of the plan
//!   keeps the id of every charge that names one of the plan's current charges; a charge
//!   without an id is new and gets a fresh one. Naming an id that is not one of the plan's
//!   charges (or any id when creating a plan) is an error, not a silent new id: a client that
//!   names an id means a particular charge.
//!
//! Untrusted documents go through [`parse_plan_input`], which reports every problem with its
//! path (`charges[1].properties.graduated_ranges[0].to_value`); serde's `Deserialize` is for
//! trusted, stored documents.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::billing_period::PlanInterval;
use crate::id::{ChargeId, MetricId, OrganizationId, PlanId};
use crate::input::{decimal_value, string_value, type_name, ObjectReader};
use crate::metric_input::{parse_property_path, MAX_CODE_CHARS};
use crate::pricing::{minor_units, read_charge_pricing_members, ChargePricing};
use crate::problem::{index, Problems};

/// Most charges of one plan.
pub const MAX_CHARGES: usize = 100;
/// Most pricing group keys of one charge.
pub const MAX_PRICING_GROUP_KEYS: usize = 16;
const MAX_NAME_CHARS: usize = 255;
const MAX_DESCRIPTION_CHARS: usize = 10_000;
const MAX_DISPLAY_NAME_CHARS: usize = 255;

/// Members the catalog assigns; a client may not set them.
pub const READ_ONLY_MEMBERS: [&str; 5] =
    ["id", "organization_id", "created_at", "updated_at", "deleted_at"];

/// One charge of a plan: a metric's usage priced by a charge model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeSpec {
    pub id: ChargeId,
    /// The metric whose usage is priced (live while the plan is: the catalog keeps it attached).
    pub metric_id: MetricId,
    /// The charge model and its properties, and the filters (one bucket each).
    pub pricing: ChargePricing,
    /// Property keys (or dotted paths) whose values split the usage into groups, each priced
    /// on its own.
    #[serde(default)]
    pub pricing_group_keys: Vec<String>,
    /// What invoices call the charge.
    #[serde(default)]
    pub invoice_display_name: Option<String>,
}

/// Everything a client sets about a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSpec {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub interval: PlanInterval,
    /// ISO 4217 style: three uppercase letters.
    pub currency: String,
    /// The base amount billed every period, in `currency`.
    pub amount: Decimal,
    /// Whether the base amount is billed at the start of a period rather than its end.
    #[serde(default)]
    pub pay_in_advance: bool,
    /// In declaration order.
    #[serde(default)]
    pub charges: Vec<ChargeSpec>,
}

impl PlanSpec {
    /// The charge with this id.
    pub fn charge(&self, id: ChargeId) -> Option<&ChargeSpec> {
        self.charges.iter().find(|c| c.id == id)
    }

    /// The metrics the charges read, each once, in the order first charged.
    pub fn metric_ids(&self) -> Vec<MetricId> {
        let mut ids: Vec<MetricId> = Vec::with_capacity(self.charges.len());
        for charge in &self.charges {
            if !ids.contains(&charge.metric_id) {
                ids.push(charge.metric_id);
            }
        }
        ids
    }

    /// The decimal places amounts in this plan's currency are rounded to.
    pub fn precision(&self) -> u32 {
        minor_units(&self.currency)
    }
}

/// A plan in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: PlanId,
    pub organization_id: OrganizationId,
    pub spec: PlanSpec,
    pub created_at: DateTime<Utc>,
    /// When the definition was last replaced (the creation until then).
    pub updated_at: DateTime<Utc>,
    /// Set once the plan is deleted: its code is free again and its metrics are no longer
    /// attached by it; subscriptions that ended on it still name it.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Plan {
    /// A new plan created at `now`, with a fresh id.
    pub fn new(organization_id: OrganizationId, spec: PlanSpec, now: DateTime<Utc>) -> Self {
        Self {
            id: PlanId::new(),
            organization_id,
            spec,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    /// Whether the plan is not deleted.
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }
}

/// How an untrusted document names a metric: by id or by code. Metric codes never look like
/// metric ids, so the text alone decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MetricRef {
    Id(MetricId),
    Code(String),
}

impl MetricRef {
    pub fn parse(text: &str) -> Self {
        match MetricId::parse(text) {
            Some(id) => Self::Id(id),
            None => Self::Code(text.to_owned()),
        }
    }
}

impl std::fmt::Display for MetricRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Code(code) => f.write_str(code),
        }
    }
}

/// A charge as a client defines it: its metric not yet resolved, its id only when it names an
/// existing charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeDefinition {
    pub id: Option<ChargeId>,
    pub metric: MetricRef,
    pub pricing: ChargePricing,
    pub pricing_group_keys: Vec<String>,
    pub invoice_display_name: Option<String>,
}

/// A valid plan definition whose charges' metrics are not resolved yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    pub code: String,
    pub name: String,
    pub description: Option<String>,
    pub interval: PlanInterval,
    pub currency: String,
    pub amount: Decimal,
    pub pay_in_advance: bool,
    pub charges: Vec<ChargeDefinition>,
}

impl PlanInput {
    /// The plan's definition once the charges' metrics are looked up: `metrics[i]` is the live
    /// metric charge `i` names, `None` when there is none (unknown or deleted). `existing` are
    /// the charges of the plan this definition replaces (none for a new plan): a charge naming
    /// one of their ids keeps it, a charge without an id gets a fresh one.
    pub fn resolve(
        self,
        metrics: &[Option<MetricId>],
        existing: &[ChargeSpec],
    ) -> Result<PlanSpec, Problems> {
        let mut problems = Problems::new();
        let mut charges = Vec::with_capacity(self.charges.len());
        for (i, charge) in self.charges.into_iter().enumerate() {
            let path = index("charges", i);
            let metric_id = metrics.get(i).copied().flatten();
            if metric_id.is_none() {
                problems.push(
                    format!("{path}.metric"),
                    "unknown_metric",
                    format!("no metric has the id or code '{}'", charge.metric),
                );
            }
            let id = match charge.id {
                None => Some(ChargeId::new()),
                Some(id) if existing.iter().any(|c| c.id == id) => Some(id),
                Some(id) => {
                    let message = if existing.is_empty() {
                        format!(
                            "'{id}' is not a charge of this plan (leave id out for a new charge)"
                        )
                    } else {
                        format!("'{id}' is not one of this plan's charges")
                    };
                    problems.push(format!("{path}.id"), "unknown_charge", message);
                    None
                }
            };
            if let (Some(id), Some(metric_id)) = (id, metric_id) {
                charges.push(ChargeSpec {
                    id,
                    metric_id,
                    pricing: charge.pricing,
                    pricing_group_keys: charge.pricing_group_keys,
                    invoice_display_name: charge.invoice_display_name,
                });
            }
        }
        problems.into_result(PlanSpec {
            code: self.code,
            name: self.name,
            description: self.description,
            interval: self.interval,
            currency: self.currency,
            amount: self.amount,
            pay_in_advance: self.pay_in_advance,
            charges,
        })
    }
}

/// Parses and validates a whole plan definition (a create or a replacement), reporting every
/// problem. The charges' metrics stay unresolved: see [`PlanInput::resolve`].
pub fn parse_plan_input(value: &Value) -> Result<PlanInput, Problems> {
    let mut problems = Problems::new();
    let Some(mut reader) = ObjectReader::new("", value, &mut problems) else {
        return Err(problems);
    };
    reader.refuse_read_only(&READ_ONLY_MEMBERS, &mut problems);
    let code = reader.required_string("code", MAX_CODE_CHARS, &mut problems);
    if let Some(code) = &code {
        check_code(code, &mut problems);
    }
    let name = reader.required_string("name", MAX_NAME_CHARS, &mut problems);
    let description = reader.optional_string("description", MAX_DESCRIPTION_CHARS, &mut problems);
    let interval = read_interval(&mut reader, &mut problems);
    let currency = read_currency(&mut reader, &mut problems);
    let amount = read_amount(&mut reader, currency.as_deref(), &mut problems);
    let pay_in_advance = reader.bool_or("pay_in_advance", false, &mut problems);

    let charges_path = reader.path("charges");
    let items = reader.array("charges", &mut problems);
    if items.len() > MAX_CHARGES {
        problems.push(&charges_path, "too_many", format!("at most {MAX_CHARGES} charges"));
    }
    let charges: Vec<Option<ChargeDefinition>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_charge(&index(&charges_path, i), item, &mut problems))
        .collect();
    check_distinct_charge_ids(&charges_path, &charges, &mut problems);
    reader.finish(&mut problems);

    match (code, name, interval, currency, amount) {
        (Some(code), Some(name), Some(interval), Some(currency), Some(amount))
            if problems.is_empty() =>
        {
            Ok(PlanInput {
                code,
                name,
                description,
                interval,
                currency,
                amount,
                pay_in_advance,
                charges: charges.into_iter().flatten().collect(),
            })
        }
        _ => Err(problems),
    }
}

/// Codes appear in URLs, so they keep to a URL-safe alphabet, and never look like a plan id.
fn check_code(code: &str, problems: &mut Problems) {
    let url_safe =
        code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if !url_safe {
        problems.push(
            "code",
            "invalid_value",
            "may contain only letters, digits and '_', '-', '.', ':'",
        );
    } else if PlanId::parse(code).is_some() {
        problems.push("code", "invalid_value", "must not look like a plan id");
    }
}

fn read_interval(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<PlanInterval> {
    let text = reader.required_string("interval", 32, problems)?;
    let interval = PlanInterval::parse(&text);
    if interval.is_none() {
        let known: Vec<&str> = PlanInterval::ALL.iter().map(|i| i.as_str()).collect();
        problems.push(
            "interval",
            "invalid_value",
            format!("'{text}' is not one of {}", known.join(", ")),
        );
    }
    interval
}

fn read_currency(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<String> {
    let text = reader.required_string("currency", 64, problems)?;
    if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
        Some(text)
    } else {
        problems.push(
            "currency",
            "invalid_currency",
            format!("'{text}' is not a currency code (three uppercase letters, like USD)"),
        );
        None
    }
}

/// The base amount: at least 0, within the currency's minor unit; 0 when absent or null.
fn read_amount(
    reader: &mut ObjectReader<'_>,
    currency: Option<&str>,
    problems: &mut Problems,
) -> Option<Decimal> {
    let Some(value) = reader.get("amount") else {
        return Some(Decimal::ZERO);
    };
    let Some(amount) = decimal_value(value).filter(|d| *d >= Decimal::ZERO).map(|d| d.normalize())
    else {
        problems.push(
            "amount",
            "invalid_value",
            format!("must be a decimal of at least 0, got {value}"),
        );
        return None;
    };
    if let Some(currency) = currency {
        let places = minor_units(currency);
        if amount.scale() > places {
            problems.push(
                "amount",
                "invalid_value",
                format!("{currency} amounts have at most {places} decimal places, got {amount}"),
            );
            return None;
        }
    }
    Some(amount)
}

/// One charge at `path`; `None` when it has problems (all recorded).
fn read_charge(path: &str, value: &Value, problems: &mut Problems) -> Option<ChargeDefinition> {
    let before = problems.0.len();
    let mut reader = ObjectReader::new(path, value, problems)?;
    let id = read_charge_id(&mut reader, problems);
    let metric_path = reader.path("metric");
    let metric = match reader.get("metric") {
        None => {
            problems.push(&metric_path, "missing_field", "is required (a metric id or code)");
            None
        }
        Some(value) => string_value(&metric_path, value, MAX_CODE_CHARS, problems)
            .map(|t| MetricRef::parse(&t)),
    };
    let pricing = read_charge_pricing_members(&mut reader, problems);
    let pricing_group_keys = read_group_keys(&mut reader, problems);
    let invoice_display_name =
        reader.optional_string("invoice_display_name", MAX_DISPLAY_NAME_CHARS, problems);
    reader.finish(problems);
    if problems.0.len() > before {
        return None;
    }
    Some(ChargeDefinition {
        id,
        metric: metric?,
        pricing: pricing?,
        pricing_group_keys,
        invoice_display_name,
    })
}

fn read_charge_id(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<ChargeId> {
    let path = reader.path("id");
    let value = reader.get("id")?;
    let id = value.as_str().and_then(ChargeId::parse);
    if id.is_none() {
        let shown = match value {
            Value::String(text) => format!("'{}'", text.chars().take(64).collect::<String>()),
            other => type_name(other).to_owned(),
        };
        problems.push(
            path,
            "invalid_value",
            format!("{shown} is not a charge id ('{}' and 22 base62 digits)", ChargeId::PREFIX),
        );
    }
    id
}

fn read_group_keys(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Vec<String> {
    let path = reader.path("pricing_group_keys");
    let items = reader.array("pricing_group_keys", problems);
    if items.len() > MAX_PRICING_GROUP_KEYS {
        problems.push(&path, "too_many", format!("at most {MAX_PRICING_GROUP_KEYS} keys"));
        return Vec::new();
    }
    let mut keys: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = index(&path, i);
        if let Some(key) = parse_property_path(&item_path, item, problems) {
            if keys.contains(&key) {
                problems.push(item_path, "duplicate_value", format!("'{key}' is listed twice"));
            } else {
                keys.push(key);
            }
        }
    }
    keys
}

/// Two charges of one definition may not name the same id.
fn check_distinct_charge_ids(
    path: &str,
    charges: &[Option<ChargeDefinition>],
    problems: &mut Problems,
) {
    let mut seen: Vec<ChargeId> = Vec::new();
    for (i, charge) in charges.iter().enumerate() {
        let Some(id) = charge.as_ref().and_then(|c| c.id) else { continue };
        if seen.contains(&id) {
            problems.push(
                format!("{}.id", index(path, i)),
                "duplicate_value",
                format!("'{id}' names a charge already listed"),
            );
        } else {
            seen.push(id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pricing::ChargeModel;
    use serde_json::json;

    fn graduated_charge(metric: &str) -> Value {
        json!({
            "metric": metric,
            "charge_model": "graduated",
            "properties": {"graduated_ranges": [
                {"from_value": 0, "to_value": 100, "per_unit_amount": "0", "flat_amount": "0"},
                {"from_value": 100, "to_value": null, "per_unit_amount": "0.5"}
            ]}
        })
    }

    fn full_plan() -> Value {
        json!({
            "code": "startup",
            "name": "Startup",
            "description": "for small teams",
            "interval": "monthly",
            "currency": "EUR",
            "amount": "49.90",
            "pay_in_advance": true,
            "charges": [
                {"metric": "api_calls", "charge_model": "standard",
                 "properties": {"amount": "0.001"},
                 "filters": [{"values": {"region": ["eu"]}, "properties": {"amount": "0.002"},
                              "invoice_display_name": "EU calls"}],
                 "pricing_group_keys": ["project"],
                 "invoice_display_name": "API calls"},
                graduated_charge("bm_0000000000000000000001"),
            ]
        })
    }

    fn problems_of(value: Value) -> Vec<(String, &'static str)> {
        parse_plan_input(&value).unwrap_err().iter().map(|p| (p.path.clone(), p.code)).collect()
    }

    #[test]
    fn a_full_plan_parses_and_resolves() {
        let input = parse_plan_input(&full_plan()).unwrap();
        assert_eq!((input.code.as_str(), input.interval), ("startup", PlanInterval::Monthly));
        assert_eq!(input.amount.to_string(), "49.9");
        assert!(input.pay_in_advance);
        assert_eq!(input.charges[0].metric, MetricRef::Code("api_calls".into()));
        let metric = MetricId::parse("bm_0000000000000000000001").unwrap();
        assert_eq!(input.charges[1].metric, MetricRef::Id(metric));
        assert_eq!(input.charges[0].pricing.filters.len(), 1);
        assert_eq!(input.charges[0].pricing_group_keys, ["project"]);

        let calls = MetricId::new();
        let spec = input.resolve(&[Some(calls), Some(metric)], &[]).unwrap();
        assert_eq!(spec.charges.len(), 2);
        assert_ne!(spec.charges[0].id, spec.charges[1].id, "fresh ids");
        assert_eq!(spec.metric_ids(), [calls, metric]);
        assert_eq!(spec.precision(), 2);
        assert!(matches!(spec.charges[1].pricing.model, ChargeModel::Graduated(_)));
    }

    #[test]
    fn defaults_apply_when_members_are_absent() {
        let input = parse_plan_input(&json!({
            "code": "free", "name": "Free", "interval": "yearly", "currency": "JPY"
        }))
        .unwrap();
        assert_eq!(input.amount, Decimal::ZERO);
        assert!(!input.pay_in_advance);
        assert!(input.charges.is_empty());
        assert_eq!(input.description, None);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let found = problems_of(json!({
            "id": "plan_x",
            "code": "has space",
            "interval": "daily",
            "currency": "usd",
            "amount": "-1",
            "pay_in_advance": "yes",
            "charges": [
                {"charge_model": "standard", "properties": {"amount": "1"}, "extra": 1},
                {"metric": "calls", "charge_model": "graduated", "properties": {"graduated_ranges": [
                    {"from_value": 0, "to_value": 10, "per_unit_amount": "1"},
                    {"from_value": 20, "per_unit_amount": "1"}
                ]}},
                {"id": "ch_nope", "metric": 5, "charge_model": "standard",
                 "properties": {"amount": "1"}, "pricing_group_keys": ["a", "a", "b..c"]},
                "not a charge"
            ],
            "other": true
        }));
        let expected: Vec<(String, &str)> = [
            ("id", "read_only"),
            ("code", "invalid_value"),
            ("name", "missing_field"),
            ("interval", "invalid_value"),
            ("currency", "invalid_currency"),
            ("amount", "invalid_value"),
            ("pay_in_advance", "invalid_type"),
            ("charges[0].metric", "missing_field"),
            ("charges[0].extra", "unknown_field"),
            ("charges[1].properties.graduated_ranges[1].from_value", "invalid_range"),
            ("charges[2].id", "invalid_value"),
            ("charges[2].metric", "invalid_type"),
            ("charges[2].pricing_group_keys[1]", "duplicate_value"),
            ("charges[2].pricing_group_keys[2]", "invalid_value"),
            ("charges[3]", "invalid_type"),
            ("other", "unknown_field"),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_owned(), c))
        .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn amounts_keep_to_the_currency_minor_unit() {
        let cases = [
            ("USD", json!("9.99"), Some("9.99")),
            ("USD", json!("9.999"), None),
            ("USD", json!("10.000"), Some("10")),
            ("JPY", json!("1000"), Some("1000")),
            ("JPY", json!("1000.5"), None),
            ("KWD", json!(1.234), Some("1.234")),
            ("EUR", json!("abc"), None),
        ];
        for (currency, amount, expected) in cases {
            let plan = json!({"code": "p", "name": "P", "interval": "monthly",
                              "currency": currency, "amount": amount});
            let got = parse_plan_input(&plan).ok().map(|p| p.amount.to_string());
            assert_eq!(got.as_deref(), expected, "{currency} {amount}");
        }
    }

    #[test]
    fn codes_must_not_look_like_plan_ids() {
        let code = PlanId::new().to_string();
        let found = problems_of(json!({"code": code, "name": "P", "interval": "weekly",
                                       "currency": "USD"}));
        assert_eq!(found, [("code".to_owned(), "invalid_value")]);
    }

    #[test]
    fn replacements_keep_named_charge_ids_and_refuse_unknown_ones() {
        let metric = MetricId::new();
        let first = parse_plan_input(&full_plan()).unwrap().resolve(&[Some(metric); 2], &[]);
        let first = first.unwrap();
        let kept = first.charges[1].id;
        let mut doc = full_plan();
        doc["charges"][0]["id"] = json!(kept.to_string());
        let second = parse_plan_input(&doc).unwrap();
        let second = second.resolve(&[Some(metric); 2], &first.charges).unwrap();
        assert_eq!(second.charges[0].id, kept, "a named charge keeps its id");
        assert!(
            first.charges.iter().all(|c| c.id != second.charges[1].id),
            "an unnamed charge is new"
        );

        let stranger = ChargeId::new();
        doc["charges"][1]["id"] = json!(stranger.to_string());
        let problems =
            parse_plan_input(&doc).unwrap().resolve(&[None, Some(metric)], &first.charges);
        let found: Vec<(&str, &str)> =
            problems.as_ref().unwrap_err().iter().map(|p| (p.path.as_str(), p.code)).collect();
        assert_eq!(
            found,
            [("charges[0].metric", "unknown_metric"), ("charges[1].id", "unknown_charge")]
        );

        doc["charges"][1]["id"] = json!(kept.to_string());
        let found = problems_of(doc);
        assert_eq!(found, [("charges[1].id".to_owned(), "duplicate_value")]);
    }

    #[test]
    fn the_canonical_json_round_trips() {
        let spec = parse_plan_input(&full_plan())
            .unwrap()
            .resolve(&[Some(MetricId::new()), Some(MetricId::new())], &[])
            .unwrap();
        let plan = Plan::new(OrganizationId::new(), spec, crate::time::now());
        let text = serde_json::to_string(&plan).unwrap();
        let back: Plan = serde_json::from_str(&text).unwrap();
        assert_eq!(back, plan);
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["spec"]["amount"], "49.9", "amounts are decimal strings");
        assert_eq!(json["spec"]["interval"], "monthly");
        assert_eq!(json["spec"]["charges"][0]["pricing"]["charge_model"], "standard");
    }
}
