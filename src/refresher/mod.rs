//! The refresher: runs every query on the interval, keeps the last good data of each, and
//! publishes each refresh whole as a new [`Snapshot`].
//!
//! Months older than the previous one are closed: Atlas no longer changes them, so they are
//! kept in a per-month cache (moka, 24 h time-to-live) and only the current and previous
//! months are read on every refresh. Each query still costs at most one create per refresh.
//!
//! This module schedules the refreshes and publishes them; each step of a query's refresh has
//! its own module:
//! - `discovery`: the projects and clusters of an org, listed and remembered;
//! - `month_cache`: the closed months, cached per query configuration;
//! - `aggregate`: rows to served series, a pure function;
//! - `roles`: which queries the remainders make add up, and deriving them;
//! - `http_client`: the HTTP client every org's Atlas client shares.

mod aggregate;
mod discovery;
mod http_client;
mod month_cache;
mod roles;

pub use crate::exposition::human_interval;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use self::aggregate::{Window, aggregate, dimension_name, rows_missing_dimension};
use self::discovery::{Discovery, KnownIds};
use self::month_cache::{MonthCache, QueryKey, sorted_ids};
use self::roles::{Role, attach_remainders};
use crate::atlas::result::ParsedResult;
use crate::atlas::{AtlasClient, AtlasError, ClientSettings, Endpoint, Reason, UsageQuery};
use crate::budget::Budget;
use crate::config::{Clock, Config, GroupBy, OrgConfig, QuerySpec};
use crate::exposition::costs::{
    mtd_header, mtd_lines, mtd_lines_len, usage_header, usage_lines, usage_lines_len,
};
use crate::exposition::{RenderedSeries, render_tagged};
use crate::metrics::SelfMetrics;
use crate::month::{Month, day_of_month};
use crate::remainder::Rollup;
use crate::series::TagLabels;
use crate::snapshot::{CostPiece, EncodedCosts, QueryStatus, Snapshot, SnapshotCell};

/// How long a closed month stays cached before it is read again.
const CLOSED_MONTH_TTL: Duration = Duration::from_secs(24 * 3600);

/// The most a forecast or previous-month line adds besides the series' labels: the metric
/// name (30), `{`, `} `, an amount (at most 21) and the line end.
const PER_SERIES_LINE: usize = 56;

/// An upper bound of the budget families' text ([`crate::budget::encode_budgets`]): their headers,
/// and three lines of each budget (its amount and two ratios) with its labels.
fn budgets_text_bound(budgets: &[Budget]) -> usize {
    4096 + budgets
        .iter()
        .map(|b| 3 * (b.labels().len() + 100))
        .sum::<usize>()
}

/// One org: its configuration, its client, and what its refreshes remember.
struct OrgWorker {
    config: OrgConfig,
    /// This org's queries in [`Published::slots`].
    slots: std::ops::Range<usize>,
    client: AtlasClient,
    forbidden_reported: AtomicBool,
    /// Queries whose series limit was already reported in the log (once each).
    shed_reported: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Queries whose rows lacked their grouped dimension, already logged (once each).
    dimension_reported: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Every project and cluster id seen (std Mutex: short sections, no await inside).
    known: std::sync::Mutex<KnownIds>,
    /// Each query's part in making the queries add up ([`crate::remainder`]).
    roles: Vec<Role>,
}

/// The data of a query from its last successful refresh.
struct Slot {
    status: QueryStatus,
    /// Its series, rendered once when they were refreshed, in exposition order.
    series: Arc<Vec<RenderedSeries>>,
    /// The query's data summed for the remainders.
    rollup: Option<Arc<Rollup>>,
    /// Its `(unattributed)` series, derived anew at each publication of its org.
    remainder: Arc<Vec<RenderedSeries>>,
    /// Its series and remainders encoded and compressed, kept until its org publishes again
    /// or the day changes: the publication of another org reuses them.
    text: Option<Arc<SlotText>>,
}

/// A query's lines in each per-series cost family, encoded and compressed for one day.
struct SlotText {
    current: Month,
    day: u32,
    usage: CostPiece,
    month_to_date: CostPiece,
    forecast: CostPiece,
    previous: CostPiece,
}

