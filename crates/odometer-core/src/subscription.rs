//! Subscriptions: a customer on a plan, from a start and maybe to an end, billed in periods
//! that start at its billing anchor in its time zone ([`crate::billing_period`]). The typed
//! model, the status rule and the validation of untrusted definitions and patches.
//!
//! # Rules
//! - `external_id`: the client's own identifier, 1 to 256 characters, unique in the
//!   organization (the catalog enforces it); routes address subscriptions by it.
//! - `customer` is the customer's external id, `plan` a plan's id (`plan_...`) or code; the
//!   store resolves both to live records.
//! - `started_at` defaults to the creation instant; `ended_at`, when set, is after
//!   `started_at` (it may be in the past: a subscription imported after it ended).
//! - `billing_anchor`: `calendar` (default), `anniversary` or a date `YYYY-MM-DD`.
//! - `timezone`: an IANA zone; when absent, the customer's zone, else UTC. It is fixed at
//!   creation: a customer's later change of zone does not move the periods already running.
//! - Status: `terminated` once `terminate` was called or `ended_at` is reached
//!   (`ended_at <= now`), else `active` (also before `started_at`). A terminated subscription
//!   takes no more changes.
//! - A patch (JSON merge patch) may change `name`, `ended_at` and `billing_anchor`; any other
//!   member may only repeat its current value (`not_allowed` otherwise).

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::billing_period::{BillingAnchor, BillingSchedule, PlanInterval};
use crate::id::{OrganizationId, PlanId, SubscriptionId};
use crate::input::{type_name, ObjectReader};
use crate::intake::parse_timestamp;
use crate::problem::Problems;
use crate::time::format_micros;

const MAX_EXTERNAL_ID_CHARS: usize = 256;
const MAX_NAME_CHARS: usize = 255;
const MAX_REF_CHARS: usize = 256;

/// Members the catalog assigns; a client may not set them.
pub const READ_ONLY_MEMBERS: [&str; 6] =
    ["id", "organization_id", "status", "terminated_at", "created_at", "updated_at"];

/// The members a patch may change.
pub const MUTABLE_MEMBERS: [&str; 3] = ["name", "ended_at", "billing_anchor"];

/// Everything a client sets about a subscription, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    pub external_id: String,
    /// The customer's external id.
    pub customer: String,
    pub plan_id: PlanId,
    pub started_at: DateTime<Utc>,
    /// When it ends (or ended), if it does.
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Its wire text: `calendar`, `anniversary` or `YYYY-MM-DD`.
    #[serde(with = "anchor_text")]
    pub billing_anchor: BillingAnchor,
    /// The zone billing periods follow, by its IANA name.
    #[serde(with = "zone_name")]
    pub timezone: Tz,
    #[serde(default)]
    pub name: Option<String>,
}

/// Whether a subscription still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Not terminated and not past its end (it may not have started yet).
    Active,
    /// Terminated, or past its end.
    Terminated,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 2] = [Self::Active, Self::Terminated];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Terminated => "terminated",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The status at `now` of a subscription with this end and termination.
    pub fn at(
        ended_at: Option<DateTime<Utc>>,
        terminated_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        if terminated_at.is_some() || ended_at.is_some_and(|end| end <= now) {
            Self::Terminated
        } else {
            Self::Active
        }
    }
}

/// A subscription in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub organization_id: OrganizationId,
    pub spec: SubscriptionSpec,
    /// The status when it was read ([`Subscription::status_at`] for another instant).
    pub status: SubscriptionStatus,
    /// When `terminate` was called, if it was.
    pub terminated_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// A new subscription created at `now`, with a fresh id.
    pub fn new(
        organization_id: OrganizationId,
        spec: SubscriptionSpec,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: SubscriptionId::new(),
            organization_id,
            status: SubscriptionStatus::at(spec.ended_at, None, now),
            spec,
            terminated_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn status_at(&self, now: DateTime<Utc>) -> SubscriptionStatus {
        SubscriptionStatus::at(self.spec.ended_at, self.terminated_at, now)
    }

    /// What decides its billing periods under a plan of this `interval`.
    pub fn schedule(&self, interval: PlanInterval) -> BillingSchedule {
        BillingSchedule {
            interval,
            anchor: self.spec.billing_anchor,
            timezone: self.spec.timezone,
            started_at: self.spec.started_at,
            ended_at: self.spec.ended_at,
        }
    }

    /// The end a termination at `at` leaves: `at`, unless the subscription ends earlier, and
    /// never before it starts.
    pub fn end_when_terminated(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let end = self.spec.ended_at.map_or(at, |end| end.min(at));
        end.max(self.spec.started_at)
    }
}

