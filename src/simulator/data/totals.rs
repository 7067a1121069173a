//! Exact totals over a [`Dataset`], in cents: what a query returns when nothing is filtered
//! out, per level, per project or cluster, per month and service, and what no listing can
//! attribute. Tests compare results with them "correct to the cent".

use std::collections::BTreeMap;

use super::{Dataset, GroupBy, UsageRecord};
use crate::month::Month;

impl Dataset {
    /// Exact total in cents of the records of `org_id` in [`start`, `end`) for which `pred`
    /// holds. Unknown org: 0. The building block of the helpers below.
    pub fn sum_cents(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
        pred: impl Fn(&UsageRecord) -> bool,
    ) -> i64 {
        let Some(org) = self.org_by_id(org_id) else {
            return 0;
        };
        self.org_usage(org)
            .iter()
            .filter(|r| r.month >= start && r.month < end && pred(r))
            .map(|r| r.amount_cents)
            .sum()
    }

    /// Exact total in cents of what a query over [`start`, `end`) for `org_id` returns when
    /// nothing is filtered out: no `groupBy` or grouped by `organizations` or `services`, or
    /// grouped by `projects`/`clusters` with every id listed (deleted and Flex ones included)
    /// and `includePartialMatches: true`. Lets tests check results "correct to the cent".
    /// Unknown org: 0.
    pub fn total_cents(&self, org_id: &str, start: Month, end: Month) -> i64 {
        self.sum_cents(org_id, start, end, |_| true)
    }

    /// Exact total in cents of a query over [`start`, `end`) for `org_id` grouped by
    /// `group_by`, when the `projects`/`clusters` filter lists every id of the org (deleted
    /// and Flex ones included). Without `include_partial_matches`, grouping by projects drops
    /// org-level charges, and grouping by clusters also drops project-level ones.
    pub fn total_cents_grouped(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
        group_by: GroupBy,
        include_partial_matches: bool,
    ) -> i64 {
        self.sum_cents(org_id, start, end, |r| {
            include_partial_matches
                || match group_by {
                    GroupBy::Projects => r.project.is_some(),
                    GroupBy::Clusters => r.cluster.is_some(),
                    GroupBy::Organizations | GroupBy::Services => true,
                }
        })
    }

    /// Org-level charges (no project: `Support`, `Credits`) of `org_id` in [`start`, `end`).
    pub fn org_level_cents(&self, org_id: &str, start: Month, end: Month) -> i64 {
        self.sum_cents(org_id, start, end, |r| r.project.is_none())
    }

    /// Project-level charges (a project, no cluster: `App Services`, `Charts`) of every
    /// project of `org_id`, deleted ones included, in [`start`, `end`).
    pub fn project_level_cents(&self, org_id: &str, start: Month, end: Month) -> i64 {
        self.sum_cents(org_id, start, end, |r| {
            r.project.is_some() && r.cluster.is_none()
        })
    }

    /// Everything billed to the project `project_id` (its clusters and its project-level
    /// charges) in [`start`, `end`); what a `projects` query returns for it. Unknown: 0.
    pub fn project_cents(&self, project_id: &str, start: Month, end: Month) -> i64 {
        let Some((o, p)) = self.project_by_id(project_id) else {
            return 0;
        };
        let org_id = &self.orgs[o].id;
        self.sum_cents(org_id, start, end, |r| r.project == Some(p))
    }

    /// Everything billed to the cluster `cluster_id` (dedicated, Flex or deleted) in
    /// [`start`, `end`); what a `clusters` query returns for it. Unknown: 0.
    pub fn cluster_cents(&self, cluster_id: &str, start: Month, end: Month) -> i64 {
        let Some((o, p, c)) = self.cluster_by_id(cluster_id) else {
            return 0;
        };
        let org_id = &self.orgs[o].id;
        self.sum_cents(org_id, start, end, |r| {
            r.project == Some(p) && r.cluster == Some(c)
        })
    }

    /// What `service` costs `org_id` in [`start`, `end`), at every level.
    pub fn service_cents(&self, org_id: &str, service: &str, start: Month, end: Month) -> i64 {
        self.sum_cents(org_id, start, end, |r| r.service == service)
    }

    /// The org's total per (month, service) in [`start`, `end`): exactly the rows a query
    /// without `groupBy` returns.
    pub fn monthly_service_cents(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
    ) -> BTreeMap<(Month, String), i64> {
        let mut out = BTreeMap::new();
        if let Some(org) = self.org_by_id(org_id) {
            for r in self.org_usage(org) {
                if r.month >= start && r.month < end {
                    *out.entry((r.month, r.service.clone())).or_insert(0) += r.amount_cents;
                }
            }
        }
        out
    }

    /// The org's total per month in [`start`, `end`) (months without records absent).
    pub fn monthly_cents(&self, org_id: &str, start: Month, end: Month) -> BTreeMap<Month, i64> {
        let mut out = BTreeMap::new();
        for ((month, _), cents) in self.monthly_service_cents(org_id, start, end) {
            *out.entry(month).or_insert(0) += cents;
        }
        out
    }

    /// Charges of `org_id` in [`start`, `end`) that no listing can attribute today: everything
    /// of deleted projects, and the cluster-level charges of deleted clusters (except, when
    /// `include_retained`, those deleted with retained backups, which the clusters listing
    /// still returns with `includeDeletedWithRetainedBackups=true`). Flex clusters count as
    /// listed (by their own endpoint).
    pub fn unlisted_cents(
        &self,
        org_id: &str,
        start: Month,
        end: Month,
        include_retained: bool,
    ) -> i64 {
        self.sum_cents(org_id, start, end, |r| match self.place(r) {
            (Some(p), _) if p.is_deleted() => true,
            (_, Some(c)) => !(c.in_clusters_listing(include_retained) || c.in_flex_listing()),
            _ => false,
        })
    }
}
