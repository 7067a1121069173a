//! Generation of a [`Dataset`] from a [`SimConfig`], deterministic from its seed.
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
//! - **Tags** (`tags`): see [`project_tags`], [`cluster_tags`] and [`flex_tags`].
//!
//! Deletion months are clamped to the first month of the window.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{ClusterKind, Dataset, SimCluster, SimOrg, SimProject, SimTag, UsageRecord};
use crate::month::Month;
use crate::simulator::SimConfig;

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

/// Values of the `team` tag, as customers write them: a space, accents, CJK, and one with a
/// quote and a backslash (label values must be escaped).
const TEAMS: &[&str] = &[
    "payments",
    "Data Platform",
    "données",
    "plateforme-é",
    "R&D \"labs\" \\ EU",
    "東京チーム",
];

/// Values of the `env` tag.
const ENVS: &[&str] = &["production", "staging", "dev"];

fn tag(key: &str, value: &str) -> SimTag {
    SimTag {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// Tags of project `p` (by index within its org): none when `p % 4 == 3`; otherwise `team`
/// (`TEAMS[p % 6]`) and `env` (`ENVS[p % 3]`), plus `cost-center` = `CC <1000 + p>` (a
/// hyphen in the key, a space in the value) when `p` is even. `cost-center` is a
/// project-only key: no cluster carries it.
pub fn project_tags(p: usize) -> Vec<SimTag> {
    if p % 4 == 3 {
        return Vec::new();
    }
    let mut tags = vec![
        tag("team", TEAMS[p % TEAMS.len()]),
        tag("env", ENVS[p % ENVS.len()]),
    ];
    if p.is_multiple_of(2) {
        tags.push(tag("cost-center", &format!("CC {}", 1000 + p)));
    }
    tags
}

/// Tags of dedicated cluster `c` of project `p`, by `c % 3`:
/// - 0: `team` and `env`, the project's (or `TEAMS[(p + c) % 6]` and `dev` when the project
///   has none);
/// - 1: `team` = `TEAMS[(p + 1) % 6]`, never the project's own team (a cluster run by
///   another team), and no `env`: the key its project has comes from the project;
/// - 2: none at all.
pub fn cluster_tags(p: usize, c: usize) -> Vec<SimTag> {
    let project = project_tags(p);
    let of_project = |key: &str| {
        project
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.clone())
    };
    match c % 3 {
        0 => vec![
            tag(
                "team",
                &of_project("team").unwrap_or_else(|| TEAMS[(p + c) % TEAMS.len()].to_string()),
            ),
            tag(
                "env",
                &of_project("env").unwrap_or_else(|| "dev".to_string()),
            ),
        ],
        1 => vec![tag("team", TEAMS[(p + 1) % TEAMS.len()])],
        _ => Vec::new(),
    }
}

/// Tags of the Flex cluster of project `p`: `team` = `TEAMS[(p + 2) % 6]` and `env` = `dev`.
pub fn flex_tags(p: usize) -> Vec<SimTag> {
    vec![tag("team", TEAMS[(p + 2) % TEAMS.len()]), tag("env", "dev")]
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
        let tags = flex_tags(p);
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
                    // At most one deleted cluster a project: `legacy-etl` gone for good, or
                    // `old-billing` with its backups retained.
                    let gone = match p % 3 {
                        0 => Some(("legacy-etl", 2 + (p % 5) as i64, false)),
                        1 => Some(("old-billing", 3 + (p % 4) as i64, true)),
                        _ => None,
                    };
                    if let Some((name, back, retained)) = gone.filter(|_| config.deleted_clusters) {
                        let c = clusters.len();
                        let when = g.months_ago(back);
                        let tags = cluster_tags(p, c);
                        clusters.push(g.dedicated(
                            (o, p, c),
                            name.to_string(),
                            tags,
                            Some(when),
                            retained,
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
}
