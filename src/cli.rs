//! The command line: what the user can type. The exporter's [`Flags`] (each with an
//! environment variable), the `simulate` subcommand's [`SimulateArgs`], the `check-config`
//! subcommand's [`CheckConfigArgs`], and the defaults they show in `--help`.
//!
//! It only parses: [`crate::config`] validates the flags into a `Config`, and the binary turns
//! [`SimulateArgs`] into the simulator's configuration, so this module imports neither.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default port: unused by other exporters in the Prometheus default-port allocation list.
pub const DEFAULT_LISTEN_ADDRESS: &str = ":9879";
/// Atlas's public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://cloud.mongodb.com";
/// Requests per minute per org that the exporter allows itself (Atlas refills 100 a minute).
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 100;
/// Months read back by default, the current month included.
pub const DEFAULT_MONTHS: u32 = 3;

/// Prometheus exporter for the MongoDB Atlas Cost Explorer.
///
/// Credentials come from the environment: MONGODB_ATLAS_CLIENT_ID and
/// MONGODB_ATLAS_CLIENT_SECRET (service account), or MONGODB_ATLAS_PUBLIC_API_KEY and
/// MONGODB_ATLAS_PRIVATE_API_KEY (API key); the secret halves can also be read from files.
#[derive(Parser, Debug, Clone)]
#[command(version = crate::version::LONG, about, long_about = None)]
pub struct Cli {
    /// Run a subcommand instead of the exporter.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Exporter flags.
    #[command(flatten)]
    pub flags: Flags,
}

/// Subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the built-in Atlas API simulator alone (for tests, benchmarks and demos).
    Simulate(SimulateArgs),
    /// Validate the flags, environment and configuration file as a start-up would, print
    /// what would run, and exit: 0 when valid, 2 with the start-up's error line otherwise.
    /// Nothing is sent to Atlas. Give the exporter's flags after `check-config`.
    CheckConfig(Box<CheckConfigArgs>),
}

/// The `check-config` subcommand's arguments: the exporter's own flags (and variables).
#[derive(Args, Debug, Clone)]
pub struct CheckConfigArgs {
    /// The flags to check, as the exporter takes them.
    #[command(flatten)]
    pub flags: Flags,
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
        default_value_t = DEFAULT_MONTHS
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
    /// A StatefulSet pod's name (`atlas-cost-exporter-2`): its ordinal, the number after the
    /// last `-`, is this replica's shard. For clusters without the pod-index label; instead
    /// of --shard.index.
    #[arg(
        long = "shard.pod-name",
        env = "ATLAS_EXPORTER_SHARD_POD_NAME",
        conflicts_with = "shard_index"
    )]
    pub shard_pod_name: Option<String>,
    /// Atlas resource tag keys to export as labels on the cost series grouped by project or
    /// cluster, separated by commas (`team,env`): each key becomes the label `tag_<key>`.
    /// None by default.
    #[arg(
        long = "cost.tag-labels",
        env = "ATLAS_EXPORTER_COST_TAG_LABELS",
        value_delimiter = ','
    )]
    pub tag_labels: Vec<String>,
    /// Directory for the state kept across restarts: each org's last good data, closed months
    /// and every id seen (created with mode 0700 when missing; one directory per process).
    /// Without it nothing is written.
    /// Given twice, the last one counts (the container image passes one).
    #[arg(
        long = "storage.path",
        env = "ATLAS_EXPORTER_STORAGE_PATH",
        overrides_with = "storage_path"
    )]
    pub storage_path: Option<PathBuf>,
    /// Run the invoice source (issue 22) for every org: daily spend, SKUs, quantities and
    /// unit prices from the pending invoice, beside the Cost Explorer. Off by default; an
    /// org's `invoices:` in --config.file overrides it. --demo turns it on.
    #[arg(long = "invoices.enabled", env = "ATLAS_EXPORTER_INVOICES_ENABLED")]
    pub invoices_enabled: bool,
    /// SKUs kept per project and cluster (the most expensive this month first); the rest
    /// fold into sku="(other)". All by default.
    #[arg(long = "invoices.sku-top", env = "ATLAS_EXPORTER_INVOICES_SKU_TOP")]
    pub sku_top: Option<usize>,
    /// SKU series below this many USD this month (and on the last day) fold into
    /// sku="(other)". None by default.
    #[arg(
        long = "invoices.sku-min-usd",
        env = "ATLAS_EXPORTER_INVOICES_SKU_MIN_USD"
    )]
    pub sku_min_usd: Option<f64>,
    /// Most SKU series per org refresh; the cheapest fold into one sku="(other)" per org.
    /// No limit by default.
    #[arg(
        long = "invoices.max-series",
        env = "ATLAS_EXPORTER_INVOICES_MAX_SERIES"
    )]
    pub sku_max_series: Option<usize>,
    /// Only SKUs matching this regex (anchored) are kept; the others fold into
    /// sku="(other)".
    #[arg(long = "invoices.sku-allow", env = "ATLAS_EXPORTER_INVOICES_SKU_ALLOW")]
    pub sku_allow: Option<String>,
    /// SKUs matching this regex (anchored) fold into sku="(other)".
    #[arg(long = "invoices.sku-deny", env = "ATLAS_EXPORTER_INVOICES_SKU_DENY")]
    pub sku_deny: Option<String>,
    /// Start the built-in Atlas simulator on loopback and export its data; no account needed.
    #[arg(long = "demo", env = "ATLAS_EXPORTER_DEMO")]
    pub demo: bool,
}

