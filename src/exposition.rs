//! Exposition: the Prometheus text format 0.0.4 and OpenMetrics 1.0, chosen per scrape from
//! the `Accept` header.
//!
//! Cost series are encoded once per refresh, in both formats, when the snapshot is built
//! ([`encode_costs`]); a scrape only renders the small self-metrics section and appends the
//! pre-encoded bytes ([`render`]). Label values from Atlas are escaped here, once.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::metrics::SelfMetrics;
use crate::month::Month;
use crate::series::{CostSeries, SeriesKey};
use crate::snapshot::{EncodedCosts, Snapshot};

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

/// The refresh interval in the short human form used in HELP text: `1h`, `30m`, `90s`.
pub fn human_interval(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
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

/// Appends the labels of a cost series (without `month`): `query` first, then every label it
/// has in [`crate::series::Label::ALL`] order, escaped.
pub fn push_series_labels(out: &mut String, query: &str, key: &SeriesKey) {
    push_label(out, "query", query);
    for (label, value) in key.labels() {
        push_label(out, label.as_str(), value);
    }
}

/// The label text of a cost series: `query="..",org_id="..",...` ([`push_series_labels`]).
pub fn label_text(query: &str, key: &SeriesKey) -> String {
    let mut out = String::with_capacity(160);
    push_series_labels(&mut out, query, key);
    out
}

/// A cost series with its label text, rendered once per refresh of its query and written
/// by every publication after that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedSeries {
    /// `query="..",org_id="..",...`, escaped, in a fixed order (without `month`).
    pub labels: String,
    /// The series.
    pub series: CostSeries,
}

impl RenderedSeries {
    /// Renders the labels of `series`.
    pub fn new(series: CostSeries) -> RenderedSeries {
        RenderedSeries {
            labels: label_text(&series.query, &series.key),
            series,
        }
    }
}

/// Renders the series of a query, in the order of their label text and month: the order they
/// are exposed in.
pub fn render_sorted(series: impl IntoIterator<Item = CostSeries>) -> Vec<RenderedSeries> {
    let mut out: Vec<RenderedSeries> = series.into_iter().map(RenderedSeries::new).collect();
    out.sort_unstable_by(|a, b| {
        (a.labels.as_str(), a.series.month).cmp(&(b.labels.as_str(), b.series.month))
    });
    out
}

impl EncodedCosts {
    /// Freezes the text of the cost families and compresses it, once per refresh.
    pub fn seal(text: String, usage_series: usize) -> EncodedCosts {
        let body = Bytes::from(text);
        let deflated = Bytes::from(deflate_sync(&body, flate2::Compression::default()));
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body);
        EncodedCosts {
            body,
            deflated,
            crc: crc.finalize(),
            usage_series,
        }
    }
}

/// Raw DEFLATE of `data` from an empty window, ending on a sync flush (no final block).
fn deflate_sync(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::with_capacity(data.len() / 4 + 64), level);
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    // flush() is a DEFLATE sync flush: everything out, byte-aligned, stream left open.
    let _ = encoder.flush();
    std::mem::take(encoder.get_mut())
}

const USAGE: &str = "atlas_cost_usage_usd";
const MTD: &str = "atlas_cost_month_to_date_usd";

fn family_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// Appends every cost series to `out`: `atlas_cost_usage_usd` for every month and
/// `atlas_cost_month_to_date_usd` for `current` only. Both formats read the same for
/// gauges, so the text is built once and shared. Returns the number of usage series.
pub fn encode_costs(
    out: &mut String,
    series: &[&RenderedSeries],
    current: Month,
    refresh: &str,
) -> usize {
    out.reserve(series.len() * 200 + 1024);
    family_header(
        out,
        USAGE,
        &format!(
            "Atlas Cost Explorer usage per calendar month (UTC) in USD; credits for customers on a sales contract. Cached: refreshed every {refresh}, see atlas_cost_query_data_age_seconds"
        ),
    );
    for s in series {
        let _ = write!(out, "{USAGE}{{{},month=\"{}\"}} ", s.labels, s.series.month);
        push_micros(out, s.series.micros);
        out.push('\n');
    }
    family_header(
        out,
        MTD,
        &format!(
            "Atlas Cost Explorer usage of the current UTC month so far, in USD (credits on a sales contract). Atlas posts charges a day late. Cached: refreshed every {refresh}"
        ),
    );
    for s in series.iter().filter(|s| s.series.month == current) {
        let _ = write!(out, "{MTD}{{{}}} ", s.labels);
        push_micros(out, s.series.micros);
        out.push('\n');
    }
    series.len()
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
    let refresh = human_interval(snapshot.refresh);
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
        "Build information of atlas-cost-exporter: version, git revision, rustc version; always 1",
    );
    // build.rs keeps these to characters that need no escaping.
    let _ = writeln!(
        out,
        "atlas_cost_build_info{{version=\"{}\",revision=\"{}\",rustversion=\"{}\"}} 1",
        crate::version::VERSION,
        crate::version::REVISION,
        crate::version::RUSTVERSION,
    );
}

