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
//! - project, cluster and Flex cluster discovery, paginated, with `tags`;
//! - the pending invoices, the closed invoices and their `lineItems:search` (issue 22): the
//!   same charges as the Cost Explorer records, split per SKU and day, with the variants of
//!   [`InvoiceVariants`] (a single invoice object, multi-day items, no `clusterName`, `tags`
//!   as the spec's map of lists, linked orgs' invoices).
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
//! - `flex_in_clusters_listing`: Flex clusters in `/clusters` too, as before January 2026;
//! - Digest nonces (RFC 7616, `nc` replays refused) that expire (`nonce_ttl`), go stale after
//!   K answers (`nonce_stale_after`), are forgotten after K answers
//!   (`nonce_forgotten_after`, then met with `stale=true` or, with `unknown_nonce_stale`
//!   off, a plain fresh challenge), or are called stale now and then anyway
//!   (`spurious_stale_every`); each challenge with a nonce of its own, or all with the
//!   server's current one (`shared_nonce`).
//!
//! The data ([`Dataset`]) is generated from a seed; [`Simulator::set_amount_scale`],
//! [`Simulator::delete_cluster`] and [`Simulator::delete_project`] swap in a changed copy
//! atomically. The `Dataset` helpers (`total_cents`, `cluster_cents`, `unlisted_cents`, ...)
//! give exact expected totals. Faults can be injected per endpoint ([`Simulator::fail`]).
//!
//! This module holds the [`Simulator`] handle: its shared state and how tests steer it
//! (faults, data changes, timing). Submodules: `config` (what shapes it), `data` (the
//! generated account and its exact totals), `auth` (OAuth and Digest), `api` (the routes and
//! handlers).

mod api;
mod auth;
mod config;
mod data;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use api::{CSV_HEADER, FLEX_TYPE, LINE_ITEMS_TYPE, SPEC_CSV_HEADER, invoice_id, sku_name};
pub use auth::DigestCounts;
pub use config::{
    ClosedDescription, CsvLayout, InvoiceShape, InvoiceVariants, NotReady, RowKeys, SimConfig,
    SimCredentials,
};
pub use data::{
    CLUSTER_SERVICES, ClusterKind, Dataset, GroupBy, SimCluster, SimItem, SimOrg, SimProject,
    SimTag, UsageRecord, cluster_tags, flex_tags, project_tags,
};

use crate::month::Month;

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
    /// `GET /api/atlas/v2/orgs/{orgId}/invoices/pending`.
    PendingInvoices,
    /// `GET /api/atlas/v2/orgs/{orgId}/invoices`.
    Invoices,
    /// `GET /api/atlas/v2/orgs/{orgId}/invoices/{invoiceId}/lineItems:search`.
    LineItems,
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
            SimEndpoint::PendingInvoices => 6,
            SimEndpoint::Invoices => 7,
            SimEndpoint::LineItems => 8,
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

/// A Cost Explorer query the simulator accepted (created), with the months it asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedQuery {
    /// The org it was created in.
    pub org_id: String,
    /// Its `groupBy` (no `groupBy` is [`GroupBy::Services`]).
    pub group_by: GroupBy,
    /// `startDate`: its first month.
    pub start: Month,
    /// `endDate`: the month after its last.
    pub end: Month,
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
    /// The queries created, with their months (the last 100,000).
    created: Mutex<std::collections::VecDeque<CreatedQuery>>,
    polls_before_ready: std::sync::atomic::AtomicU32,
    counts: [AtomicU64; 9],
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
        let mut base = Dataset::generate(&config, current);
        base.prorate(current, posted_days(&config, current, SystemTime::now()));
        let base = Arc::new(base);
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
                created: Mutex::new(std::collections::VecDeque::new()),
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

    /// The day of the current month the invoices are posted up to (exclusive):
    /// [`InvoiceVariants::today`], else the clock's day in the clock's month, else the day
    /// after the month's last (the whole month posted).
    pub fn today(&self) -> u32 {
        today(&self.inner.config, self.inner.current, SystemTime::now())
    }

    /// The days of the current month whose charges are posted (through yesterday, at least
    /// one): the current month's amounts and the pending invoice's items cover these.
    pub fn posted_days(&self) -> u32 {
        posted_days(&self.inner.config, self.inner.current, SystemTime::now())
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

    /// Every query created so far (the last 100,000), oldest first, with the months it asked
    /// for: which months a client read again.
    pub fn created_queries(&self) -> Vec<CreatedQuery> {
        self.inner
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn log_created(&self, query: CreatedQuery) {
        let mut created = self.inner.created.lock().unwrap_or_else(|e| e.into_inner());
        if created.len() >= LOG_LIMIT {
            created.pop_front();
        }
        created.push_back(query);
    }

    /// The OAuth tokens and Digest nonces this simulator has issued and still knows: what a
    /// test searches for where none may be.
    pub fn issued_credentials(&self) -> Vec<String> {
        self.inner.auth.issued()
    }

    /// Forgets every Digest nonce issued so far, as a restart or another node behind a load
    /// balancer would: the next answer over an old nonce is challenged again (with
    /// `stale=false` when [`SimConfig::unknown_nonce_stale`] is off).
    pub fn forget_nonces(&self) {
        self.inner.auth.forget_nonces();
    }

    /// Refuses the API key from now on (a plain fresh challenge, `stale=false`), as deleting
    /// it in Atlas would.
    pub fn revoke_api_key(&self) {
        self.inner.auth.revoke_api_key();
    }

    /// How the Digest answers were met so far: let in, refused with a plain challenge, or
    /// refused as stale.
    pub fn digest_counts(&self) -> DigestCounts {
        self.inner.auth.digest_counts()
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

/// The day of `current` the data is posted up to (exclusive) at `now`: the invoice
/// variants' `today`, else the clock's day when `now` is in `current`, else the day after
/// its last (the whole month posted).
fn today(config: &SimConfig, current: Month, now: SystemTime) -> u32 {
    if let Some(day) = config.invoices.today {
        return day.clamp(1, current.days() + 1);
    }
    if Month::containing(now) == current {
        crate::month::day_of_month(now)
    } else {
        current.days() + 1
    }
}

/// The days of `current` whose charges are posted at `now`: through yesterday, at least one
/// (as the pending invoice's items; on the 1st the month shows one day).
fn posted_days(config: &SimConfig, current: Month, now: SystemTime) -> u32 {
    today(config, current, now)
        .saturating_sub(1)
        .clamp(1, current.days())
}
