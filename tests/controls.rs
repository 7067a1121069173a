//! Cardinality controls on the default queries, end to end against the simulator (issue 20):
//! the `clusters` query's controls hold for its `(unattributed)` remainders too. The series
//! limit counts them, a denied project keeps no series of its own name, and the sums stay
//! exact without a negative series that Atlas did not bill.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;

use atlas_cost_exporter::config::{GroupBy, QuerySpec};
use atlas_cost_exporter::controls::{Controls, FileControls};
use common::*;

const MONTHS: u32 = 3;

fn controlled(name: &str, group_by: GroupBy, yaml: &str) -> QuerySpec {
    let file: FileControls = serde_norway::from_str(yaml).unwrap();
    QuerySpec {
        controls: Controls::from_file(
            "test",
            file,
            MONTHS,
            &atlas_cost_exporter::series::TagLabels::default(),
        )
        .unwrap(),
        ..query(name, group_by, MONTHS)
    }
}

/// The three default queries, the `clusters` one with `controls`.
fn defaults_with_clusters(controls: &str) -> [QuerySpec; 3] {
    [
        query("services", GroupBy::Ungrouped, MONTHS),
        query("projects", GroupBy::Projects, MONTHS),
        controlled("clusters", GroupBy::Clusters, controls),
    ]
}

/// Every month of `query`'s usage series adds up to the `services` query's month, to the
/// cent.
fn assert_adds_up_to_services(s: &Samples, query: &str) {
    let by_month = |q: &str| -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for (labels, v) in s.costs(q) {
            #[allow(clippy::cast_possible_truncation)]
            let cents = (v * 100.0).round() as i64;
            *out.entry(labels["month"].clone()).or_insert(0) += cents;
        }
        out
    };
    assert_eq!(by_month(query), by_month("services"), "{query} by month");
}

/// No usage series of `query` is negative, except where Atlas's own credits are: a series of
/// the `Credits` service, or a service-less `(other)` no lower than the month's credits.
fn assert_negative_only_by_credits(s: &Samples, query: &str) {
    let mut credits: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, v) in s.costs("services") {
        if labels.get("atlas_service").map(String::as_str) == Some("Credits") {
            *credits.entry(labels["month"].clone()).or_default() += v;
        }
    }
    for (labels, v) in s.costs(query) {
        if v >= 0.0 {
            continue;
        }
        let service = labels.get("atlas_service").map(String::as_str);
        let month_credits = credits.get(&labels["month"]).copied().unwrap_or(0.0);
        assert!(
            service == Some("Credits") || (service.is_none() && v >= month_credits - 0.005),
            "a negative series Atlas did not bill: {labels:?} = {v}"
        );
    }
}

/// `max_series: 12` on `clusters` next to the default `services` and `projects` queries:
/// the query serves at most 12 usage series, its remainders included, says how many it shed,
/// and still adds up to the org's total, month by month.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_series_caps_everything_the_query_serves_remainders_included() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let exporter = sim
        .exporter(&defaults_with_clusters("max_series: 12"))
        .ready()
        .await;
    let s = exporter.samples().await;
    assert_eq!(s.up("clusters", &org), Some(1.0));
    let clusters = s.costs("clusters");
    assert!(
        clusters.len() <= 12,
        "{} series: {clusters:?}",
        clusters.len()
    );
    let labels = [("query", "clusters"), ("org_id", org.as_str())];
    assert_eq!(
        s.value("atlas_cost_query_series", &labels),
        Some(clusters.len() as f64)
    );
    assert!(s.value("atlas_cost_query_series_shed", &labels).unwrap() > 0.0);
    assert_adds_up_to_services(&s, "clusters");
    assert_negative_only_by_credits(&s, "clusters");
    exporter.stop().await;
}

/// A project denied on `clusters` (as in the issue: `deny` on its name, `max_series: 12`)
/// disappears from that query: no series carries its name, its remainders included, its
/// spend is in the org's `project_name="(other)"` once, and nothing negative cancels a
/// double count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_project_has_no_series_of_its_name_remainders_included() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let denied = sim.sim.dataset().orgs[0]
        .listed_projects()
        .next()
        .unwrap()
        .name
        .clone();
    let controls = format!(
        "{{deny: {{project_name: '{}'}}, max_series: 12}}",
        regex::escape(&denied).replace('\'', "''")
    );
    let exporter = sim
        .exporter(&defaults_with_clusters(&controls))
        .ready()
        .await;
    let s = exporter.samples().await;
    assert_eq!(s.up("clusters", &org), Some(1.0));
    let clusters = s.costs("clusters");
    let named: Vec<_> = clusters
        .keys()
        .filter(|l| l.get("project_name") == Some(&denied))
        .collect();
    assert!(named.is_empty(), "{denied:?} is still served: {named:?}");
    assert!(
        clusters
            .keys()
            .any(|l| l.get("project_name").map(String::as_str) == Some("(other)"))
    );
    assert!(clusters.len() <= 12, "{}", clusters.len());
    assert_adds_up_to_services(&s, "clusters");
    assert_negative_only_by_credits(&s, "clusters");
    // The projects query has no controls: the project is there, under its name.
    assert!(
        s.costs("projects")
            .keys()
            .any(|l| l.get("project_name") == Some(&denied))
    );
    exporter.stop().await;
}

/// docs/configuration.md's `allow: {project_name: ...}` on `clusters`: only allowed projects keep
/// series of their own, remainders included; everything else, org-level charges too, is in
/// the org's `(other)`, and the sums stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_keeps_only_allowed_projects_remainders_included() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let allowed = sim.sim.dataset().orgs[0]
        .listed_projects()
        .nth(1)
        .unwrap()
        .name
        .clone();
    let controls = format!(
        "allow: {{project_name: '{}'}}",
        regex::escape(&allowed).replace('\'', "''")
    );
    let exporter = sim
        .exporter(&defaults_with_clusters(&controls))
        .ready()
        .await;
    let s = exporter.samples().await;
    assert_eq!(s.up("clusters", &org), Some(1.0));
    for labels in s.costs("clusters").keys() {
        let project = labels.get("project_name").map(String::as_str);
        assert!(
            project == Some(allowed.as_str()) || project == Some("(other)"),
            "{labels:?}"
        );
    }
    assert_adds_up_to_services(&s, "clusters");
    assert_negative_only_by_credits(&s, "clusters");
    exporter.stop().await;
}
