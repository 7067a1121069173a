//! The invoice answers (issue 22): `listOrgInvoicePending` (a results page or one invoice)
//! and a page of `lineItems:search`, and the SKU series made of what they hold.
//!
//! Properties: the heap a parse takes stays within `parse_bound` of the body; an answer is
//! read only when an independent JSON reader finds an object, else it is a named error;
//! every item read covers 1 to 366 days and its per-day cents and quantities add up to the
//! item exactly; the SKU series of what was read add up to the org totals to the
//! micro-dollar, and folding them (top 1, a series limit) keeps every org's sum.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use atlas_cost_exporter::atlas::invoices::{parse_line_items, parse_pending};
use atlas_cost_exporter::invoice::{
    DAY_SECS, Invoice, LineItem, SkuControls, aggregate, apply_controls,
};
use atlas_cost_exporter_fuzz::alloc::{Meter, parse_bound};
use atlas_cost_exporter_fuzz::json::{self, J};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static HEAP: Meter = Meter::new();

fn check_item(item: &LineItem) {
    let days = item.days();
    let n = days.end - days.start;
    assert!((1..=366).contains(&n), "{n} days");
    let split = item.per_day();
    assert_eq!(split.iter().map(|d| d.1).sum::<i64>(), item.net_cents());
    assert_eq!(split.iter().map(|d| d.2).sum::<i64>(), item.quantity_nanos);
}

fn org_sums(skus: &[atlas_cost_exporter::invoice::SkuSeries]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for s in skus {
        *out.entry(s.key.org_id.clone()).or_insert(0) += s.month_to_date_micros;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let base = HEAP.start();
    let pending = parse_pending(data);
    let items = parse_line_items(data);
    let peak = HEAP.peak_since(base);
    assert!(peak <= 2 * parse_bound(data.len()), "{peak} bytes for {} bytes", data.len());
    let read = json::read(data);
    let object = matches!(read.value, Some(J::Obj(_)));
    if !object && !read.string_issue {
        assert!(pending.is_err() && items.is_err());
    }
    if let Err(e) = &pending {
        assert!(!e.is_empty());
    }
    if let Ok(read) = &items {
        read.items.iter().for_each(check_item);
    }
    let Ok(pending) = pending else { return };
    fn all(i: &Invoice) -> Vec<&Invoice> {
        std::iter::once(i).chain(i.linked.iter().flat_map(all)).collect()
    }
    for invoice in pending.items.iter().flat_map(all) {
        invoice.items.iter().for_each(check_item);
    }
    // Whatever day the items fall on, the day they are aggregated on is one of theirs.
    let today = pending
        .items
        .iter()
        .flat_map(all)
        .flat_map(|i| i.items.first())
        .map(|i| i.start.div_euclid(DAY_SECS) + 1)
        .next()
        .unwrap_or(20_000);
    let own = "aaaaaaaaaaaaaaaaaaaaaaaa";
    let data = aggregate(own, &pending.items, &[], today, &BTreeSet::new(), &SkuControls::default());
    let sums = org_sums(&data.skus);
    for (org, total) in &data.org_month_to_date_micros {
        assert_eq!(sums.get(org).copied().unwrap_or(0), *total, "{org}");
    }
    for controls in [
        SkuControls { top: Some(1), ..SkuControls::default() },
        SkuControls { max_series: Some(2), ..SkuControls::default() },
    ] {
        let folded = apply_controls(data.skus.clone(), &controls);
        assert_eq!(org_sums(&folded), sums);
    }
});
