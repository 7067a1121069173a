//! Authentication and transport against a simulator that follows the documented Atlas API
//! rather than the client's guesses (issue 9, points 2, 3, 8, 9 and 11): raw Basic
//! credentials, Digest servers that forget nonces, 401s that cost no tokens, rate limits per
//! endpoint set and scope, and the odd answers of the poll path.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use atlas_cost_exporter::atlas::{AtlasClient, ClientSettings, TokenCache};
use atlas_cost_exporter::config::{DEFAULT_MAX_RESPONSE_BYTES, GroupBy, ResultFormat};
use atlas_cost_exporter::metrics::SelfMetrics;
use atlas_cost_exporter::simulator::{Fault, SimConfig, SimEndpoint};
use common::*;

/// [`Harness::fast_one_org`] with the default simulator, the demo service account and
/// [`services`] alone.
async fn start_services() -> Harness {
    Harness::fast_one_org(
        SimConfig::default(),
        &service_account(),
        &[services()],
        |_| {},
    )
    .await
}

/// Waits for the `services` query to be up; returns the scrape that saw it.
async fn services_up(exporter: &Exporter, org: &str) -> Samples {
    exporter
        .wait_for("services up", |s| s.up("services", org) == Some(1.0))
        .await
}

fn polls(s: &Samples, query: &str) -> f64 {
    s.value("atlas_cost_query_polls_total", &[("query", query)])
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------- point 2: OAuth Basic

/// The demo service account (`mdb_sa_id_demo`, with `_`) gets a token from the default
/// simulator, which compares the Basic pair raw as the docs' curl sends it: one token
/// request, no `auth` error, the query up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_gets_a_token_from_a_raw_comparing_token_endpoint() {
    let Harness { sim, exporter, org } = start_services().await;
    let s = services_up(&exporter, &org).await;
    assert_eq!(s.errors("services", &org, "auth"), 0.0);
    assert_eq!(sim.sim.requests(SimEndpoint::Token), 1);
    exporter.stop().await;
}

// ------------------------------------------------------------------- point 3: Digest

/// A Digest server that forgets its nonces (a restart, another node behind the load
/// balancer) answers the old nonce with a plain fresh challenge (`stale=false`): the
/// exporter answers it once more with the new nonce and keeps every query up, refresh after
/// refresh, with no `auth` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_answers_a_forgotten_nonce_once_more() {
    let Harness { sim, exporter, org } = Harness::fast_one_org(
        SimConfig {
            unknown_nonce_stale: false,
            ..SimConfig::default()
        },
        &api_key(),
        &[services()],
        |_| {},
    )
    .await;
    services_up(&exporter, &org).await;
    for round in 0..3 {
        let p0 = polls(&exporter.samples().await, "services");
        sim.sim.forget_nonces();
        let s = exporter
            .wait_for("two more refreshes", |s| polls(s, "services") >= p0 + 6.0)
            .await;
        assert_eq!(s.errors("services", &org, "auth"), 0.0, "round {round}");
        assert_eq!(s.up("services", &org), Some(1.0), "round {round}");
    }
    exporter.stop().await;
}

/// With a server that answers unknown nonces `stale=false`, a wrong API key still fails
/// with `reason="auth"` and no retry loop: a challenge, an answer, one more answer, then
/// the error (two creates per refresh once the nonce is cached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_still_fails_after_one_more_answer() {
    let (Harness { sim, exporter, org }, s) = Harness::wrong_api_key_failing(SimConfig {
        unknown_nonce_stale: false,
        ..SimConfig::default()
    })
    .await;
    let creates = sim.sim.requests(SimEndpoint::Create);
    let s2 = exporter.samples().await;
    let (failures, failures_after) = (
        s.errors("services", &org, "auth"),
        s2.errors("services", &org, "auth"),
    );
    // The first refresh sends 3 creates, each later one 2; one refresh may be under way.
    #[allow(clippy::cast_precision_loss)]
    let creates = creates as f64;
    assert!(
        creates <= 2.0 * failures_after + 3.0 && creates >= 2.0 * failures + 1.0,
        "{creates} creates for {failures}..{failures_after} failed refreshes"
    );
    assert_eq!(s2.up("services", &org), Some(0.0));
    exporter.stop().await;
}

