//! The invoice source (issue 22) end to end, across the simulator's invoice variants: the
//! SKU series add up to the Cost Explorer's data per cluster and month to the cent, the last
//! complete day is right across a month boundary and for multi-day items, linked orgs'
//! invoices are attributed once, the controls fold SKUs with exact sums, the source's own
//! metrics show its failures, and `--demo` serves the SKU series.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atlas_cost_exporter::config::{Config, GroupBy, OrgConfig};
use atlas_cost_exporter::invoice::SkuControls;
use atlas_cost_exporter::month::Month;
use atlas_cost_exporter::simulator::{
    ClosedDescription, Fault, InvoiceShape, InvoiceVariants, SimConfig, SimEndpoint, sku_name,
};
use common::{
    Exporter, KillOnDrop, Samples, Sim, fixed_clock, free_port, orgs, parse, query,
    service_account, services, start_sim,
};

const MTD: &str = "atlas_cost_sku_month_to_date_usd";
const LAST_DAY: &str = "atlas_cost_sku_last_day_usd";

fn month() -> Month {
    Month::new(2026, 11).unwrap()
}

/// Noon UTC of day `day` of `month` (days past the month's end run into the next).
fn noon(month: Month, day: u32) -> SystemTime {
    let days =
        atlas_cost_exporter::invoice::days_from_civil(i64::from(month.year()), month.month(), 1)
            + i64::from(day)
            - 1;
    UNIX_EPOCH + Duration::from_secs(u64::try_from(days * 86_400 + 43_200).unwrap())
}

/// Every variant the public record leaves open, each alone.
fn variants() -> Vec<(&'static str, InvoiceVariants)> {
    let base = InvoiceVariants::default();
    vec![
        ("paginated results", base.clone()),
        (
            "single invoice object",
            InvoiceVariants {
                shape: InvoiceShape::Single,
                ..base.clone()
            },
        ),
        (
            "multi-day items",
            InvoiceVariants {
                multi_day: true,
                ..base.clone()
            },
        ),
        (
            "tags as a map of lists",
            InvoiceVariants {
                tags: true,
                ..base.clone()
            },
        ),
        (
            "items without clusterName",
            InvoiceVariants {
                without_cluster_name: true,
                ..base.clone()
            },
        ),
        (
            "linked orgs",
            InvoiceVariants {
                linked_orgs: true,
                ..base
            },
        ),
    ]
}

fn sim_config(variants: InvoiceVariants, day: u32) -> SimConfig {
    SimConfig {
        current_month: Some(month()),
        months: 3,
        invoices: InvoiceVariants {
            today: Some(day),
            ..variants
        },
        ..SimConfig::default()
    }
}

fn exporter_config(sim: &Sim, day: u32, controls: SkuControls, only: Option<usize>) -> Config {
    let mut orgs: Vec<OrgConfig> = orgs(
        &sim.sim,
        &service_account(),
        &[services(), query("clusters", GroupBy::Clusters, 2)],
    );
    if let Some(i) = only {
        orgs = vec![orgs.remove(i)];
    }
    for o in &mut orgs {
        o.invoices = true;
    }
    let mut c = common::config(&sim.url, orgs);
    c.clock = fixed_clock(noon(month(), day));
    c.sku_controls = controls;
    c
}

/// Starts a simulator and an exporter on day `day` of the month and waits until every
/// configured org's invoice source and queries are up.
async fn run(
    variants: InvoiceVariants,
    day: u32,
    controls: SkuControls,
    only: Option<usize>,
) -> (Sim, Exporter, Samples) {
    let sim = start_sim(sim_config(variants, day)).await;
    let (exporter, samples) = start_until_up(exporter_config(&sim, day, controls, only)).await;
    (sim, exporter, samples)
}

/// Starts an exporter of `config` and waits until every source of every org it configures
/// is up (the invoice source only where it runs).
async fn start_until_up(config: Config) -> (Exporter, Samples) {
    let sources: Vec<(String, &str)> = config
        .orgs
        .iter()
        .flat_map(|o| {
            let mut s = vec![(o.id.clone(), "cost_explorer")];
            if o.invoices {
                s.push((o.id.clone(), "invoices"));
            }
            s
        })
        .collect();
    let exporter = Exporter::start(config).await;
    let samples = exporter
        .wait_for("every source up", |s| {
            sources.iter().all(|(id, source)| {
                s.value(
                    "atlas_cost_source_up",
                    &[("source", source), ("org_id", id)],
                ) == Some(1.0)
            })
        })
        .await;
    (exporter, samples)
}

