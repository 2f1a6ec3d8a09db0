//! Metric updates (semantics section 6): JSON merge patches that produce a new revision, the
//! list of what changed, and the lock rule for metrics attached to a plan.

use serde_json::{Map, Value};

use crate::metric::{FieldChange, MetricSpec};
use crate::metric_input::parse_metric_spec;
use crate::problem::{join, Problems};

/// The fields that may not change while a metric is attached to a plan (semantics 6.3), as the
/// paths [`FieldChange`] uses.
pub const LOCKED_FIELDS: [&str; 5] = [
    "event_code",
    "aggregation.type",
    "aggregation.field",
    "aggregation.expression",
    "aggregation.recurring",
];

/// The outcome of applying a patch: the new definition and what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPatch {
    pub spec: MetricSpec,
    /// Empty when the patch changes nothing (no new revision is needed).
    pub changes: Vec<FieldChange>,
    /// The revision the client said it was patching (`"revision": n` in the patch), if any.
    pub expected_revision: Option<u32>,
}

/// A patch that would change locked fields of an attached metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}, so these fields cannot change: {}", attached_to(plans), fields.join(", "))]
pub struct MetricLocked {
    pub fields: Vec<&'static str>,
    /// The codes of the plans that lock it, when the caller looked them up (else empty).
    pub plans: Vec<String>,
}

fn attached_to(plans: &[String]) -> String {
    match plans {
        [] => "the metric is attached to a plan".to_owned(),
        [one] => format!("the metric is attached to plan '{one}'"),
        many => format!(
            "the metric is attached to plans {}",
            many.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Applies a JSON merge patch (RFC 7386: an absent member is unchanged, `null` clears it) to
/// `current` and validates the result as a whole definition.
///
/// A `revision` member is not a change: it states which revision the client read, and the
/// caller checks it against the stored one (optimistic concurrency).
pub fn apply_metric_patch(current: &MetricSpec, patch: &Value) -> Result<MetricPatch, Problems> {
    let mut problems = Problems::new();
    let Value::Object(members) = patch else {
        problems.push("", "invalid_type", "a patch must be a JSON object");
        return Err(problems);
    };
    let mut members: Map<String, Value> = members.clone();
    let expected_revision = match members.remove("revision") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= 1 => Some(n),
            _ => {
                problems.push(
                    "revision",
                    "invalid_value",
                    format!("must be a revision number, got {v}"),
                );
                return Err(problems);
            }
        },
    };
    let before = current.to_json();
    let mut merged = before.clone();
    json_patch::merge(&mut merged, &Value::Object(members));
    let spec = parse_metric_spec(&merged)?;
    let changes = diff(&before, &spec.to_json());
    Ok(MetricPatch { spec, changes, expected_revision })
}

/// The locked fields that differ between two definitions, in [`LOCKED_FIELDS`] order.
pub fn locked_changes(before: &MetricSpec, after: &MetricSpec) -> Vec<&'static str> {
    let (a, b) = (&before.aggregation, &after.aggregation);
    let differs = [
        before.event_code != after.event_code,
        a.kind != b.kind,
        a.field != b.field,
        a.expression != b.expression,
        a.recurring != b.recurring,
    ];
    LOCKED_FIELDS.iter().zip(differs).filter(|(_, d)| *d).map(|(f, _)| *f).collect()
}

/// The lock rule as a pure function: an update of a metric that `attached` to a plan may not
/// change its locked fields.
pub fn check_lock(
    before: &MetricSpec,
    after: &MetricSpec,
    attached: bool,
) -> Result<(), MetricLocked> {
    if !attached {
        return Ok(());
    }
    let fields = locked_changes(before, after);
    if fields.is_empty() {
        Ok(())
    } else {
        Err(MetricLocked { fields, plans: Vec::new() })
    }
}

/// What changed between two JSON documents, member by member; arrays and scalars compare
/// whole, objects recurse. An absent member and a null one are the same.
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    diff_into("", before, after, &mut changes);
    changes
}

fn diff_into(path: &str, before: &Value, after: &Value, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().collect();
            keys.extend(b.keys().filter(|k| !a.contains_key(*k)));
            for key in keys {
                let av = a.get(key).unwrap_or(&Value::Null);
                let bv = b.get(key).unwrap_or(&Value::Null);
                diff_into(&join(path, key), av, bv, out);
            }
        }
        _ if before == after => {}
        _ => out.push(FieldChange {
            path: path.to_owned(),
            before: before.clone(),
            after: after.clone(),
        }),
    }
}
