//! The remainder series: what makes every default query add up to the org's total, exactly.
//!
//! The `projects` query holds only spend that Atlas attributes to a listed project, and the
//! `clusters` query only spend of a listed cluster. Org-level charges (support, credits),
//! project-level charges (App Services, Charts, ...) and the spend of clusters and projects
//! that no listing knows any more would otherwise vanish from them. So, per org, month and
//! service, each of the two queries gains an explicit remainder:
//!
//! - `projects`: `project_name="(unattributed)"` (no `project_id`): the `services` total
//!   minus every series of the `projects` query;
//! - `clusters`: per project of the `projects` query, `cluster_name="(unattributed)"` under
//!   that project's labels (its project-level spend and its clusters no listing knows), and
//!   `project_name="(unattributed)", cluster_name="(unattributed)"` for the rest.
//!
//! A per-project remainder carries its project's tag labels (issue 11), so project-level
//! spend is attributed too; the others carry none.
//!
//! Summing any one query over a month then gives the `services` total of that month, to the
//! micro-dollar. Remainders are derived from the last good data of the queries, before their
//! cardinality controls, when an org's refresh is published; they are never cached. A query
//! with controls then runs them over its series and its remainders together
//! ([`crate::controls`]), so what they fold is folded once, remainders included. A remainder
//! of zero is served too, so the set of series stays stable (the series limit sheds such
//! remainders first).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::month::Month;
use crate::series::{CostSeries, Label, SeriesKey, TagValues};

pub use crate::controls::UNATTRIBUTED;

/// (month, project id, service).
type SumKey = (Month, Option<Box<str>>, Option<Box<str>>);
/// [`SumKey`] -> micro-dollars.
type Sums = BTreeMap<SumKey, i64>;

/// A query's data summed by month, project and service: all a remainder needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollup {
    /// Months the query covers, first and last included.
    pub months: Option<(Month, Month)>,
    sums: Sums,
    /// Project id -> its name in the newest month that has one.
    project_names: HashMap<Box<str>, Newest<Box<str>>>,
    /// Project id -> its tag values, from series of a project (not of one of its clusters),
    /// the newest month's; empty without tag labels.
    project_tags: HashMap<Box<str>, Newest<TagValues>>,
    org_name: Option<Newest<Box<str>>>,
}

/// A value and the month it was seen in: a newer month's replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Newest<T> {
    month: Month,
    value: T,
}

impl<T> Newest<T> {
    /// Keeps `value` if `month` is this one's or newer (the later of equal months wins too,
    /// harmlessly: a month has one name per id).
    fn offer(slot: &mut Option<Newest<T>>, month: Month, value: impl FnOnce() -> T) {
        if slot.as_ref().is_none_or(|n| n.month < month) {
            *slot = Some(Newest {
                month,
                value: value(),
            });
        }
    }
}

/// Keeps `value` for `id` in `map` if `month` is newer than what it holds.
fn offer<T>(
    map: &mut HashMap<Box<str>, Newest<T>>,
    id: &str,
    month: Month,
    value: impl FnOnce() -> T,
) {
    match map.get_mut(id) {
        Some(n) if n.month >= month => {}
        Some(n) => {
            *n = Newest {
                month,
                value: value(),
            }
        }
        None => {
            map.insert(
                Box::from(id),
                Newest {
                    month,
                    value: value(),
                },
            );
        }
    }
}

impl Rollup {
    /// Sums `series` (month, labels, micro-dollars) of a query that covered `first..=last`.
    pub fn new<'a>(
        first: Month,
        last: Month,
        series: impl IntoIterator<Item = (Month, &'a SeriesKey, i64)>,
    ) -> Rollup {
        let mut r = Rollup {
            months: Some((first, last)),
            ..Rollup::default()
        };
        for (month, key, micros) in series {
            let project: Option<Box<str>> = key.get(Label::ProjectId).map(Box::from);
            // The newest month's name wins (a renamed project's remainders carry its new
            // name in every month), as do its tags.
            if let (Some(id), Some(name)) = (&project, key.get(Label::ProjectName)) {
                offer(&mut r.project_names, id, month, || Box::from(name));
            }
            if let Some(id) = &project
                && !key.tags().is_empty()
                && key.get(Label::ClusterId).is_none()
                && key.get(Label::ClusterName).is_none()
            {
                offer(&mut r.project_tags, id, month, || key.tags().into());
            }
            if let Some(name) = key.get(Label::OrgName) {
                Newest::offer(&mut r.org_name, month, || Box::from(name));
            }
            let service = key.get(Label::AtlasService).map(Box::from);
            let sum = r.sums.entry((month, project, service)).or_insert(0);
            *sum = sum.saturating_add(micros);
        }
        r
    }

