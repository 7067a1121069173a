//! The exporter's own metrics that count and time things (counters and histograms), kept in a
//! prometheus-client [`Registry`].
//!
//! Gauges that describe a query's state (up, last success, data age, series) are not here:
//! they are read from the published snapshot on each scrape (see [`crate::exposition`]), so
//! they can never disagree with the cost series served beside them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::model::{Endpoint, Reason};

/// Labels of per-query metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// Query name (validated: letters, digits, `_-.`).
    pub query: String,
    /// Org id (validated: 24 hex).
    pub org_id: String,
}

/// Labels of the refresh error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Query name.
    pub query: String,
    /// Org id.
    pub org_id: String,
    /// One of [`Reason::ALL`].
    pub reason: &'static str,
}

/// Labels of the API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of the [`Endpoint`] names.
    pub endpoint: &'static str,
    /// HTTP status code, or `timeout` / `error` when no answer came.
    pub code: String,
}

/// Labels of the API request duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// One of the [`Endpoint`] names.
    pub endpoint: &'static str,
}

/// Labels of the rate-limit gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrgEndpointLabels {
    /// Org id (validated: 24 hex).
    pub org_id: String,
    /// One of the [`Endpoint`] names.
    pub endpoint: &'static str,
}

fn seconds_histogram(buckets: &'static [f64]) -> impl Fn() -> Histogram + Clone {
    move || Histogram::new(buckets.iter().copied())
}

const POLL_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
const REQUEST_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Counters and histograms, with typed handles for the code that records them.
pub struct SelfMetrics {
    registry: Registry,
    /// Query created -> result ready.
    pub poll_latency: Family<QueryLabels, Histogram, fn() -> Histogram>,
    /// One whole query refresh, discovery excluded.
    pub refresh_duration: Family<QueryLabels, Histogram, fn() -> Histogram>,
    /// Polls sent.
    pub polls: Family<QueryLabels, Counter>,
    /// Failed refreshes and skipped rows, by reason.
    pub refresh_errors: Family<ErrorLabels, Counter>,
    /// Requests sent to Atlas.
    pub api_requests: Family<RequestLabels, Counter>,
    /// Duration of requests to Atlas.
    pub api_request_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Series folded into `(other)` by a query's `max_series`, last successful refresh.
    /// A gauge of configured (query, org) pairs only, so no label set can linger.
    pub series_shed: Family<QueryLabels, Gauge>,
    /// What Atlas's `RateLimit-Remaining` said in its last answer that carried it. A series
    /// appears only once Atlas sent the header (Atlas "might not always" send it); label sets
    /// are bounded by the configured orgs times the endpoints.
    pub rate_limit_remaining: Family<OrgEndpointLabels, Gauge>,
}

fn poll_histogram() -> Histogram {
    seconds_histogram(POLL_BUCKETS)()
}

fn request_histogram() -> Histogram {
    seconds_histogram(REQUEST_BUCKETS)()
}

