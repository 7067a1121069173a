//! The `atlas-cost-exporter` binary: parse the command line, set up logging, run the exporter,
//! the `check-config` subcommand or the `simulate` subcommand (whose plain arguments become the simulator's configuration
//! here, so the command line does not import the simulator).

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use atlas_cost_exporter::check_config;
use atlas_cost_exporter::cli::{
    Cli, Command, Flags, LogFormat, LogLevel, SimClosedDescription, SimCsvLayout, SimNotReady,
    SimRowKeys, SimulateArgs,
};
use atlas_cost_exporter::config::{Config, ProcessEnv};
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
        nonce_ttl: args.nonce_ttl,
        nonce_stale_after: args.nonce_stale_after,
        nonce_forgotten_after: args.nonce_forgotten_after,
        unknown_nonce_stale: !args.unknown_nonce_fresh,
        spurious_stale_every: args.spurious_stale_every,
        shared_nonce: args.shared_nonce,
        invoices: atlas_cost_exporter::simulator::InvoiceVariants {
            shape: if args.invoice_single {
                atlas_cost_exporter::simulator::InvoiceShape::Single
            } else {
                atlas_cost_exporter::simulator::InvoiceShape::Paginated
            },
            multi_day: args.invoice_multi_day,
            without_cluster_name: args.invoice_without_cluster_name,
            tags: args.invoice_tags,
            linked_orgs: args.invoice_linked_orgs,
            closed_description: match args.invoice_closed_description {
                SimClosedDescription::Sku => atlas_cost_exporter::simulator::ClosedDescription::Sku,
                SimClosedDescription::SkuAndDetails => {
                    atlas_cost_exporter::simulator::ClosedDescription::SkuAndDetails
                }
                SimClosedDescription::Name => {
                    atlas_cost_exporter::simulator::ClosedDescription::Name
                }
            },
            today: None,
        },
        ..base
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.flags);
    if let Some(Command::CheckConfig(args)) = &cli.command {
        return match check_config::check(&args.flags, &ProcessEnv) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}", e.line());
                ExitCode::from(2)
            }
        };
    }
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
    let demo = flags.demo;
    let mut config = match Config::at_startup(flags, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", check_config::invalid_line(&e));
            return ExitCode::from(2);
        }
    };
    // Locked before the port is bound: a second process on the same directory is told so,
    // whatever else it shares with the first.
    let store = match atlas_cost_exporter::open_store(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}", check_config::state_line(&e));
            return ExitCode::from(2);
        }
    };
    if demo {
        // Validated with the rest of the configuration above.
        let shard = atlas_cost_exporter::config::shard(flags).unwrap_or_default();
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
    let shutdown = atlas_cost_exporter::shutdown_signal();
    match atlas_cost_exporter::run_with_store(config, store, listener, shutdown).await {
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
            other => panic!("not simulate: {other:?}"),
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

    /// The Digest nonce flags default to the simulator's defaults (five-minute nonces, no
    /// use limit, unknown nonces stale, no spurious stale, a new nonce per challenge) and set
    /// each rule.
    #[test]
    fn simulate_nonce_flags_set_each_digest_rule() {
        let cfg = simulator_config(&simulate(&[]));
        let default = SimConfig::default();
        assert_eq!(cfg.nonce_ttl, default.nonce_ttl);
        assert_eq!(
            (
                cfg.nonce_stale_after,
                cfg.nonce_forgotten_after,
                cfg.unknown_nonce_stale,
                cfg.spurious_stale_every,
                cfg.shared_nonce
            ),
            (None, None, true, None, false)
        );
        let cfg = simulator_config(&simulate(&[
            "--nonce-ttl",
            "2s",
            "--nonce-stale-after",
            "3",
            "--nonce-forgotten-after",
            "4",
            "--unknown-nonce-fresh",
            "--spurious-stale-every",
            "7",
            "--shared-nonce",
        ]));
        assert_eq!(cfg.nonce_ttl, Duration::from_secs(2));
        assert_eq!(
            (
                cfg.nonce_stale_after,
                cfg.nonce_forgotten_after,
                cfg.unknown_nonce_stale,
                cfg.spurious_stale_every,
                cfg.shared_nonce
            ),
            (Some(3), Some(4), false, Some(7), true)
        );
        let argv = [
            "atlas-cost-exporter",
            "simulate",
            "--spurious-stale-every",
            "0",
        ];
        let msg = Cli::try_parse_from(argv).expect_err("refused").to_string();
        assert!(msg.contains("--spurious-stale-every"), "{msg}");
    }

    /// An unknown simulate value is refused by the parser, naming the flag.
    #[test]
    fn unknown_simulate_value_is_refused() {
        let argv = ["atlas-cost-exporter", "simulate", "--row-keys", "nope"];
        let msg = Cli::try_parse_from(argv).expect_err("refused").to_string();
        assert!(msg.contains("--row-keys"), "{msg}");
    }
}
