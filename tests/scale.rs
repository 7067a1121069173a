//! Scale: cardinality controls end to end (exact totals with `(other)`), many orgs (one
//! token per service account, per-org rate limits), sharding and identical HA replicas.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use atlas_cost_exporter::config::{GroupBy, QuerySpec};
use atlas_cost_exporter::controls::{Controls, FileControls};
use atlas_cost_exporter::simulator::{Fault, SimConfig, SimEndpoint};
use common::*;

fn controlled(name: &str, group_by: GroupBy, months: u32, yaml: &str) -> QuerySpec {
    let file: FileControls = serde_norway::from_str(yaml).unwrap();
    QuerySpec {
        controls: Controls::from_file(
            "test",
            file,
            months,
            &atlas_cost_exporter::series::TagLabels::default(),
        )
        .unwrap(),
        ..query(name, group_by, months)
    }
}

/// Top 2 clusters per project: at most two named clusters and one `cluster_name="(other)"`
/// (without `cluster_id` or `atlas_service`) per project and month, and the query's total is
/// exactly Atlas's, to the cent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_n_folds_into_other_and_keeps_the_exact_total() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        projects_per_org: 3,
        clusters_per_project: 5,
        ..SimConfig::default()
    })
    .await;
    let org = sim.org(0);
    let queries = [
        query("clusters", GroupBy::Clusters, 3),
        controlled("top2", GroupBy::Clusters, 3, "top: 2"),
    ];
    let exporter = sim.exporter(&queries).ready().await;
    let s = exporter.samples().await;
    assert_eq!(s.up("top2", &org), Some(1.0));
    let (start, end) = window(sim.sim.current_month(), 3);
    // No services query here, so no remainder: each query holds what it attributes.
    let atlas = listed_cluster_cents(&sim.sim.dataset(), &org, start, end);
    assert_eq!(
        s.total_cents("atlas_cost_usage_usd", "clusters", &org),
        atlas
    );
    assert_eq!(s.total_cents("atlas_cost_usage_usd", "top2", &org), atlas);
    let top2 = s.costs("top2");
    let others: Vec<_> = top2
        .keys()
        .filter(|l| l.get("cluster_name").map(String::as_str) == Some("(other)"))
        .collect();
    assert_eq!(others.len(), 3 * 3, "one (other) per project and month");
    for l in &others {
        assert!(
            !l.contains_key("cluster_id") && !l.contains_key("atlas_service"),
            "{l:?}"
        );
        assert!(l.contains_key("project_id"), "parent labels stay: {l:?}");
    }
    let mut named: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    for l in top2.keys().filter(|l| l.contains_key("cluster_id")) {
        named
            .entry((l["project_id"].clone(), l["month"].clone()))
            .or_default()
            .insert(l["cluster_id"].clone());
    }
    assert!(named.values().all(|c| c.len() == 2), "{named:?}");
    assert!(top2.len() < s.costs("clusters").len());
    exporter.stop().await;
}

/// A deny list folds the denied rows into `(other)` instead of dropping them: the denied
/// service disappears as a label value, and the total is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_rows_fold_into_other_not_away() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let queries = [controlled(
        "nobackup",
        GroupBy::Ungrouped,
        2,
        "deny: {atlas_service: 'Backup|Storage'}",
    )];
    let exporter = sim.exporter(&queries).ready().await;
    let s = exporter.samples().await;
    let costs = s.costs("nobackup");
    let services: BTreeSet<&str> = costs.keys().map(|l| l["atlas_service"].as_str()).collect();
    assert!(services.contains("(other)"), "{services:?}");
    assert!(!services.contains("Backup") && !services.contains("Storage"));
    let (start, end) = window(sim.sim.current_month(), 2);
    assert_eq!(
        s.total_cents("atlas_cost_usage_usd", "nobackup", &org),
        sim.sim.dataset().total_cents(&org, start, end)
    );
    exporter.stop().await;
}

/// Over `max_series`, the least expensive series are shed into `(other)`: the query serves
/// at most the limit, `atlas_cost_query_series_shed` counts what was folded, the total is
/// exact, and promtool still finds the exposition clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_limit_sheds_into_other_and_is_counted() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let queries = [
        query("clusters", GroupBy::Clusters, 2),
        controlled("capped", GroupBy::Clusters, 2, "max_series: 10"),
    ];
    let exporter = sim.exporter(&queries).ready().await;
    let s = exporter.samples().await;
    let labels = [("query", "capped"), ("org_id", org.as_str())];
    let served = s.value("atlas_cost_query_series", &labels).unwrap();
    assert!((1.0..=10.0).contains(&served), "{served}");
    assert_eq!(s.costs("capped").len() as f64, served);
    let shed = s.value("atlas_cost_query_series_shed", &labels).unwrap();
    assert!(shed > 0.0, "{shed}");
    assert_eq!(
        s.value(
            "atlas_cost_query_series_shed",
            &[("query", "clusters"), ("org_id", org.as_str())]
        ),
        Some(0.0),
        "a query without a limit sheds nothing, and says so"
    );
    assert_eq!(
        s.total_cents("atlas_cost_usage_usd", "capped", &org),
        s.total_cents("atlas_cost_usage_usd", "clusters", &org)
    );
    let check = promtool_check(&exporter.scrape_text().await);
    assert!(check.trim().is_empty(), "promtool: {check}");
    exporter.stop().await;
}