impl SelfMetrics {
    /// Registers every family. `refresh` is the human form of the refresh interval, for HELP.
    pub fn new(refresh: &str) -> SelfMetrics {
        let mut registry = Registry::default();
        let poll_latency =
            Family::<QueryLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                poll_histogram,
            );
        let refresh_duration =
            Family::<QueryLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                poll_histogram,
            );
        let api_request_duration =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                request_histogram,
            );
        let polls = Family::<QueryLabels, Counter>::default();
        let refresh_errors = Family::<ErrorLabels, Counter>::default();
        let api_requests = Family::<RequestLabels, Counter>::default();
        let series_shed = Family::<QueryLabels, Gauge>::default();
        let rate_limit_remaining = Family::<OrgEndpointLabels, Gauge>::default();
        registry.register_with_unit(
            "atlas_cost_query_poll_latency",
            format!("Time from creating a Cost Explorer query to its result being ready (queries run every {refresh})"),
            Unit::Seconds,
            poll_latency.clone(),
        );
        registry.register_with_unit(
            "atlas_cost_query_refresh_duration",
            "Duration of one whole refresh of a query, retries included",
            Unit::Seconds,
            refresh_duration.clone(),
        );
        registry.register(
            "atlas_cost_query_polls",
            "Polls sent for Cost Explorer query results",
            polls.clone(),
        );
        registry.register(
            "atlas_cost_query_refresh_errors",
            "Failed query refreshes and skipped result rows, by reason",
            refresh_errors.clone(),
        );
        registry.register(
            "atlas_cost_api_requests",
            "Requests sent to the Atlas Admin API, by endpoint and HTTP status code",
            api_requests.clone(),
        );
        registry.register_with_unit(
            "atlas_cost_api_request_duration",
            "Duration of requests to the Atlas Admin API, by endpoint",
            Unit::Seconds,
            api_request_duration.clone(),
        );
        registry.register(
            "atlas_cost_query_series_shed",
            "Series of the query folded into (other) series by its max_series control in its last successful refresh (0 without a limit)",
            series_shed.clone(),
        );
        registry.register(
            "atlas_cost_api_rate_limit_remaining",
            "Requests left in the Atlas rate limit, as the RateLimit-Remaining header of the last answer that carried one said, by org and endpoint (no series until Atlas sent the header)",
            rate_limit_remaining.clone(),
        );
        SelfMetrics {
            registry,
            rate_limit_remaining,
            series_shed,
            poll_latency,
            refresh_duration,
            polls,
            refresh_errors,
            api_requests,
            api_request_duration,
        }
    }

    /// Creates every per-query series at zero, so `rate()` and `increase()` work from the first
    /// error on, and every self metric is visible from the first scrape.
    pub fn init_query(&self, query: &str, org_id: &str) {
        let labels = QueryLabels {
            query: query.to_owned(),
            org_id: org_id.to_owned(),
        };
        let _ = self.polls.get_or_create(&labels);
        let _ = self.poll_latency.get_or_create(&labels);
        let _ = self.refresh_duration.get_or_create(&labels);
        let _ = self.series_shed.get_or_create(&labels);
        for reason in Reason::ALL {
            let _ = self.refresh_errors.get_or_create(&ErrorLabels {
                query: query.to_owned(),
                org_id: org_id.to_owned(),
                reason: reason.as_str(),
            });
        }
    }

    /// Creates the request duration series of every endpoint.
    pub fn init_endpoints(&self) {
        for endpoint in Endpoint::ALL {
            let _ = self.api_request_duration.get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            });
        }
    }

    /// Sets how many series a query's series limit folded in its last successful refresh.
    pub fn set_series_shed(&self, query: &str, org_id: &str, shed: u64) {
        self.series_shed
            .get_or_create(&QueryLabels {
                query: query.to_owned(),
                org_id: org_id.to_owned(),
            })
            .set(i64::try_from(shed).unwrap_or(i64::MAX));
    }

    /// Records what `RateLimit-Remaining` said on an answer from `endpoint` for `org_id`.
    pub fn set_rate_limit_remaining(&self, org_id: &str, endpoint: Endpoint, remaining: u64) {
        self.rate_limit_remaining
            .get_or_create(&OrgEndpointLabels {
                org_id: org_id.to_owned(),
                endpoint: endpoint.as_str(),
            })
            .set(i64::try_from(remaining).unwrap_or(i64::MAX));
    }

    /// Counts one failure (or skipped rows) of a query.
    pub fn count_error(&self, query: &str, org_id: &str, reason: Reason, n: u64) {
        self.refresh_errors
            .get_or_create(&ErrorLabels {
                query: query.to_owned(),
                org_id: org_id.to_owned(),
                reason: reason.as_str(),
            })
            .inc_by(n);
    }

    /// Appends the OpenMetrics text of every family (no `# EOF`).
    ///
    /// # Errors
    /// Only if writing to the `String` fails, which it does not.
    pub fn encode_openmetrics(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }
}