fn cents(v: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let c = (v * 100.0).round() as i64;
    c
}

/// Sum of `name` over the samples whose labels `pick` maps to a key, in cents, by key.
fn sums(
    s: &Samples,
    name: &str,
    pick: impl Fn(&common::Sample) -> Option<String>,
) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for sample in s.named(name) {
        if let Some(k) = pick(sample) {
            *out.entry(k).or_insert(0) += cents(sample.value.unwrap());
        }
    }
    out
}

/// Across every variant, the SKU series of the month add up, per cluster (per project for
/// items without `clusterName`), to the simulator's Cost Explorer data of the month to the
/// cent; the org's invoice total equals its Cost Explorer month to date as the exporter
/// read it from the `services` query, so the reconciliation difference is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sku_sums_equal_the_cost_explorer_per_cluster_and_month_to_the_cent() {
    for (name, v) in variants() {
        let per_project = v.without_cluster_name;
        let (sim, exporter, s) = run(v, 12, SkuControls::default(), Some(0)).await;
        let data = sim.sim.dataset();
        let org = &data.orgs[0];
        let m = month();
        let place = |sample: &common::Sample| -> Option<String> {
            (sample.label("org_id") == Some(org.id.as_str())).then_some(())?;
            let p = sample.label("project_id")?;
            Some(if per_project {
                p.to_owned()
            } else {
                format!("{p}/{}", sample.label("cluster_name")?)
            })
        };
        let mut got = sums(&s, MTD, place);
        got.retain(|_, v| *v != 0);
        let mut want = BTreeMap::new();
        for (p, c) in org.all_clusters() {
            let cents = data.cluster_cents(&c.id, m, m.plus(1));
            if per_project {
                let project = data.project_cents(&p.id, m, m.plus(1));
                want.insert(p.id.clone(), project);
            } else if cents != 0 {
                want.insert(format!("{}/{}", p.id, c.name), cents);
            }
        }
        if per_project {
            want.retain(|_, v| *v != 0);
        }
        assert_eq!(got, want, "{name}: SKU sums per place");
        let explorer = s.total_cents("atlas_cost_month_to_date_usd", "services", &org.id);
        assert_eq!(explorer, data.total_cents(&org.id, m, m.plus(1)), "{name}");
        let inv = s
            .value(
                "atlas_cost_reconciliation_invoice_usd",
                &[("org_id", org.id.as_str())],
            )
            .unwrap();
        assert_eq!(cents(inv), explorer, "{name}: invoice total");
        let diff = s
            .value(
                "atlas_cost_reconciliation_difference_usd",
                &[("org_id", org.id.as_str())],
            )
            .unwrap();
        assert_eq!(cents(diff), 0, "{name}");
        exporter.stop().await;
    }
}

/// What the simulator's invoice of `month` bills on day `day` (the share of multi-day
/// items the exporter documents: split evenly, the first days taking the remainder).
fn billed_on(sim: &Sim, org: usize, m: Month, posted: u32, chunk: u32, day: u32) -> i64 {
    sim.sim
        .dataset()
        .invoice_items(org, m, posted, chunk)
        .iter()
        .filter(|i| i.day <= day && day < i.day + i.days)
        .map(|i| {
            let n = i64::from(i.days);
            let k = i64::from(day - i.day);
            let (q, r) = (i.net_cents / n, i.net_cents % n);
            q + if k < r.abs() { r.signum() } else { 0 }
        })
        .sum()
}

