//! Discovery: the projects and clusters of an org, listed at each refresh and remembered, so
//! that the queries grouped by project or cluster know which ids to filter on, how to name
//! them and which tag labels their series carry.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::atlas::result::UsageRow;
use crate::atlas::{AtlasError, Cluster, Project};
use crate::config::QuerySpec;
use crate::model::{AtlasId, Endpoint, GroupBy, Reason};
use crate::refresher::{OrgWorker, Refresher};
use crate::series::{TagLabels, TagValues, cluster_over_project};
use crate::state::{Known, KnownState};

/// Cluster listings in flight at once per org during discovery.
const DISCOVERY_CONCURRENCY: usize = 4;

/// Ids seen for one org, in a listing or in a result row. Deleted clusters and projects are
/// billed in the months before their deletion, but no listing returns them: an id seen once
/// stays in the queries' filters for as long as the process runs, and with `--storage.path`
/// across restarts (without it their spend shows in the `(unattributed)` remainder after one).
#[derive(Default)]
pub(in crate::refresher) struct KnownIds {
    /// Project id -> what was last seen of it.
    projects: BTreeMap<AtlasId, Seen>,
    /// Cluster id (dedicated or Flex) -> what was last seen of it.
    clusters: BTreeMap<AtlasId, Seen>,
}

/// What was last seen of a project or cluster.
struct Seen {
    name: String,
    /// A cluster's project.
    project: Option<AtlasId>,
    /// Every tag the last listing that showed it had (all keys: the allowlist picks from
    /// them), so one no listing shows any more keeps its last seen tags.
    tags: Vec<(String, String)>,
    /// When a listing or a result row last showed it.
    last_seen: SystemTime,
}

impl KnownIds {
    /// Remembers the project and cluster ids that result rows name, seen at `now`.
    pub(in crate::refresher) fn learn(&mut self, rows: &[UsageRow], now: SystemTime) {
        for row in rows {
            let project = row.project_id.as_deref().and_then(AtlasId::parse);
            if let Some(p) = &project {
                match self.projects.get_mut(p.as_str()) {
                    Some(seen) => seen.last_seen = now,
                    None => {
                        let name = row.project_name.as_deref().unwrap_or_default();
                        self.projects.insert(p.clone(), Seen::new(name, None, now));
                    }
                }
            }
            if let Some(c) = row.cluster_id.as_deref().and_then(AtlasId::parse) {
                match self.clusters.get_mut(c.as_str()) {
                    Some(seen) => seen.last_seen = now,
                    None => {
                        let name = row.cluster_name.as_deref().unwrap_or_default();
                        self.clusters.insert(c, Seen::new(name, project, now));
                    }
                }
            }
        }
    }

    /// Remembers what the listings returned at `now`: names, parents and tags as listed.
    fn record(
        &mut self,
        projects: Vec<Project>,
        clusters: Vec<(Cluster, String)>,
        now: SystemTime,
    ) {
        let pairs = |listed: Vec<crate::atlas::Tag>| -> Vec<(String, String)> {
            listed.into_iter().map(|t| (t.key, t.value)).collect()
        };
        // The client lists valid ids only: nothing is dropped here.
        for p in projects {
            if let Some(id) = AtlasId::parse(&p.id) {
                let mut seen = Seen::new(&p.name, None, now);
                seen.tags = pairs(p.tags);
                self.projects.insert(id, seen);
            }
        }
        for (c, project_id) in clusters {
            if let Some(id) = AtlasId::parse(&c.id) {
                let mut seen = Seen::new(&c.name, AtlasId::parse(&project_id), now);
                seen.tags = pairs(c.tags);
                self.clusters.insert(id, seen);
            }
        }
    }

