//! Shared harness of the integration tests: the real simulator and the real exporter, each on
//! a loopback port, talking HTTP; scrapes read back with real parsers (the official Python
//! client's, and promtool).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use atlas_cost_exporter::config::{Config, Credentials, GroupBy, OrgConfig, QuerySpec, Secret};
use atlas_cost_exporter::month::Month;
use atlas_cost_exporter::simulator::{Fault, SimConfig, SimCredentials, SimEndpoint, Simulator};
use tokio::sync::oneshot;

mod launch;
// Some test binaries start no exporter.
#[allow(unused_imports)]
pub use launch::*;

/// A simulator serving on a loopback port until dropped.
pub struct Sim {
    pub sim: Simulator,
    pub url: String,
    _stop: oneshot::Sender<()>,
}

pub async fn start_sim(config: SimConfig) -> Sim {
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sim.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    Sim {
        sim,
        url,
        _stop: stop,
    }
}

impl Sim {
    /// The id of the simulator's org number `i` (most tests have one, number 0).
    pub fn org(&self, i: usize) -> String {
        self.sim.dataset().orgs[i].id.clone()
    }

    /// How many create requests for `org_id` the simulator has seen.
    pub fn creates_to(&self, org_id: &str) -> usize {
        self.sim
            .request_log()
            .iter()
            .filter(|r| r.endpoint == SimEndpoint::Create && r.org_id.as_deref() == Some(org_id))
            .count()
    }
}

pub fn service_account() -> Credentials {
    let c = SimCredentials::demo();
    Credentials::ServiceAccount {
        client_id: c.client_id,
        client_secret: Secret::new(c.client_secret),
    }
}

pub fn api_key() -> Credentials {
    let c = SimCredentials::demo();
    Credentials::ApiKey {
        public_key: c.public_key,
        private_key: Secret::new(c.private_key),
    }
}

/// The demo API key's public half with a private key that is not its own.
pub fn wrong_api_key() -> Credentials {
    Credentials::ApiKey {
        public_key: "demopublic".to_owned(),
        private_key: Secret::new("not-the-key"),
    }
}

/// The ungrouped `services` query over the current month.
pub fn services() -> QuerySpec {
    query("services", GroupBy::Ungrouped, 1)
}

/// A query named `name` grouped by `group_by` over `months`, otherwise as the library's
/// default queries are: JSON, no filters, no controls.
pub fn query(name: &str, group_by: GroupBy, months: u32) -> QuerySpec {
    QuerySpec {
        name: name.to_owned(),
        group_by,
        ..QuerySpec::defaults(months).swap_remove(0)
    }
}

/// A configuration that refreshes often and gives up fast, so faults and recoveries show
/// within seconds.
pub fn fast(url: &str, orgs: Vec<OrgConfig>) -> Config {
    let mut c = config(url, orgs);
    c.refresh_interval = Duration::from_millis(300);
    c.request_timeout = Duration::from_secs(1);
    c.query_timeout = Duration::from_secs(5);
    c
}

/// Every org of the simulator, with the given credentials and queries.
pub fn orgs(sim: &Simulator, credentials: &Credentials, queries: &[QuerySpec]) -> Vec<OrgConfig> {
    sim.dataset()
        .orgs
        .iter()
        .map(|o| OrgConfig {
            id: o.id.clone(),
            credentials: credentials.clone(),
            queries: queries.to_vec(),
            invoices: false,
        })
        .collect()
}

/// A configuration for tests: fast polls, short timeouts, a generous request budget.
pub fn config(base_url: &str, orgs: Vec<OrgConfig>) -> Config {
    Config::builder(base_url)
        .orgs(orgs)
        .listen("127.0.0.1:0".parse().unwrap())
        .request_timeout(Duration::from_secs(5))
        .query_timeout(Duration::from_secs(60))
        .poll_interval(Duration::from_millis(20))
        .requests_per_minute(60_000)
        .build()
}

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn temp_dir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "atlas-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The exporter, serving on a loopback port until stopped or dropped.
pub struct Exporter {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), atlas_cost_exporter::RunError>>>,
}

