//! Exposition: the Prometheus text format 0.0.4 and OpenMetrics 1.0, chosen per scrape from
//! the `Accept` header.
//!
//! Cost series are encoded once per refresh, in both formats, when the snapshot is built
//! ([`encode_costs`]); a scrape only renders the small self-metrics section and appends the
//! pre-encoded bytes ([`render`]). Label values from Atlas are escaped here, once.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::metrics::SelfMetrics;
use crate::month::Month;
use crate::snapshot::Snapshot;

/// The exposition format of a scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what promtool and most scrapers read.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The quality (`q`) a media range in an `Accept` header gives, or 1.0 when it has none.
fn quality(params: &str) -> f32 {
    params
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("q="))
        .find_map(|q| q.trim().parse::<f32>().ok())
        .unwrap_or(1.0)
}

/// Picks OpenMetrics when the `Accept` header asks for it at least as much as for plain
/// text, and text 0.0.4 otherwise.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    let mut openmetrics = 0.0f32;
    let mut text = 0.0f32;
    for range in accept.split(',') {
        let (media, params) = range.split_once(';').unwrap_or((range, ""));
        let q = quality(params);
        match media.trim().to_ascii_lowercase().as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "*/*" | "text/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Whether an `Accept-Encoding` header accepts gzip (with a non-zero quality).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|h| {
        h.split(',').any(|item| {
            let (coding, params) = item.split_once(';').unwrap_or((item, ""));
            let coding = coding.trim();
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && quality(params) > 0.0
        })
    })
}

/// Appends `value` escaped as a label value (both formats): `\` `"` and newline.
pub fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `name="value"` (with a leading comma unless it is the first label).
pub fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    escape_label_value(out, value);
    out.push('"');
}

/// Appends an amount in micro-dollars as an exact decimal: `51.19`, `-0.000005`, `0`.
pub fn push_micros(out: &mut String, micros: i64) {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (whole, frac) = (abs / 1_000_000, abs % 1_000_000);
    let _ = write!(out, "{sign}{whole}");
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// One cost series: pre-rendered labels (without `month`), its month and amount.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CostSeries {
    /// `query="..",org_id="..",...`, escaped, in a fixed order.
    pub labels: String,
    /// The usage month.
    pub month: Month,
    /// The amount, micro-dollars.
    pub micros: i64,
}

/// The cost families, encoded in both formats (without `# EOF`).
#[derive(Clone, Debug, Default)]
pub struct EncodedCosts {
    /// Text format 0.0.4.
    pub text: bytes::Bytes,
    /// OpenMetrics.
    pub openmetrics: bytes::Bytes,
    /// Series in `atlas_cost_usage_usd`.
    pub usage_series: usize,
}

impl EncodedCosts {
    /// Appends families whose text reads the same in both formats (gauges without units),
    /// such as the forecasts and budgets of [`crate::budget::encode`].
    pub fn append_shared(&mut self, extra: &str) {
        let mut body = Vec::with_capacity(self.text.len() + extra.len());
        body.extend_from_slice(&self.text);
        body.extend_from_slice(extra.as_bytes());
        let body = bytes::Bytes::from(body);
        self.text = body.clone();
        self.openmetrics = body;
    }
}

const USAGE: &str = "atlas_cost_usage_usd";
const MTD: &str = "atlas_cost_month_to_date_usd";

fn family_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// Encodes every cost series: `atlas_cost_usage_usd` for every month and
/// `atlas_cost_month_to_date_usd` for `current` only. Both formats read the same for
/// gauges, so the body is built once and shared.
pub fn encode_costs(series: &[&CostSeries], current: Month, refresh: &str) -> EncodedCosts {
    let mut out = String::with_capacity(series.len() * 200 + 1024);
    family_header(
        &mut out,
        USAGE,
        &format!(
            "Atlas Cost Explorer usage per calendar month (UTC) in USD; credits for customers on a sales contract. Cached: refreshed every {refresh}, see atlas_cost_query_data_age_seconds"
        ),
    );
    for s in series {
        let _ = write!(out, "{USAGE}{{{},month=\"{}\"}} ", s.labels, s.month);
        push_micros(&mut out, s.micros);
        out.push('\n');
    }
    family_header(
        &mut out,
        MTD,
        &format!(
            "Atlas Cost Explorer usage of the current UTC month so far, in USD (credits on a sales contract). Atlas posts charges a day late. Cached: refreshed every {refresh}"
        ),
    );
    for s in series.iter().filter(|s| s.month == current) {
        let _ = write!(out, "{MTD}{{{}}} ", s.labels);
        push_micros(&mut out, s.micros);
        out.push('\n');
    }
    let bytes = bytes::Bytes::from(out);
    EncodedCosts {
        text: bytes.clone(),
        openmetrics: bytes,
        usage_series: series.len(),
    }
}

