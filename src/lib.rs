//! # atlas-cost-exporter
//!
//! A Prometheus exporter for the MongoDB Atlas Cost Explorer. Data flows one way:
//!
//! Atlas -> [`atlas`] (client) -> [`refresher`] -> [`snapshot`] -> [`exposition`] -> [`server`]
//!
//! The modules, in layers from the bottom up; a module imports only modules below it.
//!
//! **Model** (imports nothing of the crate)
//! - [`model`]: the domain vocabulary: ids, groupings, credentials, endpoints, failure reasons,
//!   shards.
//! - [`month`]: UTC calendar months.
//! - [`invoice`]: the invoices' line items, typed and exact, and the pure function that makes
//!   them SKU series (imports only [`model`] and [`month`]).
//! - [`version`]: build information (version, git revision, rustc version).
//! - [`series`]: the cost series, typed: the label set, a series' label values, its month and
//!   amount (imports only [`model`] and [`month`]); rendered as text only by [`exposition`].
//!
//! **Client**
//! - [`metrics`]: the exporter's own counters and histograms.
//! - [`atlas`]: the Atlas client, one job per submodule: `error` (the client's errors and the
//!   reason each is counted under), `gate` (rate limits and `Retry-After`), `auth` (the
//!   Digest and Basic headers), `session` (OAuth tokens and Digest state), `request` (one
//!   request: credentials, gate, size cap, self metrics, retries), `discovery` (project and
//!   cluster listings), `usage` (create a Cost Explorer query, then poll until it is ready),
//!   [`atlas::result`] (JSON and CSV results into rows), [`atlas::invoices`] (the pending and
//!   closed invoices and their line items); `fuzzing` (hidden) reaches the
//!   private parsers for the fuzz targets in `fuzz/`, as `config::fuzz_file` and
//!   `web_config::fuzz_basic_credentials` do theirs.
//! - [`fleet`]: many orgs and replicas: sharding, refresh phases, shared OAuth tokens.
//!
//! **Series**
//! - [`controls`]: per-query cardinality controls (allow/deny, minimum, top N, series limit)
//!   that judge every month of a query at once (the open month by its forecast) and fold
//!   series into `(other)` with exact totals.
//! - [`remainder`]: the `(unattributed)` series that make the `projects` and `clusters`
//!   queries add up to the org's total.
//!
//! **Publishing**
//! - [`snapshot`]: the immutable published state a scrape reads.
//! - [`exposition`]: text 0.0.4 and OpenMetrics: the text writers (escaping), the cost series
//!   encoded once per refresh, the invoice source's families, the layout of the published
//!   families (their order, in one place), the per-scrape render with format negotiation and
//!   gzip.
//! - [`chart`]: the landing page's chart of each org's monthly spend, stacked by service, an
//!   inline SVG built once per published refresh (imports only [`month`]).
//! - [`budget`]: month-end forecasts and budgets, encoded with the cost series when a refresh
//!   is published; the landing page's org summaries and their charts.
//!
//! **State** (`--storage.path`)
//! - [`state`]: what a restart must not lose, one file per org (the Cost Explorer queries and
//!   the invoice source): the kept types, the file format (`codec`: magic, version, CRC-32,
//!   postcard, an invoice section of its own) and the directory (`store`: 0700, locked,
//!   atomic writes, bad files set aside).
//!
//! **Refresher**
//! - [`refresher`]: runs each org's sources on an interval and publishes each refresh whole;
//!   its submodules: `source` (the sources behind one interface: the Cost Explorer queries
//!   and the invoices, each timed and recorded alike), `cost_explorer` (the Cost Explorer
//!   source: `discovery`, the ids each query needs; `collect`, one query's refresh;
//!   `month_cache`, closed months kept across refreshes; `aggregate`, rows, discovery and
//!   controls into series, a pure function; `roles`, which queries get remainders, deriving
//!   them and running the controls of a query that has them), `invoices` (the invoice
//!   source), `slot` (a query's last good data and its encoded lines), `publish` (the
//!   snapshot), `persist` (the state written after each publication and served after a
//!   restart), `http_client` (the shared client).
//!
//! **Serving**
//! - [`web_config`]: TLS and basic auth for the exporter's own endpoints (`--web.config.file`).
//! - [`server`]: `/metrics`, the landing page, `/healthz`, `/readyz`.
//!
//! **Configuration** (read once, at start-up)
//! - [`cli`]: the command line as typed: the flags (each with an environment variable) and
//!   the `simulate` and `check-config` subcommands' arguments.
//! - [`config`]: flags, environment and the YAML file validated into a [`config::Config`].
//! - [`check_config`]: `check-config`, the start-up's validation run alone, and a report of
//!   what would run.
//! - this file: [`run`] (the state directory opened, its kept data served, the refresher in
//!   the background, the server in the foreground) and
//!   `--demo`'s set-up; `main.rs`: parse, validate, set up logging, run.
//!
//! Beside the layers, [`simulator`]: a built-in Atlas API simulator for `--demo`, tests and
//! benchmarks (its data, auth and API handlers in submodules). Only this file and `main.rs`
//! import it.