    /// Every id known, as [`Discovery`] hands them to the queries, with the tags of `tags`;
    /// clusters only `with_clusters`.
    fn fill(&self, d: &mut Discovery, with_clusters: bool, tags: &TagLabels) {
        let tagged = |m: &BTreeMap<AtlasId, Seen>| -> HashMap<String, TagValues> {
            if tags.is_empty() {
                return HashMap::new();
            }
            m.iter()
                .map(|(id, seen)| {
                    let values =
                        tags.values(seen.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    (id.to_string(), values)
                })
                .filter(|(_, t)| !t.is_empty())
                .collect()
        };
        d.project_tags = tagged(&self.projects);
        if with_clusters {
            d.cluster_tags = tagged(&self.clusters);
        }
        d.project_ids = self.projects.keys().map(AtlasId::to_string).collect();
        d.project_names = self
            .projects
            .iter()
            .map(|(id, seen)| (id.to_string(), seen.name.clone()))
            .collect();
        if with_clusters {
            d.cluster_ids = self.clusters.keys().map(AtlasId::to_string).collect();
            d.cluster_info = self
                .clusters
                .iter()
                .map(|(id, seen)| {
                    (
                        id.to_string(),
                        (
                            seen.name.clone(),
                            seen.project.as_ref().map(AtlasId::to_string),
                        ),
                    )
                })
                .collect();
        }
    }

    /// Everything known, to keep in the org's state.
    pub(in crate::refresher) fn kept(&self) -> KnownState {
        let kept = |m: &BTreeMap<AtlasId, Seen>| -> Vec<Known> {
            m.iter()
                .map(|(id, seen)| Known {
                    id: id.to_string(),
                    name: seen.name.clone(),
                    project_id: seen.project.as_ref().map(AtlasId::to_string),
                    tags: seen.tags.clone(),
                    last_seen: seen.last_seen,
                })
                .collect()
        };
        KnownState {
            projects: kept(&self.projects),
            clusters: kept(&self.clusters),
        }
    }

    /// Takes back what a state file kept: ids not already known (a file's ids that are not
    /// Atlas ids are skipped). Returns how many were taken.
    pub(in crate::refresher) fn restore(&mut self, kept: KnownState) -> usize {
        let mut n = 0;
        let mut take = |m: &mut BTreeMap<AtlasId, Seen>, k: Known| {
            if let Some(id) = AtlasId::parse(&k.id)
                && !m.contains_key(id.as_str())
            {
                m.insert(
                    id,
                    Seen {
                        name: k.name,
                        project: k.project_id.as_deref().and_then(AtlasId::parse),
                        tags: k.tags,
                        last_seen: k.last_seen,
                    },
                );
                n += 1;
            }
        };
        for k in kept.projects {
            take(&mut self.projects, k);
        }
        for k in kept.clusters {
            take(&mut self.clusters, k);
        }
        n
    }
}

impl Seen {
    fn new(name: &str, project: Option<AtlasId>, now: SystemTime) -> Seen {
        Seen {
            name: name.to_owned(),
            project,
            tags: Vec::new(),
            last_seen: now,
        }
    }
}

/// What discovery found for one org during one refresh, with every id seen before.
#[derive(Default)]
pub(in crate::refresher) struct Discovery {
    /// Project ids to query, sorted.
    pub(in crate::refresher) project_ids: Vec<String>,
    /// Cluster ids (regular and Flex) to query, sorted.
    pub(in crate::refresher) cluster_ids: Vec<String>,
    /// Project id -> name.
    pub(in crate::refresher) project_names: HashMap<String, String>,
    /// Cluster id -> (name, project id).
    pub(in crate::refresher) cluster_info: HashMap<String, (String, Option<String>)>,
    /// Project id -> its tags (projects with an allowlisted tag only).
    pub(in crate::refresher) project_tags: HashMap<String, TagValues>,
    /// Cluster id -> its own tags (clusters with an allowlisted tag only).
    pub(in crate::refresher) cluster_tags: HashMap<String, TagValues>,
    /// Why the project ids are missing, when they are.
    pub(in crate::refresher) projects_failed: Option<(Reason, String)>,
    /// Why some cluster ids are missing, when they are: fails the queries grouped by
    /// clusters only.
    pub(in crate::refresher) clusters_failed: Option<(Reason, String)>,
}

impl Discovery {
    /// The tags of a series of project `project` (and cluster `cluster`): the cluster's, or
    /// where it lacks a key, the project's. Last seen in a listing; none for an id no listing
    /// ever showed.
    pub(in crate::refresher) fn tags_of(
        &self,
        project: Option<&str>,
        cluster: Option<&str>,
    ) -> TagValues {
        let project = project.and_then(|p| self.project_tags.get(p));
        match cluster.and_then(|c| self.cluster_tags.get(c)) {
            Some(own) => cluster_over_project(own, project.map_or(&[], |p| &p[..])),
            None => project.cloned().unwrap_or_default(),
        }
    }

