//! The durable state (`--storage.path DIR`): what a restart must not lose, one file per org.
//!
//! Kept per org ([`OrgState`]):
//! - every project, cluster and Flex cluster id seen, with its name, its last seen tags and
//!   when it was last seen ([`Known`]);
//! - per query ([`QueryState`]), keyed on its configuration ([`query_fingerprint`]): its last
//!   good data (the series served, and the months they cover), its status (last success,
//!   last attempt, last error) and its closed months with the ids they covered (what the
//!   month cache holds);
//! - its invoice source's state ([`InvoiceState`]), when the source runs for the org, keyed on
//!   the invoice configuration ([`invoice_fingerprint`]): its last good data, its status, and
//!   on the 1st of a month the previous month's closed invoice's items.
//!
//! Never kept: credentials, OAuth tokens, Digest nonces, anything of `--web.config.file`. The
//! types here have no field that could hold one.
//!
//! Two parts:
//! - `codec`: the bytes of a file: a header (magic, format version, length, CRC-32), the
//!   postcard-encoded data, with its strings and label sets in tables, and an invoice section
//!   with a length and checksum of its own (a bad one loses only the invoice part);
//! - `store`: the directory: created 0700, locked as Prometheus locks its data directory,
//!   files 0600 written atomically (temporary file, fsync, rename, fsync of the directory),
//!   bad files set aside (renamed, never deleted);
//! - `inspect`: what `check-config` reports of the directory and the kept files, leaving
//!   both as they were.
//!
//! The refresher writes an org's file after each publication of that org's refresh (never on
//! the scrape path), and restores every configured org's file at start-up.

mod codec;
mod inspect;
mod store;

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use codec::{DecodeError, FORMAT_VERSION, decode, encode};
pub use inspect::{ConfiguredOrg, Inspection, KeptFile, KeptInvoices, inspect};
pub use store::{Loaded, StateError, Store, file_name};

use crate::config::QuerySpec;
use crate::exposition::RenderedSeries;
use crate::invoice::{InvoiceData, LineItem, SkuControls};
use crate::model::GroupBy;
use crate::month::Month;
use crate::series::{SeriesKey, TagLabels};

/// What is kept of one org.
#[derive(Clone, Debug, Default)]
pub struct OrgState {
    /// The org id (24 hex characters); a file holding another org is set aside.
    pub org_id: String,
    /// When the state was written.
    pub written_at: Option<SystemTime>,
    /// Every id seen.
    pub known: KnownState,
    /// The org's queries, as configured when the state was written.
    pub queries: Vec<QueryState>,
    /// Its invoice source, when the source ran for the org.
    pub invoices: Option<InvoiceState>,
    /// Why the file's invoice part was not read (its other parts were), when it was bad.
    pub invoices_error: Option<DecodeError>,
}

/// Every project and cluster (dedicated or Flex) id an org's refreshes have seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownState {
    /// Projects.
    pub projects: Vec<Known>,
    /// Clusters, dedicated and Flex.
    pub clusters: Vec<Known>,
}

/// A project or cluster seen in a listing or a result row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    /// Its Atlas id.
    pub id: String,
    /// Its name, as last seen.
    pub name: String,
    /// A cluster's project id, when known; `None` for projects.
    pub project_id: Option<String>,
    /// Its tags (key, value) as the last listing that showed it had them, all of them (not
    /// only those of `--cost.tag-labels`, so a tag key added later applies to it too).
    pub tags: Vec<(String, String)>,
    /// When a listing or a result row last showed it.
    pub last_seen: SystemTime,
}

/// What is kept of one query.
#[derive(Clone, Debug)]
pub struct QueryState {
    /// The `query` label.
    pub name: String,
    /// [`query_fingerprint`] of its configuration when it was kept: another one is not used.
    pub fingerprint: u64,
    /// Its status.
    pub status: KeptStatus,
    /// The months its last good data covers (first, last), when it has any.
    pub window: Option<(Month, Month)>,
    /// Its last good series, in exposition order.
    pub series: Arc<Vec<RenderedSeries>>,
    /// Its closed months, as the month cache held them.
    pub closed: Vec<ClosedMonth>,
}

