//! The simulated organisations, projects, clusters and their monthly usage records.
//!
//! Everything is generated from a seed in one pass (O(records)), so a 500k-series data set
//! builds in about a second. Three kinds of records exist, as in real Atlas invoices:
//! - cluster-level: a project and a cluster, one per billed service of the cluster per month;
//! - project-level, no cluster: `App Services` (every project) and `Charts` (every other project);
//! - org-level, no project and no cluster: `Support` every month, and `Credits` (a negative
//!   amount) in about one month in four.
//!
//! Besides the `clusters_per_project` live dedicated clusters of each of the
//! `projects_per_org` live projects, the account has what real ones have (each switchable in
//! [`SimConfig`]); they come after the regular ones, so indexes below `clusters_per_project`
//! and `projects_per_org` are always live and dedicated:
//! - **Flex clusters** (`flex_clusters`): one in every even-indexed project (0, 2, ...), right
//!   after the dedicated clusters; it bills `Clusters` every month and is listed only by the
//!   Flex endpoint.
//! - **Deleted clusters** (`deleted_clusters`): projects 0, 3, 6, ... (`p % 3 == 0`) have one
//!   more cluster, `legacy-etl`, deleted `2 + p % 5` months before the current month; projects
//!   1, 4, 7, ... (`p % 3 == 1`) have `old-billing`, deleted `3 + p % 4` months ago with its
//!   backups retained: it bills `Backup` every month after its deletion. A deleted cluster
//!   bills up to and including the month it was deleted in, and nothing of its own after.
//! - **Deleted projects** (`deleted_projects`): each org has one more project (index
//!   `projects_per_org`, named "Retired Project") deleted 6 months ago, with two clusters
//!   deleted along with it (Atlas deletes no project that still has clusters).
//! - **Tags** (`tags`): see [`project_tags`] and [`cluster_tags`].
//!
//! Deletion months are clamped to the first month of the window.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::month::Month;

use super::SimConfig;

/// Services a cluster can bill (the first `services_per_cluster` of a per-cluster rotation).
pub const CLUSTER_SERVICES: &[&str] = &[
    "Clusters",
    "Storage",
    "Backup",
    "Data Transfer",
    "BI Connector",
    "Atlas Data Federation",
    "Atlas Stream Processing",
    "Serverless Instances",
    "DSC Compute",
    "DSC Storage",
    "Legacy Backup",
    "Premium Features",
    "Automated Embedding",
    "Native Reranking",
    "AI Model APIs",
];

const ORG_NAMES: &[&str] = &[
    "ACME \"Prod\" \\ EU",
    "Zürich Analytics",
    "東京 Retail",
    "Globex Corporation",
    "Initech",
    "Umbrella Health",
    "Soylent & Co.",
    "Björk Logistics",
];

const PROJECT_NAMES: &[&str] = &[
    "Production",
    "Staging",
    "Analytics Platform",
    "東京 Web",
    "Données clients",
    "Mobile Backend",
    "ML Pipeline",
    "Payments (PCI)",
    "Internal Tools",
    "O'Brien's Lab",
];

const CLUSTER_NAMES: &[&str] = &[
    "prod-main",
    "analytics",
    "cache",
    "reporting",
    "events",
    "search",
    "archive",
    "sessions",
];

/// Values of the `team` tag: spaces, accents and CJK, as customers write them.
const TEAMS: &[&str] = &[
    "payments",
    "Data Platform",
    "équipe-données",
    "東京チーム",
    "sre",
];

/// Values of the `env` tag.
const ENVS: &[&str] = &["production", "staging", "dev"];

/// A resource tag: a `{"key", "value"}` pair, each 1 to 255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTag {
    /// The tag's key, e.g. `team`.
    pub key: String,
    /// The tag's value, e.g. `Data Platform`.
    pub value: String,
}

