//! The command line of the `simulate` subcommand ([`SimArgs`]) and the [`SimConfig`] it
//! describes.

use std::net::SocketAddr;
use std::time::Duration;

use super::{CsvLayout, NotReady, RowKeys, SimConfig};

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
