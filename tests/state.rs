//! A restart loses nothing (issue 21): the real binary, restarted against the simulator with
//! `--storage.path`, serves its kept series (the invoice source's too) at once with their old
//! timestamps while Atlas fails, keeps a deleted cluster's history and tags, reads no closed month again, survives
//! `kill -9` at any moment, sets bad state files aside, refuses a second process on its
//! directory, keeps nothing secret, and serves only what is configured now.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use atlas_cost_exporter::fleet::Shard;
use atlas_cost_exporter::series::TagLabels;
use atlas_cost_exporter::simulator::{Fault, GroupBy, SimConfig, SimCredentials, SimEndpoint};
use atlas_cost_exporter::state;
use base64::Engine as _;
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_atlas-cost-exporter");

/// The cost families: what a restart must serve again exactly.
const COST_FAMILIES: [&str; 4] = [
    "atlas_cost_usage_usd",
    "atlas_cost_month_to_date_usd",
    "atlas_cost_month_forecast_usd",
    "atlas_cost_previous_month_usd",
];

const ENDPOINTS: [SimEndpoint; 9] = [
    SimEndpoint::Token,
    SimEndpoint::Create,
    SimEndpoint::Poll,
    SimEndpoint::Projects,
    SimEndpoint::Clusters,
    SimEndpoint::FlexClusters,
    SimEndpoint::PendingInvoices,
    SimEndpoint::Invoices,
    SimEndpoint::LineItems,
];

/// Every Atlas endpoint answers 503 from now on: no Atlas request completes.
fn fail_everything(sim: &Sim) {
    for e in ENDPOINTS {
        sim.sim.fail(e, Fault::Status(503));
    }
}

