//! Scale benchmark: the exporter (a child process, so its memory is its own) against the
//! built-in simulator (in this process). Results go to stdout as Markdown table rows; see
//! BENCHMARKS-SCALE.md.
//!
//! ```sh
//! cargo run --release --example scale_bench -- large [projects] [clusters/project] [services] [months] [json|csv]
//! cargo run --release --example scale_bench -- top20 [projects] [clusters/project] [services] [months]
//! cargo run --release --example scale_bench -- orgs [orgs] [projects/org] [clusters/project] [concurrency]
//! cargo run --release --example scale_bench -- restart [series]
//! ```
//!
//! `restart` (issue 21): the `clusters` query of every org of `simulate --series N` over 18
//! months (as `refresh_bench`), with `--storage.path`: the time from the spawn to the first
//! full scrape without state (the refresh) and, after a `kill -9`, with it while Atlas answers
//! only 503; the state's size against the text body; the state writes' time.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use atlas_cost_exporter::cli::Cli;
use atlas_cost_exporter::config::{Config, ProcessEnv};
use atlas_cost_exporter::simulator::{SimConfig, SimCredentials, SimEndpoint, Simulator};
use clap::Parser as _;

fn arg(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// `VmHWM` (peak) and `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU time (user + system) a process has used so far, in milliseconds, from
/// `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) * 10
}

/// Parses an exact decimal amount into micro-dollars.
fn micros(v: &str) -> i64 {
    let (neg, v) = v.strip_prefix('-').map_or((false, v), |r| (true, r));
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let frac = format!("{frac:0<6}");
    let m = whole.parse::<i64>().unwrap() * 1_000_000 + frac[..6].parse::<i64>().unwrap();
    if neg { -m } else { m }
}

struct Run {
    child: Child,
    port: u16,
    http: reqwest::Client,
}

impl Run {
    async fn start(sim_url: &str, extra: &[&str], yaml: Option<String>) -> Run {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let creds = SimCredentials::demo();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.arg("exporter")
            .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
            .args(["--atlas.base-url", sim_url])
            .args(["--log.level", "warn"])
            .args(extra)
            .env("MONGODB_ATLAS_CLIENT_ID", &creds.client_id)
            .env("MONGODB_ATLAS_CLIENT_SECRET", &creds.client_secret)
            .env("SIM_SECRET", &creds.client_secret);
        if let Some(yaml) = yaml {
            let path = std::env::temp_dir().join(format!("scale-bench-{port}.yml"));
            std::fs::write(&path, yaml).unwrap();
            cmd.args(["--config.file", path.to_str().unwrap()]);
        }
        Run {
            child: cmd.spawn().unwrap(),
            port,
            http: reqwest::Client::new(),
        }
    }

