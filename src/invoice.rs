//! The invoice vocabulary (issue 22), typed: line items of the pending and closed invoices,
//! exact in cents and nano-units, and the pure function that turns them into the SKU series
//! the invoice source publishes ([`aggregate`]).
//!
//! This module imports nothing of the crate but the model and months. The JSON is read in
//! the client (`atlas::invoices`); the text is written by `exposition::invoices`.
//!
//! What the arithmetic decides, and why:
//! - an item's net amount is `totalPriceCents - discountCents` (the spec calls the discount
//!   "the sum by which MongoDB discounted this line item"); credits are items with a negative
//!   net and stay negative; zero-cost items are series of 0;
//! - an item spans the UTC days from its `startDate` to its `endDate`, the end exclusive (an
//!   `endDate` at midnight starts no day); its net and quantity are split over those days
//!   exactly: whole cents and nano-units, the first days taking the remainder, so the days
//!   always add up to the item;
//! - the month to date counts the days of the current UTC month; the last complete day is
//!   yesterday (UTC): Atlas posts a day's charges the next day. On the 1st yesterday is in the
//!   closed invoice of the previous month, which the source reads for it;
//! - each invoice is attributed to its own `orgId` (cross-organization billing): an org's
//!   source skips the invoices of the other orgs whose own invoice source runs, on any shard
//!   ([`crate::config::Config::invoice_reporters`]), which report their own, so none is
//!   counted twice, and counts those of the others (not configured, or with the source off).

use std::collections::{BTreeMap, BTreeSet};

use crate::month::Month;

/// Seconds in a day.
pub const DAY_SECS: i64 = 86_400;

/// Nano-units in one unit of quantity.
pub const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// A line item, as the client read it from a pending invoice's `lineItems` or a closed
/// invoice's `lineItems:search`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineItem {
    /// `sku` (closed invoices: their `description`).
    pub sku: String,
    /// `startDate` (closed invoices: `usageDate`), Unix seconds.
    pub start: i64,
    /// `endDate`, Unix seconds, exclusive; `None` for a one-day item.
    pub end: Option<i64>,
    /// `quantity` in nano-units (billionths of `unit`).
    pub quantity_nanos: i64,
    /// `unit` (`GB`, `HOURS`, ...), when given.
    pub unit: Option<String>,
    /// `unitPriceDollars` in micro-dollars, when given.
    pub unit_price_micros: Option<i64>,
    /// `totalPriceCents`.
    pub total_cents: i64,
    /// `discountCents` (0 when absent).
    pub discount_cents: i64,
    /// `tierLowerBound` in nano-units, for tiered SKUs.
    pub tier_lower_nanos: Option<i64>,
    /// `groupId`: the project, when the charge has one.
    pub project_id: Option<String>,
    /// `groupName`.
    pub project_name: Option<String>,
    /// `clusterName`.
    pub cluster_name: Option<String>,
    /// `cloudProvider` (`AWS`, `GCP`, `AZURE`, `ATLAS`), as an open string.
    pub cloud_provider: Option<String>,
    /// `tags`: (key, value) pairs, the first value of each key.
    pub tags: Vec<(String, String)>,
}

impl LineItem {
    /// What the item bills after its discount, in cents.
    pub fn net_cents(&self) -> i64 {
        self.total_cents.saturating_sub(self.discount_cents)
    }

    /// The UTC days (days since 1970-01-01) the item covers: from its start's day up to its
    /// end, exclusive (an end at midnight starts no day); at least the start's day.
    pub fn days(&self) -> std::ops::Range<i64> {
        let first = self.start.div_euclid(DAY_SECS);
        let last = match self.end {
            Some(end) if end > self.start => (end + DAY_SECS - 1).div_euclid(DAY_SECS),
            _ => first + 1,
        };
        // A broken end date far off is no year-long spread of one charge: at most 366 days.
        first..last.clamp(first + 1, first + 366)
    }

