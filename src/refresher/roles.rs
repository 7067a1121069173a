//! What each query contributes to the remainders ([`crate::remainder`]), and the derivation of
//! an org's remainder series from its queries' last good data.

use std::sync::Arc;

use super::Slot;
use crate::config::QuerySpec;
use crate::exposition::RenderedSeries;
use crate::model::GroupBy;
use crate::remainder::{clusters_remainder, projects_remainder};
use crate::series::TagLabels;

/// What a query contributes to the remainders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
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
    pub(super) fn of(spec: &QuerySpec) -> Role {
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
/// `projects` and `clusters` queries against the total (see [`crate::remainder`]).
pub(super) fn attach_remainders(
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
        let (Some(total), Some(own)) = (&total, &slot.rollup) else {
            continue;
        };
        let remainder = match role {
            Role::Projects => projects_remainder(org_id, &slot.status.query, total, own),
            Role::Clusters => {
                clusters_remainder(org_id, &slot.status.query, total, projects.as_deref(), own)
            }
            Role::Total | Role::None => continue,
        };
        // Rendered in the order derived: a remainder is exposed after its query's series.
        slot.remainder = Arc::new(
            remainder
                .into_iter()
                .map(|s| RenderedSeries::new(s, tags))
                .collect(),
        );
    }
}

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
