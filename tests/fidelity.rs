//! Fidelity to the real Atlas: the exporter against every variant the simulator serves where
//! the public record is silent (JSON key spellings, CSV layouts), and against what real
//! accounts have (Flex clusters on their own listing, deleted clusters and projects, org- and
//! project-level charges). Each default query adds up to the org's total, to the cent.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use atlas_cost_exporter::config::{GroupBy, QuerySpec, ResultFormat};
use atlas_cost_exporter::simulator::{CsvLayout, Fault, RowKeys, SimConfig, SimEndpoint};
use common::*;

/// Months read back: enough to reach the deleted project (deleted six months ago).
const MONTHS: u32 = 8;

/// The three default queries (the library's own) over [`MONTHS`], in `format`.
fn defaults_in(format: ResultFormat) -> Vec<QuerySpec> {
    QuerySpec::defaults(MONTHS)
        .into_iter()
        .map(|q| QuerySpec { format, ..q })
        .collect()
}

/// The [`fast`] exporter on `sim` with the default queries in JSON, once ready.
async fn fast_json(sim: &Sim) -> Exporter {
    sim.fast_exporter(&defaults_in(ResultFormat::Json))
        .ready()
        .await
}

/// Each default query adds up to the org total; the `projects` and `clusters` queries
/// attribute exactly the spend of what the listings return, and the rest is in their
/// `(unattributed)` remainders.
fn assert_adds_up(s: &Samples, sim: &Sim, what: &str) {
    let data = sim.sim.dataset();
    let (start, end) = window(sim.sim.current_month(), MONTHS);
    for org in &data.orgs {
        let total = data.total_cents(&org.id, start, end);
        for q in ["services", "projects", "clusters"] {
            assert_eq!(s.up(q, &org.id), Some(1.0), "{what}: {q} is up");
            assert_eq!(
                s.total_cents("atlas_cost_usage_usd", q, &org.id),
                total,
                "{what}: query {q} adds up to the org total"
            );
        }
        assert_eq!(
            s.attributed_cents("atlas_cost_usage_usd", "projects", &org.id),
            listed_project_cents(&data, &org.id, start, end),
            "{what}: the projects query attributes the listed projects' spend"
        );
        assert_eq!(
            s.attributed_cents("atlas_cost_usage_usd", "clusters", &org.id),
            listed_cluster_cents(&data, &org.id, start, end),
            "{what}: the clusters query attributes the listed clusters' spend"
        );
        // The deleted project and the clusters no listing returns are in the remainders.
        let unlisted = data.unlisted_cents(&org.id, start, end, true);
        assert_ne!(unlisted, 0, "{what}: the simulator bills unlisted clusters");
    }
}

/// The default queries add up to the org total, to the cent, with either spelling of the
/// project and cluster keys in JSON rows (`projectId`/`clusterId` and
/// `groupId`/`clusterUniqueId`); Flex clusters, found only by their own listing, are
/// attributed to themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_default_query_adds_up_to_the_org_total_across_key_spellings() {
    for keys in [RowKeys::ProjectId, RowKeys::GroupId] {
        let sim = start_sim(SimConfig {
            orgs: 1,
            row_keys: keys,
            ..SimConfig::default()
        })
        .await;
        let exporter = sim.exporter(&defaults_in(ResultFormat::Json)).ready().await;
        let s = exporter.samples().await;
        assert_adds_up(&s, &sim, &format!("{keys:?}"));
        let flex: BTreeSet<String> = sim.sim.dataset().orgs[0]
            .all_clusters()
            .filter(|(_, c)| c.is_flex())
            .map(|(_, c)| c.id.clone())
            .collect();
        assert!(!flex.is_empty());
        let served: BTreeSet<String> = s
            .named("atlas_cost_usage_usd")
            .filter_map(|x| x.label("cluster_id").map(str::to_owned))
            .collect();
        assert!(
            flex.is_subset(&served),
            "{keys:?}: every Flex cluster has its series"
        );
        assert!(
            sim.sim.requests(SimEndpoint::FlexClusters) > 0,
            "Flex clusters listed"
        );
        exporter.stop().await;
    }
}

