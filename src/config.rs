//! Configuration: command-line flags, environment variables and the YAML file, validated once
//! at start-up into a [`Config`].
//!
//! Secrets never come from flag values (they would show in `ps`): only from the conventional
//! environment variables or from files. Every validation error names the flag, variable or
//! YAML key that is wrong, in one line.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

pub use crate::model::{
    Clock, ConfigError, Credentials, GroupBy, ResultFormat, Secret, is_atlas_id, system_clock,
};

/// Default port: unused by other exporters in the Prometheus default-port allocation list.
pub const DEFAULT_LISTEN_ADDRESS: &str = ":9879";
/// Atlas's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://cloud.mongodb.com";
/// How far back Atlas keeps Cost Explorer data.
pub const MAX_MONTHS: u32 = 18;
/// Requests per minute per org that the exporter allows itself (Atlas refills 100 a minute).
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 100;

/// Environment variables that carry credentials (the names the Atlas CLI and Terraform use).
pub mod env {
    /// Service account client id.
    pub const CLIENT_ID: &str = "MONGODB_ATLAS_CLIENT_ID";
    /// Service account client secret.
    pub const CLIENT_SECRET: &str = "MONGODB_ATLAS_CLIENT_SECRET";
    /// API key, public part (the Digest user).
    pub const PUBLIC_API_KEY: &str = "MONGODB_ATLAS_PUBLIC_API_KEY";
    /// API key, private part (the Digest password).
    pub const PRIVATE_API_KEY: &str = "MONGODB_ATLAS_PRIVATE_API_KEY";
}

/// Log output format.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs, one event a line.
    Logfmt,
    /// One JSON object a line.
    Json,
}

/// Log level.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything, including each poll.
    Debug,
    /// Refreshes and state changes.
    Info,
    /// Problems the exporter works around.
    Warn,
    /// Failures only.
    Error,
}