impl Slot {
    /// Its series and then its remainders, in exposition order.
    fn all_series(&self) -> Vec<&RenderedSeries> {
        self.series.iter().chain(self.remainder.iter()).collect()
    }

    /// Its encoded lines for day `day` of `current`: the kept ones when they are of that
    /// day, else encoded (each text allocated once at its exact or bounded size) and kept.
    fn text(&mut self, current: Month, day: u32) -> Arc<SlotText> {
        if let Some(text) = &self.text
            && text.current == current
            && text.day == day
        {
            return text.clone();
        }
        let series = self.all_series();
        let mut usage = String::with_capacity(usage_lines_len(&series));
        usage_lines(&mut usage, &series);
        let mut month_to_date = String::with_capacity(mtd_lines_len(&series, current));
        mtd_lines(&mut month_to_date, &series, current);
        let bound = |month: Month| -> usize {
            series
                .iter()
                .filter(|s| s.series.month == month)
                .map(|s| s.labels.len() + PER_SERIES_LINE)
                .sum()
        };
        let mut forecast = String::with_capacity(bound(current));
        crate::budget::forecast_lines(&mut forecast, &series, current, day);
        let mut previous = String::with_capacity(bound(current.plus(-1)));
        crate::budget::previous_lines(&mut previous, &series, current);
        forecast.shrink_to_fit();
        previous.shrink_to_fit();
        let text = Arc::new(SlotText {
            current,
            day,
            usage: CostPiece::seal(usage),
            month_to_date: CostPiece::seal(month_to_date),
            forecast: CostPiece::seal(forecast),
            previous: CostPiece::seal(previous),
        });
        self.text = Some(text.clone());
        text
    }
}

/// One query of an org to refresh, with what the org's refresh knows.
#[derive(Clone, Copy)]
struct QueryJob<'a> {
    org: &'a OrgWorker,
    spec: &'a QuerySpec,
    discovery: &'a Discovery,
    now: SystemTime,
    /// The months the query held data for: a result that is empty where data was is not
    /// believed.
    held: &'a BTreeSet<Month>,
}

/// A successful query refresh.
struct QueryData {
    /// The series, rendered, in exposition order.
    series: Vec<RenderedSeries>,
    rollup: Rollup,
    invalid_rows: u64,
    /// Series folded into `(other)` by the query's series limit.
    shed: u64,
}

/// Runs the queries and publishes snapshots.
pub struct Refresher {
    orgs: Vec<OrgWorker>,
    published: std::sync::Mutex<Published>,
    cell: Arc<SnapshotCell>,
    metrics: Arc<SelfMetrics>,
    clock: Clock,
    interval: Duration,
    query_timeout: Duration,
    request_timeout: Duration,
    semaphore: Semaphore,
    closed_months: MonthCache,
    /// The refresh interval as HELP text shows it.
    refresh_help: String,
    budgets: Vec<Budget>,
    /// Tag keys exported as labels ([`crate::series::TagLabels`]).
    tag_labels: TagLabels,
}

/// The last good data of every query, and the count of publications.
struct Published {
    slots: Vec<Slot>,
    generation: u64,
}

