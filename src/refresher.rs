//! The refresher: runs every query on the interval, keeps the last good data of each, and
//! publishes each refresh whole as a new [`Snapshot`].
//!
//! Months older than the previous one are closed: Atlas no longer changes them, so they are
//! kept in a per-month cache (moka, 24 h time-to-live) and only the current and previous
//! months are read on every refresh. Each query still costs at most one create per refresh.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::atlas::result::UsageRow;
use crate::atlas::{AtlasClient, AtlasError, ClientSettings, Cluster, Endpoint, Project, Reason};
use crate::budget::Budget;
use crate::config::{Clock, Config, GroupBy, OrgConfig, QuerySpec};
use crate::controls::{Level, SeriesKey};
use crate::exposition::{CostSeries, EncodedCosts, encode_costs};
use crate::metrics::{QueryLabels, SelfMetrics};
use crate::month::{Month, day_of_month};
use crate::snapshot::{QueryStatus, Snapshot, SnapshotCell};

/// How long a closed month stays cached before it is read again.
const CLOSED_MONTH_TTL: Duration = Duration::from_secs(24 * 3600);
/// Cluster listings in flight at once per org during discovery.
const DISCOVERY_CONCURRENCY: usize = 4;

/// One closed month of one query, aggregated and with the month's controls applied:
/// `(labels, micros)` pairs.
type MonthSeries = Arc<Vec<(SeriesKey, i64)>>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MonthKey {
    org_id: String,
    query: String,
    /// Hash of everything that shapes the answer besides the dates (grouping and filters,
    /// discovered ids included): a change reads the closed months again.
    shape: u64,
    month: Month,
}

struct OrgWorker {
    config: OrgConfig,
    /// This org's queries in [`Published::slots`].
    slots: std::ops::Range<usize>,
    client: AtlasClient,
    forbidden_reported: AtomicBool,
    /// Queries whose series limit was already reported in the log (once each).
    shed_reported: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What discovery found for one org during one refresh.
#[derive(Default)]
struct Discovery {
    projects: Vec<Project>,
    /// Cluster id -> (cluster, project id).
    clusters: Vec<(Cluster, String)>,
    project_names: HashMap<String, String>,
    cluster_info: HashMap<String, (String, String)>,
    /// Why project or cluster ids are missing, when they are.
    failed: Option<(Reason, String)>,
}

/// The data of a query from its last successful refresh.
struct Slot {
    status: QueryStatus,
    series: Arc<Vec<CostSeries>>,
}

/// A successful query refresh.
struct QueryData {
    series: Vec<CostSeries>,
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
    closed_months: moka::sync::Cache<MonthKey, MonthSeries>,
    refresh_help: String,
    budgets: Vec<Budget>,
}

/// The last good data of every query, and the count of publications.
struct Published {
    slots: Vec<Slot>,
    generation: u64,
}

/// Adapts a shared resolver to reqwest's `dns_resolver`, which wants a sized type.
struct SharedResolver(Arc<dyn reqwest::dns::Resolve>);

impl reqwest::dns::Resolve for SharedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.0.resolve(name)
    }
}