/// The exporter's flags; each has an environment variable.
#[derive(Args, Debug, Clone)]
pub struct Flags {
    /// Address to listen on for the web interface and telemetry.
    #[arg(long = "web.listen-address", env = "ATLAS_EXPORTER_WEB_LISTEN_ADDRESS", default_value = DEFAULT_LISTEN_ADDRESS)]
    pub listen_address: String,
    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        env = "ATLAS_EXPORTER_WEB_TELEMETRY_PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,
    /// Only log messages with the given severity or above.
    #[arg(
        long = "log.level",
        env = "ATLAS_EXPORTER_LOG_LEVEL",
        value_enum,
        default_value = "info"
    )]
    pub log_level: LogLevel,
    /// Output format of log messages.
    #[arg(
        long = "log.format",
        env = "ATLAS_EXPORTER_LOG_FORMAT",
        value_enum,
        default_value = "logfmt"
    )]
    pub log_format: LogFormat,
    /// Base URL of the Atlas Admin API.
    #[arg(long = "atlas.base-url", env = "ATLAS_EXPORTER_ATLAS_BASE_URL", default_value = DEFAULT_BASE_URL)]
    pub base_url: String,
    /// Atlas organization id to export (24 hex characters); repeat the flag, or separate with
    /// commas in the environment variable.
    #[arg(
        long = "atlas.org-id",
        env = "MONGODB_ATLAS_ORG_ID",
        value_delimiter = ','
    )]
    pub org_ids: Vec<String>,
    /// File holding the service account client secret (instead of MONGODB_ATLAS_CLIENT_SECRET).
    #[arg(
        long = "atlas.client-secret-file",
        env = "ATLAS_EXPORTER_CLIENT_SECRET_FILE"
    )]
    pub client_secret_file: Option<PathBuf>,
    /// File holding the API key's private key (instead of MONGODB_ATLAS_PRIVATE_API_KEY).
    #[arg(
        long = "atlas.private-api-key-file",
        env = "ATLAS_EXPORTER_PRIVATE_API_KEY_FILE"
    )]
    pub private_key_file: Option<PathBuf>,
    /// How often to re-run the Cost Explorer queries (e.g. 30m, 1h, 6h).
    #[arg(long = "refresh.interval", env = "ATLAS_EXPORTER_REFRESH_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
    /// How many queries run at once, across all orgs.
    #[arg(
        long = "refresh.concurrency",
        env = "ATLAS_EXPORTER_REFRESH_CONCURRENCY",
        default_value_t = 4
    )]
    pub concurrency: usize,
    /// Months to read back, the current month included (1 to 18).
    #[arg(
        long = "cost.months",
        env = "ATLAS_EXPORTER_COST_MONTHS",
        default_value_t = 3
    )]
    pub months: u32,
    /// Timeout of one HTTP request to Atlas.
    #[arg(long = "atlas.request-timeout", env = "ATLAS_EXPORTER_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Overall deadline of one query: create, every poll and every retry.
    #[arg(long = "atlas.query-timeout", env = "ATLAS_EXPORTER_QUERY_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,
    /// Delay before the first poll of a query; it doubles up to 30s between polls.
    #[arg(long = "atlas.poll-interval", env = "ATLAS_EXPORTER_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Requests per minute the exporter allows itself per org (Atlas refills 100 a minute).
    #[arg(long = "atlas.requests-per-minute", env = "ATLAS_EXPORTER_REQUESTS_PER_MINUTE", default_value_t = DEFAULT_REQUESTS_PER_MINUTE)]
    pub requests_per_minute: u32,
    /// YAML file for several orgs, per-org credentials and custom queries.
    #[arg(long = "config.file", env = "ATLAS_EXPORTER_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Web configuration file (exporter-toolkit format): TLS and basic auth.
    #[arg(long = "web.config.file", env = "ATLAS_EXPORTER_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Number of replicas that split the orgs between them (see --shard.index).
    #[arg(
        long = "shard.count",
        env = "ATLAS_EXPORTER_SHARD_COUNT",
        default_value_t = 1
    )]
    pub shard_count: u32,
    /// This replica's shard, 0 to --shard.count - 1: it exports the orgs whose id hashes
    /// (FNV-1a) to it.
    #[arg(
        long = "shard.index",
        env = "ATLAS_EXPORTER_SHARD_INDEX",
        default_value_t = 0
    )]
    pub shard_index: u32,
    /// Start the built-in Atlas simulator on loopback and export its data; no account needed.
    #[arg(long = "demo", env = "ATLAS_EXPORTER_DEMO")]
    pub demo: bool,
}

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
    /// TLS and basic auth of the exporter's own endpoints (`--web.config.file`).
    pub web: Option<Arc<crate::web_config::WebConfig>>,
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
            .finish_non_exhaustive()
    }
}

/// Largest response body accepted from Atlas by default: far above any real answer
/// (100k rows of JSON are about 30 MB), far below what would hurt the host.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Where environment variables come from; tests pass a map instead of the process environment.
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<&str, &str, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| (*v).to_owned())
            .filter(|v| !v.is_empty())
    }
}

fn is_query_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Parses a Prometheus-style listen address: `:9879`, `0.0.0.0:9879`, `[::1]:9879`,
/// `localhost:9879`.
///
/// # Errors
/// Names `--web.listen-address` when the address does not parse or resolve.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, ConfigError> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map_or_else(
            || {
                err(format!(
                    "--web.listen-address: {s:?} is not a host:port address"
                ))
            },
            Ok,
        )
}

/// Checks the Atlas base URL and strips a trailing slash.
///
/// # Errors
/// Names `--atlas.base-url` when it is not an http(s) URL with a host and no path.
pub fn parse_base_url(s: &str) -> Result<String, ConfigError> {
    let trimmed = s.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => {
            Ok(trimmed.to_owned())
        }
        _ => err(format!(
            "--atlas.base-url: {s:?} must be an http:// or https:// URL with a host and no path"
        )),
    }
}

