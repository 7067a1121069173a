//! `atlas-cost-exporter check-config`, the real binary: a good configuration (flags, the
//! environment and a YAML file with per-org credentials, budgets, tag labels and a web
//! configuration) exits 0 and describes what would run; each kind of bad configuration exits
//! 2 with the very line a start-up of the same arguments prints; and nothing reaches Atlas.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_atlas-cost-exporter");
const ORG_A: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";
const ORG_B: &str = "6a7b8c9d0e1f5f1b2c3d4e5f";

/// A fresh directory for one test's files.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ace-check-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The binary with `args` and exactly `env`: nothing else of the test's environment.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `check-config` with `args`, then a start-up with the same `args` and `env`: both must
/// exit 2 with the same single line, which `check-config` returns.
fn refused_like_startup(args: &[&str], env: &[(&str, &str)]) -> String {
    let check: Vec<&str> = ["check-config"].iter().chain(args).copied().collect();
    let checked = run(&check, env);
    assert_eq!(checked.status.code(), Some(2), "{}", stderr(&checked));
    assert!(stdout(&checked).is_empty(), "{}", stdout(&checked));
    // A bad configuration exits before the listener is bound or Atlas is called; the
    // start-up gets a free port all the same, in case the configuration were accepted.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut start: Vec<&str> = args.to_vec();
    if !args.iter().any(|a| a.starts_with("--web.listen-address")) {
        start.extend(["--web.listen-address", &listen]);
    }
    let started = run(&start, env);
    assert_eq!(started.status.code(), Some(2), "{}", stderr(&started));
    let line = stderr(&checked);
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert_eq!(line, stderr(&started), "check-config and a start-up differ");
    line
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn sa_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MONGODB_ATLAS_CLIENT_ID", "mdb_sa_id_main"),
        ("MONGODB_ATLAS_CLIENT_SECRET", "main-secret-value"),
    ]
}