    fn covers(&self, month: Month) -> bool {
        self.months
            .is_some_and(|(first, last)| first <= month && month <= last)
    }

    /// (service -> sum) of one month over every project, or over the projects `keep` says.
    fn by_service(
        &self,
        month: Month,
        keep: impl Fn(Option<&str>) -> bool,
    ) -> BTreeMap<Option<Box<str>>, i64> {
        let mut out: BTreeMap<Option<Box<str>>, i64> = BTreeMap::new();
        for ((_, project, service), v) in self.month_range(month) {
            if keep(project.as_deref()) {
                let sum = out.entry(service.clone()).or_insert(0);
                *sum = sum.saturating_add(*v);
            }
        }
        out
    }

    fn month_range(&self, month: Month) -> impl Iterator<Item = (&SumKey, &i64)> {
        self.sums
            .range((month, None, None)..)
            .take_while(move |((m, _, _), _)| *m == month)
    }

    /// (project id, service) -> sum for one month, projects with an id only.
    fn by_project(&self, month: Month) -> BTreeMap<(Box<str>, Option<Box<str>>), i64> {
        self.month_range(month)
            .filter_map(|((_, p, s), v)| p.clone().map(|p| ((p, s.clone()), *v)))
            .collect()
    }
}

/// The remainder series of a `projects` query: per month and service, the org total minus
/// what the query holds.
pub fn projects_remainder(
    org_id: &str,
    query: &str,
    total: &Rollup,
    projects: &Rollup,
) -> Vec<CostSeries> {
    let mut out = Vec::new();
    let query: Arc<str> = Arc::from(query);
    for month in months(projects).filter(|m| total.covers(*m)) {
        let t = total.by_service(month, |_| true);
        let p = projects.by_service(month, |_| true);
        for service in keys(&t, &p) {
            let rest = get(&t, service).saturating_sub(get(&p, service));
            push(
                &mut out,
                &query,
                month,
                rest,
                Remainder {
                    org: (org_id, org_name(projects, total)),
                    project: None,
                    tags: None,
                    in_clusters_query: false,
                    service: service.as_deref(),
                },
            );
        }
    }
    out
}

