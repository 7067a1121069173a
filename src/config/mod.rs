//! Configuration: what the exporter runs with, validated once at start-up into a [`Config`]
//! built from the model's types.
//!
//! - [`crate::cli`]: the flags as typed (each with its environment variable);
//! - [`env`](mod@env): the credential variables, where variables come from, and secrets in files;
//! - `file`: the YAML file's schema (`--config.file`);
//! - `validate`: flags, environment and file into a [`Config`], each error one line naming
//!   the flag, variable or key;
//! - [`ConfigBuilder`]: a [`Config`] with the flags' defaults, for tests and embedding.
//!
//! Nothing that configuration builds on (the command line, model, budgets, controls, web
//! configuration) imports it back.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod env;
mod file;
mod validate;

pub use crate::model::{
    Clock, ConfigError, Credentials, GroupBy, ResultFormat, Secret, is_atlas_id, system_clock,
};
pub use env::{Env, ProcessEnv, credentials_from_env};
#[doc(hidden)]
pub use validate::fuzz_file;
pub use validate::{parse_base_url, parse_listen_address, shard, validate_budgets};

pub use crate::cli::{DEFAULT_BASE_URL, DEFAULT_LISTEN_ADDRESS, DEFAULT_REQUESTS_PER_MINUTE};

use crate::cli::DEFAULT_MONTHS;

/// How far back Atlas keeps Cost Explorer data.
pub const MAX_MONTHS: u32 = 18;

/// One named Cost Explorer query.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QuerySpec {
    /// The `query` label value.
    pub name: String,
    /// The grouping.
    pub group_by: GroupBy,
    /// Months to read back, the current month included.
    pub months: u32,
    /// JSON or CSV.
    pub format: ResultFormat,
    /// Project ids to filter on; empty means "discovered" when grouping by projects.
    pub projects: Vec<String>,
    /// Cluster unique ids to filter on; empty means "discovered" when grouping by clusters.
    pub clusters: Vec<String>,
    /// Service names to filter on (open strings).
    pub services: Vec<String>,
    /// Atlas's `includePartialMatches`.
    pub include_partial_matches: bool,
    /// Cardinality controls ([`crate::controls`]); the default keeps every series.
    pub controls: crate::controls::Controls,
}

impl QuerySpec {
    /// The three queries every org gets when the configuration names none.
    pub fn defaults(months: u32) -> Vec<QuerySpec> {
        [
            // No groupBy: a `services` groupBy needs a fixed services list, and a service Atlas
            // adds later would silently vanish from it.
            ("services", GroupBy::Ungrouped),
            ("projects", GroupBy::Projects),
            ("clusters", GroupBy::Clusters),
        ]
        .into_iter()
        .map(|(name, group_by)| QuerySpec {
            name: name.to_owned(),
            group_by,
            months,
            format: ResultFormat::Json,
            projects: Vec::new(),
            clusters: Vec::new(),
            services: Vec::new(),
            include_partial_matches: false,
            controls: crate::controls::Controls::default(),
        })
        .collect()
    }

    /// Whether this query needs the org's project (and maybe cluster) ids discovered.
    pub fn needs_discovery(&self) -> bool {
        match self.group_by {
            GroupBy::Projects => self.projects.is_empty(),
            GroupBy::Clusters => self.clusters.is_empty(),
            GroupBy::Ungrouped | GroupBy::Organizations | GroupBy::Services => false,
        }
    }
}

/// One Atlas organization to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgConfig {
    /// 24 lowercase hex characters.
    pub id: String,
    /// How to authenticate for this org.
    pub credentials: Credentials,
    /// Its queries.
    pub queries: Vec<QuerySpec>,
    /// Whether its invoice source runs (`--invoices.enabled`, or the org's `invoices:`).
    pub invoices: bool,
}

/// Validated configuration of the exporter.
#[derive(Clone)]
pub struct Config {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// Path of the metrics endpoint (starts with `/`).
    pub telemetry_path: String,
    /// Atlas base URL, without a trailing slash.
    pub base_url: String,
    /// The orgs and their queries.
    pub orgs: Vec<OrgConfig>,
    /// Time between refreshes.
    pub refresh_interval: Duration,
    /// Queries in flight at once, across orgs.
    pub concurrency: usize,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Deadline of one query.
    pub query_timeout: Duration,
    /// First delay between polls.
    pub poll_interval: Duration,
    /// Request budget per org per minute.
    pub requests_per_minute: u32,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Source of the current time.
    pub clock: Clock,
    /// Name resolution for Atlas requests; `None` is the system resolver. Tests inject
    /// failures here without touching the network.
    pub resolver: Option<Arc<dyn reqwest::dns::Resolve>>,
    /// Monthly budgets from the configuration file ([`crate::budget`]).
    pub budgets: Vec<crate::budget::Budget>,
    /// Tag keys exported as labels (`--cost.tag-labels`, `tag_labels:`); empty by default.
    pub tag_labels: crate::series::TagLabels,
    /// The cardinality controls of the SKU series (`--invoices.*`).
    pub sku_controls: crate::invoice::SkuControls,
    /// TLS and basic auth of the exporter's own endpoints (`--web.config.file`).
    pub web: Option<Arc<crate::web_config::WebConfig>>,
    /// The state directory (`--storage.path`); `None` keeps nothing across restarts.
    pub storage_path: Option<PathBuf>,
    /// The orgs of the configuration that other shards hold and whose invoice source runs:
    /// they report their own invoices, so a paying org here leaves them out of its linked
    /// invoices ([`Config::invoice_reporters`]).
    pub invoices_elsewhere: std::collections::BTreeSet<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("telemetry_path", &self.telemetry_path)
            .field("base_url", &self.base_url)
            .field("orgs", &self.orgs)
            .field("refresh_interval", &self.refresh_interval)
            .field("concurrency", &self.concurrency)
            .field("web", &self.web)
            .field("storage_path", &self.storage_path)
            .finish_non_exhaustive()
    }
}

