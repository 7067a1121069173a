//! The controls applied to every month of a query at once: the window of series a refresh
//! serves (remainders included, for the queries that have them).
//!
//! The rule, in order:
//! 1. `allow` and `deny` fold each series that fails them, by its labels, at the level of the
//!    label that refused it (a label does not depend on the month: names and tags are the
//!    newest ones in every month).
//! 2. `min_usd` and `top` judge each *entity* of the grouped dimension (a cluster with all its
//!    services, say) over the whole window, and keep or fold it in every month at once. The
//!    open month counts by its forecast ([`forecast_micros`]), so its small month to date on
//!    the first days of a month never makes an entity fold then and come back later.
//!    - `min_usd`: an entity none of whose months reaches the amount (in size: a credit is as
//!      big as a charge) is folded.
//!    - `top`: per parent, the entities with the most spend over the window (the sum of each
//!      month's size) are kept, ties by labels.
//!
//!    `(other)` and `(unattributed)` series are not entities: these two leave them alone.
//! 3. `max_series` counts every series of the window, remainders included; while there are
//!    more, it folds whole entities, the least spend over the window first (ties by labels),
//!    into their parent's `(other)`: at the grouped level, then (for clusters) whole projects
//!    into the org's `project_name="(other)"`. Remainders are shed like any entity.
//!
//! Every fold moves micro-dollars from one series to another of the same month: the sum of
//! each month is unchanged, exactly.
//!
//! The window is a sorted list, where the series of one entity in one month come one after
//! another (the labels above the entity come first in the order): each step works on such
//! runs. An entity is known by the labels it has in common with its series, read from one of
//! them without a copy, and its parent's `(other)` is made once a parent, not once a series.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Controls, Level};
use crate::month::{Month, forecast_micros};
use crate::series::{Label, SeriesKey, TagValues};

/// One series of a window: (month, labels) and its micro-dollars.
pub type Entry = ((Month, SeriesKey), i64);

/// The series of every month of a query, ordered by month and labels, each (month, labels)
/// once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowSeries(Vec<Entry>);

impl WindowSeries {
    /// The window of `entries` in any order; entries of the same month and labels are
    /// summed.
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> WindowSeries {
        let mut v: Vec<Entry> = entries.into_iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        WindowSeries(summed(v))
    }

    /// This window with `more` entries added (summed where their month and labels are
    /// already here).
    pub fn with(self, more: impl IntoIterator<Item = Entry>) -> WindowSeries {
        merge(self.0, more.into_iter().collect())
    }

    /// The number of series.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the window has no series.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The series, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter()
    }

    /// The (month, labels) of every series, in order.
    pub fn keys(&self) -> impl Iterator<Item = &(Month, SeriesKey)> {
        self.0.iter().map(|(k, _)| k)
    }

    /// The amount of the series of `key`, if there is one.
    pub fn get(&self, key: &(Month, SeriesKey)) -> Option<i64> {
        self.0
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| self.0[i].1)
    }

    /// The series, in order.
    pub fn into_vec(self) -> Vec<Entry> {
        self.0
    }
}

impl FromIterator<Entry> for WindowSeries {
    fn from_iter<I: IntoIterator<Item = Entry>>(entries: I) -> WindowSeries {
        WindowSeries::new(entries)
    }
}

/// Sorted `entries` with the entries of equal keys summed into one.
fn summed(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            earlier.1 = earlier.1.saturating_add(later.1);
        }
        same
    });
    entries
}