/// Rows whose project and cluster keys are spelled in a way no client could guess do not
/// pass as data without labels: the grouped queries fail with `reason="decode"`, and the
/// ungrouped `services` query, which needs no such key, still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_dimension_keys_fail_the_grouped_queries_as_decode() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        row_keys: RowKeys::Unknown,
        ..SimConfig::default()
    })
    .await;
    let org = sim.org(0);
    let exporter = fast_json(&sim).await;
    let s = exporter
        .wait_for("both grouped queries counted as decode", |s| {
            s.errors("projects", &org, "decode") > 0.0 && s.errors("clusters", &org, "decode") > 0.0
        })
        .await;
    assert_eq!(s.up("services", &org), Some(1.0));
    assert_eq!(s.up("projects", &org), Some(0.0));
    assert_eq!(s.up("clusters", &org), Some(0.0));
    assert!(s.costs("projects").is_empty() && s.costs("clusters").is_empty());
    exporter.stop().await;
}

/// Every plausible CSV layout (the simulator's extended one with a preamble, the spec's
/// column labels, a header in other cases with stray spaces and trailing empty cells) is
/// read to the cent; the spec's garbled example shape never passes as an empty success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_layouts_are_read_to_the_cent_and_the_garbled_example_is_refused() {
    for layout in [CsvLayout::Extended, CsvLayout::Spec, CsvLayout::NoPreamble] {
        let sim = start_sim(SimConfig {
            orgs: 1,
            csv_layout: layout,
            ..SimConfig::default()
        })
        .await;
        let exporter = sim.exporter(&defaults_in(ResultFormat::Csv)).ready().await;
        assert_adds_up(&exporter.samples().await, &sim, &format!("{layout:?}"));
        exporter.stop().await;
    }
    let sim = start_sim(SimConfig {
        orgs: 1,
        csv_layout: CsvLayout::SpecExample,
        ..SimConfig::default()
    })
    .await;
    let org = sim.org(0);
    let exporter = sim
        .fast_exporter(&defaults_in(ResultFormat::Csv))
        .start()
        .await;
    let s = exporter
        .wait_for("every query counted as decode", |s| {
            ["services", "projects", "clusters"]
                .iter()
                .all(|q| s.errors(q, &org, "decode") > 0.0)
        })
        .await;
    for q in ["services", "projects", "clusters"] {
        assert_eq!(s.up(q, &org), Some(0.0), "{q}");
    }
    assert_eq!(s.named("atlas_cost_usage_usd").count(), 0);
    exporter.stop().await;
}

/// Waits for two more refreshes (four cluster listings each) after `listings`, then for the
/// clusters query to be up; returns that scrape.
async fn clusters_up_two_refreshes_on(
    sim: &Sim,
    exporter: &Exporter,
    org: &str,
    listings: u64,
    what: &str,
) -> Samples {
    exporter
        .wait_for(what, |_| {
            sim.sim.requests(SimEndpoint::Clusters) > listings + 2 * 4
        })
        .await;
    exporter
        .wait_for("the clusters query up", |s| {
            s.up("clusters", org) == Some(1.0)
        })
        .await
}

/// A cluster deleted while the exporter runs keeps its history: its past months are still
/// attributed to it (its id stays in the query), and the clusters query still adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cluster_keeps_its_history() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let exporter = fast_json(&sim).await;
    let data = sim.sim.dataset();
    let victim = data.orgs[0].projects[0].clusters[0].id.clone();
    let history = |s: &Samples| -> BTreeMap<String, f64> {
        s.named("atlas_cost_usage_usd")
            .filter(|x| x.label("query") == Some("clusters"))
            .filter(|x| x.label("cluster_id") == Some(victim.as_str()))
            .map(|x| {
                (
                    format!(
                        "{}/{}",
                        x.label("month").unwrap(),
                        x.label("atlas_service").unwrap()
                    ),
                    x.value.unwrap(),
                )
            })
            .collect()
    };
    let before = history(&exporter.samples().await);
    assert!(
        before.len() > MONTHS as usize,
        "the cluster bills every month"
    );
    let listings = sim.sim.requests(SimEndpoint::Clusters);
    assert!(sim.sim.delete_cluster(&victim));
    let s = clusters_up_two_refreshes_on(
        &sim,
        &exporter,
        &org,
        listings,
        "two more refreshes after the deletion",
    )
    .await;
    let after = history(&s);
    assert_eq!(after, before, "the deleted cluster's months stay");
    exporter.stop().await;
}

