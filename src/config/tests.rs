//! Unit tests of the configuration: flags, environment and YAML into a `Config`.

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser as _;

use super::*;
use crate::cli::{Cli, Flags};
use crate::testing::temp_dir;

const ORG: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";

/// The exporter's flags as the command line parses them.
fn flags(args: &[&str]) -> Flags {
    let mut argv = vec!["atlas-cost-exporter"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("flags parse").flags
}

fn sa_env() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        (env::CLIENT_ID, "mdb_sa_id_x"),
        (env::CLIENT_SECRET, "s3cr3t"),
    ])
}

fn config_err(args: &[&str], env: &HashMap<&str, &str>) -> String {
    Config::from_flags(&flags(args), env)
        .expect_err("config must be refused")
        .to_string()
}

/// An org id and a service account are enough; every org gets the three default queries.
#[test]
fn org_id_with_service_account_gets_default_queries() {
    let cfg = Config::from_flags(&flags(&["--atlas.org-id", ORG]), &sa_env()).expect("valid");
    assert_eq!(cfg.orgs.len(), 1);
    let names: Vec<_> = cfg.orgs[0]
        .queries
        .iter()
        .map(|q| q.name.as_str())
        .collect();
    assert_eq!(names, ["services", "projects", "clusters"]);
    assert!(matches!(
        cfg.orgs[0].credentials,
        Credentials::ServiceAccount { .. }
    ));
    assert_eq!(cfg.listen.port(), 9879);
    assert_eq!(cfg.base_url, DEFAULT_BASE_URL);
}

/// An org id that is not 24 hex characters is refused, naming the flag and the value.
#[test]
fn malformed_org_id_is_refused_naming_the_flag() {
    let msg = config_err(&["--atlas.org-id", "../../admin"], &sa_env());
    assert!(msg.starts_with("--atlas.org-id:"), "{msg}");
    assert!(msg.contains("../../admin"), "{msg}");
    let upper = config_err(&["--atlas.org-id", "5F1B2C3D4E5F6A7B8C9D0E1F"], &sa_env());
    assert!(upper.starts_with("--atlas.org-id:"), "{upper}");
}

/// Months outside 1..=18 are refused.
#[test]
fn months_out_of_range_are_refused() {
    for m in ["0", "19"] {
        let msg = config_err(&["--atlas.org-id", ORG, "--cost.months", m], &sa_env());
        assert!(msg.starts_with("--cost.months:"), "{msg}");
    }
}

/// No credentials at all is refused, naming the variables to set.
#[test]
fn missing_credentials_are_refused() {
    let msg = config_err(&["--atlas.org-id", ORG], &HashMap::new());
    assert!(
        msg.contains(env::CLIENT_ID) && msg.contains(env::PUBLIC_API_KEY),
        "{msg}"
    );
}

/// A service account and an API key at once is ambiguous and refused.
#[test]
fn both_kinds_of_credentials_are_refused() {
    let mut env = sa_env();
    env.insert(env::PUBLIC_API_KEY, "pub");
    env.insert(env::PRIVATE_API_KEY, "priv");
    let msg = config_err(&["--atlas.org-id", ORG], &env);
    assert!(msg.contains("both"), "{msg}");
}

/// Half a service account names the missing half, and the error holds no secret.
#[test]
fn half_credentials_name_the_missing_variable() {
    let env = HashMap::from([(env::CLIENT_SECRET, "s3cr3t")]);
    let msg = config_err(&["--atlas.org-id", ORG], &env);
    assert!(msg.contains(env::CLIENT_ID), "{msg}");
    assert!(!msg.contains("s3cr3t"), "{msg}");
}

/// The org id variable takes a comma-separated list.
#[test]
fn org_ids_from_a_comma_separated_list() {
    let other = "aaaaaaaaaaaaaaaaaaaaaaaa";
    let f = flags(&["--atlas.org-id", &format!("{ORG},{other}")]);
    let cfg = Config::from_flags(&f, &sa_env()).expect("valid");
    assert_eq!(cfg.orgs.len(), 2);
    assert_eq!(cfg.orgs[1].id, other);
}