/// A query's status when it was kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptStatus {
    /// Whether its last refresh succeeded.
    pub up: bool,
    /// When its last successful refresh finished: the kept series are from then.
    pub last_success: Option<SystemTime>,
    /// When its last refresh finished.
    pub last_attempt: Option<SystemTime>,
    /// Its last refresh's error, when it failed (never holds a secret).
    pub last_error: Option<String>,
    /// Rows skipped in its last successful refresh.
    pub invalid_rows: u64,
    /// Series folded by its `max_series` in its last successful refresh.
    pub shed: u64,
}

/// A closed month of a query, aggregated, with the ids it was read with.
#[derive(Clone, Debug)]
pub struct ClosedMonth {
    /// The month.
    pub month: Month,
    /// When it was read from Atlas (the month cache reads it again a day later).
    pub read_at: SystemTime,
    /// The project and cluster ids the query filtered on, sorted.
    pub ids: Arc<Vec<String>>,
    /// `(labels, micro-dollars)` of the month, controls applied.
    pub series: Arc<Vec<(SeriesKey, i64)>>,
}

/// What is kept of an org's invoice source (issue 22), when it runs for the org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceState {
    /// [`invoice_fingerprint`] of the invoice configuration when it was kept: another one is
    /// not used.
    pub fingerprint: u64,
    /// The source's status, as [`crate::snapshot::SourceStatus`] holds it.
    pub status: KeptSourceStatus,
    /// Its last good data (the SKU series, unit prices, last day, org month to date, item
    /// count), as published; `None` when it never succeeded.
    pub data: Option<Arc<InvoiceData>>,
    /// The previous month's closed invoice's items, as read (SKUs mapped, labels filled), when
    /// they can still be used: only on the 1st of a month, the one day the source reads them.
    pub closed: Option<(Month, Arc<Vec<LineItem>>)>,
}

/// A source's status when it was kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptSourceStatus {
    /// Whether its last refresh succeeded.
    pub up: bool,
    /// When its last successful refresh finished: the kept data is from then.
    pub last_success: Option<SystemTime>,
    /// How long its last refresh took.
    pub duration: Option<Duration>,
}

/// The fingerprint of what the invoice source of org `org_id` would serve: its SKU controls
/// (`--invoices.sku-*`, `--invoices.max-series`) and the other orgs that report their own
/// invoices ([`crate::config::Config::invoice_reporters`]: a paying org's source leaves out
/// their linked invoices, so adding or removing one changes what it reports). The tag labels are not in it: the kept series
/// hold every tag of their items and are rendered with the labels configured now.
///
/// FNV-1a, as [`query_fingerprint`], over a version of the source's arithmetic: a release that
/// changes what the same invoices come to changes `INVOICE_SHAPE` and reads them again.
pub fn invoice_fingerprint(
    org_id: &str,
    controls: &SkuControls,
    reporters: &BTreeSet<String>,
) -> u64 {
    const INVOICE_SHAPE: u32 = 1;
    let mut h = Fnv::default();
    INVOICE_SHAPE.hash(&mut h);
    controls
        .allow
        .as_ref()
        .map(regex::Regex::as_str)
        .hash(&mut h);
    controls
        .deny
        .as_ref()
        .map(regex::Regex::as_str)
        .hash(&mut h);
    controls.min_micros.hash(&mut h);
    controls.top.hash(&mut h);
    controls.max_series.hash(&mut h);
    reporters
        .iter()
        .filter(|o| *o != org_id)
        .collect::<Vec<_>>()
        .hash(&mut h);
    h.finish()
}

