//! One full refresh against the simulator, at 1k, 10k and 100k series: wall time, CPU time,
//! Atlas requests, bytes fetched, the encoded body and the peak memory of a process that does
//! only that refresh.
//!
//! ```sh
//! cargo run --release --example refresh_bench                # 1k, 10k and 100k series
//! cargo run --release --example refresh_bench -- 1000 50000  # other sizes
//! cargo run --release --example refresh_bench -- --state 100000 1000000
//! ```
//!
//! With `--state` (issue 21) the refresh keeps its state in a temporary `--storage.path`, and
//! the child then times, on one thread (`/proc/thread-self/schedstat`), what one write of
//! every org's state file costs (encoding, writing, fsyncs: `Store::write` of the decoded
//! file, the same data the refresh wrote) and what reading it back costs (decoding and
//! rendering the series), against the refresh's CPU.
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
use atlas_cost_exporter::series::TagLabels;
use atlas_cost_exporter::simulator::{SimConfig, SimEndpoint, Simulator};
use atlas_cost_exporter::snapshot::SnapshotCell;

const DEFAULT_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const POLL_INTERVAL: &str = "20ms";

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(
            &args[1],
            &args[2],
            args.get(3).map(String::as_str) == Some("state"),
        );
        return;
    }
    let state = args.first().map(String::as_str) == Some("--state");
    if state {
        args.remove(0);
    }
    let sizes: Vec<usize> = if args.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        args.iter()
            .map(|a| a.parse().expect("sizes are numbers of series"))
            .collect()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    if state {
        println!(
            "| series served | encoded body | state files | state / body | refresh CPU (its writes included) | one write of every org's file: CPU (wall) | write CPU / refresh CPU | reading it back: CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for n in sizes {
            parent_run(&rt, n, true);
        }
        return;
    }
    println!(
        "| series (sim) | series served | wall | CPU (user+sys) | Atlas requests (token/create/poll/projects/clusters) | bytes fetched | encoded body | RSS before | VmHWM after | extra memory | extra / body |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        parent_run(&rt, n, false);
    }
}

fn parent_run(rt: &tokio::runtime::Runtime, n: usize, state: bool) {
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
        .args(state.then_some("state"))
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
    if state {
        let ms = |us: u64| us as f64 / 1000.0;
        let (body, kept, cpu) = (field("body_bytes"), field("state_bytes"), field("cpu_ms"));
        println!(
            "| {} | {} | {} | {:.1} % | {} ms | {:.0} ms ({:.0} ms) | {:.1} % | {:.0} ms |",
            field("series"),
            mib(body),
            mib(kept),
            100.0 * kept as f64 / body as f64,
            cpu,
            ms(field("write_cpu_us")),
            ms(field("write_wall_us")),
            100.0 * ms(field("write_cpu_us")) / cpu as f64,
            ms(field("read_cpu_us")),
        );
        return;
    }
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

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

/// One write of every org's state file, and one read of each, timed on this thread.
fn time_state(store: &atlas_cost_exporter::state::Store, orgs: &str, tags: &TagLabels) -> String {
    use atlas_cost_exporter::state;
    let (mut bytes, mut write, mut wall, mut read) =
        (0u64, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for org in orgs.split(',') {
        let file = std::fs::read(store.dir().join(state::file_name(org))).unwrap();
        bytes += file.len() as u64;
        let t = thread_cpu();
        let kept = state::decode(&file, tags).unwrap();
        read += thread_cpu() - t;
        let (t, w) = (thread_cpu(), Instant::now());
        store.write(&kept).unwrap();
        write += thread_cpu() - t;
        wall += w.elapsed();
    }
    format!(
        " state_bytes={bytes} write_cpu_us={} write_wall_us={} read_cpu_us={}",
        write.as_micros(),
        wall.as_micros(),
        read.as_micros()
    )
}

fn child(url: &str, orgs: &str, state: bool) {
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
    let mut config = Config::from_flags(&cli.flags, &env).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let state_dir =
        std::env::temp_dir().join(format!("refresh-bench-state-{}", std::process::id()));
    if state {
        config.storage_path = Some(state_dir.clone());
    }
    let store = atlas_cost_exporter::open_store(&config).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let metrics = Arc::new(SelfMetrics::new("1h"));
    let cell = Arc::new(SnapshotCell::default());
    let mut refresher =
        rt.block_on(async { Refresher::new(&config, metrics, cell.clone()).unwrap() });
    if let Some(store) = store.clone() {
        refresher = refresher.with_store(store);
    }
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
    let timed = store.map_or_else(String::new, |s| time_state(&s, orgs, &config.tag_labels));
    let _ = std::fs::remove_dir_all(&state_dir);
    println!(
        "series={} wall_ms={} cpu_ms={} rss_before={rss_before} vmhwm={vmhwm} body_bytes={}{timed}",
        snapshot.costs.usage_series,
        wall.as_millis(),
        cpu.as_millis(),
        snapshot.costs.len,
    );
}