fn read_secret_file(path: &Path, what: &str) -> Result<Secret, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim())),
        Ok(_) => err(format!("{what}: file {} is empty", path.display())),
        Err(e) => err(format!("{what}: cannot read {}: {e}", path.display())),
    }
}

/// Reads the credentials from the environment and the secret-file flags.
///
/// # Errors
/// Names the variable when none, only half, or both kinds of credentials are given.
pub fn credentials_from_env(flags: &Flags, env: &dyn Env) -> Result<Credentials, ConfigError> {
    let client_id = env.var(env::CLIENT_ID);
    let client_secret = match (&flags.client_secret_file, env.var(env::CLIENT_SECRET)) {
        (Some(_), Some(_)) => {
            return err(format!(
                "--atlas.client-secret-file and {} are both set; use one",
                env::CLIENT_SECRET
            ));
        }
        (Some(path), None) => Some(read_secret_file(path, "--atlas.client-secret-file")?),
        (None, v) => v.map(Secret::new),
    };
    let public_key = env.var(env::PUBLIC_API_KEY);
    let private_key = match (&flags.private_key_file, env.var(env::PRIVATE_API_KEY)) {
        (Some(_), Some(_)) => {
            return err(format!(
                "--atlas.private-api-key-file and {} are both set; use one",
                env::PRIVATE_API_KEY
            ));
        }
        (Some(path), None) => Some(read_secret_file(path, "--atlas.private-api-key-file")?),
        (None, v) => v.map(Secret::new),
    };
    let service_account = client_id.is_some() || client_secret.is_some();
    let api_key = public_key.is_some() || private_key.is_some();
    match (service_account, api_key) {
        (true, true) => err(format!(
            "credentials: both a service account ({}) and an API key ({}) are set; use one",
            env::CLIENT_ID,
            env::PUBLIC_API_KEY
        )),
        (false, false) => err(format!(
            "credentials: none given; set {} and {} (service account) or {} and {} (API key)",
            env::CLIENT_ID,
            env::CLIENT_SECRET,
            env::PUBLIC_API_KEY,
            env::PRIVATE_API_KEY
        )),
        (true, false) => match (client_id, client_secret) {
            (Some(client_id), Some(client_secret)) => Ok(Credentials::ServiceAccount {
                client_id,
                client_secret,
            }),
            (None, _) => err(format!("credentials: {} is not set", env::CLIENT_ID)),
            (_, None) => err(format!(
                "credentials: {} (or --atlas.client-secret-file) is not set",
                env::CLIENT_SECRET
            )),
        },
        (false, true) => match (public_key, private_key) {
            (Some(public_key), Some(private_key)) => Ok(Credentials::ApiKey {
                public_key,
                private_key,
            }),
            (None, _) => err(format!("credentials: {} is not set", env::PUBLIC_API_KEY)),
            (_, None) => err(format!(
                "credentials: {} (or --atlas.private-api-key-file) is not set",
                env::PRIVATE_API_KEY
            )),
        },
    }
}

/// The YAML configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    orgs: Vec<FileOrg>,
    #[serde(default)]
    budgets: Vec<crate::budget::FileBudget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOrg {
    id: String,
    #[serde(default)]
    credentials: Option<FileCredentials>,
    #[serde(default)]
    queries: Option<Vec<FileQuery>>,
}

/// Per-org credentials in the YAML file. Secrets are read from a file or a named environment
/// variable, never written in the YAML itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCredentials {
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    public_api_key: Option<String>,
    private_api_key_file: Option<PathBuf>,
    private_api_key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    name: String,
    #[serde(default)]
    group_by: Option<GroupBy>,
    months: Option<u32>,
    #[serde(default)]
    format: ResultFormat,
    #[serde(default)]
    projects: Vec<String>,
    #[serde(default)]
    clusters: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    include_partial_matches: bool,
    #[serde(default)]
    controls: Option<crate::controls::FileControls>,
}

