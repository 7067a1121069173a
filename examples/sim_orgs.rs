//! Prints the org ids (comma-separated) of `atlas-cost-exporter simulate --series N` (seed 1),
//! for scripts that point the exporter at a simulator: `cargo run --example sim_orgs -- 10000`.

#![allow(missing_docs)]

use std::time::SystemTime;

use atlas_cost_exporter::month::Month;
use atlas_cost_exporter::simulator::{Dataset, SimConfig};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let data = Dataset::generate(
        &SimConfig::with_series(n),
        Month::containing(SystemTime::now()),
    );
    let ids: Vec<&str> = data.orgs.iter().map(|o| o.id.as_str()).collect();
    println!("{}", ids.join(","));
}
