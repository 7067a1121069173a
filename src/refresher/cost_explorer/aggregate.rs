//! Aggregation: from the parsed rows of one query to the series it serves, as a pure
//! function ([`aggregate`]). Rows are summed per month and label set (names and parents
//! filled in from discovery), the months read join the cached ones, every month takes the
//! newest names and the current tags, and the query's controls judge the whole window at
//! once ([`crate::controls`]). The series before the controls are summed by month, project
//! and service for the remainders ([`crate::remainder`]).
//!
//! A query that gets remainders and has controls is not controlled here: its remainders
//! depend on the other queries' last good data, and go through its controls with its own
//! series, so it hands its series over as they are ([`Uncontrolled`]) and the controls run
//! when its org's refresh is published ([`super::roles`]).
//!
//! A query grouped by projects or clusters carries the tag labels discovery found (issue 11):
//! set on each row's label set, and on every series of a cached month (closed months follow
//! the current tags, none when no resource has an allowlisted tag any more), before the
//! controls, so `allow` and `deny` can name them. An `(other)` series gets its parent's tags.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::discovery::Discovery;
use super::month_cache::MonthSeries;
use super::roles::Role;
use crate::atlas::result::{ParsedResult, UsageRow};
use crate::config::QuerySpec;
use crate::controls::{Controls, Judge, Level, WindowSeries};
use crate::model::{GroupBy, Reason};
use crate::month::Month;
use crate::remainder::Rollup;
use crate::series::{CostSeries, Label, SeriesKey, TagValues};

/// The months of one refresh of a query.
#[derive(Clone, Copy, Debug)]
pub(in crate::refresher) struct Window {
    /// The first month the query covers.
    pub(in crate::refresher) start: Month,
    /// The first month read from Atlas; those before it come from the month cache.
    pub(in crate::refresher) fetch_from: Month,
    /// The current month, the last one covered.
    pub(in crate::refresher) current: Month,
    /// The day of the current month (1-based): the controls judge the open month by its
    /// forecast.
    pub(in crate::refresher) day: u32,
}

/// What one refresh of a query comes to.
#[derive(Debug)]
pub(in crate::refresher) struct Aggregated {
    /// Each month read from Atlas (`fetch_from..=current`), before the controls: the closed
    /// ones are what the month cache keeps.
    pub(in crate::refresher) fetched: BTreeMap<Month, MonthSeries>,
    /// The served series of every month, after the controls; each label set appears once a
    /// month. Empty when the controls run at publication ([`Aggregated::uncontrolled`]).
    pub(in crate::refresher) series: Vec<CostSeries>,
    /// The series before the controls, when they run at publication with the remainders.
    pub(in crate::refresher) uncontrolled: Option<Uncontrolled>,
    /// The series before the controls, summed for the remainders.
    pub(in crate::refresher) rollup: Rollup,
    /// Series folded into `(other)` by the series limit.
    pub(in crate::refresher) shed: u64,
    /// Rows dated outside the months read, ignored.
    pub(in crate::refresher) outside: u64,
}

/// A query whose controls run when its org's refresh is published, over its own series and
/// its remainders together: so the series limit counts the remainders, and what the controls
/// fold (a denied project) has no remainder of its own either.
#[derive(Debug)]
pub(in crate::refresher) struct Uncontrolled {
    query: Arc<str>,
    /// Every month's series before the controls.
    series: WindowSeries,
    controls: Controls,
    grouped: Level,
    current: Month,
    day: u32,
    /// Project id -> its tags, from the refresh's discovery: an `(other)` of a project
    /// carries them.
    project_tags: HashMap<String, TagValues>,
}

impl Uncontrolled {
    /// The months its series hold data for.
    pub(in crate::refresher) fn months(&self) -> BTreeSet<Month> {
        self.series.keys().map(|(m, _)| *m).collect()
    }

    /// Its series and `remainders` under its controls: the series served, and how many the
    /// series limit folded.
    pub(in crate::refresher) fn apply(
        &self,
        remainders: Vec<CostSeries>,
    ) -> (Vec<CostSeries>, u64) {
        let window = self
            .series
            .clone()
            .with(remainders.into_iter().map(|r| ((r.month, r.key), r.micros)));
        let judge = Judge {
            current: self.current,
            day: self.day,
            project_tags: &self.project_tags,
        };
        let applied = self.controls.apply(self.grouped, &judge, window);
        (series_of(&self.query, applied.series), applied.shed)
    }
}

