//! The invoice source (issue 22): the org's pending invoices and, when the last complete
//! day is in the previous month (on the 1st), that month's closed invoice's items, made into
//! SKU series by [`crate::invoice::aggregate`]. Its calls share the Cost Explorer's
//! "Invoices" request budget (the org's client gates them together).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::{OrgWorker, Refresher};
use crate::invoice::{Invoice, InvoiceData, LineItem, aggregate, day_of, match_sku, month_of_day};
use crate::model::Reason;

/// The closed invoice's items of one month, read once (a closed invoice no longer changes).
pub(super) type ClosedItems = Option<(crate::month::Month, Arc<Vec<LineItem>>)>;

impl super::InvoiceSlot {
    /// Records the invoice source's outcome of an org's refresh: a success replaces the last
    /// good data, a failure keeps it and is logged. Encoded again at this publication either
    /// way: the reconciliation reads the org's Cost Explorer data, which may have changed too.
    pub(super) fn record(
        &mut self,
        org_id: &str,
        outcome: Option<Result<InvoiceData, (Reason, String)>>,
    ) {
        self.text = None;
        match outcome {
            Some(Ok(data)) => self.data = Some(Arc::new(data)),
            Some(Err((reason, message))) => {
                tracing::warn!(org_id = %org_id, source = "invoices", reason = reason.as_str(), error = %message, "invoice refresh failed; serving its last good data");
            }
            None => {}
        }
    }
}

impl Refresher {
    /// One refresh of the org's invoice source.
    pub(super) async fn refresh_invoices(
        &self,
        org: &OrgWorker,
        now: SystemTime,
        previous: Option<&InvoiceData>,
    ) -> Result<InvoiceData, (Reason, String)> {
        let deadline = Instant::now() + self.query_timeout;
        let fail = |e: crate::atlas::AtlasError| (e.reason(), e.to_string());
        let pending = self
            .bounded(org, deadline, org.client.pending_invoices(deadline))
            .await
            .map_err(fail)?;
        let today = day_of(now);
        let last_month = month_of_day(today - 1);
        let closed = if last_month == month_of_day(today) {
            Arc::new(Vec::new())
        } else {
            let known = known_skus(previous, &pending.items);
            self.closed_items(org, last_month, previous, &known, deadline)
                .await
                .map_err(fail)?
        };
        if pending.invalid > 0 {
            self.metrics
                .count_source_error("invoices", &org.config.id, Reason::InvalidRow);
            tracing::warn!(org_id = %org.config.id, skipped = pending.invalid, "invoice line items skipped: a SKU, a start date or whole cents missing");
        }
        Ok(aggregate(
            &org.config.id,
            &pending.items,
            &closed,
            today,
            &self.invoice_reporters,
            &self.sku_controls,
        ))
    }

    /// The closed invoice's items of `month`: cached once read; each item's `description`
    /// mapped to one of the `known` SKUs ([`match_sku`]) or kept as it is (counted, one
    /// warning); the labels a closed item lacks (project name, unit, tags) taken from the
    /// last pending data's series of the same project, cluster and SKU.
    async fn closed_items(
        &self,
        org: &OrgWorker,
        month: crate::month::Month,
        previous: Option<&InvoiceData>,
        known: &BTreeSet<String>,
        deadline: Instant,
    ) -> Result<Arc<Vec<LineItem>>, crate::atlas::AtlasError> {
        let cached = org
            .closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|(m, _)| *m == month)
            .map(|(_, items)| items.clone());
        if let Some(items) = cached {
            return Ok(items);
        }
        let start = crate::invoice::days_from_civil(i64::from(month.year()), month.month(), 1)
            * crate::invoice::DAY_SECS;
        let Some(meta) = self
            .bounded(
                org,
                deadline,
                org.client
                    .closed_invoice(start, &month.first_day(), deadline),
            )
            .await?
        else {
            tracing::warn!(org_id = %org.config.id, %month, "no closed invoice listed for the previous month yet: the last day's spend is 0 until it is");
            return Ok(Arc::new(Vec::new()));
        };
        let read = self
            .bounded(org, deadline, org.client.line_items(&meta.id, deadline))
            .await?;
        let mut items = read.items;
        let unknown = map_skus(&mut items, known);
        if unknown > 0 {
            tracing::warn!(org_id = %org.config.id, %month, items = unknown, known_skus = known.len(), "closed invoice items whose description names no SKU of the pending invoice: their spend is kept under the description as the `sku` label");
        }
        if let Some(previous) = previous {
            fill_labels(&mut items, previous);
        }
        let items = Arc::new(items);
        *org.closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((month, items.clone()));
        Ok(items)
    }
}

/// The SKUs a closed item's description can be mapped to: the last data's (its series and
/// unit prices: a SKU folded into `(other)` keeps its price) and this refresh's pending
/// items' (linked orgs' included); never `(other)`.
pub(super) fn known_skus(previous: Option<&InvoiceData>, pending: &[Invoice]) -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    if let Some(previous) = previous {
        known.extend(previous.skus.iter().map(|s| s.key.sku.clone()));
        known.extend(previous.prices.iter().map(|p| p.sku.clone()));
    }
    pending_skus(pending, &mut known);
    known.remove(crate::invoice::OTHER);
    known
}

