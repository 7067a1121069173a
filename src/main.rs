//! The `atlas-cost-exporter` binary: parse the command line, set up logging, run the exporter
//! or the `simulate` subcommand (whose plain arguments become the simulator's configuration
//! here, so the command line does not import the simulator).

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use atlas_cost_exporter::cli::{
    Cli, Command, Flags, LogFormat, LogLevel, SimCsvLayout, SimNotReady, SimRowKeys, SimulateArgs,
};
use atlas_cost_exporter::config::{Config, ProcessEnv, env};
use atlas_cost_exporter::simulator::{CsvLayout, NotReady, RowKeys, SimConfig, Simulator};

fn init_logging(flags: &Flags) {
    let level = match flags.log_level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    // Our own crate at the chosen level; dependencies only from warn up.
    let filter = EnvFilter::new(format!("warn,atlas_cost_exporter={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match flags.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Logfmt => builder
            .event_format(tracing_logfmt::EventsFormatter::default())
            .init(),
    }
}

/// The simulator configuration `simulate`'s arguments describe (demo credentials).
fn simulator_config(args: &SimulateArgs) -> SimConfig {
    let base = match args.series {
        Some(target) => SimConfig::with_series(target),
        None => SimConfig {
            orgs: args.orgs,
            projects_per_org: args.projects,
            clusters_per_project: args.clusters,
            ..SimConfig::default()
        },
    };
    SimConfig {
        seed: args.seed,
        months: args.months,
        polls_before_ready: args.polls_before_ready,
        not_ready: match args.not_ready {
            SimNotReady::Envelope => NotReady::Envelope,
            SimNotReady::Timeout => NotReady::Timeout(args.not_ready_delay),
            SimNotReady::Close => NotReady::Close,
        },
        ignore_envelope: args.ignore_envelope,
        max_page_size: args.max_page_size.max(1),
        flex_clusters: !args.no_flex_clusters,
        flex_in_clusters_listing: args.flex_in_clusters_listing,
        deleted_clusters: !args.no_deleted_clusters,
        deleted_projects: !args.no_deleted_projects,
        tags: !args.no_tags,
        row_keys: match args.row_keys {
            SimRowKeys::ProjectId => RowKeys::ProjectId,
            SimRowKeys::GroupId => RowKeys::GroupId,
            SimRowKeys::Unknown => RowKeys::Unknown,
        },
        csv_layout: match args.csv_layout {
            SimCsvLayout::Extended => CsvLayout::Extended,
            SimCsvLayout::Spec => CsvLayout::Spec,
            SimCsvLayout::NoPreamble => CsvLayout::NoPreamble,
            SimCsvLayout::SpecExample => CsvLayout::SpecExample,
        },
        ..base
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.flags);
    if let Some(Command::Simulate(args)) = cli.command {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("simulate --listen {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(address = %args.listen, "Atlas simulator listening");
        let sim = Simulator::new(simulator_config(&args));
        return match sim
            .serve(listener, atlas_cost_exporter::shutdown_signal())
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("simulator: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let flags = &cli.flags;
    let config = if flags.demo {
        // The demo needs no org or credentials: the simulator provides both. A
        // --config.file still applies for its budgets; its orgs are replaced.
        let mut demo_flags = flags.clone();
        demo_flags.org_ids = vec!["000000000000000000000000".to_owned()];
        let env = std::collections::HashMap::from([
            (env::CLIENT_ID, "demo"),
            (env::CLIENT_SECRET, "demo"),
        ]);
        Config::from_flags(&demo_flags, &env).map(|c| (c, true))
    } else {
        Config::from_flags(flags, &ProcessEnv).map(|c| (c, false))
    };
    let (mut config, demo) = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("atlas-cost-exporter: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if demo {
        // Validated with the rest of the configuration above.
        let shard = atlas_cost_exporter::fleet::Shard::new(flags.shard_count, flags.shard_index)
            .unwrap_or_default();
        match atlas_cost_exporter::start_demo(&mut config, flags.months, &shard).await {
            Ok(addr) => {
                tracing::info!(simulator = %addr, "demo mode: exporting the built-in Atlas simulator")
            }
            Err(e) => {
                eprintln!("--demo: cannot start the simulator: {e}");
                return ExitCode::FAILURE;
            }
        }
        // A sample budget, so the budget gauges and alert show something; the budgets of an
        // explicit --config.file replace it.
        if flags.config_file.is_none() {
            config.budgets = atlas_cost_exporter::demo_budgets(&config.orgs);
        }
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("--web.listen-address {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    match atlas_cost_exporter::run(config, listener, atlas_cost_exporter::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("atlas-cost-exporter: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;

    fn simulate(args: &[&str]) -> SimulateArgs {
        let argv = ["atlas-cost-exporter", "simulate"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("simulate parses").command {
            Some(Command::Simulate(args)) => args,
            None => panic!("no subcommand"),
        }
    }

    /// `simulate` without arguments serves the demo's shape on 127.0.0.1:8080; `--series`
    /// overrides the shape and `--not-ready timeout` takes its delay.
    #[test]
    fn simulate_defaults_are_the_demo_and_series_overrides_the_shape() {
        let args = simulate(&[]);
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        let cfg = simulator_config(&args);
        assert_eq!(
            (cfg.orgs, cfg.projects_per_org, cfg.clusters_per_project),
            (2, 4, 3)
        );
        assert_eq!(cfg.not_ready, NotReady::Envelope);
        let cfg = simulator_config(&simulate(&[
            "--series",
            "100000",
            "--not-ready",
            "timeout",
            "--not-ready-delay",
            "5s",
        ]));
        assert!(cfg.orgs * cfg.projects_per_org * cfg.clusters_per_project * 72 >= 100_000);
        assert_eq!(cfg.not_ready, NotReady::Timeout(Duration::from_secs(5)));
    }

    /// The variant flags default to the documented rules and switch each one; a page size of
    /// 0 is served as 1.
    #[test]
    fn simulate_variant_flags_switch_each_rule() {
        let cfg = simulator_config(&simulate(&[]));
        assert!(cfg.flex_clusters && cfg.deleted_clusters && cfg.deleted_projects && cfg.tags);
        assert!(!cfg.flex_in_clusters_listing && !cfg.ignore_envelope);
        assert_eq!(
            (cfg.row_keys, cfg.csv_layout),
            (RowKeys::ProjectId, CsvLayout::Extended)
        );
        let cfg = simulator_config(&simulate(&[
            "--no-flex-clusters",
            "--flex-in-clusters-listing",
            "--no-deleted-clusters",
            "--no-deleted-projects",
            "--no-tags",
            "--ignore-envelope",
            "--max-page-size",
            "0",
            "--not-ready",
            "close",
            "--row-keys",
            "group-id",
            "--csv-layout",
            "spec-example",
        ]));
        assert!(!cfg.flex_clusters && !cfg.deleted_clusters && !cfg.deleted_projects);
        assert!(!cfg.tags && cfg.flex_in_clusters_listing && cfg.ignore_envelope);
        assert_eq!(cfg.max_page_size, 1);
        assert_eq!(cfg.not_ready, NotReady::Close);
        assert_eq!(
            (cfg.row_keys, cfg.csv_layout),
            (RowKeys::GroupId, CsvLayout::SpecExample)
        );
        for (arg, want) in [
            ("unknown", RowKeys::Unknown),
            ("project-id", RowKeys::ProjectId),
        ] {
            assert_eq!(
                simulator_config(&simulate(&["--row-keys", arg])).row_keys,
                want
            );
        }
        for (arg, want) in [
            ("spec", CsvLayout::Spec),
            ("no-preamble", CsvLayout::NoPreamble),
        ] {
            assert_eq!(
                simulator_config(&simulate(&["--csv-layout", arg])).csv_layout,
                want
            );
        }
    }

    /// An unknown simulate value is refused by the parser, naming the flag.
    #[test]
    fn unknown_simulate_value_is_refused() {
        let argv = ["atlas-cost-exporter", "simulate", "--row-keys", "nope"];
        let msg = Cli::try_parse_from(argv).expect_err("refused").to_string();
        assert!(msg.contains("--row-keys"), "{msg}");
    }
}
