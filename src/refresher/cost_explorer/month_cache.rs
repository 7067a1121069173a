//! The closed-month cache: months older than the previous one no longer change at Atlas, so
//! each is kept per query and not read again while it is good (a day after it was read; with
//! `--storage.path`, across restarts too: the refresher keeps it in the org's state file).
//!
//! A cached month is keyed on the query's configuration (grouping, filters, controls: its
//! [`query_fingerprint`]): a change of any of them reads the closed months again. It is good
//! for a refresh only when the ids it was read with cover the ids the refresh would send, and
//! it is never replaced by a month read with fewer ids.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::config::QuerySpec;
use crate::month::Month;
use crate::series::{SeriesKey, TagLabels};
use crate::state::{ClosedMonth as KeptMonth, query_fingerprint};

/// One closed month of one query, aggregated, before its controls (which judge every month
/// at once): `(labels, micros)` pairs.
pub(in crate::refresher) type MonthSeries = Arc<Vec<(SeriesKey, i64)>>;

/// Project and cluster ids a query filtered on, sorted.
pub(in crate::refresher) type SortedIds = Arc<Vec<String>>;

/// The ids a query filters on, as the cache compares them.
pub(in crate::refresher) fn sorted_ids(projects: &[String], clusters: &[String]) -> SortedIds {
    let mut ids: Vec<String> = projects.iter().chain(clusters).cloned().collect();
    ids.sort_unstable();
    Arc::new(ids)
}

/// Which query of which org a cached month belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(in crate::refresher) struct QueryKey {
    org_id: String,
    query: String,
    /// [`query_fingerprint`] of the query's configuration: a change reads the closed months
    /// again.
    shape: u64,
}

impl QueryKey {
    /// The key of `spec` in the org `org_id`, whose series carry the tag labels `tags`.
    pub(in crate::refresher) fn new(org_id: &str, spec: &QuerySpec, tags: &TagLabels) -> QueryKey {
        QueryKey {
            org_id: org_id.to_owned(),
            query: spec.name.clone(),
            shape: query_fingerprint(spec, tags),
        }
    }

    /// The fingerprint of the query's configuration.
    pub(in crate::refresher) fn fingerprint(&self) -> u64 {
        self.shape
    }
}

/// A cached closed month and the ids its query filtered on.
#[derive(Clone)]
struct ClosedMonth {
    /// The month is good for any refresh whose ids are among these.
    ids: SortedIds,
    series: MonthSeries,
    /// When it was read from Atlas.
    read_at: SystemTime,
}

/// Whether every id of `ids` is in `sorted`.
fn covers(sorted: &[String], ids: &[String]) -> bool {
    ids.iter().all(|id| sorted.binary_search(id).is_ok())
}

/// Closed months of every query, aggregated.
pub(in crate::refresher) struct MonthCache {
    /// std Mutex: short sections (lookups, inserts, Arc clones), never across an await.
    months: Mutex<HashMap<QueryKey, BTreeMap<Month, ClosedMonth>>>,
    ttl: Duration,
}

impl MonthCache {
    /// An empty cache whose months are read again `ttl` after they were read.
    pub(in crate::refresher) fn new(ttl: Duration) -> MonthCache {
        MonthCache {
            months: Mutex::default(),
            ttl,
        }
    }

    fn fresh(&self, read_at: SystemTime, now: SystemTime) -> bool {
        now.duration_since(read_at).unwrap_or_default() < self.ttl
    }

    /// The cached months of `query` for `ids` from `start` on, before `hot_from`, without a
    /// gap, at `now`; and the first month to read from Atlas (the first closed month missing,
    /// or `hot_from`). Months before `start` and months past their time are dropped.
    pub(in crate::refresher) fn cached(
        &self,
        query: &QueryKey,
        ids: &[String],
        start: Month,
        hot_from: Month,
        now: SystemTime,
    ) -> (BTreeMap<Month, MonthSeries>, Month) {
        let mut all = self.months.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cached = BTreeMap::new();
        let mut month = start;
        let Some(months) = all.get_mut(query) else {
            return (cached, month);
        };
        months.retain(|m, c| *m >= start && self.fresh(c.read_at, now));
        while month < hot_from {
            match months.get(&month).filter(|c| covers(&c.ids, ids)) {
                Some(c) => {
                    cached.insert(month, c.series.clone());
                    month = month.plus(1);
                }
                None => break,
            }
        }
        (cached, month)
    }

