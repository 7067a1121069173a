//! The cost series, typed: the label set ([`Label`]), the label values of a series
//! ([`SeriesKey`]) and a series of one query in one month with its amount ([`CostSeries`]);
//! the optional tag labels ([`TagLabels`], issue 11) and the labels controls and budgets can
//! name ([`KeyLabel`]).
//!
//! Controls, budgets, remainders and forecasts work on these; only exposition renders them
//! as label text, once per refresh. This module imports nothing of the crate but the model
//! and months.

use std::sync::Arc;

use crate::model::ConfigError;
use crate::month::Month;

/// The labels of a cost series besides `query` and `month`, in exposition order, which is
/// also the hierarchy: org > project > cluster > service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    /// `org_id`.
    OrgId,
    /// `org_name`.
    OrgName,
    /// `project_id`.
    ProjectId,
    /// `project_name`.
    ProjectName,
    /// `cluster_id`.
    ClusterId,
    /// `cluster_name`.
    ClusterName,
    /// `atlas_service`.
    AtlasService,
}

impl Label {
    /// Every label, in exposition order.
    pub const ALL: [Label; 7] = [
        Label::OrgId,
        Label::OrgName,
        Label::ProjectId,
        Label::ProjectName,
        Label::ClusterId,
        Label::ClusterName,
        Label::AtlasService,
    ];

    /// The label name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Label::OrgId => "org_id",
            Label::OrgName => "org_name",
            Label::ProjectId => "project_id",
            Label::ProjectName => "project_name",
            Label::ClusterId => "cluster_id",
            Label::ClusterName => "cluster_name",
            Label::AtlasService => "atlas_service",
        }
    }

    /// The label named `name` (as in the configuration file).
    pub fn from_name(name: &str) -> Option<Label> {
        Label::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The position in [`Label::ALL`].
    const fn index(self) -> usize {
        self as usize
    }
}

/// The tag values of a series, by position in the allowlist ([`TagLabels`]); `None` where the
/// resource has no such tag. Empty, and never allocated, when no tag label is configured.
pub type TagValues = Box<[Option<Arc<str>>]>;

/// The label values of a series (without `query` and `month`). An absent value is a label the
/// series does not have; an empty value counts as absent. Ordered label by label in
/// [`Label::ALL`] order, then by tag values.
///
/// The values sit behind one shared pointer: a clone (the same label set in another month,
/// in the month cache, in a rendered series) costs a reference count, not seven strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey(Arc<KeyValues>);

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct KeyValues {
    labels: [Option<Box<str>>; 7],
    /// Tag label values in allowlist order; empty without tag labels.
    tags: TagValues,
}

impl SeriesKey {
    /// A key from label values in [`Label::ALL`] order, without tags.
    pub fn new(values: [Option<&str>; 7]) -> SeriesKey {
        SeriesKey(Arc::new(KeyValues {
            labels: values.map(|v| v.filter(|v| !v.is_empty()).map(Box::from)),
            tags: TagValues::default(),
        }))
    }

    /// The value of `label`, if the series has it.
    pub fn get(&self, label: Label) -> Option<&str> {
        self.0.labels[label.index()].as_deref()
    }

    /// Sets (or, with `None` or an empty value, removes) `label`. A key shared with others
    /// is copied first: they keep their values.
    pub fn set(&mut self, label: Label, value: Option<&str>) {
        let value = value.filter(|v| !v.is_empty());
        if self.get(label) != value {
            Arc::make_mut(&mut self.0).labels[label.index()] = value.map(Box::from);
        }
    }

    /// The value of the tag label at position `i` of the allowlist, if the series has it.
    pub fn tag(&self, i: usize) -> Option<&str> {
        self.0.tags.get(i).and_then(Option::as_deref)
    }

    /// The tag values, in allowlist order (empty without tag labels).
    pub fn tags(&self) -> &[Option<Arc<str>>] {
        &self.0.tags
    }

