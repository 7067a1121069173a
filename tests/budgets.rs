//! Forecasts and budgets through the real exporter and simulator, over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, UNIX_EPOCH};

use atlas_cost_exporter::config::GroupBy;
use atlas_cost_exporter::month::Month;
use atlas_cost_exporter::simulator::{self as sim, SimConfig};
use common::*;

/// 2028-02-10T12:00:00Z: a leap February with nine days of data posted.
const FEB_10_2028: u64 = 1_833_753_600 + 43_200;

fn budget_file(org_id: &str, clusters: &str) -> std::path::PathBuf {
    let path = temp_dir().join("config.yml");
    std::fs::write(
        &path,
        format!(
            "orgs:\n  - id: {org_id}\nbudgets:\n  - name: org-total\n    amount_usd: 1\n    scope: {{org_id: {org_id}}}\n  - name: first-clusters\n    amount_usd: 1000\n    scope:\n      match: {{cluster_name: '{clusters}'}}\n"
        ),
    )
    .unwrap();
    path
}

/// In a leap February, every month-to-date series gets a forecast of mtd * 29 / 9 on the
/// 10th; an org budget's consumed ratio is the org's month-to-date (services query) over the
/// budget, and its forecast ratio scales the same way; a matcher budget sums exactly the
/// clusters it matches. Both formats parse and promtool finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_and_budgets_follow_the_month_to_date() {
    let february = Month::new(2028, 2).unwrap();
    let sim = start_sim(SimConfig {
        orgs: 1,
        current_month: Some(february),
        ..SimConfig::default()
    })
    .await;
    let org = sim.org(0);
    // The matcher budget covers the first two cluster names of the first project.
    let names: Vec<String> = sim.sim.dataset().orgs[0].projects[0].clusters[..2]
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let pattern = names
        .iter()
        .map(|n| regex::escape(n))
        .collect::<Vec<_>>()
        .join("|");
    let path = budget_file(&org, &pattern);
    let parsed = config_from_file(&path, "mdb_sa_id_demo", "mdb_sa_sk_demo").unwrap();
    let exporter = sim
        .exporter(&[
            query("services", GroupBy::Ungrouped, 2),
            query("clusters", GroupBy::Clusters, 2),
        ])
        .tweak(|c| {
            c.budgets = parsed.budgets;
            c.clock = fixed_clock(UNIX_EPOCH + Duration::from_secs(FEB_10_2028));
        })
        .ready()
        .await;
    let s = exporter.samples().await;

    let mtd: Vec<_> = s.named("atlas_cost_month_to_date_usd").collect();
    assert!(!mtd.is_empty());
    for m in &mtd {
        let f = s
            .named("atlas_cost_month_forecast_usd")
            .find(|f| f.labels == m.labels)
            .unwrap_or_else(|| panic!("no forecast for {:?}", m.labels));
        let want = m.value.unwrap() * 29.0 / 9.0;
        assert!(
            (f.value.unwrap() - want).abs() < 1e-5,
            "{:?}: {:?} vs {want}",
            m.labels,
            f.value
        );
    }
    assert_eq!(
        s.named("atlas_cost_month_forecast_usd").count(),
        mtd.len(),
        "one forecast per month-to-date series"
    );
    // The previous month is January, with the labels of the month-to-date series.
    let previous = s
        .named("atlas_cost_previous_month_usd")
        .map(|x| x.value.unwrap())
        .sum::<f64>();
    let january: f64 = s
        .named("atlas_cost_usage_usd")
        .filter(|x| x.label("month") == Some("2028-01"))
        .map(|x| x.value.unwrap())
        .sum();
    assert!((previous - january).abs() < 1e-6 && january > 0.0);

    let want_cents = sim.sim.dataset().total_cents_grouped(
        &org,
        february,
        february.plus(1),
        sim::GroupBy::Services,
        false,
    );
    let labels = [("budget", "org-total"), ("org_id", org.as_str())];
    assert_eq!(s.value("atlas_cost_budget_usd", &labels), Some(1.0));
    let consumed = s
        .value("atlas_cost_budget_consumed_ratio", &labels)
        .unwrap();
    #[allow(clippy::cast_precision_loss)]
    let want = want_cents as f64 / 100.0;
    assert!((consumed - want).abs() < 1e-6, "{consumed} vs {want}");
    let forecast = s
        .value("atlas_cost_budget_forecast_ratio", &labels)
        .unwrap();
    assert!((forecast - want * 29.0 / 9.0).abs() < 1e-5);

    let matched: f64 = s
        .named("atlas_cost_month_to_date_usd")
        .filter(|x| {
            x.label("query") == Some("clusters")
                && x.label("cluster_name")
                    .is_some_and(|c| names.iter().any(|n| n == c))
        })
        .map(|x| x.value.unwrap())
        .sum();
    assert!(matched > 0.0, "the matched clusters bill something");
    let ratio = s
        .value(
            "atlas_cost_budget_consumed_ratio",
            &[("budget", "first-clusters")],
        )
        .unwrap();
    assert!(
        (ratio * 1000.0 - matched).abs() < 1e-6,
        "{ratio} vs {matched}"
    );

    let text = exporter.scrape_text().await;
    assert_eq!(promtool_check(&text), "");
    let om = parse(&exporter.scrape_openmetrics().await, "openmetrics");
    assert!(
        om.iter()
            .any(|x| x.name == "atlas_cost_budget_forecast_ratio")
    );
    exporter.stop().await;
}

/// A budget whose query the org does not have is refused at start-up, naming the key.
#[test]
fn budget_on_a_missing_query_is_refused() {
    let path = temp_dir().join("config.yml");
    let org = "5f1b2c3d4e5f6a7b8c9d0e1f";
    std::fs::write(
        &path,
        format!(
            "orgs:\n  - id: {org}\n    queries: [{{name: storage}}]\nbudgets:\n  - {{name: b, amount_usd: 10, scope: {{org_id: {org}}}}}\n"
        ),
    )
    .unwrap();
    let msg = config_from_file(&path, "id", "s").unwrap_err().to_string();
    assert!(msg.starts_with("budgets[0].query:"), "{msg}");
    assert!(msg.contains("services"), "{msg}");
}
