//! End-to-end behaviour of the exporter against the built-in Atlas simulator, over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::Read as _;
use std::time::{Duration, UNIX_EPOCH};

use atlas_cost_exporter::config::{Credentials, GroupBy, QuerySpec, ResultFormat, Secret};
use atlas_cost_exporter::month::Month;
use atlas_cost_exporter::simulator::{self as sim, Fault, NotReady, SimConfig, SimEndpoint};
use common::*;

/// Checks that every org's three default queries each add up, to the cent, to the org's
/// total over the window (the `projects` and `clusters` queries through their
/// `(unattributed)` remainders), and that what they attribute to a project or cluster is
/// exactly the spend of the projects and clusters the listings return (Flex clusters and
/// clusters deleted with retained backups included).
fn assert_exact_totals(s: &Samples, data: &sim::Dataset, current: Month, months: u32) {
    let (start, end) = window(current, months);
    for org in &data.orgs {
        let total = data.total_cents(&org.id, start, end);
        assert_ne!(total, 0, "the simulator bills something");
        for q in ["services", "projects", "clusters"] {
            assert_eq!(
                s.total_cents("atlas_cost_usage_usd", q, &org.id),
                total,
                "total of query {q} for org {}",
                org.id
            );
        }
        let listed_projects = listed_project_cents(data, &org.id, start, end);
        assert_eq!(
            s.attributed_cents("atlas_cost_usage_usd", "projects", &org.id),
            listed_projects,
            "attributed by the projects query of org {}",
            org.id
        );
        let listed_clusters = listed_cluster_cents(data, &org.id, start, end);
        assert_eq!(
            s.attributed_cents("atlas_cost_usage_usd", "clusters", &org.id),
            listed_clusters,
            "attributed by the clusters query of org {}",
            org.id
        );
    }
}

/// With a service account, every org's default queries report exactly the simulator's
/// amounts, and the month-to-date gauge carries the current month only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_exports_exact_totals() {
    let sim = start_sim(SimConfig::default()).await;
    let exporter = sim.exporter(&QuerySpec::defaults(3)).ready().await;
    let s = exporter.samples().await;
    let current = sim.sim.current_month();
    assert_exact_totals(&s, &sim.sim.dataset(), current, 3);
    let months: BTreeSet<&str> = s
        .named("atlas_cost_usage_usd")
        .filter_map(|x| x.label("month"))
        .collect();
    let want: BTreeSet<String> = (0..3).map(|i| current.plus(-i).to_string()).collect();
    assert_eq!(months, want.iter().map(String::as_str).collect());
    for org in &sim.sim.dataset().orgs {
        let (start, end) = (current, current.plus(1));
        let mtd = s.total_cents("atlas_cost_month_to_date_usd", "services", &org.id);
        assert_eq!(
            mtd,
            sim.sim.dataset().total_cents_grouped(
                &org.id,
                start,
                end,
                sim::GroupBy::Services,
                false
            )
        );
        assert_eq!(s.up("clusters", &org.id), Some(1.0));
    }
    // The clusters query carries every dimension; the services query only org and service.
    let c = s
        .named("atlas_cost_usage_usd")
        .find(|x| x.label("query") == Some("clusters"))
        .unwrap();
    // The label names are the contract, so they are spelled out here, not taken from the crate.
    for l in [
        "org_id",
        "org_name",
        "project_id",
        "project_name",
        "cluster_id",
        "cluster_name",
        "atlas_service",
        "month",
    ] {
        assert!(c.labels.contains_key(l), "clusters series lacks {l}: {c:?}");
    }
    let sv = s
        .named("atlas_cost_usage_usd")
        .find(|x| x.label("query") == Some("services"))
        .unwrap();
    assert!(!sv.labels.contains_key("project_id") && !sv.labels.contains_key("cluster_name"));
    exporter.stop().await;
}

/// API keys (HTTP Digest) work as well as a service account, and no token is requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_digest_exports_exact_totals() {
    let sim = start_sim(SimConfig::default()).await;
    let exporter = sim
        .exporter(&QuerySpec::defaults(2))
        .credentials(&api_key())
        .ready()
        .await;
    let s = exporter.samples().await;
    assert_exact_totals(&s, &sim.sim.dataset(), sim.sim.current_month(), 2);
    assert_eq!(sim.sim.requests(SimEndpoint::Token), 0);
    exporter.stop().await;
}