/// The remainder series of a `clusters` query: per project of `projects` (when that query's
/// data covers the month), its spend the clusters do not account for; then, per month and
/// service, whatever is left of the org total. The rollups are of the queries before their
/// controls; should the clusters hold a (project, service) the projects query lacks (a
/// cluster row without a service), the project's remainder takes it off under that key, so
/// nothing is counted twice.
pub fn clusters_remainder(
    org_id: &str,
    query: &str,
    total: &Rollup,
    projects: Option<&Rollup>,
    clusters: &Rollup,
) -> Vec<CostSeries> {
    let mut out = Vec::new();
    let query: Arc<str> = Arc::from(query);
    let org_name = org_name(clusters, total);
    for month in months(clusters).filter(|m| total.covers(*m)) {
        let per_project = projects
            .filter(|p| p.covers(month))
            .map(|p| p.by_project(month))
            .unwrap_or_default();
        let listed: BTreeSet<&str> = per_project.keys().map(|(p, _)| &**p).collect();
        let c = clusters.by_project(month);
        // Every (project, service) of a listed project that either query holds: spend of the
        // clusters under a key the projects query lacks (a row without a service) must still
        // come off the project's remainder, or it is counted twice.
        let project_keys: BTreeSet<&(Box<str>, Option<Box<str>>)> = per_project
            .keys()
            .chain(c.keys().filter(|(p, _)| listed.contains(&**p)))
            .collect();
        for k @ (project, service) in project_keys {
            let p_sum = per_project.get(k).copied().unwrap_or(0);
            let c_sum = c.get(k).copied().unwrap_or(0);
            let name = projects.and_then(|p| p.project_names.get(project));
            let tags = projects
                .and_then(|p| p.project_tags.get(project))
                .map(|t| &t.value);
            push(
                &mut out,
                &query,
                month,
                p_sum.saturating_sub(c_sum),
                Remainder {
                    org: (org_id, org_name),
                    project: Some((project, name.map(|n| &*n.value))),
                    tags,
                    in_clusters_query: true,
                    service: service.as_deref(),
                },
            );
        }
        // Everything else: the total, less the listed projects' totals (their clusters and
        // remainders add up to those), less the clusters of projects not listed there.
        let t = total.by_service(month, |_| true);
        let mut accounted: BTreeMap<Option<Box<str>>, i64> = BTreeMap::new();
        for ((_, service), v) in &per_project {
            add(&mut accounted, service, *v);
        }
        for (service, v) in clusters.by_service(month, |p| p.is_none_or(|p| !listed.contains(p))) {
            add(&mut accounted, &service, v);
        }
        for service in keys(&t, &accounted) {
            push(
                &mut out,
                &query,
                month,
                get(&t, service).saturating_sub(get(&accounted, service)),
                Remainder {
                    org: (org_id, org_name),
                    project: None,
                    tags: None,
                    in_clusters_query: true,
                    service: service.as_deref(),
                },
            );
        }
    }
    out
}

fn months(r: &Rollup) -> impl Iterator<Item = Month> {
    let range = r.months;
    std::iter::successors(range.map(|(first, _)| first), |m| Some(m.plus(1)))
        .take_while(move |m| range.is_some_and(|(_, last)| *m <= last))
}

/// The org name of a query's remainders: the query's own (so its remainders and its series
/// agree), else the total's.
fn org_name<'a>(own: &'a Rollup, total: &'a Rollup) -> Option<&'a str> {
    own.org_name
        .as_ref()
        .or(total.org_name.as_ref())
        .map(|n| &*n.value)
}

fn keys<'a>(
    a: &'a BTreeMap<Option<Box<str>>, i64>,
    b: &'a BTreeMap<Option<Box<str>>, i64>,
) -> BTreeSet<&'a Option<Box<str>>> {
    a.keys().chain(b.keys()).collect()
}

fn get(m: &BTreeMap<Option<Box<str>>, i64>, k: &Option<Box<str>>) -> i64 {
    m.get(k).copied().unwrap_or(0)
}

fn add(m: &mut BTreeMap<Option<Box<str>>, i64>, k: &Option<Box<str>>, v: i64) {
    let sum = m.entry(k.clone()).or_insert(0);
    *sum = sum.saturating_add(v);
}

/// Served even when zero: the keys come from the queries' own series, so the set of remainder
/// series is as stable as theirs, and one query refreshed a little before another makes a
/// value move, never a series appear or vanish.
fn push(out: &mut Vec<CostSeries>, query: &Arc<str>, month: Month, micros: i64, r: Remainder<'_>) {
    let mut key = SeriesKey::default();
    key.set(Label::OrgId, Some(r.org.0));
    key.set(Label::OrgName, r.org.1);
    match r.project {
        Some((id, name)) => {
            key.set(Label::ProjectId, Some(id));
            key.set(Label::ProjectName, name);
        }
        None => key.set(Label::ProjectName, Some(UNATTRIBUTED)),
    }
    if r.in_clusters_query {
        key.set(Label::ClusterName, Some(UNATTRIBUTED));
    }
    if let Some(tags) = r.tags {
        key.set_tags(tags.clone());
    }
    key.set(Label::AtlasService, r.service);
    out.push(CostSeries {
        query: query.clone(),
        key,
        month,
        micros,
    });
}