/// The refresh interval in the short human form used in HELP text: `1h`, `30m`, `90s`.
pub fn human_interval(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
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
        let mut http = reqwest::Client::builder();
        if let Some(resolver) = &config.resolver {
            http = http.dns_resolver(Arc::new(SharedResolver(resolver.clone())));
        }
        let http = http
            .user_agent(concat!("atlas-cost-exporter/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            // Outbound requests go to the configured base URL only: no redirects elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // Requests in flight are bounded by --refresh.concurrency (discovery included):
            // keep no more idle connections than that.
            .pool_max_idle_per_host(config.concurrency)
            .build()
            .map_err(|e| AtlasError::Transport {
                endpoint: Endpoint::Token,
                message: format!("cannot build the HTTP client: {e}"),
                incomplete: false,
            })?;
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
                });
            }
            orgs.push(OrgWorker {
                config: org.clone(),
                slots: first_slot..slots.len(),
                client,
                forbidden_reported: AtomicBool::new(false),
                shed_reported: std::sync::Mutex::default(),
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
            closed_months: moka::sync::Cache::builder()
                .time_to_live(CLOSED_MONTH_TTL)
                .build(),
            refresh_help,
            budgets: config.budgets.clone(),
        };
        refresher.publish(
            &refresher
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
        let outcomes = self.refresh_org(org, now).await;
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
                }
                Err((reason, message)) => {
                    status.up = false;
                    status.last_error = Some(message);
                    self.metrics
                        .count_error(&status.query, &status.org_id, reason, 1);
                }
            }
        }
        let up = slots.iter().filter(|s| s.status.up).count();
        published.generation += 1;
        self.publish(&published);
        drop(published);
        tracing::info!(
            org_id = %org.config.id,
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            up,
            queries = org.slots.len(),
            "refresh published"
        );
    }

    fn publish(&self, published: &Published) {
        let now = (self.clock)();
        let current = Month::containing(now);
        let all: Vec<&CostSeries> = published
            .slots
            .iter()
            .flat_map(|s| s.series.iter())
            .collect();
        let mut text = String::new();
        let usage_series = encode_costs(&mut text, &all, current, &self.refresh_help);
        // Forecasts and budgets are computed here, once per refresh, never per scrape.
        crate::budget::encode(
            &mut text,
            &all,
            current,
            day_of_month(now),
            &self.budgets,
            self.interval.as_secs(),
        );
        let costs = EncodedCosts::seal(text, usage_series);
        self.cell.store(Snapshot {
            statuses: published.slots.iter().map(|s| s.status.clone()).collect(),
            costs,
            refresh: self.refresh_help.clone(),
            generation: published.generation,
        });
    }

    async fn refresh_org(
        &self,
        org: &OrgWorker,
        now: SystemTime,
    ) -> Vec<Result<QueryData, (Reason, String)>> {
        let needs_projects = org.config.queries.iter().any(QuerySpec::needs_discovery);
        let needs_clusters = org
            .config
            .queries
            .iter()
            .any(|q| q.group_by == GroupBy::Clusters && q.needs_discovery());
        let discovery = if needs_projects {
            self.discover(org, needs_clusters).await
        } else {
            Discovery::default()
        };
        futures_util::future::join_all(
            org.config
                .queries
                .iter()
                .map(|spec| self.refresh_query(org, spec, &discovery, now)),
        )
        .await
    }

    fn report_forbidden(&self, org: &OrgWorker, endpoint: Endpoint, e: &AtlasError) {
        if !org.forbidden_reported.swap(true, Ordering::Relaxed) {
            let role = match endpoint {
                Endpoint::Clusters => {
                    "Project Read Only on every project (Organization Read Only grants it)"
                }
                _ => "Organization Member",
            };
            tracing::warn!(
                org_id = %org.config.id,
                endpoint = endpoint.as_str(),
                error = %e,
                "discovery is forbidden: the credentials need the {role} role besides Organization \
                 Billing Viewer; queries grouped by project or cluster fail until then, the other \
                 queries keep working"
            );
        }
    }

    async fn discover(&self, org: &OrgWorker, with_clusters: bool) -> Discovery {
        let deadline = Instant::now() + self.query_timeout;
        let mut d = Discovery::default();
        // Discovery takes permits of the same semaphore as queries: requests in flight stay
        // within --refresh.concurrency across every org.
        let permit = self.semaphore.acquire().await.ok();
        let projects = self
            .bounded(org, deadline, org.client.projects(deadline))
            .await;
        drop(permit);
        match projects {
            Ok(p) => d.projects = p,
            Err(e) => {
                if e.reason() == Reason::Forbidden {
                    self.report_forbidden(org, Endpoint::Projects, &e);
                }
                let hint = if e.reason() == Reason::Forbidden {
                    " (the Organization Member role is needed to list projects)"
                } else {
                    ""
                };
                d.failed = Some((e.reason(), format!("discovering projects: {e}{hint}")));
                return d;
            }
        }
        d.project_names = d
            .projects
            .iter()
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect();
        if !with_clusters {
            return d;
        }
        let limit = Semaphore::new(DISCOVERY_CONCURRENCY);
        let listings = futures_util::future::join_all(d.projects.iter().map(|p| {
            let limit = &limit;
            async move {
                let _permit = limit.acquire().await.ok();
                let _global = self.semaphore.acquire().await.ok();
                let listing = self
                    .bounded(org, deadline, org.client.clusters(&p.id, deadline))
                    .await;
                (p.id.clone(), listing)
            }
        }))
        .await;
        for (project_id, listing) in listings {
            match listing {
                Ok(clusters) => d
                    .clusters
                    .extend(clusters.into_iter().map(|c| (c, project_id.clone()))),
                Err(e) => {
                    if e.reason() == Reason::Forbidden {
                        self.report_forbidden(org, Endpoint::Clusters, &e);
                    }
                    d.failed = Some((
                        e.reason(),
                        format!("discovering the clusters of project {project_id}: {e}"),
                    ));
                }
            }
        }
        d.cluster_info = d
            .clusters
            .iter()
            .map(|(c, p)| (c.id.clone(), (c.name.clone(), p.clone())))
            .collect();
        d
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

    async fn refresh_query(
        &self,
        org: &OrgWorker,
        spec: &QuerySpec,
        discovery: &Discovery,
        now: SystemTime,
    ) -> Result<QueryData, (Reason, String)> {
        // The semaphore is never closed, so acquire only fails if it were; then run unbounded.
        let _permit = self.semaphore.acquire().await.ok();
        let started = std::time::Instant::now();
        let result = self.run_query(org, spec, discovery, now).await;
        self.metrics
            .refresh_duration
            .get_or_create(&QueryLabels {
                query: spec.name.clone(),
                org_id: org.config.id.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        if let Err((reason, message)) = &result {
            tracing::warn!(org_id = %org.config.id, query = %spec.name, reason = reason.as_str(), error = %message, "query refresh failed; serving its last good data");
        }
        result
    }

    async fn run_query(
        &self,
        org: &OrgWorker,
        spec: &QuerySpec,
        discovery: &Discovery,
        now: SystemTime,
    ) -> Result<QueryData, (Reason, String)> {
        let (projects, clusters): (Vec<String>, Vec<String>) = match spec.group_by {
            GroupBy::Projects if spec.projects.is_empty() => {
                if let Some(f) = &discovery.failed {
                    return Err(f.clone());
                }
                (
                    discovery.projects.iter().map(|p| p.id.clone()).collect(),
                    spec.clusters.clone(),
                )
            }
            GroupBy::Clusters if spec.clusters.is_empty() => {
                if let Some(f) = &discovery.failed {
                    return Err(f.clone());
                }
                (
                    spec.projects.clone(),
                    discovery
                        .clusters
                        .iter()
                        .map(|(c, _)| c.id.clone())
                        .collect(),
                )
            }
            _ => (spec.projects.clone(), spec.clusters.clone()),
        };
        let needs_ids = match spec.group_by {
            GroupBy::Projects => projects.is_empty(),
            GroupBy::Clusters => clusters.is_empty(),
            _ => false,
        };
        if needs_ids {
            // An org with no projects (or clusters) has nothing to group: an empty, honest result.
            return Ok(QueryData {
                series: Vec::new(),
                invalid_rows: 0,
                shed: 0,
            });
        }

        let current = Month::containing(now);
        let start = current.plus(-i64::from(spec.months.max(1) - 1));
        let hot_from = start.max(current.plus(-1));
        let shape = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (spec, &projects, &clusters).hash(&mut h);
            h.finish()
        };
        let key = |month: Month| MonthKey {
            org_id: org.config.id.clone(),
            query: spec.name.clone(),
            shape,
            month,
        };
        // Closed months already cached are not read again; the query starts at the first
        // closed month that is missing, or at the previous month.
        let mut cached: BTreeMap<Month, MonthSeries> = BTreeMap::new();
        let mut fetch_from = start;
        while fetch_from < hot_from {
            match self.closed_months.get(&key(fetch_from)) {
                Some(series) => {
                    cached.insert(fetch_from, series);
                    fetch_from = fetch_from.plus(1);
                }
                None => break,
            }
        }
        let deadline = Instant::now() + self.query_timeout;
        let (parsed, _stats) = self
            .bounded(
                org,
                deadline,
                org.client.run_query(
                    spec,
                    &projects,
                    &clusters,
                    fetch_from,
                    current.plus(1),
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

        let mut fetched: BTreeMap<Month, BTreeMap<SeriesKey, i64>> = BTreeMap::new();
        let mut outside = 0u64;
        for row in &parsed.rows {
            if row.month < fetch_from || row.month > current {
                outside += 1;
                continue;
            }
            let labels = series_labels(&org.config.id, row, discovery);
            let sum = fetched
                .entry(row.month)
                .or_default()
                .entry(labels)
                .or_insert(0);
            *sum = sum.saturating_add(row.amount_micros);
        }
        if outside > 0 {
            tracing::debug!(org_id = %org.config.id, query = %spec.name, rows = outside, "ignored rows dated outside the requested months");
        }
        let grouped = Level::grouped(spec.group_by);
        let mut by_month: BTreeMap<Month, MonthSeries> = cached;
        let mut m = fetch_from;
        while m <= current {
            let series: MonthSeries = Arc::new(
                fetched
                    .remove(&m)
                    .map(|s| spec.controls.apply_month(grouped, s).into_iter().collect())
                    .unwrap_or_default(),
            );
            if m < hot_from {
                self.closed_months.insert(key(m), series.clone());
            }
            by_month.insert(m, series);
            m = m.plus(1);
        }
        let mut shed = 0;
        let mut series: Vec<CostSeries> = if spec.controls.max_series().is_some() {
            let mut all: BTreeMap<(Month, SeriesKey), i64> = by_month
                .iter()
                .flat_map(|(month, s)| s.iter().map(|(k, v)| ((*month, k.clone()), *v)))
                .collect();
            shed = spec.controls.limit(grouped, &mut all);
            all.into_iter()
                .map(|((month, key), micros)| CostSeries {
                    labels: key.render(&spec.name),
                    month,
                    micros,
                })
                .collect()
        } else {
            by_month
                .iter()
                .flat_map(|(month, s)| {
                    s.iter().map(|(key, micros)| CostSeries {
                        labels: key.render(&spec.name),
                        month: *month,
                        micros: *micros,
                    })
                })
                .collect()
        };
        if shed > 0 {
            let first = org
                .shed_reported
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(spec.name.clone());
            if first {
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
        }
        series.sort_unstable();
        // A real name that reads "(other)" could meet a folded series: sum, so every label
        // set appears once.
        series.dedup_by(|b, a| {
            if a.labels == b.labels && a.month == b.month {
                a.micros = a.micros.saturating_add(b.micros);
                true
            } else {
                false
            }
        });
        Ok(QueryData {
            series,
            invalid_rows: parsed.invalid_rows,
            shed,
        })
    }
}

/// The label set of a row: what the row says, with names and parents filled from discovery
/// where the row lacks them. Labels without a value are left out.
fn series_labels(org_id: &str, row: &UsageRow, d: &Discovery) -> SeriesKey {
    let cluster = row.cluster_id.as_ref().and_then(|c| d.cluster_info.get(c));
    let project_id = row
        .project_id
        .as_deref()
        .or(cluster.map(|(_, p)| p.as_str()));
    let project_name = row
        .project_name
        .as_deref()
        .or_else(|| project_id.and_then(|p| d.project_names.get(p).map(String::as_str)));
    let cluster_name = row
        .cluster_name
        .as_deref()
        .or(cluster.map(|(n, _)| n.as_str()));
    SeriesKey::new([
        Some(
            row.org_id
                .as_deref()
                .filter(|o| !o.is_empty())
                .unwrap_or(org_id),
        ),
        row.org_name.as_deref(),
        project_id,
        project_name,
        row.cluster_id.as_deref(),
        cluster_name,
        row.service.as_deref(),
    ])
}
