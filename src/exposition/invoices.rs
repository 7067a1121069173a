//! The invoice source's families (issue 22), encoded once per publication of their org:
//! the SKU series (month to date, quantity, last complete day), the day gauge, unit prices
//! and the reconciliation with the Cost Explorer. Nothing here runs per scrape.

use std::fmt::Write as _;

use super::text::{push_label, push_micros};
use crate::invoice::{InvoiceData, SkuKey};
use crate::series::TagLabels;
use crate::snapshot::CostPiece;

/// The invoice families, in exposition order: (name, HELP).
pub const INVOICE_FAMILIES: [(&str, &str); 8] = [
    (
        "atlas_cost_sku_month_to_date_usd",
        "Atlas pending invoice: what each SKU billed in the current UTC month so far, in USD, after discountCents (credits negative, tiers of a SKU summed), by org, project, cluster, SKU, unit and cloud provider",
    ),
    (
        "atlas_cost_sku_quantity",
        "Atlas pending invoice: the quantity of each SKU in the current UTC month so far, in the series' unit (none for sku=\"(other)\")",
    ),
    (
        "atlas_cost_sku_last_day_usd",
        "Atlas invoices: what each SKU billed on the last complete UTC day (yesterday; from the closed invoice on the 1st), in USD after discounts",
    ),
    (
        "atlas_cost_sku_last_day_start_timestamp_seconds",
        "Unix time of the start (00:00 UTC) of the day atlas_cost_sku_last_day_usd covers, per org",
    ),
    (
        "atlas_cost_sku_unit_price_usd",
        "Atlas pending invoice: unitPriceDollars of each SKU and unit in the org (its latest item; the highest tier of a tiered SKU)",
    ),
    (
        "atlas_cost_reconciliation_invoice_usd",
        "The pending invoice's month to date of the org, in USD (the invoice side of the reconciliation)",
    ),
    (
        "atlas_cost_reconciliation_cost_explorer_usd",
        "The Cost Explorer's month to date of the org (its services query), in USD, beside the invoice's",
    ),
    (
        "atlas_cost_reconciliation_difference_usd",
        "Invoice month to date minus Cost Explorer month to date of the org, in USD; a day's charges apart is normal (both post daily, not at the same moment)",
    ),
];

/// One org's lines of each invoice family ([`INVOICE_FAMILIES`] order), sealed.
#[derive(Clone, Debug, Default)]
pub struct InvoicePieces {
    /// The lines of each family, in [`INVOICE_FAMILIES`] order.
    pub families: [CostPiece; 8],
}

/// Appends quantity `nanos` (billionths) as a decimal, without trailing zeros.
pub fn push_nanos(out: &mut String, nanos: i64) {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    let (whole, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 {
        let _ = write!(out, "{sign}{whole}");
    } else {
        let digits = format!("{frac:09}");
        let _ = write!(out, "{sign}{whole}.{}", digits.trim_end_matches('0'));
    }
}

fn sku_labels(key: &SkuKey, org_name: Option<&str>, tags: &TagLabels) -> String {
    let mut l = String::new();
    push_label(&mut l, "org_id", &key.org_id);
    let opt = |l: &mut String, name: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            push_label(l, name, v);
        }
    };
    opt(&mut l, "org_name", org_name);
    opt(&mut l, "project_id", key.project_id.as_deref());
    opt(&mut l, "project_name", key.project_name.as_deref());
    opt(&mut l, "cluster_name", key.cluster_name.as_deref());
    push_label(&mut l, "sku", &key.sku);
    opt(&mut l, "unit", key.unit.as_deref());
    opt(&mut l, "cloud_provider", key.cloud_provider.as_deref());
    if !tags.is_empty() {
        let values = tags.values(key.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (name, value) in tags.names().iter().zip(values.iter()) {
            opt(&mut l, name, value.as_deref());
        }
    }
    l
}

