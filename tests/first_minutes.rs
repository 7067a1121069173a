//! What a first-time user sees, from the real binary: `--version`, `--demo` with its sample
//! budget, and the landing page rendered by a real browser (headless Chromium from Debian).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atlas_cost_exporter::simulator::{Dataset, SimConfig, Simulator};
use common::{KillOnDrop, Samples, free_port, parse, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_atlas-cost-exporter");

/// The exporter as a process on a free loopback port; killed and reaped when dropped.
struct Demo {
    _child: KillOnDrop,
    base: String,
}

impl Demo {
    fn start(extra: &[&str]) -> Demo {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "--demo",
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .env_remove("ATLAS_EXPORTER_CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the exporter starts");
        Demo {
            _child: KillOnDrop(child),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn get(&self, path: &str) -> Option<String> {
        let r = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        r.status().is_success().then_some(())?;
        r.text().await.ok()
    }

    /// Scrapes until `done` holds for the parsed samples, for at most `limit`.
    async fn scrape_until(&self, limit: Duration, done: impl Fn(&Samples) -> bool) -> Samples {
        let start = Instant::now();
        loop {
            if let Some(text) = self.get("/metrics").await {
                let s = Samples(parse(&text, "text"));
                if done(&s) {
                    return s;
                }
            }
            assert!(
                start.elapsed() < limit,
                "not there within {limit:?} of --demo starting"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `--version` prints the version, the git revision and the rustc version, the same values
/// `atlas_cost_build_info` carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_flag_prints_what_build_info_carries() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let demo = Demo::start(&[]);
    let s = demo.scrape_until(Duration::from_secs(20), |_| true).await;
    let info = s.named("atlas_cost_build_info").next().unwrap();
    let (version, revision, rustversion) = (
        info.label("version").unwrap(),
        info.label("revision").unwrap(),
        info.label("rustversion").unwrap(),
    );
    assert_eq!(
        line.trim(),
        format!("atlas-cost-exporter {version} (revision: {revision}, rustversion: {rustversion})")
    );
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(revision == "unknown" || revision.len() == 40, "{revision}");
    assert!(rustversion.starts_with("1."), "{rustversion}");
}

/// `--demo` alone comes with a sample monthly budget that the demo's forecast exceeds: the
/// budget gauge and both ratios are served within seconds, the forecast over 1 (a budget
/// alert has something to fire on) and never under the month to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_alone_serves_a_sample_budget_within_seconds() {
    let demo = Demo::start(&[]);
    let budget = [("budget", "demo-clusters"), ("atlas_service", "Clusters")];
    // Orgs are published as each finishes: the ratio grows until every demo org is in, and
    // then the forecast is over 1.
    let s = demo
        .scrape_until(Duration::from_secs(30), |s| {
            s.value("atlas_cost_budget_forecast_ratio", &budget)
                .is_some_and(|r| r > 1.0)
        })
        .await;
    assert_eq!(s.value("atlas_cost_budget_usd", &budget), Some(25_000.0));
    let consumed = s
        .value("atlas_cost_budget_consumed_ratio", &budget)
        .unwrap();
    assert!(
        s.value("atlas_cost_budget_forecast_ratio", &budget)
            .unwrap()
            >= consumed
    );
}

/// An explicit `--config.file` replaces the sample budget with its own budgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_a_config_file_serves_its_budgets_instead() {
    let dir = temp_dir();
    let file = dir.join("budgets.yml");
    std::fs::write(
        &file,
        "budgets:\n  - name: mine\n    amount_usd: 123\n    scope:\n      atlas_service: Backup\n",
    )
    .unwrap();
    let demo = Demo::start(&["--config.file", file.to_str().unwrap()]);
    let s = demo
        .scrape_until(Duration::from_secs(30), |s| {
            s.named("atlas_cost_budget_usd").next().is_some()
        })
        .await;
    let budgets: Vec<&str> = s
        .named("atlas_cost_budget_usd")
        .filter_map(|x| x.label("budget"))
        .collect();
    assert_eq!(budgets, ["mine"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first of `names` on the PATH.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs headless Chromium on `url` with `args`, killed after a minute; returns its stdout.
fn chromium(program: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(program)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?} failed: {status}");
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The text of the elements with `class` in `dom` (Chromium's serialization: text escapes
/// only `&`, `<`, `>` and no-break spaces).
fn cells<'a>(dom: &'a str, class: &str) -> Vec<String> {
    let open = format!("<td class=\"{class}\">");
    dom.split(open.as_str())
        .skip(1)
        .map(|rest: &'a str| {
            rest.split("</td>")
                .next()
                .unwrap()
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&nbsp;", "\u{a0}")
                .replace("&amp;", "&")
        })
        .collect()
}

/// Parses `12,345.67`.
fn amount(s: &str) -> f64 {
    s.replace(',', "").parse().unwrap_or(f64::NAN)
}

/// The demo's landing page once every org's `services` query is up, rendered by headless
/// Chromium: the scrape of that moment, the rendered DOM (`--dump-dom`) and a 1280x900
/// screenshot at scale 1, saved as `png_name` in the test's temporary directory. `None`, with
/// a message, only where Chromium is not installed (CI installs it).
async fn rendered_landing_page(png_name: &str) -> Option<RenderedPage> {
    let Some(program) = find_program(&["chromium", "chromium-browser"]) else {
        eprintln!(
            "SKIPPED {png_name}: chromium is not installed (apt-get install chromium; .ci/run \
             installs it)"
        );
        return None;
    };
    let dataset = Simulator::new(SimConfig::default()).dataset();
    let demo = Demo::start(&[]);
    let scrape = demo
        .scrape_until(Duration::from_secs(30), |s| {
            dataset
                .orgs
                .iter()
                .all(|o| s.up("services", &o.id) == Some(1.0))
        })
        .await;
    let profile = temp_dir();
    let url = format!("{}/", demo.base);
    let dom = chromium(&program, &profile, &["--dump-dom"], &url);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(png_name);
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        &program,
        &profile,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,900",
            "--force-device-scale-factor=1",
        ],
        &url,
    );
    let _ = std::fs::remove_dir_all(&profile);
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    eprintln!("landing page screenshot: {}", screenshot.display());
    Some(RenderedPage {
        dataset,
        scrape,
        dom,
        screenshot,
    })
}

/// What [`rendered_landing_page`] saw.
struct RenderedPage {
    dataset: std::sync::Arc<Dataset>,
    scrape: Samples,
    dom: String,
    screenshot: PathBuf,
}

/// The landing page, rendered by headless Chromium: each demo org's name beside its id, with
/// the month to date and forecast of its `services` query, equal to the scrape's sums to the
/// cent. The rendered DOM is checked (`--dump-dom`), and a screenshot is taken. Skipped, with
/// a message, only where Chromium is not installed (CI installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_page_in_chromium_shows_org_names_month_to_date_and_forecast() {
    let Some(page) = rendered_landing_page("landing-page.png").await else {
        return;
    };
    let RenderedPage {
        dataset,
        scrape: s,
        dom,
        ..
    } = page;

    let (names, ids, mtds, forecasts) = (
        cells(&dom, "org-name"),
        cells(&dom, "org-id"),
        cells(&dom, "mtd"),
        cells(&dom, "forecast"),
    );
    assert_eq!(ids.len(), dataset.orgs.len(), "one row per org:\n{dom}");
    for org in &dataset.orgs {
        let row = ids
            .iter()
            .position(|id| *id == org.id)
            .unwrap_or_else(|| panic!("org {} not on the page:\n{dom}", org.id));
        // Names with quotes and backslashes come through the HTML escaping intact.
        assert_eq!(names[row], org.name);
        let sum = |family: &str| {
            s.named(family)
                .filter(|x| {
                    x.label("query") == Some("services") && x.label("org_id") == Some(&org.id)
                })
                .filter_map(|x| x.value)
                .sum::<f64>()
        };
        let (mtd, forecast) = (
            sum("atlas_cost_month_to_date_usd"),
            sum("atlas_cost_month_forecast_usd"),
        );
        assert!(mtd > 0.0);
        assert!(
            (amount(&mtds[row]) - mtd).abs() < 0.015,
            "month to date of {}: page {} vs scrape {mtd}",
            org.id,
            mtds[row]
        );
        assert!(
            (amount(&forecasts[row]) - forecast).abs() < 0.015,
            "forecast of {}: page {} vs scrape {forecast}",
            org.id,
            forecasts[row]
        );
    }
}

/// `#rrggbb` as bytes.
fn rgb(hex: &str) -> [u8; 3] {
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap();
    [byte(1), byte(3), byte(5)]
}

/// The text between `start` and the next `end` after each `start` in `s`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    s.split(start)
        .skip(1)
        .map(|rest| rest.split(end).next().unwrap())
        .collect()
}

/// The landing page, rendered by headless Chromium, draws each org's monthly spend stacked
/// by service. In the rendered DOM (`--dump-dom`): one chart per demo org, one bar per month
/// of its `services` series, each bar's net equal to the scrape's sum of that month to the
/// cent, and a segment per service. In the screenshot: the chart's two main colours fill
/// areas larger than their legend squares, so the bars were painted. The screenshot is the
/// README's picture: `ATLAS_UPDATE_SCREENSHOT=1` copies it to `docs/img/landing.png`.
/// Skipped, with a message, only where Chromium is not installed (CI installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_page_in_chromium_draws_each_orgs_monthly_spend_stacked_by_service() {
    let Some(page) = rendered_landing_page("landing-chart.png").await else {
        return;
    };
    let RenderedPage {
        dataset,
        scrape: s,
        dom,
        screenshot,
    } = page;

    let charts = between(&dom, "<svg class=\"spend-chart\"", "</svg>");
    assert_eq!(
        charts.len(),
        dataset.orgs.len(),
        "one chart per org:\n{dom}"
    );
    for org in &dataset.orgs {
        let chart = charts
            .iter()
            .find(|c| c.contains(&format!("({})", org.id)))
            .unwrap_or_else(|| panic!("no chart for org {}:\n{dom}", org.id));
        let mut months: Vec<(String, f64)> = Vec::new();
        for x in s
            .named("atlas_cost_usage_usd")
            .filter(|x| x.label("query") == Some("services") && x.label("org_id") == Some(&org.id))
        {
            let month = x.label("month").unwrap().to_owned();
            match months.iter_mut().find(|(m, _)| *m == month) {
                Some((_, sum)) => *sum += x.value.unwrap(),
                None => months.push((month, x.value.unwrap())),
            }
        }
        months.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(
            months.len() >= 2,
            "the demo bills several months: {months:?}"
        );
        let bars = between(chart, "<g class=\"bar\" data-month=\"", "</g>");
        assert_eq!(bars.len(), months.len(), "one bar per month: {chart}");
        for ((month, sum), bar) in months.iter().zip(&bars) {
            assert!(bar.starts_with(&format!("{month}\"")), "{month}: {bar}");
            let net = between(bar, "data-net-usd=\"", "\"")[0];
            assert!(
                (amount(net) - sum).abs() < 0.015,
                "{} {month}: bar {net} vs scrape {sum}",
                org.id
            );
            assert!(bar.contains("<rect class=\"segment\""), "{month}: {bar}");
        }
    }

    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&screenshot).expect("chromium wrote the screenshot"),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "{:?}", frame.color_type);
    let count = |colour: [u8; 3]| {
        pixels[..frame.buffer_size()]
            .chunks_exact(channels)
            .filter(|p| p[..3] == colour)
            .count()
    };
    // A legend square is 10 x 10 pixels, one per chart.
    let legend_squares = 100 * dataset.orgs.len();
    for hex in &atlas_cost_exporter::chart::PALETTE[..2] {
        let n = count(rgb(hex));
        assert!(
            n > legend_squares + 500,
            "colour {hex}: {n} pixels, no bigger than its legend squares ({legend_squares}); \
             screenshot {}",
            screenshot.display()
        );
    }
    if std::env::var_os("ATLAS_UPDATE_SCREENSHOT").is_some() {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/landing.png");
        std::fs::copy(&screenshot, &target).unwrap();
        eprintln!("wrote {}", target.display());
    }
}