/// On the 1st the last complete day is the previous month's last, read from its closed
/// invoice (`listOrgInvoices`, `lineItems:search`); on the 2nd it is the 1st, from the new
/// pending invoice; the day gauge says which day it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_day_is_right_across_a_month_boundary() {
    let m = month();
    for (day, want_month, want_day) in [(1, m.plus(-1), m.plus(-1).days()), (2, m, 1)] {
        let (sim, exporter, s) = run(
            InvoiceVariants::default(),
            day,
            SkuControls::default(),
            Some(0),
        )
        .await;
        let org = sim.org(0);
        let posted = if want_month == m {
            1
        } else {
            want_month.days()
        };
        let want = billed_on(&sim, 0, want_month, posted, 1, want_day);
        assert_ne!(want, 0);
        let got = sums(&s, LAST_DAY, |x| {
            (x.label("org_id") == Some(org.as_str())).then(String::new)
        });
        assert_eq!(got[""], want, "day {day}");
        let start = s
            .value(
                "atlas_cost_sku_last_day_start_timestamp_seconds",
                &[("org_id", org.as_str())],
            )
            .unwrap();
        let expected = noon(m, day) - Duration::from_secs(86_400 + 43_200);
        assert_eq!(
            start,
            expected.duration_since(UNIX_EPOCH).unwrap().as_secs_f64(),
            "day {day}"
        );
        let fetched_closed = sim
            .sim
            .request_log()
            .iter()
            .any(|r| r.endpoint == SimEndpoint::LineItems);
        assert_eq!(
            fetched_closed,
            day == 1,
            "the closed invoice is read on the 1st only"
        );
        exporter.stop().await;
    }
}

/// With `--storage.path`, a restart on the 1st does not read the closed invoice again: the
/// restarted process serves the SKU series of before at once (the last day from the closed
/// invoice among them), and its own refresh asks only for the pending invoices, with the same
/// last-day figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_invoice_is_not_read_again_after_a_restart_on_the_1st() {
    let sim = start_sim(sim_config(InvoiceVariants::default(), 1)).await;
    let mut config = exporter_config(&sim, 1, SkuControls::default(), Some(0));
    let dir = common::temp_dir().join("state");
    config.storage_path = Some(dir.clone());
    let org = config.orgs[0].id.clone();
    let up = |s: &Samples| {
        s.value(
            "atlas_cost_source_up",
            &[("source", "invoices"), ("org_id", org.as_str())],
        ) == Some(1.0)
    };
    let written = |s: &Samples| s.value("atlas_cost_state_writes_total", &[]).unwrap_or(0.0) >= 1.0;
    let last_day = |s: &Samples| -> BTreeMap<BTreeMap<String, String>, Option<f64>> {
        s.named(LAST_DAY)
            .map(|x| (x.labels.clone(), x.value))
            .collect()
    };
    let first = Exporter::start(config.clone()).await;
    let before = first
        .wait_for("the invoice source up and its state written", |s| {
            up(s) && written(s)
        })
        .await;
    first.stop().await;
    let kept = last_day(&before);
    assert!(kept.len() > 10, "{} last-day series", kept.len());
    let file = std::fs::read(dir.join(atlas_cost_exporter::state::file_name(&org))).unwrap();
    let state = atlas_cost_exporter::state::decode(&file, &config.tag_labels).unwrap();
    let invoices = state.invoices.expect("the invoice part");
    let (closed, items) = invoices.closed.expect("the closed items, on the 1st");
    assert_eq!(closed, month().plus(-1));
    eprintln!(
        "state file on the 1st: {} bytes, {} SKU series, {} closed items",
        file.len(),
        invoices.data.map_or(0, |d| d.skus.len()),
        items.len()
    );
    let count = |e: SimEndpoint| sim.sim.requests(e);
    let read = (
        count(SimEndpoint::Invoices),
        count(SimEndpoint::LineItems),
        count(SimEndpoint::PendingInvoices),
    );
    assert!(
        read.0 >= 1 && read.1 >= 1,
        "read before the restart: {read:?}"
    );

    let second = Exporter::start(config).await;
    assert_eq!(last_day(&second.samples().await), kept, "served at once");
    let refreshed = second
        .wait_for("the restarted process's own refresh written", |s| {
            up(s) && written(s)
        })
        .await;
    second.stop().await;
    assert!(count(SimEndpoint::PendingInvoices) > read.2, "it refreshed");
    assert_eq!(
        (count(SimEndpoint::Invoices), count(SimEndpoint::LineItems)),
        (read.0, read.1),
        "the closed invoice is not read again"
    );
    assert_eq!(last_day(&refreshed), kept, "the same last day");
}