/// FNV-1a, 64 bits, as a [`Hasher`]: a fingerprint that stays the same across processes and
/// builds (std's `DefaultHasher` promises neither).
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The fingerprint of a query's configuration: its name, grouping, months, format, filters,
/// partial matches and controls, and, for a query grouped by projects or clusters, the tag
/// labels its series carry. Closed months and kept data are used only by a query with the
/// same fingerprint: a changed configuration reads its months again, as the month cache
/// does within a process.
///
/// It is FNV-1a over the configuration's `Hash`, stable across processes and builds of the
/// same release; should a future Rust change how std hashes strings or integers, the kept
/// data of every query would be dropped once (read again from Atlas), never misused.
pub fn query_fingerprint(spec: &QuerySpec, tags: &TagLabels) -> u64 {
    let mut h = Fnv::default();
    spec.hash(&mut h);
    if matches!(spec.group_by, GroupBy::Projects | GroupBy::Clusters) {
        tags.keys().hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint is FNV-1a: fixed by its definition, so the same configuration gives
    /// the same value in every process; any change to the query, and a tag label change on a
    /// grouped query, gives another.
    #[test]
    fn the_fingerprint_is_stable_and_follows_the_configuration() {
        let mut h = Fnv::default();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c, "FNV-1a of \"a\"");
        let specs = QuerySpec::defaults(3);
        let none = TagLabels::default();
        let team = TagLabels::new("t", ["team"]).expect("valid");
        let base: Vec<u64> = specs.iter().map(|s| query_fingerprint(s, &none)).collect();
        assert_eq!(
            base,
            specs
                .iter()
                .map(|s| query_fingerprint(s, &none))
                .collect::<Vec<_>>()
        );
        assert!(base[0] != base[1] && base[1] != base[2] && base[0] != base[2]);
        let mut longer = specs[2].clone();
        longer.months = 4;
        assert_ne!(query_fingerprint(&longer, &none), base[2]);
        assert_ne!(query_fingerprint(&specs[2], &team), base[2], "grouped");
        assert_eq!(query_fingerprint(&specs[0], &team), base[0], "ungrouped");
    }

    /// The invoice fingerprint follows what changes the served SKU series (each SKU control,
    /// the other orgs configured beside the org), and not the tag labels or the org's own
    /// place in the list.
    #[test]
    fn the_invoice_fingerprint_follows_the_sku_controls_and_the_configured_orgs() {
        let org = "5f1b2c3d4e5f6a7b8c9d0e1f";
        let other = "6a7b8c9d0e1f5f1b2c3d4e5f";
        let alone: BTreeSet<String> = [org.to_owned()].into();
        let both: BTreeSet<String> = [org.to_owned(), other.to_owned()].into();
        let none = SkuControls::default();
        let base = invoice_fingerprint(org, &none, &alone);
        assert_eq!(base, invoice_fingerprint(org, &none, &alone), "stable");
        assert_eq!(
            base,
            invoice_fingerprint(org, &none, &BTreeSet::new()),
            "own org"
        );
        assert_ne!(
            base,
            invoice_fingerprint(org, &none, &both),
            "a linked org configured"
        );
        let regex = |r: &str| Some(regex::Regex::new(r).expect("valid"));
        let changed = [
            SkuControls {
                allow: regex("ATLAS_.*"),
                ..SkuControls::default()
            },
            SkuControls {
                deny: regex("ATLAS_.*"),
                ..SkuControls::default()
            },
            SkuControls {
                min_micros: Some(1_000_000),
                ..SkuControls::default()
            },
            SkuControls {
                top: Some(3),
                ..SkuControls::default()
            },
            SkuControls {
                max_series: Some(3),
                ..SkuControls::default()
            },
        ];
        let prints: BTreeSet<u64> = changed
            .iter()
            .map(|c| invoice_fingerprint(org, c, &alone))
            .chain([base])
            .collect();
        assert_eq!(prints.len(), changed.len() + 1, "each control changes it");
    }
}