    /// The item's net cents and quantity split exactly over its days: `(day, cents, nanos)`;
    /// the first days take the remainders, and the days add up to the item.
    pub fn per_day(&self) -> Vec<(i64, i64, i64)> {
        let days = self.days();
        let n = days.end - days.start;
        let cents = split(self.net_cents(), n);
        let nanos = split(self.quantity_nanos, n);
        days.zip(cents.zip(nanos))
            .map(|(d, (c, q))| (d, c, q))
            .collect()
    }
}

/// `total` split into `n` whole parts that add up to it, the first ones larger by one.
fn split(total: i64, n: i64) -> impl Iterator<Item = i64> {
    let n = n.max(1);
    let (q, r) = (total / n, total % n);
    (0..n).map(move |i| q + if i < r.abs() { r.signum() } else { 0 })
}

/// An invoice of the pending list (or a linked org's, nested in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoice {
    /// `id`, when given.
    pub id: Option<String>,
    /// `orgId`: the org that incurred the charges, when given.
    pub org_id: Option<String>,
    /// `lineItems`.
    pub items: Vec<LineItem>,
    /// `linkedInvoices`: the invoices of the orgs this one pays for.
    pub linked: Vec<Invoice>,
}

/// The labels of a SKU series, besides the tag labels' values (kept as the item's tags).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SkuKey {
    /// The org that incurred the charge.
    pub org_id: String,
    /// `groupId`.
    pub project_id: Option<String>,
    /// `groupName`.
    pub project_name: Option<String>,
    /// `clusterName`.
    pub cluster_name: Option<String>,
    /// `sku`; [`OTHER`] for folded SKUs.
    pub sku: String,
    /// `unit`.
    pub unit: Option<String>,
    /// `cloudProvider`.
    pub cloud_provider: Option<String>,
    /// The item's tags, sorted (only the configured tag keys are rendered).
    pub tags: Vec<(String, String)>,
}

/// The label value of folded SKUs, as the cost controls fold into `(other)`.
pub const OTHER: &str = "(other)";

/// One SKU series: its month to date and quantity, and its spend on the last complete day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuSeries {
    /// Its labels.
    pub key: SkuKey,
    /// Net spend of the current month so far, micro-dollars.
    pub month_to_date_micros: i64,
    /// Quantity of the current month so far, nano-units of `unit`.
    pub quantity_nanos: i64,
    /// Net spend of the last complete day, micro-dollars (0 when it had no such item).
    pub last_day_micros: i64,
}

/// The unit price of a SKU in an org: of its latest item, the highest tier for tiered SKUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitPrice {
    /// The org.
    pub org_id: String,
    /// `sku`.
    pub sku: String,
    /// `unit`.
    pub unit: Option<String>,
    /// `unitPriceDollars`, micro-dollars.
    pub micros: i64,
}

/// What one refresh of the invoice source of an org came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvoiceData {
    /// The SKU series, sorted by key.
    pub skus: Vec<SkuSeries>,
    /// Unit prices, sorted by org, SKU and unit.
    pub prices: Vec<UnitPrice>,
    /// The start of the last complete day, Unix seconds.
    pub last_day_start: i64,
    /// Month to date per org (the invoice's side of the reconciliation), micro-dollars,
    /// before any folding (folding keeps sums anyway).
    pub org_month_to_date_micros: BTreeMap<String, i64>,
    /// Line items aggregated (pending and closed), whether or not a day of theirs counted.
    pub items: u64,
}

/// The cardinality controls of the SKU series (`--invoices.*`): the same rules as the cost
/// controls, what is folded goes into an `(other)` SKU and the sums stay exact.
#[derive(Clone, Debug, Default)]
pub struct SkuControls {
    /// SKUs must match this (anchored) to be kept.
    pub allow: Option<regex::Regex>,
    /// SKUs that match this (anchored) are folded.
    pub deny: Option<regex::Regex>,
    /// SKU series whose month to date (in absolute value) is below this are folded.
    pub min_micros: Option<i64>,
    /// SKUs kept per (org, project, cluster), the most expensive first.
    pub top: Option<usize>,
    /// Most SKU series in all; the cheapest are folded first.
    pub max_series: Option<usize>,
}

