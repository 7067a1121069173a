//! The published state: an immutable [`Snapshot`] per refresh, swapped in whole.
//!
//! A scrape takes an `Arc` to the current snapshot and never sees half of a refresh. The cost
//! families arrive encoded ([`EncodedCosts`], built by [`crate::exposition`] once per refresh).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// A run of the cost text with its compressed copy. The pieces of a refresh are sent in
/// order; each piece's copy is raw DEFLATE from an empty window ending on a sync flush, so
/// the copies splice, in the same order, into one gzip stream.
#[derive(Clone, Debug, Default)]
pub struct CostPiece {
    /// Exposition text (whole lines).
    pub text: Bytes,
    /// `text` as raw DEFLATE from an empty window, ending on a sync flush.
    pub deflated: Bytes,
    /// CRC-32 of `text`.
    pub crc: u32,
}

/// The cost families of one refresh, encoded once: the same bytes serve both formats (they
/// are gauges without units), and their compressed copies serve gzip scrapes. A query's
/// pieces are encoded and compressed when its org's refresh is published, and reused by the
/// publications of other orgs.
#[derive(Clone, Debug, Default)]
pub struct EncodedCosts {
    /// The text in order (no `# EOF`), without empty pieces.
    pub pieces: Vec<CostPiece>,
    /// Bytes of text in all pieces.
    pub len: u64,
    /// CRC-32 of the whole text, for the gzip trailer.
    pub crc: u32,
    /// Series in `atlas_cost_usage_usd`.
    pub usage_series: usize,
}

impl EncodedCosts {
    /// The whole text in one buffer (tests, benchmarks).
    pub fn text(&self) -> Vec<u8> {
        self.pieces
            .iter()
            .flat_map(|p| p.text.iter().copied())
            .collect()
    }

    /// Bytes of the compressed copies in all pieces.
    pub fn deflated_len(&self) -> usize {
        self.pieces.iter().map(|p| p.deflated.len()).sum()
    }
}

use crate::month::Month;

/// What a query's last refreshes came to.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryStatus {
    /// Query name.
    pub query: String,
    /// Org id.
    pub org_id: String,
    /// Whether a first refresh has finished in this process (successfully or not).
    pub attempted: bool,
    /// Whether the data served came from the state kept in `--storage.path` by an earlier
    /// process: from start-up until this process's first successful refresh of the query.
    pub restored: bool,
    /// Whether the last refresh succeeded.
    pub up: bool,
    /// When the last refresh finished.
    pub last_attempt: Option<SystemTime>,
    /// When the last successful refresh finished; the served data is from then.
    pub last_success: Option<SystemTime>,
    /// The last refresh's error, if it failed (never holds a secret).
    pub last_error: Option<String>,
    /// Series served for this query (from its last successful refresh).
    pub series: usize,
    /// Rows skipped in the last successful refresh because they were invalid.
    pub invalid_rows: u64,
}

impl QueryStatus {
    /// The status of a query that has not run yet.
    pub fn pending(query: &str, org_id: &str) -> QueryStatus {
        QueryStatus {
            query: query.to_owned(),
            org_id: org_id.to_owned(),
            attempted: false,
            restored: false,
            up: false,
            last_attempt: None,
            last_success: None,
            last_error: None,
            series: 0,
            invalid_rows: 0,
        }
    }
}

/// What a source's last refreshes of an org came to: node_exporter's collector success and
/// duration, per source and org. The refresher times and records every source alike.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceStatus {
    /// The source's name: `cost_explorer` or `invoices`.
    pub source: &'static str,
    /// Org id.
    pub org_id: String,
    /// Whether its last refresh succeeded (`cost_explorer`: every query of the org).
    pub up: bool,
    /// When its last successful refresh finished.
    pub last_success: Option<SystemTime>,
    /// How long its last refresh took.
    pub duration: Option<Duration>,
}

impl SourceStatus {
    /// The status of a source that has not run yet.
    pub fn pending(source: &'static str, org_id: &str) -> SourceStatus {
        SourceStatus {
            source,
            org_id: org_id.to_owned(),
            up: false,
            last_success: None,
            duration: None,
        }
    }
}

/// What the landing page shows of an org: its name, and the current month's total from its
/// `services` query (the org's total by service), computed once per published refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct OrgSummary {
    /// Org id.
    pub org_id: String,
    /// `org_name` of the org's `services` series, when Atlas gave one.
    pub org_name: Option<String>,
    /// The current UTC month.
    pub month: Month,
    /// Month to date of the `services` query, micro-dollars; `None` while it has no series
    /// for the month (not refreshed yet, failing from the start, or no such query).
    pub month_to_date_micros: Option<i64>,
    /// The month-end forecast of that total ([`crate::budget::forecast_micros`]).
    pub forecast_micros: Option<i64>,
    /// The org's monthly spend over the window by service (its `services` query), as an
    /// inline SVG ([`crate::chart`]), escaped; the landing page copies it as it is.
    pub spend_chart: String,
}

/// One published refresh.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// One per (org, query), in configuration order.
    pub statuses: Vec<QueryStatus>,
    /// One per org, in configuration order.
    pub orgs: Vec<OrgSummary>,
    /// One per (org, source), in configuration order, the Cost Explorer first.
    pub sources: Vec<SourceStatus>,
    /// The cost series, pre-encoded.
    pub costs: EncodedCosts,
    /// The refresh interval (`--refresh.interval`), shown in HELP text and on the landing
    /// page.
    pub refresh: Duration,
    /// Number of refreshes published before this one.
    pub generation: u64,
}

impl Snapshot {
    /// Whether every query has finished its first attempt or serves data kept from before
    /// a restart.
    pub fn ready(&self) -> bool {
        self.statuses.iter().all(|s| s.attempted || s.restored)
    }
}

/// Holds the current snapshot.
#[derive(Debug, Default)]
pub struct SnapshotCell {
    // std RwLock: held only to clone or replace an Arc, never across an await.
    current: RwLock<Arc<Snapshot>>,
}

impl SnapshotCell {
    /// A cell holding `initial`.
    pub fn new(initial: Snapshot) -> SnapshotCell {
        SnapshotCell {
            current: RwLock::new(Arc::new(initial)),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Publishes a new snapshot.
    pub fn store(&self, next: Snapshot) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ready once every query has finished a first refresh in this process or serves data
    /// kept from before a restart; a query with neither holds readiness back.
    #[test]
    fn ready_counts_queries_with_kept_data() {
        let mut kept = QueryStatus::pending("services", "5f1b2c3d4e5f6a7b8c9d0e1f");
        kept.restored = true;
        let mut done = QueryStatus::pending("projects", "5f1b2c3d4e5f6a7b8c9d0e1f");
        done.attempted = true;
        let waiting = QueryStatus::pending("clusters", "5f1b2c3d4e5f6a7b8c9d0e1f");
        let snapshot = |statuses: Vec<QueryStatus>| Snapshot {
            statuses,
            ..Snapshot::default()
        };
        assert!(snapshot(vec![kept.clone(), done.clone()]).ready());
        assert!(!snapshot(vec![kept, done, waiting]).ready());
    }
}
