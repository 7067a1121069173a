//! The `atlas-cost-exporter` binary: parse flags, set up logging, run.

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use atlas_cost_exporter::cli::{Cli, Command};
use atlas_cost_exporter::config::{Config, Flags, LogFormat, LogLevel, ProcessEnv};
use atlas_cost_exporter::simulator::Simulator;

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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.flags);
    if let Some(Command::Simulate(args)) = cli.command {
        let listener = match tokio::net::TcpListener::bind(args.listen()).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("simulate --listen {}: {e}", args.listen());
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(address = %args.listen(), "Atlas simulator listening");
        let sim = Simulator::new(args.to_config());
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
            ("MONGODB_ATLAS_CLIENT_ID", "demo"),
            ("MONGODB_ATLAS_CLIENT_SECRET", "demo"),
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
