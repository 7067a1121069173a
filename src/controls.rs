//! Cardinality controls of a query: allow and deny lists, a minimum amount, top N per parent
//! and a series limit (the `controls:` key of a query in the YAML file).
//!
//! Nothing is ever dropped: a row that is not kept as its own series is *folded* into the
//! `(other)` series of its parent, in the same month. The `(other)` series keeps the parent's
//! labels, has the folded dimension's name label set to `(other)`, and loses the folded
//! dimension's id label and every label below it (`atlas_service` included). So the sum over a
//! query and a month stays exactly what Atlas reported.
//!
//! The hierarchy is org > project > cluster > service. A query's *grouped dimension* is
//! project (`group_by: projects`), cluster (`clusters`) or service (`services`,
//! `organizations`). Its parent is what is above it: the org for projects and services, the
//! project for clusters.
//!
//! Tag labels (`tag_team`, issue 11) can be allowed and denied too; a row whose tag fails is
//! folded at the grouped level. An `(other)` series keeps only its parent's tags: a fold
//! drops the series' own tags ([`SeriesKey::above`]), and aggregation sets the parent's again
//! (a cluster folded into its project's `(other)` carries the project's tags; a project
//! folded into the org's `(other)` carries none).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use regex::Regex;
use serde::Deserialize;

use crate::model::{ConfigError, GroupBy, usd_to_micros};
use crate::month::Month;
use crate::series::{KeyLabel, Label, SeriesKey, TagLabels};

/// The name label value of a folded series.
pub const OTHER: &str = "(other)";

/// A level of the hierarchy that rows can be folded at, outermost first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Fold into `project_name="(other)"` of the org.
    Project,
    /// Fold into `cluster_name="(other)"` of the project.
    Cluster,
    /// Fold into `atlas_service="(other)"` of what is above.
    Service,
}

impl Level {
    /// The grouped dimension of a query.
    pub fn grouped(group_by: GroupBy) -> Level {
        match group_by {
            GroupBy::Projects => Level::Project,
            GroupBy::Clusters => Level::Cluster,
            GroupBy::Ungrouped | GroupBy::Services | GroupBy::Organizations => Level::Service,
        }
    }

    /// The first label of this level's entities: a fold keeps the labels above it (the
    /// parent's).
    fn first_label(self) -> Label {
        match self {
            Level::Project => Label::ProjectId,
            Level::Cluster => Label::ClusterId,
            Level::Service => Label::AtlasService,
        }
    }

    /// The labels that identify one entity of this level.
    fn entity(self, key: &SeriesKey) -> SeriesKey {
        match self {
            Level::Project => key.above(Label::ClusterId),
            Level::Cluster => key.above(Label::AtlasService),
            Level::Service => key.clone(),
        }
    }

    /// The label a fold at this level sets to `(other)`.
    fn name_label(self) -> Label {
        match self {
            Level::Project => Label::ProjectName,
            Level::Cluster => Label::ClusterName,
            Level::Service => Label::AtlasService,
        }
    }

    /// The level a label belongs to.
    fn of_label(label: Label) -> Level {
        match label {
            Label::OrgId | Label::OrgName | Label::ProjectId | Label::ProjectName => Level::Project,
            Label::ClusterId | Label::ClusterName => Level::Cluster,
            Label::AtlasService => Level::Service,
        }
    }

    /// `key` folded at this level: parent labels, then `(other)`.
    pub fn fold(self, key: &SeriesKey) -> SeriesKey {
        let mut k = key.above(self.first_label());
        k.set(self.name_label(), Some(OTHER));
        k
    }

    /// Whether `key` is already an `(other)` series of this level or an outer one: its name
    /// label reads `(other)` and it has no id label of that level.
    fn is_folded(self, key: &SeriesKey) -> bool {
        [Level::Project, Level::Cluster, Level::Service]
            .into_iter()
            .filter(|l| *l <= self)
            .any(|l| {
                key.get(l.name_label()) == Some(OTHER)
                    && (l == Level::Service || key.get(l.first_label()).is_none())
            })
    }
}