/// A secret file replaces the secret variable; the Debug output never shows the secret.
#[test]
fn secret_file_is_read_and_never_debug_printed() {
    let dir = temp_dir("config");
    let path = dir.join("secret");
    std::fs::write(&path, "from-file-secret\n").expect("write");
    let env = HashMap::from([(env::CLIENT_ID, "id")]);
    let f = flags(&[
        "--atlas.org-id",
        ORG,
        "--atlas.client-secret-file",
        path.to_str().expect("utf-8 path"),
    ]);
    let cfg = Config::from_flags(&f, &env).expect("valid");
    match &cfg.orgs[0].credentials {
        Credentials::ServiceAccount { client_secret, .. } => {
            assert_eq!(client_secret.expose(), "from-file-secret");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!format!("{cfg:?}").contains("from-file-secret"));
}

/// A YAML file defines orgs with their own credentials and custom queries.
#[test]
fn yaml_file_defines_orgs_credentials_and_queries() {
    let dir = temp_dir("config");
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!(
            "orgs:\n  - id: {ORG}\n    credentials:\n      public_api_key: pub\n      private_api_key_env: MY_KEY\n    queries:\n      - name: storage\n        group_by: services\n        services: [Storage]\n        months: 12\n        format: csv\n"
        ),
    )
    .expect("write");
    let env = HashMap::from([("MY_KEY", "k")]);
    let f = flags(&["--config.file", path.to_str().expect("utf-8 path")]);
    let cfg = Config::from_flags(&f, &env).expect("valid");
    let q = &cfg.orgs[0].queries[0];
    assert_eq!(
        (q.name.as_str(), q.months, q.format),
        ("storage", 12, ResultFormat::Csv)
    );
    assert!(matches!(
        cfg.orgs[0].credentials,
        Credentials::ApiKey { .. }
    ));
}

/// A bad key in the YAML file is refused, naming where it is.
#[test]
fn yaml_errors_name_the_key() {
    let dir = temp_dir("config");
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!("orgs:\n  - id: {ORG}\n    queries:\n      - name: x\n        group_by: projects\n        months: 40\n"),
    )
    .expect("write");
    let f = flags(&["--config.file", path.to_str().expect("utf-8 path")]);
    let msg = Config::from_flags(&f, &sa_env())
        .expect_err("refused")
        .to_string();
    assert!(msg.starts_with("orgs[0].queries[0].months:"), "{msg}");
    std::fs::write(&path, "orgs:\n  - id: nothex\n").expect("write");
    let msg = Config::from_flags(&f, &sa_env())
        .expect_err("refused")
        .to_string();
    assert!(msg.starts_with("orgs[0].id:"), "{msg}");
    std::fs::write(&path, "orgz: []\n").expect("write");
    let msg = Config::from_flags(&f, &sa_env())
        .expect_err("refused")
        .to_string();
    assert!(msg.contains("orgz"), "{msg}");
}

/// The default `services` query sends no `groupBy`; a YAML query without `group_by` does
/// the same, and `group_by: services` without a services list is refused at start-up:
/// Atlas needs at least one filter value for the dimension it groups by.
#[test]
fn a_groupby_without_its_filter_is_refused_and_the_default_sends_none() {
    let defaults = QuerySpec::defaults(3);
    assert_eq!(defaults[0].group_by, GroupBy::Ungrouped);
    assert_eq!(defaults[0].group_by.atlas_value(), None);
    assert_eq!(GroupBy::Projects.atlas_value(), Some("projects"));
    let dir = temp_dir("config");
    let path = dir.join("config.yml");
    let f = flags(&["--config.file", path.to_str().expect("utf-8 path")]);
    std::fs::write(
        &path,
        format!(
            "orgs:\n  - id: {ORG}\n    queries:\n      - name: s\n        group_by: services\n"
        ),
    )
    .expect("write");
    let msg = Config::from_flags(&f, &sa_env())
        .expect_err("refused")
        .to_string();
    assert!(
        msg.starts_with("orgs[0].queries[0].group_by: services needs a services list"),
        "{msg}"
    );
    std::fs::write(
        &path,
        format!("orgs:\n  - id: {ORG}\n    queries:\n      - name: s\n"),
    )
    .expect("write");
    let cfg = Config::from_flags(&f, &sa_env()).expect("valid");
    assert_eq!(cfg.orgs[0].queries[0].group_by, GroupBy::Ungrouped);
}