/// Each form of "not ready" (envelope 102, a poll that times out, a connection closed
/// mid-answer, and a plain final 200 without envelope) is waited out, and the totals are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_not_ready_form_is_waited_out() {
    for (form, ignore_envelope) in [
        (NotReady::Envelope, false),
        (NotReady::Close, false),
        (NotReady::Timeout(Duration::from_millis(800)), false),
        (NotReady::Envelope, true),
    ] {
        let sim = start_sim(SimConfig {
            orgs: 1,
            polls_before_ready: 3,
            not_ready: form,
            ignore_envelope,
            ..SimConfig::default()
        })
        .await;
        let exporter = sim
            .exporter(&[query("services", GroupBy::Ungrouped, 3)])
            .tweak(|c| c.request_timeout = Duration::from_millis(300))
            .ready()
            .await;
        let s = exporter.samples().await;
        let org = &sim.sim.dataset().orgs[0].id;
        assert_eq!(
            s.up("services", org),
            Some(1.0),
            "{form:?} ignore_envelope={ignore_envelope}"
        );
        let (start, end) = window(sim.sim.current_month(), 3);
        assert_eq!(
            s.total_cents("atlas_cost_usage_usd", "services", org),
            sim.sim
                .dataset()
                .total_cents_grouped(org, start, end, sim::GroupBy::Services, false),
            "{form:?}"
        );
        let polls = s
            .value("atlas_cost_query_polls_total", &[("query", "services")])
            .unwrap();
        assert!(
            polls >= 4.0,
            "{form:?}: {polls} polls for 3 not-ready answers"
        );
        exporter.stop().await;
    }
}

/// A CSV query reports the same amounts as the same query in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_results_match_json_results() {
    let sim = start_sim(with_orgs(1)).await;
    let mut csv = query("clusters_csv", GroupBy::Clusters, 4);
    csv.format = ResultFormat::Csv;
    let queries = [query("clusters", GroupBy::Clusters, 4), csv];
    let exporter = sim.exporter(&queries).ready().await;
    let s = exporter.samples().await;
    let strip = |q: &str| {
        s.costs(q)
            .into_iter()
            .map(|(mut l, v)| {
                l.remove("query");
                (l, v)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (json, csv) = (strip("clusters"), strip("clusters_csv"));
    assert!(!json.is_empty());
    assert_eq!(json, csv);
    exporter.stop().await;
}

/// Discovery reads every page: with two items a page, every project and cluster is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_reads_every_page() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        projects_per_org: 5,
        clusters_per_project: 3,
        max_page_size: 2,
        ..SimConfig::default()
    })
    .await;
    let exporter = sim.exporter(&QuerySpec::defaults(1)).ready().await;
    let s = exporter.samples().await;
    let ids = |q: &str, l: &str| -> HashSet<String> {
        s.named("atlas_cost_usage_usd")
            .filter(|x| x.label("query") == Some(q))
            .filter_map(|x| x.label(l).map(str::to_owned))
            .collect()
    };
    assert_eq!(ids("projects", "project_id").len(), 5);
    // Every listed cluster that bills in the month: 15 dedicated ones, the Flex ones and
    // those deleted with retained backups.
    let data = sim.sim.dataset();
    let month = sim.sim.current_month();
    let listed: HashSet<String> = data.orgs[0]
        .all_clusters()
        .filter(|(p, c)| !p.is_deleted() && (c.in_clusters_listing(true) || c.in_flex_listing()))
        .filter(|(_, c)| data.cluster_cents(&c.id, month, month.plus(1)) != 0)
        .map(|(_, c)| c.id.clone())
        .collect();
    assert!(
        listed.len() > 15,
        "Flex and retained-backup clusters bill too"
    );
    assert_eq!(ids("clusters", "cluster_id"), listed);
    assert_exact_totals(&s, &sim.sim.dataset(), sim.sim.current_month(), 1);
    assert!(
        sim.sim.requests(SimEndpoint::Projects) >= 3,
        "5 projects at 2 a page take 3 pages"
    );
    exporter.stop().await;
}

