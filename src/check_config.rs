//! `atlas-cost-exporter check-config`: the start-up's validation run alone, like
//! `promtool check config`. It validates the flags, the environment and the configuration
//! file with [`Config::at_startup`], exactly as a start-up does, and describes what would run:
//! the shard, each org of it with its credentials' kind and its queries, the budgets, the tag
//! labels, the web configuration and the state directory. It sends nothing to Atlas and binds no
//! port.
//!
//! The state directory (`--storage.path`) is checked as a start-up opens it, and left as it
//! was ([`crate::state::inspect`]); each org's kept file is read, never set aside, and the
//! report says what a start-up would serve of it. A directory locked by a running exporter is
//! reported, not refused.
//!
//! The binary prints the report and exits 0, or prints [`Refusal::line`] (the start-up's own
//! error line) and exits 2.

use std::fmt::Write as _;

use crate::cli::Flags;
use crate::config::{Config, ConfigError, Credentials, Env, GroupBy, QuerySpec, ResultFormat};
use crate::model::Shard;
use crate::state::{ConfiguredOrg, KeptFile, KeptInvoices, StateError};

/// The one line a start-up prints before it exits 2 on an invalid configuration.
pub fn invalid_line(e: &ConfigError) -> String {
    format!("atlas-cost-exporter: invalid configuration: {e}")
}

/// The one line a start-up prints before it exits 2 because the state directory cannot be
/// used.
pub fn state_line(e: &StateError) -> String {
    format!("atlas-cost-exporter: {e}")
}

/// Why a start-up with the same flags and environment would stop.
#[derive(Debug)]
pub enum Refusal {
    /// The flags, the environment or the YAML.
    Config(ConfigError),
    /// The state directory.
    State(StateError),
}

impl Refusal {
    /// The start-up's own line for it.
    pub fn line(&self) -> String {
        match self {
            Refusal::Config(e) => invalid_line(e),
            Refusal::State(e) => state_line(e),
        }
    }
}

impl From<ConfigError> for Refusal {
    fn from(e: ConfigError) -> Refusal {
        Refusal::Config(e)
    }
}

/// Validates `flags` and `env` as a start-up would, checks the state directory as a start-up
/// opens it (leaving it as it was), and describes what would run.
///
/// # Errors
/// The start-up's [`ConfigError`], naming the flag, variable or key that is wrong, or its
/// [`StateError`], naming the directory.
pub fn check(flags: &Flags, env: &dyn Env) -> Result<String, Refusal> {
    let config = Config::at_startup(flags, env)?;
    let shard = crate::config::shard(flags)?;
    // The same validation over every shard, to say how many orgs the others hold.
    let mut unsharded = flags.clone();
    unsharded.shard_count = 1;
    unsharded.shard_index = 0;
    unsharded.shard_pod_name = None;
    let total = Config::at_startup(&unsharded, env)?.orgs.len();
    let mut out = report(&config, flags, shard, total);
    match &config.storage_path {
        Some(dir) => state_report(&mut out, dir, &config).map_err(Refusal::State)?,
        None => out.push_str("state: none (in memory only)\n"),
    }
    Ok(out)
}

