//! One full refresh against the simulator, at 1k, 10k and 100k series: wall time, CPU time,
//! Atlas requests, bytes fetched, the encoded body and the peak memory of a process that does
//! only that refresh.
//!
//! ```sh
//! cargo run --release --example refresh_bench                # 1k, 10k and 100k series
//! cargo run --release --example refresh_bench -- 1000 50000  # other sizes
//! ```
//!
//! The parent process runs the simulator (in-process, `polls_before_ready = 1`, counting the
//! response bytes it sends) and, for each size, starts itself again as a child that builds the
//! exporter's configuration from flags and a YAML file (the `clusters` query over all 18
//! months, service-account credentials), runs `Refresher::refresh_once` once and reports
//! from `/proc/self`: CPU time (utime + stime) and VmHWM against the RSS it had just before.
//! The parent prints one Markdown table row per size.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::HttpBody as _;
use clap::Parser as _;

use atlas_cost_exporter::cli::Cli;
use atlas_cost_exporter::config::Config;
use atlas_cost_exporter::metrics::SelfMetrics;
use atlas_cost_exporter::refresher::Refresher;
use atlas_cost_exporter::simulator::{SimConfig, SimEndpoint, Simulator};
use atlas_cost_exporter::snapshot::SnapshotCell;

const DEFAULT_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const POLL_INTERVAL: &str = "20ms";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1], &args[2]);
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        args.iter()
            .map(|a| a.parse().expect("sizes are numbers of series"))
            .collect()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "| series (sim) | series served | wall | CPU (user+sys) | Atlas requests (token/create/poll/projects/clusters) | bytes fetched | encoded body | RSS before | VmHWM after | extra memory | extra / body |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        parent_run(&rt, n);
    }
}

fn parent_run(rt: &tokio::runtime::Runtime, n: usize) {
    let sim = Simulator::new(SimConfig {
        polls_before_ready: 1,
        ..SimConfig::with_series(n)
    });
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let app = sim.router().layer(axum::middleware::from_fn(
        move |req, next: axum::middleware::Next| {
            let counter = counter.clone();
            async move {
                let resp = next.run(req).await;
                let size = resp.body().size_hint().exact().unwrap_or(0);
                counter.fetch_add(size, Ordering::Relaxed);
                resp
            }
        },
    ));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    let orgs: Vec<String> = sim.dataset().orgs.iter().map(|o| o.id.clone()).collect();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", &url, &orgs.join(",")])
        .output()
        .expect("the child runs");
    let _ = stop.send(());
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| -> u64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("child report lacks {k}: {report}"))
    };
    let req = |e| sim.requests(e);
    let total = [
        SimEndpoint::Token,
        SimEndpoint::Create,
        SimEndpoint::Poll,
        SimEndpoint::Projects,
        SimEndpoint::Clusters,
    ]
    .map(req);
    let (rss0, hwm, body) = (field("rss_before"), field("vmhwm"), field("body_bytes"));
    let extra = hwm.saturating_sub(rss0);
    println!(
        "| {} | {} | {} ms | {} ms | {} ({}/{}/{}/{}/{}) | {} | {} | {} | {} | {} | {:.2} |",
        sim.dataset().series(),
        field("series"),
        field("wall_ms"),
        field("cpu_ms"),
        total.iter().sum::<u64>(),
        total[0],
        total[1],
        total[2],
        total[3],
        total[4],
        mib(sent.load(Ordering::Relaxed)),
        mib(body),
        mib(rss0),
        mib(hwm),
        mib(extra),
        extra as f64 / body.max(1) as f64,
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// CPU time of the whole process so far (utime + stime, clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here (0-based from field 3).
    Duration::from_millis((f[11] + f[12]) * 10)
}

fn child(url: &str, orgs: &str) {
    let dir = std::env::temp_dir().join(format!("refresh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yml");
    let mut yaml = String::from("orgs:\n");
    for org in orgs.split(',') {
        yaml.push_str(&format!(
            "  - id: {org}\n    queries:\n      - name: clusters\n        group_by: clusters\n        months: 18\n"
        ));
    }
    std::fs::write(&file, yaml).unwrap();
    let cli = Cli::try_parse_from([
        "atlas-cost-exporter",
        "--atlas.base-url",
        url,
        "--config.file",
        file.to_str().unwrap(),
        "--atlas.poll-interval",
        POLL_INTERVAL,
        "--atlas.requests-per-minute",
        "100000",
    ])
    .unwrap();
    let env = std::collections::HashMap::from([
        ("MONGODB_ATLAS_CLIENT_ID", "mdb_sa_id_demo"),
        ("MONGODB_ATLAS_CLIENT_SECRET", "mdb_sa_sk_demo"),
    ]);
    let config = Config::from_flags(&cli.flags, &env).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let metrics = Arc::new(SelfMetrics::new("1h"));
    let cell = Arc::new(SnapshotCell::default());
    let refresher = rt.block_on(async { Refresher::new(&config, metrics, cell.clone()).unwrap() });
    let rss_before = status_bytes("VmRSS");
    let cpu0 = cpu_time();
    let started = Instant::now();
    rt.block_on(refresher.refresh_once());
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu0;
    let vmhwm = status_bytes("VmHWM");
    let snapshot = cell.load();
    for s in &snapshot.statuses {
        assert!(
            s.up,
            "query {} of {} failed: {:?}",
            s.query, s.org_id, s.last_error
        );
    }
    println!(
        "series={} wall_ms={} cpu_ms={} rss_before={rss_before} vmhwm={vmhwm} body_bytes={}",
        snapshot.costs.usage_series,
        wall.as_millis(),
        cpu.as_millis(),
        snapshot.costs.len,
    );
}
