//! The sources an org's refresh runs, behind one interface (node_exporter's collectors are
//! the model): a source has a name, refreshes one org and returns its typed data or a
//! [`Reason`] and a message. The refresher, not the source, times each one and records its
//! up, errors by reason, duration and last success per org ([`SourceStatus`]), keeps its
//! last good data and publishes it; the exposition lays out what the sources published.
//!
//! - [`Source::CostExplorer`]: the org's Cost Explorer queries (`collect` and its helpers);
//! - [`Source::Invoices`]: the pending and closed invoices (`invoices`), when enabled.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::cost_explorer::QueryData;
use super::{OrgWorker, Refresher};
use crate::config::OrgConfig;
use crate::invoice::InvoiceData;
use crate::model::Reason;
use crate::month::Month;
use crate::snapshot::SourceStatus;

/// A source of an org's cost data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// The Cost Explorer queries.
    CostExplorer,
    /// The invoices (issue 22).
    Invoices,
}

/// What one refresh of a source came to.
pub(super) enum Refreshed {
    /// Each query's outcome, in configuration order.
    CostExplorer(Vec<Result<QueryData, (Reason, String)>>),
    /// The invoice data, or why not.
    Invoices(Result<InvoiceData, (Reason, String)>),
}

/// What the sources of an org need from the refresh that runs them.
pub(super) struct Context<'a> {
    /// The refresh's clock reading.
    pub(super) now: SystemTime,
    /// The months each query held data for.
    pub(super) held: &'a [BTreeSet<Month>],
    /// The invoice source's last good data.
    pub(super) previous_invoices: Option<Arc<InvoiceData>>,
}

impl Source {
    /// The `source` label value.
    pub(super) const fn name(self) -> &'static str {
        match self {
            Source::CostExplorer => "cost_explorer",
            Source::Invoices => "invoices",
        }
    }

    /// The sources an org runs: the Cost Explorer always, the invoices when enabled.
    pub(super) fn of(org: &OrgConfig) -> Vec<Source> {
        let mut out = vec![Source::CostExplorer];
        if org.invoices {
            out.push(Source::Invoices);
        }
        out
    }
}

impl Refreshed {
    /// Why the refresh failed, once per failure (a Cost Explorer query each); empty when it
    /// succeeded.
    pub(super) fn failures(&self) -> Vec<Reason> {
        match self {
            Refreshed::CostExplorer(outcomes) => outcomes
                .iter()
                .filter_map(|o| o.as_ref().err().map(|(r, _)| *r))
                .collect(),
            Refreshed::Invoices(outcome) => outcome
                .as_ref()
                .err()
                .map(|(r, _)| *r)
                .into_iter()
                .collect(),
        }
    }
}

impl Refresher {
    /// Runs `source` for `org`, timed.
    pub(super) async fn run_source(
        &self,
        source: Source,
        org: &OrgWorker,
        ctx: &Context<'_>,
    ) -> (Refreshed, Duration) {
        let started = std::time::Instant::now();
        let refreshed = match source {
            Source::CostExplorer => {
                Refreshed::CostExplorer(self.refresh_org(org, ctx.now, ctx.held).await)
            }
            Source::Invoices => Refreshed::Invoices(
                self.refresh_invoices(org, ctx.now, ctx.previous_invoices.as_deref())
                    .await,
            ),
        };
        (refreshed, started.elapsed())
    }
}

/// Records a source's refresh in its status, and counts its failures.
pub(super) fn record(
    status: &mut SourceStatus,
    refreshed: &Refreshed,
    took: Duration,
    finished: SystemTime,
    metrics: &crate::metrics::SelfMetrics,
) {
    let failures = refreshed.failures();
    status.up = failures.is_empty();
    status.duration = Some(took);
    if status.up {
        status.last_success = Some(finished);
    }
    for reason in failures {
        metrics.count_source_error(status.source, &status.org_id, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refresher records every source alike: a success sets up, the duration and the
    /// last success; a failure clears up, keeps the last success and counts one error per
    /// failure by reason (a Cost Explorer refresh with two failing queries counts two).
    #[test]
    fn a_refresh_is_recorded_the_same_way_for_every_source() {
        let metrics = crate::metrics::SelfMetrics::new("1h");
        let org = "5f1b2c3d4e5f6a7b8c9d0e1f";
        let mut status = SourceStatus::pending(Source::Invoices.name(), org);
        let t1 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let ok = Refreshed::Invoices(Ok(InvoiceData::default()));
        record(&mut status, &ok, Duration::from_millis(30), t1, &metrics);
        assert!(status.up);
        assert_eq!(status.last_success, Some(t1));
        assert_eq!(status.duration, Some(Duration::from_millis(30)));
        let failed = Refreshed::Invoices(Err((Reason::ServerError, "HTTP 500".into())));
        record(
            &mut status,
            &failed,
            Duration::from_millis(5),
            t1 + Duration::from_secs(60),
            &metrics,
        );
        assert!(!status.up);
        assert_eq!(status.last_success, Some(t1), "the last success stays");
        let ce = Refreshed::CostExplorer(vec![
            Err((Reason::Timeout, "a".into())),
            Err((Reason::Timeout, "b".into())),
        ]);
        assert_eq!(ce.failures(), [Reason::Timeout, Reason::Timeout]);
        let mut text = String::new();
        metrics.encode_openmetrics(&mut text).expect("encoded");
        assert!(
            text.contains(&format!(
                "atlas_cost_source_errors_total{{source=\"invoices\",org_id=\"{org}\",reason=\"server_error\"}} 1"
            )),
            "{text}"
        );
    }
}