    /// Replaces the tag values (in allowlist order).
    pub fn set_tags(&mut self, tags: TagValues) {
        if self.0.tags != tags {
            Arc::make_mut(&mut self.0).tags = tags;
        }
    }

    /// The address of the shared values: the same for every clone of this key while one
    /// lives, so a table can share keys by identity before comparing values.
    pub fn addr(&self) -> usize {
        Arc::as_ptr(&self.0).addr()
    }

    /// Whether `self` and `other` are one shared key (not only equal ones).
    pub fn shares(&self, other: &SeriesKey) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The value of a label controls or budgets name.
    pub fn value(&self, label: KeyLabel) -> Option<&str> {
        match label {
            KeyLabel::Cost(l) => self.get(l),
            KeyLabel::Tag(i) => self.tag(i),
        }
    }

    /// The labels the series has, with their values, in exposition order (tags not included:
    /// their names are in the [`TagLabels`]).
    pub fn labels(&self) -> impl Iterator<Item = (Label, &str)> {
        Label::ALL
            .into_iter()
            .zip(&self.0.labels)
            .filter_map(|(l, v)| v.as_deref().map(|v| (l, v)))
    }

    /// The labels above `label` in the hierarchy (before it in [`Label::ALL`]), the rest
    /// absent. Tags belong to the series' project or cluster: they are kept only when the
    /// cut is below the cluster (at `atlas_service`); above it they would not be the
    /// parent's, so they go, and whoever knows the parent's tags sets them again (a fold
    /// keeps its parent's tags that way: see [`crate::controls`]).
    pub fn above(&self, label: Label) -> SeriesKey {
        let drop_tags = label != Label::AtlasService && !self.0.tags.is_empty();
        if self.0.labels[label.index()..].iter().all(Option::is_none) && !drop_tags {
            return self.clone();
        }
        let mut k = self.0.as_ref().clone();
        for v in &mut k.labels[label.index()..] {
            *v = None;
        }
        if drop_tags {
            k.tags = TagValues::default();
        }
        SeriesKey(Arc::new(k))
    }
}

/// A label that controls (`allow`, `deny`) and budget scopes can name: a cost label or a tag
/// label (by its position in the allowlist).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyLabel {
    /// One of the cost labels.
    Cost(Label),
    /// The tag label at this position of the allowlist.
    Tag(usize),
}

/// The longest tag key Atlas accepts.
const MAX_TAG_KEY: usize = 255;

/// The tag keys to export as labels (`--cost.tag-labels`, `tag_labels:`), in the order given,
/// with their label names. Empty by default: no tag is exported unless asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagLabels {
    keys: Vec<String>,
    names: Vec<String>,
}

impl TagLabels {
    /// The allowlist of `keys`, from the flag or key `source` (named in errors). Keys are
    /// trimmed; no key at all is the empty allowlist.
    ///
    /// # Errors
    /// One line naming `source`: an empty key, a key longer than 255 characters or with a
    /// control character, a key given twice, or two keys whose label names are the same.
    pub fn new<S: AsRef<str>>(
        source: &str,
        keys: impl IntoIterator<Item = S>,
    ) -> Result<TagLabels, ConfigError> {
        let mut out = TagLabels::default();
        for key in keys {
            let key = key.as_ref().trim();
            if key.is_empty() {
                return Err(ConfigError(format!(
                    "{source}: an empty tag key; give keys separated by commas, e.g. team,env"
                )));
            }
            if key.chars().count() > MAX_TAG_KEY || key.chars().any(char::is_control) {
                return Err(ConfigError(format!(
                    "{source}: {key:?} is not a tag key (1 to {MAX_TAG_KEY} characters, no \
                     control characters)"
                )));
            }
            let name = tag_label_name(key);
            if let Some(i) = out.names.iter().position(|n| *n == name) {
                let other = &out.keys[i];
                return Err(ConfigError(if other == key {
                    format!("{source}: the tag key {key:?} is given twice")
                } else {
                    format!(
                        "{source}: the tag keys {other:?} and {key:?} both become the label \
                         {name}; keep one of them"
                    )
                }));
            }
            out.keys.push(key.to_owned());
            out.names.push(name);
        }
        Ok(out)
    }