impl Refresher {
    /// A refresher for `config`, publishing into `cell`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built, or an org id is invalid (config validation
    /// prevents both).
    pub fn new(
        config: &Config,
        metrics: Arc<SelfMetrics>,
        cell: Arc<SnapshotCell>,
    ) -> Result<Refresher, AtlasError> {
        let http = http_client::build(config)?;
        let settings = ClientSettings {
            base_url: config.base_url.clone(),
            request_timeout: config.request_timeout,
            poll_interval: config.poll_interval,
            requests_per_minute: config.requests_per_minute,
            max_response_bytes: config.max_response_bytes,
        };
        let mut orgs = Vec::with_capacity(config.orgs.len());
        let mut slots = Vec::new();
        metrics.init_endpoints();
        let mut tokens = crate::fleet::TokenCaches::default();
        for org in &config.orgs {
            let mut client = AtlasClient::new(
                http.clone(),
                settings.clone(),
                &org.id,
                &org.credentials,
                metrics.clone(),
            )?;
            if let Some(cache) = tokens.cache_for(&org.credentials) {
                client = client.with_token_cache(cache);
            }
            let first_slot = slots.len();
            for q in &org.queries {
                metrics.init_query(&q.name, &org.id);
                slots.push(Slot {
                    status: QueryStatus::pending(&q.name, &org.id),
                    series: Arc::new(Vec::new()),
                    rollup: None,
                    remainder: Arc::new(Vec::new()),
                    text: None,
                });
            }
            orgs.push(OrgWorker {
                config: org.clone(),
                slots: first_slot..slots.len(),
                client,
                forbidden_reported: AtomicBool::new(false),
                shed_reported: std::sync::Mutex::default(),
                dimension_reported: std::sync::Mutex::default(),
                known: std::sync::Mutex::default(),
                roles: org.queries.iter().map(Role::of).collect(),
            });
        }
        let refresh_help = human_interval(config.refresh_interval);
        let refresher = Refresher {
            orgs,
            published: std::sync::Mutex::new(Published {
                slots,
                generation: 0,
            }),
            cell,
            metrics,
            clock: config.clock.clone(),
            interval: config.refresh_interval,
            query_timeout: config.query_timeout,
            request_timeout: config.request_timeout,
            semaphore: Semaphore::new(config.concurrency),
            closed_months: MonthCache::new(CLOSED_MONTH_TTL),
            refresh_help,
            budgets: config.budgets.clone(),
            tag_labels: config.tag_labels.clone(),
        };
        refresher.publish(
            &mut refresher
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        Ok(refresher)
    }

    /// Refreshes now, then every interval, until `cancel` turns true or its sender goes.
    ///
    /// Each org runs on its own schedule: a slow or failing org never delays the others, and
    /// each org's refresh is published whole as soon as it is done.
    pub async fn run(self, cancel: watch::Receiver<bool>) {
        let this = &self;
        futures_util::future::join_all(
            self.orgs
                .iter()
                .map(|org| this.org_loop(org, cancel.clone())),
        )
        .await;
    }

    /// The first refresh runs at once; later ones on the org's own phase within the
    /// interval ([`crate::fleet::second_refresh`]), so many orgs do not refresh together.
    async fn org_loop(&self, org: &OrgWorker, mut cancel: watch::Receiver<bool>) {
        let second = Instant::now() + crate::fleet::second_refresh(&org.config.id, self.interval);
        let mut ticker: Option<tokio::time::Interval> = None;
        loop {
            if let Some(ticker) = ticker.as_mut() {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = cancel.changed() => return,
                }
            }
            if *cancel.borrow() {
                return;
            }
            tokio::select! {
                () = self.refresh_and_publish(org) => {}
                _ = cancel.changed() => return,
            }
            if ticker.is_none() {
                let mut t = tokio::time::interval_at(second, self.interval);
                // Delay, not Burst: a slow refresh must not be followed by catch-up refreshes.
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                ticker = Some(t);
            }
        }
    }

    /// Runs every query of every org once, publishing each org as it finishes.
    pub async fn refresh_once(&self) {
        futures_util::future::join_all(self.orgs.iter().map(|org| self.refresh_and_publish(org)))
            .await;
    }

