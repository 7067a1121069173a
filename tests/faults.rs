//! The fault matrix: for each fault the simulator injects, the exporter keeps serving the last
//! good values, shows the fault in `atlas_cost_query_up` and the error counter with the right
//! `reason`, and recovers by itself once the fault clears.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use atlas_cost_exporter::config::{Config, Credentials, GroupBy, QuerySpec, ResultFormat};
use atlas_cost_exporter::month::Month;
use atlas_cost_exporter::simulator::{Fault, SimConfig, SimEndpoint};
use common::*;

/// A one-org simulator (`sim_config` otherwise) and the [`fast`] exporter with the three
/// default queries over two months, once ready.
async fn rig(
    sim_config: SimConfig,
    credentials: &Credentials,
    tweak: impl FnOnce(&mut Config),
) -> Harness {
    let rig = Harness::fast_one_org(sim_config, credentials, &QuerySpec::defaults(2), tweak).await;
    rig.exporter.wait_ready().await;
    rig
}

/// [`rig`] with the default simulator and the demo service account.
async fn default_rig() -> Harness {
    rig(SimConfig::default(), &service_account(), |_| {}).await
}

// The steps of the fault matrix.
impl Harness {
    /// Injects a fault with `inject`, checks that `query` goes down with `reason` while its
    /// last good values stay, then clears the fault and checks that it comes back.
    async fn fault_cycle(&self, query: &str, reason: &str, inject: impl FnOnce(&Harness)) {
        self.fault_cycle_then(query, reason, inject, |r| r.sim.sim.clear_faults())
            .await;
    }

    /// [`Harness::fault_cycle`] for each of `faults` in turn, injected on `endpoint`.
    async fn fault_cycles(
        &self,
        query: &str,
        reason: &str,
        endpoint: SimEndpoint,
        faults: impl IntoIterator<Item = Fault>,
    ) {
        for fault in faults {
            self.fault_cycle(query, reason, |r| r.sim.sim.fail(endpoint, fault))
                .await;
        }
    }

    /// [`Harness::fault_cycle`] with a custom way to clear the fault.
    async fn fault_cycle_then(
        &self,
        query: &str,
        reason: &str,
        inject: impl FnOnce(&Harness),
        clear: impl FnOnce(&Harness),
    ) {
        let org = self.org.as_str();
        let before = self
            .exporter
            .wait_for(&format!("{query} up before the fault"), |s| {
                s.up(query, org) == Some(1.0)
            })
            .await;
        let good = before.costs(query);
        assert!(!good.is_empty(), "{query} has data before the fault");
        let errors_before = before.errors(query, org, reason);
        inject(self);
        let failing = self
            .exporter
            .wait_for(&format!("{query} down with reason {reason}"), |s| {
                s.up(query, org) == Some(0.0) && s.errors(query, org, reason) > errors_before
            })
            .await;
        assert_eq!(
            failing.costs(query),
            good,
            "{reason}: the last good values are served"
        );
        assert!(
            failing
                .value(
                    "atlas_cost_query_data_age_seconds",
                    &[("query", query), ("org_id", org)]
                )
                .is_some(),
            "{reason}: the data age is shown"
        );
        clear(self);
        let recovered = self
            .exporter
            .wait_for(&format!("{query} up again after {reason}"), |s| {
                s.up(query, org) == Some(1.0)
            })
            .await;
        assert_eq!(
            recovered.costs(query),
            good,
            "{reason}: same data after recovery"
        );
    }
}

/// Which query a fault on each endpoint takes down.
fn query_hit_by(endpoint: SimEndpoint) -> &'static str {
    match endpoint {
        SimEndpoint::Projects => "projects",
        SimEndpoint::Clusters | SimEndpoint::FlexClusters => "clusters",
        SimEndpoint::Token | SimEndpoint::Create | SimEndpoint::Poll => "services",
        // The invoice source takes down no query (tests/invoices.rs covers its faults).
        SimEndpoint::PendingInvoices | SimEndpoint::Invoices | SimEndpoint::LineItems => "",
    }
}

