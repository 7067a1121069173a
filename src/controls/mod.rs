//! Cardinality controls of a query: allow and deny lists, a minimum amount, top N per parent
//! and a series limit (the `controls:` key of a query in the YAML file).
//!
//! Nothing is ever dropped: a series that is not kept as its own is *folded* into the
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
//! The controls judge every month of the query at once (`window`): an entity (a cluster
//! with all its services, say) is kept or folded as a whole, in every month, so the open
//! month, whose month to date is small on its first days, is never folded first. The
//! `(unattributed)` remainders ([`crate::remainder`]) go through the same controls as the
//! query's own series: the lists see their labels and the series limit counts and sheds
//! them; `min_usd` and `top`, which choose among entities, leave them (like `(other)`) alone.
//!
//! Tag labels (`tag_team`, issue 11) can be allowed and denied too; a series whose tag fails
//! is folded at the grouped level. An `(other)` series keeps only its parent's tags: a
//! cluster folded into its project's `(other)` carries the project's tags; a project folded
//! into the org's `(other)` carries none.

mod window;

pub use window::{Applied, Judge, WindowSeries};

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use regex::Regex;
use serde::Deserialize;

use crate::model::{ConfigError, GroupBy, usd_to_micros};
use crate::series::{KeyLabel, Label, SeriesKey, TagLabels};

/// The name label value of a folded series.
pub const OTHER: &str = "(other)";

/// The name label value of a remainder series ([`crate::remainder`]): spend a query holds
/// under no entity of its grouped dimension.
pub const UNATTRIBUTED: &str = "(unattributed)";

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

    /// Whether `a` and `b` fold into the same `(other)` at this level: their labels above
    /// it (and, for a service, their tags) are equal.
    fn same_parent(self, a: &SeriesKey, b: &SeriesKey) -> bool {
        let cut = self.first_label();
        a.shares(b)
            || (Label::ALL
                .into_iter()
                .take_while(|l| *l < cut)
                .all(|l| a.get(l) == b.get(l))
                && (self != Level::Service || a.tags() == b.tags()))
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
            .any(|l| l.names(key, OTHER))
    }

    /// Whether `key` is a remainder at this level or an outer one: `(unattributed)`, not an
    /// entity to rank.
    fn is_remainder(self, key: &SeriesKey) -> bool {
        [Level::Project, Level::Cluster, Level::Service]
            .into_iter()
            .filter(|l| *l <= self)
            .any(|l| l.names(key, UNATTRIBUTED))
    }

    /// Whether `key`'s name label of this level reads `name` without an id of this level.
    fn names(self, key: &SeriesKey, name: &str) -> bool {
        key.get(self.name_label()) == Some(name)
            && (self == Level::Service || key.get(self.first_label()).is_none())
    }

    /// The levels a series limit folds at, innermost first: the grouped one, then, for
    /// clusters, whole projects.
    fn shedding(self) -> &'static [Level] {
        match self {
            Level::Cluster => &[Level::Cluster, Level::Project],
            Level::Project => &[Level::Project],
            Level::Service => &[Level::Service],
        }
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
    /// Entities none of whose months reaches this many dollars (the open month by its
    /// forecast) are folded.
    #[serde(default)]
    min_usd: Option<f64>,
    /// Entities kept per parent, the most expensive over the window first.
    #[serde(default)]
    top: Option<usize>,
    /// Most `atlas_cost_usage_usd` series of the query (all months together, remainders
    /// included).
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controls(yaml: &str, months: u32) -> Result<Controls, ConfigError> {
        let file: FileControls = serde_norway::from_str(yaml).expect("yaml");
        Controls::from_file("q", file, months, &TagLabels::default())
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

    /// Equal controls are equal however they were written, and any change of a key makes
    /// them differ (the month cache and the query's identity rely on it).
    #[test]
    fn controls_compare_by_what_they_do() {
        let a = controls("{top: 2, deny: {cluster_name: 'tmp-.*'}}", 3).expect("valid");
        let b = controls("{deny: {cluster_name: 'tmp-.*'}, top: 2}", 3).expect("valid");
        assert_eq!(a, b);
        for other in [
            "{top: 3, deny: {cluster_name: 'tmp-.*'}}",
            "{top: 2}",
            "max_series: 9",
        ] {
            assert_ne!(a, controls(other, 3).expect("valid"), "{other}");
        }
        assert!(Controls::default().is_empty());
        assert!(!a.is_empty());
    }
}