/// The exporter binary as a child process, its stderr collected; killed when dropped.
struct Proc {
    child: Child,
    addr: std::net::SocketAddr,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The flags of a run against `sim` for `orgs`, keeping its state in `dir`, plus `extra`.
fn args(sim: &Sim, orgs: &[&str], dir: Option<&Path>, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--web.listen-address",
        "127.0.0.1:0",
        "--atlas.base-url",
        &sim.url,
        "--atlas.poll-interval",
        "20ms",
        "--atlas.request-timeout",
        "2s",
        "--atlas.query-timeout",
        "10s",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for org in orgs {
        a.extend(["--atlas.org-id".to_owned(), (*org).to_owned()]);
    }
    if let Some(dir) = dir {
        a.extend([
            "--storage.path".to_owned(),
            dir.to_str().unwrap().to_owned(),
        ]);
    }
    a.extend(extra.iter().map(|s| (*s).to_owned()));
    a
}

fn command(args: &[String], env: &[(&str, &str)]) -> Command {
    let demo = SimCredentials::demo();
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("MONGODB_ATLAS_CLIENT_ID", &demo.client_id)
        .env("MONGODB_ATLAS_CLIENT_SECRET", &demo.client_secret)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Proc {
    /// Starts the binary and waits (bounded) for its `listening` line: by then the kept
    /// state has been read and published.
    fn start(args: &[String]) -> Proc {
        Proc::start_with(command(args, &[]))
    }

    fn start_with(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains("message=listening")
                    && let Some(a) = line
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("address="))
                {
                    let _ = tx.send(a.trim_matches('"').to_owned());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no 'listening' line:\n{}", log.lock().unwrap());
            }
        };
        Proc {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    fn exporter(&self) -> Exporter {
        Exporter::at(self.addr)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// `kill -9`: no chance to clean up.
    fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.finish()
    }

    /// SIGTERM, the graceful path; it must exit successfully.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let exit = self.child.wait().unwrap();
        let log = self.finish();
        assert!(exit.success(), "exited with {exit}:\n{log}");
        log
    }

    fn finish(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.log()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to its exit (bounded); returns its exit code and stderr.
fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let mut child = command(args, &[]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the exporter did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cost samples of a scrape: (family, labels) -> value.
fn costs(s: &Samples) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    s.0.iter()
        .filter(|x| COST_FAMILIES.contains(&x.name.as_str()))
        .map(|x| ((x.name.clone(), x.labels.clone()), x.value.unwrap()))
        .collect()
}

fn restored(s: &Samples, query: &str, org: &str) -> Option<f64> {
    s.value(
        "atlas_cost_query_restored",
        &[("query", query), ("org_id", org)],
    )
}

fn queries() -> [&'static str; 3] {
    ["services", "projects", "clusters"]
}

fn state_file(dir: &Path, org: &str) -> PathBuf {
    dir.join(state::file_name(org))
}

/// Waits until the exporter has written its state `n` times (bounded).
async fn wait_writes(e: &Exporter, n: f64) -> Samples {
    e.wait_for(&format!("{n} state writes"), |s| {
        s.value("atlas_cost_state_writes_total", &[]).unwrap_or(0.0) >= n
    })
    .await
}

/// A fresh state directory (not yet created).
fn state_dir() -> PathBuf {
    temp_dir().join("state")
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Restarted while every Atlas endpoint answers 503, the exporter's very first scrape
/// serves every cost series of before with its value, each query's old
/// `last_success_timestamp`, a data age counted from it, `up` as the last refresh kept it
/// and `restored` 1, the Cost Explorer source's old last success, and `/readyz` says ready;
/// no Atlas request completed meanwhile. Once its own refreshes fail, `up` goes to 0 and the
/// kept data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_series_are_served_at_once_with_their_old_timestamps_while_atlas_fails() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let dir = state_dir();
    let first = Proc::start(&args(&sim, &[&org], Some(&dir), &[]));
    let e = first.exporter();
    e.wait_ready().await;
    let before = wait_writes(&e, 1.0).await;
    for q in queries() {
        assert_eq!(before.up(q, &org), Some(1.0), "{q}");
    }
    let kept = costs(&before);
    assert!(kept.len() > 50, "{} cost samples", kept.len());
    first.kill9();

    fail_everything(&sim);
    let restart = SystemTime::now();
    let started = Instant::now();
    let second = Proc::start(&args(&sim, &[&org], Some(&dir), &[]));
    let e = second.exporter();
    let ready = e.get("/readyz", &[]).await.status();
    let s = e.samples().await;
    eprintln!(
        "first scrape {:?} after the restart's spawn",
        started.elapsed()
    );
    // The Cost Explorer source's last full success comes back too, from its queries'.
    let last = "atlas_cost_source_last_success_timestamp_seconds";
    let old_cost_explorer = source_value(&before, last, "cost_explorer", &org);
    assert!(old_cost_explorer.is_some());
    assert_eq!(
        source_value(&s, last, "cost_explorer", &org),
        old_cost_explorer
    );
    assert_eq!(ready, 200, "ready at once with kept data");
    assert_eq!(costs(&s), kept, "every cost series, with its value");
    for q in queries() {
        let old = before.last_success(q, &org).unwrap();
        assert_eq!(
            s.last_success(q, &org),
            Some(old),
            "{q}: the old success time"
        );
        let age = s
            .value(
                "atlas_cost_query_data_age_seconds",
                &[("query", q), ("org_id", &org)],
            )
            .unwrap();
        assert!(
            age >= unix(restart) - old,
            "{q}: age {age} counts from {old}"
        );
        assert_eq!(restored(&s, q, &org), Some(1.0), "{q}");
        assert_eq!(
            s.up(q, &org),
            Some(1.0),
            "{q}: up as the last refresh kept it"
        );
    }
    assert_eq!(
        s.value("atlas_cost_state_files_set_aside_total", &[]),
        Some(0.0)
    );

    let failing = e
        .wait_for_errors("services", &org, "server_error", 1.0)
        .await;
    assert_eq!(failing.up("services", &org), Some(0.0));
    assert_eq!(restored(&failing, "services", &org), Some(1.0));
    assert_eq!(
        failing.last_success("services", &org),
        before.last_success("services", &org)
    );
    let still = e.samples().await;
    assert_eq!(costs(&still), kept, "the kept data stays while Atlas fails");
    second.kill9();
}

/// The invoice source's families: what a restart must serve again exactly, beside the cost
/// families.
fn invoice_samples(s: &Samples) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    s.0.iter()
        .filter(|x| {
            x.name.starts_with("atlas_cost_sku_")
                || x.name.starts_with("atlas_cost_reconciliation_")
        })
        .map(|x| ((x.name.clone(), x.labels.clone()), x.value.unwrap()))
        .collect()
}

fn source_value(s: &Samples, family: &str, source: &str, org: &str) -> Option<f64> {
    s.value(family, &[("source", source), ("org_id", org)])
}

/// A first run with the invoice source until its state is written with both sources up;
/// killed with `kill -9`. Returns the scrape that was kept.
async fn run_with_invoices_until_kept(sim: &Sim, org: &str, dir: &Path) -> Samples {
    let first = Proc::start(&args(sim, &[org], Some(dir), &["--invoices.enabled"]));
    let e = first.exporter();
    e.wait_ready().await;
    let before = wait_writes(&e, 1.0).await;
    for source in ["cost_explorer", "invoices"] {
        assert_eq!(
            source_value(&before, "atlas_cost_source_up", source, org),
            Some(1.0),
            "{source}"
        );
    }
    first.kill9();
    before
}

/// The invoice source is kept too: restarted with `--invoices.enabled` while every Atlas
/// endpoint answers 503, the first scrape serves every `atlas_cost_sku_*` and reconciliation
/// series of before with its value, and the invoice source's old last success timestamp and
/// `up`; once its own refresh has failed, `up` goes to 0, the old success time and the kept
/// series stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_invoice_series_are_served_at_once_with_their_old_timestamp_while_atlas_fails() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let dir = state_dir();
    let before = run_with_invoices_until_kept(&sim, &org, &dir).await;
    let kept = invoice_samples(&before);
    let month_to_date = kept
        .keys()
        .filter(|(f, _)| f == "atlas_cost_sku_month_to_date_usd")
        .count();
    assert!(month_to_date > 10, "{month_to_date} SKU series");
    let last = "atlas_cost_source_last_success_timestamp_seconds";
    let old = source_value(&before, last, "invoices", &org).unwrap();

    fail_everything(&sim);
    let started = Instant::now();
    let second = Proc::start(&args(&sim, &[&org], Some(&dir), &["--invoices.enabled"]));
    let e = second.exporter();
    let s = e.samples().await;
    eprintln!(
        "first scrape {:?} after the restart's spawn",
        started.elapsed()
    );
    assert_eq!(
        invoice_samples(&s),
        kept,
        "every invoice series, with its value"
    );
    assert_eq!(costs(&s), costs(&before), "and every cost series");
    assert_eq!(
        source_value(&s, last, "invoices", &org),
        Some(old),
        "the invoice source's old success time"
    );
    assert_eq!(
        source_value(&s, "atlas_cost_source_up", "invoices", &org),
        Some(1.0),
        "up as the last refresh kept it"
    );

    let failing = e
        .wait_for("the invoice source's own refresh failing", |s| {
            s.value(
                "atlas_cost_source_errors_total",
                &[
                    ("source", "invoices"),
                    ("org_id", &org),
                    ("reason", "server_error"),
                ],
            )
            .unwrap_or(0.0)
                >= 1.0
        })
        .await;
    assert_eq!(
        source_value(&failing, "atlas_cost_source_up", "invoices", &org),
        Some(0.0)
    );
    assert_eq!(source_value(&failing, last, "invoices", &org), Some(old));
    assert_eq!(invoice_samples(&failing), kept, "the kept data stays");
    second.kill9();
}

/// A state file whose invoice part is garbled, or kept under another invoice configuration
/// (a SKU control added), loses only the invoice part: restarted while Atlas fails, every
/// Cost Explorer series is served as before, no stale SKU series is, the exporter keeps
/// running; the garbled file's copy is set aside (counted, logged once with the reason) and
/// the file stays in place for the next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_changed_invoice_part_loses_only_the_invoice_series() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let dir = state_dir();
    let before = run_with_invoices_until_kept(&sim, &org, &dir).await;
    let file = state_file(&dir, &org);
    let good = std::fs::read(&file).unwrap();
    fail_everything(&sim);

