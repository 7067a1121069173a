//! A real Prometheus scraping the real exporter, which reads the real simulator: three
//! processes on loopback ports. Every dashboard expression and every alert rule is evaluated
//! against that Prometheus, and budget alerts are seen firing, one of them for a budget
//! scoped by a tag label.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atlas_cost_exporter::simulator::{SimConfig, Simulator};
use serde_json::Value;

/// Kills and reaps every process it holds when dropped, on success and on panic alike, then
/// removes the scratch directory.
struct Processes {
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
}

impl Processes {
    fn spawn(&mut self, name: &'static str, cmd: &mut Command) {
        let log = |suffix: &str| {
            std::fs::File::create(self.dir.join(format!("{name}.{suffix}"))).unwrap()
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.children.push((name, child));
    }

    /// The logs of every process, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            for suffix in ["out", "err"] {
                let text = std::fs::read_to_string(self.dir.join(format!("{name}.{suffix}")))
                    .unwrap_or_default();
                let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
                out.push_str(&format!(
                    "--- {name} {suffix} (last lines, reversed)\n{tail}\n"
                ));
            }
        }
        out
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The Prometheus HTTP API.
struct Prom {
    base: String,
    http: reqwest::Client,
}

impl Prom {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&resp.bytes().await.ok()?).ok()
    }

    /// Runs an instant query; `Err` carries Prometheus's error.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self
            .get("/api/v1/query", &[("query", expr)])
            .await
            .ok_or_else(|| "no answer".to_owned())?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Queries until the result is not empty (bounded: about 30 s).
    async fn query_data(&self, expr: &str) -> Result<Vec<Value>, String> {
        let mut last = Ok(Vec::new());
        for _ in 0..120 {
            last = self.query(expr).await;
            match &last {
                Ok(r) if !r.is_empty() => return last,
                Err(e) if !e.contains("no answer") => return last,
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        last
    }
}

/// Every PromQL expression of a dashboard: panel targets (rows' nested panels too), with
/// Grafana's variables replaced by values Prometheus accepts.
fn dashboard_exprs(path: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut panels: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
    let nested: Vec<&Value> = panels
        .iter()
        .filter_map(|p| p["panels"].as_array())
        .flatten()
        .collect();
    panels.extend(nested);
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let mut e = expr.to_owned();
            for (var, value) in [
                ("$__rate_interval", "5m"),
                ("$__interval", "5m"),
                ("$__range", "5m"),
                ("$org", ".*"),
                ("$project", ".*"),
                ("$cluster", ".*"),
                ("$service", ".*"),
                // The "Spend by tag" row's variable, a label name (see `TAG_LABEL`).
                ("$tag", TAG_LABEL),
            ] {
                e = e.replace(var, value);
            }
            assert!(!e.contains('$'), "unknown variable in {expr}");
            out.push((p["title"].as_str().unwrap_or("").to_owned(), e));
        }
    }
    assert!(!out.is_empty());
    out
}

/// The label the "Spend by tag" row is checked with: the exporter runs with
/// `--cost.tag-labels team,env`.
const TAG_LABEL: &str = "tag_team";

/// The series selector and the regex of a dashboard's `label_names(<selector>)` query
/// variable, as Grafana runs it: `/api/v1/labels?match[]=<selector>`, names filtered by the
/// regex (written `/.../`).
fn label_names_variable(path: &Path, name: &str) -> (String, regex::Regex) {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let var = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no variable {name}"));
    let query = var["query"]["query"].as_str().unwrap();
    assert_eq!(var["definition"].as_str(), Some(query));
    let selector = query
        .strip_prefix("label_names(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_names query: {query}"));
    let pattern = var["regex"].as_str().unwrap();
    let pattern = pattern
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
        .unwrap_or(pattern);
    (selector.to_owned(), regex::Regex::new(pattern).unwrap())
}

/// The one expression of the panel titled `title` among `exprs`.
fn panel_expr<'a>(exprs: &'a [(String, String)], title: &str) -> &'a str {
    let found: Vec<&str> = exprs
        .iter()
        .filter(|(t, _)| t == title)
        .map(|(_, e)| e.as_str())
        .collect();
    assert_eq!(found.len(), 1, "panel {title}: {found:?}");
    found[0]
}

/// The rules of deploy/alerts.yml with every `for:` set to 0s: a test copy, so the budget
/// alert fires at its first evaluation instead of after 30 minutes.
fn rules_for_test() -> (String, Vec<(String, String)>) {
    let text = std::fs::read_to_string(manifest("deploy/alerts.yml")).unwrap();
    let mut doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for g in doc["groups"].as_sequence_mut().unwrap() {
        for r in g["rules"].as_sequence_mut().unwrap() {
            let name = r
                .get("alert")
                .or_else(|| r.get("record"))
                .and_then(|v| v.as_str())
                .unwrap()
                .to_owned();
            exprs.push((name, r["expr"].as_str().unwrap().to_owned()));
            if r.get("for").is_some() {
                r["for"] = serde_norway::Value::from("0s");
            }
        }
    }
    (serde_norway::to_string(&doc).unwrap(), exprs)
}

