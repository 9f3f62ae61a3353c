//! The two text formats of `/metrics`. The registry encodes OpenMetrics, which Prometheus
//! asks for (`Accept: application/openmetrics-text`); everything else (curl, `promtool check
//! metrics`, older scrapers) gets the Prometheus text format 0.0.4, converted here: a
//! counter's family takes its samples' `_total` name, `# UNIT` and `# EOF` go, and
//! `unknown` becomes `untyped`.

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// `openmetrics` (as [`super::Metrics::encode`] writes it) in the Prometheus text format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut family: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        // A family starts at its `# HELP`, or at a `# TYPE` with no `# HELP` before it.
        let typed = family.iter().any(|l| l.starts_with("# TYPE "));
        if line.starts_with("# HELP ") || (line.starts_with("# TYPE ") && typed) {
            flush(&mut out, &family);
            family.clear();
        }
        if line != "# EOF" && !line.starts_with("# UNIT ") {
            family.push(line);
        }
    }
    flush(&mut out, &family);
    out
}

/// Writes one family: its `# HELP`, `# TYPE` and samples.
fn flush(out: &mut String, family: &[&str]) {
    let kind = family
        .iter()
        .find_map(|l| l.strip_prefix("# TYPE "))
        .and_then(|t| t.split_once(' '))
        .map(|(_, kind)| kind);
    for line in family {
        let line = match (kind, line.strip_prefix("# ")) {
            (Some("counter"), Some(meta)) => counter_meta(meta),
            (Some("unknown"), Some(meta)) if meta.starts_with("TYPE ") => {
                format!("# {}", meta.replacen(" unknown", " untyped", 1))
            }
            // A counter's creation time has no place in the older format.
            (Some("counter"), None) if sample_name(line).ends_with("_created") => continue,
            _ => (*line).to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
}

/// `HELP name …` / `TYPE name counter` of a counter, named as its samples are (`_total`).
fn counter_meta(meta: &str) -> String {
    let mut parts = meta.splitn(3, ' ');
    let (what, name, rest) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next(),
    );
    let name = if name.ends_with("_total") {
        name.to_owned()
    } else {
        format!("{name}_total")
    };
    match rest {
        Some(rest) => format!("# {what} {name} {rest}"),
        None => format!("# {what} {name}"),
    }
}

/// The metric name of a sample line.
fn sample_name(line: &str) -> &str {
    line.split(['{', ' ']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_samples_name_and_openmetrics_only_lines_go() {
        let om = "# HELP jit_x Things.\n# TYPE jit_x counter\njit_x_total{a=\"b\"} 2\njit_x_created{a=\"b\"} 1.5\n# HELP jit_up Up.\n# TYPE jit_up gauge\n# UNIT jit_up none\njit_up 1\n# TYPE jit_u unknown\njit_u 3\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP jit_x_total Things.\n# TYPE jit_x_total counter\njit_x_total{a=\"b\"} 2\n# HELP jit_up Up.\n# TYPE jit_up gauge\njit_up 1\n# TYPE jit_u untyped\njit_u 3\n"
        );
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }

    /// Every `jit_*` metric the shipped alerts read is one the broker exports.
    #[test]
    fn the_alerts_read_metrics_that_exist() {
        let alerts = include_str!("../../../deploy/prometheus/alerts.yaml");
        let m = super::super::Metrics::new();
        m.audit_event("access.denied");
        m.audit_failed(1);
        m.store_up(true);
        m.certificate_expires("tls", 1);
        m.http_request(
            &super::super::HttpLabels {
                route: super::super::GATEWAY_ROUTE.into(),
                method: "GET",
                status: 200,
            },
            std::time::Duration::from_millis(1),
        );
        let text = m.encode_prometheus_text();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut used: Vec<&str> = alerts
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("jit_"))
            .collect();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() >= 5, "{used:?}");
        for name in used {
            let family = ["_count", "_sum", "_bucket"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                families.contains(&family),
                "alerts.yaml reads {name}, which /metrics does not export: {families:?}"
            );
        }
    }
}