    let mut garbled = good.clone();
    // The invoice part is at the end of the file.
    let last = garbled.len() - 1;
    garbled[last] ^= 0x5a;
    let variants: Vec<(&str, Vec<u8>, Vec<&str>, f64)> = vec![
        ("garbled", garbled, vec!["--invoices.enabled"], 1.0),
        (
            "another SKU control",
            good.clone(),
            vec!["--invoices.enabled", "--invoices.sku-top", "1"],
            0.0,
        ),
    ];
    for (what, bytes, flags, set_aside) in variants {
        std::fs::write(&file, &bytes).unwrap();
        let mut p = Proc::start(&args(&sim, &[&org], Some(&dir), &flags));
        let e = p.exporter();
        let s = e.samples().await;
        assert_eq!(costs(&s), costs(&before), "{what}: the Cost Explorer part");
        assert!(invoice_samples(&s).is_empty(), "{what}: no invoice series");
        assert_eq!(
            source_value(
                &s,
                "atlas_cost_source_last_success_timestamp_seconds",
                "invoices",
                &org
            ),
            None,
            "{what}"
        );
        assert_eq!(
            s.value("atlas_cost_state_files_set_aside_total", &[]),
            Some(set_aside),
            "{what}"
        );
        e.wait_for_errors("services", &org, "server_error", 1.0)
            .await;
        assert!(p.running(), "{what}: still running");
        let log = p.kill9();
        let aside: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".state.bad-"))
            .collect();
        if set_aside > 0.0 {
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("invoice part")).collect();
            assert_eq!(lines.len(), 1, "{what}: logged once:\n{log}");
            assert!(lines[0].contains("garbled"), "{}", lines[0]);
            assert_eq!(aside.len(), 1, "{what}: {aside:?}");
            assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes, "{what}: a copy");
            std::fs::remove_file(&aside[0]).unwrap();
        } else {
            assert!(aside.is_empty(), "{what}: {aside:?}");
            assert!(
                log.contains("invoice configuration changed"),
                "{what}:\n{log}"
            );
        }
    }
}