    async fn wait_ready(&self) -> Duration {
        let started = Instant::now();
        loop {
            let url = format!("http://127.0.0.1:{}/readyz", self.port);
            if let Ok(r) = self.http.get(&url).send().await
                && r.status() == 200
            {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(3600), "not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Median scrape latency of `n` scrapes, and the last body.
    async fn scrape(&self, n: usize) -> (Duration, String) {
        let mut times = Vec::new();
        let mut body = String::new();
        for _ in 0..n {
            let t = Instant::now();
            body = self
                .http
                .get(format!("http://127.0.0.1:{}/metrics", self.port))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        (times[times.len() / 2], body)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an unlabelled sample `name` in an exposition.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Usage series and exact totals per query.
fn usage(body: &str) -> (usize, HashMap<String, (usize, i64)>) {
    let mut per_query: HashMap<String, (usize, i64)> = HashMap::new();
    let mut n = 0;
    for line in body
        .lines()
        .filter(|l| l.starts_with("atlas_cost_usage_usd{"))
    {
        n += 1;
        let q = line
            .split("query=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let v = line.rsplit(' ').next().unwrap();
        let e = per_query.entry(q.to_owned()).or_default();
        e.0 += 1;
        e.1 += micros(v);
    }
    (n, per_query)
}

async fn start_sim(config: SimConfig) -> (Simulator, String) {
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sim.clone().serve(listener, std::future::pending()));
    (sim, url)
}

async fn large(args: &[String], top: bool) {
    let (p, c, s, m) = (
        arg(args, 2, 1000),
        arg(args, 3, 5),
        arg(args, 4, 4),
        arg(args, 5, 18),
    );
    let months = u32::try_from(m).unwrap();
    // JSON answers of more than ~1M rows pass the 256 MiB answer cap: `csv` is about half.
    let format = args.get(6).map_or("json", String::as_str);
    let (sim, url) = start_sim(SimConfig {
        orgs: 1,
        projects_per_org: p,
        clusters_per_project: c,
        services_per_cluster: s,
        months,
        polls_before_ready: 1,
        ..SimConfig::default()
    })
    .await;
    let org = sim.dataset().orgs[0].id.clone();
    // top-20: the 20 most expensive projects per org, and clusters per project, a month;
    // plus a series limit on `clusters` to show shedding at scale.
    let (projects_controls, clusters_controls) = if top {
        (
            "        controls: {top: 20}\n",
            "        controls: {top: 20, max_series: 50000}\n",
        )
    } else {
        ("", "")
    };
    let yaml = format!(
        "orgs:\n  - id: {org}\n    queries:\n      - {{name: services, months: {m}}}\n      - name: projects\n        group_by: projects\n        months: {m}\n{projects_controls}      - name: clusters\n        group_by: clusters\n        months: {m}\n        format: {format}\n{clusters_controls}"
    );
    // Discovery lists every project's clusters: with Atlas's 100 requests a minute that alone
    // takes projects/100 minutes; the budget is lifted here to time the exporter itself.
    let run = Run::start(
        &url,
        &[
            "--atlas.requests-per-minute",
            "100000",
            "--atlas.poll-interval",
            "100ms",
            "--cost.months",
            &m.to_string(),
        ],
        Some(yaml),
    )
    .await;
    let refresh = run.wait_ready().await;
    let (peak_refresh, _) = rss_kib(run.child.id());
    let cpu_at_ready = cpu_ms(run.child.id());
    let (latency, body) = run.scrape(5).await;
    let (peak, rss) = rss_kib(run.child.id());
    let (series, per_query) = usage(&body);
    for line in body.lines().filter(|l| {
        l.starts_with("atlas_cost_query_up{") && l.ends_with(" 0")
            || l.starts_with("atlas_cost_query_refresh_errors_total{") && !l.ends_with(" 0")
    }) {
        eprintln!("problem: {line}");
    }
    let current = sim.current_month();
    let start = current.plus(-(i64::from(months) - 1));
    // With their `(unattributed)` remainders, both queries add up to the org's total.
    let atlas_cents = sim.dataset().total_cents(&org, start, current.plus(1));
    let atlas_projects = atlas_cents;
    let (cq_series, cq_micros) = per_query.get("clusters").copied().unwrap_or_default();
    let (pq_series, pq_micros) = per_query.get("projects").copied().unwrap_or_default();
    let shed = body
        .lines()
        .find(|l| l.starts_with("atlas_cost_query_series_shed{query=\"clusters\""))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?")
        .to_owned();
    let requests = sim.request_log().len();
    println!(
        "| {} | {p}x{c}x{s}x{m} ({format}) | {} clusters, {} usage series ({} in `clusters`, {pq_series} in `projects`; shed {shed}) | refresh {:.1}s, exporter CPU {cpu_at_ready} ms | peak RSS {} MiB (during refresh {} MiB), RSS after {} MiB | {:.0} B/series (RSS/series) | scrape {:.0} ms, {} MiB body | `clusters` total {} = Atlas {} : {} | {requests} requests |",
        if top { "top-20" } else { "no controls" },
        p * c,
        series,
        cq_series,
        refresh.as_secs_f64(),
        peak / 1024,
        peak_refresh / 1024,
        rss / 1024,
        (rss * 1024) as f64 / series.max(1) as f64,
        latency.as_secs_f64() * 1000.0,
        body.len() / (1024 * 1024),
        cq_micros,
        atlas_cents * 10_000,
        if cq_micros == atlas_cents * 10_000 {
            "exact"
        } else {
            "MISMATCH"
        },
    );
    println!(
        "|   | `projects` total {pq_micros} = Atlas {} : {} |",
        atlas_projects * 10_000,
        if pq_micros == atlas_projects * 10_000 {
            "exact"
        } else {
            "MISMATCH"
        },
    );
}

/// Spawn to the first scrape that answers (polled every 10 ms), its usage series and body
/// bytes, and the child's CPU by then.
async fn first_scrape(run: &Run, spawned: Instant) -> (Duration, usize, usize, u64) {
    loop {
        let url = format!("http://127.0.0.1:{}/metrics", run.port);
        if let Ok(r) = run.http.get(&url).send().await
            && r.status() == 200
            && let Ok(body) = r.text().await
        {
            let took = spawned.elapsed();
            let series = body
                .lines()
                .filter(|l| l.starts_with("atlas_cost_usage_usd{"))
                .count();
            return (took, series, body.len(), cpu_ms(run.child.id()));
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(600),
            "never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn restart(args: &[String]) {
    let n = arg(args, 2, 100_000);
    let (sim, url) = start_sim(SimConfig {
        polls_before_ready: 1,
        ..SimConfig::with_series(n)
    })
    .await;
    let orgs: Vec<String> = sim.dataset().orgs.iter().map(|o| o.id.clone()).collect();
    let mut yaml = String::from("orgs:\n");
    for org in &orgs {
        yaml.push_str(&format!(
            "  - id: {org}\n    queries:\n      - name: clusters\n        group_by: clusters\n        months: 18\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!("scale-bench-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let flags = [
        "--atlas.requests-per-minute",
        "100000",
        "--atlas.poll-interval",
        "20ms",
        "--storage.path",
        dir.to_str().unwrap(),
    ];
    // Without state: the first full scrape waits for the refresh.
    let spawned = Instant::now();
    let mut run = Run::start(&url, &flags, Some(yaml.clone())).await;
    let ready = run.wait_ready().await;
    let (cold, series, body_bytes, _) = first_scrape(&run, spawned).await;
    let cold_cpu = cpu_ms(run.child.id());
    // Every org's state written once.
    let metrics = loop {
        let (_, body) = run.scrape(1).await;
        if sample(&body, "atlas_cost_state_writes_total") >= orgs.len() as f64 {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let state_bytes = sample(&metrics, "atlas_cost_state_bytes");
    let writes = sample(&metrics, "atlas_cost_state_writes_total");
    let write_s = sample(&metrics, "atlas_cost_state_write_duration_seconds_sum");
    let _ = run.child.kill();
    let _ = run.child.wait();
    for e in [
        SimEndpoint::Token,
        SimEndpoint::Create,
        SimEndpoint::Poll,
        SimEndpoint::Projects,
        SimEndpoint::Clusters,
        SimEndpoint::FlexClusters,
    ] {
        sim.fail(e, atlas_cost_exporter::simulator::Fault::Status(503));
    }
    // With state, Atlas failing: the first scrape that answers is the full one.
    let spawned = Instant::now();
    let warm = Run::start(&url, &flags, Some(yaml)).await;
    let (took, kept, kept_bytes, warm_cpu) = first_scrape(&warm, spawned).await;
    let (peak, _) = rss_kib(warm.child.id());
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "| {} | {series} | {:.1} MB | {:.1} MB ({:.1} % of the body, {:.1} B/series) | {writes} writes, {:.0} ms in all ({:.1} ms each) | {:.2} s (ready {:.2} s, {:.1} s CPU) | {:.3} s ({} ms CPU; {kept} series, {:.1} MB, Atlas failing) | {} MiB |",
        sim.dataset().series(),
        body_bytes as f64 / 1e6,
        state_bytes / 1e6,
        100.0 * state_bytes / body_bytes as f64,
        state_bytes / series.max(1) as f64,
        write_s * 1000.0,
        write_s * 1000.0 / writes.max(1.0),
        cold.as_secs_f64(),
        ready.as_secs_f64(),
        cold_cpu as f64 / 1000.0,
        took.as_secs_f64(),
        warm_cpu,
        kept_bytes as f64 / 1e6,
        peak / 1024,
    );
    assert_eq!(kept, series, "the restart serves every series");
}

async fn many_orgs(args: &[String]) {
    let (orgs, p, c) = (arg(args, 2, 200), arg(args, 3, 5), arg(args, 4, 4));
    let concurrency = arg(args, 5, 4).to_string();
    let (sim, url) = start_sim(SimConfig {
        orgs,
        projects_per_org: p,
        clusters_per_project: c,
        months: 3,
        polls_before_ready: 1,
        ..SimConfig::default()
    })
    .await;
    let ids: Vec<String> = sim.dataset().orgs.iter().map(|o| o.id.clone()).collect();
    let run = Run::start(
        &url,
        &[
            "--atlas.org-id",
            &ids.join(","),
            "--atlas.poll-interval",
            "100ms",
            "--refresh.concurrency",
            &concurrency,
        ],
        None,
    )
    .await;
    let refresh = run.wait_ready().await;
    let (_, body) = run.scrape(1).await;
    let (series, _) = usage(&body);
    let (peak, _) = rss_kib(run.child.id());
    let log = sim.request_log();
    // The most requests any org sent in any 60 s window (the budget is 100).
    let mut by_org: HashMap<&str, Vec<Instant>> = HashMap::new();
    for r in &log {
        if let Some(o) = r.org_id.as_deref() {
            by_org.entry(o).or_default().push(r.at);
        }
    }
    let mut worst = 0;
    for times in by_org.values_mut() {
        times.sort();
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= Duration::from_secs(60) {
                lo += 1;
            }
            worst = worst.max(hi - lo + 1);
        }
    }
    let tokens = log
        .iter()
        .filter(|r| r.endpoint == SimEndpoint::Token)
        .count();
    println!(
        "| {orgs} orgs x {p} projects x {c} clusters, 3 months | refresh {:.1}s (concurrency {concurrency}, 100 req/min/org) | {series} usage series | peak RSS {} MiB | {} requests, most per org per 60 s: {worst} (budget 100) | token requests: {tokens} |",
        refresh.as_secs_f64(),
        peak / 1024,
        log.len(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.get(1).map(String::as_str) {
        Some("exporter") => {
            // The child: a real exporter from real flags.
            let mut argv = vec!["atlas-cost-exporter".to_owned()];
            argv.extend(args[2..].iter().cloned());
            let cli = Cli::parse_from(argv);
            let config = Config::from_flags(&cli.flags, &ProcessEnv).unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
                atlas_cost_exporter::run(config, listener, std::future::pending())
                    .await
                    .unwrap();
            });
        }
        Some("large") => rt.block_on(large(&args, false)),
        Some("top20") => rt.block_on(large(&args, true)),
        Some("orgs") => rt.block_on(many_orgs(&args)),
        Some("restart") => rt.block_on(restart(&args)),
        _ => eprintln!("usage: scale_bench large|top20|orgs|restart [sizes...] (see the source)"),
    }
}
