//! The generated data set: deterministic, shaped as configured, and its totals helpers
//! consistent with each other.

use super::*;

/// The data set is deterministic from the seed, ids are unique 24-hex strings, names are
/// awkward (quotes, backslash, unicode) and cluster names follow the Atlas pattern.
#[test]
fn dataset_is_deterministic_with_unique_ids_and_awkward_names() {
    let a = Dataset::generate(&config(), current());
    let b = Dataset::generate(&config(), current());
    assert_eq!(a.usage, b.usage);
    let mut ids = HashSet::new();
    let mut names = Vec::new();
    for org in &a.orgs {
        ids.insert(org.id.clone());
        names.push(org.name.clone());
        for p in &org.projects {
            ids.insert(p.id.clone());
            names.push(p.name.clone());
            for c in &p.clusters {
                ids.insert(c.id.clone());
                let first = c.name.chars().next().expect("non-empty");
                assert!(first.is_ascii_alphanumeric());
                assert!(
                    c.name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                );
            }
        }
    }
    // 2 orgs; 4 live projects and 1 deleted one each; per org 4 * 3 dedicated clusters,
    // 2 Flex (projects 0 and 2), 3 deleted ones (projects 0, 1, 3) and 2 in the deleted
    // project.
    assert_eq!(ids.len(), 2 + 2 * 5 + 2 * (4 * 3 + 2 + 3 + 2));
    assert!(ids.iter().all(|id| {
        id.len() == 24
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }));
    assert!(names.iter().any(|n| n.contains('"') && n.contains('\\')));
    assert!(names.iter().any(|n| n.contains("Zürich")));
    assert!(names.iter().any(|n| n.contains("東京")));
    assert!(
        a.usage
            .iter()
            .any(|r| r.service == "Credits" && r.amount_cents < 0 && r.project.is_none())
    );
    assert!(
        a.usage
            .iter()
            .any(|r| r.project.is_some() && r.cluster.is_none())
    );
}

/// `with_series` lands near the target even for benchmark sizes, and builds quickly.
#[test]
fn with_series_hits_the_target_roughly() {
    for target in [1_000, 50_000, 500_000] {
        let cfg = SimConfig::with_series(target);
        let series = cfg.orgs
            * cfg.projects_per_org
            * cfg.clusters_per_project
            * cfg.services_per_cluster
            * cfg.months as usize;
        assert!(series >= target, "{series} < {target}");
        assert!(series <= target + target / 10 + 72, "{series} >> {target}");
    }
    let data = Dataset::generate(&SimConfig::with_series(500_000), current());
    assert!(data.usage.len() >= 500_000);
}

/// Scaling multiplies every amount, rounding half away from zero, and does not compound.
#[tokio::test]
async fn amount_scale_replaces_the_dataset() {
    let sim = Simulator::new(config());
    let before = sim.dataset();
    sim.set_amount_scale(3, 2);
    sim.set_amount_scale(2, 1);
    let after = sim.dataset();
    for (a, b) in before.usage.iter().zip(&after.usage) {
        assert_eq!(b.amount_cents, a.amount_cents * 2);
    }
    assert_eq!(before.scaled(1, 2).usage[0].amount_cents, {
        let x = before.usage[0].amount_cents;
        (x + x.signum()) / 2
    });
}

/// The totals helpers agree with each other to the cent: the org total is org-level plus
/// project-level plus every cluster (deleted and Flex included); the projects plus the
/// org-level charges give it too; per-month and per-service totals sum to it; and the
/// unlisted part is what deleted projects and clusters bill.
#[test]
fn totals_helpers_add_up_to_the_org_total() {
    let data = Dataset::generate(&config(), current());
    let (s, e) = (current().plus(-17), current().plus(1));
    for org in &data.orgs {
        let total = data.total_cents(&org.id, s, e);
        let org_level = data.org_level_cents(&org.id, s, e);
        let project_level = data.project_level_cents(&org.id, s, e);
        let clusters: i64 = org
            .all_clusters()
            .map(|(_, c)| data.cluster_cents(&c.id, s, e))
            .sum();
        assert_eq!(org_level + project_level + clusters, total);
        assert_eq!(
            clusters,
            data.total_cents_grouped(&org.id, s, e, GroupBy::Clusters, false)
        );
        let projects: i64 = org
            .projects
            .iter()
            .map(|p| data.project_cents(&p.id, s, e))
            .sum();
        assert_eq!(projects + org_level, total);
        assert_eq!(
            data.monthly_service_cents(&org.id, s, e)
                .values()
                .sum::<i64>(),
            total
        );
        assert_eq!(data.monthly_cents(&org.id, s, e).len(), 18);
        assert_eq!(
            data.monthly_cents(&org.id, s, e).values().sum::<i64>(),
            total
        );
        let services: HashSet<&str> = data
            .org_usage(data.org_by_id(&org.id).expect("org"))
            .iter()
            .map(|r| r.service.as_str())
            .collect();
        let by_service: i64 = services
            .iter()
            .map(|sv| data.service_cents(&org.id, sv, s, e))
            .sum();
        assert_eq!(by_service, total);

        let unlisted = data.unlisted_cents(&org.id, s, e, true);
        let expected: i64 = org
            .projects
            .iter()
            .filter(|p| p.is_deleted())
            .map(|p| data.project_cents(&p.id, s, e))
            .sum::<i64>()
            + org
                .all_clusters()
                .filter(|(p, c)| !p.is_deleted() && c.is_deleted() && !c.retained_backups)
                .map(|(_, c)| data.cluster_cents(&c.id, s, e))
                .sum::<i64>();
        assert!(unlisted > 0);
        assert_eq!(unlisted, expected);
        assert!(data.unlisted_cents(&org.id, s, e, false) > unlisted);
    }
}

