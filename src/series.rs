//! The cost series, typed: the label set ([`Label`]), the label values of a series
//! ([`SeriesKey`]) and a series of one query in one month with its amount ([`CostSeries`]).
//!
//! Controls, budgets, remainders and forecasts work on these; only exposition renders them
//! as label text, once per refresh. This module imports nothing of the crate but the model
//! and months.

use std::sync::Arc;

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

/// The label values of a series (without `query` and `month`). An absent value is a label the
/// series does not have; an empty value counts as absent. Ordered label by label in
/// [`Label::ALL`] order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey([Option<Box<str>>; 7]);

impl SeriesKey {
    /// A key from label values in [`Label::ALL`] order.
    pub fn new(values: [Option<&str>; 7]) -> SeriesKey {
        SeriesKey(values.map(|v| v.filter(|v| !v.is_empty()).map(Box::from)))
    }

    /// The value of `label`, if the series has it.
    pub fn get(&self, label: Label) -> Option<&str> {
        self.0[label.index()].as_deref()
    }

    /// Sets (or, with `None` or an empty value, removes) `label`.
    pub fn set(&mut self, label: Label, value: Option<&str>) {
        self.0[label.index()] = value.filter(|v| !v.is_empty()).map(Box::from);
    }

    /// The labels the series has, with their values, in exposition order.
    pub fn labels(&self) -> impl Iterator<Item = (Label, &str)> {
        Label::ALL
            .into_iter()
            .zip(&self.0)
            .filter_map(|(l, v)| v.as_deref().map(|v| (l, v)))
    }

    /// The labels above `label` in the hierarchy (before it in [`Label::ALL`]), the rest
    /// absent.
    pub fn above(&self, label: Label) -> SeriesKey {
        let mut k = self.clone();
        for v in &mut k.0[label.index()..] {
            *v = None;
        }
        k
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