/// The SKU series of an org's refresh: `pending` (the pending invoices, linked orgs' among
/// them) and, when the last complete day is not in the current month, `closed` (the closed
/// invoice's items of that day), on UTC day `today` (days since 1970-01-01).
/// Invoices of the orgs in `skip` are left out: their own source reports them.
pub fn aggregate(
    own_org: &str,
    pending: &[Invoice],
    closed: &[LineItem],
    today: i64,
    skip: &BTreeSet<String>,
    controls: &SkuControls,
) -> InvoiceData {
    let current = month_of_day(today);
    let yesterday = today - 1;
    let mut series: BTreeMap<SkuKey, SkuSeries> = BTreeMap::new();
    // (org, sku, unit) -> (first day, tier lower bound, price) of the latest, highest tier.
    type PriceKey = (String, String, Option<String>);
    let mut latest_price: BTreeMap<PriceKey, (i64, i64, i64)> = BTreeMap::new();
    let mut org_mtd: BTreeMap<String, i64> = BTreeMap::new();
    let mut items = 0u64;
    // On the 1st the last complete day is in the closed invoice, and only there.
    let use_closed = month_of_day(yesterday) != current;
    let mut add = |org: &str, item: &LineItem, month_to_date: bool| {
        items += 1;
        let key = key_of(org, item);
        for (day, cents, nanos) in item.per_day() {
            let in_month = month_to_date && month_of_day(day) == current;
            let is_last = day == yesterday && month_to_date != use_closed;
            if !in_month && !is_last {
                continue;
            }
            let s = series.entry(key.clone()).or_insert_with(|| SkuSeries {
                key: key.clone(),
                month_to_date_micros: 0,
                quantity_nanos: 0,
                last_day_micros: 0,
            });
            let micros = cents.saturating_mul(10_000);
            if in_month {
                s.month_to_date_micros = s.month_to_date_micros.saturating_add(micros);
                s.quantity_nanos = s.quantity_nanos.saturating_add(nanos);
                *org_mtd.entry(org.to_owned()).or_insert(0) += micros;
            }
            if is_last {
                s.last_day_micros = s.last_day_micros.saturating_add(micros);
            }
        }
        if let Some(price) = item.unit_price_micros {
            let rank = (
                item.days().start,
                item.tier_lower_nanos.unwrap_or(i64::MIN),
                price,
            );
            let slot = latest_price
                .entry((org.to_owned(), item.sku.clone(), item.unit.clone()))
                .or_insert(rank);
            if rank > *slot {
                *slot = rank;
            }
        }
    };
    // An invoice seen twice (listed, and linked under its payer) is counted once.
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for invoice in pending.iter().flat_map(flatten) {
        if let Some(id) = invoice.id.as_deref()
            && !seen.insert(id)
        {
            continue;
        }
        let org = invoice.org_id.as_deref().unwrap_or(own_org);
        if org != own_org && skip.contains(org) {
            continue;
        }
        for item in &invoice.items {
            add(org, item, true);
        }
    }
    if use_closed {
        for item in closed {
            add(own_org, item, false);
        }
    }
    org_mtd.entry(own_org.to_owned()).or_insert(0);
    let skus = apply_controls(series.into_values().collect(), controls);
    InvoiceData {
        skus,
        prices: latest_price
            .into_iter()
            .map(|((org_id, sku, unit), (_, _, micros))| UnitPrice {
                org_id,
                sku,
                unit,
                micros,
            })
            .collect(),
        last_day_start: yesterday * DAY_SECS,
        org_month_to_date_micros: org_mtd,
        items,
    }
}

/// An invoice and its `linkedInvoices`, depth first.
fn flatten(invoice: &Invoice) -> Vec<&Invoice> {
    let mut out = vec![invoice];
    for linked in &invoice.linked {
        out.extend(flatten(linked));
    }
    out
}

