//! The alert rules and deploy examples: `promtool check rules` finds nothing, the
//! `promtool test rules` unit tests pass and cover every alert, the Kubernetes PrometheusRule
//! carries the same groups as `deploy/alerts.yml`, and the example configurations are valid.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize as _;
use serde_norway::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs (Debian package `prometheus`; .ci/run installs it)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `alert` names of a rules document (`groups: [{rules: [...]}]`).
fn alert_names(groups: &Value) -> Vec<String> {
    groups
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r.get("alert").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// `promtool check rules` with every lint finds nothing to report in deploy/alerts.yml: its
/// output is the success line only.
#[test]
fn promtool_check_rules_finds_nothing() {
    let path = deploy("alerts.yml");
    let out = promtool(&[
        "check",
        "rules",
        "--lint=all",
        "--lint-fatal",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("Checking "), "{lines:?}");
    assert_eq!(lines[1].trim(), "SUCCESS: 10 rules found");
}

/// The check is not vacuous: a rule with a broken expression is refused.
#[test]
fn promtool_check_rules_refuses_a_broken_rule() {
    let dir = std::env::temp_dir().join(format!("ace-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.yml");
    let broken = std::fs::read_to_string(deploy("alerts.yml"))
        .unwrap()
        .replace(
            "expr: atlas_cost_budget_consumed_ratio > 1",
            "expr: atlas_cost_budget_consumed_ratio >",
        );
    std::fs::write(&path, broken).unwrap();
    let out = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
}

/// `promtool test rules deploy/alerts_test.yml` passes, and every alert of deploy/alerts.yml
/// has a unit test that expects it to fire and one that expects it not to.
#[test]
fn promtool_unit_tests_pass_and_cover_every_alert() {
    let path = deploy("alerts_test.yml");
    let out = promtool(&["test", "rules", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));

    let tests = yaml(&path);
    let mut firing = std::collections::BTreeSet::new();
    let mut quiet = std::collections::BTreeSet::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().unwrap() {
            let name = a["alertname"].as_str().unwrap().to_owned();
            if a["exp_alerts"].as_sequence().is_some_and(|e| e.is_empty()) {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for alert in alert_names(&yaml(&deploy("alerts.yml"))["groups"]) {
        assert!(firing.contains(&alert), "no test shows {alert} firing");
        assert!(quiet.contains(&alert), "no test shows {alert} quiet");
    }
}

/// Budgets scoped by a tag label (issue 11): the unit tests, which
/// `promtool_unit_tests_pass_and_cover_every_alert` runs, show both budget alerts firing for a
/// budget with a `tag_team` label, and the fired alert keeps that label, so it can be
/// routed to the team it names.
#[test]
fn budget_alerts_fire_with_the_tag_label_of_their_budget() {
    let tests = yaml(&deploy("alerts_test.yml"));
    for alert in ["AtlasCostBudgetExceeded", "AtlasCostBudgetForecastExceeded"] {
        let with_tag: Vec<&Value> = tests["tests"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
            .filter(|a| a["alertname"].as_str() == Some(alert))
            .filter_map(|a| a["exp_alerts"].as_sequence())
            .flatten()
            .filter(|e| e["exp_labels"].get("tag_team").is_some())
            .collect();
        assert!(
            !with_tag.is_empty(),
            "no unit test shows {alert} firing with a tag_team label"
        );
        for e in with_tag {
            let budget = e["exp_labels"]["budget"].as_str().unwrap();
            let team = e["exp_labels"]["tag_team"].as_str().unwrap();
            assert_eq!(budget, format!("team-{team}"), "{alert}");
        }
    }
}

/// Every alert says how long it waits, how bad it is, and what to do.
#[test]
fn every_alert_has_for_severity_and_guidance() {
    let rules = yaml(&deploy("alerts.yml"));
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let Some(name) = r.get("alert").and_then(Value::as_str) else {
                continue;
            };
            assert!(r.get("for").is_some(), "{name} has no for:");
            assert!(r["labels"]["severity"].as_str().is_some(), "{name}");
            assert!(r["annotations"]["summary"].as_str().is_some(), "{name}");
            let d = r["annotations"]["description"].as_str().unwrap_or("");
            assert!(
                d.len() > 80,
                "{name} needs a description that says what to do"
            );
        }
    }
}

/// The Kubernetes PrometheusRule carries exactly the groups of deploy/alerts.yml, so the two
/// cannot drift; a changed rule would be caught.
#[test]
fn prometheus_rule_matches_the_rules_file() {
    let rules = yaml(&deploy("alerts.yml"));
    let crd = yaml(&deploy("kubernetes/prometheusrule.yml"));
    assert_eq!(crd["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(crd["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(
        crd["spec"]["groups"], rules["groups"],
        "deploy/kubernetes/prometheusrule.yml differs from deploy/alerts.yml: render it from the chart (tests/helm_chart.py deploy)"
    );
    let mut changed = rules["groups"].clone();
    changed[0]["rules"][1]["for"] = Value::from("1m");
    assert_ne!(crd["spec"]["groups"], changed);
}

/// The example prometheus.yml is valid for promtool (rule file included), scrapes the job
/// the exporter-health alerts select, with a timeout below the interval.
#[test]
fn example_prometheus_config_is_valid() {
    let path = deploy("prometheus.yml");
    let out = promtool(&["check", "config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let cfg = yaml(&path);
    let job = &cfg["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("atlas-cost-exporter"));
    let secs = |v: &Value| humantime::parse_duration(v.as_str().unwrap()).unwrap();
    assert!(secs(&job["scrape_timeout"]) < secs(&job["scrape_interval"]));
}

/// The Kubernetes manifest (rendered from the chart) holds a StatefulSet, a Service and a
/// ServiceMonitor that agree on the port, the probes and the labels.
#[test]
fn kubernetes_manifest_is_consistent() {
    let text = std::fs::read_to_string(deploy("kubernetes/exporter.yml")).unwrap();
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let statefulset = kind("StatefulSet");
    let service = kind("Service");
    let monitor = kind("ServiceMonitor");
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(9879));
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let labels = &statefulset["spec"]["template"]["metadata"]["labels"];
    // The Service selects every pod of the release: each of its labels is on the pods.
    let selector = service["spec"]["selector"].as_mapping().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "{k:?}");
    }
    // The ServiceMonitor selects the Service by the Service's own labels.
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "{k:?}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(
        labels["app.kubernetes.io/name"].as_str(),
        Some("atlas-cost-exporter"),
        "the job label the alerts select"
    );
}

/// The Kubernetes manifest (the chart's rendering) keeps the state on a volume of its own: a
/// StatefulSet's PersistentVolumeClaim template, one claim per pod, mounted writable at the
/// path the image declares as its `VOLUME` and passes as `--storage.path`, with `fsGroup`
/// 65532 (the image's non-root user) so it can write there, while the root filesystem stays
/// read-only.
#[test]
fn kubernetes_manifest_keeps_the_state_on_a_volume() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let volume = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("VOLUME [\"")?.strip_suffix("\"]"))
        .expect("the image declares a VOLUME");
    let text = std::fs::read_to_string(deploy("kubernetes/exporter.yml")).unwrap();
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let set = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("StatefulSet"))
        .expect("a StatefulSet");
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("the container's args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&format!("--storage.path={volume}").as_str()),
        "{args:?}"
    );
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volume mounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(volume))
        .expect("a volume mounted at the image's VOLUME");
    assert_ne!(mount["readOnly"].as_bool(), Some(true));
    let name = mount["name"].as_str().unwrap();
    // The mount names a claim template, not a pod volume (an emptyDir would lose the state).
    let in_pod = pod["volumes"]
        .as_sequence()
        .is_some_and(|v| v.iter().any(|v| v["name"].as_str() == Some(name)));
    assert!(!in_pod, "{name} is a pod volume, not the claim");
    let claim = set["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .expect("volumeClaimTemplates")
        .iter()
        .find(|c| c["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("a claim template named {name}"));
    assert!(
        claim["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .is_some(),
        "the claim requests storage: {claim:?}"
    );
    assert_eq!(pod["securityContext"]["fsGroup"].as_u64(), Some(65532));
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
}