async fn server_errors_on(endpoint: SimEndpoint) {
    // Short-lived OAuth tokens, so the token endpoint is called on every refresh.
    let rig = rig(
        SimConfig {
            token_expires_in: 1,
            ..SimConfig::default()
        },
        &service_account(),
        |_| {},
    )
    .await;
    let codes = [500, 502, 503, 504].map(Fault::Status);
    rig.fault_cycles(query_hit_by(endpoint), "server_error", endpoint, codes)
        .await;
    rig.exporter.stop().await;
}

/// One test per endpoint: `name: Endpoint`, with its doc comment.
macro_rules! server_error_tests {
    ($($(#[doc = $doc:literal])* $name:ident: $endpoint:ident;)*) => {$(
        $(#[doc = $doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            server_errors_on(SimEndpoint::$endpoint).await;
        }
    )*};
}

server_error_tests! {
    /// 500, 502, 503 and 504 from the token endpoint.
    server_errors_on_token: Token;
    /// 500, 502, 503 and 504 from the create call.
    server_errors_on_create: Create;
    /// 500, 502, 503 and 504 from the poll call.
    server_errors_on_poll: Poll;
    /// 500, 502, 503 and 504 from project discovery: only the queries that need ids go down.
    server_errors_on_projects: Projects;
    /// 500, 502, 503 and 504 from cluster discovery.
    server_errors_on_clusters: Clusters;
}

/// A 429 with `Retry-After` holds every request to that org until the named time, and the
/// query shows `reason="rate_limited"` until the limit lifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_with_retry_after_holds_the_org() {
    let rig = default_rig().await;
    let mut injected = std::time::Instant::now();
    let mut cleared = injected;
    rig.fault_cycle_then(
        "services",
        "rate_limited",
        |r| {
            injected = std::time::Instant::now();
            r.sim.sim.fail(
                SimEndpoint::Create,
                Fault::RateLimited {
                    retry_after: Some(1),
                },
            );
        },
        |r| {
            cleared = std::time::Instant::now();
            r.sim.sim.clear_faults();
        },
    )
    .await;
    let org_requests: Vec<_> = rig
        .sim
        .sim
        .request_log()
        .into_iter()
        .filter(|r| {
            r.org_id.as_deref() == Some(rig.org.as_str()) && r.at > injected && r.at < cleared
        })
        .collect();
    let limited: Vec<_> = org_requests
        .iter()
        .filter(|r| r.endpoint == SimEndpoint::Create)
        .collect();
    assert!(limited.len() >= 2, "several creates met the 429");
    // Each create was answered 429 with Retry-After: 1, and each of the org's three queries
    // then waits at least that second before it creates again: at most three creates a
    // second (the exact timing is unit-tested on the gate with a paused clock).
    let span = limited[limited.len() - 1].at - limited[0].at;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bound = 3 * (span.as_secs_f64().ceil() as usize + 1);
    assert!(
        limited.len() <= bound,
        "{} creates in {span:?} despite Retry-After: 1",
        limited.len()
    );
    rig.exporter.stop().await;
}

/// A `Retry-After` longer than the query deadline ends the refresh at once with
/// `reason="rate_limited"`, and no request goes to the org while it holds, refresh after
/// refresh; the other org is not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_retry_after_holds_the_org_across_refreshes() {
    let sim = start_sim(with_orgs(2)).await;
    let (held, free) = (sim.org(0), sim.org(1));
    let exporter = sim.fast_exporter(&[services()]).ready().await;
    sim.sim.fail_with(
        SimEndpoint::Create,
        Fault::RateLimited {
            retry_after: Some(3600),
        },
        Some(&held),
        None,
    );
    let (before, free_before) = (sim.creates_to(&held), sim.creates_to(&free));
    let s = assert_held_by_retry_after(&sim, &exporter, &held, before).await;
    assert_eq!(s.up("services", &free), Some(1.0));
    assert!(
        sim.creates_to(&free) > free_before + 2,
        "the other org keeps refreshing"
    );
    exporter.stop().await;
}

/// A 429 without `Retry-After` (but with `RateLimit-*` headers) is retried with backoff and
/// shows as `rate_limited`; it recovers once Atlas stops limiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_without_retry_after() {
    let rig = default_rig().await;
    for endpoint in [SimEndpoint::Create, SimEndpoint::Poll] {
        let limited = Fault::RateLimited { retry_after: None };
        rig.fault_cycles("services", "rate_limited", endpoint, [limited])
            .await;
    }
    rig.exporter.stop().await;
}

