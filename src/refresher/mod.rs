//! The refresher: runs every query on the interval, keeps the last good data of each, and
//! publishes each refresh whole as a new [`Snapshot`](crate::snapshot::Snapshot).
//!
//! Months older than the previous one are closed: Atlas no longer changes them, so they are
//! kept in a per-month cache (a day after each was read; across restarts with
//! `--storage.path`) and only the current and previous months are read on every refresh.
//! Each query still costs at most one create per refresh.
//!
//! An org's refresh runs its sources (`source`: the Cost Explorer queries, and the invoices
//! when enabled), times each and records its status, and publishes the result whole.
//!
//! This module schedules the refreshes and publishes them; each step has its own module:
//! - `source`: the sources behind one interface, and what the refresher records of each;
//! - `cost_explorer`: the Cost Explorer source (discovery, each query's refresh, the closed
//!   months' cache, the aggregation, the remainders' roles);
//! - `invoices`: the invoice source;
//! - `slot`: a query's last good data and its encoded lines;
//! - `publish`: every query's last good data into one snapshot;
//! - `persist`: that data kept in `--storage.path` after each publication, and served again
//!   after a restart;
//! - `http_client`: the HTTP client every org's Atlas client shares.

mod cost_explorer;
mod http_client;
mod invoices;
mod persist;
mod publish;
mod slot;
mod source;

pub use self::persist::Restored;
pub use crate::exposition::human_interval;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};

use self::cost_explorer::{KnownIds, MonthCache, QueryKey, Role};
use self::persist::kept_invoices;
use self::slot::Slot;
use self::source::{Context, Refreshed, Source};
use crate::atlas::{AtlasClient, AtlasError, ClientSettings};
use crate::budget::Budget;
use crate::config::{Clock, Config, OrgConfig};
use crate::exposition::invoices::InvoicePieces;
use crate::invoice::{InvoiceData, SkuControls};
use crate::metrics::SelfMetrics;
use crate::month::Month;
use crate::series::TagLabels;
use crate::snapshot::{QueryStatus, SnapshotCell, SourceStatus};
use crate::state::Store;

/// How long a closed month stays cached before it is read again.
const CLOSED_MONTH_TTL: Duration = Duration::from_secs(24 * 3600);

/// One org: its configuration, its client, and what its refreshes remember.
struct OrgWorker {
    config: OrgConfig,
    /// Its position in the configuration (and in [`Published::orgs`]).
    index: usize,
    /// The sources its refresh runs.
    sources: Vec<Source>,
    /// The closed invoice's items of the previous month, once read.
    closed: std::sync::Mutex<invoices::ClosedItems>,
    /// [`crate::state::invoice_fingerprint`] of the org's invoice configuration: the invoice
    /// state kept under another one is not used.
    invoice_fingerprint: u64,
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
    /// Each query's key in the month cache and the state file.
    keys: Vec<QueryKey>,
    /// Bytes of the org's state file as last written or read.
    state_bytes: AtomicU64,
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
    /// Where each org's state is kept after its publications (`--storage.path`).
    store: Option<Arc<Store>>,
    /// Every org of the configuration, on any shard, whose invoice source runs
    /// ([`Config::invoice_reporters`]): a paying org's source leaves out the linked invoices of
    /// these, which their own sources report.
    invoice_reporters: BTreeSet<String>,
    /// The SKU series' controls.
    sku_controls: SkuControls,
}

/// What an org's sources published besides the query slots.
struct OrgPublished {
    /// The Cost Explorer source's status.
    cost_explorer: SourceStatus,
    /// The invoice source's, when it runs.
    invoices: Option<InvoiceSlot>,
}

/// The invoice source's last good data and its encoded lines.
struct InvoiceSlot {
    status: SourceStatus,
    data: Option<Arc<InvoiceData>>,
    /// Encoded at the first publication after the org's refresh (the reconciliation reads
    /// the org's Cost Explorer data of that publication).
    text: Option<Arc<InvoicePieces>>,
}