/// A billing anchor's wire text: `calendar`, `anniversary` or the date as `YYYY-MM-DD`.
pub fn billing_anchor_text(anchor: BillingAnchor) -> String {
    match anchor {
        BillingAnchor::Calendar => "calendar".to_owned(),
        BillingAnchor::Anniversary => "anniversary".to_owned(),
        BillingAnchor::Date(date) => date.format("%Y-%m-%d").to_string(),
    }
}

/// Parses [`billing_anchor_text`]'s forms.
pub fn parse_billing_anchor(text: &str) -> Option<BillingAnchor> {
    match text {
        "calendar" => Some(BillingAnchor::Calendar),
        "anniversary" => Some(BillingAnchor::Anniversary),
        _ if text.len() == 10 => {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(BillingAnchor::Date)
        }
        _ => None,
    }
}

mod anchor_text {
    use super::*;

    pub fn serialize<S: Serializer>(anchor: &BillingAnchor, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&billing_anchor_text(*anchor))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BillingAnchor, D::Error> {
        let text = String::deserialize(d)?;
        parse_billing_anchor(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a billing anchor")))
    }
}

mod zone_name {
    use super::*;

    pub fn serialize<S: Serializer>(zone: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(zone.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("'{text}' is not an IANA time zone")))
    }
}

/// A valid subscription definition whose customer and plan are not resolved yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInput {
    pub external_id: String,
    /// The customer's external id.
    pub customer: String,
    /// The plan's id (`plan_...`) or code.
    pub plan: String,
    /// `None`: the creation instant.
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub billing_anchor: BillingAnchor,
    /// `None`: the customer's zone, else UTC.
    pub timezone: Option<Tz>,
    pub name: Option<String>,
}

impl SubscriptionInput {
    /// The definition, with the plan resolved and the defaults applied: `customer_timezone` is
    /// the customer's zone (if it has one), `now` the creation instant.
    pub fn into_spec(
        self,
        plan_id: PlanId,
        customer_timezone: Option<Tz>,
        now: DateTime<Utc>,
    ) -> Result<SubscriptionSpec, Problems> {
        let spec = SubscriptionSpec {
            external_id: self.external_id,
            customer: self.customer,
            plan_id,
            started_at: self.started_at.unwrap_or(now),
            ended_at: self.ended_at,
            billing_anchor: self.billing_anchor,
            timezone: self.timezone.or(customer_timezone).unwrap_or(Tz::UTC),
            name: self.name,
        };
        let mut problems = Problems::new();
        check_dates(&spec, &mut problems);
        problems.into_result(spec)
    }
}

fn check_dates(spec: &SubscriptionSpec, problems: &mut Problems) {
    if let Some(end) = spec.ended_at {
        if end <= spec.started_at {
            problems.push(
                "ended_at",
                "invalid_value",
                format!("must be after started_at ({})", format_micros(&spec.started_at)),
            );
        }
    }
}

/// Parses and validates a subscription definition, reporting every problem. That the end
/// comes after the start is checked once the start is known ([`SubscriptionInput::into_spec`]).
pub fn parse_subscription_input(value: &Value) -> Result<SubscriptionInput, Problems> {
    let mut problems = Problems::new();
    let Some(mut reader) = ObjectReader::new("", value, &mut problems) else {
        return Err(problems);
    };
    reader.refuse_read_only(&READ_ONLY_MEMBERS, &mut problems);
    let external_id = reader.required_string("external_id", MAX_EXTERNAL_ID_CHARS, &mut problems);
    let customer = reader.required_string("customer", MAX_EXTERNAL_ID_CHARS, &mut problems);
    let plan = reader.required_string("plan", MAX_REF_CHARS, &mut problems);
    let started_at = read_instant(&mut reader, "started_at", &mut problems);
    let ended_at = read_instant(&mut reader, "ended_at", &mut problems);
    let billing_anchor = read_anchor(&mut reader, &mut problems);
    let timezone = read_timezone(&mut reader, &mut problems);
    let name = reader.optional_string("name", MAX_NAME_CHARS, &mut problems);
    reader.finish(&mut problems);
    match (external_id, customer, plan, billing_anchor) {
        (Some(external_id), Some(customer), Some(plan), Some(billing_anchor))
            if problems.is_empty() =>
        {
            Ok(SubscriptionInput {
                external_id,
                customer,
                plan,
                started_at,
                ended_at,
                billing_anchor,
                timezone,
                name,
            })
        }
        _ => Err(problems),
    }
}