/// In January, a three-month window reaches back across the year end to November, and the
/// month-to-date gauge carries January only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn month_window_crosses_the_year_end() {
    let january = Month::new(2027, 1).unwrap();
    let sim = start_sim(SimConfig {
        orgs: 1,
        current_month: Some(january),
        ..SimConfig::default()
    })
    .await;
    let exporter = sim
        .exporter(&QuerySpec::defaults(3))
        .tweak(|c| {
            // 2027-01-15T12:00:00Z
            c.clock =
                fixed_clock(UNIX_EPOCH + Duration::from_secs(1_798_761_600 + 14 * 86_400 + 43_200));
        })
        .ready()
        .await;
    let s = exporter.samples().await;
    let months: BTreeSet<&str> = s
        .named("atlas_cost_usage_usd")
        .filter_map(|x| x.label("month"))
        .collect();
    assert_eq!(months, BTreeSet::from(["2026-11", "2026-12", "2027-01"]));
    let org = &sim.sim.dataset().orgs[0].id;
    for q in ["services", "projects", "clusters"] {
        let january_usage: f64 = s
            .named("atlas_cost_usage_usd")
            .filter(|x| x.label("query") == Some(q) && x.label("month") == Some("2027-01"))
            .filter_map(|x| x.value)
            .sum();
        let mtd: f64 = s
            .named("atlas_cost_month_to_date_usd")
            .filter(|x| x.label("query") == Some(q))
            .filter_map(|x| x.value)
            .sum();
        assert!(
            (january_usage - mtd).abs() < 0.001,
            "{q}: {january_usage} vs {mtd}"
        );
    }
    assert_exact_totals(&s, &sim.sim.dataset(), january, 3);
    assert!(s.up("services", org) == Some(1.0));
    exporter.stop().await;
}

/// Rows that map to the same label set are summed into one series: no duplicate series, and
/// the totals stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_rows_are_summed_into_one_series() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        duplicate_rows: true,
        ..SimConfig::default()
    })
    .await;
    let exporter = sim.exporter(&QuerySpec::defaults(2)).ready().await;
    let s = exporter.samples().await;
    let mut seen = HashSet::new();
    for x in &s.0 {
        assert!(
            seen.insert((x.name.clone(), x.labels.clone())),
            "duplicate series {x:?}"
        );
    }
    assert_exact_totals(&s, &sim.sim.dataset(), sim.sim.current_month(), 2);
    exporter.stop().await;
}

/// Names with quotes, backslashes, newlines, unicode, exposition look-alikes, empty and
/// very long values come back unchanged through both formats' real parsers, and promtool
/// finds nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_survive_both_formats() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        projects_per_org: 6,
        hostile_names: true,
        ..SimConfig::default()
    })
    .await;
    let exporter = sim.exporter(&QuerySpec::defaults(1)).ready().await;
    let text = exporter.scrape_text().await;
    assert_eq!(promtool_check(&text), "");
    let om = exporter.scrape_openmetrics().await;
    let data = sim.sim.dataset();
    for (body, format) in [(&text, "text"), (&om, "openmetrics")] {
        let samples = Samples(parse(body, format));
        let names: HashSet<&str> = samples
            .named("atlas_cost_usage_usd")
            .filter(|x| x.label("query") == Some("projects"))
            .filter_map(|x| x.label("project_name"))
            .collect();
        for p in &data.orgs[0].projects {
            if p.name.is_empty() {
                continue;
            }
            assert!(
                names.contains(p.name.as_str()),
                "{format}: project name {:?} lost",
                p.name
            );
        }
        assert!(
            samples.named("fake_metric").next().is_none(),
            "{format}: injected a series"
        );
        let ids_without_name = samples
            .named("atlas_cost_usage_usd")
            .filter(|x| x.label("query") == Some("projects") && x.label("project_id").is_some())
            .filter(|x| x.label("project_name").is_none())
            .count();
        assert!(
            ids_without_name > 0,
            "{format}: the empty project name is left out"
        );
    }
    exporter.stop().await;
}