fn tag(key: &str, value: &str) -> SimTag {
    SimTag {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// Tags of project `p` (by index within its org): none when `p % 4 == 3`; otherwise `team`
/// (`TEAMS[p % 5]`) and `env` (`ENVS[p % 3]`), plus `cost-centre` = `CC <1000 + p>` (a space
/// in the value) when `p` is even.
pub fn project_tags(p: usize) -> Vec<SimTag> {
    if p % 4 == 3 {
        return Vec::new();
    }
    let mut tags = vec![
        tag("team", TEAMS[p % TEAMS.len()]),
        tag("env", ENVS[p % ENVS.len()]),
    ];
    if p.is_multiple_of(2) {
        tags.push(tag("cost-centre", &format!("CC {}", 1000 + p)));
    }
    tags
}

/// Tags of cluster `c` of project `p`: none when `c % 3 == 2`; otherwise `team` (the
/// project's, or `TEAMS[(p + c) % 5]` when the project has none), and `env` (the project's,
/// or `dev`) only when `c` is even: so cluster 1 lacks the `env` key its project has.
pub fn cluster_tags(p: usize, c: usize) -> Vec<SimTag> {
    if c % 3 == 2 {
        return Vec::new();
    }
    let project = project_tags(p);
    let of_project = |key: &str| {
        project
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.clone())
    };
    let mut tags = vec![SimTag {
        key: "team".to_string(),
        value: of_project("team").unwrap_or_else(|| TEAMS[(p + c) % TEAMS.len()].to_string()),
    }];
    if c.is_multiple_of(2) {
        tags.push(SimTag {
            key: "env".to_string(),
            value: of_project("env").unwrap_or_else(|| "dev".to_string()),
        });
    }
    tags
}

/// A complete, immutable snapshot of the simulated Atlas account.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Organisations, each with its projects and their clusters (deleted ones included).
    pub orgs: Vec<SimOrg>,
    /// Monthly usage records, grouped by organisation (all records of one org are adjacent).
    pub usage: Vec<UsageRecord>,
    /// `usage[org_ranges[i]]` are the records of `orgs[i]`.
    org_ranges: Vec<Range<usize>>,
    /// Org id to index into `orgs`.
    org_index: HashMap<String, usize>,
    /// Project id to (org index, project index).
    project_index: HashMap<String, (usize, usize)>,
    /// Cluster id to (org index, project index, cluster index).
    cluster_index: HashMap<String, (usize, usize, usize)>,
}

/// A simulated Atlas organisation.
#[derive(Debug, Clone)]
pub struct SimOrg {
    /// 24 lowercase hex characters.
    pub id: String,
    /// Display name; any UTF-8, may contain quotes and backslashes.
    pub name: String,
    /// The organisation's projects (Atlas "groups"), deleted ones included.
    pub projects: Vec<SimProject>,
}

impl SimOrg {
    /// The projects the projects listing returns: those not deleted.
    pub fn listed_projects(&self) -> impl Iterator<Item = &SimProject> {
        self.projects.iter().filter(|p| !p.is_deleted())
    }

    /// Every cluster of every project, deleted and Flex ones included, with its project.
    pub fn all_clusters(&self) -> impl Iterator<Item = (&SimProject, &SimCluster)> {
        self.projects
            .iter()
            .flat_map(|p| p.clusters.iter().map(move |c| (p, c)))
    }
}

/// A simulated Atlas project.
#[derive(Debug, Clone)]
pub struct SimProject {
    /// 24 lowercase hex characters.
    pub id: String,
    /// Display name; any UTF-8.
    pub name: String,
    /// Resource tags, possibly none.
    pub tags: Vec<SimTag>,
    /// The project's clusters: dedicated, Flex and deleted ones.
    pub clusters: Vec<SimCluster>,
    /// The month the project was deleted in: it bills up to and including that month, and no
    /// listing returns it or its clusters (its cluster listings answer 404).
    pub deleted: Option<Month>,
}

impl SimProject {
    /// Whether the project was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }

    /// The clusters `GET /groups/{id}/clusters` returns (with
    /// `includeDeletedWithRetainedBackups` as given); none for a deleted project (404).
    pub fn listed_clusters(&self, include_retained: bool) -> impl Iterator<Item = &SimCluster> {
        let live = !self.is_deleted();
        self.clusters
            .iter()
            .filter(move |c| live && c.in_clusters_listing(include_retained))
    }

    /// The clusters `GET /groups/{id}/flexClusters` returns; none for a deleted project (404).
    pub fn listed_flex_clusters(&self) -> impl Iterator<Item = &SimCluster> {
        let live = !self.is_deleted();
        self.clusters
            .iter()
            .filter(move |c| live && c.in_flex_listing())
    }
}

/// Whether a cluster is a dedicated one or a Flex one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// Listed by `GET /groups/{id}/clusters`.
    Dedicated,
    /// Listed only by `GET /groups/{id}/flexClusters` (since January 2026).
    Flex,
}