    /// The project and cluster ids `spec` filters on: its own, or the discovered ones when it
    /// groups by a dimension it names none of.
    ///
    /// # Errors
    /// Why discovery could not list the ids the query needs.
    pub(in crate::refresher) fn ids_for(
        &self,
        spec: &QuerySpec,
    ) -> Result<(Vec<String>, Vec<String>), (Reason, String)> {
        match spec.group_by {
            GroupBy::Projects if spec.projects.is_empty() => match &self.projects_failed {
                Some(f) => Err(f.clone()),
                None => Ok((self.project_ids.clone(), spec.clusters.clone())),
            },
            GroupBy::Clusters if spec.clusters.is_empty() => match &self.clusters_failed {
                Some(f) => Err(f.clone()),
                None => Ok((spec.projects.clone(), self.cluster_ids.clone())),
            },
            _ => Ok((spec.projects.clone(), spec.clusters.clone())),
        }
    }
}

impl Refresher {
    /// Lists what the org's queries need: projects when one groups by discovered projects
    /// or clusters, clusters when one groups by discovered clusters.
    pub(in crate::refresher) async fn discover_for_queries(&self, org: &OrgWorker) -> Discovery {
        let queries = &org.config.queries;
        let needs_projects = queries.iter().any(QuerySpec::needs_discovery);
        let needs_clusters = queries
            .iter()
            .any(|q| q.group_by == GroupBy::Clusters && q.needs_discovery());
        if needs_projects {
            self.discover(org, needs_clusters).await
        } else {
            Discovery::default()
        }
    }

    fn report_forbidden(&self, org: &OrgWorker, endpoint: Endpoint, e: &AtlasError) {
        if !org.forbidden_reported.swap(true, Ordering::Relaxed) {
            let role = match endpoint {
                Endpoint::Clusters => {
                    "Project Read Only on every project (Organization Read Only grants it)"
                }
                _ => "Organization Member",
            };
            tracing::warn!(
                org_id = %org.config.id,
                endpoint = endpoint.as_str(),
                error = %e,
                "discovery is forbidden: the credentials need the {role} role besides Organization \
                 Billing Viewer; queries grouped by project or cluster fail until then, the other \
                 queries keep working"
            );
        }
    }

