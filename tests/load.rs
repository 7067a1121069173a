//! Load: many concurrent scrapes while refreshes publish, and id validation of discovered data.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atlas_cost_exporter::config::GroupBy;
use atlas_cost_exporter::simulator::{SimConfig, SimEndpoint};
use common::*;

/// Sums `atlas_cost_usage_usd` per `(org_id, query)` in cents, reading the fixed label order
/// the exporter writes (`query` first, then `org_id`).
fn totals(body: &str) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("atlas_cost_usage_usd{query=\"") else {
            continue;
        };
        let (query, rest) = rest.split_once('"').unwrap();
        let org = rest
            .strip_prefix(",org_id=\"")
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        #[allow(clippy::cast_possible_truncation)]
        let cents = (value * 100.0).round() as i64;
        *out.entry((org.to_owned(), query.to_owned())).or_insert(0) += cents;
    }
    out
}

/// 200 concurrent scrapes, repeated, while refreshes publish new amounts: every answer is
/// complete (OpenMetrics ending in `# EOF`), parses, and holds each query's data from one
/// refresh only: the old totals or the new ones, never a mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_never_see_a_torn_snapshot() {
    let sim = start_sim(SimConfig::default()).await;
    let queries = [
        query("services", GroupBy::Ungrouped, 2),
        query("clusters", GroupBy::Clusters, 2),
    ];
    let exporter = sim
        .exporter(&queries)
        .tweak(|c| c.refresh_interval = Duration::from_millis(100))
        .ready()
        .await;
    let exporter = Arc::new(exporter);

    // The totals each (org, query) may show: at scale 1 or at scale 2.
    let (start, end) = window(sim.sim.current_month(), 2);
    let mut allowed: BTreeMap<(String, String), BTreeSet<i64>> = BTreeMap::new();
    for (num, den) in [(1, 1), (2, 1)] {
        let data = sim.sim.dataset().scaled(num, den);
        for org in &data.orgs {
            // Each query adds up to the org's total (clusters through its remainder).
            for q in ["services", "clusters"] {
                let t = data.total_cents(&org.id, start, end);
                allowed
                    .entry((org.id.clone(), q.to_owned()))
                    .or_default()
                    .insert(t);
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (sim, stop) = (sim.sim.clone(), stop.clone());
        tokio::spawn(async move {
            let mut scale = 1;
            while !stop.load(Ordering::Relaxed) {
                scale = 3 - scale;
                sim.set_amount_scale(scale, 1);
                tokio::time::sleep(Duration::from_millis(70)).await;
            }
        })
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let mut seen_scales = BTreeSet::new();
    for round in 0..5 {
        let bodies = futures_util::future::join_all((0..200).map(|_| {
            let http = http.clone();
            let url = exporter.url("/metrics");
            async move {
                let r = http
                    .get(url)
                    .header("Accept", OPENMETRICS)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.text().await.unwrap()
            }
        }))
        .await;
        for body in &bodies {
            assert!(body.ends_with("# EOF\n"), "round {round}: incomplete body");
            let t = totals(body);
            assert_eq!(
                t.len(),
                allowed.len(),
                "round {round}: every query is there"
            );
            for (key, cents) in &t {
                assert!(
                    allowed[key].contains(cents),
                    "round {round}: {key:?} shows {cents}, a mix of refreshes"
                );
                seen_scales.insert(allowed[key].iter().position(|a| a == cents));
            }
        }
        // A real parser reads one body of each round in full.
        let parsed = Samples(parse(&bodies[round * 37], "openmetrics"));
        assert!(parsed.named("atlas_cost_usage_usd").count() > 0);
    }
    stop.store(true, Ordering::Relaxed);
    flipper.await.unwrap();
    assert!(
        seen_scales.len() > 1,
        "refreshes published new amounts during the test"
    );
    match Arc::try_unwrap(exporter) {
        Ok(e) => e.stop().await,
        Err(_) => panic!("exporter still shared"),
    }
}

/// Ids from Atlas go into URL paths only when they are Atlas ids: a discovered project whose
/// id is a path is skipped (and logged), never requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_ids_that_are_not_atlas_ids_are_never_requested() {
    let sim = start_sim(with_orgs(1)).await;
    let data = sim.sim.dataset();
    let org = &data.orgs[0];
    let good = &org.projects[0];
    let page = format!(
        r#"{{"results":[{{"id":"../../orgs/{}/invoices","name":"evil"}},{{"id":"{}","name":"{}"}},{{"id":"abc?x=1","name":"q"}}],"totalCount":3}}"#,
        org.id,
        good.id,
        good.name.replace('\\', "\\\\").replace('"', "\\\"")
    );
    sim.sim
        .fail(SimEndpoint::Projects, body_fault(200, JSON, &page));
    let exporter = sim
        .exporter(&[query("clusters", GroupBy::Clusters, 1)])
        .ready()
        .await;
    let s = exporter.samples().await;
    assert_eq!(s.up("clusters", &org.id), Some(1.0));
    // Only the good project's clusters were listed.
    let log = sim.sim.request_log();
    assert_eq!(
        log.iter()
            .filter(|r| r.endpoint == SimEndpoint::Clusters)
            .count(),
        1
    );
    let projects: BTreeSet<&str> = s
        .named("atlas_cost_usage_usd")
        .filter_map(|x| x.label("project_id"))
        .collect();
    assert_eq!(projects, BTreeSet::from([good.id.as_str()]));
    exporter.stop().await;
}
