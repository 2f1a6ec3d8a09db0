//! Core and store types to the Zenskar dialect's JSON: the only mapping of this dialect.

use odometer_core::time::format_micros;
use odometer_core::Metric;
use odometer_store::usage_tables::UsageTable;
use serde_json::{json, Value};

/// An aggregate: `aggregation_query` and `cust_agg_query` are the SQL; `dataschema`,
/// `visual_query_builder` and `datasource` are returned exactly as they were sent.
pub fn aggregate_json(metric: &Metric) -> Value {
    let sql = metric.spec.aggregation.sql.as_ref();
    json!({
        "id": metric.id.as_uuid().to_string(),
        "name": metric.spec.name,
        "aggregation_query": sql.map(|s| s.query.clone()),
        "cust_agg_query": sql.and_then(|s| s.customer_query.clone()),
        "dataschema": sql.and_then(|s| s.dataschema.clone()),
        "visual_query_builder": sql.and_then(|s| s.visual_query_builder.clone()),
        "datasource": sql.and_then(|s| s.datasource.clone()),
        "revision": metric.revision,
        "created_at": format_micros(&metric.created_at),
        "updated_at": format_micros(&metric.updated_at),
    })
}

/// A raw metric (usage table).
pub fn raw_metric_json(table: &UsageTable) -> Value {
    json!({
        "id": table.id,
        "name": table.name,
        "api_slug": table.api_slug,
        "description": table.description,
        "dataschema": table.dataschema,
        "column_order": ["timestamp"],
        "created_at": format_micros(&table.created_at),
    })
}
