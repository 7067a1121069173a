//! The Cost Explorer source: an org's queries, each refreshed from the ids it needs to its
//! series, and recorded into the query slots at publication with the remainders that make
//! the queries add up.
//!
//! - `discovery`: the projects and clusters of an org, listed and remembered;
//! - `collect`: one query's refresh, from the ids it needs to its series;
//! - `month_cache`: the closed months, cached per query configuration;
//! - `aggregate`: rows to served series, a pure function;
//! - `roles`: which queries the remainders make add up, and deriving them.

mod aggregate;
mod collect;
mod discovery;
mod month_cache;
mod roles;

use std::time::SystemTime;

pub(in crate::refresher) use self::aggregate::Uncontrolled;
pub(in crate::refresher) use self::collect::QueryData;
pub(in crate::refresher) use self::discovery::KnownIds;
pub(in crate::refresher) use self::month_cache::{MonthCache, QueryKey};
use self::roles::report_shed;
pub(in crate::refresher) use self::roles::{Role, attach_remainders};
use super::{OrgWorker, Refresher, Slot};
use crate::model::Reason;

impl Refresher {
    /// Records each query's outcome of an org's refresh in its slot (`slots` are the org's,
    /// in configuration order): a success replaces the last good data, a failure keeps it
    /// and is counted. Then attaches the remainders and reports what the series limits
    /// shed. Returns how many of the org's queries are up.
    pub(in crate::refresher) fn record_queries(
        &self,
        org: &OrgWorker,
        slots: &mut [Slot],
        outcomes: Vec<Result<QueryData, (Reason, String)>>,
        finished: SystemTime,
    ) -> usize {
        for (slot, outcome) in slots.iter_mut().zip(outcomes) {
            let status = &mut slot.status;
            status.attempted = true;
            status.last_attempt = Some(finished);
            match outcome {
                Ok(data) => {
                    status.up = true;
                    status.restored = false;
                    status.last_success = Some(finished);
                    status.last_error = None;
                    status.series = data.series.len();
                    status.invalid_rows = data.invalid_rows;
                    slot.shed = data.shed;
                    slot.series = std::sync::Arc::new(data.series);
                    slot.uncontrolled = data.uncontrolled.map(std::sync::Arc::new);
                    slot.remainders_included = false;
                    slot.rollup = Some(std::sync::Arc::new(data.rollup));
                }
                Err((reason, message)) => {
                    status.up = false;
                    status.last_error = Some(message);
                    self.metrics
                        .count_error(&status.query, &status.org_id, reason, 1);
                }
            }
        }
        attach_remainders(&org.config.id, &org.roles, slots, &self.tag_labels);
        for (slot, spec) in slots.iter().zip(&org.config.queries) {
            if slot.rollup.is_some() {
                report_shed(&self.metrics, org, spec, slot.shed);
            }
        }
        for slot in slots.iter_mut() {
            // Series or remainders may have changed: encoded again at this publication.
            slot.text = None;
            if slot.status.up {
                slot.status.series = slot.series.len() + slot.remainder.len();
            }
        }
        slots.iter().filter(|s| s.status.up).count()
    }
}
