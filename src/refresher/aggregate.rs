//! Aggregation: from the parsed rows of one query to the series it serves, as a pure
//! function ([`aggregate`]). Rows are summed per month and label set (names and parents
//! filled in from discovery), each month gets the query's controls, the series limit runs
//! over every month, and the kept series are summed again by month, project and service for
//! the remainders ([`crate::remainder`]).
//!
//! A query grouped by projects or clusters carries the tag labels discovery found (issue 11):
//! set on each row's label set before the controls (so `allow` and `deny` can name them), and
//! set again on the kept series after them, since a tag follows from the ids a series keeps:
//! an `(other)` series gets its parent's tags, and a closed month from the cache the tags
//! seen last.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::discovery::Discovery;
use super::month_cache::MonthSeries;
use crate::atlas::result::{ParsedResult, UsageRow};
use crate::config::QuerySpec;
use crate::controls::Level;
use crate::model::{GroupBy, Reason};
use crate::month::Month;
use crate::remainder::Rollup;
use crate::series::{CostSeries, Label, SeriesKey};

/// The months of one refresh of a query.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    /// The first month the query covers.
    pub(super) start: Month,
    /// The first month read from Atlas; those before it come from the month cache.
    pub(super) fetch_from: Month,
    /// The current month, the last one covered.
    pub(super) current: Month,
}

/// What one refresh of a query comes to.
#[derive(Debug)]
pub(super) struct Aggregated {
    /// Each month read from Atlas (`fetch_from..=current`), with the month's controls
    /// applied: the closed ones are what the month cache keeps.
    pub(super) fetched: BTreeMap<Month, MonthSeries>,
    /// The kept series of every month, after the series limit; each label set appears once a
    /// month (a real name that reads `(other)` and a folded series are one key, summed).
    pub(super) series: Vec<CostSeries>,
    /// The kept series summed for the remainders.
    pub(super) rollup: Rollup,
    /// Series folded into `(other)` by the series limit.
    pub(super) shed: u64,
    /// Rows dated outside the months read, ignored.
    pub(super) outside: u64,
}