/// The state directory's lines: what it is, then each org's kept file.
fn state_report(
    out: &mut String,
    dir: &std::path::Path,
    config: &Config,
) -> Result<(), StateError> {
    let reporters = config.invoice_reporters();
    let orgs: Vec<ConfiguredOrg<'_>> = config
        .orgs
        .iter()
        .map(|o| ConfiguredOrg {
            id: &o.id,
            queries: &o.queries,
            invoices: o.invoices.then(|| {
                crate::state::invoice_fingerprint(&o.id, &config.sku_controls, &reporters)
            }),
        })
        .collect();
    let found = crate::state::inspect(dir, &orgs, &config.tag_labels)?;
    let _ = writeln!(
        out,
        "state: {} ({}{})",
        dir.display(),
        if found.exists {
            "exists, writable"
        } else {
            "missing: a start-up creates it"
        },
        if found.locked {
            "; locked by a running exporter: a start-up beside it is refused"
        } else {
            ""
        }
    );
    for kept in &found.orgs {
        match kept {
            KeptFile::Missing { org_id } => {
                let _ = writeln!(out, "  org {org_id}: no kept state");
            }
            KeptFile::Good {
                org_id,
                bytes,
                written_at,
                served,
                series,
                changed,
                invoices,
            } => {
                let when = written_at.map_or_else(
                    || "an unknown time".to_owned(),
                    |t| humantime::format_rfc3339_seconds(t).to_string(),
                );
                let _ = write!(
                    out,
                    "  org {org_id}: kept state of {when}, {bytes} bytes: {served} {} served at \
                     start-up ({series} series)",
                    if *served == 1 { "query" } else { "queries" }
                );
                if *changed > 0 {
                    let _ = write!(
                        out,
                        "; {changed} kept under a configuration that has changed, not served"
                    );
                }
                match invoices {
                    KeptInvoices::None => {}
                    KeptInvoices::Served { skus } => {
                        let _ = write!(out, "; invoices: {skus} SKU series served at start-up");
                    }
                    KeptInvoices::Changed => out.push_str(
                        "; invoices: kept under another invoice configuration, not served",
                    ),
                    KeptInvoices::Off => {
                        out.push_str("; invoices: kept, not served (the source is off)");
                    }
                    KeptInvoices::Bad { reason } => {
                        let _ = write!(
                            out,
                            "; invoices: the kept part cannot be used, a start-up sets a copy \
                             aside: {reason}"
                        );
                    }
                }
                out.push('\n');
            }
            KeptFile::Bad { org_id, reason } => {
                let _ = writeln!(
                    out,
                    "  org {org_id}: kept state cannot be used, a start-up sets it aside: {reason}"
                );
            }
        }
    }
    Ok(())
}

/// The report of a valid configuration: one line per fact, then one per org and budget.
fn report(config: &Config, flags: &Flags, shard: Shard, total_orgs: usize) -> String {
    let mut out = String::from("atlas-cost-exporter: configuration is valid\n");
    let _ = writeln!(
        out,
        "shard: {} of {} (index {}, count {})",
        shard.index + 1,
        shard.count,
        shard.index,
        shard.count
    );
    if flags.demo {
        let _ = writeln!(
            out,
            "demo: the built-in simulator's orgs that this shard owns, with the default queries{}",
            if flags.config_file.is_some() {
                ""
            } else {
                "; the sample budget demo-clusters"
            }
        );
    } else {
        let _ = writeln!(
            out,
            "orgs: {} on this shard, {} in the configuration",
            config.orgs.len(),
            total_orgs
        );
        for org in &config.orgs {
            let kind = match org.credentials {
                Credentials::ServiceAccount { .. } => "service account",
                Credentials::ApiKey { .. } => "API key",
            };
            let queries: Vec<String> = org.queries.iter().map(describe_query).collect();
            let n = org.queries.len();
            let _ = writeln!(
                out,
                "  org {}: {kind}; {n} {}: {}",
                org.id,
                if n == 1 { "query" } else { "queries" },
                queries.join(", ")
            );
        }
    }
    let _ = writeln!(out, "budgets: {}", config.budgets.len());
    for b in &config.budgets {
        let _ = writeln!(
            out,
            "  {{{}}}: {} USD a month over query {}{}",
            b.labels(),
            usd(b.amount_micros),
            b.query,
            match b.matchers.len() {
                0 => String::new(),
                n => format!(", {n} label matchers"),
            }
        );
    }
    let tags = &config.tag_labels;
    if tags.is_empty() {
        out.push_str("tag labels: none\n");
    } else {
        let pairs: Vec<String> = tags
            .keys()
            .iter()
            .zip(tags.names())
            .map(|(k, n)| format!("{k} as {n}"))
            .collect();
        let _ = writeln!(out, "tag labels: {}", pairs.join(", "));
    }
    let web = config.web.as_deref();
    let _ = writeln!(
        out,
        "listen: {} ({}, {}), metrics on {}",
        config.listen,
        if web.and_then(|w| w.tls()).is_some() {
            "TLS"
        } else {
            "plain HTTP"
        },
        if web.and_then(|w| w.basic_auth()).is_some() {
            "basic auth"
        } else {
            "no authentication"
        },
        config.telemetry_path
    );
    let _ = writeln!(
        out,
        "atlas: {}, refresh every {}, {} queries at once, {} requests a minute per org",
        config.base_url,
        humantime::format_duration(config.refresh_interval),
        config.concurrency,
        config.requests_per_minute
    );
    out
}