/// `Accept` picks the format (OpenMetrics with `# EOF` last, or text 0.0.4), gzip is used when
/// accepted, and both carry the same cost series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_negotiation_and_gzip() {
    let sim = start_sim(with_orgs(1)).await;
    let exporter = sim.exporter(&QuerySpec::defaults(2)).ready().await;

    let text = exporter.get("/metrics", &[]).await;
    assert_eq!(
        text.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = text.text().await.unwrap();
    assert!(!text.contains("# EOF"));

    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let om = exporter
        .get("/metrics", &[("Accept", prometheus_accept)])
        .await;
    assert_eq!(
        om.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"));
    assert_eq!(om.matches("# EOF").count(), 1);

    let gz = exporter
        .get(
            "/metrics",
            &[("Accept", prometheus_accept), ("Accept-Encoding", "gzip")],
        )
        .await;
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let compressed = gz.bytes().await.unwrap();
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert!(unzipped.ends_with("# EOF\n"));

    let costs = |body: &str, f: &str| Samples(parse(body, f)).costs("clusters");
    assert!(!costs(&text, "text").is_empty());
    assert_eq!(costs(&text, "text"), costs(&om, "openmetrics"));
    assert_eq!(costs(&om, "openmetrics"), costs(&unzipped, "openmetrics"));
    exporter.stop().await;
}

/// The text exposition passes `promtool check metrics` with no finding, and every self metric
/// is present from the first refresh on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_and_every_self_metric_is_there() {
    let sim = start_sim(SimConfig::default()).await;
    let exporter = sim.exporter(&QuerySpec::defaults(3)).ready().await;
    let text = exporter.scrape_text().await;
    assert_eq!(promtool_check(&text), "");
    let s = Samples(parse(&text, "text"));
    for name in [
        "atlas_cost_usage_usd",
        "atlas_cost_month_to_date_usd",
        "atlas_cost_query_up",
        "atlas_cost_query_last_success_timestamp_seconds",
        "atlas_cost_query_data_age_seconds",
        "atlas_cost_query_poll_latency_seconds_bucket",
        "atlas_cost_query_refresh_duration_seconds_count",
        "atlas_cost_query_polls_total",
        "atlas_cost_query_refresh_errors_total",
        "atlas_cost_query_series",
        "atlas_cost_api_requests_total",
        "atlas_cost_api_request_duration_seconds_bucket",
        "atlas_cost_build_info",
    ] {
        assert!(s.named(name).next().is_some(), "{name} missing");
    }
    // Build information as Prometheus's own exporters give it.
    let info = s.named("atlas_cost_build_info").next().unwrap();
    assert_eq!(info.value, Some(1.0));
    assert_eq!(info.label("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        info.label("revision"),
        Some(atlas_cost_exporter::version::REVISION)
    );
    assert_eq!(
        info.label("rustversion"),
        Some(atlas_cost_exporter::version::RUSTVERSION)
    );
    // The series gauge agrees with what is served.
    for org in &sim.sim.dataset().orgs {
        let served = s
            .named("atlas_cost_usage_usd")
            .filter(|x| x.label("query") == Some("clusters") && x.label("org_id") == Some(&org.id))
            .count();
        #[allow(clippy::cast_precision_loss)]
        let served = served as f64;
        assert_eq!(
            s.value(
                "atlas_cost_query_series",
                &[("query", "clusters"), ("org_id", &org.id)]
            ),
            Some(served)
        );
    }
    exporter.stop().await;
}

/// When Atlas starts failing, the last good values stay, `up` drops to 0, the error counter
/// names the reason and the data age grows; once Atlas recovers, so does the exporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_atlas_keeps_last_values_and_shows_staleness() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let exporter = sim
        .exporter(&[query("services", GroupBy::Ungrouped, 2)])
        .tweak(|c| c.refresh_interval = Duration::from_secs(1))
        .ready()
        .await;
    let before = exporter.samples().await;
    let good = before.costs("services");
    sim.sim.fail(SimEndpoint::Create, Fault::Status(503));
    let failing = exporter
        .wait_for("up=0 with a server_error", |s| {
            s.up("services", &org) == Some(0.0) && s.errors("services", &org, "server_error") >= 1.0
        })
        .await;
    assert_eq!(failing.costs("services"), good, "last good values are kept");
    let last_success = failing
        .value(
            "atlas_cost_query_last_success_timestamp_seconds",
            &[("query", "services")],
        )
        .unwrap();
    let aged = exporter
        .wait_for("data age past 1s", |s| {
            s.value(
                "atlas_cost_query_data_age_seconds",
                &[("query", "services")],
            )
            .is_some_and(|a| a > 1.0)
        })
        .await;
    assert_eq!(aged.costs("services"), good);
    assert_eq!(
        aged.value(
            "atlas_cost_query_last_success_timestamp_seconds",
            &[("query", "services")]
        ),
        Some(last_success),
        "failed refreshes do not count as successes"
    );
    let landing = exporter.get("/", &[]).await.text().await.unwrap();
    assert!(
        landing.contains("failing") && landing.contains("503"),
        "{landing}"
    );

    sim.sim.clear_faults();
    sim.sim.set_amount_scale(2, 1);
    let recovered = exporter
        .wait_for("up=1 again with new values", |s| {
            s.up("services", &org) == Some(1.0) && s.costs("services") != good
        })
        .await;
    let (start, end) = window(sim.sim.current_month(), 2);
    assert_eq!(
        recovered.total_cents("atlas_cost_usage_usd", "services", &org),
        sim.sim
            .dataset()
            .total_cents_grouped(&org, start, end, sim::GroupBy::Services, false)
    );
    exporter.stop().await;
}

