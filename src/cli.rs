//! The command line: the exporter's flags ([`crate::config::Flags`]) and the `simulate`
//! subcommand. Above the configuration and the simulator, so neither imports the other.

use clap::{Parser, Subcommand};

use crate::config::Flags;
use crate::simulator::SimArgs;

/// Prometheus exporter for the MongoDB Atlas Cost Explorer.
///
/// Credentials come from the environment: MONGODB_ATLAS_CLIENT_ID and
/// MONGODB_ATLAS_CLIENT_SECRET (service account), or MONGODB_ATLAS_PUBLIC_API_KEY and
/// MONGODB_ATLAS_PRIVATE_API_KEY (API key); the secret halves can also be read from files.
#[derive(Parser, Debug, Clone)]
#[command(version = crate::version::LONG, about, long_about = None)]
pub struct Cli {
    /// Run a subcommand instead of the exporter.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Exporter flags.
    #[command(flatten)]
    pub flags: Flags,
}

/// Subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the built-in Atlas API simulator alone (for tests, benchmarks and demos).
    Simulate(SimArgs),
}