/// `name (grouping, N months, format)`.
fn describe_query(q: &QuerySpec) -> String {
    let group = match q.group_by {
        GroupBy::Ungrouped => "ungrouped".to_owned(),
        g => format!("by {}", g.as_str()),
    };
    let format = match q.format {
        ResultFormat::Json => "json",
        ResultFormat::Csv => "csv",
    };
    let months = if q.months == 1 { "month" } else { "months" };
    format!("{} ({group}, {} {months}, {format})", q.name, q.months)
}

/// Micro-dollars as a decimal amount (`25000`, `12.5`).
fn usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (whole, frac) = (abs / 1_000_000, abs % 1_000_000);
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let frac = format!("{frac:06}");
        format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::env;

    const ORG: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";

    fn flags(args: &[&str]) -> Flags {
        let argv = ["atlas-cost-exporter", "check-config"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Some(Command::CheckConfig(a)) => a.flags,
            other => panic!("not check-config: {other:?}"),
        }
    }

    fn sa_env() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (env::CLIENT_ID, "mdb_sa_id_x"),
            (env::CLIENT_SECRET, "s3cr3t"),
        ])
    }

    /// The report names the shard, each org with its credentials' kind and queries, and the
    /// refresh settings; the secret itself appears nowhere.
    #[test]
    fn report_lists_shard_orgs_queries_and_settings_without_secrets() {
        let report = check(&flags(&["--atlas.org-id", ORG]), &sa_env()).expect("valid");
        assert!(
            report.contains("shard: 1 of 1 (index 0, count 1)"),
            "{report}"
        );
        assert!(report.contains("orgs: 1 on this shard, 1 in the configuration"));
        assert!(report.contains(&format!(
            "  org {ORG}: service account; 3 queries: services (ungrouped, 3 months, json), \
             projects (by projects, 3 months, json), clusters (by clusters, 3 months, json)"
        )));
        assert!(report.contains("budgets: 0\n") && report.contains("tag labels: none\n"));
        assert!(report.contains("listen: 0.0.0.0:9879 (plain HTTP, no authentication)"));
        assert!(report.contains("refresh every 1h"), "{report}");
        assert!(
            report.contains("state: none (in memory only)\n"),
            "{report}"
        );
        assert!(!report.contains("s3cr3t"), "{report}");
    }

    /// `--shard.pod-name` gives the shard from the pod's ordinal, and the report counts the
    /// orgs the other shards hold.
    #[test]
    fn pod_name_ordinal_is_the_shard_and_other_shards_orgs_are_counted() {
        let ids: Vec<String> = (0..12u64)
            .map(|i| format!("{:024x}", i * 7919 + 1))
            .collect();
        let mut args = vec!["--shard.count", "3", "--shard.pod-name", "exporter-2"];
        for id in &ids {
            args.extend(["--atlas.org-id", id.as_str()]);
        }
        let report = check(&flags(&args), &sa_env()).expect("valid");
        assert!(
            report.contains("shard: 3 of 3 (index 2, count 3)"),
            "{report}"
        );
        let mine: Vec<&String> = ids.iter().filter(|id| Shard::of(id, 3) == 2).collect();
        assert!(!mine.is_empty() && mine.len() < ids.len());
        assert!(report.contains(&format!(
            "orgs: {} on this shard, 12 in the configuration",
            mine.len()
        )));
        for id in &ids {
            assert_eq!(report.contains(id.as_str()), mine.contains(&id), "{id}");
        }
    }

    /// An invalid configuration gives the start-up's error, and the line the binary prints
    /// is the start-up's.
    #[test]
    fn invalid_configuration_is_the_startup_error() {
        let e = check(&flags(&["--atlas.org-id", "abc"]), &sa_env()).expect_err("refused");
        assert_eq!(
            e.line(),
            "atlas-cost-exporter: invalid configuration: --atlas.org-id: \"abc\" is not an \
             Atlas org id (24 lowercase hex characters)"
        );
    }

    /// A fresh directory for one test (removed first if a previous run left it).
    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ace-check-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn check_state(dir: &std::path::Path, orgs: &[&str]) -> Result<String, Refusal> {
        let mut args = vec!["--storage.path", dir.to_str().expect("utf-8")];
        for o in orgs {
            args.extend(["--atlas.org-id", o]);
        }
        check(&flags(&args), &sa_env())
    }

    /// A missing state directory is reported as one a start-up creates, and is not left
    /// behind: neither it nor the parents the check created.
    #[test]
    fn missing_state_directory_is_reported_and_not_created() {
        let root = scratch("missing");
        let dir = root.join("a").join("b");
        let report = check_state(&dir, &[ORG]).expect("valid");
        assert!(
            report.contains(&format!(
                "state: {} (missing: a start-up creates it)\n  org {ORG}: no kept state\n",
                dir.display()
            )),
            "{report}"
        );
        assert!(!root.exists(), "the check created {}", root.display());
    }

    /// Each org's kept file is described as a start-up would use it: a good one with the
    /// queries it serves and those kept under a changed configuration, a missing one, and a
    /// bad one with its reason; the bad file stays where it is (a start-up sets it aside, the
    /// check does not), and the directory holds exactly what it held.
    #[test]
    fn kept_files_are_described_and_never_set_aside() {
        use crate::state::{KeptStatus, OrgState, QueryState, Store, query_fingerprint};
        const GOOD: &str = "0123456789abcdef01234567";
        const BAD: &str = "76543210fedcba9876543210";
        let dir = scratch("kept");
        let config = Config::at_startup(
            &flags(&[
                "--atlas.org-id",
                GOOD,
                "--atlas.org-id",
                BAD,
                "--atlas.org-id",
                ORG,
            ]),
            &sa_env(),
        )
        .expect("valid");
        let specs = &config.orgs[0].queries;
        let written =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
        let kept = |i: usize, fingerprint: u64| QueryState {
            name: specs[i].name.clone(),
            fingerprint,
            status: KeptStatus {
                up: true,
                last_success: Some(written),
                last_attempt: Some(written),
                last_error: None,
                invalid_rows: 0,
                shed: 0,
            },
            window: None,
            series: std::sync::Arc::new(Vec::new()),
            closed: Vec::new(),
        };
        let tags = crate::series::TagLabels::default();
        {
            let store = Store::open(&dir).expect("opens");
            store
                .write(&OrgState {
                    org_id: GOOD.to_owned(),
                    written_at: Some(written),
                    queries: vec![
                        kept(0, query_fingerprint(&specs[0], &tags)),
                        kept(1, query_fingerprint(&specs[1], &tags) ^ 1),
                    ],
                    ..OrgState::default()
                })
                .expect("written");
        }
        let bad_file = dir.join(crate::state::file_name(BAD));
        std::fs::write(&bad_file, b"not a state file").expect("written");
        let listing = |d: &std::path::Path| {
            let mut names: Vec<String> = std::fs::read_dir(d)
                .expect("lists")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let before = listing(&dir);
        let report = check_state(&dir, &[GOOD, BAD, ORG]).expect("valid");
        let good_line = format!("  org {GOOD}: kept state of 2026-09-21T");
        assert!(
            report.contains(&format!("state: {} (exists, writable)\n", dir.display())),
            "{report}"
        );
        let good = report
            .lines()
            .find(|l| l.starts_with(&good_line))
            .unwrap_or_else(|| panic!("{report}"));
        assert!(
            good.ends_with(
                ": 1 query served at start-up (0 series); 1 kept under a configuration that has \
                 changed, not served"
            ),
            "{good}"
        );
        let bad = report
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "  org {BAD}: kept state cannot be used, a start-up sets it aside: "
                ))
            })
            .unwrap_or_else(|| panic!("{report}"));
        assert!(bad.len() > 80, "a reason: {bad}");
        assert!(
            report.contains(&format!("  org {ORG}: no kept state\n")),
            "{report}"
        );
        assert_eq!(listing(&dir), before, "the check changed the directory");
        assert_eq!(
            std::fs::read(&bad_file).expect("still there"),
            b"not a state file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A kept invoice part is described as a start-up would use it: served with its SKU
    /// series under the same invoice configuration, not served under other SKU controls or
    /// with the source off.
    #[test]
    fn kept_invoice_part_is_described_as_a_startup_would_use_it() {
        use crate::invoice::{InvoiceData, SkuKey, SkuSeries};
        use crate::state::{InvoiceState, KeptSourceStatus, OrgState, Store, invoice_fingerprint};
        let dir = scratch("invoices");
        let on = |extra: &[&str]| {
            let mut args = vec![
                "--atlas.org-id",
                ORG,
                "--invoices.enabled",
                "--storage.path",
                dir.to_str().expect("utf-8"),
            ];
            args.extend(extra);
            flags(&args)
        };
        let config = Config::at_startup(&on(&[]), &sa_env()).expect("valid");
        let sku = SkuSeries {
            key: SkuKey {
                org_id: ORG.to_owned(),
                project_id: None,
                project_name: None,
                cluster_name: None,
                sku: "ATLAS_AWS_INSTANCE_M10".to_owned(),
                unit: None,
                cloud_provider: None,
                tags: Vec::new(),
            },
            month_to_date_micros: 1_000_000,
            quantity_nanos: 0,
            last_day_micros: 0,
        };
        {
            let store = Store::open(&dir).expect("opens");
            store
                .write(&OrgState {
                    org_id: ORG.to_owned(),
                    invoices: Some(InvoiceState {
                        fingerprint: invoice_fingerprint(
                            ORG,
                            &config.sku_controls,
                            &std::collections::BTreeSet::from([ORG.to_owned()]),
                        ),
                        status: KeptSourceStatus::default(),
                        data: Some(std::sync::Arc::new(InvoiceData {
                            skus: vec![sku],
                            ..InvoiceData::default()
                        })),
                        closed: None,
                    }),
                    ..OrgState::default()
                })
                .expect("written");
        }
        let line = |report: String| {
            report
                .lines()
                .find(|l| l.starts_with(&format!("  org {ORG}: kept state of ")))
                .unwrap_or_else(|| panic!("{report}"))
                .to_owned()
        };
        let served = line(check(&on(&[]), &sa_env()).expect("valid"));
        assert!(
            served.ends_with("; invoices: 1 SKU series served at start-up"),
            "{served}"
        );
        let changed = line(check(&on(&["--invoices.sku-top", "1"]), &sa_env()).expect("valid"));
        assert!(
            changed.ends_with("; invoices: kept under another invoice configuration, not served"),
            "{changed}"
        );
        let off = line(check_state(&dir, &[ORG]).expect("valid"));
        assert!(
            off.ends_with("; invoices: kept, not served (the source is off)"),
            "{off}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A directory locked by a running exporter is reported, and the configuration is still
    /// valid; the running exporter keeps its lock.
    #[test]
    fn a_locked_directory_is_reported_not_refused() {
        let dir = scratch("locked");
        let running = crate::state::Store::open(&dir).expect("opens");
        let report = check_state(&dir, &[ORG]).expect("valid");
        assert!(
            report.contains(&format!(
                "state: {} (exists, writable; locked by a running exporter: a start-up beside \
                 it is refused)\n",
                dir.display()
            )),
            "{report}"
        );
        let second = crate::state::Store::open(&dir).expect_err("still locked");
        assert!(matches!(second, StateError::Locked { .. }), "{second}");
        drop(running);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A state path that a start-up cannot use is refused with the start-up's own line: a
    /// file where the directory should be, and a directory under a file.
    #[test]
    fn unusable_state_path_is_refused_with_the_startup_line() {
        let root = scratch("unusable");
        std::fs::create_dir_all(&root).expect("created");
        let file = root.join("file");
        std::fs::write(&file, b"x").expect("written");
        for path in [file.clone(), file.join("under")] {
            let refused = check_state(&path, &[ORG]).expect_err("refused");
            let startup = crate::state::Store::open(&path).expect_err("refused too");
            assert!(matches!(refused, Refusal::State(_)), "{refused:?}");
            assert_eq!(refused.line(), state_line(&startup));
            assert!(
                refused.line().starts_with(&format!(
                    "atlas-cost-exporter: --storage.path {}: ",
                    path.display()
                )),
                "{}",
                refused.line()
            );
        }
        assert_eq!(std::fs::read(&file).expect("untouched"), b"x");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Amounts print as exact decimals.
    #[test]
    fn amounts_print_as_exact_decimals() {
        assert_eq!(usd(25_000_000_000), "25000");
        assert_eq!(usd(12_500_000), "12.5");
        assert_eq!(usd(1), "0.000001");
        assert_eq!(usd(-1_250_000), "-1.25");
    }
}