/// On the 1st, whatever a closed item's `description` says (exactly the SKU, the SKU then
/// details, or a name without the SKU code), the previous month's last day sums per
/// project and cluster and per org equal the simulator's to the cent. With exactly the SKU
/// the last-day series carry the simulator's SKUs; with the SKU then details, each SKU the
/// exporter knows from the pending invoice, and the whole description for one it does not
/// (`CREDIT`, absent from the new month's first items); with a name only, the names (the
/// spend kept, never guessed into a SKU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_day_keeps_every_cent_and_the_skus_whatever_the_closed_description_says() {
    let last = month().plus(-1);
    for closed in [
        ClosedDescription::Sku,
        ClosedDescription::SkuAndDetails,
        ClosedDescription::Name,
    ] {
        let v = InvoiceVariants {
            closed_description: closed,
            ..InvoiceVariants::default()
        };
        let (sim, exporter, s) = run(v, 1, SkuControls::default(), Some(0)).await;
        let org = sim.org(0);
        let data = sim.sim.dataset();
        let items: Vec<_> = data
            .invoice_items(0, last, last.days(), 1)
            .into_iter()
            .filter(|i| i.day == last.days())
            .collect();
        let place_of = |project: Option<&str>, cluster: Option<&str>| {
            format!("{}/{}", project.unwrap_or(""), cluster.unwrap_or(""))
        };
        let mut want_places = BTreeMap::new();
        let mut want_skus = std::collections::BTreeSet::new();
        let mut true_skus = std::collections::BTreeSet::new();
        for i in &items {
            let (p, c) = data.record(i).map_or((None, None), |r| data.place(r));
            let key = place_of(p.map(|p| p.id.as_str()), c.map(|c| c.name.as_str()));
            *want_places.entry(key).or_insert(0) += i.net_cents;
            true_skus.insert(i.sku.clone());
            want_skus.insert(match closed {
                ClosedDescription::Name => sku_name(&i.sku),
                _ => i.sku.clone(),
            });
        }
        want_places.retain(|_, c| *c != 0);
        let mine = |x: &common::Sample| x.label("org_id") == Some(org.as_str());
        let mut got_places = sums(&s, LAST_DAY, |x| {
            mine(x).then(|| place_of(x.label("project_id"), x.label("cluster_name")))
        });
        got_places.retain(|_, c| *c != 0);
        assert_eq!(
            got_places, want_places,
            "{closed:?}: per project and cluster"
        );
        let got_org = sums(&s, LAST_DAY, |x| mine(x).then(String::new));
        let want_org: i64 = items.iter().map(|i| i.net_cents).sum();
        assert_ne!(want_org, 0);
        assert_eq!(got_org[""], want_org, "{closed:?}: per org");
        // The labels of the last day's spend (every SKU of the month has a last-day series).
        let got_skus: std::collections::BTreeSet<String> = s
            .named(LAST_DAY)
            .filter(|x| mine(x) && x.value.is_some_and(|v| v != 0.0))
            .filter_map(|x| x.label("sku").map(str::to_owned))
            .collect();
        // The SKUs the exporter knows on a start on the 1st: the pending invoice's (its
        // items of the 1st); the month's `CREDIT` is not among them.
        let pending: std::collections::BTreeSet<String> = data
            .invoice_items(0, month(), 1, 1)
            .into_iter()
            .map(|i| i.sku)
            .collect();
        let (known, unknown): (Vec<_>, Vec<_>) =
            true_skus.iter().partition(|sku| pending.contains(*sku));
        assert!(!known.is_empty() && !unknown.is_empty());
        let got_known: Vec<_> = got_skus.iter().filter(|l| pending.contains(*l)).collect();
        let got_unknown: Vec<_> = got_skus.iter().filter(|l| !pending.contains(*l)).collect();
        match closed {
            ClosedDescription::Sku => {
                assert_eq!(got_skus, want_skus, "exactly the SKUs");
            }
            ClosedDescription::SkuAndDetails => {
                assert_eq!(got_known, known, "each known SKU, found in its description");
                assert_eq!(got_unknown.len(), unknown.len(), "{got_unknown:?}");
                for (label, sku) in got_unknown.iter().zip(&unknown) {
                    assert!(
                        label.starts_with(&format!("{sku} - ")) && label.len() > sku.len(),
                        "a SKU the exporter does not know keeps its whole description: {label}"
                    );
                }
            }
            ClosedDescription::Name => {
                assert_eq!(got_skus, want_skus, "the names, kept as they are");
                assert!(got_known.is_empty(), "a name is never guessed into a SKU");
            }
        }
        exporter.stop().await;
    }
}

