//! Tests that keep the documentation true: every flag and variable `--help` prints, and every
//! metric family the source registers or a scrape serves, appears in `docs/`; every relative
//! link and anchor of the README and of every page in `docs/` resolves; and the README's
//! "From zero to a dashboard" blocks, run as they are written, fire the budget alert.
//!
//! The pages are found by listing `docs/`, so a page added later is checked too.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;

const BIN: &str = env!("CARGO_BIN_EXE_atlas-cost-exporter");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `*.md` in `docs/`, sorted.
fn doc_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 7, "docs/ has its pages: {pages:?}");
    pages
}

/// The text of every page in `docs/`, concatenated.
fn docs_text() -> String {
    doc_pages().iter().map(|p| read(p) + "\n").collect()
}

/// Markdown without its fenced code blocks (lines kept, so line numbers stay right).
fn without_code_blocks(md: &str) -> String {
    let mut inside = false;
    md.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                inside = !inside;
                ""
            } else if inside {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// GitHub's anchor of a heading: lower case, punctuation dropped (letters, digits, spaces,
/// `-` and `_` kept), spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings, with GitHub's `-1`, `-2` for repeats.
fn anchors(md: &str) -> BTreeSet<String> {
    let heading = Regex::new(r"^#{1,6} (.+)$").unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in without_code_blocks(md).lines() {
        if let Some(c) = heading.captures(line) {
            let s = slug(&c[1].replace('`', ""));
            let n = seen.entry(s.clone()).or_default();
            out.insert(if *n == 0 {
                s.clone()
            } else {
                format!("{s}-{n}")
            });
            *n += 1;
        }
    }
    out
}

/// `--flag` as a whole word in `text` (not the start of a longer flag).
fn mentions_flag(text: &str, flag: &str) -> bool {
    Regex::new(&format!(
        r"{}(?:[^a-z0-9.\-]|\.[^a-z0-9]|$)",
        regex::escape(flag)
    ))
    .unwrap()
    .is_match(text)
}

/// A name as a whole word in `text`, optionally followed by one of `suffixes`.
fn mentions_name(text: &str, name: &str, suffixes: &[&str]) -> bool {
    let alternatives: Vec<String> = suffixes.iter().map(|s| regex::escape(s)).collect();
    Regex::new(&format!(
        r"(?:^|[^a-z0-9_]){}(?:{})?(?:[^a-z0-9_]|$)",
        regex::escape(name),
        alternatives.join("|")
    ))
    .unwrap()
    .is_match(text)
}

/// The flags and environment variables of one `--help` page.
fn help_of(args: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help");
    let help = String::from_utf8(out.stdout).unwrap();
    let flag = Regex::new(r"(?m)^\s+(?:-[a-zA-Z], )?(--[a-z][a-z0-9.\-]*)").unwrap();
    let env = Regex::new(r"\[env: ([A-Z0-9_]+)=").unwrap();
    let flags: Vec<String> = flag.captures_iter(&help).map(|c| c[1].to_owned()).collect();
    let vars: Vec<String> = env.captures_iter(&help).map(|c| c[1].to_owned()).collect();
    assert!(flags.len() >= 2, "flags found in {args:?} --help:\n{help}");
    (flags, vars)
}

/// Every flag of `--help`, `simulate --help` and `check-config --help`, and every environment
/// variable they name, appears in `docs/` as a whole word.
#[test]
fn every_flag_and_variable_of_help_is_in_the_docs() {
    let docs = docs_text();
    let mut missing = Vec::new();
    let mut checked = 0;
    for args in [&[][..], &["simulate"], &["check-config"]] {
        let (flags, vars) = help_of(args);
        for flag in flags.iter().filter(|f| *f != "--help") {
            checked += 1;
            if !mentions_flag(&docs, flag) {
                missing.push(format!("{args:?} {flag}"));
            }
        }
        for var in &vars {
            checked += 1;
            if !mentions_name(&docs.to_lowercase(), &var.to_lowercase(), &[]) {
                missing.push(format!("{args:?} {var}"));
            }
        }
    }
    // The exporter's 23 flags with their variables, the simulator's 25 with theirs.
    assert!(checked > 90, "only {checked} flags and variables found");
    assert!(missing.is_empty(), "not in docs/: {missing:?}");
}

/// The string literals naming a metric in the crate's code (its tests left out), each with
/// the suffixes its exposition may add: `_total` for counters, the unit of
/// `register_with_unit`.
fn metric_names_in_the_source() -> BTreeMap<String, Vec<&'static str>> {
    let literal = Regex::new(r#""(atlas_cost_[a-z0-9_]+)""#).unwrap();
    let with_unit =
        Regex::new(r#"register_with_unit\(\s*"(atlas_cost_[a-z0-9_]+)",[^;]*?Unit::(\w+)"#)
            .unwrap();
    let mut names: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // Test modules in files of their own (`config/tests.rs`, `simulator/tests/`).
            if path.extension().is_none_or(|e| e != "rs")
                || path.ends_with("tests.rs")
                || path.components().any(|c| c.as_os_str() == "tests")
            {
                continue;
            }
            let text = read(&path);
            let code = text.split("#[cfg(test)]").next().unwrap();
            for c in literal.captures_iter(code) {
                names
                    .entry(c[1].to_owned())
                    .or_insert_with(|| vec!["_total"]);
            }
            for c in with_unit.captures_iter(code) {
                let unit = match &c[2] {
                    "Seconds" => "_seconds",
                    "Bytes" => "_bytes",
                    other => panic!("unit {other} of {} in {}", &c[1], path.display()),
                };
                names.insert(c[1].to_owned(), vec![unit]);
            }
        }
    }
    names
}