/// A revoked OAuth token is renewed once for all the org's queries, not once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_renewed_once() {
    let rig = default_rig().await;
    let org = rig.org.clone();
    assert_eq!(
        rig.sim.sim.requests(SimEndpoint::Token),
        1,
        "one token serves every refresh"
    );
    let polls = |s: &Samples| {
        s.value("atlas_cost_query_polls_total", &[("query", "clusters")])
            .unwrap_or(0.0)
    };
    let p0 = polls(&rig.exporter.samples().await);
    // Every query of the next refresh meets a 401 with the old token at once.
    rig.sim.sim.revoke_tokens();
    let after = rig
        .exporter
        .wait_for("two more refreshes", |s| {
            polls(s) >= p0 + 6.0 && s.up("clusters", &org) == Some(1.0)
        })
        .await;
    for q in ["services", "projects", "clusters"] {
        assert_eq!(after.errors(q, &org, "auth"), 0.0, "{q}");
    }
    assert_eq!(
        rig.sim.sim.requests(SimEndpoint::Token),
        2,
        "one renewal, not a storm"
    );
    rig.exporter.stop().await;
}

/// The token endpoint itself answering 429 shows as `rate_limited` and recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_rate_limited() {
    let rig = rig(
        SimConfig {
            token_expires_in: 1,
            ..SimConfig::default()
        },
        &service_account(),
        |_| {},
    )
    .await;
    rig.fault_cycle("services", "rate_limited", |r| {
        r.sim.sim.fail(
            SimEndpoint::Token,
            Fault::RateLimited {
                retry_after: Some(1),
            },
        );
    })
    .await;
    rig.exporter.stop().await;
}

/// A stale Digest nonce (`stale=true`) is answered with the new nonce: no `auth` error over
/// many refreshes with nonces that expire between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_digest_nonce_is_not_bad_credentials() {
    let rig = rig(
        SimConfig {
            nonce_ttl: Duration::from_millis(100),
            ..SimConfig::default()
        },
        &api_key(),
        |_| {},
    )
    .await;
    let org = rig.org.clone();
    let polls = |s: &Samples| {
        s.value("atlas_cost_query_polls_total", &[("query", "services")])
            .unwrap_or(0.0)
    };
    let p0 = polls(&rig.exporter.samples().await);
    let s = rig
        .exporter
        .wait_for("several refreshes", |s| polls(s) >= p0 + 9.0)
        .await;
    for q in ["services", "projects", "clusters"] {
        assert_eq!(s.errors(q, &org, "auth"), 0.0, "{q}");
        assert_eq!(s.up(q, &org), Some(1.0), "{q}");
    }
    rig.exporter.stop().await;
}

/// A wrong API key fails with one clear `auth` error per query refresh: a challenge and at
/// most two answers (a fresh challenge after an answer is answered once more), no retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_fails_without_hammering() {
    let (Harness { sim, exporter, org }, s) =
        Harness::wrong_api_key_failing(SimConfig::default()).await;
    let creates = sim.sim.requests(SimEndpoint::Create);
    // Failures counted after the creates: 3 creates for the first refresh, 2 for each later
    // one, and at most 2 of a refresh still under way, so at most 3 per failure from 3 on.
    let failures = exporter.samples().await.errors("services", &org, "auth");
    #[allow(clippy::cast_precision_loss)]
    let per_failure = creates as f64 / failures;
    assert!(
        per_failure <= 3.0,
        "{creates} create requests for {failures} failed refreshes"
    );
    assert_eq!(s.up("services", &org), Some(0.0));
    exporter.stop().await;
}

/// Polls that stay "not ready" past the query deadline end with `reason="deadline"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_not_ready_past_the_deadline() {
    let rig = rig(SimConfig::default(), &service_account(), |c| {
        c.query_timeout = Duration::from_secs(1);
    })
    .await;
    rig.fault_cycle_then(
        "services",
        "deadline",
        |r| r.sim.sim.set_polls_before_ready(u32::MAX),
        |r| r.sim.sim.set_polls_before_ready(2),
    )
    .await;
    rig.exporter.stop().await;
}

