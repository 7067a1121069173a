//! Publication: the last good data of every query into one [`Snapshot`], the cost families in
//! pieces (only the refreshed org's queries encoded again), forecasts and budgets computed
//! once per publication.

use std::sync::Arc;

use super::slot::{Slot, SlotText};
use super::{Published, Refresher};
use crate::budget::Budget;
use crate::exposition::RenderedSeries;
use crate::exposition::invoices::{InvoicePieces, encode_invoices};
use crate::exposition::layout::{Publication, QueryPieces};
use crate::month::{Month, day_of_month};
use crate::snapshot::{CostPiece, EncodedCosts, Snapshot};

/// An upper bound of the budget families' text ([`crate::budget::encode_budgets`]): their headers,
/// and three lines of each budget (its amount and two ratios) with its labels.
fn budgets_text_bound(budgets: &[Budget]) -> usize {
    4096 + budgets
        .iter()
        .map(|b| 3 * (b.labels().len() + 100))
        .sum::<usize>()
}

impl Refresher {
    pub(super) fn publish(&self, published: &mut Published) {
        let now = (self.clock)();
        let current = Month::containing(now);
        let day = day_of_month(now);
        // Only the queries of the org just refreshed (or all, on a new day) are encoded and
        // compressed: the others' pieces are reused as they are.
        let texts: Vec<Arc<SlotText>> = published
            .slots
            .iter_mut()
            .map(|s| s.text(current, day))
            .collect();
        let all: Vec<&RenderedSeries> = published.slots.iter().flat_map(Slot::all_series).collect();
        let mut tail = String::with_capacity(budgets_text_bound(&self.budgets));
        // Forecasts and budgets are computed here, once per refresh, never per scrape.
        crate::budget::encode_budgets(
            &mut tail,
            &all,
            current,
            day,
            &self.budgets,
            self.interval.as_secs(),
        );
        let orgs = crate::budget::org_summaries(
            self.orgs.iter().map(|o| o.config.id.as_str()),
            &all,
            current,
            day_of_month(now),
        );
        // The invoice lines of the orgs that published since they were last encoded.
        let invoices: Vec<Arc<InvoicePieces>> = published
            .orgs
            .iter_mut()
            .zip(&orgs)
            .filter_map(|(o, summary)| {
                let slot = o.invoices.as_mut()?;
                if slot.text.is_none() {
                    let data = slot.data.as_deref()?;
                    slot.text = Some(Arc::new(encode_invoices(
                        data,
                        &summary.org_id,
                        summary.org_name.as_deref(),
                        summary.month_to_date_micros,
                        &self.tag_labels,
                    )));
                }
                slot.text.clone()
            })
            .collect();
        let pieces = crate::exposition::layout::pieces(Publication {
            refresh_help: &self.refresh_help,
            queries: texts
                .iter()
                .map(|t| QueryPieces {
                    usage: &t.usage,
                    month_to_date: &t.month_to_date,
                    forecast: &t.forecast,
                    previous: &t.previous,
                })
                .collect(),
            forecast_header: &crate::budget::forecast_header,
            previous_header: &crate::budget::previous_header,
            budgets: CostPiece::seal(tail),
            invoices: invoices.iter().map(|p| &**p).collect(),
        });
        let costs = EncodedCosts::from_pieces(pieces, all.len());
        let sources = published
            .orgs
            .iter()
            .flat_map(|o| {
                std::iter::once(o.cost_explorer.clone())
                    .chain(o.invoices.as_ref().map(|s| s.status.clone()))
            })
            .collect();
        self.cell.store(Snapshot {
            statuses: published.slots.iter().map(|s| s.status.clone()).collect(),
            orgs,
            sources,
            costs,
            refresh: self.interval,
            generation: published.generation,
        });
    }
}
