//! HTTP Digest under concurrent refreshes (issue 19). Concurrent queries of an org share one
//! nonce, so a new nonce can go stale, or be forgotten, before one request's retry lands.
//! Whatever the server does with its nonces (Atlas documents none of it), no query is lost to
//! `reason="auth"`; wrong or revoked keys still fail fast, with `auth`, in a bounded number of
//! requests counted in the simulator's request log.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use atlas_cost_exporter::config::QuerySpec;
use atlas_cost_exporter::simulator::{DigestCounts, SimConfig};
use common::*;

/// Orgs in each run: several, so the refresh slots are shared across orgs too.
const ORGS: usize = 3;

/// The default queries (services, projects, clusters) over the current month.
fn queries() -> Vec<QuerySpec> {
    QuerySpec::defaults(1)
}

/// How many times `query` of `org` has been refreshed, successes and failures alike.
fn refreshes(s: &Samples, query: &str, org: &str) -> f64 {
    s.value(
        "atlas_cost_query_refresh_duration_seconds_count",
        &[("query", query), ("org_id", org)],
    )
    .unwrap_or(0.0)
}

/// The simulator of `cfg` with [`ORGS`] orgs, and the fast exporter reading every one of them
/// with the API key `key`, `--refresh.concurrency 4`.
async fn start(cfg: SimConfig, key: &atlas_cost_exporter::config::Credentials) -> (Sim, Exporter) {
    let sim = start_sim(SimConfig { orgs: ORGS, ..cfg }).await;
    let exporter = sim
        .fast_exporter(&queries())
        .credentials(key)
        .tweak(|c| c.concurrency = 4)
        .start()
        .await;
    (sim, exporter)
}

/// Every (org, query) pair of the run.
fn pairs(sim: &Sim) -> Vec<(String, String)> {
    (0..ORGS)
        .flat_map(|i| queries().into_iter().map(move |q| (i, q.name)))
        .map(|(i, q)| (sim.org(i), q))
        .collect()
}

/// A variant of nonce handling, and a check that the run met it (so a run in which the
/// server never refused an answer cannot pass).
struct Variant {
    name: &'static str,
    config: SimConfig,
    met: fn(&DigestCounts) -> bool,
}

/// Nonce handling a server may have: a nonce per challenge or one shared by all, each rule
/// alone, and the mix issue 19 measured.
fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "stale after 3 answers",
            config: SimConfig {
                nonce_stale_after: Some(3),
                ..SimConfig::default()
            },
            // Stale only: a plain refusal would be a replayed nc.
            met: |c| c.stale >= 10 && c.plain == 0,
        },
        Variant {
            name: "forgotten after 4 answers, then a plain fresh challenge",
            config: SimConfig {
                nonce_forgotten_after: Some(4),
                unknown_nonce_stale: false,
                ..SimConfig::default()
            },
            met: |c| c.plain >= 10 && c.stale == 0,
        },
        Variant {
            name: "forgotten after 4 answers, then stale=true",
            config: SimConfig {
                nonce_forgotten_after: Some(4),
                unknown_nonce_stale: true,
                ..SimConfig::default()
            },
            met: |c| c.stale >= 10 && c.plain == 0,
        },
        Variant {
            name: "one shared nonce, stale after 3 answers",
            config: SimConfig {
                shared_nonce: true,
                nonce_stale_after: Some(3),
                ..SimConfig::default()
            },
            met: |c| c.stale >= 10 && c.plain == 0,
        },
        Variant {
            name: "one shared nonce, forgotten after 4 answers, then a plain fresh challenge",
            config: SimConfig {
                shared_nonce: true,
                nonce_forgotten_after: Some(4),
                unknown_nonce_stale: false,
                ..SimConfig::default()
            },
            met: |c| c.plain >= 10 && c.stale == 0,
        },
        Variant {
            name: "a spurious stale=true every 5th good answer",
            config: SimConfig {
                spurious_stale_every: Some(5),
                ..SimConfig::default()
            },
            met: |c| c.stale >= 10 && c.plain == 0,
        },
        Variant {
            name: "stale after 3 answers and a spurious stale every 7th",
            config: SimConfig {
                nonce_stale_after: Some(3),
                spurious_stale_every: Some(7),
                ..SimConfig::default()
            },
            met: |c| c.stale >= 10 && c.plain == 0,
        },
    ]
}