/// Prometheus 2.42 scrapes the exporter (negotiating OpenMetrics), every expression of both
/// dashboards returns data, every alert rule evaluates without error, a budget far below the
/// spend fires AtlasCostBudgetExceeded, and promtool finds nothing in a real scrape. With
/// `--cost.tag-labels team,env`, the "Spend by tag" row lists the tag labels, attributes the
/// simulator's teams (an escaped one included) and the untagged rest, and a budget scoped by
/// `tag_team` fires with that label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_and_evaluates_dashboards_and_alerts() {
    let dir = common::temp_dir();
    std::fs::create_dir_all(dir.join("tsdb")).unwrap();
    let mut procs = Processes {
        children: Vec::new(),
        dir: dir.clone(),
    };
    let bin = env!("CARGO_BIN_EXE_atlas-cost-exporter");
    // Same seed, same org ids as the simulator process.
    let orgs: Vec<String> = Simulator::new(SimConfig::default())
        .dataset()
        .orgs
        .iter()
        .map(|o| o.id.clone())
        .collect();

    let sim_port = common::free_port();
    // The first poll of each query answers slowly: the exporter's 500ms request timeout
    // counts it as code="timeout" (what the "API request failures" panel shows) and polls
    // again, as it does with Atlas's 102.
    procs.spawn(
        "simulator",
        Command::new(bin).args([
            "simulate",
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--polls-before-ready",
            "1",
            "--not-ready",
            "timeout",
            "--not-ready-delay",
            "2s",
        ]),
    );

    // A budget of one cent on the first org: far below its spend, so it is exceeded.
    let config = dir.join("exporter.yml");
    std::fs::write(
        &config,
        format!(
            "budgets:\n  - name: tiny\n    amount_usd: 0.01\n    scope: {{org_id: {}}}\n  - name: clusters\n    amount_usd: 1000000\n    scope:\n      match: {{cluster_name: '.+'}}\n  - name: team-payments\n    amount_usd: 0.01\n    scope: {{tag_team: payments}}\n",
            orgs[0]
        ),
    )
    .unwrap();
    let exporter_port = common::free_port();
    let mut exporter = Command::new(bin);
    exporter
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{exporter_port}"),
            "--atlas.base-url",
            &format!("http://127.0.0.1:{sim_port}"),
            "--atlas.poll-interval",
            "50ms",
            "--atlas.request-timeout",
            "500ms",
            "--refresh.interval",
            "1s",
            "--config.file",
            config.to_str().unwrap(),
            "--cost.tag-labels",
            "team,env",
            // The "Daily spend and SKUs" row reads the invoice source.
            "--invoices.enabled",
        ])
        .env("MONGODB_ATLAS_CLIENT_ID", "mdb_sa_id_demo")
        .env("MONGODB_ATLAS_CLIENT_SECRET", "mdb_sa_sk_demo")
        .env_remove("MONGODB_ATLAS_ORG_ID");
    for org in &orgs {
        exporter.args(["--atlas.org-id", org]);
    }
    procs.spawn("exporter", &mut exporter);

    let (rules, rule_exprs) = rules_for_test();
    std::fs::write(dir.join("rules.yml"), rules).unwrap();
    let prom_port = common::free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 800ms\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\nscrape_configs:\n  - job_name: atlas-cost-exporter\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
        ),
    )
    .unwrap();
    procs.spawn(
        "prometheus",
        Command::new("prometheus").args([
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--log.level=warn",
        ]),
    );

    let prom = Prom {
        base: format!("http://127.0.0.1:{prom_port}"),
        http: reqwest::Client::new(),
    };
    let mut ready = false;
    for _ in 0..120 {
        if prom.get("/api/v1/status/buildinfo", &[]).await.is_some() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ready, "Prometheus did not start\n{}", procs.logs());

    // The target is up.
    let mut health = String::new();
    for _ in 0..120 {
        if let Some(t) = prom.get("/api/v1/targets", &[]).await {
            let target = &t["data"]["activeTargets"][0];
            health = format!("{} {}", target["health"], target["lastError"]);
            if target["health"] == "up" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        health.starts_with("\"up\""),
        "target: {health}\n{}",
        procs.logs()
    );

    let usage = prom.query_data("atlas_cost_usage_usd").await.unwrap();
    assert!(!usage.is_empty(), "no cost series\n{}", procs.logs());
    // OpenMetrics was negotiated: the counter family is named without `_total` and the
    // histogram carries its unit, which only OpenMetrics exposes.
    let meta = prom
        .get("/api/v1/metadata", &[("metric", "atlas_cost_query_polls")])
        .await
        .unwrap();
    assert_eq!(
        meta["data"]["atlas_cost_query_polls"][0]["type"], "counter",
        "{meta}"
    );
    let meta = prom
        .get(
            "/api/v1/metadata",
            &[("metric", "atlas_cost_query_poll_latency_seconds")],
        )
        .await
        .unwrap();
    assert_eq!(
        meta["data"]["atlas_cost_query_poll_latency_seconds"][0]["unit"], "seconds",
        "{meta}"
    );

    // Every dashboard expression returns data. A fresh Prometheus has no 30-day history: an
    // expression with `offset 30d` must evaluate, and returns data once the offset is removed.
    for dashboard in [
        "dashboards/atlas-spend.json",
        "dashboards/exporter-health.json",
    ] {
        for (title, expr) in dashboard_exprs(&manifest(dashboard)) {
            let checked = if expr.contains("offset 30d") {
                prom.query(&expr)
                    .await
                    .unwrap_or_else(|e| panic!("{dashboard} / {title}: {expr}: {e}"));
                expr.replace(" offset 30d", "")
            } else {
                expr.clone()
            };
            let result = prom
                .query_data(&checked)
                .await
                .unwrap_or_else(|e| panic!("{dashboard} / {title}: {checked}: {e}"));
            assert!(
                !result.is_empty(),
                "{dashboard} / {title}: no data for {checked}\n{}",
                procs.logs()
            );
        }
    }

    // The "Spend by tag" row. Its variable lists the tag labels asked for, and no other.
    let spend = manifest("dashboards/atlas-spend.json");
    let (selector, tag_names) = label_names_variable(&spend, "tag");
    let labels = prom
        .get("/api/v1/labels", &[("match[]", &selector)])
        .await
        .unwrap();
    let listed: Vec<&str> = labels["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|l| tag_names.is_match(l))
        .collect();
    assert_eq!(listed, ["tag_env", "tag_team"], "{labels}");
    // Month to date by team: the simulator's teams, the one with a quote and a backslash
    // intact, and the untagged rest, which together make the whole clusters query's total.
    let exprs = dashboard_exprs(&spend);
    let by_team = prom
        .query(panel_expr(&exprs, "Month to date by $tag"))
        .await
        .unwrap();
    let value = |r: &Value| r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
    let teams: Vec<&str> = by_team
        .iter()
        .map(|r| r["metric"][TAG_LABEL].as_str().unwrap())
        .collect();
    for team in [
        "payments",
        "Data Platform",
        "données",
        "R&D \"labs\" \\ EU",
        "(untagged)",
    ] {
        assert!(teams.contains(&team), "no {team:?} in {by_team:?}");
    }
    let total = prom
        .query("sum(atlas_cost_month_to_date_usd{query=\"clusters\"})")
        .await
        .unwrap();
    let attributed: f64 = by_team.iter().map(value).sum();
    assert!(
        (attributed - value(&total[0])).abs() < 0.005,
        "{attributed} != {total:?}"
    );
    let untagged = prom
        .query(panel_expr(&exprs, "Untagged share, month to date"))
        .await
        .unwrap();
    let share = value(&untagged[0]);
    assert!(share > 0.0 && share < 1.0, "untagged share {share}");

    // Every rule expression evaluates without error, and Prometheus's own evaluation of the
    // rule groups reports no error.
    for (name, expr) in &rule_exprs {
        prom.query(expr)
            .await
            .unwrap_or_else(|e| panic!("rule {name}: {expr}: {e}"));
    }
    let rules = prom.get("/api/v1/rules", &[]).await.unwrap();
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), rule_exprs.len());
    for r in &loaded {
        assert_ne!(
            r["health"], "err",
            "rule {} fails: {}",
            r["name"], r["lastError"]
        );
    }

    // The one-cent budgets are exceeded: their alerts fire (for: 0s in the test copy), the
    // one scoped by team with its tag label.
    for (budget, team) in [("tiny", None), ("team-payments", Some("payments"))] {
        let mut firing = false;
        for _ in 0..120 {
            if let Some(a) = prom.get("/api/v1/alerts", &[]).await {
                firing = a["data"]["alerts"].as_array().unwrap().iter().any(|a| {
                    a["labels"]["alertname"] == "AtlasCostBudgetExceeded"
                        && a["labels"]["budget"] == budget
                        && a["labels"][TAG_LABEL].as_str() == team
                        && a["state"] == "firing"
                });
                if firing {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            firing,
            "AtlasCostBudgetExceeded never fired for {budget}\n{}",
            procs.logs()
        );
    }
    // The million-dollar budget is not exceeded: no alert for it.
    let alerts = prom.get("/api/v1/alerts", &[]).await.unwrap();
    assert!(
        !alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["budget"] == "clusters"),
        "{alerts}"
    );

    // promtool finds nothing in a real text scrape.
    let body = reqwest::get(format!("http://127.0.0.1:{exporter_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(common::promtool_check(&body), "");
    drop(procs);
}