fn file_secret(
    key: &str,
    file: Option<&PathBuf>,
    var: Option<&String>,
    env: &dyn Env,
) -> Result<Option<Secret>, ConfigError> {
    match (file, var) {
        (Some(_), Some(_)) => err(format!("{key}: give either _file or _env, not both")),
        (Some(path), None) => read_secret_file(path, &format!("{key}_file")).map(Some),
        (None, Some(name)) => match env.var(name) {
            Some(v) => Ok(Some(Secret::new(v))),
            None => err(format!("{key}_env: environment variable {name} is not set")),
        },
        (None, None) => Ok(None),
    }
}

fn file_credentials(
    key: &str,
    c: &FileCredentials,
    env: &dyn Env,
) -> Result<Credentials, ConfigError> {
    let secret = file_secret(
        &format!("{key}.client_secret"),
        c.client_secret_file.as_ref(),
        c.client_secret_env.as_ref(),
        env,
    )?;
    let private = file_secret(
        &format!("{key}.private_api_key"),
        c.private_api_key_file.as_ref(),
        c.private_api_key_env.as_ref(),
        env,
    )?;
    match (&c.client_id, secret, &c.public_api_key, private) {
        (Some(id), Some(secret), None, None) => Ok(Credentials::ServiceAccount {
            client_id: id.clone(),
            client_secret: secret,
        }),
        (None, None, Some(public), Some(private)) => Ok(Credentials::ApiKey {
            public_key: public.clone(),
            private_key: private,
        }),
        _ => err(format!(
            "{key}: give client_id with client_secret_file or client_secret_env, or \
             public_api_key with private_api_key_file or private_api_key_env (one kind only)"
        )),
    }
}

fn validate_months(key: &str, months: u32) -> Result<u32, ConfigError> {
    if (1..=MAX_MONTHS).contains(&months) {
        Ok(months)
    } else {
        err(format!(
            "{key}: {months} is out of range (1 to {MAX_MONTHS})"
        ))
    }
}

fn validate_ids(key: &str, ids: &[String]) -> Result<(), ConfigError> {
    match ids.iter().find(|id| !is_atlas_id(id)) {
        Some(bad) => err(format!(
            "{key}: {bad:?} is not an Atlas id (24 lowercase hex characters)"
        )),
        None => Ok(()),
    }
}

fn file_query(key: &str, q: FileQuery, default_months: u32) -> Result<QuerySpec, ConfigError> {
    if !is_query_name(&q.name) {
        return err(format!(
            "{key}.name: {:?} must be 1 to 64 letters, digits, '_', '-' or '.'",
            q.name
        ));
    }
    let months = validate_months(&format!("{key}.months"), q.months.unwrap_or(default_months))?;
    validate_ids(&format!("{key}.projects"), &q.projects)?;
    validate_ids(&format!("{key}.clusters"), &q.clusters)?;
    if let Some(bad) = q.services.iter().find(|s| s.trim().is_empty()) {
        return err(format!("{key}.services: {bad:?} is not a service name"));
    }
    let group_by = q.group_by.unwrap_or(GroupBy::Ungrouped);
    if group_by == GroupBy::Ungrouped && q.group_by.is_some() {
        return err(format!(
            "{key}.group_by: ungrouped is written by leaving group_by out"
        ));
    }
    if group_by == GroupBy::Services && q.services.is_empty() {
        return err(format!(
            "{key}.group_by: services needs a services list (Atlas refuses a groupBy without \
             its filter); leave group_by out to get every service, one row per service and month"
        ));
    }
    Ok(QuerySpec {
        name: q.name,
        group_by,
        months,
        format: q.format,
        projects: q.projects,
        clusters: q.clusters,
        services: q.services,
        include_partial_matches: q.include_partial_matches,
        controls: match q.controls {
            Some(c) => crate::controls::Controls::from_file(key, c, months)?,
            None => crate::controls::Controls::default(),
        },
    })
}

