//! Soak: many refresh cycles with faults switched on and off at random (fixed seed). Alone in
//! its test binary, so the process's memory is this test's.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use atlas_cost_exporter::config::GroupBy;
use atlas_cost_exporter::simulator::{Fault, SimConfig, SimEndpoint};
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn faults() -> Vec<(SimEndpoint, Fault)> {
    vec![
        (SimEndpoint::Create, Fault::Status(503)),
        (SimEndpoint::Poll, Fault::Status(500)),
        (SimEndpoint::Projects, Fault::Status(502)),
        (SimEndpoint::Clusters, Fault::Status(504)),
        (
            SimEndpoint::Create,
            Fault::RateLimited { retry_after: None },
        ),
        (SimEndpoint::Poll, Fault::Html(502)),
        (SimEndpoint::Create, Fault::ResetMidBody),
        (SimEndpoint::Poll, Fault::Status(404)),
        (
            SimEndpoint::Poll,
            body_fault(200, JSON, r#"{"usageDetails":[{"usageAmount":1"#),
        ),
    ]
}

/// Over many refresh cycles with random faults and changing amounts, every value served is
/// one Atlas really held (the current one or an earlier one, with its age shown), no series
/// set vanishes or appears from nowhere, memory does not grow, and once the faults stop every
/// query converges on Atlas's current amounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_never_invent_or_lose_values() {
    let mut rng = SmallRng::seed_from_u64(20_261_123);
    let sim = start_sim(SimConfig::default()).await;
    let queries = [
        query("services", GroupBy::Ungrouped, 2),
        query("projects", GroupBy::Projects, 2),
        query("clusters", GroupBy::Clusters, 2),
    ];
    let exporter = sim
        .exporter(&queries)
        .tweak(|c| {
            c.refresh_interval = Duration::from_millis(150);
            c.request_timeout = Duration::from_secs(1);
            c.query_timeout = Duration::from_secs(3);
        })
        .ready()
        .await;

    let (start, end) = window(sim.sim.current_month(), 2);
    let queries_names = ["services", "projects", "clusters"];
    // The simulator's data at scale 1, before any change: `scaled` multiplies what it is given.
    let base = sim.sim.dataset();
    let totals_at = |scale: i64| -> BTreeMap<(String, String), i64> {
        let data = base.scaled(scale, 1);
        let mut out = BTreeMap::new();
        for org in &data.orgs {
            // Each query adds up to the org's total (projects and clusters through their
            // remainders).
            for q in queries_names {
                out.insert(
                    (org.id.clone(), q.to_owned()),
                    data.total_cents(&org.id, start, end),
                );
            }
        }
        out
    };
    let label_sets = |s: &Samples| -> BTreeSet<BTreeMap<String, String>> {
        s.named("atlas_cost_usage_usd")
            .map(|x| x.labels.clone())
            .collect()
    };
    let first = exporter.samples().await;
    let series = label_sets(&first);
    let mut scales_used = vec![1i64];
    let mut allowed: BTreeMap<(String, String), BTreeSet<i64>> = totals_at(1)
        .into_iter()
        .map(|(k, v)| (k, BTreeSet::from([v])))
        .collect();
    let all_faults = faults();
    let rss_start = rss_bytes();
    for step in 0..60 {
        match rng.gen_range(0..10) {
            0..=3 => {
                let (endpoint, fault) = all_faults[rng.gen_range(0..all_faults.len())].clone();
                sim.sim.fail(endpoint, fault);
            }
            4..=5 => sim.sim.clear_faults(),
            6 => {
                let scale = rng.gen_range(1..=4);
                sim.sim.set_amount_scale(scale, 1);
                if !scales_used.contains(&scale) {
                    scales_used.push(scale);
                    for (k, v) in totals_at(scale) {
                        allowed.entry(k).or_default().insert(v);
                    }
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..250))).await;
        let s = exporter.samples().await;
        assert_eq!(
            label_sets(&s),
            series,
            "step {step}: the series set changed"
        );
        for ((org, q), ok) in &allowed {
            let served = s.total_cents("atlas_cost_usage_usd", q, org);
            assert!(
                ok.contains(&served),
                "step {step}: {q} of {org} serves {served}, which Atlas never held"
            );
            assert!(
                s.value(
                    "atlas_cost_query_data_age_seconds",
                    &[("query", q), ("org_id", org)]
                )
                .is_some(),
                "step {step}: the age of {q} is shown"
            );
        }
    }
    let rss_end = rss_bytes();
    sim.sim.clear_faults();
    let final_scale = 5;
    sim.sim.set_amount_scale(final_scale, 1);
    let want = totals_at(final_scale);
    let done = exporter
        .wait_for("every query on Atlas's current amounts", |s| {
            want.iter().all(|((org, q), t)| {
                s.up(q, org) == Some(1.0) && s.total_cents("atlas_cost_usage_usd", q, org) == *t
            })
        })
        .await;
    assert_eq!(label_sets(&done), series);
    // 60 refresh cycles under faults: memory stays flat (generous slack for allocator noise).
    let growth = rss_end.saturating_sub(rss_start);
    assert!(
        growth < 48 * 1024 * 1024,
        "resident memory grew by {growth} bytes"
    );
    exporter.stop().await;
}
