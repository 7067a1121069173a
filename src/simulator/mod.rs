//! A simulator of the MongoDB Atlas Cost Explorer API, for `--demo`, integration tests and
//! benchmarks.
//!
//! It speaks the API as `atlas-api.md` describes it:
//! - `POST /api/oauth/token` (service-account client credentials, HTTP Basic) gives Bearer
//!   tokens; every `/api/atlas/v2` request needs a live one or HTTP Digest (API keys);
//! - `POST /api/atlas/v2/orgs/{orgId}/billing/costExplorer/usage` creates a query (202 and a
//!   64-hex token), `GET .../usage/{token}` answers "not ready" `polls_before_ready` times (as a
//!   `{"status":102}` envelope, a slow answer, or a dropped connection), then the result as JSON
//!   or CSV, optionally wrapped in `{"status":200,"content":...}`;
//! - project, cluster and Flex cluster discovery, paginated, with `tags`.
//!
//! By default it enforces every documented rule, so that a client's wrong guess fails a test:
//! a `groupBy` without its filter is refused; Flex clusters are listed only by
//! `/flexClusters` (Atlas since January 2026); deleted clusters are billed in the months
//! before their deletion and absent from every listing, those deleted with retained backups
//! listed only with `includeDeletedWithRetainedBackups=true` and still billing `Backup`; a
//! deleted project is billed in past months, absent from the projects listing, and its cluster
//! listings answer 404 (see `data` for which indexes are which). Where the public record is
//! silent it serves each plausible variant, chosen in [`SimConfig`]:
//! - [`RowKeys`]: JSON row keys `projectId`/`clusterId` (default), `groupId`/`clusterUniqueId`,
//!   or unguessable ones;
//! - [`CsvLayout`]: a preamble and 11 columns (default), the spec's 9 labels (+ `Service`),
//!   header first with messy labels and trailing empty cells, or the spec's garbled example;
//! - `flex_in_clusters_listing`: Flex clusters in `/clusters` too, as before January 2026.
//!
//! The data ([`Dataset`]) is generated from a seed; [`Simulator::set_amount_scale`],
//! [`Simulator::delete_cluster`] and [`Simulator::delete_project`] swap in a changed copy
//! atomically. The `Dataset` helpers (`total_cents`, `cluster_cents`, `unlisted_cents`, ...)
//! give exact expected totals. Faults can be injected per endpoint ([`Simulator::fail`]).
//!
//! Submodules: `data` (the generated account), `auth` (OAuth and Digest), `api` (handlers).

mod api;
mod auth;
mod data;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use api::{CSV_HEADER, FLEX_TYPE, SPEC_CSV_HEADER};
pub use data::{
    CLUSTER_SERVICES, ClusterKind, Dataset, GroupBy, SimCluster, SimOrg, SimProject, SimTag,
    UsageRecord, cluster_tags, project_tags,
};

use crate::month::Month;

/// How a poll shows that a query is not ready yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// `envelope=true`: HTTP 200 `{"status":102,"content":null}`. Without `envelope=true` a bare
    /// 102 cannot be seen by hyper-based clients, so the connection is dropped as with
    /// [`NotReady::Close`].
    Envelope,
    /// Wait this long, then answer as [`NotReady::Envelope`] (a client with a shorter timeout
    /// sees a timeout).
    Timeout(Duration),
    /// Send 200 headers and then break the connection mid-body.
    Close,
}

/// The credentials the simulator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCredentials {
    /// Service-account client id (OAuth, HTTP Basic user).
    pub client_id: String,
    /// Service-account client secret.
    pub client_secret: String,
    /// API key public part (Digest user).
    pub public_key: String,
    /// API key private part (Digest password).
    pub private_key: String,
}

impl SimCredentials {
    /// Fixed demo values: `mdb_sa_id_demo` / `mdb_sa_sk_demo` (service account) and
    /// `demopublic` / `demo-private-key` (API key).
    pub fn demo() -> Self {
        SimCredentials {
            client_id: "mdb_sa_id_demo".to_string(),
            client_secret: "mdb_sa_sk_demo".to_string(),
            public_key: "demopublic".to_string(),
            private_key: "demo-private-key".to_string(),
        }
    }
}

