//! The cost families of a refresh, encoded once: each query's series rendered when it is
//! refreshed ([`RenderedSeries`]), and the families written and compressed when a refresh is
//! published ([`encode_costs`], [`EncodedCosts::seal`]). Nothing here runs per scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use super::text::{display_len, family_header, label_text, micros_len, push_micros};
use crate::month::Month;
use crate::series::{CostSeries, SeriesKey, TagLabels};
use crate::snapshot::{CostPiece, EncodedCosts};

/// A cost series with its label text, rendered once per refresh of its query and written
/// by every publication after that. The months of one label set share one label text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedSeries {
    /// `query="..",org_id="..",...`, escaped, in a fixed order (without `month`).
    pub labels: Arc<str>,
    /// The series.
    pub series: CostSeries,
}

impl RenderedSeries {
    /// Renders the labels of `series`, its tag labels named by `tags`.
    pub fn new(series: CostSeries, tags: &TagLabels) -> RenderedSeries {
        RenderedSeries {
            labels: Arc::from(label_text(&series.query, &series.key, tags)),
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
/// label text and month: the order they are exposed in. Each label set is rendered once and
/// its text shared by all its months (a query of 18 months holds one text, not 18).
pub fn render_tagged(
    series: impl IntoIterator<Item = CostSeries>,
    tags: &TagLabels,
) -> Vec<RenderedSeries> {
    let series = series.into_iter();
    let mut index: HashMap<(Arc<str>, SeriesKey), u32> = HashMap::new();
    let mut texts: Vec<Arc<str>> = Vec::new();
    let mut out: Vec<(u32, RenderedSeries)> = Vec::with_capacity(series.size_hint().0);
    for s in series {
        let i = match index.get(&(s.query.clone(), s.key.clone())) {
            Some(i) => *i,
            None => {
                let i = u32::try_from(texts.len()).unwrap_or(u32::MAX);
                texts.push(Arc::from(label_text(&s.query, &s.key, tags)));
                index.insert((s.query.clone(), s.key.clone()), i);
                i
            }
        };
        let labels = texts
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""));
        out.push((i, RenderedSeries { labels, series: s }));
    }
    drop(index);
    // The label texts are sorted once, and the series by their text's rank and month: the
    // order of (text, month), with integer comparisons for every series.
    let mut order: Vec<u32> = (0..u32::try_from(texts.len()).unwrap_or(u32::MAX)).collect();
    order.sort_unstable_by(|a, b| texts[*a as usize].cmp(&texts[*b as usize]));
    let mut rank = vec![0u32; texts.len()];
    let mut r = 0;
    for (n, i) in order.iter().enumerate() {
        // Equal texts (of different keys) share a rank, so their months interleave.
        if n > 0 && texts[order[n - 1] as usize] != texts[*i as usize] {
            r += 1;
        }
        rank[*i as usize] = r;
    }
    out.sort_unstable_by_key(|(i, s)| (rank[*i as usize], s.series.month));
    out.into_iter().map(|(_, s)| s).collect()
}

/// The DEFLATE level of the cost text, compressed once per refresh of a query and sent with
/// every gzip scrape. Measured on the 100k-series body (BENCHMARKS.md, `deflate_level` of
/// `cargo bench --bench pipeline`): level 5 is 1.3 % larger than level 6 in a quarter less
/// time; below 5 the size grows fast (level 3 +4.3 %, level 1 +30 %), above 6 it barely
/// shrinks (level 9 -1.3 % for a third more time). Level 5 keeps a 1,000,000-series refresh
/// well inside its CPU budget.
pub const COST_DEFLATE_LEVEL: u32 = 5;

impl CostPiece {
    /// Freezes a run of the cost text and compresses it (once per refresh of its query).
    pub fn seal(text: String) -> CostPiece {
        let text = Bytes::from(text);
        let mut deflated = deflate_sync(&text, flate2::Compression::new(COST_DEFLATE_LEVEL));
        // The copy lives as long as the refresh: no slack from its first guess of the size.
        deflated.shrink_to_fit();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&text);
        CostPiece {
            text,
            deflated: Bytes::from(deflated),
            crc: crc.finalize(),
        }
    }
}