/// With items of three days, the last day holds its share of the item that covers it, not
/// the whole item nor nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_day_of_multi_day_items_holds_its_share() {
    let m = month();
    let v = InvoiceVariants {
        multi_day: true,
        ..InvoiceVariants::default()
    };
    // Posted up to day 3: items cover days 1-3, yesterday is their third day.
    let (sim, exporter, s) = run(v, 4, SkuControls::default(), Some(0)).await;
    let org = sim.org(0);
    let want = billed_on(&sim, 0, m, 3, 3, 3);
    let whole: i64 = sim
        .sim
        .dataset()
        .invoice_items(0, m, 3, 3)
        .iter()
        .map(|i| i.net_cents)
        .sum();
    let got = sums(&s, LAST_DAY, |x| {
        (x.label("org_id") == Some(org.as_str())).then(String::new)
    });
    assert_eq!(got[""], want);
    assert!(want.abs() < whole.abs(), "a share, not the whole item");
    exporter.stop().await;
}

/// A paying org's pending answer holds its linked orgs' invoices: with only the payer
/// configured they are exported under the org that incurred them; with both configured
/// each org's spend is counted once, by its own source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_org_invoices_are_attributed_once() {
    let v = InvoiceVariants {
        linked_orgs: true,
        ..InvoiceVariants::default()
    };
    let m = month();
    for only in [Some(0), None] {
        let (sim, exporter, s) = run(v.clone(), 12, SkuControls::default(), only).await;
        let data = sim.sim.dataset();
        let by_org = sums(&s, MTD, |x| x.label("org_id").map(str::to_owned));
        for org in &data.orgs {
            assert_eq!(
                by_org.get(&org.id).copied(),
                Some(data.total_cents(&org.id, m, m.plus(1))),
                "{} with {only:?} configured",
                org.id
            );
        }
        exporter.stop().await;
    }
}

/// Sharded, the paying org and its linked org in two exporters (each knowing the other shard
/// runs the linked org's invoice source): over both scrapes each org's spend is counted once.
/// A linked org configured with its invoice source off is reported by the payer, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_org_invoices_are_counted_once_across_shards_and_never_lost() {
    let v = InvoiceVariants {
        linked_orgs: true,
        ..InvoiceVariants::default()
    };
    let m = month();
    let sim = start_sim(sim_config(v, 12)).await;
    let data = sim.sim.dataset();
    let (payer, linked) = (sim.org(0), sim.org(1));
    let mut shard0 = exporter_config(&sim, 12, SkuControls::default(), Some(0));
    shard0.invoices_elsewhere.insert(linked.clone());
    let mut shard1 = exporter_config(&sim, 12, SkuControls::default(), Some(1));
    shard1.invoices_elsewhere.insert(payer.clone());
    let (e0, s0) = start_until_up(shard0).await;
    let (e1, s1) = start_until_up(shard1).await;
    let mut by_org = sums(&s0, MTD, |x| x.label("org_id").map(str::to_owned));
    for (org, cents) in sums(&s1, MTD, |x| x.label("org_id").map(str::to_owned)) {
        *by_org.entry(org).or_insert(0) += cents;
    }
    for org in [&payer, &linked] {
        assert_eq!(
            by_org.get(org).copied(),
            Some(data.total_cents(org, m, m.plus(1))),
            "{org} over both shards"
        );
    }
    e0.stop().await;
    e1.stop().await;

    let mut off = exporter_config(&sim, 12, SkuControls::default(), None);
    off.orgs[1].invoices = false;
    let (e, s) = start_until_up(off).await;
    let by_org = sums(&s, MTD, |x| x.label("org_id").map(str::to_owned));
    assert_eq!(
        by_org.get(&linked).copied(),
        Some(data.total_cents(&linked, m, m.plus(1))),
        "the linked org, its own source off, from the payer's"
    );
    e.stop().await;
}