// ------------------------------------------------------------------- point 8: tokens

/// When every API call is answered 401 (a missing role) while the token endpoint works,
/// the exporter renews the token once and then mints no more: refresh after refresh of
/// three queries, two token requests in all, and every query fails with `reason="auth"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_fresh_token_mints_no_more_tokens() {
    let queries = [
        services(),
        query("projects", GroupBy::Projects, 1),
        query("clusters", GroupBy::Clusters, 1),
    ];
    let Harness { sim, exporter, org } =
        Harness::fast_one_org(SimConfig::default(), &service_account(), &queries, |_| {}).await;
    exporter
        .wait_for("every query up", |s| {
            ["services", "projects", "clusters"]
                .iter()
                .all(|q| s.up(q, &org) == Some(1.0))
        })
        .await;
    assert_eq!(sim.sim.requests(SimEndpoint::Token), 1);
    for endpoint in [
        SimEndpoint::Create,
        SimEndpoint::Poll,
        SimEndpoint::Projects,
        SimEndpoint::Clusters,
    ] {
        sim.sim.fail(endpoint, Fault::Status(401));
    }
    let s = exporter
        .wait_for_errors("services", &org, "auth", 4.0)
        .await;
    assert_eq!(s.up("services", &org), Some(0.0));
    assert_eq!(
        sim.sim.requests(SimEndpoint::Token),
        2,
        "one renewal for the first 401, none for a fresh token refused"
    );
    exporter.stop().await;
}

/// Client settings for driving [`AtlasClient`] directly.
fn settings(url: &str) -> ClientSettings {
    ClientSettings {
        base_url: url.to_owned(),
        request_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        requests_per_minute: 600,
        max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
    }
}

