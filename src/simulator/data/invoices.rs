//! The invoices of the simulated account (issue 22): the same charges as the Cost Explorer
//! records, split per SKU and per day, so that per cluster and month the items add up to the
//! records to the cent.
//!
//! Each record's cents are split over its service's SKUs (fixed weights, the first SKU taking
//! the remainder), then each SKU's over the posted days of the month (the first days taking
//! the remainder), in one-day items or, in the `multi_day` variant, items of up to three
//! days. `Clusters` items carry a 10 % discount (`totalPriceCents` is the net plus
//! `discountCents`); `Credits` are negative; each `Data Transfer` record has one zero-cost
//! item (the OpenCost fixture's). Quantities are the net at the SKU's unit price.

use super::{Dataset, UsageRecord};
use crate::month::Month;

/// A SKU of a service: its name, unit, price in micro-dollars and weight in the service's
/// charges.
struct Sku {
    name: String,
    unit: &'static str,
    price_micros: i64,
    weight: i64,
}

fn skus(service: &str) -> Vec<Sku> {
    let sku = |name: &str, unit, price_micros, weight| Sku {
        name: name.to_owned(),
        unit,
        price_micros,
        weight,
    };
    match service {
        "Clusters" => vec![sku("ATLAS_AWS_INSTANCE_M30", "HOURS", 540_000, 1)],
        "Storage" => vec![sku("ATLAS_AWS_STORAGE_PROVISIONED", "GB_DAYS", 3_800, 1)],
        "Backup" => vec![sku(
            "ATLAS_AWS_BACKUP_SNAPSHOT_STORAGE",
            "GB_DAYS",
            2_500,
            1,
        )],
        "Data Transfer" => vec![
            sku("ATLAS_AWS_DATA_TRANSFER_SAME_REGION", "GB", 10_000, 3),
            sku("ATLAS_AWS_DATA_TRANSFER_DIFFERENT_REGION", "GB", 20_000, 1),
        ],
        "Support" => vec![sku("ATLAS_SUPPORT_DEVELOPER", "MONTHS", 49_000_000, 1)],
        "Credits" => vec![sku("CREDIT", "DOLLARS", 1_000_000, 1)],
        other => {
            let name: String = other
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            vec![sku(&format!("ATLAS_{name}"), "UNITS", 1_000_000, 1)]
        }
    }
}

/// One line item of a simulated invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimItem {
    /// The record it comes from (index into [`Dataset::usage`] of its org's range).
    pub record: usize,
    /// `sku`.
    pub sku: String,
    /// `unit`.
    pub unit: &'static str,
    /// `unitPriceDollars`, micro-dollars.
    pub price_micros: i64,
    /// First day, 1-based, of `month`.
    pub day: u32,
    /// Days covered (1 unless `multi_day`).
    pub days: u32,
    /// Net cents (what the Cost Explorer counts).
    pub net_cents: i64,
    /// `discountCents`.
    pub discount_cents: i64,
    /// `quantity` in nano-units.
    pub quantity_nanos: i64,
}

/// `total` split into `n` parts adding up to it, the first ones larger by one.
fn split(total: i64, n: i64) -> Vec<i64> {
    let n = n.max(1);
    let (q, r) = (total / n, total % n);
    (0..n)
        .map(|i| q + if i < r.abs() { r.signum() } else { 0 })
        .collect()
}

impl Dataset {
    /// The items of org `org`'s invoice of `month`, posted for days `1..=posted` (the
    /// whole record is spread over them: the Cost Explorer's month counts the same), in
    /// chunks of `chunk` days.
    pub fn invoice_items(&self, org: usize, month: Month, posted: u32, chunk: u32) -> Vec<SimItem> {
        let posted = posted.clamp(1, month.days());
        let chunk = chunk.max(1);
        let mut out = Vec::new();
        let base = self.org_ranges.get(org).map_or(0, |r| r.start);
        for (i, r) in self.org_usage(org).iter().enumerate() {
            if r.month != month {
                continue;
            }
            let skus = skus(&r.service);
            let weights: i64 = skus.iter().map(|s| s.weight).sum();
            let mut left = r.amount_cents;
            for (k, sku) in skus.iter().enumerate() {
                let cents = if k + 1 == skus.len() {
                    left
                } else {
                    r.amount_cents * sku.weight / weights.max(1)
                };
                left -= cents;
                let chunks: Vec<(u32, u32)> = (1..=posted)
                    .step_by(chunk as usize)
                    .map(|d| (d, chunk.min(posted + 1 - d)))
                    .collect();
                let per_chunk = split(cents, chunks.len() as i64);
                for ((day, days), net) in chunks.into_iter().zip(per_chunk) {
                    out.push(item(base + i, r, sku, day, days, net));
                }
            }
            if r.service == "Data Transfer" {
                out.push(SimItem {
                    record: base + i,
                    sku: "ATLAS_AWS_DATA_TRANSFER_DIFFERENT_REGION".to_owned(),
                    unit: "GB",
                    price_micros: 20_000,
                    day: 1,
                    days: 1,
                    net_cents: 0,
                    discount_cents: 0,
                    quantity_nanos: 604,
                });
            }
        }
        out
    }

    /// The record an item comes from.
    pub fn record(&self, item: &SimItem) -> Option<&UsageRecord> {
        self.usage.get(item.record)
    }
}

fn item(record: usize, r: &UsageRecord, sku: &Sku, day: u32, days: u32, net: i64) -> SimItem {
    let discount_cents = if r.service == "Clusters" && net > 0 {
        net / 9
    } else {
        0
    };
    let quantity = i128::from(net) * 10_000 * 1_000_000_000 / i128::from(sku.price_micros.max(1));
    SimItem {
        record,
        sku: sku.name.clone(),
        unit: sku.unit,
        price_micros: sku.price_micros,
        day,
        days,
        net_cents: net,
        discount_cents,
        quantity_nanos: i64::try_from(quantity.abs()).unwrap_or(i64::MAX),
    }
}