/// A configuration file with a second org on its own API key (from a file), a custom query,
/// a budget and the tag labels, plus a web configuration with TLS and basic auth: exit 0,
/// and the report names the shard, both orgs with their credentials' kind and queries, the
/// budget, the tag labels and TLS with basic auth, without any secret.
#[test]
fn good_configuration_exits_0_and_describes_what_would_run() {
    let d = dir("good");
    let key = write(&d, "finance-key", "finance-private-key\n");
    let config = write(
        &d,
        "config.yml",
        &format!(
            "tag_labels: [team, cost-center]\n\
             orgs:\n\
             - id: {ORG_A}\n\
             - id: {ORG_B}\n\
             \x20 credentials: {{public_api_key: financepub, private_api_key_file: {key}}}\n\
             \x20 queries:\n\
             \x20   - {{name: storage, group_by: services, services: [Storage, Backup], months: 12, format: csv}}\n\
             budgets:\n\
             - name: prod\n\
             \x20 amount_usd: 1200.5\n\
             \x20 scope: {{org_id: {ORG_A}, tag_team: web}}\n"
        ),
    );
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    write(&d, "server.crt", &ck.cert.pem());
    write(&d, "server.key", &ck.signing_key.serialize_pem());
    let hash = bcrypt::hash("scrape-password", 4).unwrap();
    let web = write(
        &d,
        "web.yml",
        &format!(
            "tls_server_config: {{cert_file: server.crt, key_file: server.key}}\n\
             basic_auth_users: {{prometheus: '{hash}'}}\n"
        ),
    );
    let out = run(
        &[
            "check-config",
            "--config.file",
            &config,
            "--web.config.file",
            &web,
            "--refresh.interval",
            "30m",
        ],
        &sa_env(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let report = stdout(&out);
    for want in [
        "atlas-cost-exporter: configuration is valid\n",
        "shard: 1 of 1 (index 0, count 1)\n",
        "orgs: 2 on this shard, 2 in the configuration\n",
        &format!(
            "  org {ORG_A}: service account; 3 queries: services (ungrouped, 3 months, json), \
             projects (by projects, 3 months, json), clusters (by clusters, 3 months, json)\n"
        ),
        &format!("  org {ORG_B}: API key; 1 query: storage (by services, 12 months, csv)\n"),
        "budgets: 1\n",
        &format!(
            "  {{budget=\"prod\",org_id=\"{ORG_A}\",tag_team=\"web\"}}: 1200.5 USD a month over \
             query clusters\n"
        ),
        "tag labels: team as tag_team, cost-center as tag_cost_center\n",
        "listen: 0.0.0.0:9879 (TLS, basic auth), metrics on /metrics\n",
        "atlas: https://cloud.mongodb.com, refresh every 30m, 4 queries at once, 100 requests \
         a minute per org\n",
    ] {
        assert!(report.contains(want), "missing {want:?} in:\n{report}");
    }
    for secret in [
        "main-secret-value",
        "finance-private-key",
        "scrape-password",
        &hash,
    ] {
        assert!(!report.contains(secret), "{secret} in:\n{report}");
    }
}

/// A shard's report lists only the orgs that shard owns, and counts the others; the shard
/// can come from a StatefulSet pod name (`--shard.pod-name`) or from the index variable.
#[test]
fn shard_report_lists_only_its_orgs() {
    let base = [
        "check-config",
        "--atlas.org-id",
        ORG_A,
        "--atlas.org-id",
        ORG_B,
        "--shard.count",
        "2",
    ];
    let mut owners = Vec::new();
    for i in 0..2 {
        let pod = format!("atlas-cost-exporter-{i}");
        let mut args = base.to_vec();
        args.extend(["--shard.pod-name", &pod]);
        let by_name = run(&args, &sa_env());
        assert_eq!(by_name.status.code(), Some(0), "{}", stderr(&by_name));
        let index = i.to_string();
        let mut env = sa_env();
        env.push(("ATLAS_EXPORTER_SHARD_INDEX", &index));
        let by_env = run(&base, &env);
        assert_eq!(
            stdout(&by_name),
            stdout(&by_env),
            "pod name and index agree"
        );
        let report = stdout(&by_name);
        assert!(
            report.contains(&format!("shard: {} of 2 (index {i}, count 2)", i + 1)),
            "{report}"
        );
        owners.push([ORG_A, ORG_B].map(|o| report.contains(&format!("org {o}:"))));
    }
    // Each org is listed by exactly one shard.
    for org in 0..2 {
        assert_eq!(owners.iter().filter(|o| o[org]).count(), 1, "{owners:?}");
    }
}

/// A bad flag value: the start-up's line, exit 2.
#[test]
fn bad_flag_is_refused_like_a_startup() {
    let line = refused_like_startup(&["--atlas.org-id", "abc"], &sa_env());
    assert_eq!(
        line,
        "atlas-cost-exporter: invalid configuration: --atlas.org-id: \"abc\" is not an Atlas \
         org id (24 lowercase hex characters)\n"
    );
    let line = refused_like_startup(
        &["--atlas.org-id", ORG_A, "--refresh.concurrency", "0"],
        &sa_env(),
    );
    assert!(
        line.contains("--refresh.concurrency: must be at least 1"),
        "{line}"
    );
}

/// A value the command line cannot parse is refused by the parser, as at start-up: exit 2
/// and the same first line.
#[test]
fn unparsable_flag_is_refused_by_the_parser_like_a_startup() {
    let checked = run(&["check-config", "--refresh.interval", "5x"], &sa_env());
    let started = run(&["--refresh.interval", "5x"], &sa_env());
    assert_eq!(checked.status.code(), Some(2));
    assert_eq!(started.status.code(), Some(2));
    let first = |o: &Output| stderr(o).lines().next().unwrap_or_default().to_owned();
    assert!(
        first(&checked).contains("--refresh.interval"),
        "{}",
        stderr(&checked)
    );
    assert_eq!(first(&checked), first(&started));
}

/// Bad environment: half a service account, both kinds of credentials, a bad org id in
/// `MONGODB_ATLAS_ORG_ID`, a bad value in an `ATLAS_EXPORTER_*` variable.
#[test]
fn bad_environment_is_refused_like_a_startup() {
    let line = refused_like_startup(
        &["--atlas.org-id", ORG_A],
        &[("MONGODB_ATLAS_CLIENT_ID", "mdb_sa_id_x")],
    );
    assert!(line.contains("MONGODB_ATLAS_CLIENT_SECRET"), "{line}");
    let mut both = sa_env();
    both.extend([
        ("MONGODB_ATLAS_PUBLIC_API_KEY", "pub"),
        ("MONGODB_ATLAS_PRIVATE_API_KEY", "priv"),
    ]);
    refused_like_startup(&["--atlas.org-id", ORG_A], &both);
    let mut env = sa_env();
    env.push(("MONGODB_ATLAS_ORG_ID", "nothex"));
    let line = refused_like_startup(&[], &env);
    assert!(line.contains("--atlas.org-id: \"nothex\""), "{line}");
    let mut env = sa_env();
    env.push(("ATLAS_EXPORTER_COST_MONTHS", "40"));
    let line = refused_like_startup(&["--atlas.org-id", ORG_A], &env);
    assert!(line.contains("--cost.months: 40 is out of range"), "{line}");
}

/// Nothing to export at all.
#[test]
fn no_org_is_refused_like_a_startup() {
    let line = refused_like_startup(&[], &sa_env());
    assert!(line.contains("--atlas.org-id: no org to export"), "{line}");
}

/// Bad YAML files: missing, not YAML of the schema (unknown key), a query Atlas would refuse
/// (a services grouping without its list), a budget over an unknown tag label, a per-org
/// secret file that does not exist, and a tag label given both in the file and by flag.
#[test]
fn bad_yaml_is_refused_like_a_startup() {
    let d = dir("yaml");
    let missing = d.join("nope.yml");
    let line = refused_like_startup(&["--config.file", missing.to_str().unwrap()], &sa_env());
    assert!(line.contains("--config.file: cannot read"), "{line}");
    for (name, yaml, want) in [
        (
            "unknown-key",
            format!("orgz:\n  - id: {ORG_A}\n"),
            "unknown field `orgz`",
        ),
        (
            "services-without-list",
            format!("orgs:\n  - id: {ORG_A}\n    queries: [{{name: s, group_by: services}}]\n"),
            "services",
        ),
        (
            "budget-unknown-tag",
            format!(
                "orgs: [{{id: {ORG_A}}}]\nbudgets:\n  - {{name: b, amount_usd: 5, scope: {{tag_team: x}}}}\n"
            ),
            "tag_team",
        ),
        (
            "secret-file-missing",
            format!(
                "orgs:\n  - id: {ORG_A}\n    credentials: {{client_id: x, client_secret_file: {}}}\n",
                d.join("absent").display()
            ),
            "client_secret_file",
        ),
    ] {
        let path = write(&d, &format!("{name}.yml"), &yaml);
        let line = refused_like_startup(&["--config.file", &path], &sa_env());
        assert!(line.contains(want), "{name}: {line}");
    }
    let path = write(
        &d,
        "tags.yml",
        &format!("tag_labels: [team]\norgs: [{{id: {ORG_A}}}]\n"),
    );
    let line = refused_like_startup(
        &["--config.file", &path, "--cost.tag-labels", "env"],
        &sa_env(),
    );
    assert!(line.contains("tag"), "{line}");
}

/// Bad shards: an index out of range, a pod name without an ordinal, a pod ordinal beyond
/// the shard count.
#[test]
fn bad_shard_is_refused_like_a_startup() {
    let base = ["--atlas.org-id", ORG_A, "--shard.count", "3"];
    let mut args = base.to_vec();
    args.extend(["--shard.index", "3"]);
    let line = refused_like_startup(&args, &sa_env());
    assert!(
        line.contains("--shard.index: 3 must be below --shard.count (3)"),
        "{line}"
    );
    let mut args = base.to_vec();
    args.extend(["--shard.pod-name", "exporter"]);
    let line = refused_like_startup(&args, &sa_env());
    assert!(
        line.contains("--shard.pod-name: \"exporter\" does not end in -<ordinal>"),
        "{line}"
    );
    let mut args = base.to_vec();
    args.extend(["--shard.pod-name", "exporter-4"]);
    let line = refused_like_startup(&args, &sa_env());
    assert!(
        line.contains("has ordinal 4, not below --shard.count (3)"),
        "{line}"
    );
}

/// A bad web configuration: a certificate file that does not exist.
#[test]
fn bad_web_config_is_refused_like_a_startup() {
    let d = dir("web");
    let web = write(
        &d,
        "web.yml",
        "tls_server_config: {cert_file: absent.crt, key_file: absent.key}\n",
    );
    let line = refused_like_startup(
        &["--atlas.org-id", ORG_A, "--web.config.file", &web],
        &sa_env(),
    );
    assert!(
        line.contains("--web.config.file: tls_server_config.cert_file"),
        "{line}"
    );
}

/// `check-config` sends nothing to Atlas: with the base URL on a listener of the test's,
/// no connection arrives, for a good configuration and for a bad one.
#[test]
fn check_config_sends_nothing_to_atlas() {
    let atlas = TcpListener::bind("127.0.0.1:0").unwrap();
    atlas.set_nonblocking(true).unwrap();
    let url = format!("http://{}", atlas.local_addr().unwrap());
    let good = run(
        &[
            "check-config",
            "--atlas.base-url",
            &url,
            "--atlas.org-id",
            ORG_A,
        ],
        &sa_env(),
    );
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    assert!(
        stdout(&good).contains(&format!("atlas: {url}, ")),
        "{}",
        stdout(&good)
    );
    let bad = run(
        &[
            "check-config",
            "--atlas.base-url",
            &url,
            "--atlas.org-id",
            ORG_A,
        ],
        &[("MONGODB_ATLAS_CLIENT_ID", "only-half")],
    );
    assert_eq!(bad.status.code(), Some(2));
    match atlas.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the fake Atlas: {other:?}"),
    }
}

/// A `--storage.path` that is a file is refused with the start-up's own line; one that does
/// not exist yet is valid, reported as created by a start-up, and still does not exist after
/// the check.
#[test]
fn unusable_state_path_is_refused_like_a_startup() {
    let d = dir("state-path");
    let file = write(&d, "not-a-dir", "x");
    let line = refused_like_startup(
        &["--atlas.org-id", ORG_A, "--storage.path", &file],
        &sa_env(),
    );
    assert_eq!(
        line,
        format!("atlas-cost-exporter: --storage.path {file}: not a directory\n")
    );
    let missing = d.join("state").join("org");
    let missing = missing.to_str().unwrap();
    let checked = run(
        &[
            "check-config",
            "--atlas.org-id",
            ORG_A,
            "--storage.path",
            missing,
        ],
        &sa_env(),
    );
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    assert!(
        stdout(&checked).contains(&format!(
            "state: {missing} (missing: a start-up creates it)\n  org {ORG_A}: no kept state\n"
        )),
        "{}",
        stdout(&checked)
    );
    assert!(!d.join("state").exists(), "the check created the directory");
}
