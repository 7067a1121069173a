//! Cost by tag (issue 11) through the real exporter and simulator, over HTTP: Atlas resource
//! tags as `tag_<key>` labels on the projects and clusters series, the cluster-over-project
//! rule, sanitised names and refused collisions, sums by tag that add up to the org's total,
//! and a budget scoped by `tag_team`. Expectations come from the simulator's dataset, never
//! from hard-coded tag values.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;

use atlas_cost_exporter::cli::Cli;
use atlas_cost_exporter::config::{Config, QuerySpec};
use atlas_cost_exporter::series::{TagLabels, tag_label_name};
use atlas_cost_exporter::simulator::{
    Dataset, SimCluster, SimConfig, SimProject, SimTag, Simulator,
};
use clap::Parser as _;
use common::*;

/// The cost families that carry tag labels.
const TAGGED_FAMILIES: [&str; 4] = [
    "atlas_cost_usage_usd",
    "atlas_cost_month_to_date_usd",
    "atlas_cost_month_forecast_usd",
    "atlas_cost_previous_month_usd",
];

fn tag<'a>(tags: &'a [SimTag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key == key)
        .map(|t| t.value.as_str())
        .filter(|v| !v.is_empty())
}

/// The value a cluster's series carries for `key`: the cluster's own, else its project's.
fn cluster_tag<'a>(p: &'a SimProject, c: &'a SimCluster, key: &str) -> Option<&'a str> {
    tag(&c.tags, key).or_else(|| tag(&p.tags, key))
}

/// Whether a cluster is in a listing of its live project (its own series carry its tags).
fn listed(p: &SimProject, c: &SimCluster) -> bool {
    !p.is_deleted() && (c.in_clusters_listing(true) || c.in_flex_listing())
}

/// The simulator with one org, and the exporter reading its default queries (two months)
/// with the tag labels `keys`.
async fn tagged(keys: &[&str]) -> (Sim, Exporter) {
    tagged_from(with_orgs(1), keys).await
}

/// [`tagged`] against a simulator built from `config`.
async fn tagged_from(config: SimConfig, keys: &[&str]) -> (Sim, Exporter) {
    let sim = start_sim(config).await;
    let tags = TagLabels::new("--cost.tag-labels", keys).unwrap();
    let exporter = sim
        .exporter(&QuerySpec::defaults(2))
        .tweak(|c| c.tag_labels = tags)
        .ready()
        .await;
    (sim, exporter)
}

/// A tag key of the simulator's projects that is not a valid label name as it is (it has a
/// hyphen): read from the dataset, whatever its spelling.
fn hyphenated_key(data: &Dataset) -> String {
    data.orgs[0]
        .projects
        .iter()
        .flat_map(|p| &p.tags)
        .map(|t| t.key.clone())
        .find(|k| k.contains('-'))
        .expect("the simulator tags some projects with a hyphenated key")
}

/// Every cost family carries `tag_team` and `tag_env` as the listings say: a project series
/// its project's tags, a cluster series the cluster's own tag or, where the cluster lacks
/// the key, its project's; a per-project remainder its project's; the `services` query and
/// the org-level remainders none. A missing tag is an absent label, whether an untagged
/// resource lists `tags: []` or leaves the key out (the `omit_empty_tags` variant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_family_carries_the_tags_of_the_listings_cluster_over_project() {
    for omit_empty_tags in [false, true] {
        let config = SimConfig {
            omit_empty_tags,
            ..with_orgs(1)
        };
        tags_follow_the_listings(config).await;
    }
}