/// Under every nonce variant, several orgs with the default queries and
/// `--refresh.concurrency 4`, refreshed at least eight times each: not one `auth` (nor
/// `client_error`) refresh error, every `atlas_cost_query_up` at 1, and the server did refuse
/// answers as the variant says (stale ones never as a replayed `nc`). Every variant runs; the
/// failures of all of them are reported together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_that_go_stale_or_are_forgotten_cost_no_query() {
    let mut failures = Vec::new();
    for v in variants() {
        let started = std::time::Instant::now();
        let (sim, exporter) = start(v.config, &api_key()).await;
        let pairs = pairs(&sim);
        let s = exporter
            .wait_for(
                &format!("{}: eight refreshes of every query", v.name),
                |s| pairs.iter().all(|(org, q)| refreshes(s, q, org) >= 8.0),
            )
            .await;
        for (org, q) in &pairs {
            for reason in ["auth", "client_error"] {
                let n = s.errors(q, org, reason);
                if n != 0.0 {
                    failures.push(format!("{}: {q} {org}: {n} {reason} errors", v.name));
                }
            }
            if s.up(q, org) != Some(1.0) {
                failures.push(format!("{}: {q} {org} down", v.name));
            }
        }
        let counts = sim.sim.digest_counts();
        eprintln!("{}: {counts:?} in {:?}", v.name, started.elapsed());
        if !(v.met)(&counts) {
            failures.push(format!("{}: the server's refusals {counts:?}", v.name));
        }
        exporter.stop().await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every request the simulator logged for `org`, whatever the endpoint.
fn requests_of(sim: &Sim, org: &str) -> usize {
    sim.sim
        .request_log()
        .iter()
        .filter(|r| r.org_id.as_deref() == Some(org))
        .count()
}

/// The `auth` refresh errors of every query of `org`.
fn auth_errors(s: &Samples, org: &str) -> f64 {
    queries()
        .iter()
        .map(|q| s.errors(&q.name, org, "auth"))
        .sum()
}

/// A wrong API key, under a server whose nonces go stale after 3 answers and are called stale
/// now and then: every query fails with `reason="auth"`, refresh after refresh, and each
/// failed call cost at most three requests (one without credentials, an answer, one more
/// answer), two at least, counted in the simulator's log: the `services` query's creates
/// against its failures, and every request of the org against every failure (a failed
/// discovery fails both the `projects` and `clusters` queries). Calls still under way when the
/// log is read (three per org at most) may have no error yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_fails_with_auth_within_three_requests_per_failed_call() {
    let (sim, exporter) = start(
        SimConfig {
            nonce_stale_after: Some(3),
            spurious_stale_every: Some(7),
            ..SimConfig::default()
        },
        &wrong_api_key(),
    )
    .await;
    let orgs: Vec<String> = (0..ORGS).map(|i| sim.org(i)).collect();
    let pairs = pairs(&sim);
    let first = exporter
        .wait_for("five auth failures of every query", |s| {
            pairs.iter().all(|(org, q)| s.errors(q, org, "auth") >= 5.0)
        })
        .await;
    let creates: Vec<usize> = orgs.iter().map(|o| sim.creates_to(o)).collect();
    let logged: Vec<usize> = orgs.iter().map(|o| requests_of(&sim, o)).collect();
    let s = exporter.samples().await;
    for ((org, creates), logged) in orgs.iter().zip(creates).zip(logged) {
        #[allow(clippy::cast_precision_loss)]
        let (creates, logged) = (creates as f64, logged as f64);
        let (before, after) = (
            first.errors("services", org, "auth"),
            s.errors("services", org, "auth"),
        );
        assert!(
            creates >= 2.0 * before && creates <= 3.0 * after + 3.0,
            "{org}: {creates} creates for {before}..{after} failed services refreshes"
        );
        let failed = auth_errors(&s, org);
        assert!(
            logged <= 3.0 * failed + 9.0,
            "{org}: {logged} requests for {failed} failed refreshes"
        );
        for q in queries() {
            assert_eq!(s.up(&q.name, org), Some(0.0), "{org} {}", q.name);
            assert_eq!(
                s.errors(&q.name, org, "client_error"),
                0.0,
                "{org} {}",
                q.name
            );
        }
    }
    let counts = sim.sim.digest_counts();
    assert_eq!(counts.accepted, 0, "{counts:?}");
    exporter.stop().await;
}

/// A key revoked while the exporter runs (accepted before, so a plain challenge could be a
/// forgotten nonce): every query fails with `reason="auth"` from then on, within a bounded
/// number of requests counted in the simulator's log. While the key is trusted a call costs
/// at most seven (the answer over the shared nonce, then six refused first answers); the
/// first failure ends the trust, so later calls cost two, or three for the few that start
/// before a nonce is shared again. At most three calls per org are under way at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_api_key_fails_with_auth_within_a_bounded_number_of_requests() {
    let (sim, exporter) = start(SimConfig::default(), &api_key()).await;
    let orgs: Vec<String> = (0..ORGS).map(|i| sim.org(i)).collect();
    let pairs = pairs(&sim);
    exporter
        .wait_for("every query up", |s| {
            pairs.iter().all(|(org, q)| s.up(q, org) == Some(1.0))
        })
        .await;
    let before: Vec<usize> = orgs.iter().map(|o| requests_of(&sim, o)).collect();
    sim.sim.revoke_api_key();
    exporter
        .wait_for("ten auth failures of every query", |s| {
            pairs
                .iter()
                .all(|(org, q)| s.errors(q, org, "auth") >= 10.0)
        })
        .await;
    let after: Vec<usize> = orgs.iter().map(|o| requests_of(&sim, o)).collect();
    let s = exporter.samples().await;
    for ((org, before), after) in orgs.iter().zip(before).zip(after) {
        let failed = auth_errors(&s, org);
        #[allow(clippy::cast_precision_loss)]
        let sent = (after - before) as f64;
        // Two per failure; five more for each call trusted when the trust ended, one more
        // for each that started without a shared nonce, seven for each under way when the
        // log was read.
        let bound = 2.0 * failed + 3.0 * 5.0 + 3.0 + 3.0 * 7.0;
        assert!(
            sent <= bound,
            "{org}: {sent} requests for {failed} failed refreshes (bound {bound})"
        );
        for q in queries() {
            assert_eq!(s.up(&q.name, org), Some(0.0), "{org} {}", q.name);
        }
    }
    assert!(sim.sim.digest_counts().plain > 0);
    exporter.stop().await;
}