/// Aggregates the `rows` a query read for `window`, with the closed months `cached` from
/// earlier refreshes, into the series it serves.
///
/// # Errors
/// [`Reason::Decode`] when a month of `held` (months that held data before) has no row at
/// all: an answer that lost its rows, not spend that vanished.
pub(in crate::refresher) fn aggregate(
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
        day,
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
    let mut fetched: BTreeMap<Month, MonthSeries> = BTreeMap::new();
    let mut m = fetch_from;
    while m <= current {
        let series: MonthSeries =
            Arc::new(summed.remove(&m).unwrap_or_default().into_iter().collect());
        fetched.insert(m, series);
        m = m.plus(1);
    }
    // Cached months were tagged when they were read: they take the current tags, or none
    // when no listed resource has an allowlisted tag any more.
    let retag = tags.or_else(|| Tagging::clearing(spec.group_by, discovery, &cached));
    let mut by_month: Vec<(Month, MonthSeries, bool)> =
        cached.into_iter().map(|(m, s)| (m, s, true)).collect();
    by_month.extend(fetched.iter().map(|(m, s)| (*m, s.clone(), false)));
    let series = window_series(&by_month, retag.as_ref(), &mut keys);
    drop(by_month);
    let rollup = Rollup::new(start, current, series.iter().map(|((m, k), v)| (*m, k, *v)));
    let query: Arc<str> = Arc::from(spec.name.as_str());
    let grouped = Level::grouped(spec.group_by);
    let project_tags = || match spec.group_by {
        GroupBy::Clusters => discovery.project_tags.clone(),
        _ => HashMap::new(),
    };
    let remainders = matches!(Role::of(spec), Role::Projects | Role::Clusters);
    let (series, uncontrolled, shed) = if spec.controls.is_empty() {
        let series = series
            .into_iter()
            .map(|((month, key), micros)| CostSeries {
                query: query.clone(),
                key,
                month,
                micros,
            })
            .collect();
        (series, None, 0)
    } else if remainders {
        let uncontrolled = Uncontrolled {
            query,
            series: series.into_iter().collect(),
            controls: spec.controls.clone(),
            grouped,
            current,
            day,
            project_tags: project_tags(),
        };
        (Vec::new(), Some(uncontrolled), 0)
    } else {
        let tags = project_tags();
        let judge = Judge {
            current,
            day,
            project_tags: &tags,
        };
        let applied = spec
            .controls
            .apply(grouped, &judge, series.into_iter().collect());
        (series_of(&query, applied.series), None, applied.shed)
    };
    Ok(Aggregated {
        fetched,
        series,
        uncontrolled,
        rollup,
        shed,
        outside,
    })
}

/// The cost series of `query` from a window.
fn series_of(query: &Arc<str>, window: WindowSeries) -> Vec<CostSeries> {
    window
        .into_vec()
        .into_iter()
        .map(|((month, key), micros)| CostSeries {
            query: query.clone(),
            key,
            month,
            micros,
        })
        .collect()
}

/// Every month's series, ordered by month and labels, one entry per label set and month:
/// each org, project and cluster id takes its name in the newest month that has one (a
/// renamed project has its new name in every month), and the months `by_month` marks as
/// cached take `retag`'s tags.
fn window_series(
    by_month: &[(Month, MonthSeries, bool)],
    retag: Option<&Tagging<'_>>,
    keys: &mut Interner,
) -> Vec<((Month, SeriesKey), i64)> {
    let names = NewestNames::of(by_month);
    let mut changed = false;
    let mut out: Vec<((Month, SeriesKey), i64)> =
        Vec::with_capacity(by_month.iter().map(|(_, s, _)| s.len()).sum());
    let mut last = NameCache::default();
    for (month, series, cached) in by_month {
        for (key, micros) in series.iter() {
            let mut k = key.clone();
            names.apply(&mut k, &mut last);
            if *cached && let Some(tags) = retag {
                tags.set(&mut k);
            }
            let k = if k.shares(key) {
                k
            } else {
                changed = true;
                keys.intern(k)
            };
            out.push(((*month, k), *micros));
        }
    }
    if changed {
        // Two label sets may have become one: summed, in order again.
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 = earlier.1.saturating_add(later.1);
            }
            same
        });
    }
    out
}