/// A poll answered 404 or 400 (Atlas forgot the token) creates the query again, within the
/// deadline, and the refresh succeeds with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_query_token_is_created_again() {
    let rig = rig(SimConfig::default(), &service_account(), |c| {
        c.refresh_interval = Duration::from_secs(1);
    })
    .await;
    let org = rig.org.clone();
    for status in [404, 400] {
        let creates = rig.sim.sim.requests(SimEndpoint::Create);
        let polls = |s: &Samples| {
            s.value("atlas_cost_query_polls_total", &[("query", "services")])
                .unwrap_or(0.0)
        };
        let p0 = polls(&rig.exporter.samples().await);
        rig.sim.sim.fail_with(
            SimEndpoint::Poll,
            Fault::Status(status),
            Some(&org),
            Some(1),
        );
        let s = rig
            .exporter
            .wait_for("a refresh past the expired token", |s| polls(s) >= p0 + 8.0)
            .await;
        for q in ["services", "projects", "clusters"] {
            assert_eq!(s.up(q, &org), Some(1.0), "{status}: {q}");
            assert_eq!(s.errors(q, &org, "client_error"), 0.0, "{status}: {q}");
        }
        assert!(
            rig.sim.sim.requests(SimEndpoint::Create) >= creates + 4,
            "{status}: the query was created again"
        );
    }
    rig.exporter.stop().await;
}

/// Late headers and a trickling body hit the request timeout (`reason="timeout"`); the refresh
/// does not hang, and the next one succeeds once Atlas is fast again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out() {
    let rig = default_rig().await;
    let slow = [
        Fault::Delay(Duration::from_secs(3)),
        Fault::Trickle(Duration::from_millis(100)),
    ];
    rig.fault_cycles("services", "timeout", SimEndpoint::Create, slow)
        .await;
    rig.exporter.stop().await;
}

/// A connection reset in the middle of a body shows as `reason="transport"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_mid_body() {
    let rig = default_rig().await;
    rig.fault_cycle("services", "transport", |r| {
        r.sim.sim.fail(SimEndpoint::Create, Fault::ResetMidBody)
    })
    .await;
    rig.exporter.stop().await;
}

/// A resolver that fails every lookup, as DNS does when it is down.
struct FailingDns;

impl reqwest::dns::Resolve for FailingDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_owned();
        Box::pin(async move {
            Err::<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>>(
                format!("simulated DNS failure for {name}").into(),
            )
        })
    }
}

/// A DNS failure shows as `reason="transport"` and names the failure in the landing page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_failure_is_a_transport_error() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let exporter = sim
        .fast_exporter(&[services()])
        .tweak(|c| {
            c.base_url = "http://atlas.example.test".to_owned();
            c.resolver = Some(Arc::new(FailingDns));
        })
        .ready()
        .await;
    let s = exporter.samples().await;
    assert_eq!(s.up("services", &org), Some(0.0));
    assert!(s.errors("services", &org, "transport") >= 1.0);
    let landing = exporter.get("/", &[]).await.text().await.unwrap();
    assert!(landing.contains("simulated DNS failure"), "{landing}");
    exporter.stop().await;
}

/// A refused connection shows as `reason="transport"`; when Atlas comes up on that address,
/// the exporter recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_then_recovery() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sim = atlas_cost_exporter::simulator::Simulator::new(SimConfig {
        orgs: 1,
        ..SimConfig::default()
    });
    let org = sim.dataset().orgs[0].id.clone();
    let cfg = fast(
        &format!("http://{addr}"),
        orgs(&sim, &service_account(), &[services()]),
    );
    let exporter = Exporter::start(cfg).await;
    exporter.wait_ready().await;
    let s = exporter
        .wait_for_errors("services", &org, "transport", 1.0)
        .await;
    assert_eq!(s.up("services", &org), Some(0.0));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(sim.clone().serve(listener, std::future::pending()));
    exporter
        .wait_for("recovery", |s| {
            s.up("services", &org) == Some(1.0) && !s.costs("services").is_empty()
        })
        .await;
    exporter.stop().await;
}