/// Listen addresses follow the Prometheus convention, including the bare `:port` form.
#[test]
fn listen_address_accepts_bare_port() {
    assert_eq!(parse_listen_address(":9879").expect("valid").port(), 9879);
    assert!(parse_listen_address("127.0.0.1:0").is_ok());
    assert!(parse_listen_address("nonsense").is_err());
}

/// The base URL must be a plain http(s) origin.
#[test]
fn base_url_must_be_an_origin() {
    assert_eq!(
        parse_base_url("https://cloud.mongodb.com/").expect("ok"),
        DEFAULT_BASE_URL
    );
    assert!(parse_base_url("ftp://x").is_err());
    assert!(parse_base_url("https://a/b").is_err());
    assert!(parse_base_url("https://user@host").is_err());
}

/// Test org ids: `n` distinct valid ids.
fn org_ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{:024x}", 0x5f1b_0000 + i * 7919))
        .collect()
}

/// Two replicas started with `--shard.count 2` and indexes 0 and 1 export every org of the
/// same configuration exactly once between them.
#[test]
fn two_shards_export_each_org_exactly_once() {
    let ids = org_ids(60);
    let list = ids.join(",");
    let shard = |i: &str| -> Vec<String> {
        let f = flags(&[
            "--atlas.org-id",
            &list,
            "--shard.count",
            "2",
            "--shard.index",
            i,
        ]);
        Config::from_flags(&f, &sa_env())
            .expect("valid")
            .orgs
            .into_iter()
            .map(|o| o.id)
            .collect()
    };
    let (zero, one) = (shard("0"), shard("1"));
    assert!(!zero.is_empty() && !one.is_empty());
    let mut all: Vec<String> = zero.iter().chain(&one).cloned().collect();
    all.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(all, want, "every org once, none twice");
}

/// A shard index not below the shard count is refused with one line naming the flag.
#[test]
fn shard_index_out_of_range_names_the_flag() {
    let e = config_err(
        &[
            "--atlas.org-id",
            &org_ids(1)[0],
            "--shard.count",
            "3",
            "--shard.index",
            "3",
        ],
        &sa_env(),
    );
    assert!(e.starts_with("--shard.index:"), "{e}");
    assert!(!e.contains('\n'));
}

/// `controls:` in the YAML file is read, and a bad regex there is refused naming its key.
#[test]
fn yaml_controls_are_read_and_validated() {
    let dir = temp_dir("config");
    let path = dir.join("config.yml");
    let org = &org_ids(1)[0];
    let write = |controls: &str| {
        std::fs::write(
            &path,
            format!(
                "orgs:\n  - id: {org}\n    queries:\n      - name: clusters\n        group_by: clusters\n        controls:\n{controls}"
            ),
        )
        .expect("write");
    };
    write(
        "          deny: {cluster_name: 'tmp-.*'}\n          top: 20\n          min_usd: 1.5\n          max_series: 5000\n",
    );
    let f = flags(&["--config.file", path.to_str().expect("utf-8 path")]);
    let cfg = Config::from_flags(&f, &sa_env()).expect("valid");
    let c = &cfg.orgs[0].queries[0].controls;
    assert!(!c.is_empty());
    assert_eq!(c.max_series(), Some(5000));
    write("          deny: {cluster_name: 'tmp-('}\n");
    let e = Config::from_flags(&f, &sa_env())
        .expect_err("refused")
        .to_string();
    assert!(
        e.starts_with("orgs[0].queries[0].controls.deny.cluster_name:"),
        "{e}"
    );
    write("          nope: 1\n");
    let e = Config::from_flags(&f, &sa_env())
        .expect_err("refused")
        .to_string();
    assert!(e.contains("nope"), "{e}");
}

