//! The exporter's own metrics that count and time things (counters and histograms), kept in a
//! prometheus-client [`Registry`].
//!
//! Gauges that describe a query's state (up, last success, data age, series) are not here:
//! they are read from the published snapshot on each scrape (see [`crate::exposition`]), so
//! they can never disagree with the cost series served beside them.
//!
//! Every change goes through a method here, which also bumps a change counter
//! ([`SelfMetrics::version`]): a scrape can reuse an encoding of the self metrics only while
//! the counter has not moved (see [`crate::exposition::ScrapeCache`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Labels of the per-source error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceErrorLabels {
    /// The source's name (`cost_explorer`, `invoices`).
    pub source: &'static str,
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
const STATE_WRITE_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
const REQUEST_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Counters and histograms, with typed handles for the code that records them.
pub struct SelfMetrics {
    registry: Registry,
    /// Query created -> result ready.
    poll_latency: Family<QueryLabels, Histogram, fn() -> Histogram>,
    /// One whole query refresh, discovery excluded.
    refresh_duration: Family<QueryLabels, Histogram, fn() -> Histogram>,
    /// Polls sent.
    polls: Family<QueryLabels, Counter>,
    /// Failed refreshes and skipped rows, by reason.
    refresh_errors: Family<ErrorLabels, Counter>,
    /// Requests sent to Atlas.
    api_requests: Family<RequestLabels, Counter>,
    /// Failed refreshes of a source of an org, by reason.
    source_errors: Family<SourceErrorLabels, Counter>,
    /// Duration of requests to Atlas.
    api_request_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Series folded into `(other)` by a query's `max_series`, last successful refresh.
    /// A gauge of configured (query, org) pairs only, so no label set can linger.
    series_shed: Family<QueryLabels, Gauge>,
    /// What Atlas's `RateLimit-Remaining` said in its last answer that carried it. A series
    /// appears only once Atlas sent the header (Atlas "might not always" send it); label sets
    /// are bounded by the configured orgs times the endpoints.
    rate_limit_remaining: Family<OrgEndpointLabels, Gauge>,
    /// The state directory's families, with `--storage.path` only.
    state: Option<StateFamilies>,
    /// Bumped after every change to any family.
    version: AtomicU64,
}

