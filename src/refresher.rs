//! The refresher: runs every query on the interval, keeps the last good data of each, and
//! publishes each refresh whole as a new [`Snapshot`].
//!
//! Months older than the previous one are closed: Atlas no longer changes them, so they are
//! kept in a per-month cache (moka, 24 h time-to-live) and only the current and previous
//! months are read on every refresh. Each query still costs at most one create per refresh.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::atlas::result::{ParsedResult, UsageRow};
use crate::atlas::{
    AtlasClient, AtlasError, ClientSettings, Cluster, Endpoint, Reason, UsageQuery,
};
use crate::budget::Budget;
use crate::config::{Clock, Config, GroupBy, OrgConfig, QuerySpec, is_atlas_id};
use crate::controls::{Level, SeriesKey};
use crate::exposition::{CostSeries, encode_costs};
use crate::metrics::{QueryLabels, SelfMetrics};
use crate::month::{Month, day_of_month};
use crate::remainder::{Rollup, clusters_remainder, projects_remainder};
use crate::snapshot::{EncodedCosts, QueryStatus, Snapshot, SnapshotCell};

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
    /// Hash of the query's configuration (grouping, filters, controls): a change reads the
    /// closed months again.
    shape: u64,
    month: Month,
}

/// A cached closed month and the ids its query filtered on.
#[derive(Clone)]
struct ClosedMonth {
    /// Project and cluster ids sent, sorted: the month is good for any query whose ids are
    /// among them, and is never replaced by one that covers fewer.
    ids: Arc<Vec<String>>,
    series: MonthSeries,
}

/// Whether every id of `ids` is in `sorted`.
fn covers(sorted: &[String], ids: &[String]) -> bool {
    ids.iter().all(|id| sorted.binary_search(id).is_ok())
}

/// Ids seen for one org, in a listing or in a result row. Deleted clusters and projects are
/// billed in the months before their deletion, but no listing returns them: an id seen once
/// stays in the queries' filters for as long as the process runs (nothing is kept across
/// restarts; their spend then shows in the `(unattributed)` remainder).
#[derive(Default)]
struct KnownIds {
    /// Project id -> name.
    projects: BTreeMap<String, String>,
    /// Cluster id -> (name, project id).
    clusters: BTreeMap<String, (String, Option<String>)>,
}

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

/// What a query contributes to the remainders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The org's total by service: ungrouped, unfiltered.
    Total,
    /// Grouped by discovered projects, unfiltered: gets a remainder.
    Projects,
    /// Grouped by discovered clusters, unfiltered: gets a remainder.
    Clusters,
    /// Anything else: no remainder (its filters make it a part of the total by design).
    None,
}

impl Role {
    fn of(spec: &QuerySpec) -> Role {
        let unfiltered =
            spec.projects.is_empty() && spec.clusters.is_empty() && spec.services.is_empty();
        match spec.group_by {
            _ if !unfiltered => Role::None,
            GroupBy::Ungrouped => Role::Total,
            GroupBy::Projects => Role::Projects,
            GroupBy::Clusters => Role::Clusters,
            GroupBy::Organizations | GroupBy::Services => Role::None,
        }
    }
}

/// What discovery found for one org during one refresh, with every id seen before.
#[derive(Default)]
struct Discovery {
    /// Project ids to query, sorted.
    project_ids: Vec<String>,
    /// Cluster ids (regular and Flex) to query, sorted.
    cluster_ids: Vec<String>,
    project_names: HashMap<String, String>,
    /// Cluster id -> (name, project id).
    cluster_info: HashMap<String, (String, Option<String>)>,
    /// Why the project ids are missing, when they are.
    projects_failed: Option<(Reason, String)>,
    /// Why some cluster ids are missing, when they are: fails the queries grouped by
    /// clusters only.
    clusters_failed: Option<(Reason, String)>,
}

/// The data of a query from its last successful refresh.
struct Slot {
    status: QueryStatus,
    series: Arc<Vec<CostSeries>>,
    /// The query's data summed for the remainders.
    rollup: Option<Arc<Rollup>>,
    /// Its `(unattributed)` series, derived anew at each publication of its org.
    remainder: Arc<Vec<CostSeries>>,
}