    /// Caches `series`, a closed month of `query` read with `ids` at `read_at`, unless the
    /// month is cached already with ids this read does not cover.
    pub(in crate::refresher) fn offer(
        &self,
        query: &QueryKey,
        month: Month,
        ids: &SortedIds,
        series: MonthSeries,
        read_at: SystemTime,
    ) {
        let mut all = self.months.lock().unwrap_or_else(PoisonError::into_inner);
        let months = all.entry(query.clone()).or_default();
        if months.get(&month).is_none_or(|old| covers(ids, &old.ids)) {
            months.insert(
                month,
                ClosedMonth {
                    ids: ids.clone(),
                    series,
                    read_at,
                },
            );
        }
    }

    /// The months of `query` still good at `now`, to keep in the org's state.
    pub(in crate::refresher) fn kept(&self, query: &QueryKey, now: SystemTime) -> Vec<KeptMonth> {
        let all = self.months.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(query)
            .into_iter()
            .flatten()
            .filter(|(_, c)| self.fresh(c.read_at, now))
            .map(|(month, c)| KeptMonth {
                month: *month,
                read_at: c.read_at,
                ids: c.ids.clone(),
                series: c.series.clone(),
            })
            .collect()
    }

    /// Takes back months kept in a state file; those past their time at `now` are not.
    /// Returns how many were taken.
    pub(in crate::refresher) fn restore(
        &self,
        query: &QueryKey,
        kept: Vec<KeptMonth>,
        now: SystemTime,
    ) -> usize {
        let mut n = 0;
        for k in kept {
            if self.fresh(k.read_at, now) {
                self.offer(query, k.month, &k.ids, k.series, k.read_at);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn spec() -> QuerySpec {
        QuerySpec::defaults(6).remove(2)
    }

    fn ids(ids: &[&str]) -> SortedIds {
        let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        sorted_ids(&ids, &[])
    }

    fn series(micros: i64) -> MonthSeries {
        Arc::new(vec![(SeriesKey::default(), micros)])
    }

    fn month(m: u32) -> Month {
        Month::new(2026, m).expect("valid month")
    }

    fn amount(cached: &BTreeMap<Month, MonthSeries>, m: Month) -> Option<i64> {
        cached.get(&m).map(|s| s[0].1)
    }

    /// Cached months are served from the start without a gap: the first missing month is
    /// where the read from Atlas starts, and nothing after it is taken from the cache.
    #[test]
    fn cached_months_stop_at_the_first_gap() {
        let cache = MonthCache::new(HOUR);
        let key = QueryKey::new("org", &spec(), &TagLabels::default());
        let all = ids(&["a", "b"]);
        cache.offer(&key, month(1), &all, series(1), T0);
        cache.offer(&key, month(2), &all, series(2), T0);
        cache.offer(&key, month(4), &all, series(4), T0);
        let (cached, fetch_from) = cache.cached(&key, &all, month(1), month(5), T0);
        assert_eq!(fetch_from, month(3));
        assert_eq!(
            cached.keys().copied().collect::<Vec<_>>(),
            [month(1), month(2)]
        );
        assert_eq!(amount(&cached, month(2)), Some(2));
        // Nothing cached at all: read from the start.
        let (cached, fetch_from) = cache.cached(&key, &all, month(5), month(7), T0);
        assert!(cached.is_empty());
        assert_eq!(fetch_from, month(5));
    }

    /// A month is cached for one configuration of one query of one org: another org, another
    /// query name or changed controls read it again.
    #[test]
    fn months_are_keyed_on_the_query_configuration() {
        let cache = MonthCache::new(HOUR);
        let all = ids(&["a"]);
        let key = QueryKey::new("org", &spec(), &TagLabels::default());
        cache.offer(&key, month(1), &all, series(1), T0);
        let mut renamed = spec();
        renamed.name = "clusters-2".to_owned();
        let mut controlled = spec();
        let file: crate::controls::FileControls = serde_norway::from_str("top: 3").expect("yaml");
        controlled.controls = crate::controls::Controls::from_file(
            "q",
            file,
            6,
            &crate::series::TagLabels::default(),
        )
        .expect("valid controls");
        for other in [
            QueryKey::new("other-org", &spec(), &TagLabels::default()),
            QueryKey::new("org", &renamed, &TagLabels::default()),
            QueryKey::new("org", &controlled, &TagLabels::default()),
        ] {
            let (cached, fetch_from) = cache.cached(&other, &all, month(1), month(2), T0);
            assert!(cached.is_empty(), "{other:?}");
            assert_eq!(fetch_from, month(1));
        }
        assert_eq!(
            amount(
                &cache.cached(&key, &all, month(1), month(2), T0).0,
                month(1)
            ),
            Some(1)
        );
    }

    /// A month read with some ids serves refreshes whose ids are among them, not one that
    /// sends an id it was not read with (a cluster discovered since).
    #[test]
    fn months_serve_only_refreshes_whose_ids_they_cover() {
        let cache = MonthCache::new(HOUR);
        let key = QueryKey::new("org", &spec(), &TagLabels::default());
        cache.offer(&key, month(1), &ids(&["a", "b"]), series(1), T0);
        for (current, hit) in [(ids(&["a"]), true), (ids(&["a", "b"]), true)] {
            let (cached, _) = cache.cached(&key, &current, month(1), month(2), T0);
            assert_eq!(cached.contains_key(&month(1)), hit, "{current:?}");
        }
        let (cached, fetch_from) =
            cache.cached(&key, &ids(&["a", "b", "c"]), month(1), month(2), T0);
        assert!(cached.is_empty());
        assert_eq!(fetch_from, month(1));
    }

    /// A month read with fewer ids never replaces one read with more; one read with more
    /// replaces it.
    #[test]
    fn months_are_never_replaced_by_one_covering_fewer_ids() {
        let cache = MonthCache::new(HOUR);
        let key = QueryKey::new("org", &spec(), &TagLabels::default());
        let wide = ids(&["a", "b"]);
        cache.offer(&key, month(1), &wide, series(10), T0);
        cache.offer(&key, month(1), &ids(&["a"]), series(5), T0);
        let (cached, _) = cache.cached(&key, &wide, month(1), month(2), T0);
        assert_eq!(amount(&cached, month(1)), Some(10), "kept the wider month");
        let wider = ids(&["a", "b", "c"]);
        cache.offer(&key, month(1), &wider, series(15), T0);
        let (cached, _) = cache.cached(&key, &wider, month(1), month(2), T0);
        assert_eq!(
            amount(&cached, month(1)),
            Some(15),
            "replaced by a wider month"
        );
    }

    /// A month is good for a day after it was read: asked for within the day it is served,
    /// after it it is dropped and read again (by the refresher's clock).
    #[test]
    fn a_month_is_read_again_a_day_after_it_was_read() {
        let cache = MonthCache::new(Duration::from_secs(24 * 3600));
        let key = QueryKey::new("org", &spec(), &TagLabels::default());
        let all = ids(&["a"]);
        cache.offer(&key, month(1), &all, series(1), T0);
        let within = T0 + Duration::from_secs(23 * 3600);
        let (cached, fetch_from) = cache.cached(&key, &all, month(1), month(2), within);
        assert_eq!((amount(&cached, month(1)), fetch_from), (Some(1), month(2)));
        let after = T0 + Duration::from_secs(25 * 3600);
        let (cached, fetch_from) = cache.cached(&key, &all, month(1), month(2), after);
        assert!(cached.is_empty());
        assert_eq!(fetch_from, month(1));
        assert!(cache.kept(&key, within).is_empty(), "dropped, not kept");
    }

    /// The months kept in a state file come back with the time they were read, so they are
    /// read again a day after that read, not a day after the restart; those already past
    /// their time are not taken back.
    #[test]
    fn kept_months_come_back_with_their_read_time() {
        let day = Duration::from_secs(24 * 3600);
        let cache = MonthCache::new(day);
        let key = QueryKey::new("org", &spec(), &TagLabels::default());
        let all = ids(&["a", "b"]);
        let later = T0 + Duration::from_secs(20 * 3600);
        cache.offer(&key, month(1), &all, series(1), T0);
        cache.offer(&key, month(2), &all, series(2), later);
        let kept = cache.kept(&key, later);
        assert_eq!(kept.len(), 2);
        let restarted = MonthCache::new(day);
        let now = T0 + Duration::from_secs(25 * 3600);
        assert_eq!(
            restarted.restore(&key, kept, now),
            1,
            "month 1 is a day old"
        );
        let (cached, fetch_from) = restarted.cached(&key, &all, month(1), month(3), now);
        assert!(
            cached.is_empty(),
            "month 1 is missing, so the read starts there"
        );
        assert_eq!(fetch_from, month(1));
        let (cached, _) = restarted.cached(&key, &all, month(2), month(3), now);
        assert_eq!(amount(&cached, month(2)), Some(2));
        let (cached, _) = restarted.cached(&key, &all, month(2), month(3), later + day);
        assert!(cached.is_empty(), "a day after its own read");
    }
}
