//! Criterion micro-benchmarks of the refresh and scrape pipeline, at 1k, 10k and 100k rows or
//! series:
//!
//! - `parse_json` / `parse_csv`: [`result::parse_body`] and [`result::parse_csv`] on result
//!   bodies shaped like the simulator's (`groupBy: clusters`, every field filled in);
//! - `encode_costs`: building the pre-encoded cost section of a snapshot from the rendered
//!   series (`RenderedSeries`);
//! - `render_text` / `render_text_gzip`: one `/metrics` body (text 0.0.4), as a scrape builds it
//!   today, and the same gzipped at the server's level (`Compression::fast`).
//!
//! Run: `cargo bench --bench pipeline` (about three minutes on two busy cores).
//! Only public API is used; the scrape path is called from [`scrape_body`] alone, so a change of
//! `render`'s signature is a one-function edit here.

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use atlas_cost_exporter::atlas::result::{self, Parsed, UsageRow};
use atlas_cost_exporter::exposition::{self, Format, RenderedSeries};
use atlas_cost_exporter::metrics::SelfMetrics;
use atlas_cost_exporter::month::Month;
use atlas_cost_exporter::series::{CostSeries, Label, SeriesKey};
use atlas_cost_exporter::simulator::{CSV_HEADER, Dataset, SimConfig};
use atlas_cost_exporter::snapshot::{QueryStatus, Snapshot};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

/// The simulator's data for about `n` series, and its current month.
fn dataset(n: usize) -> (Dataset, Month) {
    let current = Month::containing(SystemTime::now());
    (
        Dataset::generate(&SimConfig::with_series(n), current),
        current,
    )
}

/// One result row as the simulator writes it for `groupBy: clusters`.
struct Row<'a> {
    org_id: &'a str,
    org_name: &'a str,
    project_id: &'a str,
    project_name: &'a str,
    cluster_id: &'a str,
    cluster_name: &'a str,
    service: &'a str,
    month: Month,
    cents: i64,
}

/// The first `n` cluster-level records of the dataset, across orgs.
fn rows(data: &Dataset, n: usize) -> Vec<Row<'_>> {
    data.usage
        .iter()
        .filter_map(|r| {
            let org = data.orgs.get(r.org)?;
            let project = org.projects.get(r.project?)?;
            let cluster = project.clusters.get(r.cluster?)?;
            Some(Row {
                org_id: &org.id,
                org_name: &org.name,
                project_id: &project.id,
                project_name: &project.name,
                cluster_id: &cluster.id,
                cluster_name: &cluster.name,
                service: &r.service,
                month: r.month,
                cents: r.amount_cents,
            })
        })
        .take(n)
        .collect()
}

fn cents_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A JSON result body in the simulator's shape, in the `{"status":200,"content":..}` envelope
/// the exporter asks for.
fn json_body(rows: &[Row<'_>]) -> Vec<u8> {
    let details: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "invoiceId": format!("{:0>24}", r.month.to_string().replace('-', "")),
                "organizationId": r.org_id,
                "organizationName": r.org_name,
                "projectId": r.project_id,
                "projectName": r.project_name,
                "clusterId": r.cluster_id,
                "clusterName": r.cluster_name,
                "service": r.service,
                "usageAmount": r.cents as f64 / 100.0,
                "usageDate": r.month.first_day(),
                "billedDate": r.month.plus(1).first_day(),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"status": 200, "content": {"usageDetails": details}}))
        .expect("JSON encodes")
}

/// A CSV result body in the simulator's shape: a metadata line, an empty line, the table.
fn csv_body(rows: &[Row<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = writeln!(
        out,
        "Organization: {}\n",
        rows.first().map_or("", |r| r.org_name)
    );
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER).expect("CSV header");
    for r in rows {
        let amount = cents_text(r.cents);
        w.write_record([
            r.month.plus(1).first_day().as_str(),
            "000000000000000000000000",
            r.org_name,
            r.org_id,
            r.project_name,
            r.project_id,
            r.cluster_name,
            r.cluster_id,
            r.service,
            r.month.first_day().as_str(),
            amount.as_str(),
        ])
        .expect("CSV row");
    }
    w.into_inner().expect("CSV flush")
}

/// Cost series as the refresher builds them from parsed rows, rendered once as a refresh
/// does, in exposition order.
fn cost_series(rows: &[UsageRow]) -> Vec<RenderedSeries> {
    exposition::render_sorted(typed_series(rows))
}

/// The typed cost series of parsed rows, one per row, the months of a label set sharing
/// one key as the refresher's aggregation makes them.
fn typed_series(rows: &[UsageRow]) -> Vec<CostSeries> {
    let query: Arc<str> = Arc::from("clusters");
    let mut keys: std::collections::HashMap<SeriesKey, SeriesKey> = Default::default();
    rows.iter()
        .map(|r| {
            let mut key = SeriesKey::default();
            for (label, value) in Label::ALL.into_iter().zip([
                &r.org_id,
                &r.org_name,
                &r.project_id,
                &r.project_name,
                &r.cluster_id,
                &r.cluster_name,
                &r.service,
            ]) {
                key.set(label, value.as_deref());
            }
            let key = keys.entry(key.clone()).or_insert(key).clone();
            CostSeries {
                query: query.clone(),
                key,
                month: r.month,
                micros: r.amount_micros,
            }
        })
        .collect()
}