/// Validates the budgets of a file against `orgs` and their queries
/// ([`crate::budget::validate`]).
///
/// # Errors
/// A [`ConfigError`] naming the budget's key.
pub fn validate_budgets(
    file: Vec<crate::budget::FileBudget>,
    orgs: &[OrgConfig],
) -> Result<Vec<crate::budget::Budget>, ConfigError> {
    let names: Vec<Vec<&str>> = orgs
        .iter()
        .map(|o| o.queries.iter().map(|q| q.name.as_str()).collect())
        .collect();
    let org_queries: Vec<crate::budget::OrgQueries<'_>> = orgs
        .iter()
        .zip(&names)
        .map(|(o, n)| crate::budget::OrgQueries {
            id: &o.id,
            queries: n,
        })
        .collect();
    crate::budget::validate(file, &org_queries)
}

/// The orgs of the file, and its budgets (validated once every org is known).
type FileContents = (Vec<OrgConfig>, Vec<crate::budget::FileBudget>);

fn load_file(path: &Path, flags: &Flags, env: &dyn Env) -> Result<FileContents, ConfigError> {
    let text = std::fs::read_to_string(path).or_else(|e| {
        err(format!(
            "--config.file: cannot read {}: {e}",
            path.display()
        ))
    })?;
    let file: FileConfig = serde_norway::from_str(&text).or_else(|e| {
        err(format!(
            "--config.file: {}: {}",
            path.display(),
            e.to_string().replace('\n', " ")
        ))
    })?;
    let mut orgs = Vec::with_capacity(file.orgs.len());
    for (i, org) in file.orgs.into_iter().enumerate() {
        let key = format!("orgs[{i}]");
        if !is_atlas_id(&org.id) {
            return err(format!(
                "{key}.id: {:?} is not an Atlas org id (24 lowercase hex characters)",
                org.id
            ));
        }
        let credentials = match &org.credentials {
            Some(c) => file_credentials(&format!("{key}.credentials"), c, env)?,
            None => credentials_from_env(flags, env)?,
        };
        let queries = match org.queries {
            None => QuerySpec::defaults(flags.months),
            Some(qs) if qs.is_empty() => {
                return err(format!(
                    "{key}.queries: empty; leave it out for the default queries"
                ));
            }
            Some(qs) => {
                let mut out: Vec<QuerySpec> = Vec::with_capacity(qs.len());
                for (j, q) in qs.into_iter().enumerate() {
                    let q = file_query(&format!("{key}.queries[{j}]"), q, flags.months)?;
                    if out.iter().any(|o| o.name == q.name) {
                        return err(format!(
                            "{key}.queries[{j}].name: {:?} is used twice",
                            q.name
                        ));
                    }
                    out.push(q);
                }
                out
            }
        };
        if orgs.iter().any(|o: &OrgConfig| o.id == org.id) {
            return err(format!("{key}.id: {} is listed twice", org.id));
        }
        orgs.push(OrgConfig {
            id: org.id,
            credentials,
            queries,
        });
    }
    Ok((orgs, file.budgets))
}