    async fn discover(&self, org: &OrgWorker, with_clusters: bool) -> Discovery {
        let deadline = Instant::now() + self.query_timeout;
        let mut d = Discovery::default();
        // Discovery takes permits of the same semaphore as queries: requests in flight stay
        // within --refresh.concurrency across every org.
        let permit = self.semaphore.acquire().await.ok();
        let projects = self
            .bounded(org, deadline, org.client.projects(deadline))
            .await;
        drop(permit);
        let projects = match projects {
            Ok(p) => p,
            Err(e) => {
                if e.reason() == Reason::Forbidden {
                    self.report_forbidden(org, Endpoint::Projects, &e);
                }
                let hint = if e.reason() == Reason::Forbidden {
                    " (the Organization Member role is needed to list projects)"
                } else {
                    ""
                };
                d.projects_failed = Some((e.reason(), format!("discovering projects: {e}{hint}")));
                d.clusters_failed.clone_from(&d.projects_failed);
                return d;
            }
        };
        let mut clusters: Vec<(Cluster, String)> = Vec::new();
        if with_clusters {
            let limit = Semaphore::new(DISCOVERY_CONCURRENCY);
            // Regular and Flex clusters: since January 2026 each has its own listing.
            let listings = futures_util::future::join_all(projects.iter().flat_map(|p| {
                [Endpoint::Clusters, Endpoint::FlexClusters].map(|endpoint| {
                    let limit = &limit;
                    async move {
                        let _permit = limit.acquire().await.ok();
                        let _global = self.semaphore.acquire().await.ok();
                        let listing = match endpoint {
                            Endpoint::FlexClusters => {
                                self.bounded(
                                    org,
                                    deadline,
                                    org.client.flex_clusters(&p.id, deadline),
                                )
                                .await
                            }
                            _ => {
                                self.bounded(org, deadline, org.client.clusters(&p.id, deadline))
                                    .await
                            }
                        };
                        (endpoint, p.id.clone(), listing)
                    }
                })
            }))
            .await;
            for (endpoint, project_id, listing) in listings {
                match listing {
                    Ok(found) => {
                        clusters.extend(found.into_iter().map(|c| (c, project_id.clone())))
                    }
                    Err(e) => {
                        if e.reason() == Reason::Forbidden {
                            self.report_forbidden(org, endpoint, &e);
                        }
                        d.clusters_failed = Some((
                            e.reason(),
                            format!("discovering the {endpoint} of project {project_id}: {e}"),
                        ));
                    }
                }
            }
        }
        // Listed now, plus every id seen before: deleted clusters and projects keep the
        // history they were billed for.
        let mut known = org
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known.record(projects, clusters, (self.clock)());
        known.fill(&mut d, with_clusters, &self.tag_labels);
        d
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::month::Month;

    const P: &str = "111111111111111111111111";
    const C: &str = "cccccccccccccccccccccccc";
    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn row(project: Option<&str>, cluster: Option<&str>) -> UsageRow {
        UsageRow {
            org_id: None,
            org_name: None,
            project_id: project.map(Arc::from),
            project_name: project.map(|_| Arc::from("web")),
            cluster_id: cluster.map(Arc::from),
            cluster_name: cluster.map(|_| Arc::from("prod")),
            service: Some(Arc::from("Clusters")),
            month: Month::new(2026, 11).expect("valid"),
            amount_micros: 1,
        }
    }

    /// Ids named by result rows are remembered with their names and parent; ids that are not
    /// Atlas ids are not.
    #[test]
    fn rows_teach_valid_ids_only() {
        let mut known = KnownIds::default();
        known.learn(
            &[row(Some(P), Some(C)), row(Some("../x"), Some("nothex"))],
            T0,
        );
        let mut d = Discovery::default();
        known.fill(&mut d, true, &TagLabels::default());
        assert_eq!(d.project_ids, [P]);
        assert_eq!(d.project_names.get(P).map(String::as_str), Some("web"));
        assert_eq!(d.cluster_ids, [C]);
        assert_eq!(
            d.cluster_info.get(C),
            Some(&("prod".to_owned(), Some(P.to_owned())))
        );
    }

    /// Tags are the last listed: a cluster no listing shows any more keeps its last seen
    /// tags, a listed one takes what it shows now (none included); a cluster series takes its
    /// own tag, else its project's.
    #[test]
    fn tags_are_the_last_seen_and_clusters_fall_back_to_their_project() {
        use crate::atlas::Tag;
        const C2: &str = "c22222222222222222222222";
        let tags = TagLabels::new("t", ["team", "env"]).expect("valid");
        let t = |k: &str, v: &str| Tag {
            key: k.to_owned(),
            value: v.to_owned(),
        };
        let project = |tags: Vec<Tag>| Project {
            id: P.to_owned(),
            name: "web".to_owned(),
            tags,
        };
        let cluster = |id: &str, tags: Vec<Tag>| {
            let c = Cluster {
                id: id.to_owned(),
                name: "prod".to_owned(),
                tags,
            };
            (c, P.to_owned())
        };
        let mut known = KnownIds::default();
        known.record(
            vec![project(vec![t("team", "web"), t("env", "prod")])],
            vec![
                cluster(C, vec![t("team", "search")]),
                cluster(C2, vec![t("env", "dev")]),
            ],
            T0,
        );
        // C is gone from the listings; C2 is listed without tags now.
        known.record(
            vec![project(vec![t("team", "web"), t("env", "prod")])],
            vec![cluster(C2, Vec::new())],
            T0,
        );
        let mut d = Discovery::default();
        known.fill(&mut d, true, &tags);
        let mut key = crate::series::SeriesKey::default();
        key.set_tags(d.tags_of(Some(P), Some(C)));
        assert_eq!((key.tag(0), key.tag(1)), (Some("search"), Some("prod")));
        key.set_tags(d.tags_of(Some(P), Some(C2)));
        assert_eq!((key.tag(0), key.tag(1)), (Some("web"), Some("prod")));
        assert!(d.tags_of(None, None).is_empty());
        // Without tag labels no tag reaches the series.
        let mut d = Discovery::default();
        known.fill(&mut d, true, &TagLabels::default());
        assert!(d.project_tags.is_empty() && d.cluster_tags.is_empty());
    }

    /// What is kept of the ids seen comes back whole: a cluster no listing shows any more
    /// keeps its name, project, every tag last listed and when it was last seen; a row that
    /// names a known id moves its last seen time; ids already known are not replaced.
    #[test]
    fn known_ids_are_kept_and_restored_with_their_tags_and_last_seen_time() {
        use crate::atlas::Tag;
        let later = T0 + std::time::Duration::from_secs(60);
        let mut known = KnownIds::default();
        let cluster = Cluster {
            id: C.to_owned(),
            name: "prod".to_owned(),
            tags: vec![Tag {
                key: "owner".to_owned(),
                value: "ops".to_owned(),
            }],
        };
        known.record(Vec::new(), vec![(cluster, P.to_owned())], T0);
        known.learn(&[row(Some(P), Some(C))], later);
        let kept = known.kept();
        assert_eq!(kept.clusters.len(), 1);
        let c = &kept.clusters[0];
        assert_eq!((c.id.as_str(), c.name.as_str()), (C, "prod"));
        assert_eq!(c.project_id.as_deref(), Some(P));
        assert_eq!(c.tags, [("owner".to_owned(), "ops".to_owned())]);
        assert_eq!(c.last_seen, later);
        assert_eq!(kept.projects[0].last_seen, later);
        let mut back = KnownIds::default();
        assert_eq!(back.restore(kept.clone()), 2);
        assert_eq!(back.kept(), kept);
        assert_eq!(back.restore(kept), 0, "already known");
        let owner = TagLabels::new("t", ["owner"]).expect("valid");
        let mut d = Discovery::default();
        back.fill(&mut d, true, &owner);
        assert_eq!(d.cluster_ids, [C]);
        let mut key = crate::series::SeriesKey::default();
        key.set_tags(d.tags_of(Some(P), Some(C)));
        assert_eq!(key.tag(0), Some("ops"));
    }

    /// A query grouped by discovered clusters fails with discovery's reason when the
    /// listing failed; a query naming its own ids does not depend on discovery.
    #[test]
    fn ids_for_a_query_follow_discovery_or_its_own_filters() {
        let d = Discovery {
            project_ids: vec![P.to_owned()],
            clusters_failed: Some((Reason::Forbidden, "no".to_owned())),
            ..Discovery::default()
        };
        let defaults = QuerySpec::defaults(1);
        let (projects, clusters) = (&defaults[1], defaults[2].clone());
        assert_eq!(d.ids_for(projects), Ok((vec![P.to_owned()], Vec::new())));
        assert_eq!(
            d.ids_for(&clusters),
            Err((Reason::Forbidden, "no".to_owned()))
        );
        let mut own = clusters;
        own.clusters = vec![C.to_owned()];
        assert_eq!(d.ids_for(&own), Ok((Vec::new(), vec![C.to_owned()])));
    }
}
