//! The refresher's side of `--storage.path`: after each publication of an org's refresh, its
//! state (every id seen, each query's last good data, status and closed months) is written
//! to its file; at start-up, each configured org's kept state is served at once.
//!
//! Only what is configured now is taken back: an org missing from the configuration (or from
//! this shard) is never read, a query whose configuration changed (its fingerprint) gets
//! neither its kept data nor its closed months.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::cost_explorer::{Role, attach_remainders};
use super::slot::Slot;
use super::{OrgWorker, Refresher};
use crate::remainder::Rollup;
use crate::state::{KeptStatus, Loaded, OrgState, QueryState, Store};

/// What [`Refresher::restore`] served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Orgs with a kept state.
    pub orgs: usize,
    /// Queries whose kept data is served.
    pub queries: usize,
    /// Their series.
    pub series: usize,
    /// Closed months taken back into the month cache.
    pub closed_months: usize,
}

impl Refresher {
    /// Keeps each org's state in `store` after every publication of its refresh.
    #[must_use]
    pub fn with_store(mut self, store: Arc<Store>) -> Refresher {
        self.store = Some(store);
        self
    }

    /// Serves the state read at start-up ([`Store::load`]): for each configured org, the ids
    /// it had seen, and for each of its queries whose configuration is unchanged, its last
    /// good data with its status (last success, last error, up) and its closed months. The
    /// kept series are published at once, with their remainders and budgets.
    pub fn restore(&self, loaded: Loaded) -> Restored {
        let now = (self.clock)();
        let mut restored = Restored::default();
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for kept in loaded.orgs {
            let Some(org) = self.orgs.iter().find(|o| o.config.id == kept.org_id) else {
                continue;
            };
            let known = org
                .known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .restore(kept.known);
            let mut queries = kept.queries;
            let slots = &mut published.slots[org.slots.clone()];
            let (mut served, mut series, mut months) = (0, 0, 0);
            for ((spec, key), slot) in org
                .config
                .queries
                .iter()
                .zip(&org.keys)
                .zip(slots.iter_mut())
            {
                let Some(i) = queries.iter().position(|q| q.name == spec.name) else {
                    continue;
                };
                let q = queries.swap_remove(i);
                if q.fingerprint != key.fingerprint() {
                    tracing::info!(
                        org_id = %org.config.id,
                        query = %spec.name,
                        "the query's configuration changed since its state was kept: its kept \
                         data and closed months are not used"
                    );
                    continue;
                }
                months += self.closed_months.restore(key, q.closed, now);
                if self.take_back(slot, q.status, q.window, q.series) {
                    // Controls that ran at publication kept the remainders in the series.
                    slot.remainders_included = !spec.controls.is_empty()
                        && matches!(Role::of(spec), Role::Projects | Role::Clusters);
                    served += 1;
                    series += slot.series.len();
                }
            }
            attach_remainders(&org.config.id, &org.roles, slots, &self.tag_labels);
            for slot in slots.iter_mut() {
                slot.text = None;
                if slot.status.restored {
                    slot.status.series = slot.series.len() + slot.remainder.len();
                }
            }
            tracing::info!(
                org_id = %org.config.id,
                queries = served,
                series,
                closed_months = months,
                known_ids = known,
                written_at = %kept.written_at.map_or_else(
                    || "unknown".to_owned(),
                    |t| humantime::format_rfc3339_seconds(t).to_string()
                ),
                "kept state served until the org's first refresh replaces it"
            );
            restored.orgs += 1;
            restored.queries += served;
            restored.series += series;
            restored.closed_months += months;
        }
        for org in &self.orgs {
            let bytes = loaded
                .sizes
                .iter()
                .find(|(id, _)| *id == org.config.id)
                .map_or(0, |(_, b)| *b);
            org.state_bytes.store(bytes, Ordering::Relaxed);
        }
        self.metrics.set_state_bytes(loaded.bytes);
        self.metrics.count_state_set_aside(loaded.set_aside);
        published.generation += 1;
        self.publish(&mut published);
        restored
    }

    /// Takes a kept query's status and data into its slot; whether it had data to serve.
    fn take_back(
        &self,
        slot: &mut Slot,
        kept: KeptStatus,
        window: Option<(crate::month::Month, crate::month::Month)>,
        series: Arc<Vec<crate::exposition::RenderedSeries>>,
    ) -> bool {
        let status = &mut slot.status;
        status.up = kept.up;
        status.last_attempt = kept.last_attempt;
        status.last_error = kept.last_error;
        status.invalid_rows = kept.invalid_rows;
        slot.shed = kept.shed;
        self.metrics
            .set_series_shed(&status.query, &status.org_id, kept.shed);
        let Some(success) = kept.last_success else {
            // Never succeeded: nothing to serve; its last error stays visible.
            return false;
        };
        status.last_success = Some(success);
        status.restored = true;
        slot.rollup = window.map(|(first, last)| {
            Arc::new(Rollup::new(
                first,
                last,
                series
                    .iter()
                    .map(|s| (s.series.month, &s.series.key, s.series.micros)),
            ))
        });
        slot.series = series;
        true
    }