/// A simulated Atlas cluster.
#[derive(Debug, Clone)]
pub struct SimCluster {
    /// The cluster's unique id: 24 lowercase hex characters.
    pub id: String,
    /// Name matching `^[a-zA-Z0-9][a-zA-Z0-9-]*$`, unique within its project.
    pub name: String,
    /// Dedicated or Flex.
    pub kind: ClusterKind,
    /// Resource tags, possibly none.
    pub tags: Vec<SimTag>,
    /// The month the cluster was deleted in: it bills up to and including that month.
    pub deleted: Option<Month>,
    /// Deleted with its backups retained: listed with `includeDeletedWithRetainedBackups=true`
    /// and still billing `Backup` after its deletion.
    pub retained_backups: bool,
}

impl SimCluster {
    /// Whether the cluster is a Flex cluster.
    pub fn is_flex(&self) -> bool {
        self.kind == ClusterKind::Flex
    }

    /// Whether the cluster was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }

    /// Whether the clusters listing of its (live) project returns it.
    pub fn in_clusters_listing(&self, include_retained: bool) -> bool {
        self.kind == ClusterKind::Dedicated
            && (self.deleted.is_none() || (include_retained && self.retained_backups))
    }

    /// Whether the Flex listing of its (live) project returns it.
    pub fn in_flex_listing(&self) -> bool {
        self.kind == ClusterKind::Flex && self.deleted.is_none()
    }
}

/// One month of one service's charges at one place in the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Index into [`Dataset::orgs`].
    pub org: usize,
    /// Index into the org's `projects`; `None` for org-level charges (`Support`, `Credits`).
    pub project: Option<usize>,
    /// Index into the project's `clusters`; `None` for org- and project-level charges.
    pub cluster: Option<usize>,
    /// Atlas service name, e.g. `Clusters`.
    pub service: String,
    /// The usage month.
    pub month: Month,
    /// Amount in US cents; negative for credits.
    pub amount_cents: i64,
}

/// Which group a record lands in and which dimensions a result row shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One row per (org, month); org fields only.
    Organizations,
    /// One row per (project, service, month); org, project and service fields.
    Projects,
    /// One row per (cluster, service, month); org, project, cluster and service fields.
    Clusters,
    /// One row per (service, month); org and service fields.
    Services,
}

impl GroupBy {
    /// Parses the API's `groupBy` value.
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "organizations" => Some(GroupBy::Organizations),
            "projects" => Some(GroupBy::Projects),
            "clusters" => Some(GroupBy::Clusters),
            "services" => Some(GroupBy::Services),
            _ => None,
        }
    }
}

/// Object-id-like hex ids, unique within one generation run thanks to the counter part.
struct IdGen {
    prefix: u32,
    counter: u64,
}

impl IdGen {
    fn next(&mut self, rng: &mut SmallRng) -> String {
        self.counter += 1;
        let random: u32 = rng.r#gen::<u32>() & 0x00ff_ffff;
        // 8 + 6 + 10 hex digits = 24.
        format!(
            "{:08x}{:06x}{:010x}",
            self.prefix,
            random,
            self.counter & 0xff_ffff_ffff
        )
    }
}

/// Project names that break naive exposition: quotes, backslashes, a newline, an empty
/// name, unicode, a very long name, and text that looks like exposition syntax.
fn hostile_name(i: usize) -> String {
    match i % 6 {
        0 => "a\"b\\c\nd".to_string(),
        1 => String::new(),
        2 => "Zürich 東京 🚀".to_string(),
        3 => "x".repeat(2048),
        4 => "} 1\n# EOF\nfake_metric{a=\"b\"} 2".to_string(),
        _ => format!("plain-{i}"),
    }
}

fn pick_name(list: &[&str], i: usize) -> String {
    let base = list[i % list.len()];
    match i / list.len() {
        0 => base.to_string(),
        round => format!("{base} {}", round + 1),
    }
}

fn cluster_name(c: usize) -> String {
    match c / CLUSTER_NAMES.len() {
        0 => CLUSTER_NAMES[c % CLUSTER_NAMES.len()].to_string(),
        round => format!("{}-{}", CLUSTER_NAMES[c % CLUSTER_NAMES.len()], round + 1),
    }
}

