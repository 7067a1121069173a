//! What shapes a simulator: the data's size, the timing of results, the undocumented
//! variants it can serve ([`RowKeys`], [`CsvLayout`], [`NotReady`]) and the credentials it
//! accepts.

use std::time::Duration;

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

/// Everything that shapes a [`Simulator`](super::Simulator).
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
    /// How many services (from [`CLUSTER_SERVICES`](super::CLUSTER_SERVICES), `Clusters` always first) each cluster bills.
    pub services_per_cluster: usize,
    /// Months of history ending at `current_month`.
    pub months: u32,
    /// The current month; `None` is the month of the clock at [`Simulator::new`](super::Simulator::new).
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
    /// How long a Digest nonce stays fresh; older ones are answered with `stale=true` (and
    /// forgotten after four times this).
    pub nonce_ttl: Duration,
    /// A Digest nonce lets in this many answers, then goes stale: later answers over it get
    /// `stale=true` (`Some(0)`: every nonce is stale at once). Atlas documents no such
    /// number; a server may.
    pub nonce_stale_after: Option<u32>,
    /// A Digest nonce is forgotten after letting in this many answers (as another node behind
    /// a load balancer, or a restart, would); a later answer over it is met as an unknown
    /// nonce (see [`SimConfig::unknown_nonce_stale`]).
    pub nonce_forgotten_after: Option<u32>,
    /// Every challenge offers the server's current nonce, the same to every client, until it
    /// expires, goes stale or is forgotten (as a server with one nonce per period does); by
    /// default each challenge gets a new nonce.
    pub shared_nonce: bool,
    /// Every this many correct answers over a usable nonce, answer `stale=true` anyway (a
    /// spurious stale: the nonce stays usable). `None` or `Some(0)`: never.
    pub spurious_stale_every: Option<u64>,
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
    /// Leave the `tags` key out of a project or cluster that has no tag, instead of listing
    /// `[]` (the spec does not make the field required; a client must not rely on it).
    pub omit_empty_tags: bool,
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
    /// Answer a correct Digest response over a nonce the simulator does not know (forgotten:
    /// see [`Simulator::forget_nonces`](super::Simulator::forget_nonces) and
    /// [`SimConfig::nonce_forgotten_after`]) with `stale=true`; when `false`, with a plain
    /// fresh challenge (`stale=false`), as a restarted server or another node behind a load
    /// balancer does: it cannot tell the nonce was ever valid.
    pub unknown_nonce_stale: bool,
    /// Answer a poll that asks for CSV with `envelope=true` with this status (400 or 406) and
    /// an Atlas error, as a server that refuses to wrap CSV would.
    pub refuse_csv_envelope: Option<u16>,
    /// How the invoice endpoints answer where the public record is silent.
    pub invoices: InvoiceVariants,
}

/// The shape of `listOrgInvoicePending`'s answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvoiceShape {
    /// The spec's `PaginatedApiInvoiceView`: `{"results": [...], "totalCount": N}`.
    #[default]
    Paginated,
    /// A single invoice object with a top-level `lineItems`, as the one public client expects.
    Single,
}

/// What a closed invoice's item (`PublicApiUsageDetailsLineItemView`, no `sku` field) says
/// in `description`, "which can include SKU name and other identifying information": the
/// public record shows no example, so each plausible reading is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClosedDescription {
    /// Exactly the SKU (`ATLAS_AWS_INSTANCE_M30`).
    #[default]
    Sku,
    /// The SKU, then other information (`ATLAS_AWS_INSTANCE_M30 - Cluster0 (2026-10-31)`).
    SkuAndDetails,
    /// A human-readable name without the SKU code (`AWS Instance M30`).
    Name,
}

/// The invoice variants (issue 22). Every one keeps the invoices equal to the Cost Explorer
/// data to the cent per cluster and month (items without `clusterName` per project).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvoiceVariants {
    /// The pending answer's shape.
    pub shape: InvoiceShape,
    /// Items span up to three days (`endDate` at the midnight after the last), not one.
    pub multi_day: bool,
    /// Cluster-level items of `Backup` come without `clusterName`.
    pub without_cluster_name: bool,
    /// Items carry `tags` as the spec's map of lists (the cluster's and project's tags).
    pub tags: bool,
    /// The first org pays for the others (cross-organization billing): its pending answer
    /// holds their invoices in `linkedInvoices`.
    pub linked_orgs: bool,
    /// What a closed invoice's items say in `description`.
    pub closed_description: ClosedDescription,
    /// The day of the current month up to which (exclusive) items are posted; `None`: the
    /// clock's (see [`Simulator::today`](super::Simulator::today)).
    pub today: Option<u32>,
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
            nonce_stale_after: None,
            nonce_forgotten_after: None,
            spurious_stale_every: None,
            shared_nonce: false,
            query_ttl: Duration::from_secs(30 * 60),
            hostile_names: false,
            flex_clusters: true,
            flex_in_clusters_listing: false,
            deleted_clusters: true,
            deleted_projects: true,
            tags: true,
            omit_empty_tags: false,
            row_keys: RowKeys::ProjectId,
            csv_layout: CsvLayout::Extended,
            credentials: SimCredentials::demo(),
            // auth and transport variants
            basic_form_decoded: false,
            unknown_nonce_stale: true,
            refuse_csv_envelope: None,
            invoices: InvoiceVariants::default(),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvLayout {
    /// A preamble line (`Organization: <name>`) and an empty line, then [`CSV_HEADER`](super::CSV_HEADER): the
    /// spec's labels plus `Service` and `Usage Date` (the usage month); `Billed Date` is the
    /// first day of the month after the usage month.
    Extended,
    /// Header first, exactly the spec's labels ([`SPEC_CSV_HEADER`](super::SPEC_CSV_HEADER)) with `Service` inserted
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