/// The last good data of every query, and the count of publications.
struct Published {
    slots: Vec<Slot>,
    /// One per org, in configuration order.
    orgs: Vec<OrgPublished>,
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
        let mut org_published = Vec::with_capacity(config.orgs.len());
        let invoice_reporters = config.invoice_reporters();
        if config.orgs.iter().any(|o| o.invoices) {
            metrics.init_invoice_endpoints();
        }
        for (index, org) in config.orgs.iter().enumerate() {
            let sources = Source::of(org);
            for source in &sources {
                metrics.init_source(source.name(), &org.id);
            }
            org_published.push(OrgPublished {
                cost_explorer: SourceStatus::pending(Source::CostExplorer.name(), &org.id),
                invoices: org.invoices.then(|| InvoiceSlot {
                    status: SourceStatus::pending(Source::Invoices.name(), &org.id),
                    data: None,
                    text: None,
                }),
            });
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
                    uncontrolled: None,
                    remainders_included: false,
                    text: None,
                    shed: 0,
                });
            }
            orgs.push(OrgWorker {
                config: org.clone(),
                index,
                sources,
                closed: std::sync::Mutex::default(),
                invoice_fingerprint: crate::state::invoice_fingerprint(
                    &org.id,
                    &config.sku_controls,
                    &invoice_reporters,
                ),
                slots: first_slot..slots.len(),
                client,
                forbidden_reported: AtomicBool::new(false),
                shed_reported: std::sync::Mutex::default(),
                dimension_reported: std::sync::Mutex::default(),
                known: std::sync::Mutex::default(),
                roles: org.queries.iter().map(Role::of).collect(),
                keys: org
                    .queries
                    .iter()
                    .map(|q| QueryKey::new(&org.id, q, &config.tag_labels))
                    .collect(),
                state_bytes: AtomicU64::new(0),
            });
        }
        let refresh_help = human_interval(config.refresh_interval);
        let refresher = Refresher {
            orgs,
            published: std::sync::Mutex::new(Published {
                slots,
                orgs: org_published,
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
            store: None,
            invoice_reporters,
            sku_controls: config.sku_controls.clone(),
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
        let (held, previous_invoices): (Vec<BTreeSet<Month>>, _) = {
            let published = self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                published.slots[org.slots.clone()]
                    .iter()
                    .map(Slot::held)
                    .collect(),
                published.orgs[org.index]
                    .invoices
                    .as_ref()
                    .and_then(|s| s.data.clone()),
            )
        };
        let ctx = Context {
            now,
            held: &held,
            previous_invoices,
        };
        // Every source of the org at once, each timed by the refresher, not by itself.
        let refreshed = futures_util::future::join_all(
            org.sources.iter().map(|s| self.run_source(*s, org, &ctx)),
        )
        .await;
        let finished = (self.clock)();
        let mut outcomes = Vec::new();
        let mut invoice_outcome = None;
        // std Mutex: held to update the slots and build the snapshot, never across an await
        // (a block, so the future holds no guard at the write's await).
        let (up, kept) = {
            let mut published = self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let org_published = &mut published.orgs[org.index];
            for (refreshed, took) in refreshed {
                match refreshed {
                    Refreshed::CostExplorer(_) => {
                        source::record(
                            &mut org_published.cost_explorer,
                            &refreshed,
                            took,
                            finished,
                            &self.metrics,
                        );
                        if let Refreshed::CostExplorer(o) = refreshed {
                            outcomes = o;
                        }
                    }
                    Refreshed::Invoices(_) => {
                        if let Some(slot) = org_published.invoices.as_mut() {
                            source::record(
                                &mut slot.status,
                                &refreshed,
                                took,
                                finished,
                                &self.metrics,
                            );
                        }
                        if let Refreshed::Invoices(o) = refreshed {
                            invoice_outcome = Some(o);
                        }
                    }
                }
            }
            if let Some(slot) = org_published.invoices.as_mut() {
                slot.record(&org.config.id, invoice_outcome);
            }
            let up = self.record_queries(
                org,
                &mut published.slots[org.slots.clone()],
                outcomes,
                finished,
            );
            published.generation += 1;
            self.publish(&mut published);
            // Arcs of what was just published, taken under the lock; encoded and written after.
            let kept = self.store.is_some().then(|| {
                (
                    self.kept_queries(org, &published.slots[org.slots.clone()], finished),
                    kept_invoices(org, published.orgs[org.index].invoices.as_ref(), finished),
                )
            });
            (up, kept)
        };
        tracing::info!(
            org_id = %org.config.id,
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            up,
            queries = org.slots.len(),
            "refresh published"
        );
        if let Some((queries, invoices)) = kept {
            self.persist(org, queries, invoices, finished).await;
        }
    }
}