    /// The state of `org`'s queries as just published (Arcs of the slots' data, no copy).
    pub(super) fn kept_queries(
        &self,
        org: &OrgWorker,
        slots: &[Slot],
        now: SystemTime,
    ) -> Vec<QueryState> {
        org.config
            .queries
            .iter()
            .zip(&org.keys)
            .zip(slots)
            .map(|((spec, key), slot)| {
                let s = &slot.status;
                QueryState {
                    name: spec.name.clone(),
                    fingerprint: key.fingerprint(),
                    status: KeptStatus {
                        up: s.up,
                        last_success: s.last_success,
                        last_attempt: s.last_attempt,
                        last_error: s.last_error.clone(),
                        invalid_rows: s.invalid_rows,
                        shed: slot.shed,
                    },
                    window: slot.rollup.as_ref().and_then(|r| r.months),
                    series: slot.series.clone(),
                    closed: self.closed_months.kept(key, now),
                }
            })
            .collect()
    }

    /// Writes `org`'s state with `queries`, off the async threads; a failure is logged and
    /// counted, and changes nothing else (the previous file stays).
    pub(super) async fn persist(&self, org: &OrgWorker, queries: Vec<QueryState>, now: SystemTime) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let known = org
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .kept();
        let state = OrgState {
            org_id: org.config.id.clone(),
            written_at: Some(now),
            known,
            queries,
        };
        let started = std::time::Instant::now();
        let written = tokio::task::spawn_blocking(move || store.write(&state))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let took = started.elapsed();
        match written {
            Ok(bytes) => {
                org.state_bytes.store(bytes, Ordering::Relaxed);
                let total = self
                    .orgs
                    .iter()
                    .map(|o| o.state_bytes.load(Ordering::Relaxed))
                    .sum();
                self.metrics.set_state_bytes(total);
                self.metrics.state_written(true, took);
                tracing::debug!(
                    org_id = %org.config.id,
                    bytes,
                    duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    "state written"
                );
            }
            Err(error) => {
                self.metrics.state_written(false, took);
                tracing::warn!(
                    org_id = %org.config.id,
                    %error,
                    "writing the kept state failed: the previous state file stays; serving and \
                     refreshing go on"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, Credentials, Secret};
    use crate::exposition::render_sorted;
    use crate::metrics::SelfMetrics;
    use crate::month::Month;
    use crate::series::{CostSeries, Label, SeriesKey, TagLabels};
    use crate::snapshot::SnapshotCell;
    use crate::state::query_fingerprint;

    const ORG: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";

    /// A kept query comes back only under its unchanged configuration, with its status and
    /// data; one whose configuration changed comes back with nothing; one that never
    /// succeeded brings back its last error but no data, and holds readiness back.
    #[tokio::test]
    async fn only_unchanged_queries_come_back_and_only_with_data() {
        let credentials = Credentials::ServiceAccount {
            client_id: "id".to_owned(),
            client_secret: Secret::new("secret"),
        };
        let config = Config::builder("http://127.0.0.1:9")
            .org(ORG, credentials)
            .build();
        let cell = Arc::new(SnapshotCell::default());
        let refresher = Refresher::new(&config, Arc::new(SelfMetrics::new("1h")), cell.clone())
            .expect("builds");
        let specs = &config.orgs[0].queries;
        let month = Month::new(2026, 11).expect("valid");
        let success = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let mut key = SeriesKey::default();
        key.set(Label::OrgId, Some(ORG));
        key.set(Label::AtlasService, Some("Clusters"));
        let series = Arc::new(render_sorted([CostSeries {
            query: Arc::from("services"),
            key,
            month,
            micros: 12_500_000,
        }]));
        let kept = |i: usize, fingerprint: u64, last_success: Option<SystemTime>| QueryState {
            name: specs[i].name.clone(),
            fingerprint,
            status: KeptStatus {
                up: last_success.is_some(),
                last_success,
                last_attempt: Some(success),
                last_error: last_success
                    .is_none()
                    .then(|| "Atlas answered 503".to_owned()),
                invalid_rows: 0,
                shed: 0,
            },
            window: Some((month, month)),
            series: if last_success.is_some() {
                series.clone()
            } else {
                Arc::new(Vec::new())
            },
            closed: Vec::new(),
        };
        let fingerprint = |i: usize| query_fingerprint(&specs[i], &TagLabels::default());
        let state = OrgState {
            org_id: ORG.to_owned(),
            written_at: Some(success),
            known: crate::state::KnownState::default(),
            queries: vec![
                kept(0, fingerprint(0), Some(success)),
                kept(1, fingerprint(1) ^ 1, Some(success)),
                kept(2, fingerprint(2), None),
            ],
        };
        let restored = refresher.restore(Loaded {
            orgs: vec![state],
            ..Loaded::default()
        });
        assert_eq!(
            (restored.orgs, restored.queries, restored.series),
            (1, 1, 1)
        );
        let snapshot = cell.load();
        let [services, projects, clusters] = &snapshot.statuses[..] else {
            panic!("three queries");
        };
        assert!(services.restored && services.up && !services.attempted);
        assert_eq!(services.last_success, Some(success));
        assert!(
            !projects.restored && projects.last_success.is_none(),
            "changed"
        );
        assert!(!clusters.restored && clusters.last_success.is_none());
        assert_eq!(clusters.last_error.as_deref(), Some("Atlas answered 503"));
        assert!(!snapshot.ready(), "the changed and the failed query wait");
        let text = String::from_utf8(snapshot.costs.text()).expect("utf-8");
        assert!(
            text.contains(&format!(
                "atlas_cost_usage_usd{{query=\"services\",org_id=\"{ORG}\",atlas_service=\"Clusters\",month=\"2026-11\"}} 12.5"
            )),
            "{text}"
        );
    }
}