/// A failed cluster listing fails the clusters query only: the projects query stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cluster_listing_does_not_fail_the_projects_query() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let exporter = fast_json(&sim).await;
    sim.sim.fail(SimEndpoint::Clusters, Fault::Status(500));
    let s = exporter
        .wait_for("clusters down on the listing", |s| {
            s.up("clusters", &org) == Some(0.0) && s.errors("clusters", &org, "server_error") > 0.0
        })
        .await;
    assert_eq!(s.up("projects", &org), Some(1.0));
    assert_eq!(s.errors("projects", &org, "server_error"), 0.0);
    exporter.stop().await;
}

/// A project gone while its clusters are listed (404) has no clusters: the clusters query
/// stays up, and keeps the clusters it saw before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_gone_during_listing_has_no_clusters() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let exporter = fast_json(&sim).await;
    let good = exporter.samples().await.costs("clusters");
    let listings = sim.sim.requests(SimEndpoint::Clusters);
    sim.sim.fail(SimEndpoint::Clusters, Fault::Status(404));
    let s = clusters_up_two_refreshes_on(
        &sim,
        &exporter,
        &org,
        listings,
        "two refreshes with every listing 404",
    )
    .await;
    assert_eq!(s.errors("clusters", &org, "client_error"), 0.0);
    assert_eq!(s.costs("clusters"), good);
    exporter.stop().await;
}

/// A listing whose server ignores `pageNum` (the same page again, with a `totalCount` that
/// promises more) is read twice, not 10,000 times: a page that brings no new id ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_stops_when_a_page_brings_no_new_id() {
    let sim = start_sim(with_orgs(1)).await;
    let data = sim.sim.dataset();
    let org = data.orgs[0].id.clone();
    let results: Vec<String> = data.orgs[0]
        .listed_projects()
        .map(|p| format!(r#"{{"id":"{}","name":"p"}}"#, p.id))
        .collect();
    sim.sim.fail(
        SimEndpoint::Projects,
        body_fault(
            200,
            JSON,
            &format!(
                r#"{{"results":[{}],"totalCount":100000}}"#,
                results.join(",")
            ),
        ),
    );
    let exporter = sim
        .exporter(&[query("projects", GroupBy::Projects, 1)])
        .tweak(|c| c.refresh_interval = Duration::from_secs(3600))
        .ready()
        .await;
    let s = exporter
        .wait_for("the projects query up", |s| {
            s.up("projects", &org) == Some(1.0)
        })
        .await;
    assert!(!s.costs("projects").is_empty());
    assert_eq!(sim.sim.requests(SimEndpoint::Projects), 2);
    exporter.stop().await;
}

/// `--demo` honours `--shard.count`/`--shard.index`: two shards split the demo's orgs, each
/// org on exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_splits_its_orgs_between_shards() {
    let mut seen: Vec<BTreeSet<String>> = Vec::new();
    for index in 0..2 {
        let mut cfg = config("http://127.0.0.1:1", Vec::new());
        let shard = atlas_cost_exporter::fleet::Shard::new(2, index).unwrap();
        atlas_cost_exporter::start_demo(&mut cfg, 1, &shard)
            .await
            .unwrap();
        seen.push(cfg.orgs.iter().map(|o| o.id.clone()).collect());
    }
    let mut whole = config("http://127.0.0.1:1", Vec::new());
    atlas_cost_exporter::start_demo(&mut whole, 1, &Default::default())
        .await
        .unwrap();
    let all: BTreeSet<String> = whole.orgs.iter().map(|o| o.id.clone()).collect();
    assert!(seen[0].is_disjoint(&seen[1]), "no org on both shards");
    assert_eq!(
        seen[0].union(&seen[1]).cloned().collect::<BTreeSet<_>>(),
        all
    );
}