    /// Whether no tag label is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The number of tag labels.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The tag keys, in allowlist order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The label names (`tag_<key>`, sanitised), in allowlist order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The position of the tag label named `name` (`tag_team`), if it is configured.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The label `name` names: a cost label, or a configured tag label.
    pub fn key_label(&self, name: &str) -> Option<KeyLabel> {
        Label::from_name(name)
            .map(KeyLabel::Cost)
            .or_else(|| self.position(name).map(KeyLabel::Tag))
    }

    /// The name of `label`.
    pub fn name_of(&self, label: KeyLabel) -> &str {
        match label {
            KeyLabel::Cost(l) => l.as_str(),
            KeyLabel::Tag(i) => self.names.get(i).map_or("", String::as_str),
        }
    }

    /// The values of a resource's `tags` (key, value pairs) in allowlist order: the first
    /// value of each allowlisted key, `None` for a key the resource lacks (or has empty);
    /// empty when it has none of them.
    pub fn values<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> TagValues {
        let mut out: Vec<Option<Arc<str>>> = vec![None; self.keys.len()];
        for (key, value) in tags {
            if let Some(i) = self.keys.iter().position(|k| k == key)
                && out[i].is_none()
                && !value.is_empty()
            {
                out[i] = Some(Arc::from(value));
            }
        }
        canonical(out)
    }
}

/// The label name of tag key `key`: `tag_` and the key, each character that is not valid in a
/// label name (ASCII letters, digits, `_`) turned into `_`.
pub fn tag_label_name(key: &str) -> String {
    let mut name = String::with_capacity(4 + key.len());
    name.push_str("tag_");
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    name
}

/// The tags of a cluster as its series carry them: each of its own, or, where it lacks the
/// key, its project's (customers often tag a whole environment at the project).
pub fn cluster_over_project(
    cluster: &[Option<Arc<str>>],
    project: &[Option<Arc<str>>],
) -> TagValues {
    let n = cluster.len().max(project.len());
    canonical(
        (0..n)
            .map(|i| {
                cluster
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| project.get(i).cloned().flatten())
            })
            .collect(),
    )
}

/// Tag values with no value at all are the empty [`TagValues`]: one spelling of "no tags", so
/// keys compare equal whenever their labels do, and untagged series allocate nothing.
fn canonical(values: Vec<Option<Arc<str>>>) -> TagValues {
    if values.iter().all(Option::is_none) {
        TagValues::default()
    } else {
        values.into_boxed_slice()
    }
}

