//! The native API's one mapping: domain types from `odometer-core` into the wire types of
//! [`super::dto`].

use odometer_core::event::StoredEvent;
use odometer_core::metric::{Aggregation, FieldChange, Filter, Segmentation};
use odometer_core::time::format_micros;
use odometer_core::usage::{GroupUsage, Segment, UsageQuery};
use odometer_core::{Customer, Metric, MetricRevision, MetricSpec, Organization};
use odometer_store::{Page, UsageAnswer, UsagePath};
use serde_json::Value;

use super::dto::{
    AggregationDto, CustomerDto, DimensionDto, EventDto, FieldChangeDto, FilterDto, ListDto,
    MetricDefinitionDto, MetricDto, MetricRevisionDto, OrganizationDto, OrganizationSettingsDto,
    RoundingDto, SegmentationDto, UnitConversionDto, UsageDto, UsageGroupDto, UsageMetricDto,
    UsageWindowDto,
};

pub fn metric(m: &Metric) -> MetricDto {
    MetricDto {
        id: m.id.to_string(),
        definition: definition(&m.spec),
        revision: m.revision,
        created_at: format_micros(&m.created_at),
        updated_at: format_micros(&m.updated_at),
        archived_at: m.archived_at.as_ref().map(format_micros),
        deleted_at: m.deleted_at.as_ref().map(format_micros),
    }
}

pub fn revision(r: &MetricRevision) -> MetricRevisionDto {
    MetricRevisionDto {
        metric_id: r.metric_id.to_string(),
        revision: r.revision,
        effective_at: format_micros(&r.effective_at),
        changes: r.changes.iter().map(field_change).collect(),
        definition: definition(&r.spec),
    }
}

pub fn field_change(c: &FieldChange) -> FieldChangeDto {
    FieldChangeDto { path: c.path.clone(), before: c.before.clone(), after: c.after.clone() }
}

pub fn definition(s: &MetricSpec) -> MetricDefinitionDto {
    MetricDefinitionDto {
        code: s.code.clone(),
        event_code: s.event_code.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        aggregation: aggregation(&s.aggregation),
        filters: s.filters.iter().map(filter).collect(),
        segmentation: s.segmentation.as_ref().map(segmentation),
        group_by: s.group_by.clone(),
        unit_conversion: s.unit_conversion.as_ref().map(|u| UnitConversionDto {
            factor: u.factor.to_string(),
            rounding: u.rounding.as_str().to_owned(),
        }),
        rounding: s.rounding.map(|r| RoundingDto {
            function: r.function.as_str().to_owned(),
            precision: r.precision,
        }),
        product_family_id: s.product_family_id.clone(),
        product_id: s.product_id.clone(),
    }
}

fn aggregation(a: &Aggregation) -> AggregationDto {
    let kind = a.kind.as_str().to_owned();
    match &a.sql {
        Some(sql) => AggregationDto {
            kind,
            field: None,
            recurring: None,
            expression: None,
            query: Some(sql.query.clone()),
            customer_query: sql.customer_query.clone(),
            dataschema: sql.dataschema.clone(),
            visual_query_builder: sql.visual_query_builder.clone(),
            datasource: sql.datasource.clone(),
        },
        None => AggregationDto {
            kind,
            field: a.field.clone(),
            recurring: Some(a.recurring),
            expression: Some(a.expression.clone()),
            query: None,
            customer_query: None,
            dataschema: None,
            visual_query_builder: None,
            datasource: None,
        },
    }
}

fn filter(f: &Filter) -> FilterDto {
    FilterDto {
        property: f.property.clone(),
        op: f.op.as_str().to_owned(),
        values: f.values.clone(),
    }
}

fn segmentation(s: &Segmentation) -> SegmentationDto {
    let unmatched = s.unmatched().as_str().to_owned();
    match s {
        Segmentation::Single { key, values, .. } => {
            SegmentationDto::Single { key: key.clone(), values: values.clone(), unmatched }
        }
        Segmentation::Double { dimension1, dimension2, .. } => SegmentationDto::Double {
            dimension1: DimensionDto {
                key: dimension1.key.clone(),
                values: dimension1.values.clone(),
            },
            dimension2: DimensionDto {
                key: dimension2.key.clone(),
                values: dimension2.values.clone(),
            },
            unmatched,
        },
        Segmentation::Linked { dimension1_key, dimension2_key, values, .. } => {
            SegmentationDto::Linked {
                dimension1_key: dimension1_key.clone(),
                dimension2_key: dimension2_key.clone(),
                values: values.clone(),
                unmatched,
            }
        }
    }
}