async fn tags_follow_the_listings(config: SimConfig) {
    let (sim, exporter) = tagged_from(config, &["team", "env"]).await;
    let data = sim.sim.dataset();
    let org = &data.orgs[0];
    let samples = exporter.samples().await;
    let projects: BTreeMap<&str, &SimProject> =
        org.projects.iter().map(|p| (p.id.as_str(), p)).collect();
    let clusters: BTreeMap<&str, (&SimProject, &SimCluster)> = org
        .all_clusters()
        .map(|(p, c)| (c.id.as_str(), (p, c)))
        .collect();
    let mut checked = BTreeMap::<(&str, &str), usize>::new();
    let mut inherited = 0;
    for family in TAGGED_FAMILIES {
        for s in samples.named(family) {
            let query = s.label("query").unwrap();
            let project = s.label("project_id").and_then(|p| projects.get(p));
            let cluster = s.label("cluster_id").and_then(|c| clusters.get(c));
            let expect = |key: &str| -> Option<&str> {
                match (query, project, cluster) {
                    ("clusters", _, Some((p, c))) if listed(p, c) => cluster_tag(p, c, key),
                    ("clusters" | "projects", Some(p), _) if !p.is_deleted() => tag(&p.tags, key),
                    _ => None,
                }
            };
            for key in ["team", "env"] {
                let label = format!("tag_{key}");
                assert_eq!(
                    s.label(&label),
                    expect(key),
                    "{family} {key}: {:?}",
                    s.labels
                );
            }
            if let Some((p, c)) = cluster
                && tag(&c.tags, "env").is_none()
                && s.label("tag_env").is_some()
            {
                assert_eq!(s.label("tag_env"), tag(&p.tags, "env"));
                inherited += 1;
            }
            assert!(
                s.labels.keys().filter(|k| k.starts_with("tag_")).count() <= 2,
                "{:?}",
                s.labels
            );
            if s.labels.keys().any(|k| k.starts_with("tag_")) {
                *checked.entry((family, query)).or_default() += 1;
            }
        }
    }
    // Every family of both queries shows tags, and some cluster inherits its project's env.
    for family in TAGGED_FAMILIES {
        for query in ["projects", "clusters"] {
            assert!(
                checked.get(&(family, query)).is_some_and(|n| *n > 0),
                "{family} {query}: {checked:?}"
            );
        }
    }
    assert!(inherited > 0, "no cluster inherited its project's env");
    // Tag labels come after every other label, in allowlist order.
    let text = exporter.scrape_text().await;
    let line = text
        .lines()
        .find(|l| l.starts_with("atlas_cost_usage_usd{") && l.contains("tag_env="))
        .unwrap();
    let labels = &line[..line.find('}').unwrap()];
    let after_service = &labels[labels.find("atlas_service=").unwrap()..];
    assert!(after_service.contains(",tag_"), "{line}");
    if let (Some(team), Some(env)) = (labels.find("tag_team="), labels.find("tag_env=")) {
        assert!(team < env, "{line}");
    }
    exporter.stop().await;
}

/// A hyphenated key becomes a label with `_` for the hyphen, carrying the listed values; two
/// keys that become the same label stop start-up with one line naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyphenated_keys_are_sanitised_and_collisions_refused() {
    let key = hyphenated_key(&Simulator::new(with_orgs(1)).dataset());
    let (sim, exporter) = tagged(&[&key]).await;
    let name = tag_label_name(&key);
    assert_eq!(name, format!("tag_{}", key.replace('-', "_")));
    let data = sim.sim.dataset();
    let samples = exporter.samples().await;
    let mut seen = 0;
    for p in data.orgs[0].listed_projects() {
        let s = samples
            .named("atlas_cost_month_to_date_usd")
            .find(|s| s.label("query") == Some("projects") && s.label("project_id") == Some(&p.id));
        if let Some(s) = s {
            assert_eq!(s.label(&name), tag(&p.tags, &key), "{:?}", s.labels);
            seen += usize::from(s.label(&name).is_some());
        }
    }
    assert!(seen > 0, "no project series carries {name}");
    exporter.stop().await;

    let colliding = format!("{key},{}", key.replace('-', "_"));
    let flags = Cli::try_parse_from([
        "atlas-cost-exporter",
        "--atlas.org-id",
        "5f1b2c3d4e5f6a7b8c9d0e1f",
        "--cost.tag-labels",
        &colliding,
    ])
    .unwrap()
    .flags;
    let env = std::collections::HashMap::from([
        ("MONGODB_ATLAS_CLIENT_ID", "id"),
        ("MONGODB_ATLAS_CLIENT_SECRET", "secret"),
    ]);
    let e = Config::from_flags(&flags, &env).unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.starts_with("--cost.tag-labels:") && e.contains(&format!("{key:?}")) && e.contains(&name),
        "{e}"
    );
}