/// The demo's tags have what attribution by tag must handle: a hyphenated key
/// (`cost-center`) that only projects carry, a cluster whose `team` differs from its
/// project's, a cluster lacking a key its project has, untagged clusters in tagged projects,
/// and an untagged project whose clusters are partly tagged and partly not.
#[test]
fn tags_cover_the_attribution_edge_cases() {
    let data = Dataset::generate(&config(), current());
    let org = &data.orgs[0];
    let value =
        |tags: &[SimTag], key: &str| tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
    let p0 = &org.projects[0];
    assert_eq!(value(&p0.tags, "team").as_deref(), Some("payments"));
    assert_eq!(value(&p0.tags, "cost-center").as_deref(), Some("CC 1000"));
    assert!(value(&org.projects[1].tags, "cost-center").is_none());
    assert!(
        org.all_clusters()
            .all(|(_, c)| value(&c.tags, "cost-center").is_none()),
        "cost-center is a project-only key"
    );
    // Cluster 0 repeats its project's tags, cluster 1 belongs to another team and has no
    // `env`, cluster 2 has no tags at all.
    assert_eq!(p0.clusters[0].tags, cluster_tags(0, 0));
    assert_eq!(value(&p0.clusters[0].tags, "team"), value(&p0.tags, "team"));
    assert_eq!(
        value(&p0.clusters[1].tags, "team").as_deref(),
        Some("Data Platform")
    );
    assert!(value(&p0.clusters[1].tags, "env").is_none());
    assert!(p0.clusters[2].tags.is_empty());
    // The untagged project: its first two clusters are tagged, the third is not.
    let p3 = &org.projects[3];
    assert!(p3.tags.is_empty());
    assert!(!p3.clusters[0].tags.is_empty() && !p3.clusters[1].tags.is_empty());
    assert!(p3.clusters[2].tags.is_empty());
    // Flex clusters are tagged, with unicode team values.
    let flex: Vec<&SimCluster> = org
        .all_clusters()
        .filter(|(_, c)| c.kind == ClusterKind::Flex)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(flex.len(), 2);
    assert_eq!(flex[0].tags, flex_tags(0));
    assert_eq!(value(&flex[0].tags, "team").as_deref(), Some("données"));
    assert_eq!(value(&flex[0].tags, "env").as_deref(), Some("dev"));
}

/// Turning the extras off gives the bare account: only live dedicated clusters and projects.
#[test]
fn extras_can_be_switched_off() {
    let data = Dataset::generate(
        &SimConfig {
            flex_clusters: false,
            deleted_clusters: false,
            deleted_projects: false,
            ..config()
        },
        current(),
    );
    for org in &data.orgs {
        assert_eq!(org.projects.len(), 4);
        assert!(org.all_clusters().all(|(p, c)| !c.is_flex()
            && !c.is_deleted()
            && !p.is_deleted()
            && p.clusters.len() == 3));
    }
}

/// The current month holds only the days posted so far, as Atlas's does: on the 6th (five
/// days posted) each of its records is the generated amount times 5 / days of the month,
/// rounded, never 0; every closed month is whole. A month that is over (not the clock's)
/// is whole too.
#[test]
fn the_current_month_holds_only_the_posted_days() {
    let month = current();
    let whole = Dataset::generate(&config(), month);
    let mut on_the_6th = config();
    on_the_6th.current_month = Some(month);
    on_the_6th.invoices.today = Some(6);
    let sim = Simulator::new(on_the_6th);
    assert_eq!(sim.posted_days(), 5);
    let posted = sim.dataset();
    assert_eq!(posted.usage.len(), whole.usage.len());
    let days = i64::from(month.days());
    let mut current_records = 0;
    for (p, w) in posted.usage.iter().zip(&whole.usage) {
        if w.month == month {
            current_records += 1;
            let want = (w.amount_cents * 5 + days / 2) / days;
            assert_eq!(p.amount_cents, want.max(1), "{w:?}");
        } else {
            assert_eq!(p, w);
        }
    }
    assert!(current_records > 10, "{current_records}");
    // Before this month (a pinned month that is not the clock's), everything is posted.
    let mut past = config();
    past.current_month = Some(month.plus(-3));
    let sim = Simulator::new(past);
    assert_eq!(sim.posted_days(), month.plus(-3).days());
    assert_eq!(
        sim.dataset().usage,
        Dataset::generate(&config(), month.plus(-3)).usage
    );
}