/// Queries whose controls fold their remainders (`max_series` on `clusters`, `top` on
/// `projects`) are kept as they were served: restarted while Atlas fails, the exporter serves
/// exactly the same series, within the limit, with no remainder derived again on top of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controlled_queries_come_back_exactly_as_they_were_served() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let base = temp_dir();
    let dir = base.join("state");
    let config = base.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "orgs:\n  - id: {org}\n    queries:\n      - name: services\n      - name: projects\n        group_by: projects\n        controls: {{top: 2}}\n      - name: clusters\n        group_by: clusters\n        controls: {{max_series: 12}}\n"
        ),
    )
    .unwrap();
    let extra = ["--config.file", config.to_str().unwrap()];
    let first = Proc::start(&args(&sim, &[], Some(&dir), &extra));
    let e = first.exporter();
    e.wait_ready().await;
    let before = wait_writes(&e, 1.0).await;
    for q in queries() {
        assert_eq!(before.up(q, &org), Some(1.0), "{q}");
    }
    let kept = costs(&before);
    let usage_of = |c: &BTreeMap<(String, BTreeMap<String, String>), f64>, q: &str| {
        c.keys()
            .filter(|(f, l)| f == "atlas_cost_usage_usd" && l["query"] == q)
            .count()
    };
    let clusters = usage_of(&kept, "clusters");
    assert!(clusters > 0 && clusters <= 12, "{clusters} clusters series");
    first.kill9();

    fail_everything(&sim);
    let second = Proc::start(&args(&sim, &[], Some(&dir), &extra));
    let s = second.exporter().samples().await;
    let served = costs(&s);
    assert_eq!(usage_of(&served, "clusters"), clusters, "within max_series");
    assert_eq!(
        served, kept,
        "every cost series, with its value, and no more"
    );
    for q in queries() {
        assert_eq!(restored(&s, q, &org), Some(1.0), "{q}");
    }
    second.kill9();
}

/// A cluster deleted between two runs keeps its own series and its last seen tags after
/// the restart, once the new process has refreshed against Atlas too (its id stays in the
/// queries); without the state directory, the same restart loses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_clusters_series_and_tags_survive_a_restart() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let data = sim.sim.dataset();
    let (project, victim) = data.orgs[0]
        .all_clusters()
        .find(|(p, c)| {
            !p.is_deleted()
                && !c.is_deleted()
                && !c.is_flex()
                && c.tags.iter().any(|t| t.key == "team")
        })
        .expect("a live tagged cluster");
    let victim = victim.clone();
    let project = project.clone();
    let dir = state_dir();
    let flags = ["--cost.tag-labels", "team,env"];
    let of_victim = |s: &Samples| -> BTreeMap<BTreeMap<String, String>, f64> {
        s.costs("clusters")
            .into_iter()
            .filter(|(labels, _)| labels.get("cluster_id") == Some(&victim.id))
            .collect()
    };
    let first = Proc::start(&args(&sim, &[&org], Some(&dir), &flags));
    let e = first.exporter();
    e.wait_ready().await;
    let before = of_victim(&wait_writes(&e, 1.0).await);
    assert!(!before.is_empty(), "the cluster has series");
    let team = victim
        .tags
        .iter()
        .find(|t| t.key == "team")
        .map(|t| t.value.clone());
    assert!(
        before.keys().all(|l| l.get("tag_team") == team.as_ref()),
        "{before:?}"
    );
    first.stop();

    assert!(sim.sim.delete_cluster(&victim.id));
    let second = Proc::start(&args(&sim, &[&org], Some(&dir), &flags));
    let e = second.exporter();
    let refreshed = e
        .wait_for("the first refresh of the restarted process", |s| {
            queries()
                .iter()
                .all(|q| restored(s, q, &org) == Some(0.0) && s.up(q, &org) == Some(1.0))
        })
        .await;
    assert_eq!(
        of_victim(&refreshed),
        before,
        "the deleted cluster {} of {} keeps its series and tags",
        victim.name,
        project.name
    );
    second.stop();

    // The control: the same restart without the state directory attributes it no more.
    let fresh = Proc::start(&args(&sim, &[&org], None, &flags));
    let e = fresh.exporter();
    e.wait_ready().await;
    assert!(of_victim(&e.samples().await).is_empty());
    fresh.stop();
}

/// After a restart, the simulator's log of created queries shows only the open months
/// (previous and current) read: the closed months the first process read are not read
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_months_are_not_read_again_after_a_restart() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let current = sim.sim.current_month();
    let dir = state_dir();
    let flags = ["--cost.months", "6"];
    let first = Proc::start(&args(&sim, &[&org], Some(&dir), &flags));
    let e = first.exporter();
    e.wait_ready().await;
    wait_writes(&e, 1.0).await;
    first.stop();
    let created = sim.sim.created_queries();
    assert_eq!(created.len(), 3, "{created:?}");
    assert!(
        created.iter().all(|q| q.start == current.plus(-5)),
        "{created:?}"
    );

    let second = Proc::start(&args(&sim, &[&org], Some(&dir), &flags));
    let e = second.exporter();
    e.wait_for("the restarted process's first refresh", |s| {
        queries()
            .iter()
            .all(|q| restored(s, q, &org) == Some(0.0) && s.up(q, &org) == Some(1.0))
    })
    .await;
    second.stop();
    let again = &sim.sim.created_queries()[created.len()..];
    assert_eq!(again.len(), 3, "{again:?}");
    for q in again {
        assert_eq!(
            (q.start, q.end),
            (current.plus(-1), current.plus(1)),
            "only the open months: {q:?}"
        );
    }
}