pub fn customer(c: &Customer) -> CustomerDto {
    CustomerDto {
        id: c.id.to_string(),
        external_id: c.spec.external_id.clone(),
        name: c.spec.name.clone(),
        email: c.spec.email.clone(),
        timezone: c.spec.timezone.clone(),
        metadata: Value::Object(c.spec.metadata.clone()),
        created_at: format_micros(&c.created_at),
        updated_at: format_micros(&c.updated_at),
    }
}

pub fn organization(o: &Organization) -> OrganizationDto {
    OrganizationDto {
        id: o.id.to_string(),
        name: o.name.clone(),
        settings: OrganizationSettingsDto {
            accept_unknown_codes: o.settings.accept_unknown_codes,
            create_customers_on_first_sight: o.settings.create_customers_on_first_sight,
            future_timestamp_tolerance_seconds: o.settings.future_timestamp_tolerance_seconds,
        },
        created_at: format_micros(&o.created_at),
    }
}

pub fn page<T, D: utoipa::ToSchema>(page: Page<T>, map: impl Fn(&T) -> D) -> ListDto<D> {
    ListDto { data: page.items.iter().map(map).collect(), next_cursor: page.next_cursor }
}

pub fn event(e: &StoredEvent) -> EventDto {
    EventDto {
        transaction_id: e.event.transaction_id.clone(),
        code: e.event.code.clone(),
        customer: e.event.customer.clone(),
        timestamp: format_micros(&e.event.timestamp),
        properties: Value::Object(e.event.properties.clone()),
        sequence: e.sequence,
        ingested_at: format_micros(&e.ingested_at),
    }
}

/// What a usage answer says about the question, shared by every customer's result.
#[derive(Debug)]
pub struct UsageHeader<'a> {
    pub metric: &'a Metric,
    pub revision: u32,
    /// The revision's definition (its segmentation names the segment keys).
    pub spec: &'a MetricSpec,
    pub query: &'a UsageQuery,
}

pub fn usage(header: &UsageHeader<'_>, customer: &str, answer: &UsageAnswer) -> UsageDto {
    let result = &answer.result;
    let (answered_from, events_reason) = match answer.path {
        UsagePath::Index { edges: false } => ("index", None),
        UsagePath::Index { edges: true } => ("index+edges", None),
        UsagePath::Events(reason) => ("events", Some(reason.as_str().to_owned())),
    };
    let spec_keys: Vec<String> = header
        .spec
        .segmentation
        .as_ref()
        .map(|s| s.keys().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let query = header.query;
    UsageDto {
        metric: UsageMetricDto {
            id: header.metric.id.to_string(),
            code: header.metric.spec.code.clone(),
            revision: header.revision,
        },
        customer: customer.to_owned(),
        from: format_micros(&query.from),
        to: format_micros(&query.to),
        window: query.window.as_str().to_owned(),
        timezone: query.timezone.name().to_owned(),
        as_of: query.as_of.as_ref().map(format_micros),
        group_by: query.group_by.clone(),
        windows: result
            .windows
            .iter()
            .map(|w| UsageWindowDto {
                from: format_micros(&w.from),
                to: format_micros(&w.to),
                total: w.total.map(|d| d.to_string()),
                events_excluded: w.events_excluded,
                groups: w
                    .groups
                    .iter()
                    .map(|g| usage_group(g, &spec_keys, &query.group_by))
                    .collect(),
            })
            .collect(),
        answered_from: answered_from.to_owned(),
        events_reason,
    }
}

fn usage_group(g: &GroupUsage, segment_keys: &[String], group_by: &[String]) -> UsageGroupDto {
    let segment = match &g.key.segment {
        Segment::None => Value::Null,
        Segment::Other => Value::String("other".to_owned()),
        Segment::Matched(values) => Value::Object(
            segment_keys
                .iter()
                .cloned()
                .zip(values.iter().map(|v| Value::String(v.clone())))
                .collect(),
        ),
    };
    let group_by = Value::Object(
        group_by
            .iter()
            .cloned()
            .zip(g.key.group_by.iter().map(|v| v.clone().map_or(Value::Null, Value::String)))
            .collect(),
    );
    UsageGroupDto {
        segment,
        group_by,
        value: g.value.map(|d| d.to_string()),
        events_count: g.events_count,
        events_skipped: g.events_skipped,
    }
}