/// Two orgs share one service account's token. One org is held by a one-hour
/// `Retry-After`; when that org is the one to renew the expired shared token, the other org
/// still gets the token and its answers at once (bounded by a generous wait): renewing the
/// token never waits behind an org's rate limit while holding the lock the other org needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_held_by_retry_after_does_not_delay_the_shared_token() {
    let sim = start_sim(SimConfig {
        orgs: 2,
        token_expires_in: 1,
        ..SimConfig::default()
    })
    .await;
    let data = sim.sim.dataset();
    let (held, free) = (data.orgs[0].id.clone(), data.orgs[1].id.clone());
    let metrics = Arc::new(SelfMetrics::new("1h"));
    let cache = TokenCache::default();
    let client = |org: &str| {
        AtlasClient::new(
            reqwest::Client::new(),
            settings(&sim.url),
            org,
            &service_account(),
            metrics.clone(),
        )
        .unwrap()
        .with_token_cache(cache.clone())
    };
    let (a, b) = (Arc::new(client(&held)), client(&free));
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(3600);
    // A 429 with a one-hour Retry-After on the held org's project listing.
    sim.sim.fail_with(
        SimEndpoint::Projects,
        Fault::RateLimited {
            retry_after: Some(3600),
        },
        Some(&held),
        Some(1),
    );
    let first = a.projects(deadline()).await;
    assert!(
        matches!(
            first,
            Err(atlas_cost_exporter::atlas::AtlasError::RateLimited { .. })
        ),
        "{first:?}"
    );
    // Let the shared token (valid 1 s, renewed at half-life) run out, then the held org asks
    // first: it needs a new token and then waits out its Retry-After.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let tokens = sim.sim.requests(SimEndpoint::Token);
    let held_call = tokio::spawn({
        let a = a.clone();
        async move { a.projects(deadline()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = tokio::time::timeout(Duration::from_secs(20), b.projects(deadline()))
        .await
        .expect("the other org is not held behind the held org's Retry-After");
    assert_eq!(
        other.expect("listing").len(),
        data.orgs[1].listed_projects().count()
    );
    assert!(!held_call.is_finished(), "the held org still waits");
    assert!(
        sim.sim.requests(SimEndpoint::Token) > tokens,
        "the shared token was renewed"
    );
    held_call.abort();
}

// ------------------------------------------------------------------- point 9: rate limits

/// A 429 with a one-hour `Retry-After` on the cluster listing of one project holds that
/// listing only: the Cost Explorer calls of the org go on, refresh after refresh, with no
/// `rate_limited` error, and what Atlas's `RateLimit-Remaining` said is exported for the
/// clusters endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_one_project_cluster_listing_does_not_delay_cost_explorer_calls() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    // Only the first cluster listing (one project) meets the 429.
    sim.sim.fail_with(
        SimEndpoint::Clusters,
        Fault::RateLimited {
            retry_after: Some(3600),
        },
        None,
        Some(1),
    );
    let exporter = sim
        .fast_exporter(&[services(), query("clusters", GroupBy::Clusters, 1)])
        .start()
        .await;
    let s = exporter
        .wait_for("the 429 seen", |s| {
            s.value(
                "atlas_cost_api_rate_limit_remaining",
                &[("org_id", org.as_str()), ("endpoint", "clusters")],
            )
            .is_some()
        })
        .await;
    let p0 = polls(&s, "services");
    let creates = sim.creates_to(&org);
    let s = exporter
        .wait_for("three more services refreshes", |s| {
            polls(s, "services") >= p0 + 9.0
        })
        .await;
    assert!(sim.creates_to(&org) >= creates + 3);
    assert_eq!(s.up("services", &org), Some(1.0));
    assert_eq!(s.errors("services", &org, "rate_limited"), 0.0);
    assert_eq!(
        s.value(
            "atlas_cost_api_rate_limit_remaining",
            &[("org_id", org.as_str()), ("endpoint", "clusters")],
        ),
        Some(0.0)
    );
    exporter.stop().await;
}

/// `atlas_cost_api_rate_limit_remaining` has no series until Atlas sends
/// `RateLimit-Remaining`; then it shows the value, by org and endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_remaining_is_exported_once_atlas_sends_it() {
    let Harness { sim, exporter, org } = start_services().await;
    let s = services_up(&exporter, &org).await;
    assert_eq!(s.named("atlas_cost_api_rate_limit_remaining").count(), 0);
    sim.sim.fail_with(
        SimEndpoint::Create,
        Fault::RateLimited {
            retry_after: Some(1),
        },
        Some(&org),
        Some(1),
    );
    let s = exporter
        .wait_for("the header exported", |s| {
            s.named("atlas_cost_api_rate_limit_remaining").count() > 0
        })
        .await;
    let series: Vec<_> = s.named("atlas_cost_api_rate_limit_remaining").collect();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0].label("org_id"), Some(org.as_str()));
    assert_eq!(series[0].label("endpoint"), Some("create"));
    assert_eq!(series[0].value, Some(0.0));
    exporter.stop().await;
}

/// A `Retry-After` given as an HTTP date an hour ahead holds the org's Cost Explorer calls
/// until then: refresh after refresh fails with `reason="rate_limited"` and no further
/// create reaches Atlas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_an_http_date_holds_the_cost_explorer() {
    let Harness { sim, exporter, org } = start_services().await;
    services_up(&exporter, &org).await;
    sim.sim.fail(
        SimEndpoint::Create,
        Fault::RateLimitedUntil(Duration::from_secs(3600)),
    );
    let before = sim.creates_to(&org);
    assert_held_by_retry_after(&sim, &exporter, &org, before).await;
    exporter.stop().await;
}

// ------------------------------------------------------------------- point 11: poll path