/// Aggregates the `rows` a query read for `window`, with the closed months `cached` from
/// earlier refreshes, into the series it serves.
///
/// # Errors
/// [`Reason::Decode`] when a month of `held` (months that held data before) has no row at
/// all: an answer that lost its rows, not spend that vanished.
pub(super) fn aggregate(
    org_id: &str,
    spec: &QuerySpec,
    rows: &[UsageRow],
    discovery: &Discovery,
    window: Window,
    cached: BTreeMap<Month, MonthSeries>,
    held: &BTreeSet<Month>,
) -> Result<Aggregated, (Reason, String)> {
    let Window {
        start,
        fetch_from,
        current,
    } = window;
    let tags = Tagging::of(spec.group_by, discovery);
    let mut summed: BTreeMap<Month, BTreeMap<SeriesKey, i64>> = BTreeMap::new();
    let mut outside = 0u64;
    // One key per label set, shared by its months (and by the month cache and the rendered
    // series after them), instead of one per row.
    let mut keys = Interner::default();
    for row in rows {
        if row.month < fetch_from || row.month > current {
            outside += 1;
            continue;
        }
        let mut key = series_labels(org_id, row, discovery);
        if let Some(tags) = &tags {
            tags.set(&mut key);
        }
        let key = keys.intern(key);
        let sum = summed.entry(row.month).or_default().entry(key).or_insert(0);
        *sum = sum.saturating_add(row.amount_micros);
    }
    // Emptiness is not success: a month that held data and now has no row at all is an
    // answer that lost its rows, not spend that vanished.
    let emptied: Vec<String> = held
        .range(fetch_from..=current)
        .filter(|m| !summed.contains_key(m))
        .map(ToString::to_string)
        .collect();
    if !emptied.is_empty() {
        return Err((
            Reason::Decode,
            format!(
                "the result has no rows for {}, which held data before; keeping the last good \
                 data",
                emptied.join(", ")
            ),
        ));
    }
    let grouped = Level::grouped(spec.group_by);
    let mut fetched: BTreeMap<Month, MonthSeries> = BTreeMap::new();
    let mut m = fetch_from;
    while m <= current {
        let series: MonthSeries = Arc::new(
            summed
                .remove(&m)
                .map(|s| spec.controls.apply_month(grouped, s).into_iter().collect())
                .unwrap_or_default(),
        );
        fetched.insert(m, series);
        m = m.plus(1);
    }
    let mut by_month = cached;
    by_month.extend(fetched.iter().map(|(m, s)| (*m, s.clone())));
    let mut shed = 0;
    // With a series limit, the limited set; else every month's series, borrowed.
    let limited: BTreeMap<(Month, SeriesKey), i64>;
    let kept: Vec<(Month, &SeriesKey, i64)> = if spec.controls.max_series().is_some() {
        let mut all: BTreeMap<(Month, SeriesKey), i64> = by_month
            .iter()
            .flat_map(|(month, s)| s.iter().map(|(k, v)| ((*month, k.clone()), *v)))
            .collect();
        shed = spec.controls.limit(grouped, &mut all);
        limited = all;
        limited.iter().map(|((m, k), v)| (*m, k, *v)).collect()
    } else {
        by_month
            .iter()
            .flat_map(|(m, s)| s.iter().map(move |(k, v)| (*m, k, *v)))
            .collect()
    };
    // Tagged: every kept series takes the tags of the ids it keeps (summed, should two keys
    // come to one); untagged queries skip this and its clones.
    let retagged: BTreeMap<(Month, SeriesKey), i64>;
    let kept: Vec<(Month, &SeriesKey, i64)> = match &tags {
        None => kept,
        Some(tags) => {
            let mut out: BTreeMap<(Month, SeriesKey), i64> = BTreeMap::new();
            for (month, key, micros) in kept {
                let mut key = key.clone();
                tags.set(&mut key);
                let key = keys.intern(key);
                let sum = out.entry((month, key)).or_insert(0);
                *sum = sum.saturating_add(micros);
            }
            retagged = out;
            retagged.iter().map(|((m, k), v)| (*m, k, *v)).collect()
        }
    };
    let rollup = Rollup::new(start, current, kept.iter().copied());
    let query: Arc<str> = Arc::from(spec.name.as_str());
    let series: Vec<CostSeries> = kept
        .iter()
        .map(|(month, key, micros)| CostSeries {
            query: query.clone(),
            key: (*key).clone(),
            month: *month,
            micros: *micros,
        })
        .collect();
    Ok(Aggregated {
        fetched,
        series,
        rollup,
        shed,
        outside,
    })
}

/// Equal keys made one shared key.
#[derive(Default)]
struct Interner(std::collections::HashSet<SeriesKey>);

impl Interner {
    /// The shared key equal to `key`: the first one seen.
    fn intern(&mut self, key: SeriesKey) -> SeriesKey {
        match self.0.get(&key) {
            Some(shared) => shared.clone(),
            None => {
                self.0.insert(key.clone());
                key
            }
        }
    }
}

/// How a query's series get their tag labels: from discovery, by the ids a series carries.
struct Tagging<'a> {
    discovery: &'a Discovery,
    /// Grouped by clusters: a cluster's own tags come before its project's.
    clusters: bool,
}