/// Several orgs that share one service account fetch one OAuth token between them, not one
/// each (Atlas allows 100 live tokens per service account).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_sharing_a_service_account_fetch_one_token() {
    let sim = start_sim(with_orgs(5)).await;
    let queries = [services()];
    let exporter = sim.exporter(&queries).ready().await;
    let s = exporter.samples().await;
    for org in &sim.sim.dataset().orgs {
        assert_eq!(s.up("services", &org.id), Some(1.0));
    }
    assert_eq!(sim.sim.requests(SimEndpoint::Token), 1);
    exporter.stop().await;
}

/// One org under a 429 storm (every create refused, Retry-After 30s) backs off alone: the
/// other org keeps refreshing, and only the limited org shows `rate_limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orgs_rate_limit_storm_does_not_delay_another() {
    let sim = start_sim(with_orgs(2)).await;
    let (limited, healthy) = (sim.org(0), sim.org(1));
    let exporter = sim
        .exporter(&[services()])
        .tweak(|c| {
            c.refresh_interval = Duration::from_millis(300);
            c.query_timeout = Duration::from_secs(120);
        })
        .ready()
        .await;
    let injected = std::time::Instant::now();
    sim.sim.fail_with(
        SimEndpoint::Create,
        Fault::RateLimited {
            retry_after: Some(30),
        },
        Some(&limited),
        None,
    );
    let last = |s: &Samples, org: &str| s.last_success("services", org).unwrap();
    exporter
        .wait_for("the limited org to meet a 429", |_| {
            sim.sim.request_log().iter().any(|r| {
                r.endpoint == SimEndpoint::Create
                    && r.org_id.as_deref() == Some(&limited)
                    && r.at > injected
            })
        })
        .await;
    let mut s = exporter.samples().await;
    let limited_since = last(&s, &limited);
    for _ in 0..3 {
        let before = last(&s, &healthy);
        s = exporter
            .wait_for("a new healthy refresh", |s| last(s, &healthy) > before)
            .await;
    }
    assert_eq!(
        last(&s, &limited),
        limited_since,
        "the limited org is held back"
    );
    assert_eq!(s.up("services", &healthy), Some(1.0));
    assert_eq!(s.errors("services", &healthy, "rate_limited"), 0.0);
    exporter.stop().await;
}

/// Queries and discovery together stay within `--refresh.concurrency` across every org:
/// with three orgs, slow answers and a bound of 2, Atlas never sees more than 2 requests at
/// once (discovery alone used to open 4 listings per org).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_stay_within_the_concurrency_bound() {
    let sim = start_sim(SimConfig {
        orgs: 3,
        projects_per_org: 6,
        ..SimConfig::default()
    })
    .await;
    for endpoint in [
        SimEndpoint::Projects,
        SimEndpoint::Clusters,
        SimEndpoint::Create,
    ] {
        sim.sim
            .fail(endpoint, Fault::Delay(Duration::from_millis(30)));
    }
    let exporter = sim
        .exporter(&[services(), query("clusters", GroupBy::Clusters, 1)])
        .tweak(|c| c.concurrency = 2)
        .ready()
        .await;
    let s = exporter.samples().await;
    for org in &sim.sim.dataset().orgs {
        assert_eq!(s.up("clusters", &org.id), Some(1.0));
    }
    assert!(sim.sim.requests(SimEndpoint::Clusters) >= 18);
    let max = sim.sim.max_in_flight();
    assert!((1..=2).contains(&max), "{max} requests in flight at once");
    exporter.stop().await;
}

/// Two HA replicas with the same configuration serve identical cost series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_identical_series() {
    let sim = start_sim(SimConfig::default()).await;
    let queries = [
        query("services", GroupBy::Ungrouped, 2),
        controlled("top1", GroupBy::Clusters, 2, "top: 1"),
    ];
    let a = sim.exporter(&queries).start().await;
    let b = sim.exporter(&queries).start().await;
    a.wait_ready().await;
    b.wait_ready().await;
    let (sa, sb) = (a.samples().await, b.samples().await);
    for q in ["services", "top1"] {
        assert!(!sa.costs(q).is_empty());
        assert_eq!(sa.costs(q), sb.costs(q), "{q}");
    }
    a.stop().await;
    b.stop().await;
}