/// The month to date summed by `tag_team`, with the series without it (untagged resources,
/// org-level charges), equals the org's total to the cent for both the projects and the
/// clusters query; and each team's sum in the clusters query is the spend of its clusters
/// (own tag, else the project's) and of its projects' project-level charges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sums_by_team_with_the_untagged_part_equal_the_org_total_to_the_cent() {
    let (sim, exporter) = tagged(&["team"]).await;
    let data = sim.sim.dataset();
    let org = &data.orgs[0];
    let current = sim.sim.current_month();
    let samples = exporter.samples().await;
    let mtd = "atlas_cost_month_to_date_usd";
    let total = samples.total_cents(mtd, "services", &org.id);
    assert_eq!(
        total,
        data.sum_cents(&org.id, current, current.plus(1), |_| true)
    );
    for query in ["projects", "clusters"] {
        let mut by_team: BTreeMap<Option<String>, f64> = BTreeMap::new();
        for s in samples
            .named(mtd)
            .filter(|s| s.label("query") == Some(query))
        {
            *by_team
                .entry(s.label("tag_team").map(str::to_owned))
                .or_default() += s.value.unwrap();
        }
        let cents: i64 = by_team.values().map(|v| (v * 100.0).round() as i64).sum();
        assert_eq!(cents, total, "{query}: {by_team:?}");
        assert!(
            by_team.keys().filter(|k| k.is_some()).count() > 1,
            "{query}: {by_team:?}"
        );
        if query == "clusters" {
            for (team, usd) in &by_team {
                let Some(team) = team else { continue };
                let expected =
                    data.sum_cents(&org.id, current, current.plus(1), |r| match data.place(r) {
                        (Some(p), Some(c)) if listed(p, c) => {
                            cluster_tag(p, c, "team") == Some(team.as_str())
                        }
                        (Some(p), _) if !p.is_deleted() => {
                            tag(&p.tags, "team") == Some(team.as_str())
                        }
                        _ => false,
                    });
                assert_eq!((usd * 100.0).round() as i64, expected, "team {team}");
            }
        }
    }
    exporter.stop().await;
}

/// A budget scoped by `tag_team` (from a file with `tag_labels:`) reads the clusters query:
/// its gauges carry `tag_team`, and its consumed ratio times its amount is that team's month
/// to date; a scope naming a tag label not in the allowlist is refused at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_scoped_by_team_sums_the_teams_month_to_date() {
    let sim = start_sim(with_orgs(1)).await;
    let data = sim.sim.dataset();
    let org = &data.orgs[0];
    let team = org
        .listed_projects()
        .find_map(|p| tag(&p.tags, "team"))
        .expect("a tagged project")
        .to_owned();
    let path = temp_dir().join("tags.yml");
    let write = |budget_scope: &str| {
        std::fs::write(
            &path,
            format!(
                "tag_labels: [team]\norgs:\n  - id: {}\nbudgets:\n  - name: by-team\n    amount_usd: 1000\n    scope: {budget_scope}\n",
                org.id
            ),
        )
        .unwrap();
    };
    let from_file = || config_from_file(&path, "mdb_sa_id_demo", "mdb_sa_sk_demo");
    write("{tag_owner: x}");
    let e = from_file().unwrap_err().to_string();
    assert!(
        e.starts_with("budgets[0].scope.tag_owner:") && e.contains("by-team"),
        "{e}"
    );
    write(&format!("{{tag_team: {team:?}}}"));
    let parsed = from_file().unwrap();
    assert_eq!(parsed.budgets[0].query, "clusters");
    let exporter = sim
        .exporter(&QuerySpec::defaults(2))
        .tweak(|c| {
            c.tag_labels = parsed.tag_labels.clone();
            c.budgets = parsed.budgets.clone();
        })
        .ready()
        .await;
    let samples = exporter.samples().await;
    let labels = [("budget", "by-team"), ("tag_team", team.as_str())];
    assert_eq!(
        samples.value("atlas_cost_budget_usd", &labels),
        Some(1000.0)
    );
    let consumed = samples
        .value("atlas_cost_budget_consumed_ratio", &labels)
        .expect("the budget matches series");
    let team_mtd: f64 = samples
        .named("atlas_cost_month_to_date_usd")
        .filter(|s| s.label("query") == Some("clusters") && s.label("tag_team") == Some(&team))
        .map(|s| s.value.unwrap())
        .sum();
    assert_eq!(
        (consumed * 1000.0 * 100.0).round() as i64,
        (team_mtd * 100.0).round() as i64
    );
    assert!(team_mtd > 0.0);
    exporter.stop().await;
}

/// Without `--cost.tag-labels` no series carries a tag label, though the simulator serves
/// tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_no_tag_label_is_exported() {
    let sim = start_sim(SimConfig {
        orgs: 1,
        ..SimConfig::default()
    })
    .await;
    let exporter = sim.exporter(&QuerySpec::defaults(2)).ready().await;
    let text = exporter.scrape_text().await;
    assert!(text.contains("atlas_cost_usage_usd{"));
    assert!(!text.contains("tag_"), "a tag label without the flag");
    exporter.stop().await;
}