/// Bodies that are not a result (truncated, invalid, wrong-shaped JSON, HTML, a CSV without an
/// amount column) fail the refresh with `reason="decode"` and keep the last good values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bodies_fail_with_decode() {
    let rig = default_rig().await;
    let bad = [
        body_fault(200, JSON, r#"{"usageDetails":[{"usageAmount":1.5,"usageDa"#),
        body_fault(200, JSON, "{usageDetails: nope}"),
        body_fault(200, JSON, r#"{"results":[{"id":"x"}],"totalCount":1}"#),
        body_fault(
            200,
            JSON,
            r#"{"status":200,"content":{"something":"else"}}"#,
        ),
        body_fault(
            200,
            "text/html",
            "<html><body><h1>Service Unavailable</h1></body></html>",
        ),
        Fault::Html(200),
    ];
    rig.fault_cycles("services", "decode", SimEndpoint::Poll, bad)
        .await;
    rig.exporter.stop().await;
}

/// Rows whose amount is text, null or NaN are skipped and counted as
/// `invalid_row`; the valid rows (a numeric string, a negative amount) are served and unknown
/// fields are ignored. An empty result where the same months held data, and a result whose
/// rows are all invalid, are `decode` failures that keep the last good data: emptiness is
/// never published as success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_rows_are_counted_not_invented() {
    let rig = default_rig().await;
    let org = rig.org.clone();
    let current = rig.sim.sim.current_month();
    let row = |amount: &str, service: &str, month: Month| {
        format!(
            r#"{{"organizationId":"{org}","service":"{service}","usageAmount":{amount},"usageDate":"{}","surprise":{{"x":[1]}}}}"#,
            month.first_day()
        )
    };
    let bad = format!(
        r#"{{"usageDetails":[{},{},{},{},{},{}],"extra":true}}"#,
        row(r#""12.25""#, "Storage", current),
        row("-3.5", "Credits", current),
        row("7", "Storage", current.plus(-1)),
        row(r#""abc""#, "Backup", current),
        row("null", "Backup", current),
        row(r#""NaN""#, "Backup", current),
    );
    let good = rig.exporter.samples().await.costs("services");
    let invalid_before = rig
        .exporter
        .samples()
        .await
        .errors("services", &org, "invalid_row");
    rig.sim
        .sim
        .fail(SimEndpoint::Poll, body_fault(200, JSON, &bad));
    let s = rig
        .exporter
        .wait_for("the odd result served", |s| {
            s.costs("services").len() == 3
                && s.errors("services", &org, "invalid_row") >= invalid_before + 3.0
        })
        .await;
    assert_eq!(s.up("services", &org), Some(1.0));
    assert_eq!(
        s.value(
            "atlas_cost_usage_usd",
            &[
                ("query", "services"),
                ("atlas_service", "Storage"),
                ("month", &current.to_string())
            ]
        ),
        Some(12.25)
    );
    assert_eq!(
        s.value(
            "atlas_cost_usage_usd",
            &[("query", "services"), ("atlas_service", "Credits")]
        ),
        Some(-3.5)
    );
    assert!(
        s.value(
            "atlas_cost_usage_usd",
            &[("query", "services"), ("atlas_service", "Backup")]
        )
        .is_none()
    );
    let odd = s.costs("services");

    for (what, result) in [
        ("an empty result", r#"{"usageDetails":[]}"#.to_owned()),
        (
            "a result whose rows are all invalid",
            format!(r#"{{"usageDetails":[{}]}}"#, row("null", "Backup", current)),
        ),
    ] {
        let decode_before = rig
            .exporter
            .samples()
            .await
            .errors("services", &org, "decode");
        rig.sim
            .sim
            .fail(SimEndpoint::Poll, body_fault(200, JSON, &result));
        let s = rig
            .exporter
            .wait_for(&format!("{what} refused as decode"), |s| {
                s.up("services", &org) == Some(0.0)
                    && s.errors("services", &org, "decode") > decode_before
            })
            .await;
        assert_eq!(s.costs("services"), odd, "{what}: the last good data stays");
        rig.sim.sim.clear_faults();
        rig.exporter
            .wait_for("up again", |s| s.up("services", &org) == Some(1.0))
            .await;
        rig.sim
            .sim
            .fail(SimEndpoint::Poll, body_fault(200, JSON, &bad));
        rig.exporter
            .wait_for("the odd result again", |s| s.costs("services") == odd)
            .await;
    }
    rig.sim.sim.clear_faults();
    rig.exporter
        .wait_for("real data again", |s| s.costs("services") == good)
        .await;
    rig.exporter.stop().await;
}

/// Odd CSV (a preamble, a BOM, CRLF, quoted commas, missing columns, a non-numeric amount) is
/// read leniently; a CSV with no amount column is a `decode` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_csv_is_read_leniently() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let mut q = query("services", GroupBy::Ungrouped, 1);
    q.format = ResultFormat::Csv;
    let exporter = sim.fast_exporter(&[q]).ready().await;
    let month = sim.sim.current_month().first_day();
    let csv = format!(
        "\u{feff}Organization: \"ACME, Inc.\"\r\n\r\nUsage Date, Service ,Organization Name,Usage Amount\r\n{month},Storage,\"ACME, Inc.\",\"1,234.50\"\r\n{month},Backup,\"ACME, Inc.\",n/a\r\n{month},Clusters\r\n"
    );
    sim.sim.fail(SimEndpoint::Poll, body_fault(200, CSV, &csv));
    let s = exporter
        .wait_for("the odd CSV served", |s| s.costs("services").len() == 1)
        .await;
    assert_eq!(
        s.value(
            "atlas_cost_usage_usd",
            &[("atlas_service", "Storage"), ("org_name", "ACME, Inc.")]
        ),
        Some(1234.5)
    );
    assert!(s.errors("services", &org, "invalid_row") >= 2.0);
    sim.sim.fail(
        SimEndpoint::Poll,
        body_fault(200, CSV, "Date,Service\r\n2026-01-01,Storage\r\n"),
    );
    exporter
        .wait_for("decode error", |s| {
            s.up("services", &org) == Some(0.0) && s.errors("services", &org, "decode") >= 1.0
        })
        .await;
    exporter.stop().await;
}

/// A body far larger than any real answer is refused past the size cap (`reason="too_large"`)
/// without being read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_refused() {
    let rig = rig(SimConfig::default(), &service_account(), |c| {
        c.max_response_bytes = 1024 * 1024;
    })
    .await;
    rig.fault_cycle("services", "too_large", |r| {
        r.sim
            .sim
            .fail(SimEndpoint::Poll, Fault::Huge(64 * 1024 * 1024));
    })
    .await;
    rig.exporter.stop().await;
}

/// While one org hangs on a slow Atlas, the other org keeps refreshing on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_org_does_not_delay_a_healthy_one() {
    let sim = start_sim(with_orgs(2)).await;
    let (stuck, healthy) = (sim.org(0), sim.org(1));
    let exporter = sim
        .fast_exporter(&[services()])
        .tweak(|c| {
            c.request_timeout = Duration::from_secs(60);
            c.query_timeout = Duration::from_secs(120);
        })
        .ready()
        .await;
    sim.sim.fail_with(
        SimEndpoint::Create,
        Fault::Delay(Duration::from_secs(60)),
        Some(&stuck),
        None,
    );
    let last = |s: &Samples, org: &str| s.last_success("services", org).unwrap();
    let start = exporter.samples().await;
    // Wait until the stuck org's create is in flight, then watch the healthy one.
    exporter
        .wait_for("the stuck org's refresh to start", |_| {
            sim.sim.request_log().iter().any(|r| {
                r.endpoint == SimEndpoint::Create
                    && r.org_id.as_deref() == Some(&stuck)
                    && r.at.elapsed() < Duration::from_secs(5)
            })
        })
        .await;
    let mut healthy_times = vec![last(&start, &healthy)];
    let mut s = start.clone();
    while healthy_times.len() < 4 {
        s = exporter
            .wait_for("a new healthy refresh", |s| {
                last(s, &healthy) > *healthy_times.last().unwrap()
            })
            .await;
        healthy_times.push(last(&s, &healthy));
    }
    let stuck_since = last(&start, &stuck);
    assert!(
        last(&s, &stuck) <= stuck_since + 1.0,
        "the stuck org has not refreshed"
    );
    assert_eq!(s.up("services", &healthy), Some(1.0));
    exporter.stop().await;
}