/// The lines of one org's invoice families: `own_org`'s name is `org_name` (linked orgs'
/// invoices carry none); `cost_explorer_micros` is the org's Cost Explorer month to date,
/// when its `services` query has one.
pub fn encode_invoices(
    data: &InvoiceData,
    own_org: &str,
    org_name: Option<&str>,
    cost_explorer_micros: Option<i64>,
    tags: &TagLabels,
) -> InvoicePieces {
    let mut out: [String; 8] = Default::default();
    let [mtd, qty, day, day_start, price, inv, ce, diff] = &mut out;
    for s in &data.skus {
        let name = (s.key.org_id == own_org).then_some(org_name).flatten();
        let labels = sku_labels(&s.key, name, tags);
        let _ = write!(mtd, "{}{{{labels}}} ", INVOICE_FAMILIES[0].0);
        push_micros(mtd, s.month_to_date_micros);
        mtd.push('\n');
        if s.key.sku != crate::invoice::OTHER {
            let _ = write!(qty, "{}{{{labels}}} ", INVOICE_FAMILIES[1].0);
            push_nanos(qty, s.quantity_nanos);
            qty.push('\n');
        }
        let _ = write!(day, "{}{{{labels}}} ", INVOICE_FAMILIES[2].0);
        push_micros(day, s.last_day_micros);
        day.push('\n');
    }
    for org in data.org_month_to_date_micros.keys() {
        let mut l = String::new();
        push_label(&mut l, "org_id", org);
        let _ = writeln!(
            day_start,
            "{}{{{l}}} {}",
            INVOICE_FAMILIES[3].0, data.last_day_start
        );
    }
    for p in &data.prices {
        let mut l = String::new();
        push_label(&mut l, "org_id", &p.org_id);
        push_label(&mut l, "sku", &p.sku);
        if let Some(unit) = p.unit.as_deref() {
            push_label(&mut l, "unit", unit);
        }
        let _ = write!(price, "{}{{{l}}} ", INVOICE_FAMILIES[4].0);
        push_micros(price, p.micros);
        price.push('\n');
    }
    if let Some(invoice) = data.org_month_to_date_micros.get(own_org) {
        let mut l = String::new();
        push_label(&mut l, "org_id", own_org);
        let _ = write!(inv, "{}{{{l}}} ", INVOICE_FAMILIES[5].0);
        push_micros(inv, *invoice);
        inv.push('\n');
        if let Some(explorer) = cost_explorer_micros {
            let _ = write!(ce, "{}{{{l}}} ", INVOICE_FAMILIES[6].0);
            push_micros(ce, explorer);
            ce.push('\n');
            let _ = write!(diff, "{}{{{l}}} ", INVOICE_FAMILIES[7].0);
            push_micros(diff, invoice.saturating_sub(explorer));
            diff.push('\n');
        }
    }
    InvoicePieces {
        families: out.map(CostPiece::seal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::{SkuSeries, UnitPrice};
    use std::collections::BTreeMap;

    /// The SKU lines carry the labels in order (tag labels from the item's own tags), the
    /// quantity in its unit, and the reconciliation the difference of the two sides; label
    /// values from Atlas are escaped.
    #[test]
    fn sku_lines_are_labelled_escaped_and_reconciled() {
        let key = SkuKey {
            org_id: "o".into(),
            project_id: Some("p".into()),
            project_name: Some("Pay \"PCI\"".into()),
            cluster_name: None,
            sku: "ATLAS_SUPPORT".into(),
            unit: Some("MONTHS".into()),
            cloud_provider: Some("ATLAS".into()),
            tags: vec![("team".into(), "web".into())],
        };
        let data = InvoiceData {
            skus: vec![SkuSeries {
                key,
                month_to_date_micros: 12_340_000,
                quantity_nanos: 1_500_000_000,
                last_day_micros: -5,
            }],
            prices: vec![UnitPrice {
                org_id: "o".into(),
                sku: "ATLAS_SUPPORT".into(),
                unit: None,
                micros: 49_000_000,
            }],
            last_day_start: 86_400,
            org_month_to_date_micros: BTreeMap::from([("o".to_owned(), 12_340_000)]),
            items: 1,
        };
        let tags = TagLabels::new("t", ["team"]).expect("valid");
        let pieces = encode_invoices(&data, "o", Some("Org"), Some(10_000_000), &tags);
        let text: Vec<String> = pieces
            .families
            .iter()
            .map(|p| String::from_utf8_lossy(&p.text).into_owned())
            .collect();
        let labels = r#"org_id="o",org_name="Org",project_id="p",project_name="Pay \"PCI\"",sku="ATLAS_SUPPORT",unit="MONTHS",cloud_provider="ATLAS",tag_team="web""#;
        assert_eq!(
            text[0],
            format!("atlas_cost_sku_month_to_date_usd{{{labels}}} 12.34\n")
        );
        assert_eq!(
            text[1],
            format!("atlas_cost_sku_quantity{{{labels}}} 1.5\n")
        );
        assert_eq!(
            text[2],
            format!("atlas_cost_sku_last_day_usd{{{labels}}} -0.000005\n")
        );
        assert_eq!(
            text[3],
            "atlas_cost_sku_last_day_start_timestamp_seconds{org_id=\"o\"} 86400\n"
        );
        assert_eq!(
            text[4],
            "atlas_cost_sku_unit_price_usd{org_id=\"o\",sku=\"ATLAS_SUPPORT\"} 49\n"
        );
        assert_eq!(
            text[7],
            "atlas_cost_reconciliation_difference_usd{org_id=\"o\"} 2.34\n"
        );
    }
}
