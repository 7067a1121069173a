//! The Helm chart (`charts/atlas-cost-exporter`), checked without a cluster:
//! - rendered and linted (strict) by the official Helm engine for every values file under
//!   `ci/` (PyPI helm-python-sdk, Helm v4's Go SDK as a library; `tests/helm_chart.py`);
//! - every rendered manifest validated against the Kubernetes API schemas of the oldest and
//!   the newest Kubernetes the chart claims (PyPI kubernetes-validate, `--strict`);
//! - the PrometheusRule's groups are deploy/alerts.yml's, and `promtool check rules` passes;
//! - each rendered pod's arguments, environment and mounted files (the ConfigMap, Secrets
//!   made up for the test) passed to the real binary's `check-config` exit 0;
//! - 3 shards give pods of shard indexes 0, 1 and 2 with `--shard.count 3`, and the binary
//!   run with pod 2's arguments against the simulator serves exactly that shard's orgs;
//! - deploy/kubernetes/ is the chart's rendering.
//!
//! A pod is emulated as the kubelet would set it up: each volume mount is a directory under
//! a temporary root (ConfigMap keys and Secret keys as files), paths in the arguments point
//! there, and the downward API's fields (the pod's name, its `apps.kubernetes.io/pod-index`
//! label) and Secret keys fill the environment.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use common::{KillOnDrop, free_port, start_sim, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_atlas-cost-exporter");