/// Options of the `simulate` subcommand, as plain values: the binary turns them into the
/// simulator's configuration, so the command line does not import the simulator.
#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
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
    #[arg(long, env = "ATLAS_SIM_NOT_READY", value_enum, default_value_t = SimNotReady::Envelope)]
    pub not_ready: SimNotReady,
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
    #[arg(long, env = "ATLAS_SIM_ROW_KEYS", value_enum, default_value_t = SimRowKeys::ProjectId)]
    pub row_keys: SimRowKeys,
    /// How CSV results are laid out (undocumented by Atlas).
    #[arg(long, env = "ATLAS_SIM_CSV_LAYOUT", value_enum, default_value_t = SimCsvLayout::Extended)]
    pub csv_layout: SimCsvLayout,
    /// How long a Digest nonce stays fresh; a correct answer over an older one gets
    /// stale=true.
    #[arg(long, env = "ATLAS_SIM_NONCE_TTL", value_parser = humantime::parse_duration, default_value = "5m")]
    pub nonce_ttl: Duration,
    /// A Digest nonce goes stale after letting in this many answers (later answers over it
    /// get stale=true).
    #[arg(long, env = "ATLAS_SIM_NONCE_STALE_AFTER")]
    pub nonce_stale_after: Option<u32>,
    /// A Digest nonce is forgotten after letting in this many answers (as another node behind
    /// a load balancer would); a later answer over it is met as an unknown nonce.
    #[arg(long, env = "ATLAS_SIM_NONCE_FORGOTTEN_AFTER")]
    pub nonce_forgotten_after: Option<u32>,
    /// Meet an answer over an unknown (forgotten) Digest nonce with a plain fresh challenge
    /// (stale=false) instead of stale=true.
    #[arg(long, env = "ATLAS_SIM_UNKNOWN_NONCE_FRESH")]
    pub unknown_nonce_fresh: bool,
    /// Offer the same current Digest nonce in every challenge until it expires, goes stale or
    /// is forgotten, instead of a new nonce per challenge.
    #[arg(long, env = "ATLAS_SIM_SHARED_NONCE")]
    pub shared_nonce: bool,
    /// Answer every Nth correct Digest answer with stale=true anyway (a spurious stale).
    #[arg(long, env = "ATLAS_SIM_SPURIOUS_STALE_EVERY", value_parser = clap::value_parser!(u64).range(1..))]
    pub spurious_stale_every: Option<u64>,
    /// Answer the pending invoices as one invoice object (what the one public client
    /// decodes) instead of the spec's paginated `results`.
    #[arg(long, env = "ATLAS_SIM_INVOICE_SINGLE")]
    pub invoice_single: bool,
    /// Invoice line items of up to three days instead of one.
    #[arg(long, env = "ATLAS_SIM_INVOICE_MULTI_DAY")]
    pub invoice_multi_day: bool,
    /// `Backup` line items without `clusterName`.
    #[arg(long, env = "ATLAS_SIM_INVOICE_WITHOUT_CLUSTER_NAME")]
    pub invoice_without_cluster_name: bool,
    /// Line items carry `tags` as the spec's map of lists.
    #[arg(long, env = "ATLAS_SIM_INVOICE_TAGS")]
    pub invoice_tags: bool,
    /// The first org pays for the others: its pending invoice holds theirs in
    /// `linkedInvoices`.
    #[arg(long, env = "ATLAS_SIM_INVOICE_LINKED_ORGS")]
    pub invoice_linked_orgs: bool,
    /// What a closed invoice's line items (`lineItems:search`, no `sku` field) say in
    /// `description` (undocumented by Atlas).
    #[arg(long, env = "ATLAS_SIM_INVOICE_CLOSED_DESCRIPTION", value_enum, default_value_t = SimClosedDescription::Sku)]
    pub invoice_closed_description: SimClosedDescription,
}

/// What a closed invoice's items say in `description`, as a command-line value (the
/// simulator's `ClosedDescription`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimClosedDescription {
    /// Exactly the SKU (`ATLAS_AWS_INSTANCE_M30`).
    Sku,
    /// The SKU, then other information (`ATLAS_AWS_INSTANCE_M30 - Cluster0 (2026-10-31)`).
    SkuAndDetails,
    /// A human-readable name without the SKU code (`AWS Instance M30`).
    Name,
}

/// How "not ready" is shown, as a command-line value.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimNotReady {
    /// `{"status":102}` envelope.
    Envelope,
    /// Wait `--not-ready-delay`, then the envelope.
    Timeout,
    /// Drop the connection mid-response.
    Close,
}

/// How JSON result rows spell the project and cluster keys, as a command-line value (the
/// simulator's `RowKeys`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimRowKeys {
    /// `projectId`, `projectName`, `clusterId`, `clusterName`.
    ProjectId,
    /// `groupId`, `groupName`, `clusterUniqueId`, `clusterName` (the API's path naming and
    /// the CSV's "Cluster Unique Id").
    GroupId,
    /// `grp`, `grpLabel`, `clstr`, `clstrLabel`: spellings no client can guess, to show that
    /// a client reports a decode problem instead of silently dropping the labels.
    Unknown,
}

/// How a CSV result is laid out, as a command-line value (the simulator's `CsvLayout`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
// The variants' docs are the simulator's, word for word: they are the `--help` text.
#[allow(rustdoc::broken_intra_doc_links)]
pub enum SimCsvLayout {
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
