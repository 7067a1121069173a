//! A query's slot: its last good data (series, rollup, remainders) and its lines of the cost
//! families, encoded and compressed once a day or when its org publishes again.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::cost_explorer::Uncontrolled;

use crate::exposition::RenderedSeries;
use crate::exposition::costs::{mtd_lines, mtd_lines_len, usage_lines, usage_lines_len};
use crate::month::Month;
use crate::remainder::Rollup;
use crate::snapshot::{CostPiece, QueryStatus};

/// The most a forecast or previous-month line adds besides the series' labels: the metric
/// name (30), `{`, `} `, an amount (at most 21) and the line end.
const PER_SERIES_LINE: usize = 56;

/// The data of a query from its last successful refresh.
pub(super) struct Slot {
    pub(super) status: QueryStatus,
    /// Its series, rendered once when they were refreshed, in exposition order.
    pub(super) series: Arc<Vec<RenderedSeries>>,
    /// The query's data summed for the remainders.
    pub(super) rollup: Option<Arc<Rollup>>,
    /// Its `(unattributed)` series, derived anew at each publication of its org.
    pub(super) remainder: Arc<Vec<RenderedSeries>>,
    /// Its series and remainders encoded and compressed, kept until its org publishes again
    /// or the day changes: the publication of another org reuses them.
    pub(super) text: Option<Arc<SlotText>>,
    /// Series folded by its `max_series` in its last successful refresh.
    pub(super) shed: u64,
    /// Its series before its controls, when they run at each publication of its org with
    /// its remainders (then `series` holds both, and `remainder` nothing).
    pub(super) uncontrolled: Option<Arc<Uncontrolled>>,
    /// Its series were taken back from the state with their remainders in them, under its
    /// controls, as they were served ([`Slot::uncontrolled`] is not kept): no remainder is
    /// derived for them again until its next successful refresh.
    pub(super) remainders_included: bool,
}

/// A query's lines in each per-series cost family, encoded and compressed for one day.
pub(super) struct SlotText {
    pub(super) current: Month,
    pub(super) day: u32,
    pub(super) usage: CostPiece,
    pub(super) month_to_date: CostPiece,
    pub(super) forecast: CostPiece,
    pub(super) previous: CostPiece,
}

impl Slot {
    /// The months its last good data holds (its own series, not its remainders).
    pub(super) fn held(&self) -> BTreeSet<Month> {
        match &self.uncontrolled {
            Some(u) => u.months(),
            None => self.series.iter().map(|c| c.series.month).collect(),
        }
    }

    /// Its series and then its remainders, in exposition order.
    pub(super) fn all_series(&self) -> Vec<&RenderedSeries> {
        self.series.iter().chain(self.remainder.iter()).collect()
    }

    /// Its encoded lines for day `day` of `current`: the kept ones when they are of that
    /// day, else encoded (each text allocated once at its exact or bounded size) and kept.
    pub(super) fn text(&mut self, current: Month, day: u32) -> Arc<SlotText> {
        if let Some(text) = &self.text
            && text.current == current
            && text.day == day
        {
            return text.clone();
        }
        let series = self.all_series();
        let mut usage = String::with_capacity(usage_lines_len(&series));
        usage_lines(&mut usage, &series);
        let mut month_to_date = String::with_capacity(mtd_lines_len(&series, current));
        mtd_lines(&mut month_to_date, &series, current);
        let bound = |month: Month| -> usize {
            series
                .iter()
                .filter(|s| s.series.month == month)
                .map(|s| s.labels.len() + PER_SERIES_LINE)
                .sum()
        };
        let mut forecast = String::with_capacity(bound(current));
        crate::budget::forecast_lines(&mut forecast, &series, current, day);
        let mut previous = String::with_capacity(bound(current.plus(-1)));
        crate::budget::previous_lines(&mut previous, &series, current);
        forecast.shrink_to_fit();
        previous.shrink_to_fit();
        let text = Arc::new(SlotText {
            current,
            day,
            usage: CostPiece::seal(usage),
            month_to_date: CostPiece::seal(month_to_date),
            forecast: CostPiece::seal(forecast),
            previous: CostPiece::seal(previous),
        });
        self.text = Some(text.clone());
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::render_sorted;
    use crate::series::{CostSeries, Label, SeriesKey};

    fn slot(project: &str, micros: i64, months: &[Month]) -> Slot {
        let series = render_sorted(months.iter().map(|month| {
            let mut key = SeriesKey::default();
            key.set(Label::ProjectName, Some(project));
            CostSeries {
                query: "projects".into(),
                key,
                month: *month,
                micros,
            }
        }));
        Slot {
            status: QueryStatus::pending("projects", "5f1b2c3d4e5f6a7b8c9d0e1f"),
            series: Arc::new(series),
            rollup: None,
            remainder: Arc::new(Vec::new()),
            text: None,
            shed: 0,
            uncontrolled: None,
            remainders_included: false,
        }
    }

    /// A query's encoded lines are kept for the day: asked again the same day (another org's
    /// publication), the same compressed bytes come back without being encoded again.
    #[test]
    fn a_query_is_encoded_once_a_day() {
        let current = Month::new(2026, 11).expect("valid");
        let mut s = slot("p", 1_500_000, &[current.plus(-1), current]);
        let first = s.text(current, 29);
        let again = s.text(current, 29);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            &first.usage.text[..],
            b"atlas_cost_usage_usd{query=\"projects\",project_name=\"p\",month=\"2026-10\"} 1.5\n\
              atlas_cost_usage_usd{query=\"projects\",project_name=\"p\",month=\"2026-11\"} 1.5\n"
        );
        assert_eq!(
            &first.previous.text[..],
            b"atlas_cost_previous_month_usd{query=\"projects\",project_name=\"p\"} 1.5\n"
        );
        // The forecast depends on the day: the next day encodes again.
        let next_day = s.text(current, 30);
        assert!(!Arc::ptr_eq(&first, &next_day));
        assert_ne!(first.forecast.text, next_day.forecast.text);
    }

    /// Each piece's compressed copy decodes to its text, and its CRC is the text's.
    #[test]
    fn each_piece_carries_its_own_deflate_and_crc() {
        use std::io::Read as _;
        let current = Month::new(2026, 11).expect("valid");
        let mut s = slot("q \"x\"", 2_250_000, &[current]);
        let text = s.text(current, 10);
        for piece in [&text.usage, &text.month_to_date, &text.forecast] {
            assert!(!piece.text.is_empty());
            // The copy ends on a sync flush: an empty final block closes it for the decoder.
            let closed = [&piece.deflated[..], &[0x03, 0x00]].concat();
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&closed[..])
                .read_to_end(&mut out)
                .expect("raw DEFLATE");
            assert_eq!(out, piece.text);
            assert_eq!(piece.crc, crc32fast::hash(&piece.text));
        }
        assert!(text.previous.text.is_empty(), "no previous month held");
    }
}