/// The decoded state of `org` in `dir`, its series counted per query.
fn kept_counts(dir: &Path, org: &str) -> BTreeMap<String, usize> {
    let bytes = std::fs::read(state_file(dir, org)).unwrap();
    let kept = state::decode(&bytes, &TagLabels::default()).unwrap();
    kept.queries
        .iter()
        .map(|q| (q.name.clone(), q.series.len()))
        .collect()
}

/// `kill -9` at random moments during refreshes (every second), and as soon as a write has
/// begun, many times over: the state file is always a complete state (it decodes, with
/// every query's series), nothing is ever set aside, and the last process started against
/// a failing Atlas serves all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_moment_never_loses_the_state() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        projects_per_org: 30,
        clusters_per_project: 4,
        ..SimConfig::default()
    })
    .await;
    let org = sim.org(0);
    let dir = state_dir();
    let flags = ["--refresh.interval", "1s"];
    let first = Proc::start(&args(&sim, &[&org], Some(&dir), &flags));
    let e = first.exporter();
    e.wait_ready().await;
    let baseline = costs(&wait_writes(&e, 1.0).await);
    first.kill9();
    let counts = kept_counts(&dir, &org);
    assert!(counts.values().all(|n| *n > 0), "{counts:?}");

    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill -9 moments seeded with {seed}");
    let mut rng = seed | 1;
    let mut mid_write = 0;
    for round in 0..24 {
        let mut p = Proc::start(&args(&sim, &[&org], Some(&dir), &flags));
        if round % 2 == 0 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            std::thread::sleep(Duration::from_millis(rng % 2500));
        } else {
            // As soon as a write is under way (its temporary file exists).
            let tmp = dir.join(format!("{}.tmp", state::file_name(&org)));
            let until = Instant::now() + Duration::from_secs(10);
            while !tmp.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        assert!(p.running(), "round {round}:\n{}", p.log());
        let log = p.kill9();
        if dir.join(format!("{}.tmp", state::file_name(&org))).exists() {
            mid_write += 1;
        }
        assert!(!log.contains("set aside"), "round {round}:\n{log}");
        assert_eq!(kept_counts(&dir, &org), counts, "round {round}");
    }
    eprintln!("24 kills, {mid_write} left a write half done");

    fail_everything(&sim);
    let last = Proc::start(&args(&sim, &[&org], Some(&dir), &flags));
    let s = last.exporter().samples().await;
    assert_eq!(costs(&s), baseline);
    assert!(!last.log().contains("set aside"), "{}", last.log());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".bad-") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    last.kill9();
}

/// Each bad state file (truncated, garbled, of an unknown or a newer format, not a state
/// file, empty, another org's) is logged once with its reason and renamed aside with its
/// bytes intact; the exporter starts without it, serves no kept series, keeps running and
/// refreshing, and says nothing of it on the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_state_files_are_set_aside_and_the_exporter_starts_without_them() {
    let sim = start_sim(with_orgs(2)).await;
    let (org, other) = (sim.org(0), sim.org(1));
    let dir = state_dir();
    let first = Proc::start(&args(&sim, &[&org], Some(&dir), &[]));
    wait_writes(&first.exporter(), 1.0).await;
    first.stop();
    let good = std::fs::read(state_file(&dir, &org)).unwrap();
    fail_everything(&sim);

    let mut another = state::decode(&good, &TagLabels::default()).unwrap();
    another.org_id.clone_from(&other);
    let version = |v: u32| {
        let mut b = good.clone();
        b[8..12].copy_from_slice(&v.to_le_bytes());
        b
    };
    let mut garbled = good.clone();
    let middle = garbled.len() / 2;
    garbled[middle] ^= 0x5a;
    let variants: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        ("garbled", garbled, "garbled"),
        ("unknown format", version(0), "unknown state format 0"),
        ("newer format", version(7), "written by a newer release"),
        (
            "not a state file",
            b"{\"not\": \"state\"}\n".to_vec(),
            "not an atlas-cost-exporter state file",
        ),
        ("empty", Vec::new(), "truncated"),
        (
            "another org's",
            state::encode(&another).unwrap(),
            "holds the state of org",
        ),
    ];
    for (what, bytes, reason) in variants {
        let file = state_file(&dir, &org);
        std::fs::write(&file, &bytes).unwrap();
        let mut p = Proc::start(&args(&sim, &[&org], Some(&dir), &[]));
        let e = p.exporter();
        let s = e.samples().await;
        assert!(
            s.costs("services").is_empty(),
            "{what}: nothing kept is served"
        );
        assert_eq!(restored(&s, "services", &org), Some(0.0), "{what}");
        assert_eq!(
            s.value("atlas_cost_state_files_set_aside_total", &[]),
            Some(1.0),
            "{what}"
        );
        e.wait_for_errors("services", &org, "server_error", 1.0)
            .await;
        assert!(p.running(), "{what}: still running");
        assert_eq!(e.get("/healthz", &[]).await.status(), 200);
        let log = p.kill9();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("set aside")).collect();
        assert_eq!(lines.len(), 1, "{what}: logged once:\n{log}");
        assert!(lines[0].contains(reason), "{what}: {}", lines[0]);
        assert!(
            lines[0].contains(&file.display().to_string()),
            "{}",
            lines[0]
        );
        let aside: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".state.bad-"))
            .collect();
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        assert_eq!(
            std::fs::read(&aside[0]).unwrap(),
            bytes,
            "{what}: not deleted"
        );
        std::fs::remove_file(&aside[0]).unwrap();
        // The failed refreshes wrote a state of their own (no data), which is good.
        let again = Proc::start(&args(&sim, &[&org], Some(&dir), &[]));
        let log = again.kill9();
        assert!(!log.contains("set aside"), "{what}: once only:\n{log}");
        let _ = std::fs::remove_file(&file);
    }
}

