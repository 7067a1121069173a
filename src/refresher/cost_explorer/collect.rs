//! One query's refresh: the ids it filters on, the closed months the cache holds, the rest
//! read from Atlas under the query's deadline, and the rows aggregated into its series.

use std::collections::BTreeSet;
use std::time::SystemTime;

use tokio::time::Instant;

use super::aggregate::{Uncontrolled, Window, aggregate, dimension_name, rows_missing_dimension};
use super::discovery::Discovery;
use super::month_cache::{QueryKey, sorted_ids};
use crate::atlas::result::ParsedResult;
use crate::atlas::{AtlasError, Endpoint, Reason, UsageQuery};
use crate::config::{GroupBy, QuerySpec};
use crate::exposition::{RenderedSeries, render_tagged};
use crate::month::Month;
use crate::refresher::{OrgWorker, Refresher};
use crate::remainder::Rollup;

/// One query of an org to refresh, with what the org's refresh knows.
#[derive(Clone, Copy)]
pub(in crate::refresher) struct QueryJob<'a> {
    org: &'a OrgWorker,
    spec: &'a QuerySpec,
    /// Its key in the month cache.
    key: &'a QueryKey,
    discovery: &'a Discovery,
    now: SystemTime,
    /// The months the query held data for: a result that is empty where data was is not
    /// believed.
    held: &'a BTreeSet<Month>,
}

/// A successful query refresh.
pub(in crate::refresher) struct QueryData {
    /// The series, rendered, in exposition order.
    pub(in crate::refresher) series: Vec<RenderedSeries>,
    /// The series before the controls, when they run at publication.
    pub(in crate::refresher) uncontrolled: Option<Uncontrolled>,
    pub(in crate::refresher) rollup: Rollup,
    pub(in crate::refresher) invalid_rows: u64,
    /// Series folded into `(other)` by the query's series limit.
    pub(in crate::refresher) shed: u64,
}

impl Refresher {
    pub(in crate::refresher) async fn refresh_org(
        &self,
        org: &OrgWorker,
        now: SystemTime,
        held: &[BTreeSet<Month>],
    ) -> Vec<Result<QueryData, (Reason, String)>> {
        let discovery = self.discover_for_queries(org).await;
        let jobs = org.config.queries.iter().zip(&org.keys).zip(held);
        futures_util::future::join_all(jobs.map(|((spec, key), held)| {
            self.refresh_org_query(QueryJob {
                org,
                spec,
                key,
                discovery: &discovery,
                now,
                held,
            })
        }))
        .await
    }

    /// Runs a client call under its deadline. The client keeps to the deadline itself, but a
    /// request it started just before may run one request timeout past it; beyond that, this
    /// bounds the waits the client cannot see into (a long Retry-After, a server that never
    /// answers), so a refresh never hangs.
    pub(in crate::refresher) async fn bounded<T>(
        &self,
        org: &OrgWorker,
        deadline: Instant,
        call: impl Future<Output = Result<T, AtlasError>>,
    ) -> Result<T, AtlasError> {
        tokio::time::timeout_at(deadline + self.request_timeout, call)
            .await
            .unwrap_or_else(|_| Err(self.deadline_error(org)))
    }

    /// Why a query ran out of time: still held by a 429's `Retry-After`, or simply not done.
    fn deadline_error(&self, org: &OrgWorker) -> AtlasError {
        if org.client.rate_limited() {
            AtlasError::RateLimited {
                endpoint: Endpoint::Create,
                retry_after: None,
            }
        } else {
            AtlasError::Deadline(self.query_timeout)
        }
    }

    /// Refreshes one query of an org: under a permit of the semaphore, timed, a failure
    /// logged.
    async fn refresh_org_query(&self, job: QueryJob<'_>) -> Result<QueryData, (Reason, String)> {
        let QueryJob { org, spec, .. } = job;
        // The semaphore is never closed, so acquire only fails if it were; then run unbounded.
        let _permit = self.semaphore.acquire().await.ok();
        let started = std::time::Instant::now();
        let result = self.collect(job).await;
        self.metrics
            .observe_refresh_duration(&spec.name, &org.config.id, started.elapsed());
        if let Err((reason, message)) = &result {
            tracing::warn!(org_id = %org.config.id, query = %spec.name, reason = reason.as_str(), error = %message, "query refresh failed; serving its last good data");
        }
        result
    }

