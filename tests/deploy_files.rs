//! The Grafana dashboard and the Prometheus alerts ask only for metrics
//! berth serves (a renamed metric would leave a panel empty and an alert
//! silent without any error). `promtool` checks the alerts' logic in
//! scripts/test.

use std::collections::BTreeSet;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("berth_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// What the metrics endpoint declares, from its `# TYPE` lines; histogram
/// series add their suffixes.
fn served() -> BTreeSet<String> {
    let source = include_str!("../src/metrics.rs");
    let mut served = BTreeSet::new();
    for line in source.lines() {
        if let Some(at) = line.find("# TYPE berth_") {
            let mut words = line[at + 7..].split_whitespace();
            let name = words.next().unwrap().to_string();
            if words
                .next()
                .is_some_and(|kind| kind.starts_with("histogram"))
            {
                for suffix in ["_bucket", "_sum", "_count"] {
                    served.insert(format!("{name}{suffix}"));
                }
            }
            served.insert(name);
        }
    }
    served
}

#[test]
fn the_dashboard_and_the_alerts_use_only_served_metrics() {
    let served = served();
    assert!(served.contains("berth_engine_up"), "{served:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../deploy/grafana/berth.json")).expect("JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let alerts = include_str!("../deploy/prometheus/alerts.yml");
    for (file, text) in [("berth.json", exprs.as_str()), ("alerts.yml", alerts)] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{file} uses no berth metric");
        for name in used {
            assert!(
                served.contains(&name),
                "{file} uses {name}, which berth does not serve"
            );
        }
    }
}