/// `controls:` of a query in the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileControls {
    /// Label -> anchored regex a row must match to be kept.
    #[serde(default)]
    allow: BTreeMap<String, String>,
    /// Label -> anchored regex that folds a matching row.
    #[serde(default)]
    deny: BTreeMap<String, String>,
    /// Entities whose month total is below this many dollars are folded.
    #[serde(default)]
    min_usd: Option<f64>,
    /// Entities kept per parent and month, the most expensive first.
    #[serde(default)]
    top: Option<usize>,
    /// Most `atlas_cost_usage_usd` series of the query (all months together).
    #[serde(default)]
    max_series: Option<usize>,
}

#[derive(Clone, Debug)]
struct Matcher {
    label: KeyLabel,
    source: String,
    regex: Regex,
}

/// The validated controls of a query. The default keeps every series.
#[derive(Clone, Debug, Default)]
pub struct Controls {
    allow: Vec<Matcher>,
    deny: Vec<Matcher>,
    min_micros: Option<i64>,
    top: Option<usize>,
    max_series: Option<usize>,
}

impl PartialEq for Controls {
    fn eq(&self, other: &Controls) -> bool {
        self.fingerprint() == other.fingerprint()
    }
}

impl Eq for Controls {}

impl Hash for Controls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.fingerprint().hash(state);
    }
}