/// Rewrites prometheus-client's OpenMetrics output as text 0.0.4: no `# UNIT` or `# EOF`,
/// and counters named with their `_total` suffix in HELP and TYPE.
pub fn openmetrics_to_text(src: &str, out: &mut String) {
    let mut pending_help: Option<&str> = None;
    for line in src.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = pending_help.replace(rest) {
                let _ = writeln!(out, "# HELP {h}");
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some(h) = pending_help.take() {
                let (hname, htext) = h.split_once(' ').unwrap_or((h, ""));
                let _ = writeln!(out, "# HELP {hname}{suffix} {htext}");
            }
            let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
            continue;
        }
        if let Some(h) = pending_help.take() {
            let _ = writeln!(out, "# HELP {h}");
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = pending_help {
        let _ = writeln!(out, "# HELP {h}");
    }
}

/// Seconds since the Unix epoch, as a float.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Renders the per-scrape section: query state gauges computed from the snapshot at `now`.
fn render_state(out: &mut String, snapshot: &Snapshot, now: SystemTime) {
    let refresh = &snapshot.refresh;
    let q = |s: &crate::snapshot::QueryStatus| {
        let mut l = String::new();
        push_label(&mut l, "query", &s.query);
        push_label(&mut l, "org_id", &s.org_id);
        l
    };
    family_header(
        out,
        "atlas_cost_query_up",
        &format!(
            "1 if the last refresh of the query succeeded, 0 if it failed or has not run yet (refreshed every {refresh})"
        ),
    );
    for s in &snapshot.statuses {
        let _ = writeln!(out, "atlas_cost_query_up{{{}}} {}", q(s), u8::from(s.up));
    }
    family_header(
        out,
        "atlas_cost_query_last_success_timestamp_seconds",
        "Unix time of the last successful refresh of the query",
    );
    for s in &snapshot.statuses {
        if let Some(t) = s.last_success {
            let _ = writeln!(
                out,
                "atlas_cost_query_last_success_timestamp_seconds{{{}}} {:.3}",
                q(s),
                unix_seconds(t)
            );
        }
    }
    family_header(
        out,
        "atlas_cost_query_data_age_seconds",
        &format!(
            "Age of the cost data served for the query: now minus its last successful refresh (refreshed every {refresh})"
        ),
    );
    for s in &snapshot.statuses {
        if let Some(t) = s.last_success {
            let age = now.duration_since(t).map_or(0.0, |d| d.as_secs_f64());
            let _ = writeln!(
                out,
                "atlas_cost_query_data_age_seconds{{{}}} {age:.3}",
                q(s)
            );
        }
    }
    family_header(
        out,
        "atlas_cost_query_series",
        "Cost series (atlas_cost_usage_usd) the query contributes, from its last successful refresh",
    );
    for s in &snapshot.statuses {
        let _ = writeln!(out, "atlas_cost_query_series{{{}}} {}", q(s), s.series);
    }
    family_header(
        out,
        "atlas_cost_build_info",
        "Build information of atlas-cost-exporter; always 1",
    );
    let _ = writeln!(
        out,
        "atlas_cost_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

/// Renders a whole scrape body: self metrics, then the pre-encoded cost series, then
/// `# EOF` for OpenMetrics.
pub fn render(
    snapshot: &Snapshot,
    metrics: &SelfMetrics,
    now: SystemTime,
    format: Format,
) -> Vec<u8> {
    let mut head = String::with_capacity(8192);
    render_state(&mut head, snapshot, now);
    let mut registry = String::with_capacity(8192);
    let _ = metrics.encode_openmetrics(&mut registry);
    let costs = match format {
        Format::Text => {
            openmetrics_to_text(&registry, &mut head);
            &snapshot.costs.text
        }
        Format::OpenMetrics => {
            head.push_str(&registry);
            &snapshot.costs.openmetrics
        }
    };
    let mut body = Vec::with_capacity(head.len() + costs.len() + 8);
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(costs);
    if format == Format::OpenMetrics {
        body.extend_from_slice(b"# EOF\n");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A project named `a"b\c` followed by a newline is escaped, not emitted raw.
    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        push_label(&mut out, "project_name", "a\"b\\c\n");
        assert_eq!(out, r#"project_name="a\"b\\c\n""#);
    }

    /// Amounts print as exact decimals, with no float noise.
    #[test]
    fn micros_print_exactly() {
        for (m, s) in [
            (51_190_000, "51.19"),
            (300_000, "0.3"),
            (-5, "-0.000005"),
            (0, "0"),
            (12_000_000, "12"),
        ] {
            let mut out = String::new();
            push_micros(&mut out, m);
            assert_eq!(out, s);
        }
    }

    /// Prometheus's own Accept header gets OpenMetrics; curl and promtool get text.
    #[test]
    fn negotiation_follows_accept() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(negotiate(None), Format::Text);
        assert_eq!(negotiate(Some("*/*")), Format::Text);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), Format::Text);
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0.2,text/plain;q=0.9")),
            Format::Text
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }

    /// gzip is used only when accepted with a non-zero quality.
    #[test]
    fn gzip_only_when_accepted() {
        assert!(accepts_gzip(Some("gzip, deflate")));
        assert!(accepts_gzip(Some("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    /// Counters get `_total` in HELP and TYPE for text 0.0.4; UNIT and EOF lines go.
    #[test]
    fn openmetrics_counters_are_renamed_for_text() {
        let src = "# HELP a_polls Polls.\n# TYPE a_polls counter\na_polls_total 1\n# HELP b_seconds Time.\n# TYPE b_seconds histogram\n# UNIT b_seconds seconds\nb_seconds_sum 0\n# EOF\n";
        let mut out = String::new();
        openmetrics_to_text(src, &mut out);
        assert_eq!(
            out,
            "# HELP a_polls_total Polls.\n# TYPE a_polls_total counter\na_polls_total 1\n# HELP b_seconds Time.\n# TYPE b_seconds histogram\nb_seconds_sum 0\n"
        );
    }
}