fn key_of(org: &str, item: &LineItem) -> SkuKey {
    let mut tags = item.tags.clone();
    tags.sort();
    tags.dedup_by(|a, b| a.0 == b.0);
    SkuKey {
        org_id: org.to_owned(),
        project_id: item.project_id.clone(),
        project_name: item.project_name.clone(),
        cluster_name: item.cluster_name.clone(),
        sku: item.sku.clone(),
        unit: item.unit.clone(),
        cloud_provider: item.cloud_provider.clone(),
        tags,
    }
}

/// The place a SKU series is billed to: its org, project and cluster.
fn parent(key: &SkuKey) -> (&str, Option<&str>, Option<&str>) {
    (
        &key.org_id,
        key.project_id.as_deref(),
        key.cluster_name.as_deref(),
    )
}

/// Folds the series the controls do not keep into one `(other)` series per place (org,
/// project, cluster; no unit, provider or tags); a series limit then folds whole places'
/// cheapest series into one `(other)` per org. Every sum stays exact.
pub fn apply_controls(series: Vec<SkuSeries>, c: &SkuControls) -> Vec<SkuSeries> {
    let anchored = |r: &regex::Regex, s: &str| r.find(s).is_some_and(|m| m.len() == s.len());
    // Rank within each place by month to date, then last day, most expensive first.
    let mut by_place: BTreeMap<(String, Option<String>, Option<String>), Vec<SkuSeries>> =
        BTreeMap::new();
    for s in series {
        let (o, p, cl) = parent(&s.key);
        let place = (o.to_owned(), p.map(str::to_owned), cl.map(str::to_owned));
        by_place.entry(place).or_default().push(s);
    }
    let mut out: Vec<SkuSeries> = Vec::new();
    for (_, mut list) in by_place {
        list.sort_by(|a, b| {
            (b.month_to_date_micros.abs(), b.last_day_micros.abs())
                .cmp(&(a.month_to_date_micros.abs(), a.last_day_micros.abs()))
                .then_with(|| a.key.cmp(&b.key))
        });
        let mut other: Option<SkuSeries> = None;
        let mut kept = 0usize;
        for s in list {
            let allowed = c.allow.as_ref().is_none_or(|r| anchored(r, &s.key.sku));
            let denied = c.deny.as_ref().is_some_and(|r| anchored(r, &s.key.sku));
            let big = c
                .min_micros
                .is_none_or(|m| s.month_to_date_micros.abs() >= m || s.last_day_micros.abs() >= m);
            let within_top = c.top.is_none_or(|t| kept < t);
            if allowed && !denied && big && within_top && s.key.sku != OTHER {
                kept += 1;
                out.push(s);
            } else {
                fold_into(&mut other, &s);
            }
        }
        out.extend(other);
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    match c.max_series {
        Some(max) if out.len() > max => limit(out, max),
        _ => out,
    }
}

fn fold_into(other: &mut Option<SkuSeries>, s: &SkuSeries) {
    let o = other.get_or_insert_with(|| SkuSeries {
        key: SkuKey {
            org_id: s.key.org_id.clone(),
            project_id: s.key.project_id.clone(),
            project_name: s.key.project_name.clone(),
            cluster_name: s.key.cluster_name.clone(),
            sku: OTHER.to_owned(),
            unit: None,
            cloud_provider: None,
            tags: Vec::new(),
        },
        month_to_date_micros: 0,
        quantity_nanos: 0,
        last_day_micros: 0,
    });
    o.month_to_date_micros = o
        .month_to_date_micros
        .saturating_add(s.month_to_date_micros);
    o.last_day_micros = o.last_day_micros.saturating_add(s.last_day_micros);
    // Quantities of different units do not add up: the folded series carries none.
}

/// Keeps the `max - orgs` most expensive series and folds the rest into one `(other)` per
/// org (no project or cluster), so the result holds at most `max` series.
fn limit(series: Vec<SkuSeries>, max: usize) -> Vec<SkuSeries> {
    let orgs: BTreeSet<String> = series.iter().map(|s| s.key.org_id.clone()).collect();
    let keep = max.saturating_sub(orgs.len());
    let mut ranked = series;
    ranked.sort_by(|a, b| {
        b.month_to_date_micros
            .abs()
            .cmp(&a.month_to_date_micros.abs())
            .then_with(|| a.key.cmp(&b.key))
    });
    let mut out: Vec<SkuSeries> = Vec::new();
    let mut others: BTreeMap<String, SkuSeries> = BTreeMap::new();
    for (i, s) in ranked.into_iter().enumerate() {
        if i < keep && s.key.sku != OTHER {
            out.push(s);
        } else {
            let mut slot = others.remove(&s.key.org_id);
            fold_into(&mut slot, &s);
            if let Some(mut o) = slot {
                o.key.project_id = None;
                o.key.project_name = None;
                o.key.cluster_name = None;
                others.insert(o.key.org_id.clone(), o);
            }
        }
    }
    out.extend(others.into_values());
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The SKU a closed item's `description` names, among the `known` SKUs (issue 22): the
/// view of `lineItems:search` has no `sku`, only a description that "can include SKU name
/// and other identifying information". A description equal to a known SKU is that SKU; else
/// the longest known SKU that appears in it as a whole token (a maximal run of
/// `[A-Za-z0-9_]`, so `ATLAS_AWS_INSTANCE_M30` is not found in `ATLAS_AWS_INSTANCE_M300`);
/// else `None` (the caller keeps the description: spend is never dropped).
pub fn match_sku<'a>(
    description: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let tokens: std::collections::HashSet<&str> = description
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty())
        .collect();
    let mut best: Option<&'a str> = None;
    for sku in known {
        if sku == description {
            return Some(sku);
        }
        if tokens.contains(sku)
            && best.is_none_or(|b| sku.len() > b.len() || (sku.len() == b.len() && sku < b))
        {
            best = Some(sku);
        }
    }
    best
}

