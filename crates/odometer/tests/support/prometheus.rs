//! A strict reader of the Prometheus text format, for the tests that scrape `/metrics`.

use std::collections::HashMap;

/// One sample: its family name, its labels, its value.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Parses the text format strictly: `# HELP`/`# TYPE` comments, then `name{k="v",...} value`
/// lines. Every sample's family must have been typed before it.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut typed: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap().to_owned();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram", "summary"].contains(&kind), "{line}");
            typed.push(name);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), HashMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels: {line}"));
                let labels = body
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.iter().any(|t| t == f)))
            .unwrap_or(&name);
        assert!(typed.iter().any(|t| t == family), "sample before its # TYPE: {line}");
        samples.push(Sample { name, labels, value });
    }
    samples
}

/// The value of the one sample of `name` whose labels include `labels` (0 when none).
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?} is ambiguous: {matching:?}");
    matching.first().map_or(0.0, |s| s.value)
}