    async fn refresh_and_publish(&self, org: &OrgWorker) {
        let now = (self.clock)();
        let started = std::time::Instant::now();
        // The months each query held data for: a result that is empty where data was is
        // not believed.
        let held: Vec<BTreeSet<Month>> = {
            let published = self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            published.slots[org.slots.clone()]
                .iter()
                .map(|s| s.series.iter().map(|c| c.series.month).collect())
                .collect()
        };
        let outcomes = self.refresh_org(org, now, &held).await;
        let finished = (self.clock)();
        // std Mutex: held to update the slots and build the snapshot, never across an await.
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slots = &mut published.slots[org.slots.clone()];
        for (slot, outcome) in slots.iter_mut().zip(outcomes) {
            let status = &mut slot.status;
            status.attempted = true;
            status.last_attempt = Some(finished);
            match outcome {
                Ok(data) => {
                    status.up = true;
                    status.last_success = Some(finished);
                    status.last_error = None;
                    status.series = data.series.len();
                    status.invalid_rows = data.invalid_rows;
                    self.metrics
                        .set_series_shed(&status.query, &status.org_id, data.shed);
                    slot.series = Arc::new(data.series);
                    slot.rollup = Some(Arc::new(data.rollup));
                }
                Err((reason, message)) => {
                    status.up = false;
                    status.last_error = Some(message);
                    self.metrics
                        .count_error(&status.query, &status.org_id, reason, 1);
                }
            }
        }
        attach_remainders(&org.config.id, &org.roles, slots, &self.tag_labels);
        for slot in slots.iter_mut() {
            // Series or remainders may have changed: encoded again at this publication.
            slot.text = None;
            if slot.status.up {
                slot.status.series = slot.series.len() + slot.remainder.len();
            }
        }
        let up = slots.iter().filter(|s| s.status.up).count();
        published.generation += 1;
        self.publish(&mut published);
        drop(published);
        tracing::info!(
            org_id = %org.config.id,
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            up,
            queries = org.slots.len(),
            "refresh published"
        );
    }

    fn publish(&self, published: &mut Published) {
        let now = (self.clock)();
        let current = Month::containing(now);
        let day = day_of_month(now);
        // Only the queries of the org just refreshed (or all, on a new day) are encoded and
        // compressed: the others' pieces are reused as they are.
        let texts: Vec<Arc<SlotText>> = published
            .slots
            .iter_mut()
            .map(|s| s.text(current, day))
            .collect();
        let all: Vec<&RenderedSeries> = published.slots.iter().flat_map(Slot::all_series).collect();
        let header = |write: &dyn Fn(&mut String)| {
            let mut text = String::new();
            write(&mut text);
            CostPiece::seal(text)
        };
        let mut tail = String::with_capacity(budgets_text_bound(&self.budgets));
        // Forecasts and budgets are computed here, once per refresh, never per scrape.
        crate::budget::encode_budgets(
            &mut tail,
            &all,
            current,
            day,
            &self.budgets,
            self.interval.as_secs(),
        );
        let family =
            |piece: fn(&SlotText) -> &CostPiece| texts.iter().map(move |t| piece(t).clone());
        let pieces = std::iter::once(header(&|t| usage_header(t, &self.refresh_help)))
            .chain(family(|t| &t.usage))
            .chain(std::iter::once(header(&|t| {
                mtd_header(t, &self.refresh_help)
            })))
            .chain(family(|t| &t.month_to_date))
            .chain(std::iter::once(header(&crate::budget::forecast_header)))
            .chain(family(|t| &t.forecast))
            .chain(std::iter::once(header(&crate::budget::previous_header)))
            .chain(family(|t| &t.previous))
            .chain(std::iter::once(CostPiece::seal(tail)));
        let costs = EncodedCosts::from_pieces(pieces, all.len());
        let orgs = crate::budget::org_summaries(
            self.orgs.iter().map(|o| o.config.id.as_str()),
            &all,
            current,
            day_of_month(now),
        );
        self.cell.store(Snapshot {
            statuses: published.slots.iter().map(|s| s.status.clone()).collect(),
            orgs,
            costs,
            refresh: self.interval,
            generation: published.generation,
        });
    }

