//! The closed-month cache: months older than the previous one no longer change at Atlas, so
//! each is kept per query (moka, with a time-to-live) and not read again while it is good.
//!
//! A cached month is keyed on the query's configuration (grouping, filters, controls): a
//! change of any of them reads the closed months again. It is good for a refresh only when
//! the ids it was read with cover the ids the refresh would send, and it is never replaced by
//! a month read with fewer ids.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::config::QuerySpec;
use crate::month::Month;
use crate::series::SeriesKey;

/// One closed month of one query, aggregated and with the month's controls applied:
/// `(labels, micros)` pairs.
pub(super) type MonthSeries = Arc<Vec<(SeriesKey, i64)>>;

/// Project and cluster ids a query filtered on, sorted.
pub(super) type SortedIds = Arc<Vec<String>>;

/// The ids a query filters on, as the cache compares them.
pub(super) fn sorted_ids(projects: &[String], clusters: &[String]) -> SortedIds {
    let mut ids: Vec<String> = projects.iter().chain(clusters).cloned().collect();
    ids.sort_unstable();
    Arc::new(ids)
}

/// Which query of which org a cached month belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct QueryKey {
    org_id: String,
    query: String,
    /// Hash of the query's configuration (grouping, filters, controls): a change reads the
    /// closed months again.
    shape: u64,
}

impl QueryKey {
    /// The key of `spec` in the org `org_id`.
    pub(super) fn new(org_id: &str, spec: &QuerySpec) -> QueryKey {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        spec.hash(&mut h);
        QueryKey {
            org_id: org_id.to_owned(),
            query: spec.name.clone(),
            shape: h.finish(),
        }
    }
}

/// A cached closed month and the ids its query filtered on.
#[derive(Clone)]
struct ClosedMonth {
    /// The month is good for any refresh whose ids are among these.
    ids: SortedIds,
    series: MonthSeries,
}

/// Whether every id of `ids` is in `sorted`.
fn covers(sorted: &[String], ids: &[String]) -> bool {
    ids.iter().all(|id| sorted.binary_search(id).is_ok())
}

/// Closed months of every query, aggregated.
pub(super) struct MonthCache {
    months: moka::sync::Cache<(QueryKey, Month), ClosedMonth>,
}

impl MonthCache {
    /// An empty cache whose months are read again after `ttl`.
    pub(super) fn new(ttl: Duration) -> MonthCache {
        MonthCache {
            months: moka::sync::Cache::builder().time_to_live(ttl).build(),
        }
    }

    /// The cached months of `query` for `ids` from `start` on, before `hot_from`, without a
    /// gap; and the first month to read from Atlas (the first closed month missing, or
    /// `hot_from`).
    pub(super) fn cached(
        &self,
        query: &QueryKey,
        ids: &[String],
        start: Month,
        hot_from: Month,
    ) -> (BTreeMap<Month, MonthSeries>, Month) {
        let mut cached = BTreeMap::new();
        let mut month = start;
        while month < hot_from {
            match self
                .months
                .get(&(query.clone(), month))
                .filter(|c| covers(&c.ids, ids))
            {
                Some(c) => {
                    cached.insert(month, c.series);
                    month = month.plus(1);
                }
                None => break,
            }
        }
        (cached, month)
    }

    /// Caches `series`, a closed month of `query` read with `ids`, unless the month is cached
    /// already with ids this read does not cover.
    pub(super) fn offer(
        &self,
        query: &QueryKey,
        month: Month,
        ids: &SortedIds,
        series: MonthSeries,
    ) {
        let key = (query.clone(), month);
        if self
            .months
            .get(&key)
            .is_none_or(|old| covers(ids, &old.ids))
        {
            self.months.insert(
                key,
                ClosedMonth {
                    ids: ids.clone(),
                    series,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cache = MonthCache::new(Duration::from_secs(3600));
        let key = QueryKey::new("org", &spec());
        let all = ids(&["a", "b"]);
        cache.offer(&key, month(1), &all, series(1));
        cache.offer(&key, month(2), &all, series(2));
        cache.offer(&key, month(4), &all, series(4));
        let (cached, fetch_from) = cache.cached(&key, &all, month(1), month(5));
        assert_eq!(fetch_from, month(3));
        assert_eq!(
            cached.keys().copied().collect::<Vec<_>>(),
            [month(1), month(2)]
        );
        assert_eq!(amount(&cached, month(2)), Some(2));
        // Nothing cached at all: read from the start.
        let (cached, fetch_from) = cache.cached(&key, &all, month(5), month(7));
        assert!(cached.is_empty());
        assert_eq!(fetch_from, month(5));
    }

    /// A month is cached for one configuration of one query of one org: another org, another
    /// query name or changed controls read it again.
    #[test]
    fn months_are_keyed_on_the_query_configuration() {
        let cache = MonthCache::new(Duration::from_secs(3600));
        let all = ids(&["a"]);
        let key = QueryKey::new("org", &spec());
        cache.offer(&key, month(1), &all, series(1));
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
            QueryKey::new("other-org", &spec()),
            QueryKey::new("org", &renamed),
            QueryKey::new("org", &controlled),
        ] {
            let (cached, fetch_from) = cache.cached(&other, &all, month(1), month(2));
            assert!(cached.is_empty(), "{other:?}");
            assert_eq!(fetch_from, month(1));
        }
        assert_eq!(
            amount(&cache.cached(&key, &all, month(1), month(2)).0, month(1)),
            Some(1)
        );
    }

    /// A month read with some ids serves refreshes whose ids are among them, not one that
    /// sends an id it was not read with (a cluster discovered since).
    #[test]
    fn months_serve_only_refreshes_whose_ids_they_cover() {
        let cache = MonthCache::new(Duration::from_secs(3600));
        let key = QueryKey::new("org", &spec());
        cache.offer(&key, month(1), &ids(&["a", "b"]), series(1));
        for (current, hit) in [(ids(&["a"]), true), (ids(&["a", "b"]), true)] {
            let (cached, _) = cache.cached(&key, &current, month(1), month(2));
            assert_eq!(cached.contains_key(&month(1)), hit, "{current:?}");
        }
        let (cached, fetch_from) = cache.cached(&key, &ids(&["a", "b", "c"]), month(1), month(2));
        assert!(cached.is_empty());
        assert_eq!(fetch_from, month(1));
    }

    /// A month read with fewer ids never replaces one read with more; one read with more
    /// replaces it.
    #[test]
    fn months_are_never_replaced_by_one_covering_fewer_ids() {
        let cache = MonthCache::new(Duration::from_secs(3600));
        let key = QueryKey::new("org", &spec());
        let wide = ids(&["a", "b"]);
        cache.offer(&key, month(1), &wide, series(10));
        cache.offer(&key, month(1), &ids(&["a"]), series(5));
        let (cached, _) = cache.cached(&key, &wide, month(1), month(2));
        assert_eq!(amount(&cached, month(1)), Some(10), "kept the wider month");
        let wider = ids(&["a", "b", "c"]);
        cache.offer(&key, month(1), &wider, series(15));
        let (cached, _) = cache.cached(&key, &wider, month(1), month(2));
        assert_eq!(
            amount(&cached, month(1)),
            Some(15),
            "replaced by a wider month"
        );
    }
}
