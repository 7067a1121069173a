//! The `simulate` command line and the configuration it describes.

use clap::Parser;

use super::*;

/// The `simulate` options alone, as a command line.
#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

/// The `SimArgs` of the command line `x args...`.
fn parse(args: &[&str]) -> SimArgs {
    Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).sim
}

/// `SimArgs` defaults give the demo configuration; `--series` overrides the shape.
#[test]
fn sim_args_map_to_config() {
    let args = parse(&[]);
    let cfg = args.to_config();
    assert_eq!(
        (cfg.orgs, cfg.projects_per_org, cfg.clusters_per_project),
        (2, 4, 3)
    );
    assert_eq!(args.listen().to_string(), "127.0.0.1:8080");
    let cfg = parse(&[
        "--series",
        "100000",
        "--not-ready",
        "timeout",
        "--not-ready-delay",
        "5s",
    ])
    .to_config();
    assert!(cfg.orgs * cfg.projects_per_org * cfg.clusters_per_project * 72 >= 100_000);
    assert_eq!(cfg.not_ready, NotReady::Timeout(Duration::from_secs(5)));
}

/// The variant flags default to the documented rules (Flex, deleted clusters and projects,
/// tags; `projectId` keys, the extended CSV) and switch each one.
#[test]
fn sim_args_map_variant_flags() {
    let cfg = parse(&[]).to_config();
    assert!(cfg.flex_clusters && cfg.deleted_clusters && cfg.deleted_projects && cfg.tags);
    assert!(!cfg.flex_in_clusters_listing);
    assert_eq!(
        (cfg.row_keys, cfg.csv_layout),
        (RowKeys::ProjectId, CsvLayout::Extended)
    );
    let cfg = parse(&[
        "--no-flex-clusters",
        "--flex-in-clusters-listing",
        "--no-deleted-clusters",
        "--no-deleted-projects",
        "--no-tags",
        "--row-keys",
        "group-id",
        "--csv-layout",
        "spec-example",
    ])
    .to_config();
    assert!(!(cfg.flex_clusters || cfg.deleted_clusters || cfg.deleted_projects || cfg.tags));
    assert!(cfg.flex_in_clusters_listing);
    assert_eq!(
        (cfg.row_keys, cfg.csv_layout),
        (RowKeys::GroupId, CsvLayout::SpecExample)
    );
}