/// A second process on a directory in use is refused at start-up with exit code 2 and one
/// line naming the directory, and the first goes on serving; a `kill -9` releases the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_directory_is_refused() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let dir = state_dir();
    let mut first = Proc::start(&args(&sim, &[&org], Some(&dir), &[]));
    let (code, err) = run_to_exit(&args(&sim, &[&org], Some(&dir), &[]));
    assert_eq!(code, Some(2), "{err}");
    let err = err.trim_end();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("locked"),
        "{err}"
    );
    assert!(first.running());
    assert_eq!(first.exporter().get("/healthz", &[]).await.status(), 200);
    first.kill9();
    let next = Proc::start(&args(&sim, &[&org], Some(&dir), &[]));
    assert_eq!(next.exporter().get("/healthz", &[]).await.status(), 200);
    next.kill9();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A missing directory is created 0700 with its parents, and the lock and state files are
/// 0600; a path that cannot be a directory, or a directory that is not writable, stops the
/// start-up with exit code 2 and one line naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_is_private_and_an_unusable_one_stops_the_start_up() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let root = temp_dir();
    let dir = root.join("a/b/state");
    let p = Proc::start(&args(&sim, &[&org], Some(&dir), &[]));
    wait_writes(&p.exporter(), 1.0).await;
    p.stop();
    for d in [root.join("a"), root.join("a/b"), dir.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 2, "the lock and the org's file: {files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    let plain = root.join("plain-file");
    std::fs::write(&plain, b"x").unwrap();
    for bad in [plain.clone(), plain.join("state")] {
        let (code, err) = run_to_exit(&args(&sim, &[&org], Some(&bad), &[]));
        let err = err.trim_end();
        assert_eq!(code, Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("--storage.path {}", bad.display())),
            "{err}"
        );
    }

    let locked_out = root.join("read-only");
    std::fs::create_dir(&locked_out).unwrap();
    std::fs::set_permissions(&locked_out, std::fs::Permissions::from_mode(0o500)).unwrap();
    if std::fs::write(locked_out.join("probe"), b"x").is_ok() {
        eprintln!("running as root: a 0500 directory is writable, that case is not checked");
    } else {
        let (code, err) = run_to_exit(&args(&sim, &[&org], Some(&locked_out), &[]));
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("not writable"), "{err}");
    }
}

/// A write that fails (the file's place taken by a directory) is logged and counted in
/// `atlas_cost_state_write_failures_total`; serving and refreshing go on, and writes succeed
/// again once the obstacle is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_logged_and_counted_and_stops_nothing() {
    let sim = start_sim(with_orgs(1)).await;
    let org = sim.org(0);
    let dir = state_dir();
    let p = Proc::start(&args(
        &sim,
        &[&org],
        Some(&dir),
        &["--refresh.interval", "1s"],
    ));
    let e = p.exporter();
    let first = wait_writes(&e, 1.0).await;
    let file = state_file(&dir, &org);
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir_all(file.join("in-the-way")).unwrap();
    let failing = e
        .wait_for("two failed writes", |s| {
            s.value("atlas_cost_state_write_failures_total", &[])
                .unwrap_or(0.0)
                >= 2.0
        })
        .await;
    assert_eq!(failing.up("services", &org), Some(1.0));
    assert!(failing.last_success("services", &org) > first.last_success("services", &org));
    assert_eq!(costs(&failing).len(), costs(&first).len());
    std::fs::remove_dir_all(&file).unwrap();
    let successes = |s: &Samples| {
        s.value("atlas_cost_state_writes_total", &[]).unwrap_or(0.0)
            - s.value("atlas_cost_state_write_failures_total", &[])
                .unwrap_or(0.0)
    };
    let before = successes(&failing);
    e.wait_for("a successful write again", |s| successes(s) > before)
        .await;
    assert!(kept_counts(&dir, &org).values().all(|n| *n > 0));
    let log = p.kill9();
    assert!(log.contains("writing the kept state failed"), "{log}");
}