/// The sorted, unique `sorted` and `extra` (in any order) as one window, equal keys summed.
fn merge(sorted: Vec<Entry>, mut extra: Vec<Entry>) -> WindowSeries {
    if extra.is_empty() {
        return WindowSeries(sorted);
    }
    extra.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let extra = summed(extra);
    let mut out: Vec<Entry> = Vec::with_capacity(sorted.len() + extra.len());
    let (mut a, mut b) = (sorted.into_iter().peekable(), extra.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    let (key, v) = a.next().unwrap_or_else(|| unreachable!("peeked"));
                    let w = b.next().map_or(0, |(_, w)| w);
                    Some((key, v.saturating_add(w)))
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    WindowSeries(out)
}

/// What the controls need to know besides the series: the open month and the day (for its
/// forecast), and the projects' tags (an `(other)` of a project carries them).
#[derive(Clone, Copy, Debug)]
pub struct Judge<'a> {
    /// The current month, still open: judged by its forecast.
    pub current: Month,
    /// The day of the current month (1-based) the data is from.
    pub day: u32,
    /// Project id -> the project's tags (projects with an allowlisted tag only).
    pub project_tags: &'a HashMap<String, TagValues>,
}

/// The window after the controls.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The series served; each label set appears once a month.
    pub series: WindowSeries,
    /// Series the series limit folded into `(other)`.
    pub shed: u64,
}

/// An entity's spend over the window.
#[derive(Clone, Copy, Debug, Default)]
struct Weight {
    /// The sum over months of each month's size (the open month by its forecast).
    window: u64,
    /// The largest month's size.
    peak: u64,
}

impl Judge<'_> {
    /// The size of a month's total, the open month counted by its forecast.
    fn size(&self, month: Month, micros: i64) -> u64 {
        let judged = if month == self.current {
            forecast_micros(micros, month, self.day)
        } else {
            micros
        };
        judged.unsigned_abs()
    }

    /// `key` folded at `level`, with its parent's tags.
    fn fold(&self, level: Level, key: &SeriesKey) -> SeriesKey {
        let mut folded = level.fold(key);
        if level == Level::Cluster
            && let Some(tags) = key
                .get(Label::ProjectId)
                .and_then(|p| self.project_tags.get(p))
        {
            folded.set_tags(tags.clone());
        }
        folded
    }
}

/// The labels of an entity (or of a parent) of a level, read from one of its series without
/// a copy: the first `labels` labels, and the tags when they belong to it. Compared, hashed
/// and ordered by those alone.
#[derive(Clone, Copy, Debug)]
struct Prefix<'a> {
    key: &'a SeriesKey,
    labels: usize,
    tags: bool,
}

impl<'a> Prefix<'a> {
    /// The entity of `key` at `level` (what [`Level::fold`] leaves out, and all above it).
    fn entity(level: Level, key: &'a SeriesKey) -> Prefix<'a> {
        let (labels, tags) = match level {
            Level::Project => (4, false),
            Level::Cluster => (6, true),
            Level::Service => (7, true),
        };
        Prefix { key, labels, tags }
    }

    /// The parent of `key` at `level`: what its fold keeps.
    fn parent(level: Level, key: &'a SeriesKey) -> Prefix<'a> {
        let (labels, tags) = match level {
            Level::Project => (2, false),
            Level::Cluster => (4, false),
            Level::Service => (6, true),
        };
        Prefix { key, labels, tags }
    }

    fn values(&self) -> impl Iterator<Item = Option<&'a str>> + '_ {
        Label::ALL[..self.labels].iter().map(|l| self.key.get(*l))
    }

    fn tag_values(&self) -> &'a [Option<std::sync::Arc<str>>] {
        if self.tags { self.key.tags() } else { &[] }
    }
}

impl PartialEq for Prefix<'_> {
    fn eq(&self, other: &Self) -> bool {
        (self.key.shares(other.key) && self.labels == other.labels && self.tags == other.tags)
            || (self.values().eq(other.values()) && self.tag_values() == other.tag_values())
    }
}

impl Eq for Prefix<'_> {}

impl std::hash::Hash for Prefix<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for v in self.values() {
            v.hash(state);
        }
        self.tag_values().hash(state);
    }
}

impl Ord for Prefix<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.values()
            .cmp(other.values())
            .then_with(|| self.tag_values().cmp(other.tag_values()))
    }
}

impl PartialOrd for Prefix<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Consecutive series of one month and one entity of a level.
struct Run<'a> {
    /// The series are `entries[start..end]`.
    start: usize,
    end: usize,
    month: Month,
    /// Their entity; `None` for series that are no entity of the level (already folded, or
    /// not ranked).
    entity: Option<Prefix<'a>>,
    /// Their sum.
    micros: i64,
}