/// The metric families one scrape of `--demo --storage.path` serves, as named in its `# TYPE`
/// lines (counters with `_total` in text 0.0.4).
fn families_of_a_demo_scrape() -> BTreeSet<String> {
    let dir = scratch("scrape");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args([
            "--demo",
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--storage.path")
        .arg(dir.join("state"))
        .env_remove("ATLAS_EXPORTER_CONFIG_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let start = Instant::now();
    let families = loop {
        let body = runtime
            .block_on(async { reqwest::get(&url).await.ok()?.text().await.ok() })
            .unwrap_or_default();
        // Complete once the budget families are there (every demo org published).
        if body.contains("# TYPE atlas_cost_budget_forecast_ratio") {
            break body
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .map(|l| l.split(' ').next().unwrap().to_owned())
                .collect();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("no full scrape of --demo within a minute:\n{body}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    families
}

/// Every metric name in the source (as exposed, with its suffix) and every family a real
/// scrape of the demo serves (its state families included) appears in `docs/`; and every
/// metric the metrics page's tables list is one of them, so no removed family stays
/// documented.
#[test]
fn every_metric_of_the_source_and_of_a_scrape_is_in_the_docs() {
    let docs = docs_text();
    let source = metric_names_in_the_source();
    let scraped = families_of_a_demo_scrape();
    assert!(source.len() >= 25, "names found in src/: {source:?}");
    assert!(scraped.len() >= 25, "families scraped: {scraped:?}");
    let mut missing: Vec<String> = source
        .iter()
        .filter(|(name, suffixes)| !mentions_name(&docs, name, suffixes))
        .map(|(name, _)| name.clone())
        .collect();
    missing.extend(
        scraped
            .iter()
            .filter(|f| !mentions_name(&docs, f, &[]))
            .cloned(),
    );
    assert!(missing.is_empty(), "not in docs/: {missing:?}");

    let row = Regex::new(r"(?m)^\| `(atlas_cost_[a-z0-9_]+)`").unwrap();
    let metrics_page = read(&root().join("docs/metrics.md"));
    let listed: Vec<String> = row
        .captures_iter(&metrics_page)
        .map(|c| c[1].to_owned())
        .collect();
    assert!(listed.len() >= 25, "rows of docs/metrics.md: {listed:?}");
    let known = |name: &str| {
        scraped.contains(name)
            || source.iter().any(|(n, suffixes)| {
                name == n || suffixes.iter().any(|s| name == format!("{n}{s}"))
            })
    };
    let unknown: Vec<&String> = listed.iter().filter(|n| !known(n)).collect();
    assert!(
        unknown.is_empty(),
        "docs/metrics.md lists metrics the exporter does not have: {unknown:?}"
    );
}

/// Every relative link, with its anchor, of one markdown file: `(line, target)`.
fn relative_links(md: &str) -> Vec<(usize, String)> {
    let code_span = Regex::new(r"`[^`]*`").unwrap();
    let link = Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut out = Vec::new();
    for (i, line) in without_code_blocks(md).lines().enumerate() {
        let line = code_span.replace_all(line, "``");
        for c in link.captures_iter(&line) {
            let target = &c[1];
            if !target.contains("://") && !target.starts_with("mailto:") {
                out.push((i + 1, target.to_owned()));
            }
        }
    }
    out
}

/// Every relative link and anchor of the README, of every page in `docs/`, of the other
/// markdown files at the root and of the chart's README resolves: the file exists, and an
/// anchor names a heading of that file (GitHub's anchors).
#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut files = doc_pages();
    for entry in std::fs::read_dir(root()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.push(root().join("charts/atlas-cost-exporter/README.md"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        for (line, target) in relative_links(&text) {
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let at = format!(
                "{}:{line}: {target}",
                file.strip_prefix(root()).unwrap().display()
            );
            if !resolved.exists() {
                broken.push(format!("{at}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                if resolved.extension().is_none_or(|e| e != "md") {
                    broken.push(format!("{at}: an anchor into a file that is not markdown"));
                } else if !anchors(&read(&resolved)).contains(anchor) {
                    broken.push(format!("{at}: no such heading"));
                }
            }
        }
    }
    assert!(checked > 80, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The README stays short (the issue's "at most about 15 KB"), and its "Documentation" list
/// links every page of `docs/`.
#[test]
fn the_readme_is_short_and_links_every_page_of_the_docs() {
    let readme = read(&root().join("README.md"));
    assert!(
        readme.len() <= 15 * 1024,
        "README.md is {} bytes",
        readme.len()
    );
    let list = readme
        .split("\n## Documentation\n")
        .nth(1)
        .expect("a Documentation section");
    for page in doc_pages() {
        let name = page.file_name().unwrap().to_str().unwrap();
        if name == "README.md" {
            continue;
        }
        assert!(
            list.contains(&format!("](docs/{name})")),
            "the README's Documentation list does not link docs/{name}"
        );
    }
}

/// The `sh` blocks of the README's "From zero to a dashboard" section, in order.
fn zero_to_a_dashboard_blocks() -> Vec<String> {
    let readme = read(&root().join("README.md"));
    let section = readme
        .split("\n## From zero to a dashboard")
        .nth(1)
        .expect("the section")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap().to_owned() + "\n")
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("atlas-docs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether this process may run a command in a network namespace of its own (root in a
/// container usually may): the README's fixed ports then cannot clash with anything.
fn private_network() -> bool {
    Command::new("unshare")
        .args(["--net", "sh", "-c", "ip link set lo up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The README's "From zero to a dashboard" blocks, run by bash from the repository's root as
/// they are written, with two substitutions only: the binary this test built for
/// `cargo run --release --` (a release build inside a test would take minutes), and a
/// scratch directory for `/tmp/atlas-prom`. The exporter's demo, a real Prometheus with
/// `deploy/prometheus.yml` and `deploy/alerts.yml`, and the alert check run in a network
/// namespace of their own where one can be made (the README's ports 9879 and 9090 are fixed),
/// else on the host's loopback when those ports are free. The last block ends when
/// a budget alert fires (`AtlasCostBudgetForecastExceeded`, or `AtlasCostBudgetExceeded` late in
/// a month), and prints the firing alerts.
#[test]
fn zero_to_a_dashboard_blocks_fire_the_budget_alert() {
    let blocks = zero_to_a_dashboard_blocks();
    assert_eq!(blocks.len(), 3, "three sh blocks: {blocks:?}");
    let dir = scratch("zero");
    let mut script = blocks.concat();
    for (from, to) in [
        ("cargo run --release --", format!("'{BIN}'")),
        ("/tmp/atlas-prom", dir.join("prom").display().to_string()),
    ] {
        assert!(script.contains(from), "the blocks no longer say {from:?}");
        script = script.replace(from, &to);
    }
    let netns = private_network();
    if !netns {
        for port in [9879, 9090] {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "port {port} is taken and no network namespace can be made"
            );
        }
    }
    let mut cmd = if netns {
        let mut c = Command::new("unshare");
        c.args(["--net", "bash", "-euo", "pipefail", "-c"])
            .arg(format!("ip link set lo up\n{script}"));
        c
    } else {
        let mut c = Command::new("bash");
        c.args(["-euo", "pipefail", "-c", &script]);
        c
    };
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = {
        use std::os::unix::process::CommandExt as _;
        cmd.current_dir(root())
            .env_remove("ATLAS_EXPORTER_CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            // Its own process group, so the background processes go with it.
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(240) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    let (stdout, stderr) = (read(&out), read(&err));
    let tail: String = stderr.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.unwrap_or_else(|| {
        panic!(
            "the blocks did not finish within 4 minutes:\n{stdout}\n--- stderr, reversed:\n{tail}"
        )
    });
    assert!(
        status.success(),
        "the blocks failed ({status}):\n{stdout}\n--- stderr, reversed:\n{tail}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with('[')
            && (last.contains("'AtlasCostBudgetExceeded'")
                || last.contains("'AtlasCostBudgetForecastExceeded'")),
        "the last block prints the firing alerts: {stdout}"
    );
}

/// The anchors are GitHub's: punctuation dropped, spaces as hyphens, repeats numbered.
#[test]
fn anchors_are_githubs() {
    let md = "# Checking a configuration: `check-config`\n## The 102 hazard\n## Metrics\n\
              ```\n# not a heading\n```\n## Metrics\n## Durable state (issue 21, --storage.path)\n";
    let got: Vec<String> = anchors(md).into_iter().collect();
    assert_eq!(
        got,
        [
            "checking-a-configuration-check-config",
            "durable-state-issue-21---storagepath",
            "metrics",
            "metrics-1",
            "the-102-hazard",
        ]
    );
}