/// No secret and no token is anywhere in the state directory: neither credential kind's
/// secret (raw or base64, alone or as `id:secret`), the OAuth tokens and Digest nonces the
/// simulator issued, nor the basic-auth password or bcrypt hash of `--web.config.file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_is_kept_in_the_state_directory() {
    const CLIENT_ID: &str = "mdb_sa_id_statetest";
    const CLIENT_SECRET: &str = "sa-secret-P4zW8nQ2";
    const PUBLIC_KEY: &str = "statepublic";
    const PRIVATE_KEY: &str = "api-private-K9dT3vX6";
    const WEB_PASSWORD: &str = "web-password-R5eY2uI8";
    let sim = start_sim(SimConfig {
        orgs: 1,
        nonce_ttl: Duration::from_secs(3600),
        credentials: SimCredentials {
            client_id: CLIENT_ID.to_owned(),
            client_secret: CLIENT_SECRET.to_owned(),
            public_key: PUBLIC_KEY.to_owned(),
            private_key: PRIVATE_KEY.to_owned(),
        },
        ..SimConfig::default()
    })
    .await;
    let org = sim.org(0);
    let root = temp_dir();
    let hash = bcrypt::hash(WEB_PASSWORD, 4).unwrap();
    let web = root.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    let dir = root.join("state");
    let http = reqwest::Client::new();
    for env in [
        [
            ("MONGODB_ATLAS_CLIENT_ID", CLIENT_ID),
            ("MONGODB_ATLAS_CLIENT_SECRET", CLIENT_SECRET),
        ],
        [
            ("MONGODB_ATLAS_PUBLIC_API_KEY", PUBLIC_KEY),
            ("MONGODB_ATLAS_PRIVATE_API_KEY", PRIVATE_KEY),
        ],
    ] {
        let flags = args(
            &sim,
            &[&org],
            Some(&dir),
            &["--web.config.file", web.to_str().unwrap()],
        );
        let mut cmd = command(&flags, &env);
        cmd.env_remove("MONGODB_ATLAS_CLIENT_ID")
            .env_remove("MONGODB_ATLAS_CLIENT_SECRET")
            .envs(env);
        let p = Proc::start_with(cmd);
        let url = format!("http://{}/metrics", p.addr);
        let mut written = false;
        for _ in 0..1200 {
            let r = http
                .get(&url)
                .basic_auth("prometheus", Some(WEB_PASSWORD))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if r.lines()
                .any(|l| l.starts_with("atlas_cost_state_writes_total ") && !l.ends_with(" 0"))
            {
                written = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(written, "no state written:\n{}", p.log());
        p.stop();
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut forbidden: Vec<String> = Vec::new();
    for (user, secret) in [
        (CLIENT_ID, CLIENT_SECRET),
        (PUBLIC_KEY, PRIVATE_KEY),
        ("prometheus", WEB_PASSWORD),
    ] {
        forbidden.extend([
            secret.to_owned(),
            b64(secret),
            b64(&format!("{user}:{secret}")),
        ]);
    }
    forbidden.push(hash);
    let issued = sim.sim.issued_credentials();
    assert!(
        issued.len() >= 2,
        "a token and a nonce at least: {issued:?}"
    );
    forbidden.extend(issued);
    let mut searched = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for f in &forbidden {
            assert!(
                !text.contains(f.as_str()),
                "{} holds {f:?}",
                entry.path().display()
            );
        }
        searched += bytes.len();
    }
    let kept = std::fs::read(state_file(&dir, &org)).unwrap();
    assert!(
        String::from_utf8_lossy(&kept).contains(&org),
        "the search ran over a real state ({searched} bytes)"
    );
}

/// Only what is configured now is served from the state: an org left out of the
/// configuration, or out of this replica's shard, is never served (its file is left alone);
/// a query whose configuration changed (here: tag labels, which change the queries grouped
/// by project or cluster) gets neither its kept data nor its kept months, which are read
/// again from Atlas, while the unchanged query keeps both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_is_configured_now_is_served_from_the_state() {
    let sim = start_sim(with_orgs(2)).await;
    let (a, b) = (sim.org(0), sim.org(1));
    let current = sim.sim.current_month();
    let dir = state_dir();
    let months = ["--cost.months", "3"];
    let first = Proc::start(&args(&sim, &[&a, &b], Some(&dir), &months));
    wait_writes(&first.exporter(), 2.0).await;
    first.stop();
    fail_everything(&sim);
    let org_series = |s: &Samples, org: &str| {
        s.0.iter()
            .filter(|x| x.label("org_id") == Some(org))
            .count()
    };

    // Org b is no longer configured.
    let p = Proc::start(&args(&sim, &[&a], Some(&dir), &months));
    let s = p.exporter().samples().await;
    assert!(!s.costs("services").is_empty());
    assert_eq!(restored(&s, "services", &a), Some(1.0));
    assert_eq!(org_series(&s, &b), 0, "nothing of org b");
    let log = p.kill9();
    assert!(
        log.contains(&state::file_name(&b)) && log.contains("not served"),
        "{log}"
    );
    assert!(state_file(&dir, &b).exists(), "left in place");

    // Both configured, but this replica's shard owns only one of them.
    let (count, index) = (2..10)
        .flat_map(|n| (0..n).map(move |i| (n, i)))
        .find(|(n, i)| {
            let shard = Shard::new(*n, *i).unwrap();
            shard.owns(&a) && !shard.owns(&b)
        })
        .expect("a shard that owns a alone");
    let (count, index) = (count.to_string(), index.to_string());
    let sharded = [
        "--cost.months",
        "3",
        "--shard.count",
        &count,
        "--shard.index",
        &index,
    ];
    let p = Proc::start(&args(&sim, &[&a, &b], Some(&dir), &sharded));
    let s = p.exporter().samples().await;
    assert_eq!(restored(&s, "clusters", &a), Some(1.0));
    assert_eq!(org_series(&s, &b), 0, "org b is another shard's");
    p.kill9();

    // The projects and clusters queries of org a changed: their kept data is not served.
    let changed = ["--cost.months", "3", "--cost.tag-labels", "team"];
    let p = Proc::start(&args(&sim, &[&a], Some(&dir), &changed));
    let s = p.exporter().samples().await;
    assert_eq!(restored(&s, "services", &a), Some(1.0), "unchanged");
    assert!(!s.costs("services").is_empty());
    for q in ["projects", "clusters"] {
        assert_eq!(restored(&s, q, &a), Some(0.0), "{q}");
        assert_eq!(s.last_success(q, &a), None, "{q}");
        assert!(s.costs(q).is_empty(), "{q}");
    }
    let log = p.kill9();
    assert!(log.contains("configuration changed"), "{log}");

    // Their closed month is read again; the unchanged query reads only the open months.
    sim.sim.clear_faults();
    let seen = sim.sim.created_queries().len();
    let p = Proc::start(&args(&sim, &[&a], Some(&dir), &changed));
    p.exporter().wait_ready().await;
    p.stop();
    let created = &sim.sim.created_queries()[seen..];
    assert_eq!(created.len(), 3, "{created:?}");
    for q in created {
        let start = match q.group_by {
            GroupBy::Services => current.plus(-1),
            _ => current.plus(-2),
        };
        assert_eq!(q.start, start, "{q:?}");
    }
}