/// The runs of `entries` at `level`; `counted` says which series are entities at all.
fn runs<'a>(
    level: Level,
    entries: &'a [Entry],
    counted: impl Fn(&SeriesKey) -> bool,
) -> Vec<Run<'a>> {
    let mut out: Vec<Run<'a>> = Vec::new();
    for (i, ((month, key), micros)) in entries.iter().enumerate() {
        let entity = counted(key).then(|| Prefix::entity(level, key));
        if let Some(last) = out.last_mut()
            && last.month == *month
            && last.entity == entity
        {
            last.end = i + 1;
            last.micros = last.micros.saturating_add(*micros);
            continue;
        }
        out.push(Run {
            start: i,
            end: i + 1,
            month: *month,
            entity,
            micros: *micros,
        });
    }
    out
}

/// The weight of every entity of `runs` over the window.
fn weights<'a>(judge: &Judge<'_>, runs: &[Run<'a>]) -> HashMap<Prefix<'a>, Weight> {
    let mut weights: HashMap<Prefix<'a>, Weight> = HashMap::new();
    let mut month_totals: HashMap<Prefix<'a>, i64> = HashMap::new();
    let mut close = |month: Month, totals: &mut HashMap<Prefix<'a>, i64>| {
        for (entity, micros) in totals.drain() {
            let size = judge.size(month, micros);
            let w = weights.entry(entity).or_default();
            w.window = w.window.saturating_add(size);
            w.peak = w.peak.max(size);
        }
    };
    let mut open: Option<Month> = None;
    // Runs come in month order: each month's totals are closed as it ends.
    for run in runs {
        let Some(entity) = run.entity else {
            continue;
        };
        if open != Some(run.month) {
            if let Some(m) = open {
                close(m, &mut month_totals);
            }
            open = Some(run.month);
        }
        let t = month_totals.entry(entity).or_insert(0);
        *t = t.saturating_add(run.micros);
    }
    if let Some(m) = open {
        close(m, &mut month_totals);
    }
    weights
}

/// The `(other)` at `level` of each parent of the entities of `runs`: made once a parent.
fn others<'a>(
    level: Level,
    judge: &Judge<'_>,
    entries: &'a [Entry],
    runs: &[Run<'a>],
) -> HashMap<Prefix<'a>, SeriesKey> {
    let mut out: HashMap<Prefix<'a>, SeriesKey> = HashMap::new();
    for run in runs.iter().filter(|r| r.entity.is_some()) {
        let key = &entries[run.start].0.1;
        out.entry(Prefix::parent(level, key))
            .or_insert_with(|| judge.fold(level, key));
    }
    out
}