type Fingerprint<'a> = (
    Vec<(KeyLabel, &'a str)>,
    Vec<(KeyLabel, &'a str)>,
    Option<i64>,
    Option<usize>,
    Option<usize>,
);

fn compile(
    key: &str,
    map: &BTreeMap<String, String>,
    tags: &TagLabels,
) -> Result<Vec<Matcher>, ConfigError> {
    let mut out = Vec::with_capacity(map.len());
    for (name, source) in map {
        // Org labels are the same on every series of a query: nothing to filter.
        let Some(label) = tags
            .key_label(name)
            .filter(|l| *l >= KeyLabel::Cost(Label::ProjectId))
        else {
            let tag_hint = if name.starts_with("tag_") {
                " (a tag label must be in --cost.tag-labels)"
            } else {
                ""
            };
            return Err(ConfigError(format!(
                "{key}.{name}: not a label that can be filtered; use project_id, project_name, \
                 cluster_id, cluster_name, atlas_service or a tag label{tag_hint}"
            )));
        };
        let regex = Regex::new(&format!("^(?:{source})$")).map_err(|e| {
            ConfigError(format!(
                "{key}.{name}: {source:?} is not a regex: {}",
                e.to_string().replace('\n', " ")
            ))
        })?;
        out.push(Matcher {
            label,
            source: source.clone(),
            regex,
        });
    }
    Ok(out)
}

impl Controls {
    /// Validates the `controls:` of a query whose YAML key is `key` (`orgs[0].queries[1]`)
    /// and which reads `months` months; `allow` and `deny` may also name the tag labels of
    /// `tags` (none without `--cost.tag-labels`).
    ///
    /// # Errors
    /// A one-line [`ConfigError`] naming the key: unknown label (a tag label not in `tags`
    /// included), bad regex, negative or non-finite `min_usd`, `top: 0`, or `max_series`
    /// below `months` (one `(other)` series per month is the floor).
    pub fn from_file(
        key: &str,
        c: FileControls,
        months: u32,
        tags: &TagLabels,
    ) -> Result<Controls, ConfigError> {
        let key = format!("{key}.controls");
        let allow = compile(&format!("{key}.allow"), &c.allow, tags)?;
        let deny = compile(&format!("{key}.deny"), &c.deny, tags)?;
        let min_micros = match c.min_usd {
            None => None,
            Some(v) if v >= 0.0 && usd_to_micros(v).is_some() => usd_to_micros(v),
            Some(v) => {
                return Err(ConfigError(format!(
                    "{key}.min_usd: {v} must be a number of dollars, 0 or more"
                )));
            }
        };
        if c.top == Some(0) {
            return Err(ConfigError(format!("{key}.top: must be at least 1")));
        }
        if let Some(max) = c.max_series
            && max < months as usize
        {
            return Err(ConfigError(format!(
                "{key}.max_series: {max} is below the query's {months} months (one (other) \
                 series per month is the least it can shed to)"
            )));
        }
        Ok(Controls {
            allow,
            deny,
            min_micros,
            top: c.top,
            max_series: c.max_series,
        })
    }

    fn fingerprint(&self) -> Fingerprint<'_> {
        fn m(v: &[Matcher]) -> Vec<(KeyLabel, &str)> {
            v.iter().map(|m| (m.label, m.source.as_str())).collect()
        }
        (
            m(&self.allow),
            m(&self.deny),
            self.min_micros,
            self.top,
            self.max_series,
        )
    }

    /// Whether these controls keep every series as it is.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
            && self.deny.is_empty()
            && self.min_micros.is_none()
            && self.top.is_none()
            && self.max_series.is_none()
    }

    /// The series limit, if any.
    pub fn max_series(&self) -> Option<usize> {
        self.max_series
    }

    /// The level a row is folded at by the allow and deny lists, if any: the outermost level
    /// whose label fails (a label deeper than the grouped dimension folds at the grouped one).
    fn filtered(&self, key: &SeriesKey, grouped: Level) -> Option<Level> {
        // An absent label reads as "", as in PromQL.
        let value = |m: &Matcher| key.value(m.label).unwrap_or("");
        // A tag is the grouped entity's (or its parent's, inherited): it folds at the grouped
        // level.
        let level = |label: KeyLabel| match label {
            KeyLabel::Cost(l) => Level::of_label(l).min(grouped),
            KeyLabel::Tag(_) => grouped,
        };
        let failing = self
            .allow
            .iter()
            .filter(|m| !m.regex.is_match(value(m)))
            .chain(self.deny.iter().filter(|m| m.regex.is_match(value(m))))
            .map(|m| level(m.label));
        failing.min()
    }

    /// Applies the allow and deny lists, the minimum amount and the top N to one month of a
    /// query grouped at `grouped`. The sum of the amounts is unchanged.
    pub fn apply_month(
        &self,
        grouped: Level,
        series: BTreeMap<SeriesKey, i64>,
    ) -> BTreeMap<SeriesKey, i64> {
        if self.allow.is_empty()
            && self.deny.is_empty()
            && self.min_micros.is_none()
            && self.top.is_none()
        {
            return series;
        }
        let mut out: BTreeMap<SeriesKey, i64> = BTreeMap::new();
        let mut kept: Vec<(SeriesKey, i64)> = Vec::with_capacity(series.len());
        for (key, micros) in series {
            match self.filtered(&key, grouped) {
                Some(level) => add(&mut out, level.fold(&key), micros),
                None => kept.push((key, micros)),
            }
        }
        if self.min_micros.is_some() || self.top.is_some() {
            let mut totals: HashMap<SeriesKey, i64> = HashMap::new();
            for (key, micros) in &kept {
                if !grouped.is_folded(key) {
                    let t = totals.entry(grouped.entity(key)).or_insert(0);
                    *t = t.saturating_add(*micros);
                }
            }
            let mut by_parent: BTreeMap<SeriesKey, Vec<(i64, SeriesKey)>> = BTreeMap::new();
            for (entity, total) in totals {
                by_parent
                    .entry(entity.above(grouped.first_label()))
                    .or_default()
                    .push((total, entity));
            }
            let mut folded: std::collections::HashSet<SeriesKey> = Default::default();
            for entities in by_parent.values_mut() {
                // Most expensive first; ties by labels, so the choice is deterministic.
                entities.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                for (rank, (total, entity)) in entities.iter().enumerate() {
                    let below_min = self.min_micros.is_some_and(|m| *total < m);
                    let beyond_top = self.top.is_some_and(|n| rank >= n);
                    if below_min || beyond_top {
                        folded.insert(entity.clone());
                    }
                }
            }
            for (key, micros) in kept {
                if !folded.is_empty() && folded.contains(&grouped.entity(&key)) {
                    add(&mut out, grouped.fold(&key), micros);
                } else {
                    add(&mut out, key, micros);
                }
            }
        } else {
            for (key, micros) in kept {
                add(&mut out, key, micros);
            }
        }
        out
    }

    /// Enforces `max_series` over every month of a query grouped at `grouped`: while there
    /// are more series than the limit, the least expensive one is folded into its parent's
    /// `(other)` of the same month (at the grouped level first, then at the project level
    /// for cluster queries). Returns how many series were folded (shed). Sums are unchanged.
    pub fn limit(&self, grouped: Level, series: &mut BTreeMap<(Month, SeriesKey), i64>) -> u64 {
        let Some(max) = self.max_series else {
            return 0;
        };
        let levels: &[Level] = match grouped {
            Level::Cluster => &[Level::Cluster, Level::Project],
            Level::Project => &[Level::Project],
            Level::Service => &[Level::Service],
        };
        let mut shed = 0u64;
        for level in levels {
            if series.len() <= max {
                break;
            }
            let mut candidates: Vec<(i64, Month, SeriesKey)> = series
                .iter()
                .filter(|((_, k), _)| !level.is_folded(k))
                .map(|((m, k), v)| (*v, *m, k.clone()))
                .collect();
            candidates.sort_unstable();
            for (_, month, key) in candidates {
                if series.len() <= max {
                    break;
                }
                if let Some(micros) = series.remove(&(month, key.clone())) {
                    let sum = series.entry((month, level.fold(&key))).or_insert(0);
                    *sum = sum.saturating_add(micros);
                    shed += 1;
                }
            }
        }
        shed
    }
}