pub mod atlas;
pub mod budget;
pub mod chart;
pub mod check_config;
pub mod cli;
pub mod config;
pub mod controls;
pub mod exposition;
pub mod fleet;
pub mod invoice;
pub mod metrics;
pub mod model;
pub mod month;
pub mod refresher;
pub mod remainder;
pub mod series;
pub mod server;
pub mod simulator;
pub mod snapshot;
pub mod state;
#[cfg(test)]
mod testing;
pub mod version;
pub mod web_config;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, Credentials, QuerySpec, Secret};
use crate::metrics::SelfMetrics;
use crate::refresher::{Refresher, human_interval};
use crate::server::AppState;
use crate::snapshot::SnapshotCell;

/// Errors that stop the exporter.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Atlas client could not be set up.
    #[error(transparent)]
    Atlas(#[from] atlas::AtlasError),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    /// The state directory (`--storage.path`) cannot be used: a configuration mistake
    /// (exit code 2).
    #[error(transparent)]
    State(#[from] state::StateError),
}

/// Opens and locks the state directory of `config`, when it has one (`--storage.path`).
///
/// # Errors
/// One line naming the directory: it cannot be created, is locked by another process, or is
/// not writable.
pub fn open_store(config: &Config) -> Result<Option<Arc<state::Store>>, state::StateError> {
    match &config.storage_path {
        Some(dir) => state::Store::open(dir).map(|s| Some(Arc::new(s))),
        None => Ok(None),
    }
}

/// Runs the exporter on `listener` until `shutdown` completes: the refresher in the
/// background, the HTTP server in the foreground. The state directory of `config`, if any,
/// is opened first ([`open_store`]).
///
/// # Errors
/// When the state directory cannot be used, the Atlas client cannot be built or the server
/// fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let store = open_store(&config)?;
    run_with_store(config, store, listener, shutdown).await
}