impl Config {
    /// Validates flags, environment and the YAML file into a configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] that names the flag, variable or key that is wrong.
    pub fn from_flags(flags: &Flags, env: &dyn Env) -> Result<Config, ConfigError> {
        let listen = parse_listen_address(&flags.listen_address)?;
        if !flags.telemetry_path.starts_with('/') || flags.telemetry_path.len() < 2 {
            return err(format!(
                "--web.telemetry-path: {:?} must start with '/' and not be '/' alone",
                flags.telemetry_path
            ));
        }
        if ["/healthz", "/readyz"].contains(&flags.telemetry_path.as_str()) {
            return err(format!(
                "--web.telemetry-path: {} is taken by the exporter itself",
                flags.telemetry_path
            ));
        }
        let base_url = parse_base_url(&flags.base_url)?;
        validate_months("--cost.months", flags.months)?;
        if flags.refresh_interval < Duration::from_secs(1) {
            return err("--refresh.interval: must be at least 1s");
        }
        if flags.concurrency == 0 {
            return err("--refresh.concurrency: must be at least 1");
        }
        if flags.requests_per_minute == 0 {
            return err("--atlas.requests-per-minute: must be at least 1");
        }
        if flags.request_timeout.is_zero() {
            return err("--atlas.request-timeout: must be more than 0s");
        }
        if flags.query_timeout < flags.request_timeout {
            return err("--atlas.query-timeout: must be at least --atlas.request-timeout");
        }
        if flags.poll_interval.is_zero() {
            return err("--atlas.poll-interval: must be more than 0s");
        }
        let org_ids: Vec<String> = flags
            .org_ids
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = org_ids.iter().find(|id| !is_atlas_id(id)) {
            return err(format!(
                "--atlas.org-id: {bad:?} is not an Atlas org id (24 lowercase hex characters)"
            ));
        }
        let (mut orgs, budgets) = match &flags.config_file {
            Some(path) => load_file(path, flags, env)?,
            None => (Vec::new(), Vec::new()),
        };
        if !org_ids.is_empty() {
            let credentials = credentials_from_env(flags, env)?;
            for id in org_ids {
                if orgs.iter().any(|o| o.id == id) {
                    return err(format!("--atlas.org-id: {id} is given twice"));
                }
                orgs.push(OrgConfig {
                    id,
                    credentials: credentials.clone(),
                    queries: QuerySpec::defaults(flags.months),
                });
            }
        }
        let web = match &flags.web_config_file {
            Some(path) => Some(Arc::new(
                crate::web_config::WebConfig::load(path).map_err(|e| ConfigError(e.to_string()))?,
            )),
            None => None,
        };
        if orgs.is_empty() {
            return err(
                "--atlas.org-id: no org to export; give --atlas.org-id (or MONGODB_ATLAS_ORG_ID), \
                 a --config.file with orgs, or --demo",
            );
        }
        let budgets = validate_budgets(budgets, &orgs)?;
        let shard = crate::model::Shard::new(flags.shard_count, flags.shard_index)?;
        // Budgets are validated against every org first: the same file serves every shard.
        orgs.retain(|o| shard.owns(&o.id));
        Ok(Config {
            listen,
            telemetry_path: flags.telemetry_path.clone(),
            base_url,
            orgs,
            refresh_interval: flags.refresh_interval,
            concurrency: flags.concurrency,
            request_timeout: flags.request_timeout,
            query_timeout: flags.query_timeout,
            poll_interval: flags.poll_interval,
            requests_per_minute: flags.requests_per_minute,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            clock: system_clock(),
            resolver: None,
            budgets,
            web,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ORG: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";

    /// The flags alone, as the command line parses them (see [`crate::cli::Cli`]).
    #[derive(clap::Parser)]
    struct FlagsOnly {
        #[command(flatten)]
        flags: Flags,
    }

    fn flags(args: &[&str]) -> Flags {
        use clap::Parser as _;
        let mut argv = vec!["atlas-cost-exporter"];
        argv.extend_from_slice(args);
        FlagsOnly::try_parse_from(argv).expect("flags parse").flags
    }

    fn sa_env() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (env::CLIENT_ID, "mdb_sa_id_x"),
            (env::CLIENT_SECRET, "s3cr3t"),
        ])
    }

    fn config_err(args: &[&str], env: &HashMap<&str, &str>) -> String {
        Config::from_flags(&flags(args), env)
            .expect_err("config must be refused")
            .to_string()
    }

    /// An org id and a service account are enough; every org gets the three default queries.
    #[test]
    fn org_id_with_service_account_gets_default_queries() {
        let cfg = Config::from_flags(&flags(&["--atlas.org-id", ORG]), &sa_env()).expect("valid");
        assert_eq!(cfg.orgs.len(), 1);
        let names: Vec<_> = cfg.orgs[0]
            .queries
            .iter()
            .map(|q| q.name.as_str())
            .collect();
        assert_eq!(names, ["services", "projects", "clusters"]);
        assert!(matches!(
            cfg.orgs[0].credentials,
            Credentials::ServiceAccount { .. }
        ));
        assert_eq!(cfg.listen.port(), 9879);
        assert_eq!(cfg.base_url, DEFAULT_BASE_URL);
    }