fn root(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn chart() -> PathBuf {
    root("charts/atlas-cost-exporter")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `tests/helm_chart.py` with `args` (and `stdin`), returns its JSON answer.
fn helper(args: &[&str], stdin: Option<&str>) -> Value {
    let mut child = Command::new("python3")
        .arg(root("tests/helm_chart.py"))
        .args(args)
        .current_dir(root(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install helm-python-sdk kubernetes-validate; .ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "helm_chart.py {args:?}: {}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Validates the Prometheus Operator's kinds among `docs` (as [`render`] returns them)
/// against the operator's CRD schemas (`tests/operator-schemas/validate.mjs`, Node.js with the
/// pinned `@kubernetes-models/prometheus-operator`; `.ci/run` installs it with `npm ci`).
/// Returns its report: `errors`, `validated` (`Kind/name`) and `other` (kinds it has no
/// schema for).
fn operator_validate(docs: &[Value]) -> Value {
    let mut child = Command::new("node")
        .arg(root("tests/operator-schemas/validate.mjs"))
        .current_dir(root("tests/operator-schemas"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (npm ci --prefix tests/operator-schemas; .ci/run does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(docs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "validate.mjs: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The values files under ci/, by name.
fn ci_values() -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.file_name().unwrap().to_str().unwrap().to_owned(), p))
        .collect();
    files.sort();
    files
}

/// The rendered documents (`{"template", "doc"}`) of `values` over `overrides`.
fn render(values: &Path, kube: &str, overrides: &Value) -> Vec<Value> {
    let chart = chart();
    let out = helper(
        &[
            "render",
            chart.to_str().unwrap(),
            values.to_str().unwrap(),
            kube,
            &overrides.to_string(),
        ],
        None,
    );
    out.as_array().unwrap().clone()
}

fn docs_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .map(|d| &d["doc"])
        .filter(|d| d["kind"] == kind)
        .collect()
}

/// The oldest Kubernetes the chart claims (Chart.yaml's `kubeVersion: ">=X"`) and the newest
/// kubernetes-validate has schemas for.
fn claimed_kubernetes() -> (String, String) {
    let chart_yaml = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    let line = chart_yaml
        .lines()
        .find(|l| l.starts_with("kubeVersion:"))
        .expect("Chart.yaml claims a kubeVersion");
    let oldest = line
        .split(">=")
        .nth(1)
        .unwrap()
        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.')
        .trim_end_matches("-0")
        .split('-')
        .next()
        .unwrap()
        .to_owned();
    let versions = helper(&["versions"], None);
    let versions: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&oldest.as_str()),
        "no schemas for the oldest claimed Kubernetes {oldest}: {versions:?}"
    );
    (oldest, versions.last().unwrap().to_string())
}

/// Each values file under ci/ lints clean with `strict` (no warning, no error) and renders a
/// StatefulSet; the five cases the issue names are all there.
#[test]
fn every_ci_values_file_lints_strict_and_renders() {
    let files = ci_values();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "default-values.yaml",
        "shards-3-values.yaml",
        "tls-basic-auth-values.yaml",
        "persistence-off-values.yaml",
        "operator-values.yaml",
    ] {
        assert!(names.contains(&want), "ci/{want} is missing: {names:?}");
    }
    let chart = chart();
    for (name, path) in &files {
        let report = helper(
            &["lint", chart.to_str().unwrap(), path.to_str().unwrap()],
            None,
        );
        assert_eq!(report["total_charts_linted"], 1, "{name}: {report}");
        assert_eq!(report["errors"], json!([]), "{name}: {report}");
        let serious: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_u64().unwrap_or(3) >= 2)
            .collect();
        assert!(serious.is_empty(), "{name}: {serious:?}");
        let docs = render(path, "v1.37.0", &json!({}));
        assert!(!docs_of(&docs, "StatefulSet").is_empty(), "{name}");
    }
}

/// Bad values stop the rendering with a message naming the value: the lint is not vacuous.
#[test]
fn bad_values_fail_the_rendering_naming_the_value() {
    let dir = temp_dir();
    let chart = chart();
    for (values, want) in [
        (
            "atlas: {orgIds: [5f1b2c3d4e5f6a7b8c9d0e1f]}\n",
            "credentials.existingSecret",
        ),
        (
            "credentials: {existingSecret: s}\n",
            "atlas.orgIds: no org to export",
        ),
        (
            "credentials: {existingSecret: s}\natlas: {orgIds: [x]}\nshards: 0\n",
            "shards: 0 must be at least 1",
        ),
        (
            "credentials: {existingSecret: s}\natlas: {orgIds: [x]}\nweb: {tls: true}\n",
            "web.existingSecret",
        ),
        (
            "credentials: {existingSecret: s}\nconfig: {orgs: [{id: x, credentials: {existingSecret: o}}]}\n",
            "config.orgs[0].credentials.clientId",
        ),
    ] {
        let path = dir.join("bad.yaml");
        std::fs::write(&path, values).unwrap();
        let out = Command::new("python3")
            .arg(root("tests/helm_chart.py"))
            .args([
                "render",
                chart.to_str().unwrap(),
                path.to_str().unwrap(),
                "v1.37.0",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{values}");
        assert!(text(&out).contains(want), "{want}: {}", text(&out));
    }
}

/// Every manifest rendered from every ci/ values file validates (`--strict`: no unknown
/// field) against the API schemas of the oldest and the newest Kubernetes the chart claims,
/// each rendered for that version; the Prometheus Operator's kinds, which have no schema there,
/// validate against the operator's own CRD schemas (`tests/operator-schemas`: types,
/// patterns, enums, required fields; unknown fields are not checked there, as the API server
/// prunes them), and their content is checked by
/// `prometheus_rule_is_deploy_alerts_and_passes_promtool` and
/// `service_monitor_scrapes_the_metrics_port_as_the_web_configuration_says`. A manifest with
/// an unknown field fails, and so do a ServiceMonitor with a bad interval and a
/// PrometheusRule without `expr`, so the checks can fail.
#[test]
fn rendered_manifests_validate_against_the_oldest_and_newest_kubernetes() {
    let (oldest, newest) = claimed_kubernetes();
    assert_eq!(oldest, "1.25.0");
    let mut operator_kinds = BTreeSet::new();
    for (name, path) in ci_values() {
        for kube in [&oldest, &newest] {
            let docs = render(&path, &format!("v{kube}"), &json!({}));
            let report = helper(
                &["validate", kube],
                Some(&serde_json::to_string(&docs).unwrap()),
            );
            assert_eq!(report["errors"], json!([]), "{name} on {kube}");
            let validated = report["validated"].as_array().unwrap();
            let no_schema: BTreeSet<&str> = report["no_schema"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            assert_eq!(
                validated.len() + report["no_schema"].as_array().unwrap().len(),
                docs.len()
            );
            assert!(
                no_schema.is_subset(&BTreeSet::from(["ServiceMonitor", "PrometheusRule"])),
                "{name}: {no_schema:?}"
            );
            // Those two against the Prometheus Operator's own CRD schemas.
            let operator = operator_validate(&docs);
            assert_eq!(operator["errors"], json!([]), "{name} on {kube}");
            let operator_validated = operator["validated"].as_array().unwrap().len();
            assert_eq!(
                operator_validated,
                report["no_schema"].as_array().unwrap().len(),
                "{name}: {operator}"
            );
            operator_kinds.extend(
                operator["validated"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().split('/').next().unwrap().to_owned()),
            );
            for kind in [
                "StatefulSet",
                "Service",
                "PodDisruptionBudget",
                "NetworkPolicy",
            ] {
                assert!(
                    validated
                        .iter()
                        .any(|v| v.as_str().unwrap().starts_with(kind)),
                    "{name}: no {kind} validated"
                );
            }
        }
    }
    let mut docs = render(
        &chart().join("ci/default-values.yaml"),
        "v1.37.0",
        &json!({}),
    );
    let sts = docs
        .iter_mut()
        .find(|d| d["doc"]["kind"] == "StatefulSet")
        .unwrap();
    sts["doc"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystm"] =
        json!(true);
    let report = helper(
        &["validate", &newest],
        Some(&serde_json::to_string(&docs).unwrap()),
    );
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("readOnlyRootFilesystm"),
        "{report}"
    );
    // Every ci/ file together renders both operator kinds, so both were validated.
    assert_eq!(
        operator_kinds,
        BTreeSet::from(["PrometheusRule".to_owned(), "ServiceMonitor".to_owned()])
    );
    // The operator's schemas refuse a bad ServiceMonitor and a bad PrometheusRule, so that
    // check can fail too: an interval that is not a duration, a rule without `expr`.
    let mut docs = render(
        &chart().join("ci/operator-values.yaml"),
        "v1.37.0",
        &json!({}),
    );
    for d in &mut docs {
        match d["doc"]["kind"].as_str() {
            Some("ServiceMonitor") => {
                d["doc"]["spec"]["endpoints"][0]["interval"] = json!("5 minutes");
            }
            Some("PrometheusRule") => {
                let rule = &mut d["doc"]["spec"]["groups"][0]["rules"][0];
                rule.as_object_mut().unwrap().remove("expr");
            }
            _ => {}
        }
    }
    let operator = operator_validate(&docs);
    let errors: Vec<&str> = operator["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{operator}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("ServiceMonitor/") && e.contains("interval must match pattern")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("PrometheusRule/")
                && e.contains("must have required property expr")),
        "{errors:?}"
    );
}

/// The security context the issue asks for, on every pod of every ci/ values file: non-root,
/// read-only root filesystem, every capability dropped, RuntimeDefault seccomp; probes on
/// /healthz and /readyz unless basic auth guards them; resources set; the ConfigMap's and
/// Secrets' checksums in the pod annotations.
#[test]
fn pods_run_locked_down_with_probes_and_checksums() {
    for (name, path) in ci_values() {
        let docs = render(&path, "v1.37.0", &json!({}));
        let basic_auth = std::fs::read_to_string(&path)
            .unwrap()
            .contains("basicAuth: true");
        for sts in docs_of(&docs, "StatefulSet") {
            let pod = &sts["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            assert_eq!(pod["automountServiceAccountToken"], false);
            let c = &pod["containers"][0];
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
            assert!(c["resources"]["requests"]["memory"].is_string(), "{name}");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
            if basic_auth {
                assert!(c["livenessProbe"]["tcpSocket"].is_object(), "{name}");
            } else {
                assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
            }
            let notes = &sts["spec"]["template"]["metadata"]["annotations"];
            for key in ["checksum/config", "checksum/secrets"] {
                assert_eq!(notes[key].as_str().map(str::len), Some(64), "{name}: {key}");
            }
        }
    }
    // A change of the configuration changes the checksum, so the pods roll.
    let path = chart().join("ci/shards-3-values.yaml");
    let checksum = |overrides: Value| {
        let docs = render(&path, "v1.37.0", &overrides);
        docs_of(&docs, "StatefulSet")[0]["spec"]["template"]["metadata"]["annotations"]
            ["checksum/config"]
            .clone()
    };
    assert_ne!(
        checksum(json!({})),
        checksum(
            json!({"config": {"budgets": [{"name": "b", "amount_usd": 1, "scope": {"org_id": "aaaaaaaaaaaaaaaaaaaaaaaa"}}]}})
        )
    );
}

/// The PrometheusRule's groups are those of deploy/alerts.yml, and `promtool check rules`
/// passes on them (every lint, fatal).
#[test]
fn prometheus_rule_is_deploy_alerts_and_passes_promtool() {
    let docs = render(
        &chart().join("ci/operator-values.yaml"),
        "v1.37.0",
        &json!({}),
    );
    let rules = docs_of(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let groups = &rules[0]["spec"]["groups"];
    let alerts: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(root("deploy/alerts.yml")).unwrap())
            .unwrap();
    let alerts: Value = serde_json::to_value(&alerts).unwrap();
    assert_eq!(
        groups, &alerts["groups"],
        "the chart's rules drifted from deploy/alerts.yml"
    );
    let dir = temp_dir();
    let file = dir.join("rendered-rules.yml");
    std::fs::write(
        &file,
        serde_json::to_string(&json!({"groups": groups})).unwrap(),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules", "--lint=all", "--lint-fatal"])
        .arg(&file)
        .output()
        .expect("promtool runs (Debian package `prometheus`; .ci/run installs it)");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("SUCCESS: 10 rules found"),
        "{}",
        text(&out)
    );
    // Off unless enabled.
    let docs = render(
        &chart().join("ci/default-values.yaml"),
        "v1.37.0",
        &json!({}),
    );
    assert!(docs_of(&docs, "PrometheusRule").is_empty());
    assert!(docs_of(&docs, "ServiceMonitor").is_empty());
}

/// The ServiceMonitor scrapes the Service's port at the telemetry path, https with the
/// configured TLS and basic auth when the web configuration says so, http otherwise; the job
/// label comes from app.kubernetes.io/name, `atlas-cost-exporter`, which the alerts select.
#[test]
fn service_monitor_scrapes_the_metrics_port_as_the_web_configuration_says() {
    for (file, scheme) in [
        ("operator-values.yaml", "http"),
        ("tls-basic-auth-values.yaml", "https"),
    ] {
        let docs = render(&chart().join("ci").join(file), "v1.37.0", &json!({}));
        let monitor = docs_of(&docs, "ServiceMonitor")[0];
        let service = docs_of(&docs, "Service")[0];
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
        assert_eq!(endpoint["path"], "/metrics");
        assert_eq!(endpoint["scheme"], scheme, "{file}");
        assert_eq!(monitor["spec"]["jobLabel"], "app.kubernetes.io/name");
        assert_eq!(
            service["metadata"]["labels"]["app.kubernetes.io/name"],
            "atlas-cost-exporter"
        );
        for (k, v) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&service["metadata"]["labels"][k], v);
        }
        if scheme == "https" {
            assert_eq!(
                endpoint["basicAuth"]["password"]["name"],
                "atlas-cost-exporter-scrape"
            );
            assert_eq!(endpoint["tlsConfig"]["insecureSkipVerify"], true);
        }
    }
}

/// Files of the Secrets the ci/ values files name, made up for the test (the web
/// configuration with a certificate made now and a bcrypt hash).
fn secret_fixtures() -> BTreeMap<String, BTreeMap<String, String>> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let hash = bcrypt::hash("scrape-password", 4).unwrap();
    let sim = atlas_cost_exporter::simulator::SimCredentials::demo();
    let s = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    BTreeMap::from([
        (
            "atlas-cost-exporter".to_owned(),
            s(&[
                ("client-id", &sim.client_id),
                ("client-secret", &sim.client_secret),
            ]),
        ),
        (
            "atlas-api-key".to_owned(),
            s(&[
                ("public-api-key", &sim.public_key),
                ("private-api-key", &sim.private_key),
            ]),
        ),
        (
            "atlas-finance".to_owned(),
            s(&[("private-api-key", "finance-key")]),
        ),
        (
            "atlas-platform".to_owned(),
            s(&[("secret", "platform-secret")]),
        ),
        (
            "atlas-cost-exporter-web".to_owned(),
            s(&[
                (
                    "web.yml",
                    &format!(
                        "tls_server_config: {{cert_file: tls.crt, key_file: tls.key}}\n\
                         basic_auth_users: {{prometheus: '{hash}'}}\n"
                    ),
                ),
                ("tls.crt", &ck.cert.pem()),
                ("tls.key", &ck.signing_key.serialize_pem()),
            ]),
        ),
    ])
}

/// A pod of a rendered StatefulSet, set up as the kubelet would: its arguments (paths into
/// `root`) and environment.
struct Pod {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn materialize(
    docs: &[Value],
    sts: &Value,
    ordinal: u32,
    root: &Path,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> Pod {
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let pod_name = format!("{}-{ordinal}", sts["metadata"]["name"].as_str().unwrap());
    let configmaps: BTreeMap<&str, &Value> = docs_of(docs, "ConfigMap")
        .into_iter()
        .map(|c| (c["metadata"]["name"].as_str().unwrap(), &c["data"]))
        .collect();
    let secret = |name: &str| {
        secrets
            .get(name)
            .unwrap_or_else(|| panic!("no test fixture for the Secret {name}"))
    };
    let mut volumes: BTreeMap<String, &Value> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v))
        .collect();
    let claims: Vec<String> = sts["spec"]["volumeClaimTemplates"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|t| t["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    // Every mount's directory under `root`, longest mount path first, so that a path goes
    // to its own mount; paths in the arguments and in the mounted configuration file are
    // rewritten to them (in the pod they are these very paths).
    let mut mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mount = m["mountPath"].as_str().unwrap();
            (mount.to_owned(), root.join(mount.trim_start_matches('/')))
        })
        .collect();
    mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    let local = |text: &str| {
        let mut text = text.to_owned();
        for (mount, dir) in &mounts {
            let dir = dir.display();
            text = text.replace(&format!("{mount}/"), &format!("{dir}/"));
            text = text.replace(&format!("{mount}\n"), &format!("{dir}\n"));
            if let Some(head) = text.strip_suffix(mount.as_str()) {
                text = format!("{head}{dir}");
            }
        }
        // Nothing may point outside `root`, where the pod's files are not.
        for (mount, _) in &mounts {
            assert!(
                !text.contains(&format!("={mount}")),
                "{mount} left in {text}"
            );
        }
        text
    };
    for m in container["volumeMounts"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let dir = root.join(m["mountPath"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        if claims.iter().any(|c| c == name) {
            continue;
        }
        let volume = volumes
            .remove(name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        if let Some(cm) = volume.get("configMap") {
            let data = configmaps[cm["name"].as_str().unwrap()];
            for (k, v) in data.as_object().unwrap() {
                std::fs::write(dir.join(k), local(v.as_str().unwrap())).unwrap();
            }
        } else if let Some(s) = volume.get("secret") {
            let files = secret(s["secretName"].as_str().unwrap());
            match s["items"].as_array() {
                Some(items) => {
                    for item in items {
                        let key = item["key"].as_str().unwrap();
                        let content = files.get(key).unwrap_or_else(|| panic!("no key {key}"));
                        std::fs::write(dir.join(item["path"].as_str().unwrap()), content).unwrap();
                    }
                }
                None => {
                    for (k, v) in files {
                        std::fs::write(dir.join(k), v).unwrap();
                    }
                }
            }
        } else {
            assert!(volume.get("emptyDir").is_some(), "unknown volume {volume}");
        }
    }
    let args = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .map(|a| local(&a))
        .collect();
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            if let Some(v) = e["value"].as_str() {
                return (name, v.to_owned());
            }
            let from = &e["valueFrom"];
            let value = if let Some(field) = from["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "metadata.name" => pod_name.clone(),
                    "metadata.labels['apps.kubernetes.io/pod-index']" => ordinal.to_string(),
                    other => panic!("the test does not emulate the field {other}"),
                }
            } else {
                let r = &from["secretKeyRef"];
                let key = r["key"].as_str().unwrap();
                secret(r["name"].as_str().unwrap())[key].clone()
            };
            (name, value)
        })
        .collect();
    Pod { args, env }
}

fn check_config(pod: &Pod) -> Output {
    Command::new(BIN)
        .env_clear()
        .envs(pod.env.iter().map(|(k, v)| (k, v)))
        .arg("check-config")
        .args(&pod.args)
        .output()
        .unwrap()
}

/// Every pod of every ci/ values file (every shard, every HA replica), rendered for the
/// oldest and the newest Kubernetes, passes `check-config` with its arguments, environment
/// and files; each reports its own shard.
#[test]
fn every_rendered_pod_passes_check_config() {
    let (oldest, newest) = claimed_kubernetes();
    let secrets = secret_fixtures();
    let mut pods = 0;
    for (name, path) in ci_values() {
        for kube in [&oldest, &newest] {
            let docs = render(&path, &format!("v{kube}"), &json!({}));
            for sts in docs_of(&docs, "StatefulSet") {
                let args = sts["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
                assert!(
                    args.contains("--storage.path=/var/lib/atlas-cost-exporter"),
                    "{name}"
                );
                let replicas = u32::try_from(sts["spec"]["replicas"].as_u64().unwrap()).unwrap();
                for ordinal in 0..replicas {
                    let dir = temp_dir();
                    let pod = materialize(&docs, sts, ordinal, &dir, &secrets);
                    let out = check_config(&pod);
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "{name} pod {ordinal} on {kube}: {}\n{:?}",
                        text(&out),
                        pod.args
                    );
                    let want = format!("(index {ordinal}, count {replicas})");
                    assert!(
                        String::from_utf8_lossy(&out.stdout).contains(&want),
                        "{name}: {}",
                        text(&out)
                    );
                    pods += 1;
                }
            }
        }
    }
    // 1 + 3 + 1 + 2 (an HA pair) + 1 pods, for each of the two versions.
    assert_eq!(pods, 16);
}

/// Three shards: one StatefulSet of 3 replicas with `--shard.count=3`, each pod's shard index
/// from the pod-index label (Kubernetes 1.28 and later) or from its name (before); the pods
/// of ordinals 0, 1 and 2 get shard indexes 0, 1 and 2, as check-config reports them.
#[test]
fn three_shards_give_pods_indexes_0_1_2_with_shard_count_3() {
    let (oldest, newest) = claimed_kubernetes();
    let secrets = secret_fixtures();
    for (kube, var, field) in [
        (
            &newest,
            "ATLAS_EXPORTER_SHARD_INDEX",
            "metadata.labels['apps.kubernetes.io/pod-index']",
        ),
        (&oldest, "ATLAS_EXPORTER_SHARD_POD_NAME", "metadata.name"),
    ] {
        let docs = render(
            &chart().join("ci/shards-3-values.yaml"),
            &format!("v{kube}"),
            &json!({}),
        );
        let sets = docs_of(&docs, "StatefulSet");
        assert_eq!(sets.len(), 1);
        let sts = sets[0];
        assert_eq!(sts["spec"]["replicas"], 3);
        let container = &sts["spec"]["template"]["spec"]["containers"][0];
        let args = container["args"].as_array().unwrap();
        assert_eq!(
            args.iter()
                .filter(|a| a.as_str().unwrap().starts_with("--shard."))
                .count(),
            1
        );
        assert!(args.contains(&json!("--shard.count=3")), "{args:?}");
        let env = container["env"].as_array().unwrap();
        let shard_env: Vec<&Value> = env
            .iter()
            .filter(|e| {
                e["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("ATLAS_EXPORTER_SHARD")
            })
            .collect();
        assert_eq!(shard_env.len(), 1, "{kube}");
        assert_eq!(shard_env[0]["name"], var, "{kube}");
        assert_eq!(
            shard_env[0]["valueFrom"]["fieldRef"]["fieldPath"], field,
            "{kube}"
        );
        let mut indexes = Vec::new();
        for ordinal in 0..3 {
            let dir = temp_dir();
            let pod = materialize(&docs, sts, ordinal, &dir, &secrets);
            let out = check_config(&pod);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            let report = String::from_utf8_lossy(&out.stdout).into_owned();
            let shard = report
                .lines()
                .find(|l| l.starts_with("shard: "))
                .unwrap()
                .to_owned();
            indexes.push(shard);
        }
        assert_eq!(
            indexes,
            [
                "shard: 1 of 3 (index 0, count 3)",
                "shard: 2 of 3 (index 1, count 3)",
                "shard: 3 of 3 (index 2, count 3)"
            ],
            "{kube}"
        );
    }
}

/// FNV-1a, 64 bits, written here again: the test's own idea of which shard owns an org.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The binary run with the arguments and environment of pod 2 of a 3-shard release,
/// against the simulator (its 9 orgs listed in the values), serves exactly the orgs whose
/// FNV-1a hash is 2 mod 3; pods 0 and 1 serve the others, each org once.
#[tokio::test(flavor = "multi_thread")]
async fn pod_of_ordinal_2_serves_exactly_its_orgs() {
    let sim = start_sim(common::with_orgs(9)).await;
    let orgs: Vec<String> = (0..9).map(|i| sim.org(i)).collect();
    let overrides = json!({
        "atlas": {"orgIds": orgs, "baseUrl": sim.url},
        "config": {"orgs": [], "budgets": []},
        "extraArgs": ["--atlas.poll-interval=20ms"],
    });
    let (_, newest) = claimed_kubernetes();
    let docs = render(
        &chart().join("ci/shards-3-values.yaml"),
        &format!("v{newest}"),
        &overrides,
    );
    let sts = docs_of(&docs, "StatefulSet")[0];
    let secrets = secret_fixtures();
    let mut served = Vec::new();
    for ordinal in 0..3 {
        let dir = temp_dir();
        let mut pod = materialize(&docs, sts, ordinal, &dir, &secrets);
        // The pod's own network: here a free loopback port instead of :9879.
        let port = free_port();
        for a in &mut pod.args {
            if a.starts_with("--web.listen-address=") {
                *a = format!("--web.listen-address=127.0.0.1:{port}");
            }
        }
        let log = dir.join("stderr.log");
        let child = Command::new(BIN)
            .env_clear()
            .envs(pod.env.iter().map(|(k, v)| (k, v)))
            .args(&pod.args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        served.push((KillOnDrop(child), port, log));
    }
    let mut sets = Vec::new();
    for (child, port, log) in &mut served {
        // Until it listens; a pod that exits fails the test with its log.
        for _ in 0..600 {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!(
                    "pod exited {status}: {}",
                    std::fs::read_to_string(&*log).unwrap()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let exporter = common::Exporter::at(([127, 0, 0, 1], *port).into());
        exporter.wait_ready().await;
        let samples = exporter.samples().await;
        let ids: BTreeSet<String> = samples
            .0
            .iter()
            .filter(|s| s.name == "atlas_cost_query_up")
            .map(|s| s.label("org_id").unwrap().to_owned())
            .collect();
        sets.push(ids);
    }
    let want: BTreeSet<String> = orgs.iter().filter(|o| fnv1a(o) % 3 == 2).cloned().collect();
    assert!(!want.is_empty() && want.len() < orgs.len(), "{want:?}");
    assert_eq!(sets[2], want, "pod 2 serves exactly its shard's orgs");
    let mut all: Vec<&String> = sets.iter().flatten().collect();
    all.sort();
    let mut every: Vec<&String> = orgs.iter().collect();
    every.sort();
    assert_eq!(all, every, "the three pods serve every org once");
}

/// deploy/kubernetes/exporter.yml and prometheusrule.yml are the chart rendered with
/// deploy/kubernetes/values.yaml (Helm's own labels left out): they cannot drift from it.
#[test]
fn deploy_manifests_are_the_chart_rendered() {
    let chart = chart();
    let values = root("deploy/kubernetes/values.yaml");
    let rendered = helper(
        &["deploy", chart.to_str().unwrap(), values.to_str().unwrap()],
        None,
    );
    let rendered = rendered.as_object().unwrap();
    assert_eq!(rendered.len(), 2);
    for (name, want) in rendered {
        let have = std::fs::read_to_string(root("deploy/kubernetes").join(name)).unwrap();
        assert!(
            have == want.as_str().unwrap(),
            "deploy/kubernetes/{name} differs from the chart's rendering: run \
             python3 tests/helm_chart.py deploy charts/atlas-cost-exporter \
             deploy/kubernetes/values.yaml --write"
        );
        assert!(!have.contains("managed-by: Helm"), "{name}");
    }
}

/// values.yaml comments every value, and the chart's README has a row for each, and no row
/// for a value that does not exist. A value is a key whose value is not a mapping, or one of
/// the Kubernetes objects passed through whole (resources, security contexts, probe
/// settings), or an empty mapping; keys below those are covered by their row.
#[test]
fn every_value_is_commented_and_in_the_readme_table() {
    let values = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let rows: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_owned()))
        .collect();
    assert!(rows.len() > 50, "{rows:?}");
    let mut stack: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut previous = "";
    for line in values.lines() {
        let trimmed = line.trim_start();
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k)
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
        if let (Some(key), false) = (key, trimmed.starts_with('#') || trimmed.starts_with('-')) {
            let depth = (line.len() - trimmed.len()) / 2;
            stack.truncate(depth);
            stack.push(key.to_owned());
            let path = stack.join(".");
            let covered = rows.iter().any(|r| path.starts_with(&format!("{r}.")));
            let section = rows.iter().any(|r| r.starts_with(&format!("{path}.")));
            if rows.contains(&path) {
                assert!(
                    previous.trim_start().starts_with('#'),
                    "values.yaml: {path} has no comment above it"
                );
                seen.insert(path);
            } else {
                assert!(covered || section, "{path} is not in the README's table");
            }
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    let missing: Vec<&String> = rows.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "README rows without a value: {missing:?}"
    );
}

/// `replicasPerShard: 2` is a second StatefulSet with the same shards, a selector of its
/// own (neither adopts the other's pods), and half Atlas's request budget on each replica;
/// the PodDisruptionBudget covers the pods of both.
#[test]
fn ha_pair_is_a_second_statefulset_with_half_the_request_budget() {
    let docs = render(
        &chart().join("ci/persistence-off-values.yaml"),
        "v1.37.0",
        &json!({}),
    );
    let sets = docs_of(&docs, "StatefulSet");
    let names: Vec<&str> = sets
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["atlas-cost-exporter", "atlas-cost-exporter-r1"]);
    assert_ne!(
        sets[0]["spec"]["selector"]["matchLabels"],
        sets[1]["spec"]["selector"]["matchLabels"]
    );
    let pdb = docs_of(&docs, "PodDisruptionBudget")[0];
    for sts in &sets {
        assert_eq!(sts["spec"]["replicas"], 1);
        let args = &sts["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(
            args.as_array()
                .unwrap()
                .contains(&json!("--atlas.requests-per-minute=50")),
            "{args}"
        );
        let labels = &sts["spec"]["template"]["metadata"]["labels"];
        for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v);
        }
        // Persistence off: an emptyDir, no claim.
        assert!(sts["spec"]["volumeClaimTemplates"].is_null());
        let volumes = sts["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == "state" && v["emptyDir"]["sizeLimit"] == "1Gi")
        );
    }
    // `checksumSecrets: false` leaves the Secrets' checksum (and its lookup) out.
    let docs = render(
        &chart().join("ci/default-values.yaml"),
        "v1.37.0",
        &json!({"checksumSecrets": false}),
    );
    let notes = &docs_of(&docs, "StatefulSet")[0]["spec"]["template"]["metadata"]["annotations"];
    assert!(notes.get("checksum/secrets").is_none() && notes.get("checksum/config").is_some());
}