/// What a remainder series is the rest of.
struct Remainder<'a> {
    /// The org's id and name.
    org: (&'a str, Option<&'a str>),
    /// The project (id, name) whose rest it is; `None` for `project_name="(unattributed)"`.
    project: Option<(&'a str, Option<&'a str>)>,
    /// The project's tag values, for a per-project remainder.
    tags: Option<&'a TagValues>,
    /// Whether it belongs to a `clusters` query: `cluster_name="(unattributed)"`.
    in_clusters_query: bool,
    /// The service.
    service: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::label_text;

    /// The label text a remainder series is exposed with.
    fn text(s: &CostSeries) -> String {
        label_text(&s.query, &s.key, &crate::series::TagLabels::default())
    }

    const ORG: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const P1: &str = "111111111111111111111111";
    const P2: &str = "222222222222222222222222";

    fn m() -> Month {
        Month::new(2026, 10).expect("month")
    }

    fn key(project: Option<(&str, &str)>, cluster: Option<&str>, service: &str) -> SeriesKey {
        SeriesKey::new([
            Some(ORG),
            Some("Org"),
            project.map(|p| p.0),
            project.map(|p| p.1),
            cluster,
            cluster.map(|_| "c"),
            Some(service),
        ])
    }

    fn rollup(series: &[(SeriesKey, i64)]) -> Rollup {
        Rollup::new(m(), m(), series.iter().map(|(k, v)| (m(), k, *v)))
    }

    fn sum(query: &[(SeriesKey, i64)], remainder: &[CostSeries]) -> i64 {
        query.iter().map(|(_, v)| v).sum::<i64>() + remainder.iter().map(|s| s.micros).sum::<i64>()
    }

    /// The org total, by service: clusters, project-level App Services, org-level Support and
    /// Credits.
    fn total() -> Vec<(SeriesKey, i64)> {
        vec![
            (key(None, None, "Clusters"), 1_000),
            (key(None, None, "App Services"), 70),
            (key(None, None, "Support"), 300),
            (key(None, None, "Credits"), -50),
        ]
    }

    /// The projects query plus its remainder adds up to the total exactly; the remainder
    /// holds the org-level charges, by service, under `project_name="(unattributed)"`.
    #[test]
    fn projects_remainder_makes_the_query_add_up_to_the_total() {
        let projects = vec![
            (key(Some((P1, "one")), None, "Clusters"), 600),
            (key(Some((P1, "one")), None, "App Services"), 70),
            (key(Some((P2, "two")), None, "Clusters"), 350),
        ];
        let r = projects_remainder(ORG, "projects", &rollup(&total()), &rollup(&projects));
        assert_eq!(sum(&projects, &r), 1_000 + 70 + 300 - 50);
        let labels: Vec<(String, i64)> = r.iter().map(|s| (text(s), s.micros)).collect();
        let labels: Vec<(&str, i64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        assert!(labels.contains(&(
            "query=\"projects\",org_id=\"aaaaaaaaaaaaaaaaaaaaaaaa\",org_name=\"Org\",project_name=\"(unattributed)\",atlas_service=\"Support\"",
            300
        )), "{labels:?}");
        // 1,000 of Clusters in the total, 950 attributed: a deleted project's 50 remain.
        assert!(
            labels
                .iter()
                .any(|(l, v)| l.ends_with("atlas_service=\"Clusters\"") && *v == 50)
        );
        // App Services is fully attributed: its remainder is served at zero, so the set of
        // series does not depend on which query refreshed last.
        assert!(
            labels
                .iter()
                .any(|(l, v)| l.ends_with("atlas_service=\"App Services\"") && *v == 0)
        );
    }

    /// The clusters query plus its remainder adds up to the total exactly. Each project of
    /// the projects query gets its own `cluster_name="(unattributed)"` (its project-level
    /// spend), and the org-level rest goes under both names `(unattributed)`.
    #[test]
    fn clusters_remainder_attributes_project_level_spend_to_its_project() {
        let projects = vec![
            (key(Some((P1, "one")), None, "Clusters"), 600),
            (key(Some((P1, "one")), None, "App Services"), 70),
            (key(Some((P2, "two")), None, "Clusters"), 350),
        ];
        let clusters = vec![
            (
                key(
                    Some((P1, "one")),
                    Some("c1c1c1c1c1c1c1c1c1c1c1c1"),
                    "Clusters",
                ),
                600,
            ),
            // A cluster of P2 was deleted before the exporter saw it: 100 of P2's 350.
            (
                key(
                    Some((P2, "two")),
                    Some("c2c2c2c2c2c2c2c2c2c2c2c2"),
                    "Clusters",
                ),
                250,
            ),
        ];
        let r = clusters_remainder(
            ORG,
            "clusters",
            &rollup(&total()),
            Some(&rollup(&projects)),
            &rollup(&clusters),
        );
        assert_eq!(sum(&clusters, &r), 1_000 + 70 + 300 - 50);
        let find = |needle: &str| {
            r.iter()
                .filter(|s| text(s).contains(needle))
                .map(|s| s.micros)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            find(
                "project_id=\"111111111111111111111111\",project_name=\"one\",cluster_name=\"(unattributed)\",atlas_service=\"App Services\""
            ),
            [70]
        );
        assert_eq!(
            find(
                "project_id=\"222222222222222222222222\",project_name=\"two\",cluster_name=\"(unattributed)\",atlas_service=\"Clusters\""
            ),
            [100]
        );
        assert_eq!(
            find(
                "project_name=\"(unattributed)\",cluster_name=\"(unattributed)\",atlas_service=\"Support\""
            ),
            [300]
        );
    }

    /// A per-project remainder of the clusters query carries its project's tags (from the
    /// projects query's series), so project-level spend is attributed by tag too; the
    /// org-level remainders carry none.
    #[test]
    fn a_per_project_remainder_carries_its_projects_tags() {
        let tags = crate::series::TagLabels::new("t", ["team"]).expect("valid");
        let tagged_project = |service: &str| {
            let mut k = key(Some((P1, "one")), None, service);
            k.set_tags(tags.values([("team", "web")]));
            k
        };
        let projects = vec![
            (tagged_project("Clusters"), 600),
            (tagged_project("App Services"), 70),
            (key(Some((P2, "two")), None, "Clusters"), 350),
        ];
        let mut c = key(Some((P1, "one")), Some("c1"), "Clusters");
        c.set_tags(tags.values([("team", "search")]));
        let clusters = vec![(c, 600)];
        let r = clusters_remainder(
            ORG,
            "clusters",
            &rollup(&total()),
            Some(&rollup(&projects)),
            &rollup(&clusters),
        );
        let tagged: Vec<(String, i64)> = r
            .iter()
            .filter(|s| s.key.tag(0).is_some())
            .map(|s| (label_text(&s.query, &s.key, &tags), s.micros))
            .collect();
        let p1 = format!(
            "query=\"clusters\",org_id=\"{ORG}\",org_name=\"Org\",project_id=\"{P1}\",project_name=\"one\",cluster_name=\"(unattributed)\""
        );
        assert_eq!(
            tagged,
            [
                (
                    format!("{p1},atlas_service=\"App Services\",tag_team=\"web\""),
                    70
                ),
                (
                    format!("{p1},atlas_service=\"Clusters\",tag_team=\"web\""),
                    0
                ),
            ]
        );
        assert_eq!(sum(&clusters, &r), 1_000 + 70 + 300 - 50);
    }

    /// Without the projects query's data, the whole rest of the total is one org-level
    /// remainder per service, and the sum still holds.
    #[test]
    fn clusters_remainder_without_projects_data_is_org_level() {
        let clusters = vec![(
            key(
                Some((P1, "one")),
                Some("c1c1c1c1c1c1c1c1c1c1c1c1"),
                "Clusters",
            ),
            600,
        )];
        let r = clusters_remainder(ORG, "clusters", &rollup(&total()), None, &rollup(&clusters));
        assert_eq!(sum(&clusters, &r), 1_320);
        assert!(
            r.iter()
                .all(|s| text(s).contains("project_name=\"(unattributed)\""))
        );
    }

    /// Spend the clusters query holds under a key the projects query lacks (here service-less
    /// `(other)` series, as a query controlled before its remainders would hold) is counted
    /// once: the project's remainder takes it off under that same key, and spend without a
    /// listed project comes off the org-level rest, so the query still adds up to the total.
    #[test]
    fn spend_under_a_key_the_projects_query_lacks_is_counted_once() {
        let projects = vec![
            (key(Some((P1, "one")), None, "Clusters"), 600),
            (key(Some((P1, "one")), None, "App Services"), 70),
            (key(Some((P2, "two")), None, "Clusters"), 350),
        ];
        let p1_other = SeriesKey::new([
            Some(ORG),
            Some("Org"),
            Some(P1),
            Some("one"),
            None,
            Some("(other)"),
            None,
        ]);
        let org_other = SeriesKey::new([
            Some(ORG),
            Some("Org"),
            None,
            Some("(other)"),
            None,
            None,
            None,
        ]);
        let clusters = vec![
            (key(Some((P1, "one")), Some("c1"), "Clusters"), 400),
            // P1's cheaper cluster, folded into its `(other)`.
            (p1_other.clone(), 200),
            // P2's only cluster, shed into the org's `(other)`.
            (org_other, 250),
        ];
        let r = clusters_remainder(
            ORG,
            "clusters",
            &rollup(&total()),
            Some(&rollup(&projects)),
            &rollup(&clusters),
        );
        assert_eq!(sum(&clusters, &r), 1_000 + 70 + 300 - 50);
        // P1's remainder: 200 of Clusters its listed cluster does not hold, less the 200 its
        // `(other)` holds without a service; App Services is project-level.
        let p1: Vec<(Option<&str>, i64)> = r
            .iter()
            .filter(|s| s.key.get(Label::ProjectId) == Some(P1))
            .map(|s| (s.key.get(Label::AtlasService), s.micros))
            .collect();
        assert_eq!(
            p1,
            [
                (None, -200),
                (Some("App Services"), 70),
                (Some("Clusters"), 200)
            ]
        );
        assert_eq!(
            p1.iter().map(|(_, v)| v).sum::<i64>() + 400 + 200,
            600 + 70,
            "P1's clusters and remainders add up to P1's total"
        );
    }

    /// A project renamed between two months: its remainders carry the newest month's name in
    /// every month, as its own series do, never the oldest.
    #[test]
    fn remainders_take_their_names_from_the_newest_month() {
        let (old, new) = (m().plus(-1), m());
        let projects = [
            (old, key(Some((P1, "before")), None, "App Services"), 10),
            (new, key(Some((P1, "after")), None, "App Services"), 20),
        ];
        let total = [
            (old, key(None, None, "App Services"), 10),
            (new, key(None, None, "App Services"), 20),
        ];
        let rollup = |s: &[(Month, SeriesKey, i64)]| {
            Rollup::new(old, new, s.iter().map(|(m, k, v)| (*m, k, *v)))
        };
        let clusters = Rollup::new(old, new, std::iter::empty());
        let r = clusters_remainder(
            ORG,
            "clusters",
            &rollup(&total),
            Some(&rollup(&projects)),
            &clusters,
        );
        let names: Vec<(Month, Option<&str>)> = r
            .iter()
            .filter(|s| s.key.get(Label::ProjectId) == Some(P1))
            .map(|s| (s.month, s.key.get(Label::ProjectName)))
            .collect();
        assert_eq!(names, [(old, Some("after")), (new, Some("after"))]);
    }

    /// Months the total does not cover get no remainder: nothing is invented.
    #[test]
    fn no_remainder_for_months_without_a_total() {
        let projects = vec![(key(Some((P1, "one")), None, "Clusters"), 600)];
        let other_month = Rollup::new(
            m().plus(-1),
            m().plus(-1),
            total().iter().map(|(k, v)| (m().plus(-1), k, *v)),
        );
        assert!(projects_remainder(ORG, "projects", &other_month, &rollup(&projects)).is_empty());
    }
}
