//! The simulated organisations, projects, clusters and their monthly usage records.
//!
//! Everything is generated from a seed in one pass (O(records)), so a 500k-series data set
//! builds in about a second. Three kinds of records exist, as in real Atlas invoices:
//! - cluster-level: a project and a cluster, one per billed service of the cluster per month;
//! - project-level, no cluster: `App Services` (every project) and `Charts` (every other project);
//! - org-level, no project and no cluster: `Support` every month, and `Credits` (a negative
//!   amount) in about one month in four.

use std::collections::HashMap;
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

/// A complete, immutable snapshot of the simulated Atlas account.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Organisations, each with its projects and their clusters.
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
    /// The organisation's projects (Atlas "groups").
    pub projects: Vec<SimProject>,
}

/// A simulated Atlas project.
#[derive(Debug, Clone)]
pub struct SimProject {
    /// 24 lowercase hex characters.
    pub id: String,
    /// Display name; any UTF-8.
    pub name: String,
    /// The project's clusters.
    pub clusters: Vec<SimCluster>,
}

/// A simulated Atlas cluster.
#[derive(Debug, Clone)]
pub struct SimCluster {
    /// The cluster's unique id: 24 lowercase hex characters.
    pub id: String,
    /// Name matching `^[a-zA-Z0-9][a-zA-Z0-9-]*$`, unique within its project.
    pub name: String,
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

impl Dataset {
    /// Generates the data set described by `config`, deterministically from its seed.
    pub fn generate(config: &SimConfig, current: Month) -> Dataset {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let mut ids = IdGen {
            prefix: 0x6600_0000 | (rng.r#gen::<u32>() & 0x00ff_ffff),
            counter: 0,
        };
        let months = i64::from(config.months.max(1));
        let first = current.plus(1 - months);
        let services = config.services_per_cluster.clamp(1, CLUSTER_SERVICES.len());

        let mut orgs = Vec::with_capacity(config.orgs);
        let mut usage = Vec::new();
        let mut org_ranges = Vec::with_capacity(config.orgs);
        for o in 0..config.orgs {
            let start = usage.len();
            let mut projects = Vec::with_capacity(config.projects_per_org);
            for p in 0..config.projects_per_org {
                let mut clusters = Vec::with_capacity(config.clusters_per_project);
                for c in 0..config.clusters_per_project {
                    let name = match c / CLUSTER_NAMES.len() {
                        0 => CLUSTER_NAMES[c % CLUSTER_NAMES.len()].to_string(),
                        round => {
                            format!("{}-{}", CLUSTER_NAMES[c % CLUSTER_NAMES.len()], round + 1)
                        }
                    };
                    clusters.push(SimCluster {
                        id: ids.next(&mut rng),
                        name,
                    });
                    // "Clusters" always, then a rotation of the others.
                    let offset = rng.gen_range(1..CLUSTER_SERVICES.len());
                    let size = rng.gen_range(2_000..250_000_i64);
                    for s in 0..services {
                        let service = if s == 0 {
                            CLUSTER_SERVICES[0]
                        } else {
                            let k = (offset + s - 1) % (CLUSTER_SERVICES.len() - 1);
                            CLUSTER_SERVICES[1 + k]
                        };
                        let base = if s == 0 {
                            size
                        } else {
                            size * rng.gen_range(3..40_i64) / 100 + 1
                        };
                        push_months(
                            &mut usage,
                            &mut rng,
                            first,
                            months,
                            base,
                            |month, amount| UsageRecord {
                                org: o,
                                project: Some(p),
                                cluster: Some(c),
                                service: service.to_string(),
                                month,
                                amount_cents: amount,
                            },
                        );
                    }
                }
                // Project-level charges without a cluster.
                let app = rng.gen_range(1_00..80_00_i64);
                push_months(&mut usage, &mut rng, first, months, app, |month, amount| {
                    UsageRecord {
                        org: o,
                        project: Some(p),
                        cluster: None,
                        service: "App Services".to_string(),
                        month,
                        amount_cents: amount,
                    }
                });
                if p % 2 == 0 {
                    let charts = rng.gen_range(50..20_00_i64);
                    push_months(
                        &mut usage,
                        &mut rng,
                        first,
                        months,
                        charts,
                        |month, amount| UsageRecord {
                            org: o,
                            project: Some(p),
                            cluster: None,
                            service: "Charts".to_string(),
                            month,
                            amount_cents: amount,
                        },
                    );
                }
                projects.push(SimProject {
                    id: ids.next(&mut rng),
                    name: if config.hostile_names {
                        hostile_name(p)
                    } else {
                        pick_name(PROJECT_NAMES, p)
                    },
                    clusters,
                });
            }
            // Org-level charges: support every month, credits now and then.
            let support = rng.gen_range(10_000..150_000_i64);
            push_months(
                &mut usage,
                &mut rng,
                first,
                months,
                support,
                |month, amount| UsageRecord {
                    org: o,
                    project: None,
                    cluster: None,
                    service: "Support".to_string(),
                    month,
                    amount_cents: amount,
                },
            );
            for i in 0..months {
                if rng.gen_range(0..4) == 0 {
                    usage.push(UsageRecord {
                        org: o,
                        project: None,
                        cluster: None,
                        service: "Credits".to_string(),
                        month: first.plus(i),
                        amount_cents: -rng.gen_range(1_000..50_000_i64),
                    });
                }
            }
            orgs.push(SimOrg {
                id: ids.next(&mut rng),
                name: pick_name(ORG_NAMES, o),
                projects,
            });
            org_ranges.push(start..usage.len());
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

    /// Index of the org with this id.
    pub fn org_by_id(&self, id: &str) -> Option<usize> {
        self.org_index.get(id).copied()
    }

    /// (org index, project index) of the project with this id.
    pub fn project_by_id(&self, id: &str) -> Option<(usize, usize)> {
        self.project_index.get(id).copied()
    }

    /// (org, project, cluster) indexes of the cluster with this unique id.
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

    /// Exact total in cents of what a query over [`start`, `end`) for `org_id` returns when
    /// nothing is filtered out: grouped by `organizations` or `services`, or grouped by
    /// `projects`/`clusters` with every id listed and `includePartialMatches: true`.
    /// Lets tests check results "correct to the cent". Unknown org: 0.
    pub fn total_cents(&self, org_id: &str, start: Month, end: Month) -> i64 {
        self.total_cents_grouped(org_id, start, end, GroupBy::Organizations, true)
    }

    /// Exact total in cents of a query over [`start`, `end`) for `org_id` grouped by
    /// `group_by`, when the `projects`/`clusters` filter lists every id of the org. Without
    /// `include_partial_matches`, grouping by projects drops org-level charges, and grouping
    /// by clusters also drops project-level ones.
    pub fn total_cents_grouped(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
        group_by: GroupBy,
        include_partial_matches: bool,
    ) -> i64 {
        let Some(org) = self.org_by_id(org_id) else {
            return 0;
        };
        self.org_usage(org)
            .iter()
            .filter(|r| r.month >= start && r.month < end)
            .filter(|r| {
                include_partial_matches
                    || match group_by {
                        GroupBy::Projects => r.project.is_some(),
                        GroupBy::Clusters => r.cluster.is_some(),
                        GroupBy::Organizations | GroupBy::Services => true,
                    }
            })
            .map(|r| r.amount_cents)
            .sum()
    }

    /// Number of distinct (place, service) series times months: what an exporter exposing
    /// every record as one series would hold.
    pub fn series(&self) -> usize {
        self.usage.len()
    }
}

/// Pushes one record per month with the amount drifting around `base` (±10 %, slight growth).
fn push_months(
    usage: &mut Vec<UsageRecord>,
    rng: &mut SmallRng,
    first: Month,
    months: i64,
    base: i64,
    make: impl Fn(Month, i64) -> UsageRecord,
) {
    for i in 0..months {
        let growth = base * i / 100;
        let jitter = base / 10;
        let amount = base + growth + rng.gen_range(-jitter..=jitter);
        usage.push(make(first.plus(i), amount.max(1)));
    }
}