/// `entries` with the runs of the entities in `folded` folded at `level` into their parent's
/// `(other)` (from `others`).
fn fold_runs(
    level: Level,
    entries: &[Entry],
    runs: &[Run<'_>],
    folded: &HashSet<Prefix<'_>>,
    others: &HashMap<Prefix<'_>, SeriesKey>,
) -> WindowSeries {
    let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
    let mut extra: Vec<Entry> = Vec::new();
    for run in runs {
        let folds = run.entity.is_some_and(|e| folded.contains(&e));
        let other = folds
            .then(|| others.get(&Prefix::parent(level, &entries[run.start].0.1)))
            .flatten();
        match other {
            Some(other) => extra.push(((run.month, other.clone()), run.micros)),
            None => kept.extend_from_slice(&entries[run.start..run.end]),
        }
    }
    merge(kept, extra)
}

impl Controls {
    /// Applies these controls to `series`, every month of a query grouped at `grouped`. The
    /// sum of each month is unchanged.
    pub fn apply(&self, grouped: Level, judge: &Judge<'_>, series: WindowSeries) -> Applied {
        if self.is_empty() {
            return Applied { series, shed: 0 };
        }
        let series = self.filter(grouped, judge, series);
        let mut series = self.choose(grouped, judge, series);
        let shed = match self.max_series {
            Some(max) => limit(max, grouped, judge, &mut series),
            None => 0,
        };
        Applied { series, shed }
    }

    /// Step 1: `allow` and `deny`.
    fn filter(&self, grouped: Level, judge: &Judge<'_>, series: WindowSeries) -> WindowSeries {
        if self.allow.is_empty() && self.deny.is_empty() {
            return series;
        }
        let mut kept = Vec::with_capacity(series.len());
        let mut extra: BTreeMap<(Month, SeriesKey), i64> = BTreeMap::new();
        // Consecutive series folded at one level into one parent share their `(other)`.
        let mut last: Option<(Level, SeriesKey, SeriesKey)> = None;
        for ((month, key), micros) in series.into_vec() {
            let Some(level) = self.filtered(&key, grouped) else {
                kept.push(((month, key), micros));
                continue;
            };
            let other = match &last {
                Some((l, source, other)) if *l == level && level.same_parent(source, &key) => {
                    other.clone()
                }
                _ => {
                    let other = judge.fold(level, &key);
                    last = Some((level, key, other.clone()));
                    other
                }
            };
            let sum = extra.entry((month, other)).or_insert(0);
            *sum = sum.saturating_add(micros);
        }
        merge(kept, extra.into_iter().collect())
    }

    /// Step 2: `min_usd` and `top`, entity by entity over the window.
    fn choose(&self, grouped: Level, judge: &Judge<'_>, series: WindowSeries) -> WindowSeries {
        if self.min_micros.is_none() && self.top.is_none() {
            return series;
        }
        let entries = series.into_vec();
        let runs = runs(grouped, &entries, |k| {
            !grouped.is_folded(k) && !grouped.is_remainder(k)
        });
        let weights = weights(judge, &runs);
        let mut by_parent: BTreeMap<Prefix<'_>, Vec<(u64, Prefix<'_>)>> = BTreeMap::new();
        for (entity, w) in &weights {
            by_parent
                .entry(Prefix::parent(grouped, entity.key))
                .or_default()
                .push((w.window, *entity));
        }
        let mut folded: HashSet<Prefix<'_>> = HashSet::new();
        for entities in by_parent.values_mut() {
            // Most spend first; ties by labels, so the choice is deterministic.
            entities.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            for (rank, (_, entity)) in entities.iter().enumerate() {
                let below_min = self
                    .min_micros
                    .is_some_and(|m| weights[entity].peak < m.unsigned_abs());
                let beyond_top = self.top.is_some_and(|n| rank >= n);
                if below_min || beyond_top {
                    folded.insert(*entity);
                }
            }
        }
        if folded.is_empty() {
            drop(folded);
            drop(by_parent);
            drop(weights);
            drop(runs);
            return WindowSeries(entries);
        }
        let others = others(grouped, judge, &entries, &runs);
        fold_runs(grouped, &entries, &runs, &folded, &others)
    }
}