/// The generator's state while one org is built.
struct Gen<'a> {
    rng: SmallRng,
    ids: IdGen,
    usage: &'a mut Vec<UsageRecord>,
    /// First and last (current) month of the window.
    first: Month,
    current: Month,
    services: usize,
    tags: bool,
}

impl Gen<'_> {
    /// `current - back`, not before the window's first month.
    fn months_ago(&self, back: i64) -> Month {
        self.current.plus(-back).max(self.first)
    }

    /// Pushes one record per month of `[from, to]` (none when `to < from`) with the amount
    /// drifting around `base` (±10 %, slight growth).
    fn push_months(
        &mut self,
        (org, project, cluster): (usize, Option<usize>, Option<usize>),
        service: &str,
        (from, to): (Month, Month),
        base: i64,
    ) {
        for i in 0..=to.since(from) {
            let growth = base * i / 100;
            let jitter = base / 10;
            let amount = base + growth + self.rng.gen_range(-jitter..=jitter);
            self.usage.push(UsageRecord {
                org,
                project,
                cluster,
                service: service.to_string(),
                month: from.plus(i),
                amount_cents: amount.max(1),
            });
        }
    }

    /// A dedicated cluster billing `Clusters` and a rotation of other services over the
    /// window up to `deleted` (or the current month).
    fn dedicated(
        &mut self,
        (o, p, c): (usize, usize, usize),
        name: String,
        tags: Vec<SimTag>,
        deleted: Option<Month>,
        retained_backups: bool,
    ) -> SimCluster {
        let id = self.ids.next(&mut self.rng);
        let last = deleted.unwrap_or(self.current);
        // "Clusters" always, then a rotation of the others.
        let offset = self.rng.gen_range(1..CLUSTER_SERVICES.len());
        let size = self.rng.gen_range(2_000..250_000_i64);
        for s in 0..self.services {
            let service = if s == 0 {
                CLUSTER_SERVICES[0]
            } else {
                let k = (offset + s - 1) % (CLUSTER_SERVICES.len() - 1);
                CLUSTER_SERVICES[1 + k]
            };
            let base = if s == 0 {
                size
            } else {
                size * self.rng.gen_range(3..40_i64) / 100 + 1
            };
            self.push_months((o, Some(p), Some(c)), service, (self.first, last), base);
        }
        if let (Some(d), true) = (deleted, retained_backups) {
            // Retained snapshots keep billing after the cluster is gone.
            let base = self.rng.gen_range(500..20_000_i64);
            self.push_months(
                (o, Some(p), Some(c)),
                "Backup",
                (d.plus(1), self.current),
                base,
            );
        }
        SimCluster {
            id,
            name,
            kind: ClusterKind::Dedicated,
            tags: if self.tags { tags } else { Vec::new() },
            deleted,
            retained_backups,
        }
    }

    /// A Flex cluster: `Clusters` only, a few dollars a month, the whole window.
    fn flex(&mut self, (o, p, c): (usize, usize, usize)) -> SimCluster {
        let id = self.ids.next(&mut self.rng);
        let base = self.rng.gen_range(800..3_000_i64);
        self.push_months(
            (o, Some(p), Some(c)),
            "Clusters",
            (self.first, self.current),
            base,
        );
        let tags = vec![tag("team", TEAMS[(p + 1) % TEAMS.len()]), tag("env", "dev")];
        SimCluster {
            id,
            name: format!("flex-sandbox-{p}"),
            kind: ClusterKind::Flex,
            tags: if self.tags { tags } else { Vec::new() },
            deleted: None,
            retained_backups: false,
        }
    }

    /// Project-level charges without a cluster, up to `last`.
    fn project_charges(&mut self, o: usize, p: usize, last: Month) {
        let app = self.rng.gen_range(1_00..80_00_i64);
        self.push_months((o, Some(p), None), "App Services", (self.first, last), app);
        if p.is_multiple_of(2) {
            let charts = self.rng.gen_range(50..20_00_i64);
            self.push_months((o, Some(p), None), "Charts", (self.first, last), charts);
        }
    }
}