/// An optional instant member (RFC 3339 or Unix seconds, semantics 1.2).
fn read_instant(
    reader: &mut ObjectReader<'_>,
    key: &'static str,
    problems: &mut Problems,
) -> Option<DateTime<Utc>> {
    let path = reader.path(key);
    let value = reader.get(key)?;
    match parse_timestamp(value) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(path, "invalid_timestamp", e.message);
            None
        }
    }
}

/// `billing_anchor`: `calendar` when absent or null.
fn read_anchor(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<BillingAnchor> {
    let Some(value) = reader.get("billing_anchor") else {
        return Some(BillingAnchor::Calendar);
    };
    let anchor = value.as_str().and_then(parse_billing_anchor);
    if anchor.is_none() {
        let shown = match value {
            Value::String(text) => format!("'{}'", text.chars().take(64).collect::<String>()),
            other => type_name(other).to_owned(),
        };
        problems.push(
            "billing_anchor",
            "invalid_value",
            format!("must be 'calendar', 'anniversary' or a date YYYY-MM-DD, got {shown}"),
        );
    }
    anchor
}

fn read_timezone(reader: &mut ObjectReader<'_>, problems: &mut Problems) -> Option<Tz> {
    let text = reader.optional_string("timezone", 64, problems)?;
    let zone = text.parse::<Tz>().ok();
    if zone.is_none() {
        problems.push("timezone", "invalid_timezone", format!("'{text}' is not an IANA time zone"));
    }
    zone
}

/// A spec as an input document (the plan by id): what a patch is merged into.
fn input_document(spec: &SubscriptionSpec) -> Value {
    let mut doc = Map::new();
    doc.insert("external_id".into(), Value::String(spec.external_id.clone()));
    doc.insert("customer".into(), Value::String(spec.customer.clone()));
    doc.insert("plan".into(), Value::String(spec.plan_id.to_string()));
    doc.insert("started_at".into(), Value::String(format_micros(&spec.started_at)));
    if let Some(end) = &spec.ended_at {
        doc.insert("ended_at".into(), Value::String(format_micros(end)));
    }
    doc.insert("billing_anchor".into(), Value::String(billing_anchor_text(spec.billing_anchor)));
    doc.insert("timezone".into(), Value::String(spec.timezone.name().to_owned()));
    if let Some(name) = &spec.name {
        doc.insert("name".into(), Value::String(name.clone()));
    }
    Value::Object(doc)
}

/// Applies a JSON merge patch (RFC 7386: absent is unchanged, `null` clears) to a
/// subscription and validates the result. Only [`MUTABLE_MEMBERS`] may change; a cleared
/// `billing_anchor` is `calendar` again.
pub fn apply_subscription_patch(
    current: &SubscriptionSpec,
    patch: &Value,
) -> Result<SubscriptionSpec, Problems> {
    if !patch.is_object() {
        let mut problems = Problems::new();
        problems.push("", "invalid_type", "a patch must be a JSON object");
        return Err(problems);
    }
    let mut merged = input_document(current);
    json_patch::merge(&mut merged, patch);
    let input = parse_subscription_input(&merged)?;
    let mut problems = Problems::new();
    let unchanged = [
        ("external_id", input.external_id == current.external_id),
        ("customer", input.customer == current.customer),
        ("plan", input.plan == current.plan_id.to_string()),
        ("started_at", input.started_at == Some(current.started_at)),
        ("timezone", input.timezone == Some(current.timezone)),
    ];
    for (member, same) in unchanged {
        if !same {
            problems.push(member, "not_allowed", "cannot change after the subscription is created");
        }
    }
    let spec = SubscriptionSpec {
        external_id: current.external_id.clone(),
        customer: current.customer.clone(),
        plan_id: current.plan_id,
        started_at: current.started_at,
        ended_at: input.ended_at,
        billing_anchor: input.billing_anchor,
        timezone: current.timezone,
        name: input.name,
    };
    check_dates(&spec, &mut problems);
    problems.into_result(spec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instant(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn spec() -> SubscriptionSpec {
        parse_subscription_input(&json!({
            "external_id": "sub-1", "customer": "acme", "plan": "startup",
            "started_at": "2026-01-15T10:00:00Z", "billing_anchor": "anniversary",
            "name": "Acme on Startup"
        }))
        .unwrap()
        .into_spec(PlanId::new(), Some(chrono_tz::Europe::Paris), instant("2026-02-01T00:00:00Z"))
        .unwrap()
    }

    #[test]
    fn a_subscription_parses_with_defaults() {
        let now = instant("2026-03-01T00:00:00Z");
        let input = parse_subscription_input(&json!({
            "external_id": "s", "customer": "c", "plan": "p"
        }))
        .unwrap();
        assert_eq!(input.billing_anchor, BillingAnchor::Calendar);
        let plan = PlanId::new();
        let spec = input.clone().into_spec(plan, None, now).unwrap();
        assert_eq!((spec.started_at, spec.timezone, spec.plan_id), (now, Tz::UTC, plan));
        let paris = input.into_spec(plan, Some(chrono_tz::Europe::Paris), now).unwrap();
        assert_eq!(paris.timezone, chrono_tz::Europe::Paris, "the customer's zone by default");

        let explicit = parse_subscription_input(&json!({
            "external_id": "s", "customer": "c", "plan": "p", "timezone": "Asia/Tokyo",
            "billing_anchor": "2026-01-31", "started_at": 1767225600
        }))
        .unwrap()
        .into_spec(plan, Some(chrono_tz::Europe::Paris), now)
        .unwrap();
        assert_eq!(explicit.timezone, chrono_tz::Asia::Tokyo);
        let date = NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
        assert_eq!(explicit.billing_anchor, BillingAnchor::Date(date));
        assert_eq!(explicit.started_at, instant("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let problems = parse_subscription_input(&json!({
            "id": "sub_x", "customer": 3, "plan": "", "started_at": "yesterday",
            "ended_at": "2026-01-01T00:00:00Z", "billing_anchor": "2026-02-30",
            "timezone": "Mars/Base", "extra": null
        }))
        .unwrap_err();
        let found: Vec<(&str, &str)> = problems.iter().map(|p| (p.path.as_str(), p.code)).collect();
        assert_eq!(
            found,
            [
                ("id", "read_only"),
                ("external_id", "missing_field"),
                ("customer", "invalid_type"),
                ("plan", "invalid_value"),
                ("started_at", "invalid_timestamp"),
                ("billing_anchor", "invalid_value"),
                ("timezone", "invalid_timezone"),
                ("extra", "unknown_field"),
            ]
        );
    }

    #[test]
    fn the_end_comes_after_the_start() {
        let now = instant("2026-01-01T00:00:00Z");
        let doc = json!({"external_id": "s", "customer": "c", "plan": "p",
                         "started_at": "2026-02-01T00:00:00Z", "ended_at": "2026-02-01T00:00:00Z"});
        let problems = parse_subscription_input(&doc).unwrap().into_spec(PlanId::new(), None, now);
        assert_eq!(problems.unwrap_err().0[0].path, "ended_at");
        // A defaulted start is the creation instant.
        let doc = json!({"external_id": "s", "customer": "c", "plan": "p",
                         "ended_at": "2026-01-01T00:00:00Z"});
        let input = parse_subscription_input(&doc).unwrap();
        let late = instant("2026-06-01T00:00:00Z");
        let problems = input.into_spec(PlanId::new(), None, late).unwrap_err();
        assert_eq!(
            (problems.0[0].path.as_str(), problems.0[0].code),
            ("ended_at", "invalid_value")
        );
    }

    #[test]
    fn status_follows_termination_and_the_end() {
        let end = instant("2026-05-01T00:00:00Z");
        let before = instant("2026-04-30T23:59:59Z");
        let cases = [
            (None, None, before, SubscriptionStatus::Active),
            (Some(end), None, before, SubscriptionStatus::Active),
            (Some(end), None, end, SubscriptionStatus::Terminated),
            (None, Some(before), before, SubscriptionStatus::Terminated),
        ];
        for (ended_at, terminated_at, now, expected) in cases {
            assert_eq!(SubscriptionStatus::at(ended_at, terminated_at, now), expected);
        }
    }

    #[test]
    fn patches_change_only_the_mutable_members() {
        let current = spec();
        let next = apply_subscription_patch(
            &current,
            &json!({"name": null, "ended_at": "2026-06-01T00:00:00+02:00",
                    "billing_anchor": "calendar", "customer": "acme"}),
        )
        .unwrap();
        assert_eq!(next.name, None);
        assert_eq!(next.ended_at, Some(instant("2026-05-31T22:00:00Z")));
        assert_eq!(next.billing_anchor, BillingAnchor::Calendar);
        assert_eq!((next.customer.as_str(), next.timezone), ("acme", chrono_tz::Europe::Paris));

        let cleared = apply_subscription_patch(&next, &json!({"billing_anchor": null})).unwrap();
        assert_eq!(cleared.billing_anchor, BillingAnchor::Calendar);

        let problems = apply_subscription_patch(
            &current,
            &json!({"customer": "other", "plan": "other", "timezone": null, "status": "active",
                    "ended_at": "2026-01-01T00:00:00Z"}),
        )
        .unwrap_err();
        let found: Vec<(&str, &str)> = problems.iter().map(|p| (p.path.as_str(), p.code)).collect();
        assert_eq!(found, [("status", "read_only")], "validation of the document comes first");
        let problems = apply_subscription_patch(
            &current,
            &json!({"customer": "other", "plan": "other", "timezone": null,
                    "ended_at": "2026-01-01T00:00:00Z"}),
        )
        .unwrap_err();
        let found: Vec<(&str, &str)> = problems.iter().map(|p| (p.path.as_str(), p.code)).collect();
        assert_eq!(
            found,
            [
                ("customer", "not_allowed"),
                ("plan", "not_allowed"),
                ("timezone", "not_allowed"),
                ("ended_at", "invalid_value"),
            ]
        );
        assert!(apply_subscription_patch(&current, &json!([])).is_err());
    }

    #[test]
    fn terminating_ends_at_the_earlier_instant_never_before_the_start() {
        let mut sub =
            Subscription::new(OrganizationId::new(), spec(), instant("2026-02-01T00:00:00Z"));
        let at = instant("2026-03-01T00:00:00Z");
        assert_eq!(sub.end_when_terminated(at), at);
        sub.spec.ended_at = Some(instant("2026-02-15T00:00:00Z"));
        assert_eq!(sub.end_when_terminated(at), instant("2026-02-15T00:00:00Z"));
        assert_eq!(sub.end_when_terminated(instant("2025-01-01T00:00:00Z")), sub.spec.started_at);
    }

    #[test]
    fn schedules_and_the_canonical_json() {
        let sub = Subscription::new(OrganizationId::new(), spec(), instant("2026-02-01T00:00:00Z"));
        let schedule = sub.schedule(PlanInterval::Monthly);
        assert_eq!(schedule.anchor, BillingAnchor::Anniversary);
        assert_eq!(schedule.timezone, chrono_tz::Europe::Paris);
        assert_eq!(schedule.started_at, instant("2026-01-15T10:00:00Z"));
        let json = serde_json::to_value(&sub).unwrap();
        assert_eq!(json["spec"]["billing_anchor"], "anniversary");
        assert_eq!(json["spec"]["timezone"], "Europe/Paris");
        assert_eq!(json["status"], "active");
        assert_eq!(serde_json::from_value::<Subscription>(json).unwrap(), sub);
        for text in ["calendar", "anniversary", "2024-02-29"] {
            assert_eq!(billing_anchor_text(parse_billing_anchor(text).unwrap()), text);
        }
        for bad in ["Calendar", "2024-2-29", "2023-02-29", ""] {
            assert_eq!(parse_billing_anchor(bad), None, "{bad}");
        }
    }
}