/// What the state kept in `--storage.path` costs and whether it is written.
struct StateFamilies {
    /// Writes of an org's state file, successful or not.
    writes: Counter,
    /// Writes that failed (the previous file stays).
    failures: Counter,
    /// Encoding and writing one org's file, fsyncs included.
    duration: Histogram,
    /// Bytes of the state files, as last written or read.
    bytes: Gauge,
    /// Files that could not be used at start-up, set aside.
    set_aside: Counter,
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
        let source_errors = Family::<SourceErrorLabels, Counter>::default();
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
            "atlas_cost_source_errors",
            "Failed refreshes of a source (cost_explorer: any of its queries; invoices) of an org, by reason",
            source_errors.clone(),
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
            source_errors,
            api_request_duration,
            state: None,
            version: AtomicU64::new(0),
        }
    }

    /// Registers the families of the state kept in `--storage.path` (absent without it).
    pub fn enable_state(&mut self) {
        let families = StateFamilies {
            writes: Counter::default(),
            failures: Counter::default(),
            duration: Histogram::new(STATE_WRITE_BUCKETS.iter().copied()),
            bytes: Gauge::default(),
            set_aside: Counter::default(),
        };
        self.registry.register(
            "atlas_cost_state_writes",
            "Writes of an org's state file to --storage.path, one after each publication of the org's refresh, successful or not",
            families.writes.clone(),
        );
        self.registry.register(
            "atlas_cost_state_write_failures",
            "Writes of an org's state file that failed (disk full, I/O error); the previous file stays, serving and refreshing go on",
            families.failures.clone(),
        );
        self.registry.register_with_unit(
            "atlas_cost_state_write_duration",
            "Time to encode and write one org's state file, fsyncs included",
            Unit::Seconds,
            families.duration.clone(),
        );
        self.registry.register_with_unit(
            "atlas_cost_state",
            "Size of the state files in --storage.path, as last written (or read at start-up)",
            Unit::Bytes,
            families.bytes.clone(),
        );
        self.registry.register(
            "atlas_cost_state_files_set_aside",
            "State files that could not be used at start-up (truncated, garbled, unknown or newer format) and were renamed aside, or whose invoice part alone could not be used and were copied aside",
            families.set_aside.clone(),
        );
        self.state = Some(families);
        self.changed();
    }

    /// Records one write of an org's state file.
    pub fn state_written(&self, ok: bool, took: Duration) {
        if let Some(s) = &self.state {
            s.writes.inc();
            if !ok {
                s.failures.inc();
            }
            s.duration.observe(took.as_secs_f64());
            self.changed();
        }
    }

    /// Sets the size of the state files.
    pub fn set_state_bytes(&self, bytes: u64) {
        if let Some(s) = &self.state {
            s.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            self.changed();
        }
    }

    /// Counts state files set aside at start-up.
    pub fn count_state_set_aside(&self, n: u64) {
        if let Some(s) = &self.state {
            s.set_aside.inc_by(n);
            self.changed();
        }
    }

    /// A counter that moves after every change to the self metrics: two equal readings mean
    /// nothing was recorded in between (an encoding taken after the first is still exact).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Marks a change, after it was made.
    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Counts one poll for a query's result.
    pub fn count_poll(&self, labels: &QueryLabels) {
        self.polls.get_or_create(labels).inc();
        self.changed();
    }

    /// Records the time from creating a query to its result being ready.
    pub fn observe_poll_latency(&self, labels: &QueryLabels, latency: Duration) {
        self.poll_latency
            .get_or_create(labels)
            .observe(latency.as_secs_f64());
        self.changed();
    }

    /// Records one whole refresh of a query.
    pub fn observe_refresh_duration(&self, query: &str, org_id: &str, took: Duration) {
        self.refresh_duration
            .get_or_create(&QueryLabels {
                query: query.to_owned(),
                org_id: org_id.to_owned(),
            })
            .observe(took.as_secs_f64());
        self.changed();
    }

    /// Counts one request to Atlas and records its duration; `code` is the HTTP status, or
    /// `timeout`, `too_large` or `error` when no usable answer came.
    pub fn count_request(&self, endpoint: Endpoint, code: String, took: Duration) {
        self.api_requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                code,
            })
            .inc();
        self.api_request_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(took.as_secs_f64());
        self.changed();
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
        self.changed();
    }

    /// Creates the error series of a source of an org at zero, every reason.
    pub fn init_source(&self, source: &'static str, org_id: &str) {
        for reason in Reason::ALL {
            let _ = self.source_errors.get_or_create(&SourceErrorLabels {
                source,
                org_id: org_id.to_owned(),
                reason: reason.as_str(),
            });
        }
        self.changed();
    }

    /// Counts one failed refresh of a source of an org.
    pub fn count_source_error(&self, source: &'static str, org_id: &str, reason: Reason) {
        self.source_errors
            .get_or_create(&SourceErrorLabels {
                source,
                org_id: org_id.to_owned(),
                reason: reason.as_str(),
            })
            .inc();
        self.changed();
    }

    /// Creates the request duration series of the invoice source's endpoints (only where
    /// it runs).
    pub fn init_invoice_endpoints(&self) {
        for endpoint in Endpoint::INVOICES {
            let _ = self.api_request_duration.get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            });
        }
        self.changed();
    }

    /// Creates the request duration series of every endpoint.
    pub fn init_endpoints(&self) {
        for endpoint in Endpoint::ALL {
            let _ = self.api_request_duration.get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            });
        }
        self.changed();
    }

    /// Sets how many series a query's series limit folded in its last successful refresh.
    pub fn set_series_shed(&self, query: &str, org_id: &str, shed: u64) {
        self.series_shed
            .get_or_create(&QueryLabels {
                query: query.to_owned(),
                org_id: org_id.to_owned(),
            })
            .set(i64::try_from(shed).unwrap_or(i64::MAX));
        self.changed();
    }

    /// Records what `RateLimit-Remaining` said on an answer from `endpoint` for `org_id`.
    pub fn set_rate_limit_remaining(&self, org_id: &str, endpoint: Endpoint, remaining: u64) {
        self.rate_limit_remaining
            .get_or_create(&OrgEndpointLabels {
                org_id: org_id.to_owned(),
                endpoint: endpoint.as_str(),
            })
            .set(i64::try_from(remaining).unwrap_or(i64::MAX));
        self.changed();
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
        self.changed();
    }

    /// Appends the OpenMetrics text of every family (no `# EOF`).
    ///
    /// # Errors
    /// Only if writing to the `String` fails, which it does not.
    pub fn encode_openmetrics(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of recording a self metric moves the change counter, so a shared encoding
    /// of the self metrics is never served after a change.
    #[test]
    fn every_recording_moves_the_version() {
        let m = SelfMetrics::new("1h");
        let labels = QueryLabels {
            query: "q".to_owned(),
            org_id: "5f1b2c3d4e5f6a7b8c9d0e1f".to_owned(),
        };
        let mut m = m;
        m.enable_state();
        let record: [&dyn Fn(); 12] = [
            &|| m.state_written(false, Duration::from_millis(3)),
            &|| m.set_state_bytes(1234),
            &|| m.count_state_set_aside(1),
            &|| m.init_query("q", "5f1b2c3d4e5f6a7b8c9d0e1f"),
            &|| m.init_endpoints(),
            &|| m.set_series_shed("q", "5f1b2c3d4e5f6a7b8c9d0e1f", 3),
            &|| m.set_rate_limit_remaining("5f1b2c3d4e5f6a7b8c9d0e1f", Endpoint::ALL[0], 9),
            &|| m.count_error("q", "5f1b2c3d4e5f6a7b8c9d0e1f", Reason::ALL[0], 1),
            &|| m.count_poll(&labels),
            &|| m.observe_poll_latency(&labels, Duration::from_secs(2)),
            &|| m.observe_refresh_duration("q", "5f1b2c3d4e5f6a7b8c9d0e1f", Duration::from_secs(3)),
            &|| m.count_request(Endpoint::ALL[0], "200".to_owned(), Duration::from_millis(5)),
        ];
        for (i, record) in record.iter().enumerate() {
            let before = m.version();
            record();
            assert!(m.version() > before, "recording #{i} moved the version");
        }
        let mut text = String::new();
        m.encode_openmetrics(&mut text).expect("encodes");
        for line in [
            "atlas_cost_state_writes_total 1",
            "atlas_cost_state_write_failures_total 1",
            "atlas_cost_state_bytes 1234",
            "atlas_cost_state_files_set_aside_total 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let before = m.version();
        m.encode_openmetrics(&mut text).expect("encodes");
        assert_eq!(m.version(), before, "encoding records nothing");
    }

    /// Without `--storage.path` no state family is exported, and recording one is a no-op.
    #[test]
    fn state_families_exist_only_with_a_state_directory() {
        let m = SelfMetrics::new("1h");
        m.state_written(true, Duration::from_millis(1));
        m.set_state_bytes(5);
        m.count_state_set_aside(1);
        let mut text = String::new();
        m.encode_openmetrics(&mut text).expect("encodes");
        assert!(!text.contains("atlas_cost_state"), "{text}");
    }
}