/// Everything that shapes a [`Simulator`].
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the generated data; same seed, same data.
    pub seed: u64,
    /// Number of organisations.
    pub orgs: usize,
    /// Projects in each organisation.
    pub projects_per_org: usize,
    /// Clusters in each project.
    pub clusters_per_project: usize,
    /// How many services (from [`CLUSTER_SERVICES`], `Clusters` always first) each cluster bills.
    pub services_per_cluster: usize,
    /// Months of history ending at `current_month`.
    pub months: u32,
    /// The current month; `None` is the month of the clock at [`Simulator::new`].
    pub current_month: Option<Month>,
    /// "Not ready" answers to the polls of a query before its result.
    pub polls_before_ready: u32,
    /// How "not ready" is shown.
    pub not_ready: NotReady,
    /// Answer the final result without an envelope even when `envelope=true` was asked.
    pub ignore_envelope: bool,
    /// Cap on `itemsPerPage` honoured by the discovery endpoints.
    pub max_page_size: usize,
    /// Split each result row's amount into two rows with identical dimensions.
    pub duplicate_rows: bool,
    /// OAuth `expires_in` in seconds.
    pub token_expires_in: u64,
    /// How long a Digest nonce stays fresh; older ones are answered with `stale=true`.
    pub nonce_ttl: Duration,
    /// How long a query token can be polled; later polls get 404 `RESOURCE_NOT_FOUND`.
    pub query_ttl: Duration,
    /// Give projects hostile names (quotes, backslashes, newlines, empty, very long).
    pub hostile_names: bool,
    // data and result variants
    /// One Flex cluster in every even-indexed project, listed only by the Flex endpoint
    /// (as Atlas does since January 2026).
    pub flex_clusters: bool,
    /// Also list Flex clusters in `/clusters`, as Atlas did until January 2026.
    pub flex_in_clusters_listing: bool,
    /// Deleted clusters (billed in the months before, absent from every listing) and
    /// clusters deleted with retained backups (listed only with
    /// `includeDeletedWithRetainedBackups=true`, still billing `Backup`).
    pub deleted_clusters: bool,
    /// One deleted project per org: billed in past months, absent from the projects listing,
    /// its cluster listings 404.
    pub deleted_projects: bool,
    /// `tags` on projects, clusters and Flex clusters.
    pub tags: bool,
    /// How JSON result rows spell the project and cluster keys (undocumented).
    pub row_keys: RowKeys,
    /// How CSV results are laid out (undocumented).
    pub csv_layout: CsvLayout,
    /// The accepted credentials.
    pub credentials: SimCredentials,
    // auth and transport variants
    /// Form-decode the token endpoint's Basic pair before comparing it (as a server built
    /// for Go's oauth2 would); by default it is compared raw, as the docs' curl sends it.
    pub basic_form_decoded: bool,
    /// Answer a correct Digest response over a nonce the simulator does not know (see
    /// [`Simulator::forget_nonces`]) with `stale=true`; when `false`, with a plain fresh
    /// challenge (`stale=false`), as a restarted server or another node behind a load
    /// balancer does.
    pub unknown_nonce_stale: bool,
    /// Answer a poll that asks for CSV with `envelope=true` with this status (400 or 406) and
    /// an Atlas error, as a server that refuses to wrap CSV would.
    pub refuse_csv_envelope: Option<u16>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            orgs: 2,
            projects_per_org: 4,
            clusters_per_project: 3,
            services_per_cluster: 4,
            months: 18,
            current_month: None,
            polls_before_ready: 2,
            not_ready: NotReady::Envelope,
            ignore_envelope: false,
            max_page_size: 500,
            duplicate_rows: false,
            token_expires_in: 3600,
            nonce_ttl: Duration::from_secs(300),
            query_ttl: Duration::from_secs(30 * 60),
            hostile_names: false,
            flex_clusters: true,
            flex_in_clusters_listing: false,
            deleted_clusters: true,
            deleted_projects: true,
            tags: true,
            row_keys: RowKeys::ProjectId,
            csv_layout: CsvLayout::Extended,
            credentials: SimCredentials::demo(),
            // auth and transport variants
            basic_form_decoded: false,
            unknown_nonce_stale: true,
            refuse_csv_envelope: None,
        }
    }
}