impl EncodedCosts {
    /// The cost text of a refresh from its pieces, in order: empty pieces are dropped, the
    /// length summed and the CRC of the whole combined from the pieces' (nothing is copied or
    /// compressed again).
    pub fn from_pieces(
        pieces: impl IntoIterator<Item = CostPiece>,
        usage_series: usize,
    ) -> EncodedCosts {
        let pieces: Vec<CostPiece> = pieces.into_iter().filter(|p| !p.text.is_empty()).collect();
        let mut crc = crc32fast::Hasher::new();
        let mut len = 0u64;
        for p in &pieces {
            crc.combine(&crc32fast::Hasher::new_with_initial_len(
                p.crc,
                p.text.len() as u64,
            ));
            len += p.text.len() as u64;
        }
        EncodedCosts {
            pieces,
            len,
            crc: crc.finalize(),
            usage_series,
        }
    }

    /// Freezes the text of the cost families as one piece and compresses it.
    pub fn seal(text: String, usage_series: usize) -> EncodedCosts {
        EncodedCosts::from_pieces([CostPiece::seal(text)], usage_series)
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

/// The exact length [`encode_costs`] appends for `series` (with the same `current` and
/// `refresh`), so the text can be allocated once.
pub fn encoded_costs_len(series: &[&RenderedSeries], current: Month, refresh: &str) -> usize {
    usage_header_len(refresh)
        + usage_lines_len(series)
        + mtd_header_len(refresh)
        + mtd_lines_len(series, current)
}

/// The exact length of the `atlas_cost_usage_usd` header ([`usage_header`]).
pub fn usage_header_len(refresh: &str) -> usize {
    header_len(USAGE, &usage_help(refresh))
}

/// The exact length of the `atlas_cost_month_to_date_usd` header ([`mtd_header`]).
pub fn mtd_header_len(refresh: &str) -> usize {
    header_len(MTD, &mtd_help(refresh))
}

/// The exact length of the usage lines of `series` ([`usage_lines`]).
pub fn usage_lines_len(series: &[&RenderedSeries]) -> usize {
    // A refresh holds a few distinct months: each one's text length is measured once.
    let mut month_lens: Vec<(Month, usize)> = Vec::new();
    let mut len = 0;
    for s in series {
        let month = match month_lens.iter().find(|(m, _)| *m == s.series.month) {
            Some((_, n)) => *n,
            None => {
                let n = display_len(&s.series.month);
                month_lens.push((s.series.month, n));
                n
            }
        };
        // `{USAGE}{labels,month="M"} value\n`
        len += USAGE.len() + s.labels.len() + month + micros_len(s.series.micros) + 13;
    }
    len
}

/// The exact length of the month-to-date lines of `series` ([`mtd_lines`]).
pub fn mtd_lines_len(series: &[&RenderedSeries], current: Month) -> usize {
    series
        .iter()
        .filter(|s| s.series.month == current)
        // `{MTD}{labels} value\n`
        .map(|s| MTD.len() + s.labels.len() + micros_len(s.series.micros) + 4)
        .sum()
}

fn header_len(name: &str, help: &str) -> usize {
    // `# HELP {name} {help}\n# TYPE {name} gauge\n`
    2 * name.len() + help.len() + 23
}

fn usage_help(refresh: &str) -> String {
    format!(
        "Atlas Cost Explorer usage per calendar month (UTC) in USD; credits for customers on a sales contract. Cached: refreshed every {refresh}, see atlas_cost_query_data_age_seconds"
    )
}

fn mtd_help(refresh: &str) -> String {
    format!(
        "Atlas Cost Explorer usage of the current UTC month so far, in USD (credits on a sales contract). Atlas posts charges a day late. Cached: refreshed every {refresh}"
    )
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
    // Once, exactly: a text grown by doubling holds the old and the new buffer at once.
    out.reserve(encoded_costs_len(series, current, refresh));
    usage_header(out, refresh);
    usage_lines(out, series);
    mtd_header(out, refresh);
    mtd_lines(out, series, current);
    series.len()
}

/// The `# HELP` and `# TYPE` lines of `atlas_cost_usage_usd`.
pub fn usage_header(out: &mut String, refresh: &str) {
    family_header(out, USAGE, &usage_help(refresh));
}

/// One `atlas_cost_usage_usd` line per series, every month.
pub fn usage_lines(out: &mut String, series: &[&RenderedSeries]) {
    for s in series {
        let _ = write!(out, "{USAGE}{{{},month=\"{}\"}} ", s.labels, s.series.month);
        push_micros(out, s.series.micros);
        out.push('\n');
    }
}

/// The `# HELP` and `# TYPE` lines of `atlas_cost_month_to_date_usd`.
pub fn mtd_header(out: &mut String, refresh: &str) {
    family_header(out, MTD, &mtd_help(refresh));
}

/// One `atlas_cost_month_to_date_usd` line per series of the `current` month.
pub fn mtd_lines(out: &mut String, series: &[&RenderedSeries], current: Month) {
    for s in series.iter().filter(|s| s.series.month == current) {
        let _ = write!(out, "{MTD}{{{}}} ", s.labels);
        push_micros(out, s.series.micros);
        out.push('\n');
    }
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
            .map(|r| (&*r.labels, r.series.month))
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

    /// Two keys whose label text is the same (tags without tag labels to render them) are
    /// one text in the exposition order: their months interleave as the text's months do.
    #[test]
    fn keys_of_one_label_text_sort_as_that_text() {
        let month = Month::new(2026, 11).expect("valid");
        let tags = TagLabels::new("t", ["team"]).expect("valid");
        let series = |tagged: bool, month: Month, micros: i64| {
            let mut key = SeriesKey::default();
            key.set(Label::ProjectName, Some("p"));
            if tagged {
                key.set_tags(tags.values([("team", "web")]));
            }
            CostSeries {
                query: "q".into(),
                key,
                month,
                micros,
            }
        };
        let r = render_sorted([
            series(true, month, 1),
            series(false, month.plus(-1), 2),
            series(true, month.plus(-2), 3),
        ]);
        let got: Vec<(&str, i64)> = r.iter().map(|r| (&*r.labels, r.series.micros)).collect();
        let text = r#"query="q",project_name="p""#;
        assert_eq!(got, [(text, 3), (text, 2), (text, 1)]);
    }

    /// The months of one label set share one label text; another label set, or the same
    /// labels in another query, has its own.
    #[test]
    fn the_months_of_a_label_set_share_one_label_text() {
        let month = Month::new(2026, 11).expect("valid");
        let series = |query: &str, name: &str, month: Month| {
            let mut key = SeriesKey::default();
            key.set(Label::ProjectName, Some(name));
            CostSeries {
                query: query.into(),
                key,
                month,
                micros: 1,
            }
        };
        let r = render_sorted([
            series("q", "a", month.plus(-2)),
            series("q", "b", month),
            series("q", "a", month),
            series("r", "a", month),
        ]);
        assert_eq!(&*r[0].labels, r#"query="q",project_name="a""#);
        assert!(Arc::ptr_eq(&r[0].labels, &r[1].labels));
        assert!(!Arc::ptr_eq(&r[1].labels, &r[2].labels));
        assert_eq!(&*r[3].labels, r#"query="r",project_name="a""#);
    }

    /// The length the cost families are sized by is the length written: the text is
    /// allocated once, never grown (amounts of every shape, current month or not).
    #[test]
    fn the_cost_text_is_sized_exactly_before_it_is_written() {
        let current = Month::new(2026, 11).expect("valid");
        let rendered: Vec<RenderedSeries> = [0, -5, 51_190_000, 12_000_000, i64::MIN]
            .into_iter()
            .enumerate()
            .flat_map(|(i, micros)| {
                let mut key = SeriesKey::default();
                key.set(Label::ClusterName, Some(&format!("c\"{i}\n")));
                [current, current.plus(-1), current.plus(-17)].map(|month| CostSeries {
                    query: "q".into(),
                    key: key.clone(),
                    month,
                    micros,
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|s| RenderedSeries::new(s, &TagLabels::default()))
            .collect();
        let refs: Vec<&RenderedSeries> = rendered.iter().collect();
        let want = encoded_costs_len(&refs, current, "1h");
        let mut out = String::new();
        let n = encode_costs(&mut out, &refs, current, "1h");
        assert_eq!(n, 15);
        assert_eq!(out.len(), want);
        assert_eq!(out.capacity(), want, "allocated once, exactly");
        assert!(out.contains("atlas_cost_month_to_date_usd{query=\"q\",cluster_name=\"c\\\"4\\n\"} -9223372036854.775808\n"), "{out}");
    }
}