    /// An org id that is not 24 hex characters is refused, naming the flag and the value.
    #[test]
    fn malformed_org_id_is_refused_naming_the_flag() {
        let msg = config_err(&["--atlas.org-id", "../../admin"], &sa_env());
        assert!(msg.starts_with("--atlas.org-id:"), "{msg}");
        assert!(msg.contains("../../admin"), "{msg}");
        let upper = config_err(&["--atlas.org-id", "5F1B2C3D4E5F6A7B8C9D0E1F"], &sa_env());
        assert!(upper.starts_with("--atlas.org-id:"), "{upper}");
    }

    /// Months outside 1..=18 are refused.
    #[test]
    fn months_out_of_range_are_refused() {
        for m in ["0", "19"] {
            let msg = config_err(&["--atlas.org-id", ORG, "--cost.months", m], &sa_env());
            assert!(msg.starts_with("--cost.months:"), "{msg}");
        }
    }

    /// No credentials at all is refused, naming the variables to set.
    #[test]
    fn missing_credentials_are_refused() {
        let msg = config_err(&["--atlas.org-id", ORG], &HashMap::new());
        assert!(
            msg.contains(env::CLIENT_ID) && msg.contains(env::PUBLIC_API_KEY),
            "{msg}"
        );
    }

    /// A service account and an API key at once is ambiguous and refused.
    #[test]
    fn both_kinds_of_credentials_are_refused() {
        let mut env = sa_env();
        env.insert(env::PUBLIC_API_KEY, "pub");
        env.insert(env::PRIVATE_API_KEY, "priv");
        let msg = config_err(&["--atlas.org-id", ORG], &env);
        assert!(msg.contains("both"), "{msg}");
    }