/// The name of each org, project and cluster id in the newest month that names it.
#[derive(Default)]
struct NewestNames {
    /// (id label, id) -> name.
    names: HashMap<(Label, Box<str>), Box<str>>,
}

/// The (id label, name label) pairs whose names follow their ids.
const NAMED: [(Label, Label); 3] = [
    (Label::OrgId, Label::OrgName),
    (Label::ProjectId, Label::ProjectName),
    (Label::ClusterId, Label::ClusterName),
];

/// The last id looked up per pair of [`NAMED`] and the name found: series of one project
/// or cluster come one after another, so most series need no lookup.
#[derive(Default)]
struct NameCache([Option<LastName>; 3]);

/// An id and its newest name, if any.
type LastName = (Box<str>, Option<Box<str>>);

impl NewestNames {
    fn of(by_month: &[(Month, MonthSeries, bool)]) -> NewestNames {
        let mut out = NewestNames::default();
        let mut last: [Option<&str>; 3] = [None; 3];
        for (_, series, _) in by_month.iter().rev() {
            for (key, _) in series.iter() {
                for (i, (id_label, name_label)) in NAMED.into_iter().enumerate() {
                    let (Some(id), Some(name)) = (key.get(id_label), key.get(name_label)) else {
                        continue;
                    };
                    if last[i] == Some(id) {
                        continue;
                    }
                    last[i] = Some(id);
                    out.names
                        .entry((id_label, Box::from(id)))
                        .or_insert_with(|| Box::from(name));
                }
            }
        }
        out
    }

    /// Gives `key` the newest name of each of its ids.
    fn apply(&self, key: &mut SeriesKey, last: &mut NameCache) {
        for (i, (id_label, name_label)) in NAMED.into_iter().enumerate() {
            let Some(id) = key.get(id_label) else {
                continue;
            };
            let cached = &mut last.0[i];
            if cached.as_ref().is_none_or(|(c, _)| **c != *id) {
                let name = self.names.get(&(id_label, Box::from(id))).cloned();
                *cached = Some((Box::from(id), name));
            }
            if let Some(newest) = cached.as_ref().and_then(|(_, n)| n.as_deref())
                && key.get(name_label) != Some(newest)
            {
                key.set(name_label, Some(newest));
            }
        }
    }
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