/// A 403 on discovery fails only the queries that need project or cluster ids, with reason
/// `forbidden`; the services query keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_discovery_fails_only_the_queries_that_need_ids() {
    let sim = start_sim(with_orgs(1)).await;
    sim.sim.fail(SimEndpoint::Projects, Fault::Status(403));
    let org = sim.org(0);
    let exporter = sim.exporter(&QuerySpec::defaults(2)).ready().await;
    let s = exporter.samples().await;
    assert_eq!(s.up("services", &org), Some(1.0));
    for q in ["projects", "clusters"] {
        assert_eq!(s.up(q, &org), Some(0.0));
        assert_eq!(s.errors(q, &org, "forbidden"), 1.0);
    }
    assert!(!s.costs("services").is_empty());
    exporter.stop().await;
}

/// Wrong credentials fail with reason `auth`, after one token request, not a retry storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_once_with_reason_auth() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let wrong = Credentials::ServiceAccount {
        client_id: "mdb_sa_id_demo".to_owned(),
        client_secret: Secret::new("wrong-secret-value"),
    };
    let exporter = sim
        .exporter(&[services()])
        .credentials(&wrong)
        .ready()
        .await;
    let s = exporter.samples().await;
    assert_eq!(s.up("services", &org), Some(0.0));
    assert_eq!(s.errors("services", &org, "auth"), 1.0);
    assert_eq!(sim.sim.requests(SimEndpoint::Token), 1);
    let text = exporter.scrape_text().await;
    let landing = exporter.get("/", &[]).await.text().await.unwrap();
    assert!(!text.contains("wrong-secret-value") && !landing.contains("wrong-secret-value"));
    exporter.stop().await;
}

/// `/readyz` answers 503 until every query has finished its first attempt, then 200;
/// `/healthz` answers at once; the landing page lists every query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_liveness_and_landing_page() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        polls_before_ready: 20,
        ..SimConfig::default()
    })
    .await;
    let exporter = sim.exporter(&QuerySpec::defaults(1)).start().await;
    assert_eq!(exporter.get("/healthz", &[]).await.status(), 200);
    assert_eq!(exporter.get("/readyz", &[]).await.status(), 503);
    // Self metrics are scrapable before the first refresh ends.
    let early = exporter.samples().await;
    assert_eq!(
        early.up("services", &sim.sim.dataset().orgs[0].id),
        Some(0.0)
    );
    exporter.wait_ready().await;
    let landing = exporter.get("/", &[]).await;
    assert_eq!(
        landing.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let landing = landing.text().await.unwrap();
    for q in ["services", "projects", "clusters"] {
        assert!(landing.contains(&format!("<td>{q}</td>")), "{landing}");
    }
    assert!(landing.contains(env!("CARGO_PKG_VERSION")));
    exporter.stop().await;
}

/// A second refresh reads only the current and previous months: closed months come from the
/// cache, so the totals stay exact while Atlas is asked for less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_months_are_not_read_again() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let exporter = sim
        .exporter(&[query("services", GroupBy::Ungrouped, 6)])
        .tweak(|c| c.refresh_interval = Duration::from_secs(1))
        .ready()
        .await;
    let first = exporter.samples().await;
    // Change every amount: only the months that are re-read can show it.
    sim.sim.set_amount_scale(3, 1);
    let creates = sim.sim.requests(SimEndpoint::Create);
    let second = exporter
        .wait_for("a refresh with the new amounts", |s| {
            s.costs("services") != first.costs("services")
        })
        .await;
    assert!(sim.sim.requests(SimEndpoint::Create) > creates);
    let current = sim.sim.current_month();
    for x in second.named("atlas_cost_usage_usd") {
        let month = Month::parse_date(x.label("month").unwrap()).unwrap();
        let before = first.value(
            "atlas_cost_usage_usd",
            &x.labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        if month >= current.plus(-1) {
            assert_ne!(before, x.value, "{month} is re-read");
        } else {
            assert_eq!(before, x.value, "{month} is closed and cached");
        }
    }
    assert_eq!(second.up("services", &org), Some(1.0));
    exporter.stop().await;
}
