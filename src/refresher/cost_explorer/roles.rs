//! What each query contributes to the remainders ([`crate::remainder`]), and the derivation of
//! an org's remainder series from its queries' last good data.

use std::sync::Arc;

use super::collect::first_time;
use crate::config::QuerySpec;
use crate::exposition::{RenderedSeries, render_tagged};
use crate::metrics::SelfMetrics;
use crate::model::GroupBy;
use crate::refresher::{OrgWorker, Slot};
use crate::remainder::{clusters_remainder, projects_remainder};
use crate::series::TagLabels;

/// What a query contributes to the remainders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::refresher) enum Role {
    /// The org's total by service: ungrouped, unfiltered.
    Total,
    /// Grouped by discovered projects, unfiltered: gets a remainder.
    Projects,
    /// Grouped by discovered clusters, unfiltered: gets a remainder.
    Clusters,
    /// Anything else: no remainder (its filters make it a part of the total by design).
    None,
}

impl Role {
    /// The role of `spec`.
    pub(in crate::refresher) fn of(spec: &QuerySpec) -> Role {
        let unfiltered =
            spec.projects.is_empty() && spec.clusters.is_empty() && spec.services.is_empty();
        match spec.group_by {
            _ if !unfiltered => Role::None,
            GroupBy::Ungrouped => Role::Total,
            GroupBy::Projects => Role::Projects,
            GroupBy::Clusters => Role::Clusters,
            GroupBy::Organizations | GroupBy::Services => Role::None,
        }
    }
}

/// Derives the remainder series of an org's queries from their last good data: the
/// `projects` and `clusters` queries against the total (see [`crate::remainder`]). A query
/// whose controls run at publication ([`super::aggregate::Uncontrolled`]) runs them here,
/// over its series and its remainders together, and holds both in its series.
pub(in crate::refresher) fn attach_remainders(
    org_id: &str,
    roles: &[Role],
    slots: &mut [Slot],
    tags: &TagLabels,
) {
    let rollup_of = |role: Role| {
        roles
            .iter()
            .zip(slots.iter())
            .find(|(r, s)| **r == role && s.rollup.is_some())
            .and_then(|(_, s)| s.rollup.clone())
    };
    let total = rollup_of(Role::Total);
    let projects = rollup_of(Role::Projects);
    for (role, slot) in roles.iter().zip(slots.iter_mut()) {
        let remainder = match (&total, &slot.rollup, role) {
            (Some(total), Some(own), Role::Projects) => {
                projects_remainder(org_id, &slot.status.query, total, own)
            }
            (Some(total), Some(own), Role::Clusters) => {
                clusters_remainder(org_id, &slot.status.query, total, projects.as_deref(), own)
            }
            _ => Vec::new(),
        };
        if let Some(uncontrolled) = &slot.uncontrolled {
            let (series, shed) = uncontrolled.apply(remainder);
            slot.series = Arc::new(render_tagged(series, tags));
            slot.remainder = Arc::new(Vec::new());
            slot.shed = shed;
        } else if matches!(role, Role::Projects | Role::Clusters)
            && slot.rollup.is_some()
            && !slot.remainders_included
        {
            // Rendered in the order derived: a remainder is exposed after its query's series.
            slot.remainder = Arc::new(
                remainder
                    .into_iter()
                    .map(|s| RenderedSeries::new(s, tags))
                    .collect(),
            );
        }
    }
}

/// Records how many series the limit of `spec` folded at this publication of `org`; the
/// first time it folds any, logs it.
pub(in crate::refresher) fn report_shed(
    metrics: &SelfMetrics,
    org: &OrgWorker,
    spec: &QuerySpec,
    shed: u64,
) {
    metrics.set_series_shed(&spec.name, &org.config.id, shed);
    if shed > 0 && first_time(&org.shed_reported, &spec.name) {
        tracing::warn!(
            org_id = %org.config.id,
            query = %spec.name,
            max_series = spec.controls.max_series().unwrap_or(0),
            shed,
            "the query has more series than its max_series: the least expensive are folded \
             into (other) series (totals stay exact); see atlas_cost_query_series_shed \
             (logged once)"
        );
    }
}

#[cfg(test)]
#[path = "properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    /// Of the default queries, `services` is the total and `projects` and `clusters` get
    /// remainders; a query with any filter, or grouped by services, gets none.
    #[test]
    fn only_unfiltered_default_groupings_take_part_in_remainders() {
        let defaults = QuerySpec::defaults(1);
        let roles: Vec<Role> = defaults.iter().map(Role::of).collect();
        assert_eq!(roles, [Role::Total, Role::Projects, Role::Clusters]);
        for mut f in defaults {
            f.services = vec!["Clusters".to_owned()];
            assert_eq!(Role::of(&f), Role::None, "{}", f.name);
        }
        let mut by_service = QuerySpec::defaults(1).remove(0);
        by_service.group_by = GroupBy::Services;
        assert_eq!(Role::of(&by_service), Role::None);
    }
}