/// `--cost.tag-labels` (or its variable, comma-separated) and `tag_labels:` in the file give
/// the tag labels; none by default; a collision names both keys; giving both is refused.
#[test]
fn tag_labels_come_from_the_flag_or_the_file_once() {
    let none = Config::from_flags(&flags(&["--atlas.org-id", ORG]), &sa_env()).expect("valid");
    assert!(none.tag_labels.is_empty());
    let cfg = Config::from_flags(
        &flags(&[
            "--atlas.org-id",
            ORG,
            "--cost.tag-labels",
            "team,cost-center",
        ]),
        &sa_env(),
    )
    .expect("valid");
    assert_eq!(cfg.tag_labels.names(), ["tag_team", "tag_cost_center"]);
    let e = config_err(
        &[
            "--atlas.org-id",
            ORG,
            "--cost.tag-labels",
            "cost-center,cost_center",
        ],
        &sa_env(),
    );
    assert!(
        e.starts_with("--cost.tag-labels: the tag keys \"cost-center\" and \"cost_center\""),
        "{e}"
    );
    let e = config_err(
        &["--atlas.org-id", ORG, "--cost.tag-labels", "team,,env"],
        &sa_env(),
    );
    assert!(e.starts_with("--cost.tag-labels: an empty tag key"), "{e}");

    let dir = temp_dir("config");
    let path = dir.join("tags.yml");
    std::fs::write(
        &path,
        format!(
            "tag_labels: [env, team]\norgs:\n  - id: {ORG}\nbudgets:\n  - {{name: web, amount_usd: 5, scope: {{tag_team: web}}}}\n"
        ),
    )
    .expect("write");
    let file = path.to_str().expect("utf-8 path");
    let cfg = Config::from_flags(&flags(&["--config.file", file]), &sa_env()).expect("valid");
    assert_eq!(cfg.tag_labels.names(), ["tag_env", "tag_team"]);
    assert_eq!(cfg.budgets[0].query, "clusters");
    let e = config_err(
        &["--config.file", file, "--cost.tag-labels", "team"],
        &sa_env(),
    );
    assert!(e.starts_with("tag_labels: "), "{e}");
}

/// The builder starts from the flags' defaults: a built configuration equals the one the
/// command line gives with only an org id, field by field.
#[test]
fn builder_defaults_are_the_flag_defaults() {
    let parsed = Config::from_flags(&flags(&["--atlas.org-id", ORG]), &sa_env()).expect("valid");
    let built = Config::builder(DEFAULT_BASE_URL)
        .org(ORG, parsed.orgs[0].credentials.clone())
        .build();
    assert_eq!(
        built.listen,
        parse_listen_address(DEFAULT_LISTEN_ADDRESS).expect("valid")
    );
    assert_eq!(
        (&built.telemetry_path, &built.base_url, &built.orgs),
        (&parsed.telemetry_path, &parsed.base_url, &parsed.orgs)
    );
    assert_eq!(
        (
            built.refresh_interval,
            built.concurrency,
            built.request_timeout,
            built.query_timeout,
            built.poll_interval,
            built.requests_per_minute,
            built.max_response_bytes,
        ),
        (
            parsed.refresh_interval,
            parsed.concurrency,
            parsed.request_timeout,
            parsed.query_timeout,
            parsed.poll_interval,
            parsed.requests_per_minute,
            parsed.max_response_bytes,
        )
    );
    assert!(built.resolver.is_none() && built.web.is_none() && built.budgets.is_empty());
}

/// Each builder setter changes its field only; orgs accumulate in the order given.
#[test]
fn builder_sets_only_what_it_is_told() {
    let creds = Credentials::ApiKey {
        public_key: "pub".to_owned(),
        private_key: Secret::new("priv"),
    };
    let other = "aaaaaaaaaaaaaaaaaaaaaaaa";
    let services = QuerySpec::defaults(1).swap_remove(0);
    let cfg = Config::builder("http://127.0.0.1:1")
        .org(ORG, creds.clone())
        .org_with_queries(other, creds, vec![services.clone()])
        .listen("127.0.0.1:0".parse().expect("addr"))
        .telemetry_path("/costs")
        .refresh_interval(Duration::from_millis(300))
        .concurrency(2)
        .request_timeout(Duration::from_secs(1))
        .query_timeout(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(20))
        .requests_per_minute(60_000)
        .max_response_bytes(1024)
        .build();
    let ids: Vec<_> = cfg.orgs.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, [ORG, other]);
    assert_eq!(
        cfg.orgs[0].queries,
        QuerySpec::defaults(crate::cli::DEFAULT_MONTHS)
    );
    assert_eq!(cfg.orgs[1].queries, [services]);
    assert_eq!(cfg.base_url, "http://127.0.0.1:1");
    assert_eq!(cfg.listen.port(), 0);
    assert_eq!(cfg.telemetry_path, "/costs");
    assert_eq!(
        (
            cfg.refresh_interval,
            cfg.concurrency,
            cfg.requests_per_minute
        ),
        (Duration::from_millis(300), 2, 60_000)
    );
    assert_eq!(
        (cfg.request_timeout, cfg.query_timeout, cfg.poll_interval),
        (
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_millis(20)
        )
    );
    assert_eq!(cfg.max_response_bytes, 1024);
}