impl SimConfig {
    /// Defaults, with orgs, projects and clusters chosen so that
    /// `services_per_cluster * clusters * months` is roughly `target` (within a few per cent
    /// above it for large targets).
    pub fn with_series(target: usize) -> Self {
        let base = SimConfig::default();
        let per_cluster = base.services_per_cluster * base.months as usize;
        let clusters = target.div_ceil(per_cluster).max(1);
        let orgs = clusters.div_ceil(1000).clamp(1, 20).min(clusters);
        let per_org = clusters.div_ceil(orgs);
        let projects = ((per_org as f64).sqrt().round() as usize).max(1);
        let clusters_per_project = per_org.div_ceil(projects);
        SimConfig {
            orgs,
            projects_per_org: projects,
            clusters_per_project,
            ..base
        }
    }
}

/// How JSON result rows spell the project and cluster keys. The public record confirms
/// only `organizationId`, `organizationName`, `invoiceId`, `service`, `usageAmount` and
/// `usageDate`; the rest is a guess from the CSV column labels.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKeys {
    /// `projectId`, `projectName`, `clusterId`, `clusterName`.
    ProjectId,
    /// `groupId`, `groupName`, `clusterUniqueId`, `clusterName` (the API's path naming and
    /// the CSV's "Cluster Unique Id").
    GroupId,
    /// `grp`, `grpLabel`, `clstr`, `clstrLabel`: spellings no client can guess, to show that
    /// a client reports a decode problem instead of silently dropping the labels.
    Unknown,
}

impl RowKeys {
    /// The keys for project id, project name, cluster id and cluster name, in that order.
    pub fn keys(self) -> [&'static str; 4] {
        match self {
            RowKeys::ProjectId => ["projectId", "projectName", "clusterId", "clusterName"],
            RowKeys::GroupId => ["groupId", "groupName", "clusterUniqueId", "clusterName"],
            RowKeys::Unknown => ["grp", "grpLabel", "clstr", "clstrLabel"],
        }
    }
}

/// How a CSV result is laid out. The spec's only CSV example is garbled, so every layout here
/// is a plausible reading, not a confirmed one.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvLayout {
    /// A preamble line (`Organization: <name>`) and an empty line, then [`CSV_HEADER`]: the
    /// spec's labels plus `Service` and `Usage Date` (the usage month); `Billed Date` is the
    /// first day of the month after the usage month.
    Extended,
    /// Header first, exactly the spec's labels ([`SPEC_CSV_HEADER`]) with `Service` inserted
    /// before `Usage Amount` when the rows carry a service (every query but one grouped by
    /// organizations). `Billed Date`, the only date column, holds the usage month's first day.
    Spec,
    /// Header first, the [`CsvLayout::Extended`] columns with labels in other letter cases and
    /// with stray spaces, a space before each amount, and two trailing empty cells on every
    /// line.
    NoPreamble,
    /// A body of the shape of the spec's example whatever the query (the query's own values):
    /// labels down the first column, values under the wrong labels. A client must not report
    /// success with zero rows from it.
    SpecExample,
}

/// The endpoints, for request counts and fault injection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SimEndpoint {
    /// `POST /api/oauth/token`.
    Token,
    /// `POST /api/atlas/v2/orgs/{orgId}/billing/costExplorer/usage`.
    Create,
    /// `GET /api/atlas/v2/orgs/{orgId}/billing/costExplorer/usage/{token}`.
    Poll,
    /// `GET /api/atlas/v2/orgs/{orgId}/groups`.
    Projects,
    /// `GET /api/atlas/v2/groups/{groupId}/clusters`.
    Clusters,
    /// `GET /api/atlas/v2/groups/{groupId}/flexClusters`.
    FlexClusters,
}