/// A successful query refresh.
struct QueryData {
    series: Vec<CostSeries>,
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
    closed_months: moka::sync::Cache<MonthKey, ClosedMonth>,
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
                    rollup: None,
                    remainder: Arc::new(Vec::new()),
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
        // The months each query held data for: a result that is empty where data was is
        // not believed.
        let held: Vec<BTreeSet<Month>> = {
            let published = self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            published.slots[org.slots.clone()]
                .iter()
                .map(|s| s.series.iter().map(|c| c.month).collect())
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
        attach_remainders(&org.config.id, &org.roles, slots);
        for slot in slots.iter_mut().filter(|s| s.status.up) {
            slot.status.series = slot.series.len() + slot.remainder.len();
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
            .flat_map(|s| s.series.iter().chain(s.remainder.iter()))
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
            refresh: self.refresh_help.clone(),
            generation: published.generation,
        });
    }

    async fn refresh_org(
        &self,
        org: &OrgWorker,
        now: SystemTime,
        held: &[BTreeSet<Month>],
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
                .zip(held)
                .map(|(spec, held)| self.refresh_query(org, spec, &discovery, now, held)),
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
        let projects = match projects {
            Ok(p) => p,
            Err(e) => {
                if e.reason() == Reason::Forbidden {
                    self.report_forbidden(org, Endpoint::Projects, &e);
                }
                let hint = if e.reason() == Reason::Forbidden {
                    " (the Organization Member role is needed to list projects)"
                } else {
                    ""
                };
                d.projects_failed = Some((e.reason(), format!("discovering projects: {e}{hint}")));
                d.clusters_failed.clone_from(&d.projects_failed);
                return d;
            }
        };
        let mut clusters: Vec<(Cluster, String)> = Vec::new();
        if with_clusters {
            let limit = Semaphore::new(DISCOVERY_CONCURRENCY);
            // Regular and Flex clusters: since January 2026 each has its own listing.
            let listings = futures_util::future::join_all(projects.iter().flat_map(|p| {
                [Endpoint::Clusters, Endpoint::FlexClusters].map(|endpoint| {
                    let limit = &limit;
                    async move {
                        let _permit = limit.acquire().await.ok();
                        let _global = self.semaphore.acquire().await.ok();
                        let listing = match endpoint {
                            Endpoint::FlexClusters => {
                                self.bounded(
                                    org,
                                    deadline,
                                    org.client.flex_clusters(&p.id, deadline),
                                )
                                .await
                            }
                            _ => {
                                self.bounded(org, deadline, org.client.clusters(&p.id, deadline))
                                    .await
                            }
                        };
                        (endpoint, p.id.clone(), listing)
                    }
                })
            }))
            .await;
            for (endpoint, project_id, listing) in listings {
                match listing {
                    Ok(found) => {
                        clusters.extend(found.into_iter().map(|c| (c, project_id.clone())))
                    }
                    Err(e) => {
                        if e.reason() == Reason::Forbidden {
                            self.report_forbidden(org, endpoint, &e);
                        }
                        d.clusters_failed = Some((
                            e.reason(),
                            format!("discovering the {endpoint} of project {project_id}: {e}"),
                        ));
                    }
                }
            }
        }
        // Listed now, plus every id seen before: deleted clusters and projects keep the
        // history they were billed for.
        let mut known = org
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in projects {
            known.projects.insert(p.id, p.name);
        }
        for (c, project_id) in clusters {
            known.clusters.insert(c.id, (c.name, Some(project_id)));
        }
        d.project_ids = known.projects.keys().cloned().collect();
        d.project_names = known.projects.clone().into_iter().collect();
        if with_clusters {
            d.cluster_ids = known.clusters.keys().cloned().collect();
            d.cluster_info = known.clusters.clone().into_iter().collect();
        }
        d
    }

    /// Remembers the project and cluster ids that result rows name.
    fn learn_ids(org: &OrgWorker, rows: &[UsageRow]) {
        let mut known = org
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for row in rows {
            if let Some(p) = row.project_id.as_deref().filter(|p| is_atlas_id(p))
                && !known.projects.contains_key(p)
            {
                known
                    .projects
                    .insert(p.to_owned(), row.project_name.clone().unwrap_or_default());
            }
            if let Some(c) = row.cluster_id.as_deref().filter(|c| is_atlas_id(c))
                && !known.clusters.contains_key(c)
            {
                known.clusters.insert(
                    c.to_owned(),
                    (
                        row.cluster_name.clone().unwrap_or_default(),
                        row.project_id.clone().filter(|p| is_atlas_id(p)),
                    ),
                );
            }
        }
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
        held: &BTreeSet<Month>,
    ) -> Result<QueryData, (Reason, String)> {
        // The semaphore is never closed, so acquire only fails if it were; then run unbounded.
        let _permit = self.semaphore.acquire().await.ok();
        let started = std::time::Instant::now();
        let result = self.run_query(org, spec, discovery, now, held).await;
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
        held: &BTreeSet<Month>,
    ) -> Result<QueryData, (Reason, String)> {
        let (projects, clusters): (Vec<String>, Vec<String>) = match spec.group_by {
            GroupBy::Projects if spec.projects.is_empty() => {
                if let Some(f) = &discovery.projects_failed {
                    return Err(f.clone());
                }
                (discovery.project_ids.clone(), spec.clusters.clone())
            }
            GroupBy::Clusters if spec.clusters.is_empty() => {
                if let Some(f) = &discovery.clusters_failed {
                    return Err(f.clone());
                }
                (spec.projects.clone(), discovery.cluster_ids.clone())
            }
            _ => (spec.projects.clone(), spec.clusters.clone()),
        };
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
        let shape = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            spec.hash(&mut h);
            h.finish()
        };
        let key = |month: Month| MonthKey {
            org_id: org.config.id.clone(),
            query: spec.name.clone(),
            shape,
            month,
        };
        let mut ids: Vec<String> = projects.iter().chain(&clusters).cloned().collect();
        ids.sort_unstable();
        let ids = Arc::new(ids);
        // Closed months already cached for these ids are not read again; the query starts at
        // the first closed month that is missing, or at the previous month.
        let mut cached: BTreeMap<Month, MonthSeries> = BTreeMap::new();
        let mut fetch_from = start;
        while fetch_from < hot_from {
            match self
                .closed_months
                .get(&key(fetch_from))
                .filter(|c| covers(&c.ids, &ids))
            {
                Some(c) => {
                    cached.insert(fetch_from, c.series);
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
        self.check_dimension(org, spec, &parsed)?;
        Self::learn_ids(org, &parsed.rows);

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
        // Emptiness is not success: a month that held data and now has no row at all is an
        // answer that lost its rows, not spend that vanished.
        let emptied: Vec<String> = held
            .range(fetch_from..=current)
            .filter(|m| !fetched.contains_key(m))
            .map(ToString::to_string)
            .collect();
        if !emptied.is_empty() {
            return Err((
                Reason::Decode,
                format!(
                    "the result has no rows for {}, which held data before; keeping the last \
                     good data",
                    emptied.join(", ")
                ),
            ));
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
                // Never replace a cached month by one that covers fewer ids.
                let k = key(m);
                if self
                    .closed_months
                    .get(&k)
                    .is_none_or(|old| covers(&ids, &old.ids))
                {
                    self.closed_months.insert(
                        k,
                        ClosedMonth {
                            ids: ids.clone(),
                            series: series.clone(),
                        },
                    );
                }
            }
            by_month.insert(m, series);
            m = m.plus(1);
        }
        let mut shed = 0;
        // With a series limit, the limited set; else every month's series, borrowed.
        let limited: BTreeMap<(Month, SeriesKey), i64>;
        let kept: Vec<(Month, &SeriesKey, i64)> = if spec.controls.max_series().is_some() {
            let mut all: BTreeMap<(Month, SeriesKey), i64> = by_month
                .iter()
                .flat_map(|(month, s)| s.iter().map(|(k, v)| ((*month, k.clone()), *v)))
                .collect();
            shed = spec.controls.limit(grouped, &mut all);
            limited = all;
            limited.iter().map(|((m, k), v)| (*m, k, *v)).collect()
        } else {
            by_month
                .iter()
                .flat_map(|(m, s)| s.iter().map(move |(k, v)| (*m, k, *v)))
                .collect()
        };
        let rollup = Rollup::new(start, current, kept.iter().copied());
        let mut series: Vec<CostSeries> = kept
            .iter()
            .map(|(month, key, micros)| CostSeries {
                labels: key.render(&spec.name),
                month: *month,
                micros: *micros,
            })
            .collect();
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
            rollup,
            invalid_rows: parsed.invalid_rows,
            shed,
        })
    }

    /// A grouped query whose rows lack the dimension it groups by is a decode problem: the
    /// spec does not name the project and cluster keys, so an answer that spells them in a
    /// way the parser does not know must not pass as data without its labels.
    fn check_dimension(
        &self,
        org: &OrgWorker,
        spec: &QuerySpec,
        parsed: &ParsedResult,
    ) -> Result<(), (Reason, String)> {
        let missing = parsed
            .rows
            .iter()
            .filter(|r| !has_dimension(spec.group_by, r))
            .count();
        // Partial matches may legitimately lack the dimension (org-wide charges), but not
        // every row of them.
        if missing == 0 || (spec.include_partial_matches && missing < parsed.rows.len()) {
            return Ok(());
        }
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
}