impl Exporter {
    pub async fn start(config: Config) -> Exporter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(atlas_cost_exporter::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Exporter {
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// An exporter already serving at `addr` (the binary, say), to scrape and wait on;
    /// [`Exporter::stop`] leaves it running.
    pub fn at(addr: SocketAddr) -> Exporter {
        Exporter {
            addr,
            http: reqwest::Client::new(),
            stop: None,
            task: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// Waits for `/readyz` (bounded, so a broken exporter fails the test instead of hanging),
    /// through refused connections while a process starts.
    pub async fn wait_ready(&self) {
        for _ in 0..1200 {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "exporter not ready; last scrape:\n{}",
            self.scrape_text().await
        );
    }

    pub async fn scrape_text(&self) -> String {
        self.get("/metrics", &[]).await.text().await.unwrap()
    }

    /// The exposition in OpenMetrics, as Prometheus asks for it.
    pub async fn scrape_openmetrics(&self) -> String {
        self.get("/metrics", &[("Accept", OPENMETRICS)])
            .await
            .text()
            .await
            .unwrap()
    }

    pub async fn samples(&self) -> Samples {
        Samples(parse(&self.scrape_text().await, "text"))
    }

    /// Scrapes until `cond` holds (bounded).
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Samples) -> bool) -> Samples {
        for _ in 0..1200 {
            let s = self.samples().await;
            if cond(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never saw: {what}\n{}", self.scrape_text().await);
    }

    /// Scrapes until the `reason` error counter of `query` and `org_id` reaches `at_least`
    /// (bounded).
    pub async fn wait_for_errors(
        &self,
        query: &str,
        org_id: &str,
        reason: &str,
        at_least: f64,
    ) -> Samples {
        self.wait_for(&format!("{at_least} {reason} errors of {query}"), |s| {
            s.errors(query, org_id, reason) >= at_least
        })
        .await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: Option<f64>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Parses an exposition with the official Python client's parser (`format`: `text` or
/// `openmetrics`). Panics with the parser's message when the body does not parse.
pub fn parse(body: &str, format: &str) -> Vec<Sample> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parse_exposition.py");
    let out = pipe(
        Command::new("python3").arg(script).arg(format),
        body,
        "python3 runs (and `pip install prometheus-client` for the parser)",
    );
    assert!(
        out.status.success(),
        "the exposition does not parse as {format}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        &body[..body.len().min(2000)]
    );
    #[derive(serde::Deserialize)]
    struct Raw {
        name: String,
        labels: BTreeMap<String, String>,
        value: Option<f64>,
    }
    let raw: Vec<Raw> = serde_json::from_slice(&out.stdout).unwrap();
    raw.into_iter()
        .map(|r| Sample {
            name: r.name,
            labels: r.labels,
            value: r.value,
        })
        .collect()
}

/// Runs `promtool check metrics` on a text exposition and returns what it printed.
pub fn promtool_check(body: &str) -> String {
    let out = pipe(
        Command::new("promtool").args(["check", "metrics"]),
        body,
        "promtool runs (Debian package `prometheus`; .ci/run installs it)",
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `command` with `input` on its standard input and collects what it wrote; `missing`
/// says how to get the program when it does not start.
fn pipe(command: &mut Command, input: &str, missing: &str) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(missing);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Parsed samples with lookups.
#[derive(Clone, Debug)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// The value of the sample `name` whose labels include every pair of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.named(name)
            .find(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .and_then(|s| s.value)
    }

    /// Sum of a cost family for one query and org, in cents (exact for these values).
    pub fn total_cents(&self, name: &str, query: &str, org_id: &str) -> i64 {
        let sum: f64 = self
            .named(name)
            .filter(|s| s.label("query") == Some(query) && s.label("org_id") == Some(org_id))
            .map(|s| s.value.unwrap_or(f64::NAN))
            .sum();
        #[allow(clippy::cast_possible_truncation)]
        let cents = (sum * 100.0).round() as i64;
        cents
    }

    /// [`Samples::total_cents`] without the `(unattributed)` remainder series: what the
    /// query attributes to a project or cluster.
    pub fn attributed_cents(&self, name: &str, query: &str, org_id: &str) -> i64 {
        let sum: f64 = self
            .named(name)
            .filter(|s| s.label("query") == Some(query) && s.label("org_id") == Some(org_id))
            .filter(|s| !s.labels.values().any(|v| v == "(unattributed)"))
            .map(|s| s.value.unwrap_or(f64::NAN))
            .sum();
        #[allow(clippy::cast_possible_truncation)]
        let cents = (sum * 100.0).round() as i64;
        cents
    }

    pub fn up(&self, query: &str, org_id: &str) -> Option<f64> {
        self.value(
            "atlas_cost_query_up",
            &[("query", query), ("org_id", org_id)],
        )
    }

    pub fn last_success(&self, query: &str, org_id: &str) -> Option<f64> {
        self.value(
            "atlas_cost_query_last_success_timestamp_seconds",
            &[("query", query), ("org_id", org_id)],
        )
    }

    pub fn errors(&self, query: &str, org_id: &str, reason: &str) -> f64 {
        self.value(
            "atlas_cost_query_refresh_errors_total",
            &[("query", query), ("org_id", org_id), ("reason", reason)],
        )
        .unwrap_or(0.0)
    }

    /// Cost samples of a query, as `(labels, value)` without the query-independent parts.
    pub fn costs(&self, query: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
        self.named("atlas_cost_usage_usd")
            .filter(|s| s.label("query") == Some(query))
            .map(|s| (s.labels.clone(), s.value.unwrap_or(f64::NAN)))
            .collect()
    }
}

/// The media type of Atlas's JSON answers, for faults that replace a body.
pub const JSON: &str = "application/vnd.atlas.2023-01-01+json";

/// The media type of Atlas's CSV answers.
pub const CSV: &str = "application/vnd.atlas.2023-01-01+csv";

/// What `Accept` asks for OpenMetrics.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0";

/// A fault that answers with `body` as `content_type`, with `status`.
pub fn body_fault(status: u16, content_type: &str, body: &str) -> Fault {
    Fault::Body {
        status,
        content_type: content_type.to_owned(),
        body: body.to_owned(),
    }
}

/// Waits for three `rate_limited` refreshes of the `services` query of `org_id`, held by a
/// long `Retry-After`, and checks that the query is down and that only the create that met
/// the 429 reached Atlas (`creates_before` were sent before it); returns the last scrape.
pub async fn assert_held_by_retry_after(
    sim: &Sim,
    exporter: &Exporter,
    org_id: &str,
    creates_before: usize,
) -> Samples {
    let s = exporter
        .wait_for_errors("services", org_id, "rate_limited", 3.0)
        .await;
    assert_eq!(s.up("services", org_id), Some(0.0));
    assert_eq!(
        sim.creates_to(org_id),
        creates_before + 1,
        "only the create that met the 429"
    );
    s
}

/// A free loopback port: bound to 127.0.0.1:0, then released for a server to take.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process (the exporter's binary, say), killed and reaped when dropped, on success
/// and on panic alike.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A clock pinned to `t`.
pub fn fixed_clock(t: SystemTime) -> atlas_cost_exporter::config::Clock {
    std::sync::Arc::new(move || t)
}

/// The spend in [`start`, `end`) of the projects the projects listing returns: what a
/// `projects` query attributes to a project.
pub fn listed_project_cents(
    data: &atlas_cost_exporter::simulator::Dataset,
    org_id: &str,
    start: Month,
    end: Month,
) -> i64 {
    data.sum_cents(
        org_id,
        start,
        end,
        |r| matches!(data.place(r), (Some(p), _) if !p.is_deleted()),
    )
}

/// The spend in [`start`, `end`) of the clusters the listings return (Flex clusters and
/// clusters deleted with retained backups included): what a `clusters` query attributes to
/// a cluster.
pub fn listed_cluster_cents(
    data: &atlas_cost_exporter::simulator::Dataset,
    org_id: &str,
    start: Month,
    end: Month,
) -> i64 {
    data.sum_cents(org_id, start, end, |r| {
        matches!(data.place(r), (Some(p), Some(c)) if !p.is_deleted()
            && (c.in_clusters_listing(true) || c.in_flex_listing()))
    })
}

/// The window `[start, end)` of a query of `months` months at `current`.
pub fn window(current: Month, months: u32) -> (Month, Month) {
    (current.plus(-i64::from(months - 1)), current.plus(1))
}

/// The configuration `--config.file` at `path` gives, with a service account from the
/// environment.
pub fn config_from_file(
    path: &std::path::Path,
    client_id: &str,
    client_secret: &str,
) -> Result<Config, atlas_cost_exporter::config::ConfigError> {
    let flags = <atlas_cost_exporter::cli::Cli as clap::Parser>::try_parse_from([
        "atlas-cost-exporter",
        "--config.file",
        path.to_str().unwrap(),
    ])
    .unwrap()
    .flags;
    let env = std::collections::HashMap::from([
        ("MONGODB_ATLAS_CLIENT_ID", client_id),
        ("MONGODB_ATLAS_CLIENT_SECRET", client_secret),
    ]);
    Config::from_flags(&flags, &env)
}