/// Largest response body accepted from Atlas by default: far above any real answer
/// (100k rows of JSON are about 30 MB), far below what would hurt the host.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

impl Config {
    /// A builder for `base_url` (used as given) with no org and the flags' defaults: tests
    /// and embedders set only what they change. It does not validate; [`Config::from_flags`]
    /// does.
    pub fn builder(base_url: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                // DEFAULT_LISTEN_ADDRESS, parsed (a unit test checks they agree).
                listen: SocketAddr::from(([0, 0, 0, 0], 9879)),
                telemetry_path: "/metrics".to_owned(),
                base_url: base_url.into(),
                orgs: Vec::new(),
                refresh_interval: Duration::from_secs(3600),
                concurrency: 4,
                request_timeout: Duration::from_secs(30),
                query_timeout: Duration::from_secs(600),
                poll_interval: Duration::from_secs(1),
                requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
                clock: system_clock(),
                resolver: None,
                budgets: Vec::new(),
                tag_labels: crate::series::TagLabels::default(),
                sku_controls: crate::invoice::SkuControls::default(),
                web: None,
                storage_path: None,
                invoices_elsewhere: std::collections::BTreeSet::new(),
            },
        }
    }

    /// Every org of the configuration, on any shard, whose invoice source runs: each reports
    /// its own invoices, so a paying org's source leaves these out of its linked invoices, and
    /// counts those of the others (not configured, or with the source off).
    pub fn invoice_reporters(&self) -> std::collections::BTreeSet<String> {
        self.orgs
            .iter()
            .filter(|o| o.invoices)
            .map(|o| o.id.clone())
            .chain(self.invoices_elsewhere.iter().cloned())
            .collect()
    }
}

/// Builds a [`Config`] field by field from [`Config::builder`]'s defaults.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Adds an org with `credentials` and the default queries over
    /// [`DEFAULT_MONTHS`].
    pub fn org(self, id: impl Into<String>, credentials: Credentials) -> Self {
        self.org_with_queries(id, credentials, QuerySpec::defaults(DEFAULT_MONTHS))
    }

    /// Adds an org with `credentials` and `queries`.
    pub fn org_with_queries(
        mut self,
        id: impl Into<String>,
        credentials: Credentials,
        queries: Vec<QuerySpec>,
    ) -> Self {
        self.config.orgs.push(OrgConfig {
            id: id.into(),
            credentials,
            queries,
            invoices: false,
        });
        self
    }

    /// Turns the invoice source on or off for every org added so far.
    pub fn invoices(mut self, on: bool) -> Self {
        for org in &mut self.config.orgs {
            org.invoices = on;
        }
        self
    }

    /// Adds these orgs.
    pub fn orgs(mut self, orgs: impl IntoIterator<Item = OrgConfig>) -> Self {
        self.config.orgs.extend(orgs);
        self
    }

    /// Where the HTTP server listens.
    pub fn listen(mut self, listen: SocketAddr) -> Self {
        self.config.listen = listen;
        self
    }

    /// Path of the metrics endpoint.
    pub fn telemetry_path(mut self, path: impl Into<String>) -> Self {
        self.config.telemetry_path = path.into();
        self
    }

    /// Time between refreshes.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.config.refresh_interval = interval;
        self
    }

    /// Queries in flight at once, across orgs.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.config.concurrency = concurrency;
        self
    }

    /// Timeout of one HTTP request.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Deadline of one query.
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.config.query_timeout = timeout;
        self
    }

    /// First delay between polls.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// Request budget per org per minute.
    pub fn requests_per_minute(mut self, requests: u32) -> Self {
        self.config.requests_per_minute = requests;
        self
    }

    /// Largest response body accepted, in bytes.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.config.max_response_bytes = bytes;
        self
    }

    /// Source of the current time.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.config.clock = clock;
        self
    }

    /// Name resolution for Atlas requests.
    pub fn resolver(mut self, resolver: Arc<dyn reqwest::dns::Resolve>) -> Self {
        self.config.resolver = Some(resolver);
        self
    }

    /// Monthly budgets.
    pub fn budgets(mut self, budgets: Vec<crate::budget::Budget>) -> Self {
        self.config.budgets = budgets;
        self
    }

    /// Tag keys exported as labels.
    pub fn sku_controls(mut self, controls: crate::invoice::SkuControls) -> Self {
        self.config.sku_controls = controls;
        self
    }

    /// Sets the tag labels.
    pub fn tag_labels(mut self, tags: crate::series::TagLabels) -> Self {
        self.config.tag_labels = tags;
        self
    }

    /// TLS and basic auth of the exporter's own endpoints.
    pub fn web(mut self, web: Arc<crate::web_config::WebConfig>) -> Self {
        self.config.web = Some(web);
        self
    }

    /// The state directory kept across restarts.
    pub fn storage_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.storage_path = Some(dir.into());
        self
    }

    /// Orgs that other shards hold with their invoice source on ([`Config::invoices_elsewhere`]).
    pub fn invoices_elsewhere(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.config.invoices_elsewhere.extend(ids);
        self
    }

    /// The configuration.
    pub fn build(self) -> Config {
        self.config
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

#[cfg(test)]
mod tests;