/// The state is written after a publication, once per publication, and never on the
/// scrape path: one refresh (the interval is an hour) writes once, and fifty scrapes after
/// it write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_written_once_per_publication_never_by_a_scrape() {
    let sim = start_sim(with_orgs(1)).await;
    let dir = state_dir();
    let exporter = sim
        .exporter(&atlas_cost_exporter::config::QuerySpec::defaults(2))
        .tweak(|c| c.storage_path = Some(dir.clone()))
        .ready()
        .await;
    let s = wait_writes(&exporter, 1.0).await;
    assert_eq!(s.value("atlas_cost_state_writes_total", &[]), Some(1.0));
    let file = state_file(&dir, &sim.org(0));
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    for _ in 0..50 {
        exporter
            .get("/metrics", &[("Accept-Encoding", "gzip")])
            .await;
    }
    let s = exporter.samples().await;
    assert_eq!(s.value("atlas_cost_state_writes_total", &[]), Some(1.0));
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );
    exporter.stop().await;
}

/// Without `--storage.path` nothing is written, `--demo` included: its working and home
/// directories stay empty, and no state metric is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_storage_path_the_demo_writes_nothing() {
    let cwd = temp_dir();
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("HOME", &cwd)
        .current_dir(&cwd)
        .args(["--demo", "--web.listen-address", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let p = Proc::start_with(cmd);
    let e = p.exporter();
    e.wait_ready().await;
    let text = e.scrape_text().await;
    assert!(!text.contains("atlas_cost_state_"), "{text}");
    p.stop();
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0);
}