/// The UTC month of a day (days since 1970-01-01).
pub fn month_of_day(day: i64) -> Month {
    let secs = u64::try_from(day.saturating_mul(DAY_SECS)).unwrap_or(0);
    Month::containing(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// The UTC day (days since 1970-01-01) of `t`.
pub fn day_of(t: std::time::SystemTime) -> i64 {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs).unwrap_or(i64::MAX).div_euclid(DAY_SECS)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An ISO 8601 date or UTC timestamp (`2024-10-10`, `2024-10-10T00:00:00Z`,
/// `2024-10-10T02:57:56.123Z`, `2024-10-10T00:00:00+02:00`) to Unix seconds; `None` for
/// anything else.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        (!part.is_empty() && part.bytes().all(|c| c.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let m = u32::try_from(m).ok().filter(|m| (1..=12).contains(m))?;
    let month = Month::new(i32::try_from(y).ok()?, m)?;
    let d = u32::try_from(d)
        .ok()
        .filter(|d| (1..=month.days()).contains(d))?;
    let mut secs = days_from_civil(y, m, d) * DAY_SECS;
    if b.len() == 10 {
        return Some(secs);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let (hh, mm) = (digits(11..13)?, digits(14..16)?);
    let mut i = 16;
    let mut ss = 0;
    if b.get(i) == Some(&b':') {
        ss = digits(17..19)?;
        i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
    }
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    secs += hh * 3600 + mm * 60 + ss;
    match &s[i..] {
        "Z" | "z" | "" => Some(secs),
        offset if offset.len() == 6 && matches!(offset.as_bytes()[0], b'+' | b'-') => {
            let oh = digits(i + 1..i + 3)?;
            let om = digits(i + 4..i + 6)?;
            if offset.as_bytes()[3] != b':' {
                return None;
            }
            let off = oh * 3600 + om * 60;
            Some(if offset.starts_with('+') {
                secs - off
            } else {
                secs + off
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