impl SimEndpoint {
    fn index(self) -> usize {
        match self {
            SimEndpoint::Token => 0,
            SimEndpoint::Create => 1,
            SimEndpoint::Poll => 2,
            SimEndpoint::Projects => 3,
            SimEndpoint::Clusters => 4,
            SimEndpoint::FlexClusters => 5,
        }
    }
}

/// An injected failure, answered to the requests of an endpoint until cleared (or for a set
/// number of requests, see [`Simulator::fail_with`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long before answering normally (late headers).
    Delay(Duration),
    /// 200 headers at once, then a body that trickles in one byte per interval.
    Trickle(Duration),
    /// 200 headers and the start of a body, then the connection breaks.
    ResetMidBody,
    /// This exact answer instead of the real one (bad JSON, odd CSV, ...).
    Body {
        /// HTTP status.
        status: u16,
        /// `Content-Type`.
        content_type: String,
        /// The body.
        body: String,
    },
    /// A valid JSON result of about this many bytes, streamed: far larger than any real one.
    Huge(usize),
    /// This status with an Atlas error body (`UNEXPECTED_ERROR` for 5xx, and so on).
    Status(u16),
    /// 429 `RATE_LIMITED` with `RateLimit-Limit: 100`, `RateLimit-Remaining: 0` and, when
    /// given, `Retry-After` in seconds.
    RateLimited {
        /// Seconds for `Retry-After`; `None` sends no such header.
        retry_after: Option<u64>,
    },
    /// This status with an HTML body, as a proxy in front of Atlas would send.
    Html(u16),
    /// 429 `RATE_LIMITED` as [`Fault::RateLimited`], with `Retry-After` as an HTTP date
    /// (IMF-fixdate) this far ahead of the answer.
    RateLimitedUntil(Duration),
    /// This 3xx status with a `Location` elsewhere (a login page), as a misrouted proxy
    /// would answer.
    Redirect(u16),
}

/// A fault in force: which endpoint, for which org (all when `None`), how many more times
/// (until cleared when `None`).
#[derive(Clone, Debug)]
struct ActiveFault {
    endpoint: SimEndpoint,
    fault: Fault,
    org: Option<String>,
    remaining: Option<u32>,
}

/// One request the simulator received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRequest {
    /// When it arrived.
    pub at: std::time::Instant,
    /// Which endpoint.
    pub endpoint: SimEndpoint,
    /// The org it concerns (none for the token endpoint).
    pub org_id: Option<String>,
}

/// Requests kept in the log: enough for any test, bounded for long demo runs.
const LOG_LIMIT: usize = 100_000;

/// Runtime changes to the generated data, replayed on `base` by each rebuild.
#[derive(Default)]
struct Changes {
    /// `set_amount_scale` (numerator, denominator); `None` is unscaled.
    scale: Option<(i64, i64)>,
    /// Ids deleted by `delete_cluster`, in order.
    clusters: Vec<String>,
    /// Ids deleted by `delete_project`, in order.
    projects: Vec<String>,
}

/// Shared state of a running simulator.
struct Inner {
    config: SimConfig,
    current: Month,
    base: Arc<Dataset>,
    /// What tests changed since generation; held while `data` is rebuilt from `base`, so
    /// two changes never lose one another. Short lock, never across `.await`.
    changes: Mutex<Changes>,
    /// Swapped whole by `set_amount_scale`, `delete_cluster` and `delete_project`; short lock,
    /// never across `.await`.
    data: Mutex<Arc<Dataset>>,
    not_ready: Mutex<NotReady>,
    ignore_envelope: AtomicBool,
    faults: Mutex<Vec<ActiveFault>>,
    log: Mutex<std::collections::VecDeque<SimRequest>>,
    polls_before_ready: std::sync::atomic::AtomicU32,
    counts: [AtomicU64; 6],
    /// Requests between arrival and response headers, now and at most.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    auth: auth::AuthState,
    queries: Mutex<HashMap<String, Arc<api::Query>>>,
}