/// [`run`] with the state directory already opened (the binary locks it before it binds its
/// port): its kept state is served before the first request is answered, and each org's
/// state is written there after every publication of its refresh.
///
/// # Errors
/// When the Atlas client cannot be built or the server fails.
pub async fn run_with_store(
    config: Config,
    store: Option<Arc<state::Store>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let mut metrics = SelfMetrics::new(&human_interval(config.refresh_interval));
    if store.is_some() {
        metrics.enable_state();
    }
    let metrics = Arc::new(metrics);
    let cell = Arc::new(SnapshotCell::default());
    let mut refresher = Refresher::new(&config, metrics.clone(), cell.clone())?;
    if let Some(store) = store {
        let org_ids: Vec<String> = config.orgs.iter().map(|o| o.id.clone()).collect();
        let tags = config.tag_labels.clone();
        let reading = store.clone();
        // Reading and decoding is file I/O and CPU: off the async threads.
        let loaded = tokio::task::spawn_blocking(move || reading.load(&org_ids, &tags))
            .await
            .unwrap_or_default();
        let restored = refresher.restore(loaded);
        tracing::info!(
            dir = %store.dir().display(),
            orgs = restored.orgs,
            queries = restored.queries,
            series = restored.series,
            closed_months = restored.closed_months,
            invoice_orgs = restored.invoice_orgs,
            sku_series = restored.sku_series,
            "state directory open"
        );
        refresher = refresher.with_store(store);
    }
    let (cancel, cancelled) = tokio::sync::watch::channel(false);
    let refresh_task = tokio::spawn(refresher.run(cancelled));
    let app = server::router(Arc::new(AppState {
        cell,
        metrics,
        telemetry_path: config.telemetry_path.clone(),
        clock: config.clock.clone(),
        scrapes: exposition::ScrapeCache::default(),
    }));
    let web = config.web.as_deref();
    let app = match web.and_then(web_config::WebConfig::basic_auth) {
        Some(auth) => app.layer(axum::middleware::from_fn_with_state(
            auth,
            web_config::require_basic_auth,
        )),
        None => app,
    };
    let tls = web.and_then(web_config::WebConfig::tls);
    tracing::info!(
        address = %listener.local_addr()?,
        orgs = config.orgs.len(),
        tls = tls.is_some(),
        basic_auth = web.is_some_and(|w| w.basic_auth().is_some()),
        "listening"
    );
    let served = match tls {
        Some(tls) => {
            axum::serve(web_config::TlsListener::new(listener, tls), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    let _ = cancel.send(true);
    let _ = refresh_task.await;
    served.map_err(RunError::Io)
}

/// Starts the built-in simulator on a loopback port and rewrites `config` to export its
/// orgs that `shard` owns (`--shard.count`/`--shard.index` split the demo's orgs as they
/// split real ones), with its demo credentials. Returns the simulator's address.
///
/// # Errors
/// When no loopback port can be bound.
pub async fn start_demo(
    config: &mut Config,
    months: u32,
    shard: &fleet::Shard,
) -> std::io::Result<std::net::SocketAddr> {
    // The invoices carry their resources' tags in the demo, as the spec's map of lists.
    let sim = simulator::Simulator::new(simulator::SimConfig {
        invoices: simulator::InvoiceVariants {
            tags: true,
            ..simulator::InvoiceVariants::default()
        },
        ..simulator::SimConfig::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let creds = simulator::SimCredentials::demo();
    let dataset = sim.dataset();
    tokio::spawn(sim.serve(listener, std::future::pending()));
    config.base_url = format!("http://{addr}");
    config.orgs = dataset
        .orgs
        .iter()
        .filter(|o| shard.owns(&o.id))
        .map(|o| config::OrgConfig {
            id: o.id.clone(),
            credentials: Credentials::ServiceAccount {
                client_id: creds.client_id.clone(),
                client_secret: Secret::new(creds.client_secret.clone()),
            },
            queries: QuerySpec::defaults(months),
            // The demo shows the invoice source's SKU series from the first minute.
            invoices: true,
        })
        .collect();
    // The simulator answers within a few polls: poll fast so the demo fills in seconds.
    config.poll_interval = config
        .poll_interval
        .min(std::time::Duration::from_millis(250));
    Ok(addr)
}

/// The sample budget `--demo` runs with when no `--config.file` is given, so the budget gauges,
/// panels and alerts have something to show from the first minutes. The demo's orgs together
/// spend about 32,000 USD a month on `Clusters`, over this amount: the forecast is over it all
/// month (`AtlasCostBudgetForecastExceeded` fires), and the month to date passes it in the last
/// week (`AtlasCostBudgetExceeded` fires instead). An explicit `--config.file`'s budgets replace
/// it.
pub const DEMO_BUDGETS: &str = "\
- name: demo-clusters
  amount_usd: 25000
  scope:
    atlas_service: Clusters
";

/// [`DEMO_BUDGETS`], validated against the demo's `orgs`; none when this shard holds no org.
pub fn demo_budgets(orgs: &[config::OrgConfig]) -> Vec<budget::Budget> {
    let file: Vec<budget::FileBudget> = serde_norway::from_str(DEMO_BUDGETS).unwrap_or_default();
    // The constant is valid for any org with the default queries (a test checks it); only a
    // shard without orgs has no `services` query for it to read.
    config::validate_budgets(file, orgs, &series::TagLabels::default()).unwrap_or_default()
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample budget of `--demo` is valid for an org with the default queries, and reads
    /// its `services` query; a shard without orgs gets none.
    #[test]
    fn demo_budget_is_valid_for_the_demo_orgs() {
        let org = config::OrgConfig {
            id: "000000000000000000000001".to_owned(),
            credentials: Credentials::ServiceAccount {
                client_id: "demo".to_owned(),
                client_secret: Secret::new("demo"),
            },
            queries: QuerySpec::defaults(1),
            invoices: false,
        };
        let budgets = demo_budgets(std::slice::from_ref(&org));
        assert_eq!(budgets.len(), 1);
        assert_eq!(budgets[0].name, "demo-clusters");
        assert_eq!(budgets[0].query, "services");
        assert!(demo_budgets(&[]).is_empty());
    }
}