/// Whether `query` is new to `reported` (and now in it): for warnings logged once per query.
fn first_time(reported: &std::sync::Mutex<std::collections::HashSet<String>>, query: &str) -> bool {
    // std Mutex: a short section, no await inside.
    reported
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(query.to_owned())
}

/// Whether a row carries the dimension a query groups by (its id or its name).
fn has_dimension(group_by: GroupBy, row: &UsageRow) -> bool {
    match group_by {
        GroupBy::Projects => row.project_id.is_some() || row.project_name.is_some(),
        GroupBy::Clusters => row.cluster_id.is_some() || row.cluster_name.is_some(),
        GroupBy::Ungrouped | GroupBy::Services => row.service.is_some(),
        GroupBy::Organizations => true,
    }
}

fn dimension_name(group_by: GroupBy) -> &'static str {
    match group_by {
        GroupBy::Projects => "project (id or name)",
        GroupBy::Clusters => "cluster (id or name)",
        GroupBy::Ungrouped | GroupBy::Services => "service",
        GroupBy::Organizations => "organization",
    }
}

/// Derives the remainder series of an org's queries from their last good data: the
/// `projects` and `clusters` queries against the total (see [`crate::remainder`]).
fn attach_remainders(org_id: &str, roles: &[Role], slots: &mut [Slot]) {
    let rollup_of = |role: Role| {
        roles
            .iter()
            .zip(slots.iter())
            .find(|(r, s)| **r == role && s.rollup.is_some())
            .and_then(|(_, s)| s.rollup.clone())
    };
    let total = rollup_of(Role::Total);
    let projects = rollup_of(Role::Projects);
    for (role, slot) in roles.iter().zip(slots.iter_mut()) {
        let (Some(total), Some(own)) = (&total, &slot.rollup) else {
            continue;
        };
        let remainder = match role {
            Role::Projects => projects_remainder(org_id, &slot.status.query, total, own),
            Role::Clusters => {
                clusters_remainder(org_id, &slot.status.query, total, projects.as_deref(), own)
            }
            Role::Total | Role::None => continue,
        };
        slot.remainder = Arc::new(remainder);
    }
}

/// The label set of a row: what the row says, with names and parents filled from discovery
/// where the row lacks them. Labels without a value are left out.
fn series_labels(org_id: &str, row: &UsageRow, d: &Discovery) -> SeriesKey {
    let cluster = row.cluster_id.as_ref().and_then(|c| d.cluster_info.get(c));
    let project_id = row
        .project_id
        .as_deref()
        .or(cluster.and_then(|(_, p)| p.as_deref()));
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
