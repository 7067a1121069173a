//! The simulated account: organisations, projects, clusters (dedicated, Flex, deleted) and
//! their monthly usage records, with the indexes the handlers look ids up by.
//!
//! `generate` builds a [`Dataset`] from a seed (its doc says what the account holds and at
//! which indexes); `totals` gives the exact sums tests compare results with.

mod generate;
mod invoices;
mod totals;

use std::collections::HashMap;
use std::ops::Range;

use crate::month::Month;

pub use generate::{CLUSTER_SERVICES, cluster_tags, flex_tags, project_tags};
pub use invoices::SimItem;

/// A resource tag: a `{"key", "value"}` pair, each 1 to 255 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTag {
    /// The tag's key, e.g. `team`.
    pub key: String,
    /// The tag's value, e.g. `Data Platform`.
    pub value: String,
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

impl Dataset {
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

    /// Cuts `month`'s records (the current month) to the `posted` days of it that Atlas has
    /// billed so far (a day's charges are posted the next day): each amount times
    /// `posted / days of the month`, rounded half away from zero, never to 0 (a record that
    /// billed keeps a cent). The other months, closed, are whole.
    pub fn prorate(&mut self, month: Month, posted: u32) {
        let days = i64::from(month.days());
        let posted = i64::from(posted.clamp(1, month.days()));
        if posted == days {
            return;
        }
        for r in self.usage.iter_mut().filter(|r| r.month == month) {
            let n = i128::from(r.amount_cents) * i128::from(posted);
            let d = i128::from(days);
            let (mut q, rem) = (n / d, n % d);
            if 2 * rem.abs() >= d {
                q += n.signum();
            }
            if q == 0 {
                q = n.signum();
            }
            r.amount_cents = i64::try_from(q).unwrap_or(r.amount_cents);
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

    /// Number of distinct (place, service) series times months: what an exporter exposing
    /// every record as one series would hold.
    pub fn series(&self) -> usize {
        self.usage.len()
    }
}