/// Step 3: while `series` has more than `max` series, folds whole entities, the least spend
/// over the window first, at each level of [`Level::shedding`]. Returns the series folded.
fn limit(max: usize, grouped: Level, judge: &Judge<'_>, series: &mut WindowSeries) -> u64 {
    let mut shed = 0u64;
    for &level in grouped.shedding() {
        if series.len() <= max {
            break;
        }
        let entries = std::mem::take(series).into_vec();
        let runs = runs(level, &entries, |k| !level.is_folded(k));
        let weights = weights(judge, &runs);
        let others = others(level, judge, &entries, &runs);
        let mut of_entity: HashMap<Prefix<'_>, Vec<&Run<'_>>> = HashMap::new();
        for run in &runs {
            if let Some(e) = run.entity {
                of_entity.entry(e).or_default().push(run);
            }
        }
        let mut order: Vec<(u64, Prefix<'_>)> =
            weights.iter().map(|(e, w)| (w.window, *e)).collect();
        // Least spend first; ties by labels.
        order.sort_unstable();
        // The `(other)` series there are, and will be: folding into a new one adds a series.
        let mut present: HashSet<(Month, &SeriesKey)> = entries
            .iter()
            .filter(|((_, k), _)| level.is_folded(k))
            .map(|((m, k), _)| (*m, k))
            .collect();
        let mut count = entries.len();
        let mut folded: HashSet<Prefix<'_>> = HashSet::new();
        for (_, entity) in order {
            if count <= max {
                break;
            }
            for run in of_entity.get(&entity).into_iter().flatten() {
                let parent = Prefix::parent(level, &entries[run.start].0.1);
                if let Some(other) = others.get(&parent)
                    && present.insert((run.month, other))
                {
                    count += 1;
                }
                let n = run.end - run.start;
                count -= n;
                shed += n as u64;
            }
            folded.insert(entity);
        }
        *series = fold_runs(level, &entries, &runs, &folded, &others);
    }
    shed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controls::{FileControls, OTHER, UNATTRIBUTED};
    use crate::exposition::label_text;
    use crate::series::TagLabels;

    /// October (closed) and November (open, judged on its 2nd: one day of data, so the
    /// forecast is 30 times the month to date).
    fn oct() -> Month {
        Month::new(2026, 10).expect("month")
    }

    fn nov() -> Month {
        Month::new(2026, 11).expect("month")
    }

    fn key(project: &str, cluster: &str, service: &str) -> SeriesKey {
        let (pid, cid) = (format!("p-{project}"), format!("c-{cluster}"));
        SeriesKey::new([
            Some("org"),
            None,
            Some(&pid),
            Some(project),
            Some(&cid),
            Some(cluster),
            Some(service),
        ])
    }

    /// The remainder of project `project`: `cluster_name="(unattributed)"`, no cluster id.
    fn remainder(project: &str, service: &str) -> SeriesKey {
        let pid = format!("p-{project}");
        SeriesKey::new([
            Some("org"),
            None,
            Some(&pid),
            Some(project),
            None,
            Some(UNATTRIBUTED),
            Some(service),
        ])
    }

    fn controls(yaml: &str) -> Controls {
        let file: FileControls = serde_norway::from_str(yaml).expect("yaml");
        Controls::from_file("q", file, 2, &TagLabels::default()).expect("valid")
    }

    fn apply_on_day(yaml: &str, day: u32, series: &WindowSeries) -> Applied {
        let tags = HashMap::new();
        let judge = Judge {
            current: nov(),
            day,
            project_tags: &tags,
        };
        controls(yaml).apply(Level::Cluster, &judge, series.clone())
    }

    fn apply(yaml: &str, series: &WindowSeries) -> Applied {
        apply_on_day(yaml, 2, series)
    }

    /// (label text, month, micros) of each series, in order.
    fn texts(series: &WindowSeries) -> Vec<(String, Month, i64)> {
        series
            .iter()
            .map(|((m, k), v)| (label_text("q", k, &TagLabels::default()), *m, *v))
            .collect()
    }

    fn month_sum(series: &WindowSeries, month: Month) -> i64 {
        series
            .iter()
            .filter(|((m, _), _)| *m == month)
            .map(|(_, v)| v)
            .sum()
    }

    /// The clusters of project a: x (October 300 + 10 Backup, November 10 so far), y (October
    /// 100, November 8 so far), z (October 5, November 0.2 so far); project b: w (October 3,
    /// November 1 so far). Amounts in micro-dollars.
    fn window() -> WindowSeries {
        WindowSeries::new([
            ((oct(), key("a", "x", "Clusters")), 300),
            ((oct(), key("a", "x", "Backup")), 10),
            ((oct(), key("a", "y", "Clusters")), 100),
            ((oct(), key("a", "z", "Clusters")), 5),
            ((oct(), key("b", "w", "Clusters")), 3),
            ((nov(), key("a", "x", "Clusters")), 10),
            ((nov(), key("a", "y", "Clusters")), 8),
            ((nov(), key("a", "z", "Clusters")), 1),
            ((nov(), key("b", "w", "Clusters")), 1),
        ])
    }

    /// The sums of every month are those of `window()`.
    fn assert_exact(out: &Applied) {
        for m in [oct(), nov()] {
            assert_eq!(month_sum(&out.series, m), month_sum(&window(), m), "{m}");
        }
    }

    /// The entities (project, cluster) served as their own series in `month`.
    fn kept(out: &Applied, month: Month) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = out
            .series
            .keys()
            .filter(|(m, k)| *m == month && k.get(Label::ClusterId).is_some())
            .map(|(_, k)| {
                let name = |l| k.get(l).unwrap_or_default().to_owned();
                (name(Label::ProjectName), name(Label::ClusterName))
            })
            .collect();
        v.dedup();
        v
    }

    /// `top` keeps the most expensive entities of each parent over the whole window, each
    /// with all its services and in every month; the rest is one `cluster_name="(other)"`
    /// series per parent and month, without cluster id or service.
    #[test]
    fn top_keeps_whole_entities_in_every_month() {
        let out = apply("top: 1", &window());
        assert_exact(&out);
        let a = [("a".to_owned(), "x".to_owned())];
        let b = [("b".to_owned(), "w".to_owned())];
        assert_eq!(kept(&out, oct()), [a[0].clone(), b[0].clone()]);
        assert_eq!(kept(&out, nov()), [a[0].clone(), b[0].clone()]);
        let other = Level::Cluster.fold(&key("a", "y", "Clusters"));
        assert_eq!(
            label_text("q", &other, &TagLabels::default()),
            r#"query="q",org_id="org",project_id="p-a",project_name="a",cluster_name="(other)""#
        );
        assert_eq!(out.series.get(&(oct(), other.clone())), Some(105));
        assert_eq!(out.series.get(&(nov(), other)), Some(9));
        assert_eq!(out.shed, 0);
    }

    /// The open month counts by its forecast: on November 2nd, y's 8 so far is a 240 month,
    /// so `min_usd: 0.0002` (200 micro-dollars) keeps y in November as in October; z, whose
    /// largest month is 30 (November's forecast), folds in both months.
    #[test]
    fn min_usd_judges_the_open_month_by_its_forecast() {
        let out = apply("min_usd: 0.0002", &window());
        assert_exact(&out);
        let x = ("a".to_owned(), "x".to_owned());
        let y = ("a".to_owned(), "y".to_owned());
        assert_eq!(kept(&out, oct()), [x.clone(), y.clone()]);
        assert_eq!(kept(&out, nov()), [x, y]);
        // Late in the month the forecast is close to the month to date: y's 8 on the 30th
        // is a month of about 8, below the minimum, and y folds in both months.
        let late = apply_on_day("min_usd: 0.0002", 30, &window());
        assert_eq!(kept(&late, oct()), [("a".to_owned(), "x".to_owned())]);
    }

    /// `max_series` sheds whole entities, the least spend over the window first: never the
    /// open month of an entity whose closed months stay.
    #[test]
    fn max_series_sheds_whole_entities_least_spend_first() {
        let out = apply("max_series: 7", &window());
        assert_exact(&out);
        assert!(out.series.len() <= 7, "{:?}", texts(&out.series));
        // w (3 + 30 over the window), z (5 + 30) and y (100 + 240) go, the cheapest first,
        // each in both months; x (310 + 300) stays in both.
        let x = [("a".to_owned(), "x".to_owned())];
        assert_eq!(kept(&out, oct()), x);
        assert_eq!(kept(&out, nov()), x);
        assert_eq!(out.shed, 6);
        // One series less, and x must go too: the limit holds whatever it takes.
        let out = apply("max_series: 6", &window());
        assert!(out.series.len() <= 6);
        assert!(kept(&out, nov()).is_empty());
    }

    /// When folding clusters is not enough, whole projects fold into the org's
    /// `project_name="(other)"`: at the floor, one series a month.
    #[test]
    fn max_series_escalates_to_whole_projects() {
        let out = apply("max_series: 2", &window());
        assert_exact(&out);
        let texts = texts(&out.series);
        let org_other = r#"query="q",org_id="org",project_name="(other)""#.to_owned();
        assert_eq!(
            texts,
            [(org_other.clone(), oct(), 418), (org_other, nov(), 20),]
        );
    }

    /// A remainder is shed by `max_series` like any series, into its project's `(other)`;
    /// `top` and `min_usd`, which choose among clusters, leave it alone.
    #[test]
    fn remainders_are_counted_and_shed_but_not_ranked() {
        let w = window().with([
            ((oct(), remainder("a", "App Services")), 1),
            ((nov(), remainder("a", "App Services")), 0),
        ]);
        let topped = apply("{top: 1, min_usd: 1}", &w);
        assert_eq!(
            topped.series.get(&(oct(), remainder("a", "App Services"))),
            Some(1)
        );
        assert_eq!(
            topped.series.get(&(nov(), remainder("a", "App Services"))),
            Some(0)
        );
        let limited = apply("max_series: 8", &w);
        assert!(limited.series.len() <= 8);
        assert!(
            !limited
                .series
                .keys()
                .any(|(_, k)| k.get(Label::ClusterName) == Some(UNATTRIBUTED)),
            "the cheapest entity, the remainder, is shed first: {:?}",
            texts(&limited.series)
        );
    }

    /// A deny on a project name folds the project's series at the project level (the org's
    /// `project_name="(other)"`), its remainders too: no series keeps its name. A deny on a
    /// service folds at the grouped level. Nothing is lost.
    #[test]
    fn deny_folds_at_the_level_of_the_label_remainders_included() {
        let w = window().with([((oct(), remainder("b", "Charts")), 7)]);
        let out = apply("deny: {project_name: b, atlas_service: Backup}", &w);
        for m in [oct(), nov()] {
            assert_eq!(month_sum(&out.series, m), month_sum(&w, m));
        }
        assert!(
            !out.series
                .keys()
                .any(|(_, k)| k.get(Label::ProjectName) == Some("b"))
        );
        let org_other = Level::Project.fold(&key("b", "w", "Clusters"));
        assert_eq!(out.series.get(&(oct(), org_other)), Some(10));
        let a_other = Level::Cluster.fold(&key("a", "x", "Backup"));
        assert_eq!(out.series.get(&(oct(), a_other)), Some(10));
    }

    /// Allow lists are anchored and all must match; an absent label reads as empty.
    #[test]
    fn allow_is_anchored_and_absent_labels_read_empty() {
        let out = apply("allow: {cluster_name: 'x|y'}", &window());
        assert_eq!(kept(&out, oct()).len(), 2);
        let out = apply("allow: {cluster_name: 'x.'}", &window());
        assert!(kept(&out, oct()).is_empty(), "anchored");
        assert_exact(&out);
    }

    /// A cluster folded into its project's `(other)` gives that series the project's tags.
    #[test]
    fn an_other_of_a_project_carries_the_projects_tags() {
        let t = TagLabels::new("t", ["team"]).expect("valid");
        let tags = HashMap::from([("p-a".to_owned(), t.values([("team", "web")]))]);
        let judge = Judge {
            current: nov(),
            day: 2,
            project_tags: &tags,
        };
        let out = controls("top: 1").apply(Level::Cluster, &judge, window());
        let other = out
            .series
            .keys()
            .find(|(_, k)| k.get(Label::ClusterName) == Some(OTHER))
            .expect("an (other)");
        assert_eq!(
            label_text("q", &other.1, &t),
            r#"query="q",org_id="org",project_id="p-a",project_name="a",cluster_name="(other)",tag_team="web""#
        );
    }

    /// No controls leave the window untouched.
    #[test]
    fn no_controls_change_nothing() {
        let tags = HashMap::new();
        let judge = Judge {
            current: nov(),
            day: 2,
            project_tags: &tags,
        };
        let out = Controls::default().apply(Level::Cluster, &judge, window());
        assert_eq!(out.series, window());
        assert_eq!(out.shed, 0);
    }
}