    async fn refresh_org(
        &self,
        org: &OrgWorker,
        now: SystemTime,
        held: &[BTreeSet<Month>],
    ) -> Vec<Result<QueryData, (Reason, String)>> {
        let discovery = self.discover_for_queries(org).await;
        futures_util::future::join_all(org.config.queries.iter().zip(held).map(|(spec, held)| {
            self.refresh_org_query(QueryJob {
                org,
                spec,
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
    async fn bounded<T>(
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
                rollup: Rollup::new(start, current, std::iter::empty()),
                invalid_rows: 0,
                shed: 0,
            });
        }

        let hot_from = start.max(current.plus(-1));
        let query_key = QueryKey::new(&org.config.id, spec);
        let ids = sorted_ids(&projects, &clusters);
        // Closed months already cached for these ids are not read again; the query starts at
        // the first closed month that is missing, or at the previous month.
        let (cached, fetch_from) = self.closed_months.cached(&query_key, &ids, start, hot_from);
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
            .learn(&parsed.rows);

        let window = Window {
            start,
            fetch_from,
            current,
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
                .offer(&query_key, *month, &ids, series.clone());
        }
        drop(aggregated.fetched);
        let shed = aggregated.shed;
        if shed > 0 && first_time(&org.shed_reported, &spec.name) {
            tracing::warn!(
                org_id = %org.config.id,
                query = %spec.name,
                max_series = spec.controls.max_series().unwrap_or(0),
                shed,
                "the query has more series than its max_series: the least expensive are \
                 folded into (other) series (totals stay exact); see \
                 atlas_cost_query_series_shed (logged once)"
            );
        }
        Ok(QueryData {
            // The per-refresh encoding: label text rendered once, in exposition order.
            series: render_tagged(aggregated.series, &self.tag_labels),
            rollup: aggregated.rollup,
            invalid_rows,
            shed,
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
fn first_time(reported: &std::sync::Mutex<std::collections::HashSet<String>>, query: &str) -> bool {
    // std Mutex: a short section, no await inside.
    reported
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(query.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::render_sorted;
    use crate::series::{CostSeries, Label, SeriesKey};

    fn slot(project: &str, micros: i64, months: &[Month]) -> Slot {
        let series = render_sorted(months.iter().map(|month| {
            let mut key = SeriesKey::default();
            key.set(Label::ProjectName, Some(project));
            CostSeries {
                query: "projects".into(),
                key,
                month: *month,
                micros,
            }
        }));
        Slot {
            status: QueryStatus::pending("projects", "5f1b2c3d4e5f6a7b8c9d0e1f"),
            series: Arc::new(series),
            rollup: None,
            remainder: Arc::new(Vec::new()),
            text: None,
        }
    }

    /// A query's encoded lines are kept for the day: asked again the same day (another org's
    /// publication), the same compressed bytes come back without being encoded again.
    #[test]
    fn a_query_is_encoded_once_a_day() {
        let current = Month::new(2026, 11).expect("valid");
        let mut s = slot("p", 1_500_000, &[current.plus(-1), current]);
        let first = s.text(current, 29);
        let again = s.text(current, 29);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            &first.usage.text[..],
            b"atlas_cost_usage_usd{query=\"projects\",project_name=\"p\",month=\"2026-10\"} 1.5\n\
              atlas_cost_usage_usd{query=\"projects\",project_name=\"p\",month=\"2026-11\"} 1.5\n"
        );
        assert_eq!(
            &first.previous.text[..],
            b"atlas_cost_previous_month_usd{query=\"projects\",project_name=\"p\"} 1.5\n"
        );
        // The forecast depends on the day: the next day encodes again.
        let next_day = s.text(current, 30);
        assert!(!Arc::ptr_eq(&first, &next_day));
        assert_ne!(first.forecast.text, next_day.forecast.text);
    }

    /// Each piece's compressed copy decodes to its text, and its CRC is the text's.
    #[test]
    fn each_piece_carries_its_own_deflate_and_crc() {
        use std::io::Read as _;
        let current = Month::new(2026, 11).expect("valid");
        let mut s = slot("q \"x\"", 2_250_000, &[current]);
        let text = s.text(current, 10);
        for piece in [&text.usage, &text.month_to_date, &text.forecast] {
            assert!(!piece.text.is_empty());
            // The copy ends on a sync flush: an empty final block closes it for the decoder.
            let closed = [&piece.deflated[..], &[0x03, 0x00]].concat();
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&closed[..])
                .read_to_end(&mut out)
                .expect("raw DEFLATE");
            assert_eq!(out, piece.text);
            assert_eq!(piece.crc, crc32fast::hash(&piece.text));
        }
        assert!(text.previous.text.is_empty(), "no previous month held");
    }
}