    /// Reads the months of a query that the month cache does not hold, and aggregates them
    /// with the cached ones; caches the closed months read.
    async fn collect(&self, job: QueryJob<'_>) -> Result<QueryData, (Reason, String)> {
        let QueryJob {
            org,
            spec,
            key: query_key,
            discovery,
            now,
            held,
        } = job;
        let (projects, clusters) = discovery.ids_for(spec)?;
        let current = Month::containing(now);
        let start = current.plus(-i64::from(spec.months.max(1) - 1));
        let needs_ids = match spec.group_by {
            GroupBy::Projects => projects.is_empty(),
            GroupBy::Clusters => clusters.is_empty(),
            _ => false,
        };
        if needs_ids {
            // An org with no projects (or clusters) has nothing to group: an empty, honest
            // result (its remainder holds the org's spend).
            return Ok(QueryData {
                series: Vec::new(),
                uncontrolled: None,
                rollup: Rollup::new(start, current, std::iter::empty()),
                invalid_rows: 0,
                shed: 0,
            });
        }

        let hot_from = start.max(current.plus(-1));
        let ids = sorted_ids(&projects, &clusters);
        // Closed months already cached for these ids are not read again; the query starts at
        // the first closed month that is missing, or at the previous month.
        let (cached, fetch_from) = self
            .closed_months
            .cached(query_key, &ids, start, hot_from, now);
        let deadline = Instant::now() + self.query_timeout;
        let (parsed, _stats) = self
            .bounded(
                org,
                deadline,
                org.client.fetch_usage(
                    &UsageQuery {
                        name: &spec.name,
                        group_by: spec.group_by,
                        format: spec.format,
                        start: fetch_from,
                        end: current.plus(1),
                        projects: &projects,
                        clusters: &clusters,
                        services: &spec.services,
                        include_partial_matches: spec.include_partial_matches,
                    },
                    deadline,
                ),
            )
            .await
            .map_err(|e| (e.reason(), e.to_string()))?;
        if parsed.invalid_rows > 0 {
            self.metrics.count_error(
                &spec.name,
                &org.config.id,
                Reason::InvalidRow,
                parsed.invalid_rows,
            );
            tracing::warn!(
                org_id = %org.config.id,
                query = %spec.name,
                skipped = parsed.invalid_rows,
                first = parsed.first_invalid.as_deref().unwrap_or(""),
                "skipped result rows with an invalid amount or date"
            );
        }

        if parsed.rows.is_empty() && parsed.invalid_rows > 0 {
            return Err((
                Reason::Decode,
                format!(
                    "every one of the {} result rows is invalid ({}); keeping the last good data",
                    parsed.invalid_rows,
                    parsed.first_invalid.as_deref().unwrap_or("")
                ),
            ));
        }
        check_dimension(org, spec, &parsed)?;
        org.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .learn(&parsed.rows, now);

        let window = Window {
            start,
            fetch_from,
            current,
            day: crate::month::day_of_month(now),
        };
        let aggregated = aggregate(
            &org.config.id,
            spec,
            &parsed.rows,
            discovery,
            window,
            cached,
            held,
        )?;
        // The rows are summed: what remains of them is their count of invalid ones. They go
        // before the series are rendered, not after.
        let invalid_rows = parsed.invalid_rows;
        drop(parsed);
        if aggregated.outside > 0 {
            tracing::debug!(org_id = %org.config.id, query = %spec.name, rows = aggregated.outside, "ignored rows dated outside the requested months");
        }
        for (month, series) in aggregated.fetched.range(..hot_from) {
            self.closed_months
                .offer(query_key, *month, &ids, series.clone(), now);
        }
        drop(aggregated.fetched);
        Ok(QueryData {
            // The per-refresh encoding: label text rendered once, in exposition order.
            series: render_tagged(aggregated.series, &self.tag_labels),
            uncontrolled: aggregated.uncontrolled,
            rollup: aggregated.rollup,
            invalid_rows,
            shed: aggregated.shed,
        })
    }
}

/// A grouped query whose rows lack the dimension it groups by is a decode problem
/// ([`rows_missing_dimension`]); the first time, the unknown keys are logged as the likely
/// spelling.
fn check_dimension(
    org: &OrgWorker,
    spec: &QuerySpec,
    parsed: &ParsedResult,
) -> Result<(), (Reason, String)> {
    let Some(missing) = rows_missing_dimension(spec, parsed) else {
        return Ok(());
    };
    let unknown = parsed
        .unknown_keys
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if first_time(&org.dimension_reported, &spec.name) {
        tracing::warn!(
            org_id = %org.config.id,
            query = %spec.name,
            group_by = spec.group_by.as_str(),
            rows = missing,
            unknown_keys = %unknown,
            "result rows lack the dimension the query groups by; the unknown keys may be \
             its spelling (logged once)"
        );
    }
    Err((
        Reason::Decode,
        format!(
            "{missing} of {} result rows lack the {} the query groups by (unknown keys: {})",
            parsed.rows.len(),
            dimension_name(spec.group_by),
            if unknown.is_empty() { "none" } else { &unknown }
        ),
    ))
}

/// Whether `query` is new to `reported` (and now in it): for warnings logged once per query.
pub(in crate::refresher) fn first_time(
    reported: &std::sync::Mutex<std::collections::HashSet<String>>,
    query: &str,
) -> bool {
    // std Mutex: a short section, no await inside.
    reported
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(query.to_owned())
}