/// One cost series: the query it belongs to, its label values, its month and its amount.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CostSeries {
    /// The `query` label.
    pub query: Arc<str>,
    /// The other labels.
    pub key: SeriesKey,
    /// The usage month.
    pub month: Month,
    /// The amount, micro-dollars.
    pub micros: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AtlasId, usd_to_micros};

    /// Each label has its own name, which reads back as the label; `ALL` lists each once,
    /// outermost first (the exact names and order are checked where they are rendered, in
    /// exposition's tests).
    #[test]
    fn labels_have_one_name_each_outermost_first() {
        assert!(Label::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Label::ALL[0], Label::OrgId);
        for l in Label::ALL {
            assert_eq!(Label::from_name(l.as_str()), Some(l));
        }
        assert_eq!(Label::from_name("month"), None);
        assert_eq!(Label::from_name("query"), None);
    }

    /// Empty values are absent, `above` keeps the outer labels only, and `labels` lists the
    /// present ones in order.
    #[test]
    fn keys_treat_empty_as_absent_and_cut_at_a_level() {
        let mut k = SeriesKey::new([Some("o"), Some(""), Some("p"), None, None, None, Some("s")]);
        assert_eq!(k.get(Label::OrgName), None);
        k.set(Label::ClusterName, Some("c"));
        assert_eq!(
            k.labels().collect::<Vec<_>>(),
            [
                (Label::OrgId, "o"),
                (Label::ProjectId, "p"),
                (Label::ClusterName, "c"),
                (Label::AtlasService, "s")
            ]
        );
        let parent = k.above(Label::ClusterId);
        assert_eq!(
            parent.labels().collect::<Vec<_>>(),
            [(Label::OrgId, "o"), (Label::ProjectId, "p")]
        );
        k.set(Label::AtlasService, Some(""));
        assert_eq!(k.get(Label::AtlasService), None);
    }

    /// A clone of a key is the same shared key; setting a label on one copies it first, so
    /// the other keeps its values; setting a value it already has shares on.
    #[test]
    fn a_cloned_key_is_shared_until_one_copy_changes() {
        let a = SeriesKey::new([Some("o"), None, Some("p"), None, None, None, Some("s")]);
        let mut b = a.clone();
        assert!(b.shares(&a));
        b.set(Label::ProjectId, Some("p"));
        assert!(b.shares(&a), "the same value: nothing to copy");
        b.set(Label::ProjectId, Some("q"));
        assert!(!b.shares(&a));
        assert_eq!(
            (a.get(Label::ProjectId), b.get(Label::ProjectId)),
            (Some("p"), Some("q"))
        );
        let cut = a.above(Label::AtlasService);
        assert_eq!(cut.get(Label::AtlasService), None);
        assert_eq!(a.get(Label::AtlasService), Some("s"));
        assert!(
            cut.above(Label::AtlasService).shares(&cut),
            "nothing to cut"
        );
    }

    /// Each tag key becomes `tag_<key>` with every character not valid in a label name
    /// turned into `_`, in the order given.
    #[test]
    fn tag_keys_become_sanitised_label_names_in_order() {
        let tags = TagLabels::new(
            "--cost.tag-labels",
            [" team", "cost-center", "Env.Name", "é"],
        )
        .expect("valid");
        assert_eq!(tags.keys(), ["team", "cost-center", "Env.Name", "é"]);
        assert_eq!(
            tags.names(),
            ["tag_team", "tag_cost_center", "tag_Env_Name", "tag__"]
        );
        assert_eq!(tags.key_label("tag_cost_center"), Some(KeyLabel::Tag(1)));
        assert_eq!(
            tags.key_label("project_name"),
            Some(KeyLabel::Cost(Label::ProjectName))
        );
        assert_eq!(tags.key_label("tag_owner"), None);
        assert!(
            TagLabels::new("x", Vec::<String>::new())
                .expect("none")
                .is_empty()
        );
    }

    /// Two keys with the same label name stop start-up with one line naming both; an empty,
    /// repeated, overlong or control-character key is refused, naming the flag.
    #[test]
    fn colliding_empty_and_invalid_tag_keys_are_refused() {
        let e = TagLabels::new("--cost.tag-labels", ["team", "cost-center", "cost_center"])
            .expect_err("a collision");
        assert_eq!(
            e.to_string(),
            "--cost.tag-labels: the tag keys \"cost-center\" and \"cost_center\" both become the \
             label tag_cost_center; keep one of them"
        );
        assert!(!e.to_string().contains('\n'));
        let long = "k".repeat(256);
        for (keys, says) in [
            (vec!["team", ""], "an empty tag key"),
            (vec![" "], "an empty tag key"),
            (vec!["team", "team"], "given twice"),
            (vec![long.as_str()], "is not a tag key"),
            (vec!["a\tb"], "is not a tag key"),
        ] {
            let e = TagLabels::new("tag_labels", &keys).expect_err("refused");
            let msg = e.to_string();
            assert!(
                msg.starts_with("tag_labels: ") && msg.contains(says),
                "{keys:?}: {msg}"
            );
        }
    }

    /// A resource's tags are read for the allowlisted keys only, in allowlist order; a
    /// resource with none of them has no tag values at all (nothing allocated).
    #[test]
    fn tag_values_follow_the_allowlist() {
        let tags = TagLabels::new("t", ["team", "env"]).expect("valid");
        let v = tags.values([
            ("env", "prod"),
            ("owner", "x"),
            ("team", "web"),
            ("env", "dev"),
        ]);
        assert_eq!(&*v, [Some(Arc::from("web")), Some(Arc::from("prod"))]);
        assert!(tags.values([("owner", "x"), ("team", "")]).is_empty());
    }

    /// A cluster's own tag wins; a key it lacks comes from its project; no tag at all on
    /// either is no tag values.
    #[test]
    fn a_cluster_tag_wins_over_its_project_tag() {
        let tags = TagLabels::new("t", ["team", "env", "cost-center"]).expect("valid");
        let cluster = tags.values([("team", "search")]);
        let project = tags.values([("team", "web"), ("env", "prod")]);
        let got = cluster_over_project(&cluster, &project);
        let mut key = SeriesKey::default();
        key.set_tags(got);
        assert_eq!(
            (key.tag(0), key.tag(1), key.tag(2)),
            (Some("search"), Some("prod"), None)
        );
        assert!(cluster_over_project(&[], &[None, None]).is_empty());
    }

    /// Cutting a key above the cluster drops its tags (they were not the parent's); cutting
    /// at the service keeps them.
    #[test]
    fn a_cut_above_the_cluster_drops_the_tags() {
        let tags = TagLabels::new("t", ["team"]).expect("valid");
        let mut k = SeriesKey::new([Some("o"), None, Some("p"), None, Some("c"), None, Some("s")]);
        k.set_tags(tags.values([("team", "web")]));
        assert_eq!(k.above(Label::AtlasService).tag(0), Some("web"));
        assert_eq!(k.above(Label::ClusterId).tags(), []);
        assert_eq!(k.above(Label::ProjectId).tags(), []);
        assert_eq!(k.value(KeyLabel::Tag(0)), Some("web"));
        assert_eq!(k.value(KeyLabel::Cost(Label::ProjectId)), Some("p"));
    }

    /// An `AtlasId` holds only what `is_atlas_id` accepts.
    #[test]
    fn atlas_ids_are_24_lowercase_hex_characters() {
        let id = AtlasId::parse("5f1b2c3d4e5f6a7b8c9d0e1f").expect("an id");
        assert_eq!(id.as_str(), "5f1b2c3d4e5f6a7b8c9d0e1f");
        assert_eq!(id.to_string(), "5f1b2c3d4e5f6a7b8c9d0e1f");
        for bad in [
            "",
            "5F1B2C3D4E5F6A7B8C9D0E1F",
            "5f1b2c3d4e5f6a7b8c9d0e1",
            "5f1b2c3d4e5f6a7b8c9d0e1f0",
            "../../../../../../../etc",
        ] {
            assert_eq!(AtlasId::parse(bad), None, "{bad:?}");
        }
    }

    /// USD convert to micro-dollars rounded to the nearest, sign kept; NaN, infinities and
    /// absurd amounts do not convert.
    #[test]
    fn usd_convert_to_micros_exactly_or_not_at_all() {
        assert_eq!(usd_to_micros(51.19), Some(51_190_000));
        assert_eq!(usd_to_micros(-0.000_005), Some(-5));
        assert_eq!(usd_to_micros(0.000_000_4), Some(0));
        assert_eq!(usd_to_micros(123_456_789.01), Some(123_456_789_010_000));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e12, -1e12] {
            assert_eq!(usd_to_micros(bad), None, "{bad}");
        }
    }
}
