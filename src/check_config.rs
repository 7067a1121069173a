//! `atlas-cost-exporter check-config`: the start-up's validation run alone, like
//! `promtool check config`. It validates the flags, the environment and the configuration
//! file with [`Config::at_startup`], exactly as a start-up does, and describes what would run:
//! the shard, each org of it with its credentials' kind and its queries, the budgets, the tag
//! labels, the web configuration and the state directory. It sends nothing to Atlas and binds no port.
//!
//! The binary prints the report and exits 0, or prints [`invalid_line`] (the start-up's own
//! error line) and exits 2.

use std::fmt::Write as _;

use crate::cli::Flags;
use crate::config::{Config, ConfigError, Credentials, Env, GroupBy, QuerySpec, ResultFormat};
use crate::model::Shard;

/// The one line a start-up prints before it exits 2 on an invalid configuration.
pub fn invalid_line(e: &ConfigError) -> String {
    format!("atlas-cost-exporter: invalid configuration: {e}")
}

/// Validates `flags` and `env` as a start-up would and describes what would run.
///
/// # Errors
/// The start-up's [`ConfigError`], naming the flag, variable or key that is wrong.
pub fn check(flags: &Flags, env: &dyn Env) -> Result<String, ConfigError> {
    let config = Config::at_startup(flags, env)?;
    let shard = crate::config::shard(flags)?;
    // The same validation over every shard, to say how many orgs the others hold.
    let mut unsharded = flags.clone();
    unsharded.shard_count = 1;
    unsharded.shard_index = 0;
    unsharded.shard_pod_name = None;
    let total = Config::at_startup(&unsharded, env)?.orgs.len();
    Ok(report(&config, flags, shard, total))
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
    match &config.storage_path {
        Some(dir) => {
            let _ = writeln!(out, "state: {}", dir.display());
        }
        None => out.push_str("state: none (in memory only)\n"),
    }
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
        let with_state = check(
            &flags(&["--atlas.org-id", ORG, "--storage.path", "/var/lib/x"]),
            &sa_env(),
        )
        .expect("valid");
        assert!(with_state.contains("state: /var/lib/x\n"), "{with_state}");
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
            invalid_line(&e),
            "atlas-cost-exporter: invalid configuration: --atlas.org-id: \"abc\" is not an \
             Atlas org id (24 lowercase hex characters)"
        );
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
