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
//!   [`atlas::result`] (JSON and CSV results into rows).
//! - [`fleet`]: many orgs and replicas: sharding, refresh phases, shared OAuth tokens.
//!
//! **Series**
//! - [`controls`]: per-query cardinality controls (allow/deny, minimum, top N, series limit)
//!   that fold series into `(other)` with exact totals.
//! - [`remainder`]: the `(unattributed)` series that make the `projects` and `clusters`
//!   queries add up to the org's total.
//!
//! **Publishing**
//! - [`snapshot`]: the immutable published state a scrape reads.
//! - [`exposition`]: text 0.0.4 and OpenMetrics: the text writers (escaping), the cost series
//!   encoded once per refresh, the per-scrape render with format negotiation and gzip.
//! - [`budget`]: month-end forecasts and budgets, encoded with the cost series when a refresh
//!   is published.
//!
//! **Refresher**
//! - [`refresher`]: runs the queries on an interval and publishes each refresh whole; its
//!   submodules: `discovery` (the ids each query needs), `month_cache` (closed months, kept
//!   across refreshes), `aggregate` (rows, discovery and controls into series, a pure
//!   function), `roles` (which queries get remainders), `http_client` (the shared client).
//!
//! **Serving**
//! - [`web_config`]: TLS and basic auth for the exporter's own endpoints (`--web.config.file`).
//! - [`server`]: `/metrics`, the landing page, `/healthz`, `/readyz`.
//!
//! **Configuration** (read once, at start-up)
//! - [`cli`]: the command line as typed: the flags (each with an environment variable) and
//!   the `simulate` subcommand's arguments.
//! - [`config`]: flags, environment and the YAML file validated into a [`config::Config`].
//! - this file: [`run`] (the refresher in the background, the server in the foreground) and
//!   `--demo`'s set-up; `main.rs`: parse, validate, set up logging, run.
//!
//! Beside the layers, [`simulator`]: a built-in Atlas API simulator for `--demo`, tests and
//! benchmarks (its data, auth and API handlers in submodules). Only this file and `main.rs`
//! import it.

pub mod atlas;
pub mod budget;
pub mod cli;
pub mod config;
pub mod controls;
pub mod exposition;
pub mod fleet;
pub mod metrics;
pub mod model;
pub mod month;
pub mod refresher;
pub mod remainder;
pub mod series;
pub mod server;
pub mod simulator;
pub mod snapshot;
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
}

/// Runs the exporter on `listener` until `shutdown` completes: the refresher in the
/// background, the HTTP server in the foreground.
///
/// # Errors
/// When the Atlas client cannot be built or the server fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Arc::new(SelfMetrics::new(&human_interval(config.refresh_interval)));
    let cell = Arc::new(SnapshotCell::default());
    let refresher = Refresher::new(&config, metrics.clone(), cell.clone())?;
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
    let sim = simulator::Simulator::new(simulator::SimConfig::default());
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
        })
        .collect();
    // The simulator answers within a few polls: poll fast so the demo fills in seconds.
    config.poll_interval = config
        .poll_interval
        .min(std::time::Duration::from_millis(250));
    Ok(addr)
}

/// The sample budget `--demo` runs with when no `--config.file` is given, so the budget gauges,
/// panels and alert have something to show from the first minutes. The demo's orgs together
/// spend about 32,000 USD a month on `Clusters`, over this amount: `AtlasCostBudgetExceeded`
/// fires. An explicit `--config.file`'s budgets replace it.
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
        };
        let budgets = demo_budgets(std::slice::from_ref(&org));
        assert_eq!(budgets.len(), 1);
        assert_eq!(budgets[0].name, "demo-clusters");
        assert_eq!(budgets[0].query, "services");
        assert!(demo_budgets(&[]).is_empty());
    }
}