    /// For the cached months of a query that [`Tagging::of`] gives none: a tagging that
    /// clears their tags when some carry tags no listed resource has any more; `None` when
    /// none carries any (nothing to do).
    fn clearing(
        group_by: GroupBy,
        discovery: &'a Discovery,
        cached: &BTreeMap<Month, MonthSeries>,
    ) -> Option<Tagging<'a>> {
        let clusters = match group_by {
            GroupBy::Projects => false,
            GroupBy::Clusters => true,
            GroupBy::Ungrouped | GroupBy::Services | GroupBy::Organizations => return None,
        };
        let tagged = cached
            .values()
            .any(|s| s.iter().any(|(k, _)| !k.tags().is_empty()));
        tagged.then_some(Tagging {
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
pub(in crate::refresher) fn rows_missing_dimension(
    spec: &QuerySpec,
    parsed: &ParsedResult,
) -> Option<usize> {
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
pub(in crate::refresher) fn dimension_name(group_by: GroupBy) -> &'static str {
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
    use crate::exposition::label_text;
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

    /// Months 9 to 11, none cached, 11 current, on its 15th.
    fn window() -> Window {
        Window {
            start: month(9),
            fetch_from: month(9),
            current: month(11),
            day: 15,
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

    /// What the query serves with `remainder` once its org is published: its controls run
    /// over both when they wait for the publication, else the remainder comes after.
    fn published(a: &Aggregated, remainder: Vec<CostSeries>) -> (Vec<CostSeries>, u64) {
        match &a.uncontrolled {
            Some(u) => u.apply(remainder),
            None => (a.series.iter().cloned().chain(remainder).collect(), a.shed),
        }
    }

    /// (label text, month, micros) of every served series, in the order they are exposed.
    fn served(a: &Aggregated) -> Vec<(String, Month, i64)> {
        crate::exposition::render_sorted(published(a, Vec::new()).0)
            .into_iter()
            .map(|r| (r.labels.to_string(), r.series.month, r.series.micros))
            .collect()
    }

    fn sum_of(series: &[CostSeries], m: Month) -> i64 {
        series
            .iter()
            .filter(|s| s.month == m)
            .map(|s| s.micros)
            .sum()
    }

    fn total(a: &Aggregated, m: Month) -> i64 {
        sum_of(&published(a, Vec::new()).0, m)
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

    /// Controls fold what they do not keep into `(other)`, an entity in every month at once,
    /// and the month totals stay exactly what the rows add up to; the series limit reports
    /// what it shed.
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
                served(a)
                    .iter()
                    .any(|(l, _, _)| l.contains(r#"project_name="(other)""#)),
                "{:?}",
                served(a)
            );
        }
        // P1 (900 + 300's forecast) is kept in both months, P2 folded in both.
        let (topped, shed) = published(&topped, Vec::new());
        assert_eq!(topped.len(), 4);
        assert_eq!(shed, 0);
        assert!(
            topped
                .iter()
                .filter(|s| s.key.get(Label::ProjectId).is_some())
                .all(|s| s.key.get(Label::ProjectId) == Some(P1))
        );
        // Folding P2 (3 series) leaves 4 series, one too many: P1 goes too, 2 series.
        let (limited, shed) = published(&limited, Vec::new());
        assert_eq!(limited.len(), 2);
        assert_eq!(shed, 5);
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
        let (served, _) = published(&own, remainder);
        for m in [month(9), month(10), month(11)] {
            assert_eq!(sum_of(&served, m), self::total(&total, m), "{m}");
        }
        assert_eq!(self::total(&total, month(10)), 13_340_000);
    }

    /// A `clusters` query with `top` and `max_series`, its remainders included (against a
    /// `projects` query with `top`), serves at most `max_series` series and adds up to the
    /// org's total exactly, month by month; the tightest limit folds everything into the org's
    /// `project_name="(other)"`, one series a month.
    #[test]
    fn a_clusters_query_with_top_and_max_series_adds_up_to_the_org_total_per_month() {
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
        for max in [12, 6, 3] {
            let clusters = agg(
                &with_controls(
                    spec(GroupBy::Clusters),
                    &format!("{{top: 1, max_series: {max}}}"),
                ),
                &clusters,
            );
            let remainder = crate::remainder::clusters_remainder(
                ORG,
                "clusters",
                &total.rollup,
                Some(&projects.rollup),
                &clusters.rollup,
            );
            let (served, shed) = published(&clusters, remainder);
            assert!(served.len() <= max, "{max}: {served:?}");
            assert!(shed > 0, "{max}");
            assert!(
                served
                    .iter()
                    .any(|s| s.key.get(Label::ClusterName) == Some("(other)")
                        || s.key.get(Label::ProjectName) == Some("(other)"))
            );
            for m in [month(9), oct, nov] {
                assert_eq!(sum_of(&served, m), self::total(&total, m), "{max}, {m}");
            }
            if max == 3 {
                let labels: Vec<String> = served
                    .iter()
                    .map(|s| label_text(&s.query, &s.key, &Default::default()))
                    .collect();
                let org_other = format!(
                    r#"query="clusters",org_id="{ORG}",org_name="Org",project_name="(other)""#
                );
                assert_eq!(labels, [org_other.clone(), org_other]);
            }
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
        crate::exposition::render_tagged(published(&a, Vec::new()).0, &tags)
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

    /// The clusters A, B and C of project one, each with its own id.
    fn abc_discovery() -> Discovery {
        let mut d = discovery();
        for (c, name) in [(C1, "a"), (C2, "b"), (C3, "c")] {
            d.cluster_info
                .insert(c.to_owned(), (name.to_owned(), Some(P1.to_owned())));
        }
        d
    }

    const C3: &str = "c33333333333333333333333";

    /// The cluster ids served as their own series in `m`.
    fn clusters_in(series: &[CostSeries], m: Month) -> BTreeSet<String> {
        series
            .iter()
            .filter(|s| s.month == m)
            .filter_map(|s| s.key.get(Label::ClusterId).map(str::to_owned))
            .collect()
    }

    /// On November 2nd (one day of data), A's 10 USD and B's 9 USD so far are the cheapest
    /// series of the window, yet A and B, kept in October (300 and 280 USD), stay in November:
    /// neither `min_usd` nor `max_series` folds the open month first. C (5 USD in October)
    /// folds in both months.
    #[test]
    fn the_open_month_is_not_folded_first() {
        let on = |cluster: &str, m: Month, cents: i64| UsageRow {
            cluster_id: Some(Arc::from(cluster)),
            ..row(None, "Clusters", m, cents)
        };
        let (oct, nov) = (month(10), month(11));
        let rows = [
            on(C1, oct, 30_000),
            on(C2, oct, 28_000),
            on(C3, oct, 500),
            on(C1, nov, 1_000),
            on(C2, nov, 900),
            on(C3, nov, 20),
        ];
        for controls in ["min_usd: 50", "max_series: 5"] {
            let a = aggregate(
                ORG,
                &with_controls(spec(GroupBy::Clusters), controls),
                &rows,
                &abc_discovery(),
                Window { day: 2, ..window() },
                BTreeMap::new(),
                &BTreeSet::new(),
            )
            .expect("aggregates");
            let (served, _) = published(&a, Vec::new());
            let kept = clusters_in(&served, oct);
            assert!(kept.contains(C1), "{controls}: {kept:?}");
            assert_eq!(clusters_in(&served, nov), kept, "{controls}");
            assert!(!kept.contains(C3), "{controls}");
            for m in [oct, nov] {
                assert_eq!(sum_of(&served, m), sum_of(&a_total(&rows), m), "{controls}");
            }
        }
    }

    /// The rows as series, summed by month (for totals).
    fn a_total(rows: &[UsageRow]) -> Vec<CostSeries> {
        run(&spec(GroupBy::Ungrouped), rows).series
    }

    /// Closed months from the cache follow the current tags, also when no listed resource
    /// has an allowlisted tag any more: their old tags go.
    #[test]
    fn cached_months_lose_their_tags_when_no_resource_has_any() {
        let query = spec(GroupBy::Clusters);
        let read = aggregate(
            ORG,
            &query,
            &[
                cluster_row(C1, 5),
                UsageRow {
                    month: month(9),
                    ..cluster_row(C1, 4)
                },
            ],
            &tagged_discovery(),
            window(),
            BTreeMap::new(),
            &BTreeSet::new(),
        )
        .expect("aggregates");
        let september = read.fetched[&month(9)].clone();
        assert!(
            september.iter().all(|(k, _)| !k.tags().is_empty()),
            "tagged when read"
        );
        let mut untagged = tagged_discovery();
        untagged.project_tags.clear();
        untagged.cluster_tags.clear();
        let a = aggregate(
            ORG,
            &query,
            &[cluster_row(C1, 5)],
            &untagged,
            Window {
                fetch_from: month(10),
                ..window()
            },
            BTreeMap::from([(month(9), september)]),
            &BTreeSet::new(),
        )
        .expect("aggregates");
        assert!(a.series.iter().any(|s| s.month == month(9)));
        assert!(
            a.series.iter().all(|s| s.key.tags().is_empty()),
            "{:?}",
            a.series
        );
    }

    /// A project renamed since a closed month was cached takes its new name in every month,
    /// the cached one included, and so do its remainders.
    #[test]
    fn every_month_takes_the_newest_names() {
        let query = spec(GroupBy::Projects);
        let read = run(&query, &[row(Some(P1), "Clusters", month(9), 3)]);
        let september = read.fetched[&month(9)].clone();
        let mut renamed = discovery();
        renamed
            .project_names
            .insert(P1.to_owned(), "uno".to_owned());
        let a = aggregate(
            ORG,
            &query,
            &[row(Some(P1), "Clusters", month(11), 7)],
            &renamed,
            Window {
                fetch_from: month(10),
                ..window()
            },
            BTreeMap::from([(month(9), september)]),
            &BTreeSet::new(),
        )
        .expect("aggregates");
        let names: Vec<(Month, Option<&str>)> = a
            .series
            .iter()
            .map(|s| (s.month, s.key.get(Label::ProjectName)))
            .collect();
        assert_eq!(names, [(month(9), Some("uno")), (month(11), Some("uno"))]);
        let total = run(
            &spec(GroupBy::Ungrouped),
            &[
                row(None, "Clusters", month(9), 3),
                row(None, "Clusters", month(11), 9),
            ],
        );
        let clusters = run(&spec(GroupBy::Clusters), &[]);
        let remainder = crate::remainder::clusters_remainder(
            ORG,
            "clusters",
            &total.rollup,
            Some(&a.rollup),
            &clusters.rollup,
        );
        assert!(
            remainder
                .iter()
                .filter(|s| s.key.get(Label::ProjectId) == Some(P1))
                .all(|s| s.key.get(Label::ProjectName) == Some("uno"))
        );
    }
}