fn parsed_rows(body: &[u8]) -> Vec<UsageRow> {
    match result::parse_body(body, false) {
        Ok(Parsed::Ready(r)) => r.rows,
        other => panic!("the generated JSON body does not parse: {other:?}"),
    }
}

/// A published snapshot holding `series`, with one query status per org.
fn snapshot(series: &[RenderedSeries], current: Month) -> Snapshot {
    let refs: Vec<&RenderedSeries> = series.iter().collect();
    let mut orgs: Vec<&str> = Vec::new();
    for s in series {
        let org = s
            .labels
            .split("org_id=\"")
            .nth(1)
            .unwrap_or("")
            .get(..24)
            .unwrap_or("");
        if !orgs.contains(&org) {
            orgs.push(org);
        }
    }
    let now = SystemTime::now();
    Snapshot {
        statuses: orgs
            .iter()
            .map(|org| QueryStatus {
                attempted: true,
                up: true,
                last_attempt: Some(now),
                last_success: Some(now),
                series: series.len() / orgs.len().max(1),
                ..QueryStatus::pending("clusters", org)
            })
            .collect(),
        orgs: Vec::new(),
        sources: Vec::new(),
        costs: encoded(&refs, current),
        refresh: Duration::from_secs(3600),
        generation: 1,
    }
}

/// What a refresh does once: encode the cost section and compress it.
fn encoded(
    refs: &[&RenderedSeries],
    current: Month,
) -> atlas_cost_exporter::snapshot::EncodedCosts {
    let mut text = String::new();
    let n = exposition::encode_costs(&mut text, refs, current, "1h");
    atlas_cost_exporter::snapshot::EncodedCosts::seal(text, n)
}

/// `data` as raw DEFLATE at `level`, as a refresh compresses the cost text.
fn deflated(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::with_capacity(data.len() / 4), level);
    encoder.write_all(data).expect("writing to a Vec");
    encoder.flush().expect("writing to a Vec");
    std::mem::take(encoder.get_mut())
}

/// The one call into the scrape path: adapt here when `render` changes.
fn scrape_body(snapshot: &Snapshot, metrics: &SelfMetrics, gzip: bool) -> exposition::ScrapeBody {
    exposition::render(snapshot, metrics, SystemTime::now(), Format::Text, gzip)
}

fn pipeline(c: &mut Criterion) {
    let metrics = Arc::new(SelfMetrics::new("1h"));
    for n in SIZES {
        let (data, current) = dataset(n);
        let rows = rows(&data, n);
        assert_eq!(rows.len(), n, "the simulator holds {n} cluster rows");
        let json = json_body(&rows);
        let csv = csv_body(&rows);
        let parsed = parsed_rows(&json);
        let series = cost_series(&parsed);
        let refs: Vec<&RenderedSeries> = series.iter().collect();
        let snap = snapshot(&series, current);
        let body = scrape_body(&snap, &metrics, false).to_vec();
        eprintln!(
            "n={n}: JSON {} B, CSV {} B, text exposition {} B, gzip {} B",
            json.len(),
            csv.len(),
            body.len(),
            scrape_body(&snap, &metrics, true).to_vec().len()
        );

        let mut g = c.benchmark_group("parse_json");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &json, |b, json| {
            b.iter(|| result::parse_body(black_box(json), false))
        });
        g.finish();

        let mut g = c.benchmark_group("parse_csv");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &csv, |b, csv| {
            b.iter(|| result::parse_csv(black_box(csv)))
        });
        g.finish();

        let typed = typed_series(&parsed);
        let mut g = c.benchmark_group("render_series");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &typed, |b, typed| {
            b.iter_batched(
                || typed.clone(),
                |s| exposition::render_sorted(black_box(s)),
                criterion::BatchSize::LargeInput,
            )
        });
        g.finish();

        let mut g = c.benchmark_group("encode_costs");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &refs, |b, refs| {
            b.iter(|| encoded(black_box(refs), current))
        });
        g.finish();

        let mut g = c.benchmark_group("render_text");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
            b.iter(|| scrape_body(black_box(snap), &metrics, false))
        });
        g.finish();

        let mut g = c.benchmark_group("render_text_gzip");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
            b.iter(|| scrape_body(black_box(snap), &metrics, true))
        });
        g.finish();

        // What a burst of scrapes within one second costs each: the self metrics rendered
        // once and shared (exposition::ScrapeCache), the cost bytes not touched.
        let shared = Arc::new(snap.clone());
        let cache = exposition::ScrapeCache::default();
        let now = SystemTime::now();
        let mut g = c.benchmark_group("render_text_gzip_shared");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &shared, |b, snap| {
            b.iter(|| cache.render(black_box(snap), &metrics, now, Format::Text, true))
        });
        g.finish();

        // The per-refresh compression level: the cost text is compressed once a refresh and
        // sent with every gzip scrape (the exporter uses exposition::costs::COST_DEFLATE_LEVEL).
        let text = &snap.costs.text();
        let mut g = c.benchmark_group("deflate_level");
        g.throughput(Throughput::Bytes(text.len() as u64));
        for level in [1, 3, 5, 6, 9] {
            let compression = flate2::Compression::new(level);
            eprintln!(
                "n={n}: DEFLATE level {level}: {} B of {} B",
                deflated(text, compression).len(),
                text.len()
            );
            g.bench_with_input(
                BenchmarkId::new(format!("level{level}"), n),
                text,
                |b, t| b.iter(|| deflated(black_box(t), compression)),
            );
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // Short runs: the whole suite in a few minutes on two shared cores.
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = pipeline
}
criterion_main!(benches);