fn add(map: &mut BTreeMap<SeriesKey, i64>, key: SeriesKey, micros: i64) {
    let sum = map.entry(key).or_insert(0);
    *sum = sum.saturating_add(micros);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::label_text;

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

    fn controls(yaml: &str, months: u32) -> Result<Controls, ConfigError> {
        let file: FileControls = serde_norway::from_str(yaml).expect("yaml");
        Controls::from_file("q", file, months, &TagLabels::default())
    }

    fn total(m: &BTreeMap<SeriesKey, i64>) -> i64 {
        m.values().sum()
    }

    /// A small clusters month: project a has clusters x (10+1), y (5), z (1); b has w (3).
    fn month() -> BTreeMap<SeriesKey, i64> {
        BTreeMap::from([
            (key("a", "x", "Clusters"), 10),
            (key("a", "x", "Backup"), 1),
            (key("a", "y", "Clusters"), 5),
            (key("a", "z", "Clusters"), 1),
            (key("b", "w", "Clusters"), 3),
        ])
    }

    /// Top 1 per project keeps the most expensive cluster of each project with all its
    /// services; the rest of the project becomes one `cluster_name="(other)"` series without
    /// cluster id or service; the total is unchanged.
    #[test]
    fn top_n_folds_the_rest_into_other_per_parent_with_exact_totals() {
        let c = controls("top: 1", 3).expect("valid");
        let out = c.apply_month(Level::Cluster, month());
        let mut other =
            SeriesKey::new([Some("org"), None, Some("p-a"), Some("a"), None, None, None]);
        other.set(Label::ClusterName, Some(OTHER));
        assert_eq!(out.get(&other), Some(&6));
        assert_eq!(out.get(&key("a", "x", "Backup")), Some(&1));
        assert_eq!(out.get(&key("b", "w", "Clusters")), Some(&3));
        assert_eq!(out.len(), 4);
        assert_eq!(total(&out), total(&month()));
    }

    /// A minimum amount folds clusters whose month total (over services) is below it.
    #[test]
    fn minimum_amount_folds_cheap_entities_by_their_total() {
        let c = controls("min_usd: 0.000004", 3).expect("valid");
        let out = c.apply_month(Level::Cluster, month());
        // y (5) stays, z (1) folds in project a; w (3) folds in project b.
        assert!(out.contains_key(&key("a", "y", "Clusters")));
        assert!(!out.contains_key(&key("a", "z", "Clusters")));
        assert_eq!(out.values().filter(|v| **v == 1 || **v == 3).count(), 3);
        assert_eq!(total(&out), total(&month()));
    }

    /// A deny on a project name folds the project's rows at the project level (the org's
    /// `project_name="(other)"`), not merely its clusters; a deny on a service folds at the
    /// grouped level. Nothing is lost.
    #[test]
    fn deny_folds_at_the_level_of_the_label() {
        let c = controls("deny: {project_name: b, atlas_service: Backup}", 3).expect("valid");
        let out = c.apply_month(Level::Cluster, month());
        let org_other = Level::Project.fold(&key("b", "w", "Clusters"));
        assert_eq!(
            label_text("q", &org_other, &TagLabels::default()),
            r#"query="q",org_id="org",project_name="(other)""#
        );
        assert_eq!(out.get(&org_other), Some(&3));
        let a_other = Level::Cluster.fold(&key("a", "x", "Backup"));
        assert_eq!(
            label_text("q", &a_other, &TagLabels::default()),
            r#"query="q",org_id="org",project_id="p-a",project_name="a",cluster_name="(other)""#
        );
        assert_eq!(out.get(&a_other), Some(&1));
        assert_eq!(total(&out), total(&month()));
    }

    /// Allow lists are anchored and all must match; an absent label reads as empty.
    #[test]
    fn allow_is_anchored_and_absent_labels_read_empty() {
        let c = controls("allow: {cluster_name: 'x|y'}", 3).expect("valid");
        let out = c.apply_month(Level::Cluster, month());
        assert!(out.contains_key(&key("a", "x", "Clusters")));
        assert!(!out.contains_key(&key("b", "w", "Clusters")));
        let c = controls("allow: {cluster_name: 'x.'}", 3).expect("valid");
        let out = c.apply_month(Level::Cluster, month());
        assert!(!out.contains_key(&key("a", "x", "Clusters")), "anchored");
        assert_eq!(total(&out), total(&month()));
    }

    /// Over the series limit, the cheapest series are shed into `(other)` until the count
    /// fits; the number shed is returned; sums per month are unchanged; label sets stay unique.
    #[test]
    fn series_limit_sheds_cheapest_into_other() {
        let c = controls("max_series: 3", 1).expect("valid");
        let m = Month::containing(std::time::SystemTime::UNIX_EPOCH);
        let mut all: BTreeMap<(Month, SeriesKey), i64> =
            month().into_iter().map(|(k, v)| ((m, k), v)).collect();
        let shed = c.limit(Level::Cluster, &mut all);
        assert!(all.len() <= 3, "{all:?}");
        assert!(shed >= 2);
        assert_eq!(all.values().sum::<i64>(), 20);
        // The most expensive series survives.
        assert_eq!(all.get(&(m, key("a", "x", "Clusters"))), Some(&10));
    }

    /// When folding per project cannot fit the limit, the limit folds at the org level.
    #[test]
    fn series_limit_escalates_to_the_project_level() {
        let c = controls("max_series: 1", 1).expect("valid");
        let m = Month::containing(std::time::SystemTime::UNIX_EPOCH);
        let mut all: BTreeMap<(Month, SeriesKey), i64> =
            month().into_iter().map(|(k, v)| ((m, k), v)).collect();
        c.limit(Level::Cluster, &mut all);
        assert_eq!(all.len(), 1);
        let (only, v) = all.iter().next().expect("one");
        assert_eq!(
            label_text("q", &only.1, &TagLabels::default()),
            r#"query="q",org_id="org",project_name="(other)""#
        );
        assert_eq!(*v, 20);
    }

    /// Bad controls are refused naming the key: unknown label, bad regex, top 0, a limit
    /// below the months, a negative minimum.
    #[test]
    fn invalid_controls_name_the_key() {
        for (yaml, want) in [
            ("allow: {org_id: x}", "q.controls.allow.org_id:"),
            ("deny: {cluster_name: '('}", "q.controls.deny.cluster_name:"),
            ("top: 0", "q.controls.top:"),
            ("max_series: 2", "q.controls.max_series:"),
            ("min_usd: -1", "q.controls.min_usd:"),
        ] {
            let e = controls(yaml, 3).expect_err(yaml).0;
            assert!(e.starts_with(want), "{yaml}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    /// No controls leave a month untouched.
    #[test]
    fn no_controls_change_nothing() {
        let c = Controls::default();
        assert!(c.is_empty());
        assert_eq!(c.apply_month(Level::Cluster, month()), month());
    }
}