    /// Half a service account names the missing half, and the error holds no secret.
    #[test]
    fn half_credentials_name_the_missing_variable() {
        let env = HashMap::from([(env::CLIENT_SECRET, "s3cr3t")]);
        let msg = config_err(&["--atlas.org-id", ORG], &env);
        assert!(msg.contains(env::CLIENT_ID), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
    }

    /// The org id variable takes a comma-separated list.
    #[test]
    fn org_ids_from_a_comma_separated_list() {
        let other = "aaaaaaaaaaaaaaaaaaaaaaaa";
        let f = flags(&["--atlas.org-id", &format!("{ORG},{other}")]);
        let cfg = Config::from_flags(&f, &sa_env()).expect("valid");
        assert_eq!(cfg.orgs.len(), 2);
        assert_eq!(cfg.orgs[1].id, other);
    }

    /// A secret file replaces the secret variable; the Debug output never shows the secret.
    #[test]
    fn secret_file_is_read_and_never_debug_printed() {
        let dir = std::env::temp_dir().join(format!("ace-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("secret");
        std::fs::write(&path, "from-file-secret\n").expect("write");
        let env = HashMap::from([(env::CLIENT_ID, "id")]);
        let f = flags(&[
            "--atlas.org-id",
            ORG,
            "--atlas.client-secret-file",
            path.to_str().expect("utf-8 path"),
        ]);
        let cfg = Config::from_flags(&f, &env).expect("valid");
        match &cfg.orgs[0].credentials {
            Credentials::ServiceAccount { client_secret, .. } => {
                assert_eq!(client_secret.expose(), "from-file-secret");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!format!("{cfg:?}").contains("from-file-secret"));
    }

    /// A YAML file defines orgs with their own credentials and custom queries.
    #[test]
    fn yaml_file_defines_orgs_credentials_and_queries() {
        let dir = std::env::temp_dir().join(format!("ace-yaml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("config.yml");
        std::fs::write(
            &path,
            format!(
                "orgs:\n  - id: {ORG}\n    credentials:\n      public_api_key: pub\n      private_api_key_env: MY_KEY\n    queries:\n      - name: storage\n        group_by: services\n        services: [Storage]\n        months: 12\n        format: csv\n"
            ),
        )
        .expect("write");
        let env = HashMap::from([("MY_KEY", "k")]);
        let f = flags(&["--config.file", path.to_str().expect("utf-8 path")]);
        let cfg = Config::from_flags(&f, &env).expect("valid");
        let q = &cfg.orgs[0].queries[0];
        assert_eq!(
            (q.name.as_str(), q.months, q.format),
            ("storage", 12, ResultFormat::Csv)
        );
        assert!(matches!(
            cfg.orgs[0].credentials,
            Credentials::ApiKey { .. }
        ));
    }

    /// A bad key in the YAML file is refused, naming where it is.
    #[test]
    fn yaml_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("ace-yaml-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("config.yml");
        std::fs::write(
            &path,
            format!("orgs:\n  - id: {ORG}\n    queries:\n      - name: x\n        group_by: projects\n        months: 40\n"),
        )
        .expect("write");
        let f = flags(&["--config.file", path.to_str().expect("utf-8 path")]);
        let msg = Config::from_flags(&f, &sa_env())
            .expect_err("refused")
            .to_string();
        assert!(msg.starts_with("orgs[0].queries[0].months:"), "{msg}");
        std::fs::write(&path, "orgs:\n  - id: nothex\n").expect("write");
        let msg = Config::from_flags(&f, &sa_env())
            .expect_err("refused")
            .to_string();
        assert!(msg.starts_with("orgs[0].id:"), "{msg}");
        std::fs::write(&path, "orgz: []\n").expect("write");
        let msg = Config::from_flags(&f, &sa_env())
            .expect_err("refused")
            .to_string();
        assert!(msg.contains("orgz"), "{msg}");
    }

    /// The default `services` query sends no `groupBy`; a YAML query without `group_by` does
    /// the same, and `group_by: services` without a services list is refused at start-up:
    /// Atlas needs at least one filter value for the dimension it groups by.
    #[test]
    fn a_groupby_without_its_filter_is_refused_and_the_default_sends_none() {
        let defaults = QuerySpec::defaults(3);
        assert_eq!(defaults[0].group_by, GroupBy::Ungrouped);
        assert_eq!(defaults[0].group_by.atlas_value(), None);
        assert_eq!(GroupBy::Projects.atlas_value(), Some("projects"));
        let dir = std::env::temp_dir().join(format!("ace-yaml-groupby-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("config.yml");
        let f = flags(&["--config.file", path.to_str().expect("utf-8 path")]);
        std::fs::write(
            &path,
            format!(
                "orgs:\n  - id: {ORG}\n    queries:\n      - name: s\n        group_by: services\n"
            ),
        )
        .expect("write");
        let msg = Config::from_flags(&f, &sa_env())
            .expect_err("refused")
            .to_string();
        assert!(
            msg.starts_with("orgs[0].queries[0].group_by: services needs a services list"),
            "{msg}"
        );
        std::fs::write(
            &path,
            format!("orgs:\n  - id: {ORG}\n    queries:\n      - name: s\n"),
        )
        .expect("write");
        let cfg = Config::from_flags(&f, &sa_env()).expect("valid");
        assert_eq!(cfg.orgs[0].queries[0].group_by, GroupBy::Ungrouped);
    }

    /// Listen addresses follow the Prometheus convention, including the bare `:port` form.
    #[test]
    fn listen_address_accepts_bare_port() {
        assert_eq!(parse_listen_address(":9879").expect("valid").port(), 9879);
        assert!(parse_listen_address("127.0.0.1:0").is_ok());
        assert!(parse_listen_address("nonsense").is_err());
    }

    /// The base URL must be a plain http(s) origin.
    #[test]
    fn base_url_must_be_an_origin() {
        assert_eq!(
            parse_base_url("https://cloud.mongodb.com/").expect("ok"),
            DEFAULT_BASE_URL
        );
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("https://a/b").is_err());
        assert!(parse_base_url("https://user@host").is_err());
    }
}