/// The simulator: cheap to clone (an `Arc` inside), so tests keep a handle to inspect and
/// steer it while it serves.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl Simulator {
    /// Generates the data set and prepares the state. The current month is fixed here.
    pub fn new(config: SimConfig) -> Simulator {
        let current = config
            .current_month
            .unwrap_or_else(|| Month::containing(SystemTime::now()));
        let base = Arc::new(Dataset::generate(&config, current));
        Simulator {
            inner: Arc::new(Inner {
                current,
                changes: Mutex::new(Changes::default()),
                data: Mutex::new(Arc::clone(&base)),
                base,
                not_ready: Mutex::new(config.not_ready),
                ignore_envelope: AtomicBool::new(config.ignore_envelope),
                faults: Mutex::new(Vec::new()),
                log: Mutex::new(std::collections::VecDeque::new()),
                polls_before_ready: std::sync::atomic::AtomicU32::new(config.polls_before_ready),
                counts: Default::default(),
                in_flight: AtomicU64::new(0),
                max_in_flight: AtomicU64::new(0),
                auth: auth::AuthState::default(),
                queries: Mutex::new(HashMap::new()),
                config,
            }),
        }
    }

    /// All endpoints, with an Atlas-style 404 for anything else.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// Serves [`Simulator::router`] on `listener` until `shutdown` completes.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// The current data (a snapshot; later scale changes do not alter it).
    pub fn dataset(&self) -> Arc<Dataset> {
        Arc::clone(&self.inner.data.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The current month the simulator works with.
    pub fn current_month(&self) -> Month {
        self.inner.current
    }

    /// Replaces the data with the generated data times `numerator / denominator` (rounded half
    /// away from zero per record; not compounding). Queries already created keep their data.
    pub fn set_amount_scale(&self, numerator: i64, denominator: i64) {
        self.change(|c, _| {
            c.scale = Some((numerator, denominator));
            true
        });
    }

    /// Deletes the cluster (dedicated or Flex) with this unique id, without retained backups,
    /// in the current month: from now on no listing returns it, and every month it was billed
    /// in (the current one included) keeps its charges. Queries already created keep their
    /// data. Returns false (and changes nothing) for an unknown or already deleted cluster.
    pub fn delete_cluster(&self, id: &str) -> bool {
        self.change(|c, data| {
            let live = data
                .cluster_by_id(id)
                .is_some_and(|(o, p, k)| !data.orgs[o].projects[p].clusters[k].is_deleted());
            if live {
                c.clusters.push(id.to_string());
            }
            live
        })
    }

    /// Deletes the project with this id, and its clusters, in the current month: from now on
    /// the projects listing leaves it out and its cluster listings answer 404
    /// `RESOURCE_NOT_FOUND`; its charges stay, and the Cost Explorer still returns its rows
    /// for its id. Returns false (and changes nothing) for an unknown or already deleted
    /// project.
    pub fn delete_project(&self, id: &str) -> bool {
        self.change(|c, data| {
            let live = data
                .project_by_id(id)
                .is_some_and(|(o, p)| !data.orgs[o].projects[p].is_deleted());
            if live {
                c.projects.push(id.to_string());
            }
            live
        })
    }

    /// Applies `edit` (given the current data) to the changes and, when it says so, swaps in
    /// a dataset rebuilt from the generated one with every change replayed.
    fn change(&self, edit: impl FnOnce(&mut Changes, &Dataset) -> bool) -> bool {
        let mut changes = self.inner.changes.lock().unwrap_or_else(|e| e.into_inner());
        if !edit(&mut changes, &self.dataset()) {
            return false;
        }
        let mut data = match changes.scale {
            Some((n, d)) => self.inner.base.scaled(n, d),
            None => (*self.inner.base).clone(),
        };
        let month = self.inner.current;
        for id in &changes.projects {
            data.mark_project_deleted(id, month);
        }
        for id in &changes.clusters {
            data.mark_cluster_deleted(id, month);
        }
        *self.inner.data.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(data);
        true
    }

    /// Makes every request to `endpoint` answer `fault` until [`Simulator::clear_faults`].
    pub fn fail(&self, endpoint: SimEndpoint, fault: Fault) {
        self.fail_with(endpoint, fault, None, None);
    }

    /// Makes requests to `endpoint` answer `fault`: only those for `org` when given, and only
    /// the next `times` of them when given. Replaces a fault set before for the same endpoint
    /// and org.
    pub fn fail_with(
        &self,
        endpoint: SimEndpoint,
        fault: Fault,
        org: Option<&str>,
        times: Option<u32>,
    ) {
        let mut faults = self.inner.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.retain(|f| !(f.endpoint == endpoint && f.org.as_deref() == org));
        faults.push(ActiveFault {
            endpoint,
            fault,
            org: org.map(str::to_owned),
            remaining: times,
        });
    }

    /// Removes all injected faults.
    pub fn clear_faults(&self) {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The fault that applies to this request, if any (and counts it down).
    fn take_fault(&self, endpoint: SimEndpoint, org: Option<&str>) -> Option<Fault> {
        let mut faults = self.inner.faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = faults
            .iter()
            .position(|f| f.endpoint == endpoint && (f.org.is_none() || f.org.as_deref() == org))?;
        let fault = faults[i].fault.clone();
        if let Some(n) = faults[i].remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                faults.remove(i);
            }
        }
        Some(fault)
    }

    /// The most requests that were in flight at once (arrived, response headers not yet sent).
    pub fn max_in_flight(&self) -> u64 {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every request received so far (the last 100,000), oldest first.
    pub fn request_log(&self) -> Vec<SimRequest> {
        self.inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Forgets every Digest nonce issued so far, as a restart or another node behind a load
    /// balancer would: the next answer over an old nonce is challenged again (with
    /// `stale=false` when [`SimConfig::unknown_nonce_stale`] is off).
    pub fn forget_nonces(&self) {
        self.inner.auth.forget_nonces();
    }

    /// Forgets every OAuth token issued so far, as if they were revoked.
    pub fn revoke_tokens(&self) {
        self.inner.auth.revoke_tokens();
    }

    /// Sets how many polls of each query answer "not ready", from the next poll on.
    pub fn set_polls_before_ready(&self, polls: u32) {
        self.inner
            .polls_before_ready
            .store(polls, Ordering::Relaxed);
    }

    /// Requests received by `endpoint` so far, whatever their outcome (faults and auth
    /// failures included).
    pub fn requests(&self, endpoint: SimEndpoint) -> u64 {
        self.inner.counts[endpoint.index()].load(Ordering::Relaxed)
    }

    /// Switches how "not ready" is shown, from the next poll on.
    pub fn set_not_ready(&self, form: NotReady) {
        *self
            .inner
            .not_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = form;
    }

    /// Switches whether `envelope=true` is ignored for final results.
    pub fn set_ignore_envelope(&self, on: bool) {
        self.inner.ignore_envelope.store(on, Ordering::Relaxed);
    }
}

/// How "not ready" is shown, as a command-line value.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReadyArg {
    /// `{"status":102}` envelope.
    Envelope,
    /// Wait `--not-ready-delay`, then the envelope.
    Timeout,
    /// Drop the connection mid-response.
    Close,
}

/// Options of the `simulate` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, env = "ATLAS_SIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Seed of the generated data.
    #[arg(long, env = "ATLAS_SIM_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Number of organisations.
    #[arg(long, env = "ATLAS_SIM_ORGS", default_value_t = 2)]
    pub orgs: usize,
    /// Projects per organisation.
    #[arg(long, env = "ATLAS_SIM_PROJECTS", default_value_t = 4)]
    pub projects: usize,
    /// Clusters per project.
    #[arg(long, env = "ATLAS_SIM_CLUSTERS", default_value_t = 3)]
    pub clusters: usize,
    /// Approximate number of (cluster, service, month) series; overrides --orgs, --projects
    /// and --clusters.
    #[arg(long, env = "ATLAS_SIM_SERIES")]
    pub series: Option<usize>,
    /// Months of history ending at the current month.
    #[arg(long, env = "ATLAS_SIM_MONTHS", default_value_t = 18)]
    pub months: u32,
    /// "Not ready" answers to each query before its result.
    #[arg(long, env = "ATLAS_SIM_POLLS_BEFORE_READY", default_value_t = 2)]
    pub polls_before_ready: u32,
    /// How "not ready" is shown.
    #[arg(long, env = "ATLAS_SIM_NOT_READY", value_enum, default_value_t = NotReadyArg::Envelope)]
    pub not_ready: NotReadyArg,
    /// Delay of a "not ready" answer with --not-ready timeout (e.g. 30s).
    #[arg(long, env = "ATLAS_SIM_NOT_READY_DELAY", value_parser = humantime::parse_duration, default_value = "30s")]
    pub not_ready_delay: Duration,
    /// Answer final results without an envelope even when envelope=true is asked.
    #[arg(long, env = "ATLAS_SIM_IGNORE_ENVELOPE")]
    pub ignore_envelope: bool,
    /// Cap on itemsPerPage of the discovery endpoints.
    #[arg(long, env = "ATLAS_SIM_MAX_PAGE_SIZE", default_value_t = 500)]
    pub max_page_size: usize,
    /// No Flex clusters (by default every other project has one, listed only by
    /// /groups/{id}/flexClusters).
    #[arg(long, env = "ATLAS_SIM_NO_FLEX_CLUSTERS")]
    pub no_flex_clusters: bool,
    /// Also list Flex clusters in /groups/{id}/clusters, as Atlas did until January 2026.
    #[arg(long, env = "ATLAS_SIM_FLEX_IN_CLUSTERS_LISTING")]
    pub flex_in_clusters_listing: bool,
    /// No deleted clusters (by default some are: billed in past months, absent from listings,
    /// some with retained backups still billing Backup).
    #[arg(long, env = "ATLAS_SIM_NO_DELETED_CLUSTERS")]
    pub no_deleted_clusters: bool,
    /// No deleted project (by default each org has one: billed in past months, absent from
    /// the projects listing, its cluster listings 404).
    #[arg(long, env = "ATLAS_SIM_NO_DELETED_PROJECTS")]
    pub no_deleted_projects: bool,
    /// No tags on projects and clusters.
    #[arg(long, env = "ATLAS_SIM_NO_TAGS")]
    pub no_tags: bool,
    /// How JSON result rows spell the project and cluster keys (undocumented by Atlas).
    #[arg(long, env = "ATLAS_SIM_ROW_KEYS", value_enum, default_value_t = RowKeys::ProjectId)]
    pub row_keys: RowKeys,
    /// How CSV results are laid out (undocumented by Atlas).
    #[arg(long, env = "ATLAS_SIM_CSV_LAYOUT", value_enum, default_value_t = CsvLayout::Extended)]
    pub csv_layout: CsvLayout,
}

impl SimArgs {
    /// The simulator configuration these options describe (demo credentials).
    pub fn to_config(&self) -> SimConfig {
        let base = match self.series {
            Some(target) => SimConfig::with_series(target),
            None => SimConfig {
                orgs: self.orgs,
                projects_per_org: self.projects,
                clusters_per_project: self.clusters,
                ..SimConfig::default()
            },
        };
        SimConfig {
            seed: self.seed,
            months: self.months,
            polls_before_ready: self.polls_before_ready,
            not_ready: match self.not_ready {
                NotReadyArg::Envelope => NotReady::Envelope,
                NotReadyArg::Timeout => NotReady::Timeout(self.not_ready_delay),
                NotReadyArg::Close => NotReady::Close,
            },
            ignore_envelope: self.ignore_envelope,
            max_page_size: self.max_page_size.max(1),
            flex_clusters: !self.no_flex_clusters,
            flex_in_clusters_listing: self.flex_in_clusters_listing,
            deleted_clusters: !self.no_deleted_clusters,
            deleted_projects: !self.no_deleted_projects,
            tags: !self.no_tags,
            row_keys: self.row_keys,
            csv_layout: self.csv_layout,
            ..base
        }
    }

    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
}