/// An error stays one line when the file puts a newline into it (a variable name, a label
/// key): the control characters are written as escapes (found by the `config_yaml` fuzz
/// target).
#[test]
fn an_error_with_a_newline_from_the_file_stays_one_line() {
    let dir = temp_dir("one-line");
    let path = dir.join("c.yml");
    std::fs::write(
        &path,
        format!(
            "orgs:\n  - id: {ORG}\n    credentials: {{client_id: x, client_secret_env: \"A\\nB\"}}\n"
        ),
    )
    .expect("write");
    let msg = config_err(&["--config.file", path.to_str().expect("utf-8")], &sa_env());
    assert!(!msg.contains('\n'), "{msg:?}");
    assert!(
        msg.starts_with("orgs[0].credentials.client_secret_env:") && msg.contains("A\\nB"),
        "{msg}"
    );
}

/// `--storage.path` is off by default, taken as given, and the last one counts when given
/// twice (the container image passes one); an empty path is refused by the parser, naming
/// the flag.
#[test]
fn storage_path_is_optional_and_the_last_one_counts() {
    let off = Config::from_flags(&flags(&["--atlas.org-id", ORG]), &sa_env()).expect("valid");
    assert_eq!(off.storage_path, None);
    let twice = flags(&[
        "--atlas.org-id",
        ORG,
        "--storage.path",
        "/var/lib/atlas-cost-exporter",
        "--storage.path",
        "/data/state",
    ]);
    let cfg = Config::from_flags(&twice, &sa_env()).expect("valid");
    assert_eq!(
        cfg.storage_path.as_deref(),
        Some(std::path::Path::new("/data/state"))
    );
    let refused = Cli::try_parse_from(["atlas-cost-exporter", "--storage.path", ""])
        .expect_err("an empty path")
        .to_string();
    assert!(refused.contains("--storage.path"), "{refused}");
}

/// With shards, the orgs that other shards hold with their invoice source on are known to
/// this one (a paying org here leaves their invoices out: their own shard reports them); an
/// org whose invoice source is off is not among the reporters, wherever it is.
#[test]
fn invoice_reporters_span_every_shard_and_only_orgs_running_the_source() {
    let ids: Vec<String> = (1..40u64).map(|i| format!("{:024x}", i * 7919)).collect();
    let here = ids
        .iter()
        .find(|id| crate::model::Shard::of(id, 2) == 0)
        .expect("an org of shard 0");
    let there = ids
        .iter()
        .find(|id| crate::model::Shard::of(id, 2) == 1)
        .expect("an org of shard 1");
    let dir = temp_dir("invoice-reporters");
    let file = dir.join("orgs.yml");
    let off = ids
        .iter()
        .find(|id| crate::model::Shard::of(id, 2) == 1 && *id != there)
        .expect("another org of shard 1");
    std::fs::write(
        &file,
        format!(
            "orgs:\n  - id: {here}\n    invoices: true\n  - id: {there}\n    invoices: true\n  - id: {off}\n"
        ),
    )
    .expect("written");
    let shard0 = Config::from_flags(
        &flags(&[
            "--config.file",
            file.to_str().expect("utf-8"),
            "--shard.count",
            "2",
            "--shard.index",
            "0",
        ]),
        &sa_env(),
    )
    .expect("valid");
    assert_eq!(
        shard0
            .orgs
            .iter()
            .map(|o| o.id.as_str())
            .collect::<Vec<_>>(),
        [here.as_str()]
    );
    assert_eq!(
        shard0.invoices_elsewhere,
        std::collections::BTreeSet::from([there.clone()])
    );
    assert_eq!(
        shard0.invoice_reporters(),
        std::collections::BTreeSet::from([here.clone(), there.clone()])
    );
}
