//! The `/docs` page: a self-contained HTML reference rendered from the OpenAPI document at
//! start-up (no scripts, no CDN, so it works on a machine without internet).

use serde_json::Value;
use utoipa::openapi::OpenApi;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Renders the reference page for `openapi`.
pub fn render(openapi: &OpenApi) -> String {
    let doc = serde_json::to_value(openapi).unwrap_or(Value::Null);
    let mut html = String::new();
    let title = text(&doc["info"]["title"]);
    html.push_str(&format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} API reference</title><style>{}</style></head><body>",
        escape(&title),
        STYLE
    ));
    html.push_str(&format!("<h1>{} API reference</h1>", escape(&title)));
    html.push_str(&format!("<p>{}</p>", escape(&text(&doc["info"]["description"]))));
    html.push_str(
        "<p>The machine-readable document is at <a href=\"/openapi.json\">/openapi.json</a>.</p>",
    );

    html.push_str("<h2>Operations</h2>");
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                html.push_str(&operation(method, path, op));
            }
        }
    }
    html.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            html.push_str(&format!(
                "<section id=\"schema-{0}\"><h3>{0}</h3>{1}</section>",
                escape(name),
                schema_table(schema)
            ));
        }
    }
    html.push_str("</body></html>");
    html
}

fn operation(method: &str, path: &str, op: &Value) -> String {
    let mut out = format!(
        "<section class=\"op\"><h3><span class=\"method {m}\">{M}</span> <code>{p}</code></h3>",
        m = method,
        M = method.to_uppercase(),
        p = escape(path)
    );
    let summary = text(&op["summary"]);
    if !summary.is_empty() {
        out.push_str(&format!("<p><strong>{}</strong></p>", escape(&summary)));
    }
    let description = text(&op["description"]);
    if !description.is_empty() {
        out.push_str(&format!("<p>{}</p>", escape(&description)));
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str(
            "<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>",
        );
        for p in params {
            out.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&text(&p["name"])),
                escape(&text(&p["in"])),
                if p["required"].as_bool().unwrap_or(false) { "yes" } else { "no" },
                escape(&text(&p["description"]))
            ));
        }
        out.push_str("</table>");
    }
    if let Some(schema) = op["requestBody"]["content"]["application/json"]["schema"].as_object() {
        out.push_str(&format!(
            "<p>Request body: {}</p>",
            schema_ref(&Value::Object(schema.clone()))
        ));
    }
    if let Some(responses) = op["responses"].as_object() {
        out.push_str("<table><tr><th>status</th><th>description</th><th>body</th></tr>");
        for (status, response) in responses {
            let body = response["content"]["application/json"]["schema"].clone();
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(status),
                escape(&text(&response["description"])),
                if body.is_null() { String::new() } else { schema_ref(&body) }
            ));
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
    out
}

fn schema_table(schema: &Value) -> String {
    let mut out = String::new();
    let description = text(&schema["description"]);
    if !description.is_empty() {
        out.push_str(&format!("<p>{}</p>", escape(&description)));
    }
    let mut parts = vec![schema.clone()];
    for key in ["allOf", "oneOf"] {
        if let Some(items) = schema[key].as_array() {
            parts.extend(items.iter().cloned());
        }
    }
    let mut rows = String::new();
    for part in &parts {
        if let Some(props) = part["properties"].as_object() {
            let required: Vec<&str> = part["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (name, prop) in props {
                rows.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(name),
                    schema_ref(prop),
                    if required.contains(&name.as_str()) { "yes" } else { "no" },
                    escape(&text(&prop["description"]))
                ));
            }
        } else if let Some(r) = part["$ref"].as_str() {
            rows.push_str(&format!(
                "<tr><td colspan=\"4\">and every field of {}</td></tr>",
                ref_link(r)
            ));
        }
    }
    if !rows.is_empty() {
        out.push_str(
            "<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>",
        );
        out.push_str(&rows);
        out.push_str("</table>");
    }
    out
}

fn schema_ref(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return ref_link(r);
    }
    if let Some(items) = schema["oneOf"].as_array().or_else(|| schema["anyOf"].as_array()) {
        return items.iter().map(schema_ref).collect::<Vec<_>>().join(" | ");
    }
    match &schema["type"] {
        Value::String(t) if t == "array" => format!("array of {}", schema_ref(&schema["items"])),
        Value::String(t) => escape(t),
        Value::Array(types) => {
            types.iter().map(text).map(|t| escape(&t)).collect::<Vec<_>>().join(" | ")
        }
        _ => "any".to_owned(),
    }
}

fn ref_link(reference: &str) -> String {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    format!("<a href=\"#schema-{0}\">{0}</a>", escape(name))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
table{border-collapse:collapse;margin:.5rem 0;width:100%}td,th{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}\
.op{border-top:1px solid #ccc;padding-top:.5rem}.method{font-family:monospace;padding:.1rem .4rem;border-radius:3px;color:#fff;background:#555}\
.get{background:#2b6cb0}.post{background:#2f855a}.patch{background:#b7791f}.delete{background:#c53030}.put{background:#6b46c1}code{background:#f4f4f4;padding:0 .2rem}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_text() {
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }

    #[test]
    fn renders_every_operation_of_the_native_api() {
        let (_, openapi) = crate::native::router();
        let html = render(&openapi);
        for needle in [
            "<code>/v1/metrics</code>",
            "<code>/v1/metrics/{id_or_code}/revisions</code>",
            "PATCH",
            "id=\"schema-MetricDto\"",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
    }
}