/// A scrape answer: the small per-scrape parts and the shared cost bytes, sent in order
/// without being copied into one buffer. Its exact length is known, so it is sent with a
/// `Content-Length`.
#[derive(Debug, Default)]
pub struct ScrapeBody {
    chunks: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl ScrapeBody {
    fn push(&mut self, chunk: Bytes) {
        self.remaining += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }

    /// The whole body in one buffer (tests and benchmarks).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

impl http_body::Body for ScrapeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.remaining -= chunk.len() as u64;
        }
        std::task::Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// The gzip member header: no name, no timestamp, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final DEFLATE block with fixed codes: ends the stream.
const DEFLATE_END: [u8; 2] = [0x03, 0x00];

/// Renders a scrape: the self metrics (the only per-scrape encoding, proportional to the
/// number of queries), then the pre-encoded cost series, then `# EOF` for OpenMetrics. With
/// `gzip`, the pre-compressed cost bytes are spliced into one gzip stream between the
/// compressed per-scrape parts, and the CRC is combined: no series is touched per scrape.
pub fn render(
    snapshot: &Snapshot,
    metrics: &SelfMetrics,
    now: SystemTime,
    format: Format,
    gzip: bool,
) -> ScrapeBody {
    let mut head = String::with_capacity(16 * 1024);
    render_state(&mut head, snapshot, now);
    let mut registry = String::with_capacity(16 * 1024);
    let _ = metrics.encode_openmetrics(&mut registry);
    match format {
        Format::Text => openmetrics_to_text(&registry, &mut head),
        Format::OpenMetrics => head.push_str(&registry),
    }
    let tail: &[u8] = match format {
        Format::Text => b"",
        Format::OpenMetrics => b"# EOF\n",
    };
    let costs = &snapshot.costs;
    let mut body = ScrapeBody::default();
    if !gzip {
        body.push(Bytes::from(head));
        body.push(costs.body.clone());
        if !tail.is_empty() {
            body.push(Bytes::from_static(tail));
        }
        return body;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(head.as_bytes());
    crc.combine(&crc32fast::Hasher::new_with_initial_len(
        costs.crc,
        costs.body.len() as u64,
    ));
    crc.update(tail);
    let total = head.len() + costs.body.len() + tail.len();
    let mut first = Vec::with_capacity(head.len() / 3 + 64);
    first.extend_from_slice(&GZIP_HEADER);
    first.extend_from_slice(&deflate_sync(head.as_bytes(), flate2::Compression::fast()));
    let mut last = deflate_sync(tail, flate2::Compression::fast());
    last.extend_from_slice(&DEFLATE_END);
    last.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE is the length modulo 2^32, as RFC 1952 defines it.
    #[allow(clippy::cast_possible_truncation)]
    last.extend_from_slice(&(total as u32).to_le_bytes());
    body.push(Bytes::from(first));
    body.push(costs.deflated.clone());
    body.push(Bytes::from(last));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Label;

    fn snapshot_with_costs(n: usize) -> Snapshot {
        let month = Month::new(2026, 11).expect("valid");
        let query: std::sync::Arc<str> = "clusters".into();
        let series = render_sorted((0..n).map(|i| {
            let mut key = SeriesKey::default();
            key.set(Label::ClusterName, Some(&format!("c{i} \"q\"")));
            CostSeries {
                query: query.clone(),
                key,
                month,
                micros: i64::try_from(i).expect("small") * 1_010_000,
            }
        }));
        let refs: Vec<&RenderedSeries> = series.iter().collect();
        let mut text = String::new();
        let usage = encode_costs(&mut text, &refs, month, "1h");
        Snapshot {
            statuses: vec![crate::snapshot::QueryStatus::pending(
                "clusters",
                "5f1b2c3d4e5f6a7b8c9d0e1f",
            )],
            orgs: Vec::new(),
            costs: EncodedCosts::seal(text, usage),
            refresh: Duration::from_secs(3600),
            generation: 1,
        }
    }

    /// A gzip scrape, built by splicing the pre-compressed cost bytes between per-scrape
    /// parts, is one valid gzip stream (CRC and length checked by the decoder) whose content
    /// is exactly the uncompressed scrape, in both formats.
    #[test]
    fn spliced_gzip_decodes_to_the_plain_body() {
        use std::io::Read as _;
        let snapshot = snapshot_with_costs(5000);
        let metrics = SelfMetrics::new("1h");
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        for format in [Format::Text, Format::OpenMetrics] {
            let plain = render(&snapshot, &metrics, now, format, false).to_vec();
            let gz = render(&snapshot, &metrics, now, format, true).to_vec();
            assert!(gz.len() * 5 < plain.len(), "{format:?}: compressed");
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut decoded)
                .expect("valid gzip with a correct CRC and length");
            assert_eq!(decoded, plain, "{format:?}");
            // One member only: nothing follows the trailer.
            let mut decoder = flate2::bufread::GzDecoder::new(&gz[..]);
            std::io::copy(&mut decoder, &mut std::io::sink()).expect("decodes");
            assert!(
                decoder.into_inner().is_empty(),
                "{format:?}: a single gzip member"
            );
        }
        let om = render(&snapshot, &metrics, now, Format::OpenMetrics, false).to_vec();
        assert!(om.ends_with(b"\n# EOF\n"));
    }

    /// The body announces its exact length, so it is sent with a Content-Length.
    #[test]
    fn scrape_body_has_an_exact_size() {
        use http_body::Body as _;
        let snapshot = snapshot_with_costs(10);
        let body = render(
            &snapshot,
            &SelfMetrics::new("1h"),
            SystemTime::UNIX_EPOCH,
            Format::Text,
            true,
        );
        assert_eq!(body.size_hint().exact(), Some(body.to_vec().len() as u64));
    }

    /// A project named `a"b\c` followed by a newline is escaped, not emitted raw.
    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        push_label(&mut out, "project_name", "a\"b\\c\n");
        assert_eq!(out, r#"project_name="a\"b\\c\n""#);
    }

    /// A series with every label renders `query` first, then the labels in their fixed order,
    /// each value escaped; absent labels are left out.
    #[test]
    fn series_labels_render_in_order_and_escaped() {
        let values = ["o", "O \"q\"", "p", "a\\b", "c", "line\nbreak", "S"];
        let key = SeriesKey::new(values.map(Some));
        assert_eq!(
            label_text("q\"", &key),
            r#"query="q\"",org_id="o",org_name="O \"q\"",project_id="p",project_name="a\\b",cluster_id="c",cluster_name="line\nbreak",atlas_service="S""#
        );
        let mut sparse = key.clone();
        for l in [Label::OrgName, Label::ProjectId, Label::ClusterId] {
            sparse.set(l, None);
        }
        assert_eq!(
            label_text("q", &sparse),
            r#"query="q",org_id="o",project_name="a\\b",cluster_name="line\nbreak",atlas_service="S""#
        );
    }

    /// Rendered series are ordered by their label text, as they are exposed, not by their
    /// typed keys: a value with a space sorts before the same value without it.
    #[test]
    fn rendered_series_sort_by_label_text() {
        let month = Month::new(2026, 11).expect("valid");
        let series = |name: &str, month: Month| {
            let mut key = SeriesKey::default();
            key.set(Label::ProjectName, Some(name));
            CostSeries {
                query: "q".into(),
                key,
                month,
                micros: 1,
            }
        };
        let rendered = render_sorted([
            series("ab", month),
            series("ab", month.plus(-1)),
            series("ab c", month),
        ]);
        let order: Vec<(&str, Month)> = rendered
            .iter()
            .map(|r| (r.labels.as_str(), r.series.month))
            .collect();
        assert_eq!(
            order,
            [
                (r#"query="q",project_name="ab c""#, month),
                (r#"query="q",project_name="ab""#, month.plus(-1)),
                (r#"query="q",project_name="ab""#, month),
            ]
        );
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
