//! The cost families of a refresh, encoded once: each query's series rendered when it is
//! refreshed ([`RenderedSeries`]), and the families written and compressed when a refresh is
//! published ([`encode_costs`], [`EncodedCosts::seal`]). Nothing here runs per scrape.

use std::fmt::Write as _;

use bytes::Bytes;

use super::text::{family_header, label_text, push_micros};
use crate::month::Month;
use crate::series::{CostSeries, TagLabels};
use crate::snapshot::EncodedCosts;

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
    /// Renders the labels of `series`, its tag labels named by `tags`.
    pub fn new(series: CostSeries, tags: &TagLabels) -> RenderedSeries {
        RenderedSeries {
            labels: label_text(&series.query, &series.key, tags),
            series,
        }
    }
}

/// Renders the series of a query without tag labels, in the order of their label text and
/// month: the order they are exposed in ([`render_tagged`] with no tag label).
pub fn render_sorted(series: impl IntoIterator<Item = CostSeries>) -> Vec<RenderedSeries> {
    render_tagged(series, &TagLabels::default())
}

/// Renders the series of a query, their tag labels named by `tags`, in the order of their
/// label text and month: the order they are exposed in.
pub fn render_tagged(
    series: impl IntoIterator<Item = CostSeries>,
    tags: &TagLabels,
) -> Vec<RenderedSeries> {
    let mut out: Vec<RenderedSeries> = series
        .into_iter()
        .map(|s| RenderedSeries::new(s, tags))
        .collect();
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
pub(super) fn deflate_sync(data: &[u8], level: flate2::Compression) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{Label, SeriesKey};

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
}