/// A poll answered with a redirect is an error (`reason="client_error"`), never a success
/// nor "not ready"; the query recovers once the redirects stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_on_a_poll_is_a_client_error() {
    let Harness { sim, exporter, org } = start_services().await;
    services_up(&exporter, &org).await;
    sim.sim.fail(SimEndpoint::Poll, Fault::Redirect(302));
    let s = exporter
        .wait_for("services down with client_error", |s| {
            s.up("services", &org) == Some(0.0) && s.errors("services", &org, "client_error") > 0.0
        })
        .await;
    assert_eq!(s.errors("services", &org, "deadline"), 0.0);
    sim.sim.clear_faults();
    exporter
        .wait_for("services up again", |s| s.up("services", &org) == Some(1.0))
        .await;
    exporter.stop().await;
}

/// Two polls answered `{}` are polled again: the refresh succeeds with no `decode` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_object_is_polled_again() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    sim.sim.fail_with(
        SimEndpoint::Poll,
        body_fault(200, JSON, "{}"),
        None,
        Some(2),
    );
    let exporter = sim.fast_exporter(&[services()]).start().await;
    let s = services_up(&exporter, &org).await;
    assert_eq!(s.errors("services", &org, "decode"), 0.0);
    exporter.stop().await;
}

/// A poll that keeps answering `{}` is judged a `decode` error after four polls (three
/// more after the first `{}`), refresh after refresh: no endless polling, no early verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_stays_empty_is_a_decode_error_after_four_polls() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        polls_before_ready: 0,
        ..SimConfig::default()
    })
    .await;
    let org = sim.org(0);
    sim.sim.fail(SimEndpoint::Poll, body_fault(200, JSON, "{}"));
    let exporter = sim.fast_exporter(&[services()]).start().await;
    let s = exporter
        .wait_for_errors("services", &org, "decode", 2.0)
        .await;
    let (failures, p) = (s.errors("services", &org, "decode"), polls(&s, "services"));
    // Every refresh so far failed after exactly four polls; one may be under way.
    assert!(
        p >= 4.0 * failures && p <= 4.0 * failures + 4.0,
        "{p} polls for {failures} failures"
    );
    assert_eq!(s.up("services", &org), Some(0.0));
    exporter.stop().await;
}

/// A 404 on the first poll right after the create (a node that does not know the new token
/// yet) gets a grace poll: the same query is polled again and succeeds, with no second
/// create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_right_after_create_is_polled_again_not_created_again() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    sim.sim
        .fail_with(SimEndpoint::Poll, Fault::Status(404), None, Some(1));
    let exporter = sim
        .fast_exporter(&[services()])
        .tweak(|c| c.refresh_interval = Duration::from_secs(3600))
        .start()
        .await;
    let s = services_up(&exporter, &org).await;
    assert_eq!(s.errors("services", &org, "client_error"), 0.0);
    assert_eq!(sim.sim.requests(SimEndpoint::Create), 1, "no second create");
    exporter.stop().await;
}

/// When Atlas refuses `envelope=true` with a CSV `Accept` (400 or 406), the query polls
/// without the envelope from then on and succeeds (its "not ready" answers are then seen as
/// dropped connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_csv_envelope_is_polled_without_it() {
    for status in [406, 400] {
        let mut csv = services();
        csv.format = ResultFormat::Csv;
        let Harness { sim, exporter, org } = Harness::fast_one_org(
            SimConfig {
                refuse_csv_envelope: Some(status),
                ..SimConfig::default()
            },
            &service_account(),
            &[csv],
            |c| c.refresh_interval = Duration::from_secs(3600),
        )
        .await;
        let s = services_up(&exporter, &org).await;
        for reason in ["client_error", "decode", "deadline"] {
            assert_eq!(
                s.errors("services", &org, reason),
                0.0,
                "{status}: {reason}"
            );
        }
        assert!(!s.costs("services").is_empty(), "{status}: data served");
        assert_eq!(
            sim.sim.requests(SimEndpoint::Create),
            1,
            "{status}: not created again"
        );
        exporter.stop().await;
    }
}