/// Top N, a minimum and a series limit fold SKUs into `(other)`: fewer series, the same
/// sums per org to the cent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_fold_skus_with_exact_sums() {
    let (sim, exporter, all) = run(
        InvoiceVariants::default(),
        12,
        SkuControls::default(),
        Some(0),
    )
    .await;
    let org = sim.org(0);
    let by_org = |s: &Samples| sums(s, MTD, |x| x.label("org_id").map(str::to_owned));
    let want = by_org(&all);
    let n_all = all.named(MTD).count();
    exporter.stop().await;
    drop(sim);
    for controls in [
        SkuControls {
            top: Some(1),
            ..SkuControls::default()
        },
        SkuControls {
            min_micros: Some(50_000_000),
            ..SkuControls::default()
        },
        SkuControls {
            max_series: Some(5),
            ..SkuControls::default()
        },
    ] {
        let label = format!("{controls:?}");
        let (_sim, exporter, s) = run(InvoiceVariants::default(), 12, controls, Some(0)).await;
        assert_eq!(by_org(&s), want, "{label}");
        let n = s.named(MTD).count();
        assert!(n < n_all, "{label}: {n} of {n_all} series");
        assert!(
            s.named(MTD)
                .any(|x| x.label("sku") == Some("(other)")
                    && x.label("org_id") == Some(org.as_str())),
            "{label}"
        );
        exporter.stop().await;
    }
}

/// A failing pending call takes down the invoice source only: its up is 0, its error is
/// counted by reason, its last good SKU series stay; the Cost Explorer source stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_invoice_call_shows_in_the_source_metrics_only() {
    let sim = start_sim(sim_config(InvoiceVariants::default(), 12)).await;
    let mut config = exporter_config(&sim, 12, SkuControls::default(), Some(0));
    config.refresh_interval = Duration::from_millis(300);
    config.request_timeout = Duration::from_secs(1);
    config.query_timeout = Duration::from_secs(5);
    let org = sim.org(0);
    let exporter = Exporter::start(config).await;
    let up = |s: &Samples, source: &str| {
        s.value(
            "atlas_cost_source_up",
            &[("source", source), ("org_id", org.as_str())],
        )
    };
    let good = exporter
        .wait_for("invoices up", |s| up(s, "invoices") == Some(1.0))
        .await;
    sim.sim
        .fail(SimEndpoint::PendingInvoices, Fault::Status(500));
    let failed = exporter
        .wait_for("invoices down", |s| {
            up(s, "invoices") == Some(0.0)
                && s.value(
                    "atlas_cost_source_errors_total",
                    &[
                        ("source", "invoices"),
                        ("org_id", org.as_str()),
                        ("reason", "server_error"),
                    ],
                )
                .is_some_and(|n| n >= 1.0)
        })
        .await;
    assert_eq!(up(&failed, "cost_explorer"), Some(1.0));
    let mtd = |s: &Samples| sums(s, MTD, |x| x.label("org_id").map(str::to_owned));
    assert_eq!(
        mtd(&failed),
        mtd(&good),
        "the last good SKU series are kept"
    );
    exporter.stop().await;
}

/// `--demo` serves `atlas_cost_sku_month_to_date_usd` (the invoice source is on in the demo)
/// from the real binary, within seconds (bounded so a broken demo fails instead of hanging).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_sku_series() {
    let port = free_port();
    let _child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_atlas-cost-exporter"))
            .args([
                "--demo",
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
            ])
            .env_remove("ATLAS_EXPORTER_CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the exporter starts"),
    );
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await
            && let Ok(text) = r.text().await
        {
            let s = Samples(parse(&text, "text"));
            if s.named(MTD).count() > 0 {
                assert!(s.named("atlas_cost_sku_unit_price_usd").count() > 0);
                assert!(s.named(LAST_DAY).count() > 0);
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no SKU series from --demo"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