impl Dataset {
    /// Generates the data set described by `config`, deterministically from its seed.
    pub fn generate(config: &SimConfig, current: Month) -> Dataset {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let ids = IdGen {
            prefix: 0x6600_0000 | (rng.r#gen::<u32>() & 0x00ff_ffff),
            counter: 0,
        };
        let months = i64::from(config.months.max(1));
        let mut usage = Vec::new();
        let mut g = Gen {
            rng,
            ids,
            usage: &mut usage,
            first: current.plus(1 - months),
            current,
            services: config.services_per_cluster.clamp(1, CLUSTER_SERVICES.len()),
            tags: config.tags,
        };

        let mut orgs = Vec::with_capacity(config.orgs);
        let mut org_ranges = Vec::with_capacity(config.orgs);
        let live_projects = config.projects_per_org;
        let all_projects = live_projects + usize::from(config.deleted_projects);
        for o in 0..config.orgs {
            let start = g.usage.len();
            let mut projects = Vec::with_capacity(all_projects);
            for p in 0..all_projects {
                let retired = p >= live_projects;
                let deleted = retired.then(|| g.months_ago(6));
                let mut clusters = Vec::new();
                let dedicated = if retired {
                    2
                } else {
                    config.clusters_per_project
                };
                for c in 0..dedicated {
                    let cluster = g.dedicated(
                        (o, p, c),
                        cluster_name(c),
                        cluster_tags(p, c),
                        deleted,
                        false,
                    );
                    clusters.push(cluster);
                }
                if !retired {
                    if config.flex_clusters && p % 2 == 0 {
                        let c = clusters.len();
                        clusters.push(g.flex((o, p, c)));
                    }
                    if config.deleted_clusters && p % 3 == 0 {
                        let c = clusters.len();
                        let when = g.months_ago(2 + (p % 5) as i64);
                        let tags = cluster_tags(p, c);
                        clusters.push(g.dedicated(
                            (o, p, c),
                            "legacy-etl".to_string(),
                            tags,
                            Some(when),
                            false,
                        ));
                    }
                    if config.deleted_clusters && p % 3 == 1 {
                        let c = clusters.len();
                        let when = g.months_ago(3 + (p % 4) as i64);
                        let tags = cluster_tags(p, c);
                        clusters.push(g.dedicated(
                            (o, p, c),
                            "old-billing".to_string(),
                            tags,
                            Some(when),
                            true,
                        ));
                    }
                }
                g.project_charges(o, p, deleted.unwrap_or(current));
                let id = g.ids.next(&mut g.rng);
                projects.push(SimProject {
                    id,
                    name: if config.hostile_names {
                        hostile_name(p)
                    } else if retired {
                        "Retired Project".to_string()
                    } else {
                        pick_name(PROJECT_NAMES, p)
                    },
                    tags: if config.tags {
                        project_tags(p)
                    } else {
                        Vec::new()
                    },
                    clusters,
                    deleted,
                });
            }
            // Org-level charges: support every month, credits now and then.
            let support = g.rng.gen_range(10_000..150_000_i64);
            g.push_months((o, None, None), "Support", (g.first, current), support);
            for i in 0..months {
                if g.rng.gen_range(0..4) == 0 {
                    let amount = -g.rng.gen_range(1_000..50_000_i64);
                    g.usage.push(UsageRecord {
                        org: o,
                        project: None,
                        cluster: None,
                        service: "Credits".to_string(),
                        month: g.first.plus(i),
                        amount_cents: amount,
                    });
                }
            }
            let id = g.ids.next(&mut g.rng);
            orgs.push(SimOrg {
                id,
                name: pick_name(ORG_NAMES, o),
                projects,
            });
            org_ranges.push(start..g.usage.len());
        }
        Dataset::from_parts(orgs, usage, org_ranges)
    }

    fn from_parts(
        orgs: Vec<SimOrg>,
        usage: Vec<UsageRecord>,
        org_ranges: Vec<Range<usize>>,
    ) -> Dataset {
        let mut org_index = HashMap::with_capacity(orgs.len());
        let mut project_index = HashMap::new();
        let mut cluster_index = HashMap::new();
        for (o, org) in orgs.iter().enumerate() {
            org_index.insert(org.id.clone(), o);
            for (p, project) in org.projects.iter().enumerate() {
                project_index.insert(project.id.clone(), (o, p));
                for (c, cluster) in project.clusters.iter().enumerate() {
                    cluster_index.insert(cluster.id.clone(), (o, p, c));
                }
            }
        }
        Dataset {
            orgs,
            usage,
            org_ranges,
            org_index,
            project_index,
            cluster_index,
        }
    }

    /// A copy with every amount multiplied by `numerator / denominator`, rounded half away
    /// from zero. A zero denominator leaves the amounts unchanged.
    pub fn scaled(&self, numerator: i64, denominator: i64) -> Dataset {
        let mut copy = self.clone();
        if denominator == 0 {
            return copy;
        }
        for r in &mut copy.usage {
            let n = i128::from(r.amount_cents) * i128::from(numerator);
            let d = i128::from(denominator);
            let (mut q, rem) = (n / d, n % d);
            if 2 * rem.abs() >= d.abs() {
                q += n.signum() * d.signum();
            }
            r.amount_cents = i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX });
        }
        copy
    }

    /// Marks the cluster deleted in `month` (no backups retained): from now on no listing
    /// returns it; its records stay. False when unknown or already deleted.
    pub(crate) fn mark_cluster_deleted(&mut self, id: &str, month: Month) -> bool {
        let Some((o, p, c)) = self.cluster_by_id(id) else {
            return false;
        };
        let cluster = &mut self.orgs[o].projects[p].clusters[c];
        if cluster.deleted.is_some() {
            return false;
        }
        cluster.deleted = Some(month);
        cluster.retained_backups = false;
        true
    }

    /// Marks the project, and its clusters not yet deleted, deleted in `month`. False when
    /// unknown or already deleted.
    pub(crate) fn mark_project_deleted(&mut self, id: &str, month: Month) -> bool {
        let Some((o, p)) = self.project_by_id(id) else {
            return false;
        };
        let project = &mut self.orgs[o].projects[p];
        if project.deleted.is_some() {
            return false;
        }
        project.deleted = Some(month);
        for c in &mut project.clusters {
            if c.deleted.is_none() {
                c.deleted = Some(month);
                c.retained_backups = false;
            }
        }
        true
    }

    /// Index of the org with this id.
    pub fn org_by_id(&self, id: &str) -> Option<usize> {
        self.org_index.get(id).copied()
    }

    /// (org index, project index) of the project with this id (deleted ones included).
    pub fn project_by_id(&self, id: &str) -> Option<(usize, usize)> {
        self.project_index.get(id).copied()
    }

    /// (org, project, cluster) indexes of the cluster with this unique id (deleted and Flex
    /// ones included).
    pub fn cluster_by_id(&self, id: &str) -> Option<(usize, usize, usize)> {
        self.cluster_index.get(id).copied()
    }

    /// The usage records of org `org` (by index).
    pub fn org_usage(&self, org: usize) -> &[UsageRecord] {
        self.org_ranges
            .get(org)
            .and_then(|r| self.usage.get(r.clone()))
            .unwrap_or(&[])
    }

    /// The project and cluster a record is billed to (`None` above its level).
    pub fn place(&self, r: &UsageRecord) -> (Option<&SimProject>, Option<&SimCluster>) {
        let project = r
            .project
            .and_then(|p| self.orgs.get(r.org).and_then(|o| o.projects.get(p)));
        let cluster = r
            .cluster
            .and_then(|c| project.and_then(|p| p.clusters.get(c)));
        (project, cluster)
    }

    /// Exact total in cents of the records of `org_id` in [`start`, `end`) for which `pred`
    /// holds. Unknown org: 0. The building block of the helpers below.
    pub fn sum_cents(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
        pred: impl Fn(&UsageRecord) -> bool,
    ) -> i64 {
        let Some(org) = self.org_by_id(org_id) else {
            return 0;
        };
        self.org_usage(org)
            .iter()
            .filter(|r| r.month >= start && r.month < end && pred(r))
            .map(|r| r.amount_cents)
            .sum()
    }

    /// Exact total in cents of what a query over [`start`, `end`) for `org_id` returns when
    /// nothing is filtered out: no `groupBy` or grouped by `organizations` or `services`, or
    /// grouped by `projects`/`clusters` with every id listed (deleted and Flex ones included)
    /// and `includePartialMatches: true`. Lets tests check results "correct to the cent".
    /// Unknown org: 0.
    pub fn total_cents(&self, org_id: &str, start: Month, end: Month) -> i64 {
        self.sum_cents(org_id, start, end, |_| true)
    }

    /// Exact total in cents of a query over [`start`, `end`) for `org_id` grouped by
    /// `group_by`, when the `projects`/`clusters` filter lists every id of the org (deleted
    /// and Flex ones included). Without `include_partial_matches`, grouping by projects drops
    /// org-level charges, and grouping by clusters also drops project-level ones.
    pub fn total_cents_grouped(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
        group_by: GroupBy,
        include_partial_matches: bool,
    ) -> i64 {
        self.sum_cents(org_id, start, end, |r| {
            include_partial_matches
                || match group_by {
                    GroupBy::Projects => r.project.is_some(),
                    GroupBy::Clusters => r.cluster.is_some(),
                    GroupBy::Organizations | GroupBy::Services => true,
                }
        })
    }

    /// Org-level charges (no project: `Support`, `Credits`) of `org_id` in [`start`, `end`).
    pub fn org_level_cents(&self, org_id: &str, start: Month, end: Month) -> i64 {
        self.sum_cents(org_id, start, end, |r| r.project.is_none())
    }

    /// Project-level charges (a project, no cluster: `App Services`, `Charts`) of every
    /// project of `org_id`, deleted ones included, in [`start`, `end`).
    pub fn project_level_cents(&self, org_id: &str, start: Month, end: Month) -> i64 {
        self.sum_cents(org_id, start, end, |r| {
            r.project.is_some() && r.cluster.is_none()
        })
    }

    /// Everything billed to the project `project_id` (its clusters and its project-level
    /// charges) in [`start`, `end`); what a `projects` query returns for it. Unknown: 0.
    pub fn project_cents(&self, project_id: &str, start: Month, end: Month) -> i64 {
        let Some((o, p)) = self.project_by_id(project_id) else {
            return 0;
        };
        let org_id = &self.orgs[o].id;
        self.sum_cents(org_id, start, end, |r| r.project == Some(p))
    }

    /// Everything billed to the cluster `cluster_id` (dedicated, Flex or deleted) in
    /// [`start`, `end`); what a `clusters` query returns for it. Unknown: 0.
    pub fn cluster_cents(&self, cluster_id: &str, start: Month, end: Month) -> i64 {
        let Some((o, p, c)) = self.cluster_by_id(cluster_id) else {
            return 0;
        };
        let org_id = &self.orgs[o].id;
        self.sum_cents(org_id, start, end, |r| {
            r.project == Some(p) && r.cluster == Some(c)
        })
    }

    /// What `service` costs `org_id` in [`start`, `end`), at every level.
    pub fn service_cents(&self, org_id: &str, service: &str, start: Month, end: Month) -> i64 {
        self.sum_cents(org_id, start, end, |r| r.service == service)
    }

    /// The org's total per (month, service) in [`start`, `end`): exactly the rows a query
    /// without `groupBy` returns.
    pub fn monthly_service_cents(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
    ) -> BTreeMap<(Month, String), i64> {
        let mut out = BTreeMap::new();
        if let Some(org) = self.org_by_id(org_id) {
            for r in self.org_usage(org) {
                if r.month >= start && r.month < end {
                    *out.entry((r.month, r.service.clone())).or_insert(0) += r.amount_cents;
                }
            }
        }
        out
    }

    /// The org's total per month in [`start`, `end`) (months without records absent).
    pub fn monthly_cents(&self, org_id: &str, start: Month, end: Month) -> BTreeMap<Month, i64> {
        let mut out = BTreeMap::new();
        for ((month, _), cents) in self.monthly_service_cents(org_id, start, end) {
            *out.entry(month).or_insert(0) += cents;
        }
        out
    }

    /// Charges of `org_id` in [`start`, `end`) that no listing can attribute today: everything
    /// of deleted projects, and the cluster-level charges of deleted clusters (except, when
    /// `include_retained`, those deleted with retained backups, which the clusters listing
    /// still returns with `includeDeletedWithRetainedBackups=true`). Flex clusters count as
    /// listed (by their own endpoint).
    pub fn unlisted_cents(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
        include_retained: bool,
    ) -> i64 {
        self.sum_cents(org_id, start, end, |r| match self.place(r) {
            (Some(p), _) if p.is_deleted() => true,
            (_, Some(c)) => !(c.in_clusters_listing(include_retained) || c.in_flex_listing()),
            _ => false,
        })
    }

    /// Number of distinct (place, service) series times months: what an exporter exposing
    /// every record as one series would hold.
    pub fn series(&self) -> usize {
        self.usage.len()
    }
}