impl<'a> Tagging<'a> {
    /// `None` for a query that carries no tag labels: not grouped by projects or clusters, or
    /// no resource with an allowlisted tag (no tag labels configured, in particular).
    fn of(group_by: GroupBy, discovery: &'a Discovery) -> Option<Tagging<'a>> {
        let clusters = match group_by {
            GroupBy::Projects => false,
            GroupBy::Clusters => true,
            GroupBy::Ungrouped | GroupBy::Services | GroupBy::Organizations => return None,
        };
        let any =
            !discovery.project_tags.is_empty() || (clusters && !discovery.cluster_tags.is_empty());
        any.then_some(Tagging {
            discovery,
            clusters,
        })
    }

    /// Sets the tags of `key` from its project and cluster ids: an `(other)` series, without
    /// the id of what was folded, gets its parent's.
    fn set(&self, key: &mut SeriesKey) {
        let cluster = if self.clusters {
            key.get(Label::ClusterId)
        } else {
            None
        };
        let tags = self.discovery.tags_of(key.get(Label::ProjectId), cluster);
        key.set_tags(tags);
    }
}

/// The label set of a row: what the row says, with names and parents filled from discovery
/// where the row lacks them. Labels without a value are left out.
fn series_labels(org_id: &str, row: &UsageRow, d: &Discovery) -> SeriesKey {
    let cluster = row
        .cluster_id
        .as_deref()
        .and_then(|c| d.cluster_info.get(c));
    let project_id = row
        .project_id
        .as_deref()
        .or(cluster.and_then(|(_, p)| p.as_deref()));
    let project_name = row
        .project_name
        .as_deref()
        .or_else(|| project_id.and_then(|p| d.project_names.get(p).map(String::as_str)));
    let cluster_name = row
        .cluster_name
        .as_deref()
        .or(cluster.map(|(n, _)| n.as_str()));
    let mut key = SeriesKey::default();
    key.set(
        Label::OrgId,
        Some(
            row.org_id
                .as_deref()
                .filter(|o| !o.is_empty())
                .unwrap_or(org_id),
        ),
    );
    key.set(Label::OrgName, row.org_name.as_deref());
    key.set(Label::ProjectId, project_id);
    key.set(Label::ProjectName, project_name);
    key.set(Label::ClusterId, row.cluster_id.as_deref());
    key.set(Label::ClusterName, cluster_name);
    key.set(Label::AtlasService, row.service.as_deref());
    key
}

/// Rows of a grouped query that lack the dimension it groups by, when that is a decode
/// problem: the spec does not name the project and cluster keys, so an answer that spells
/// them in a way the parser does not know must not pass as data without its labels. Partial
/// matches may legitimately lack the dimension (org-wide charges), but not every row of them.
pub(super) fn rows_missing_dimension(spec: &QuerySpec, parsed: &ParsedResult) -> Option<usize> {
    let missing = parsed
        .rows
        .iter()
        .filter(|r| !has_dimension(spec.group_by, r))
        .count();
    let tolerated = missing == 0 || (spec.include_partial_matches && missing < parsed.rows.len());
    (!tolerated).then_some(missing)
}

/// Whether a row carries the dimension a query groups by (its id or its name).
fn has_dimension(group_by: GroupBy, row: &UsageRow) -> bool {
    match group_by {
        GroupBy::Projects => row.project_id.is_some() || row.project_name.is_some(),
        GroupBy::Clusters => row.cluster_id.is_some() || row.cluster_name.is_some(),
        GroupBy::Ungrouped | GroupBy::Services => row.service.is_some(),
        GroupBy::Organizations => true,
    }
}

/// The dimension a query groups by, as error messages name it.
pub(super) fn dimension_name(group_by: GroupBy) -> &'static str {
    match group_by {
        GroupBy::Projects => "project (id or name)",
        GroupBy::Clusters => "cluster (id or name)",
        GroupBy::Ungrouped | GroupBy::Services => "service",
        GroupBy::Organizations => "organization",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::{Controls, FileControls};
    use crate::remainder::projects_remainder;

    const ORG: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const P1: &str = "111111111111111111111111";
    const P2: &str = "222222222222222222222222";

    fn month(m: u32) -> Month {
        Month::new(2026, m).expect("valid month")
    }

    /// The default query grouped `group_by`, reading three months.
    fn spec(group_by: GroupBy) -> QuerySpec {
        QuerySpec::defaults(3)
            .into_iter()
            .find(|q| q.group_by == group_by)
            .expect("a default query")
    }

    fn with_controls(mut spec: QuerySpec, yaml: &str) -> QuerySpec {
        let file: FileControls = serde_norway::from_str(yaml).expect("yaml");
        spec.controls =
            Controls::from_file("q", file, spec.months, &crate::series::TagLabels::default())
                .expect("valid controls");
        spec
    }

    fn row(project: Option<&str>, service: &str, m: Month, cents: i64) -> UsageRow {
        UsageRow {
            org_id: Some(Arc::from(ORG)),
            org_name: Some(Arc::from("Org")),
            project_id: project.map(Arc::from),
            project_name: None,
            cluster_id: None,
            cluster_name: None,
            service: Some(Arc::from(service)),
            month: m,
            amount_micros: cents * 10_000,
        }
    }

    fn discovery() -> Discovery {
        Discovery {
            project_ids: vec![P1.to_owned(), P2.to_owned()],
            project_names: [(P1, "one"), (P2, "two")]
                .into_iter()
                .map(|(id, name)| (id.to_owned(), name.to_owned()))
                .collect(),
            ..Discovery::default()
        }
    }

    /// Months 9 to 11, none cached, 11 current.
    fn window() -> Window {
        Window {
            start: month(9),
            fetch_from: month(9),
            current: month(11),
        }
    }

    fn run(spec: &QuerySpec, rows: &[UsageRow]) -> Aggregated {
        aggregate(
            ORG,
            spec,
            rows,
            &discovery(),
            window(),
            BTreeMap::new(),
            &BTreeSet::new(),
        )
        .expect("aggregates")
    }

    /// (label text, month, micros) of every served series, in the order they are exposed.
    fn served(a: &Aggregated) -> Vec<(String, Month, i64)> {
        crate::exposition::render_sorted(a.series.iter().cloned())
            .into_iter()
            .map(|r| (r.labels.to_string(), r.series.month, r.series.micros))
            .collect()
    }

    fn total(a: &Aggregated, m: Month) -> i64 {
        a.series
            .iter()
            .filter(|s| s.month == m)
            .map(|s| s.micros)
            .sum()
    }

    /// Rows of the same label set and month are summed; the same label set in two months
    /// stays two series.
    #[test]
    fn rows_are_summed_per_month_and_label_set() {
        let rows = [
            row(None, "Clusters", month(10), 150),
            row(None, "Clusters", month(10), 250),
            row(None, "Clusters", month(11), 100),
            row(None, "Backup", month(11), 1),
        ];
        let a = run(&spec(GroupBy::Ungrouped), &rows);
        let clusters =
            format!(r#"query="services",org_id="{ORG}",org_name="Org",atlas_service="Clusters""#);
        let backup =
            format!(r#"query="services",org_id="{ORG}",org_name="Org",atlas_service="Backup""#);
        assert_eq!(
            served(&a),
            [
                (backup, month(11), 10_000),
                (clusters.clone(), month(10), 4_000_000),
                (clusters, month(11), 1_000_000),
            ]
        );
        assert_eq!(a.shed, 0);
        assert_eq!(a.outside, 0);
        // Each month read is handed to the month cache, an empty one too.
        assert_eq!(
            a.fetched.keys().copied().collect::<Vec<_>>(),
            [month(9), month(10), month(11)]
        );
        assert!(a.fetched[&month(9)].is_empty());
    }

    /// The months of one label set hold one shared key, and so does the month handed to the
    /// month cache: a label set costs its strings once, not once a month.
    #[test]
    fn the_months_of_a_label_set_share_one_key() {
        let rows = [
            row(Some(P1), "Clusters", month(9), 1),
            row(Some(P1), "Clusters", month(10), 2),
            row(Some(P1), "Clusters", month(11), 3),
            row(Some(P2), "Clusters", month(11), 4),
        ];
        let a = run(&spec(GroupBy::Projects), &rows);
        let p1: Vec<&CostSeries> = a
            .series
            .iter()
            .filter(|s| s.key.get(Label::ProjectId) == Some(P1))
            .collect();
        assert_eq!(p1.len(), 3);
        assert!(p1.iter().all(|s| s.key.shares(&p1[0].key)));
        assert!(a.fetched[&month(9)][0].0.shares(&p1[0].key));
        let p2 = a
            .series
            .iter()
            .find(|s| s.key.get(Label::ProjectId) == Some(P2))
            .expect("P2");
        assert!(!p2.key.shares(&p1[0].key));
    }

    /// A row whose project discovery does not know keeps its id and has no name; a known
    /// project gets its name from discovery.
    #[test]
    fn unknown_projects_keep_their_id() {
        const GONE: &str = "999999999999999999999999";
        let rows = [
            row(Some(GONE), "Clusters", month(11), 5),
            row(Some(P1), "Clusters", month(11), 7),
        ];
        let labels: Vec<String> = served(&run(&spec(GroupBy::Projects), &rows))
            .into_iter()
            .map(|(l, _, _)| l)
            .collect();
        assert_eq!(
            labels,
            [
                format!(
                    r#"query="projects",org_id="{ORG}",org_name="Org",project_id="{P1}",project_name="one",atlas_service="Clusters""#
                ),
                format!(
                    r#"query="projects",org_id="{ORG}",org_name="Org",project_id="{GONE}",atlas_service="Clusters""#
                ),
            ]
        );
    }

    /// Controls fold what they do not keep into `(other)`, per month, and the month totals
    /// stay exactly what the rows add up to; the series limit reports what it shed.
    #[test]
    fn controls_fold_into_other_with_exact_totals() {
        let rows = [
            row(Some(P1), "Clusters", month(10), 900),
            row(Some(P2), "Clusters", month(10), 100),
            row(Some(P1), "Clusters", month(11), 300),
            row(Some(P2), "Clusters", month(11), 200),
            row(Some(P2), "Backup", month(11), 50),
        ];
        let topped = run(&with_controls(spec(GroupBy::Projects), "top: 1"), &rows);
        let limited = run(
            &with_controls(spec(GroupBy::Projects), "max_series: 3"),
            &rows,
        );
        for a in [&topped, &limited] {
            assert_eq!(total(a, month(10)), 10_000_000);
            assert_eq!(total(a, month(11)), 5_500_000);
            assert!(
                a.series
                    .iter()
                    .any(|s| s.key.get(Label::ProjectName) == Some("(other)")),
                "{:?}",
                served(a)
            );
        }
        assert_eq!(topped.series.len(), 4);
        assert_eq!(topped.shed, 0);
        assert!(limited.series.len() <= 3);
        assert_eq!(limited.shed, 4);
    }

    /// The projects query's rollup with its remainder adds up to the org's total of the
    /// services query, to the cent, month by month: org-level charges and a project no
    /// listing knows included.
    #[test]
    fn remainders_add_up_to_the_org_total_to_the_cent() {
        const GONE: &str = "999999999999999999999999";
        let services = [
            row(None, "Clusters", month(10), 1_001),
            row(None, "Support", month(10), 333),
            row(None, "Clusters", month(11), 2_002),
            row(None, "Credits", month(11), -7),
        ];
        let projects = [
            row(Some(P1), "Clusters", month(10), 601),
            row(Some(P2), "Clusters", month(10), 300),
            row(Some(GONE), "Clusters", month(11), 1_000),
            row(Some(P1), "Clusters", month(11), 999),
        ];
        let total = run(&spec(GroupBy::Ungrouped), &services);
        let own = run(&with_controls(spec(GroupBy::Projects), "top: 1"), &projects);
        let remainder = projects_remainder(ORG, "projects", &total.rollup, &own.rollup);
        for m in [month(9), month(10), month(11)] {
            let with_remainder = self::total(&own, m)
                + remainder
                    .iter()
                    .filter(|s| s.month == m)
                    .map(|s| s.micros)
                    .sum::<i64>();
            assert_eq!(with_remainder, self::total(&total, m), "{m}");
        }
        assert_eq!(self::total(&total, month(10)), 13_340_000);
    }

    /// A `clusters` query with `top` and `max_series`, whose shedding reaches both a
    /// project's `cluster_name="(other)"` and the org's `project_name="(other)"`, plus its
    /// remainders (against a `projects` query with `top`) adds up to the org's total exactly,
    /// month by month: what the controls fold is counted once.
    #[test]
    fn a_clusters_query_with_top_and_max_series_adds_up_to_the_org_total_per_month() {
        const C3: &str = "c33333333333333333333333";
        let mut d = discovery();
        for (c, name, p) in [(C1, "c1", P1), (C2, "c2", P1), (C3, "c3", P2)] {
            d.cluster_info
                .insert(c.to_owned(), (name.to_owned(), Some(p.to_owned())));
        }
        let on = |cluster: &str, m: Month, cents: i64| UsageRow {
            cluster_id: Some(Arc::from(cluster)),
            ..row(None, "Clusters", m, cents)
        };
        let (oct, nov) = (month(10), month(11));
        let services = [
            row(None, "Clusters", oct, 1_000),
            row(None, "App Services", oct, 70),
            row(None, "Support", oct, 300),
            row(None, "Clusters", nov, 500),
            row(None, "Support", nov, 100),
        ];
        let projects = [
            row(Some(P1), "Clusters", oct, 700),
            row(Some(P1), "App Services", oct, 70),
            row(Some(P2), "Clusters", oct, 300),
            row(Some(P1), "Clusters", nov, 400),
            row(Some(P2), "Clusters", nov, 100),
        ];
        let clusters = [
            on(C1, oct, 500),
            on(C2, oct, 200),
            on(C3, oct, 300),
            on(C1, nov, 300),
            on(C2, nov, 100),
            on(C3, nov, 100),
        ];
        let agg = |spec: &QuerySpec, rows: &[UsageRow]| {
            aggregate(
                ORG,
                spec,
                rows,
                &d,
                window(),
                BTreeMap::new(),
                &BTreeSet::new(),
            )
            .expect("aggregates")
        };
        let total = agg(&spec(GroupBy::Ungrouped), &services);
        let projects = agg(&with_controls(spec(GroupBy::Projects), "top: 1"), &projects);
        let clusters = agg(
            &with_controls(spec(GroupBy::Clusters), "{top: 1, max_series: 3}"),
            &clusters,
        );
        // The controls folded at both levels: a project's `(other)` and the org's.
        assert!(clusters.series.len() <= 3, "{:?}", served(&clusters));
        assert!(clusters.shed > 0);
        let other = |label: Label| {
            clusters
                .series
                .iter()
                .any(|s| s.key.get(label) == Some("(other)"))
        };
        assert!(other(Label::ClusterName) && other(Label::ProjectName));
        let remainder = crate::remainder::clusters_remainder(
            ORG,
            "clusters",
            &total.rollup,
            Some(&projects.rollup),
            &clusters.rollup,
        );
        for m in [month(9), oct, nov] {
            let served = self::total(&clusters, m)
                + remainder
                    .iter()
                    .filter(|s| s.month == m)
                    .map(|s| s.micros)
                    .sum::<i64>();
            assert_eq!(served, self::total(&total, m), "{m}");
        }
        assert_eq!(self::total(&total, oct), 13_700_000);
    }

    const C1: &str = "c11111111111111111111111";
    const C2: &str = "c22222222222222222222222";

    fn tag_labels() -> crate::series::TagLabels {
        crate::series::TagLabels::new("--cost.tag-labels", ["team", "env"]).expect("valid")
    }

    /// Discovery with tags: project one (team web, env prod) with clusters C1 (team search)
    /// and C2 (untagged); project two (team data).
    fn tagged_discovery() -> Discovery {
        let t = tag_labels();
        let mut d = discovery();
        d.project_tags
            .insert(P1.to_owned(), t.values([("team", "web"), ("env", "prod")]));
        d.project_tags
            .insert(P2.to_owned(), t.values([("team", "data")]));
        d.cluster_tags
            .insert(C1.to_owned(), t.values([("team", "search")]));
        for (c, name) in [(C1, "c1"), (C2, "c2")] {
            d.cluster_info
                .insert(c.to_owned(), (name.to_owned(), Some(P1.to_owned())));
        }
        d
    }

    fn cluster_row(cluster: &str, cents: i64) -> UsageRow {
        UsageRow {
            cluster_id: Some(Arc::from(cluster)),
            ..row(None, "Clusters", month(11), cents)
        }
    }

    /// The label text of every served series of month 11, with tag labels.
    fn tagged(spec: &QuerySpec, rows: &[UsageRow]) -> Vec<String> {
        let a = aggregate(
            ORG,
            spec,
            rows,
            &tagged_discovery(),
            window(),
            BTreeMap::new(),
            &BTreeSet::new(),
        )
        .expect("aggregates");
        let tags = tag_labels();
        crate::exposition::render_tagged(a.series, &tags)
            .into_iter()
            .map(|r| r.labels.to_string())
            .collect()
    }

    /// A cluster series carries the cluster's own tag, or its project's where the cluster
    /// lacks the key; a project series its project's.
    #[test]
    fn a_cluster_takes_its_own_tags_then_its_projects() {
        let clusters = tagged(
            &spec(GroupBy::Clusters),
            &[cluster_row(C1, 5), cluster_row(C2, 7)],
        );
        let base = format!(
            r#"query="clusters",org_id="{ORG}",org_name="Org",project_id="{P1}",project_name="one""#
        );
        assert_eq!(
            clusters,
            [
                format!(
                    r#"{base},cluster_id="{C1}",cluster_name="c1",atlas_service="Clusters",tag_team="search",tag_env="prod""#
                ),
                format!(
                    r#"{base},cluster_id="{C2}",cluster_name="c2",atlas_service="Clusters",tag_team="web",tag_env="prod""#
                ),
            ]
        );
        let projects = tagged(
            &spec(GroupBy::Projects),
            &[row(Some(P2), "Clusters", month(11), 1)],
        );
        assert_eq!(
            projects,
            [format!(
                r#"query="projects",org_id="{ORG}",org_name="Org",project_id="{P2}",project_name="two",atlas_service="Clusters",tag_team="data""#
            )]
        );
    }

    /// An `(other)` series keeps only its parent's tags: a cluster folded into its project's
    /// `(other)` carries the project's, a project folded into the org's carries none; `deny`
    /// on a tag label folds what it matches.
    #[test]
    fn an_other_series_keeps_only_its_parents_tags() {
        let t = tag_labels();
        let mut top = spec(GroupBy::Clusters);
        let file: FileControls = serde_norway::from_str("deny: {tag_team: search}").expect("yaml");
        top.controls = Controls::from_file("q", file, top.months, &t).expect("valid");
        let clusters = tagged(&top, &[cluster_row(C1, 5), cluster_row(C2, 7)]);
        assert_eq!(clusters.len(), 2, "{clusters:?}");
        assert!(
            clusters[1].ends_with(r#"cluster_name="(other)",tag_team="web",tag_env="prod""#),
            "{clusters:?}"
        );
        assert!(
            clusters[0].contains(&format!(r#"cluster_id="{C2}""#)),
            "{clusters:?}"
        );
        let projects = tagged(
            &with_controls(spec(GroupBy::Projects), "top: 1"),
            &[
                row(Some(P1), "Clusters", month(11), 9),
                row(Some(P2), "Clusters", month(11), 1),
            ],
        );
        assert_eq!(
            projects,
            [
                format!(
                    r#"query="projects",org_id="{ORG}",org_name="Org",project_id="{P1}",project_name="one",atlas_service="Clusters",tag_team="web",tag_env="prod""#
                ),
                format!(r#"query="projects",org_id="{ORG}",org_name="Org",project_name="(other)""#),
            ]
        );
        // A tag label the allowlist lacks is refused by the controls.
        let file: FileControls = serde_norway::from_str("allow: {tag_owner: x}").expect("yaml");
        let e = Controls::from_file("q", file, 1, &t).expect_err("not allowlisted");
        assert!(
            e.to_string().starts_with("q.controls.allow.tag_owner:"),
            "{e}"
        );
    }

    /// Without tag labels nothing changes: no tag values on any key.
    #[test]
    fn without_tag_labels_keys_carry_no_tags() {
        let a = run(
            &spec(GroupBy::Projects),
            &[row(Some(P1), "Clusters", month(11), 3)],
        );
        assert!(a.series.iter().all(|s| s.key.tags().is_empty()));
    }

    /// No rows: no series and an empty rollup, not an error; but a month that held data
    /// before and now has no row is an error that keeps the last good data.
    #[test]
    fn empty_input_serves_nothing_unless_months_held_data() {
        let a = run(&spec(GroupBy::Projects), &[]);
        assert!(a.series.is_empty());
        assert_eq!(
            a.rollup,
            Rollup::new(month(9), month(11), std::iter::empty())
        );
        let held = BTreeSet::from([month(10)]);
        let e = aggregate(
            ORG,
            &spec(GroupBy::Projects),
            &[row(Some(P1), "Clusters", month(11), 1)],
            &discovery(),
            window(),
            BTreeMap::new(),
            &held,
        )
        .expect_err("a month lost its rows");
        assert_eq!(e.0, Reason::Decode);
        assert!(e.1.contains("2026-10"), "{}", e.1);
    }

    /// Cached closed months are served beside the months read, and rows dated outside the
    /// months read are counted and ignored.
    #[test]
    fn cached_months_join_the_read_ones_and_stray_rows_are_ignored() {
        let old = run(
            &spec(GroupBy::Ungrouped),
            &[row(None, "Clusters", month(9), 42)],
        );
        let cached = BTreeMap::from([(month(9), old.fetched[&month(9)].clone())]);
        let a = aggregate(
            ORG,
            &spec(GroupBy::Ungrouped),
            &[
                row(None, "Clusters", month(9), 1),
                row(None, "Clusters", month(11), 5),
            ],
            &discovery(),
            Window {
                fetch_from: month(10),
                ..window()
            },
            cached,
            &BTreeSet::new(),
        )
        .expect("aggregates");
        assert_eq!(a.outside, 1);
        assert_eq!(total(&a, month(9)), 420_000);
        assert_eq!(total(&a, month(11)), 50_000);
        assert!(!a.fetched.contains_key(&month(9)));
    }
}
