//! The refresher's side of `--storage.path`: after each publication of an org's refresh, its
//! state (every id seen, each query's last good data, status and closed months, the invoice
//! source's last good data, status and closed invoice items) is written to its file; at
//! start-up, each configured org's kept state is served at once.
//!
//! Only what is configured now is taken back: an org missing from the configuration (or from
//! this shard) is never read, a query whose configuration changed (its fingerprint) gets
//! neither its kept data nor its closed months, and the invoice source gets nothing back
//! when it is off now or its configuration changed ([`crate::state::invoice_fingerprint`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::cost_explorer::{Role, attach_remainders};
use super::slot::Slot;
use super::{InvoiceSlot, OrgWorker, Refresher};
use crate::invoice::{day_of, month_of_day};
use crate::remainder::Rollup;
use crate::state::{
    InvoiceState, KeptSourceStatus, KeptStatus, Loaded, OrgState, QueryState, Store,
};

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
    /// Orgs whose invoice source's kept data is served.
    pub invoice_orgs: usize,
    /// Its SKU series.
    pub sku_series: usize,
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
    /// good data with its status (last success, last error, up) and its closed months; and
    /// when the org's invoice source runs under the same invoice configuration, its last good
    /// data with its status (up, last success, duration) and its closed invoice's items. The
    /// kept series are published at once, with their remainders, budgets and SKU series.
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
            if let Some(t) = last_full_success(&published.slots[org.slots.clone()]) {
                let source = &mut published.orgs[org.index].cost_explorer;
                source.up = true;
                source.last_success = Some(t);
            }
            let skus = take_back_invoices(
                org,
                published.orgs[org.index].invoices.as_mut(),
                kept.invoices,
            );
            tracing::info!(
                org_id = %org.config.id,
                queries = served,
                series,
                closed_months = months,
                sku_series = skus.unwrap_or(0),
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
            restored.invoice_orgs += usize::from(skus.is_some());
            restored.sku_series += skus.unwrap_or(0);
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

    /// Writes `org`'s state with `queries` and `invoices`, off the async threads; a failure is
    /// logged and counted, and changes nothing else (the previous file stays).
    pub(super) async fn persist(
        &self,
        org: &OrgWorker,
        queries: Vec<QueryState>,
        invoices: Option<InvoiceState>,
        now: SystemTime,
    ) {
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
            invoices,
            invoices_error: None,
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

/// Takes the kept invoice state into the org's invoice slot (`None` when the source is off
/// now) and its closed items into the org; the SKU series it serves, or `None` when nothing
/// was taken back. (A bad invoice part was logged, and set aside, by [`Store::load`].)
fn take_back_invoices(
    org: &OrgWorker,
    slot: Option<&mut InvoiceSlot>,
    kept: Option<InvoiceState>,
) -> Option<usize> {
    let kept = kept?;
    let Some(slot) = slot else {
        tracing::info!(
            org_id = %org.config.id,
            "the invoice source is off: its kept state is not used"
        );
        return None;
    };
    if kept.fingerprint != org.invoice_fingerprint {
        tracing::info!(
            org_id = %org.config.id,
            "the invoice configuration changed since its state was kept (SKU controls, or the \
             orgs that run the invoice source): its kept data and closed invoice items are not \
             used"
        );
        return None;
    }
    slot.status.up = kept.status.up;
    slot.status.last_success = kept.status.last_success;
    slot.status.duration = kept.status.duration;
    // Encoded at the publication that follows, with the org's kept Cost Explorer data.
    slot.text = None;
    let skus = kept.data.as_ref().map_or(0, |d| d.skus.len());
    if kept.status.last_success.is_some() {
        slot.data = kept.data;
    }
    if kept.closed.is_some() {
        *org.closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = kept.closed;
    }
    slot.data.as_ref().map(|_| skus)
}

/// What is kept of `org`'s invoice source as just published (Arcs, no copy), when it runs:
/// its status and last good data, and its closed invoice's items while they can be used (on
/// the 1st, when the last complete day is in their month).
pub(super) fn kept_invoices(
    org: &OrgWorker,
    slot: Option<&InvoiceSlot>,
    now: SystemTime,
) -> Option<InvoiceState> {
    let slot = slot?;
    let today = day_of(now);
    let last_month = month_of_day(today - 1);
    let closed = org
        .closed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .filter(|(m, _)| *m == last_month && last_month != month_of_day(today));
    Some(InvoiceState {
        fingerprint: org.invoice_fingerprint,
        status: KeptSourceStatus {
            up: slot.status.up,
            last_success: slot.status.last_success,
            duration: slot.status.duration,
        },
        data: slot.data.clone(),
        closed,
    })
}

/// The Cost Explorer source's status from its queries' kept ones, which is all a state file
/// keeps of it: when every query of the org came back up with the same last success, that
/// was a refresh in which all of them succeeded, so the source was up then, and that is its
/// last success. Otherwise (a query failed in the last refresh, or did not come back) the
/// source's last full success is not known, and none is claimed.
fn last_full_success(slots: &[Slot]) -> Option<SystemTime> {
    let mut times = slots.iter().map(|s| {
        (s.status.restored && s.status.up)
            .then_some(s.status.last_success)
            .flatten()
    });
    let first = times.next()??;
    times.all(|t| t == Some(first)).then_some(first)
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

    /// The time the kept queries of these tests last succeeded.
    fn success() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
    }

    /// Restores one org whose three default queries were kept with these last successes
    /// (`None`: it never succeeded; its last error is a 503), a query marked `changed` under
    /// another configuration.
    fn restore_three(
        last_success: [Option<SystemTime>; 3],
        changed: [bool; 3],
    ) -> (Arc<SnapshotCell>, Restored) {
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
        let mut key = SeriesKey::default();
        key.set(Label::OrgId, Some(ORG));
        key.set(Label::AtlasService, Some("Clusters"));
        let series = Arc::new(render_sorted([CostSeries {
            query: Arc::from("services"),
            key,
            month,
            micros: 12_500_000,
        }]));
        let kept = |i: usize| QueryState {
            name: specs[i].name.clone(),
            fingerprint: query_fingerprint(&specs[i], &TagLabels::default())
                ^ u64::from(changed[i]),
            status: KeptStatus {
                up: last_success[i].is_some(),
                last_success: last_success[i],
                last_attempt: Some(success()),
                last_error: last_success[i]
                    .is_none()
                    .then(|| "Atlas answered 503".to_owned()),
                invalid_rows: 0,
                shed: 0,
            },
            window: Some((month, month)),
            series: if last_success[i].is_some() {
                series.clone()
            } else {
                Arc::new(Vec::new())
            },
            closed: Vec::new(),
        };
        let state = OrgState {
            org_id: ORG.to_owned(),
            written_at: Some(success()),
            known: crate::state::KnownState::default(),
            queries: (0..3).map(kept).collect(),
            ..OrgState::default()
        };
        let restored = refresher.restore(Loaded {
            orgs: vec![state],
            ..Loaded::default()
        });
        (cell, restored)
    }

    /// A kept query comes back only under its unchanged configuration, with its status and
    /// data; one whose configuration changed comes back with nothing; one that never
    /// succeeded brings back its last error but no data, and holds readiness back. The
    /// source's last full success is then unknown: none is claimed.
    #[tokio::test]
    async fn only_unchanged_queries_come_back_and_only_with_data() {
        let success = success();
        let (cell, restored) =
            restore_three([Some(success), Some(success), None], [false, true, false]);
        assert_eq!(
            (restored.orgs, restored.queries, restored.series),
            (1, 1, 1)
        );
        let source = &cell.load().sources[0];
        assert_eq!(source.source, "cost_explorer");
        assert!(!source.up && source.last_success.is_none(), "{source:?}");
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

    /// Queries kept up with one and the same last success were one refresh in which all of
    /// them succeeded: the Cost Explorer source comes back up with that last success, so
    /// `atlas_cost_source_last_success_timestamp_seconds` is served at once after a restart.
    /// Different last successes (a query failed since) claim none.
    #[tokio::test]
    async fn the_cost_explorer_source_comes_back_with_its_last_full_success() {
        let success = success();
        let (cell, _) = restore_three([Some(success); 3], [false; 3]);
        let snapshot = cell.load();
        let source = &snapshot.sources[0];
        assert_eq!(source.source, "cost_explorer");
        assert!(source.up, "{source:?}");
        assert_eq!(source.last_success, Some(success));
        let earlier = success - Duration::from_secs(3600);
        let (cell, _) = restore_three([Some(success), Some(earlier), Some(success)], [false; 3]);
        let source = &cell.load().sources[0];
        assert!(!source.up && source.last_success.is_none(), "{source:?}");
    }

    fn sku_data() -> crate::invoice::InvoiceData {
        use crate::invoice::{SkuKey, SkuSeries};
        crate::invoice::InvoiceData {
            skus: vec![SkuSeries {
                key: SkuKey {
                    org_id: ORG.to_owned(),
                    project_id: None,
                    project_name: None,
                    cluster_name: None,
                    sku: "ATLAS_SUPPORT".to_owned(),
                    unit: None,
                    cloud_provider: None,
                    tags: Vec::new(),
                },
                month_to_date_micros: 49_000_000,
                quantity_nanos: 1_000_000_000,
                last_day_micros: 0,
            }],
            last_day_start: 1_793_836_800,
            org_month_to_date_micros: [(ORG.to_owned(), 49_000_000)].into_iter().collect(),
            items: 1,
            ..crate::invoice::InvoiceData::default()
        }
    }

    /// A refresher of one org with the invoice source on or off, on the clock `now`.
    fn invoice_refresher(
        on: bool,
        controls: crate::invoice::SkuControls,
        now: SystemTime,
    ) -> (Refresher, Arc<SnapshotCell>) {
        let credentials = Credentials::ServiceAccount {
            client_id: "id".to_owned(),
            client_secret: Secret::new("secret"),
        };
        let mut config = Config::builder("http://127.0.0.1:9")
            .org(ORG, credentials)
            .invoices(on)
            .sku_controls(controls)
            .build();
        config.clock = Arc::new(move || now);
        let cell = Arc::new(SnapshotCell::default());
        let refresher = Refresher::new(&config, Arc::new(SelfMetrics::new("1h")), cell.clone())
            .expect("builds");
        (refresher, cell)
    }

    /// The kept invoice state comes back under the same invoice configuration: its SKU lines
    /// are published at once, the source's status with its old last success, and its closed
    /// items are taken back (the next refresh does not read them again); under other SKU
    /// controls, or with the source off now, nothing of it comes back.
    #[tokio::test]
    async fn the_invoice_state_comes_back_only_under_the_same_invoice_configuration() {
        let success = SystemTime::UNIX_EPOCH + Duration::from_secs(1_793_900_000);
        let october = Month::new(2026, 10).expect("valid");
        let closed: Arc<Vec<crate::invoice::LineItem>> = Arc::new(Vec::new());
        let kept = |fingerprint: u64| OrgState {
            org_id: ORG.to_owned(),
            invoices: Some(InvoiceState {
                fingerprint,
                status: KeptSourceStatus {
                    up: true,
                    last_success: Some(success),
                    duration: Some(Duration::from_millis(420)),
                },
                data: Some(Arc::new(sku_data())),
                closed: Some((october, closed.clone())),
            }),
            ..OrgState::default()
        };
        let line = format!(
            "atlas_cost_sku_month_to_date_usd{{org_id=\"{ORG}\",sku=\"ATLAS_SUPPORT\"}} 49\n"
        );
        let none = crate::invoice::SkuControls::default();
        let (refresher, cell) = invoice_refresher(true, none.clone(), success);
        let fingerprint = refresher.orgs[0].invoice_fingerprint;
        let restored = refresher.restore(Loaded {
            orgs: vec![kept(fingerprint)],
            ..Loaded::default()
        });
        assert_eq!((restored.invoice_orgs, restored.sku_series), (1, 1));
        let snapshot = cell.load();
        let text = String::from_utf8(snapshot.costs.text()).expect("utf-8");
        assert!(text.contains(&line), "{text}");
        let source = snapshot
            .sources
            .iter()
            .find(|s| s.source == "invoices")
            .expect("the invoice source");
        assert!(source.up);
        assert_eq!(source.last_success, Some(success));
        assert_eq!(source.duration, Some(Duration::from_millis(420)));
        let taken = refresher.orgs[0]
            .closed
            .lock()
            .expect("not poisoned")
            .clone();
        assert!(taken.is_some_and(|(m, items)| m == october && Arc::ptr_eq(&items, &closed)));

        let top = crate::invoice::SkuControls {
            top: Some(1),
            ..none.clone()
        };
        for (what, on, controls) in [("other controls", true, top), ("off", false, none)] {
            let (refresher, cell) = invoice_refresher(on, controls, success);
            let restored = refresher.restore(Loaded {
                orgs: vec![kept(fingerprint)],
                ..Loaded::default()
            });
            assert_eq!(
                (restored.invoice_orgs, restored.sku_series),
                (0, 0),
                "{what}"
            );
            let snapshot = cell.load();
            let text = String::from_utf8(snapshot.costs.text()).expect("utf-8");
            assert!(!text.contains("atlas_cost_sku_"), "{what}: {text}");
            assert!(
                snapshot.sources.iter().all(|s| s.last_success.is_none()),
                "{what}"
            );
            assert!(
                refresher.orgs[0]
                    .closed
                    .lock()
                    .expect("not poisoned")
                    .is_none()
            );
        }
    }

    /// What is kept of the invoice source: its status and data as published, and the closed
    /// items only on the 1st of the month after theirs (the one day they are used); nothing
    /// when the source is off.
    #[test]
    fn closed_items_are_kept_only_on_the_day_they_are_used() {
        let day = |d: u64| {
            // 2026-11-01T12:00:00Z, plus days.
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_793_534_400 + (d - 1) * 86_400)
        };
        let october = Month::new(2026, 10).expect("valid");
        let (refresher, _) =
            invoice_refresher(true, crate::invoice::SkuControls::default(), day(1));
        let org = &refresher.orgs[0];
        *org.closed.lock().expect("not poisoned") = Some((october, Arc::new(Vec::new())));
        let slot = InvoiceSlot {
            status: crate::snapshot::SourceStatus {
                up: true,
                last_success: Some(day(1)),
                ..crate::snapshot::SourceStatus::pending("invoices", ORG)
            },
            data: Some(Arc::new(sku_data())),
            text: None,
        };
        let on_the_1st = kept_invoices(org, Some(&slot), day(1)).expect("kept");
        assert_eq!(on_the_1st.fingerprint, org.invoice_fingerprint);
        assert_eq!(on_the_1st.status.last_success, Some(day(1)));
        assert_eq!(on_the_1st.data.as_deref(), Some(&sku_data()));
        assert!(on_the_1st.closed.is_some_and(|(m, _)| m == october));
        let on_the_2nd = kept_invoices(org, Some(&slot), day(2)).expect("kept");
        assert!(on_the_2nd.closed.is_none() && on_the_2nd.data.is_some());
        assert!(
            kept_invoices(org, None, day(1)).is_none(),
            "the source is off"
        );
    }
}