/// The SKUs of the pending invoices' items (linked orgs' included) into `out`.
fn pending_skus(invoices: &[Invoice], out: &mut BTreeSet<String>) {
    for invoice in invoices {
        out.extend(invoice.items.iter().map(|i| i.sku.clone()));
        pending_skus(&invoice.linked, out);
    }
}

/// Replaces each closed item's SKU (its `description` as read) by the known SKU it names
/// ([`match_sku`]); an item naming none keeps its description. Returns how many kept it.
pub(super) fn map_skus(items: &mut [LineItem], known: &BTreeSet<String>) -> usize {
    let mut unknown = 0;
    for item in items {
        match match_sku(&item.sku, known.iter().map(String::as_str)) {
            Some(sku) => {
                if sku != item.sku {
                    item.sku = sku.to_owned();
                }
            }
            None => unknown += 1,
        }
    }
    unknown
}

/// Gives closed items the labels their view lacks, from the pending series of the same
/// project (its name), project and cluster (tags), and SKU (unit, cloud provider).
pub(super) fn fill_labels(items: &mut [LineItem], previous: &InvoiceData) {
    for item in items {
        let same_place = previous.skus.iter().find(|s| {
            s.key.project_id == item.project_id && s.key.cluster_name == item.cluster_name
        });
        if item.project_name.is_none() {
            item.project_name = previous
                .skus
                .iter()
                .find(|s| s.key.project_id == item.project_id)
                .and_then(|s| s.key.project_name.clone());
        }
        if item.tags.is_empty()
            && let Some(s) = same_place
        {
            item.tags = s.key.tags.clone();
        }
        if let Some(s) = previous.skus.iter().find(|s| s.key.sku == item.sku) {
            if item.unit.is_none() {
                item.unit = s.key.unit.clone();
            }
            if item.cloud_provider.is_none() {
                item.cloud_provider = s.key.cloud_provider.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::{OTHER, SkuKey, SkuSeries, UnitPrice};

    fn item(sku: &str) -> LineItem {
        LineItem {
            sku: sku.to_owned(),
            start: 0,
            end: None,
            quantity_nanos: 0,
            unit: None,
            unit_price_micros: None,
            total_cents: 100,
            discount_cents: 0,
            tier_lower_nanos: None,
            project_id: None,
            project_name: None,
            cluster_name: None,
            cloud_provider: None,
            tags: Vec::new(),
        }
    }

    fn series(sku: &str) -> SkuSeries {
        SkuSeries {
            key: SkuKey {
                org_id: "o".to_owned(),
                project_id: None,
                project_name: None,
                cluster_name: None,
                sku: sku.to_owned(),
                unit: None,
                cloud_provider: None,
                tags: Vec::new(),
            },
            month_to_date_micros: 0,
            quantity_nanos: 0,
            last_day_micros: 0,
        }
    }

    /// The known SKUs are the last data's series and prices (a folded SKU's price keeps
    /// it) and the pending items', linked invoices' included, without `(other)`; closed
    /// items are mapped to them, and one naming none keeps its description and is counted.
    #[test]
    fn closed_items_map_to_skus_known_from_the_last_data_and_the_pending_items() {
        let previous = InvoiceData {
            skus: vec![series("ATLAS_AWS_INSTANCE_M30"), series(OTHER)],
            prices: vec![UnitPrice {
                org_id: "o".to_owned(),
                sku: "ATLAS_AWS_STORAGE_PROVISIONED".to_owned(),
                unit: None,
                micros: 3_800,
            }],
            ..InvoiceData::default()
        };
        let pending = [Invoice {
            id: None,
            org_id: None,
            items: vec![item("ATLAS_AWS_DATA_TRANSFER_SAME_REGION")],
            linked: vec![Invoice {
                id: None,
                org_id: None,
                items: vec![item("CREDIT")],
                linked: Vec::new(),
            }],
        }];
        let known = known_skus(Some(&previous), &pending);
        assert_eq!(
            known.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "ATLAS_AWS_DATA_TRANSFER_SAME_REGION",
                "ATLAS_AWS_INSTANCE_M30",
                "ATLAS_AWS_STORAGE_PROVISIONED",
                "CREDIT"
            ]
        );
        let mut items = vec![
            item("ATLAS_AWS_INSTANCE_M30 - Cluster0 (2026-10-31)"),
            item("ATLAS_AWS_STORAGE_PROVISIONED"),
            item("CREDIT - Organization (2026-10-31)"),
            item("AWS Data Transfer Same Region"),
        ];
        assert_eq!(
            map_skus(&mut items, &known),
            1,
            "one item names no known SKU"
        );
        assert_eq!(
            items.iter().map(|i| i.sku.as_str()).collect::<Vec<_>>(),
            [
                "ATLAS_AWS_INSTANCE_M30",
                "ATLAS_AWS_STORAGE_PROVISIONED",
                "CREDIT",
                "AWS Data Transfer Same Region"
            ]
        );
        assert!(
            items.iter().all(|i| i.total_cents == 100),
            "no spend changed"
        );
        assert!(known_skus(None, &[]).is_empty());
    }
}
