//! The discovery endpoints: pagination, Flex and deleted clusters, deleted projects, runtime
//! deletions and tags.

use super::*;

/// All projects come back across pages when `itemsPerPage` is capped at 2, with totalCount and
/// a `next` link until the last page.
#[tokio::test]
async fn discovery_paginates_with_small_pages() {
    let mut cfg = config();
    cfg.max_page_size = 2;
    cfg.projects_per_org = 5;
    let s = serve(cfg).await;
    let org = &s.data.orgs[0];
    let mut seen = Vec::new();
    for page in 1..=4 {
        let path = format!("{}?pageNum={page}&itemsPerPage=500", projects_path(&org.id));
        let (status, v) = s.get(&path, JSON_TYPE).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["totalCount"], 5);
        let results = v["results"].as_array().expect("results");
        assert!(results.len() <= 2);
        seen.extend(result_ids(&v));
        let has_next = v["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["rel"] == "next");
        assert_eq!(has_next, page < 3);
    }
    let expected: Vec<String> = org.listed_projects().map(|p| p.id.clone()).collect();
    assert_eq!(seen, expected);

    let project = &org.projects[0];
    let (_, v) = s
        .get(&listing_path(&project.id, "clusters"), JSON_TYPE)
        .await;
    assert_eq!(v["totalCount"], 3);
    assert_eq!(v["results"][0]["id"], project.clusters[0].id.as_str());
}

/// Flex clusters are listed by `/flexClusters` only (version 2024-11-13, other media types
/// 406, unknown project 404), never by `/clusters`; the endpoint is counted and faultable.
#[tokio::test]
async fn flex_clusters_are_listed_only_by_their_endpoint() {
    let s = serve(config()).await;
    let project = &s.data.orgs[0].projects[0];
    let flex: Vec<&SimCluster> = project.clusters.iter().filter(|c| c.is_flex()).collect();
    assert_eq!(flex.len(), 1, "one Flex cluster in project 0");
    assert!(
        s.data.orgs[0].projects[1]
            .clusters
            .iter()
            .all(|c| !c.is_flex())
    );

    let path = listing_path(&project.id, "flexClusters");
    let (status, v) = s.get(&path, FLEX_TYPE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result_ids(&v), vec![flex[0].id.clone()]);
    assert_eq!(v["totalCount"], 1);
    assert_eq!(v["results"][0]["name"], flex[0].name.as_str());
    assert_eq!(v["results"][0]["groupId"], project.id.as_str());
    assert!(v["results"][0]["tags"].is_array());
    assert!(v["links"].is_array());

    let (status, v) = s
        .get(&listing_path(&project.id, "clusters"), JSON_TYPE)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!result_ids(&v).contains(&flex[0].id));

    let (status, v) = s.get(&path, JSON_TYPE).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(v["error"], 406);
    let unknown = listing_path("0123456789abcdef01234567", "flexClusters");
    let (status, v) = s.get(&unknown, FLEX_TYPE).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["errorCode"], "RESOURCE_NOT_FOUND");
    assert_eq!(s.sim.requests(SimEndpoint::FlexClusters), 3);

    s.sim.fail(SimEndpoint::FlexClusters, Fault::Status(503));
    let (status, _) = s.get(&path, FLEX_TYPE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// With `flex_in_clusters_listing` (Atlas before January 2026) `/clusters` lists the Flex
/// clusters too, and `/flexClusters` still does.
#[tokio::test]
async fn flex_in_clusters_listing_variant_lists_them_in_both() {
    let s = serve(SimConfig {
        flex_in_clusters_listing: true,
        ..config()
    })
    .await;
    let project = &s.data.orgs[0].projects[0];
    let flex = project
        .listed_flex_clusters()
        .next()
        .expect("flex")
        .id
        .clone();
    let (_, v) = s
        .get(&listing_path(&project.id, "clusters"), JSON_TYPE)
        .await;
    assert_eq!(v["totalCount"], 4);
    assert!(result_ids(&v).contains(&flex));
}

/// A deleted cluster is in no listing (not even with `includeDeletedWithRetainedBackups`),
/// bills up to its deletion month and nothing after, and the Cost Explorer still answers its
/// rows for its id.
#[tokio::test]
async fn deleted_clusters_are_billed_before_deletion_and_never_listed() {
    let s = serve(ready_config()).await;
    let org = &s.data.orgs[0];
    let project = &org.projects[0];
    let gone = project
        .clusters
        .iter()
        .find(|c| c.is_deleted() && !c.retained_backups)
        .expect("deleted cluster in project 0");
    assert_eq!(gone.name, "legacy-etl");
    let deleted = gone.deleted.expect("month");
    assert_eq!(deleted, current().plus(-2));
    for include in ["false", "true"] {
        let path = format!(
            "{}?includeDeletedWithRetainedBackups={include}",
            listing_path(&project.id, "clusters")
        );
        let (_, v) = s.get(&path, JSON_TYPE).await;
        assert!(!result_ids(&v).contains(&gone.id), "{include}");
    }
    let (start, end) = (current().plus(-17), current().plus(1));
    let body = grouped(start, end, "clusters", json!([gone.id]));
    let rows = s.query_rows(&org.id, &body).await;
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["clusterId"] == gone.id.as_str()
        && r["usageDate"].as_str().expect("date") <= deleted.first_day().as_str()));
    assert!(
        rows.iter()
            .any(|r| r["usageDate"] == deleted.first_day().as_str())
    );
    assert_eq!(sum_cents(&rows), s.data.cluster_cents(&gone.id, start, end));
    assert_eq!(s.data.cluster_cents(&gone.id, deleted.plus(1), end), 0);
}

/// A cluster deleted with retained backups is listed only with
/// `includeDeletedWithRetainedBackups=true` (the `next` link keeps the parameter) and bills
/// only `Backup` after its deletion.
#[tokio::test]
async fn retained_backup_clusters_are_listed_only_when_asked_and_bill_backup() {
    let s = serve(SimConfig {
        max_page_size: 2,
        ..ready_config()
    })
    .await;
    let org = &s.data.orgs[0];
    let project = &org.projects[1];
    let kept = project
        .clusters
        .iter()
        .find(|c| c.retained_backups)
        .expect("retained-backup cluster in project 1");
    assert_eq!(kept.name, "old-billing");
    let deleted = kept.deleted.expect("deleted");
    let list = |include: bool| {
        let mut url = format!(
            "{}?itemsPerPage=2{}",
            listing_path(&project.id, "clusters"),
            if include {
                "&includeDeletedWithRetainedBackups=true"
            } else {
                ""
            }
        );
        let s = &s;
        async move {
            let mut ids = Vec::new();
            loop {
                let (_, v) = s.get(&url, JSON_TYPE).await;
                ids.extend(result_ids(&v));
                let next = v["links"]
                    .as_array()
                    .expect("links")
                    .iter()
                    .find(|l| l["rel"] == "next")
                    .map(|l| l["href"].as_str().expect("href").to_string());
                match next {
                    Some(href) => url = href.replacen(&s.base, "", 1),
                    None => return ids,
                }
            }
        }
    };
    let without = list(false).await;
    let with = list(true).await;
    assert_eq!(without.len(), 3);
    assert!(!without.contains(&kept.id));
    assert_eq!(with.len(), 4);
    assert!(with.contains(&kept.id));

    let (start, end) = (deleted.plus(1), current().plus(1));
    let body = grouped(start, end, "clusters", json!([kept.id]));
    let rows = s.query_rows(&org.id, &body).await;
    assert_eq!(rows.len() as i64, end.since(start));
    assert!(rows.iter().all(|r| r["service"] == "Backup"));
    assert_eq!(sum_cents(&rows), s.data.cluster_cents(&kept.id, start, end));
}

/// A deleted project is absent from the projects listing, its cluster and Flex listings answer
/// 404 `RESOURCE_NOT_FOUND`, and a `projects` query with its id still returns its rows up to
/// its deletion month.
#[tokio::test]
async fn deleted_projects_are_billed_but_unlisted_and_404() {
    let s = serve(ready_config()).await;
    let org = &s.data.orgs[0];
    let retired = &org.projects[4];
    assert_eq!(retired.name, "Retired Project");
    let deleted = retired.deleted.expect("deleted");
    assert!(retired.clusters.iter().all(|c| c.deleted == Some(deleted)));

    let (_, v) = s.get(&projects_path(&org.id), JSON_TYPE).await;
    assert_eq!(v["totalCount"], 4);
    assert!(!result_ids(&v).contains(&retired.id));
    for (listing, accept) in [("clusters", JSON_TYPE), ("flexClusters", FLEX_TYPE)] {
        let (status, v) = s.get(&listing_path(&retired.id, listing), accept).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{listing}");
        assert_eq!(v["errorCode"], "RESOURCE_NOT_FOUND");
    }

    let (start, end) = (current().plus(-17), current().plus(1));
    let body = grouped(start, end, "projects", json!([retired.id]));
    let rows = s.query_rows(&org.id, &body).await;
    assert!(rows.iter().all(|r| r["projectId"] == retired.id.as_str()
        && r["usageDate"].as_str().expect("date") <= deleted.first_day().as_str()));
    let cents = s.data.project_cents(&retired.id, start, end);
    assert!(cents > 0);
    assert_eq!(sum_cents(&rows), cents);
}

/// `delete_cluster` and `delete_project` take effect on the listings at once, keep every
/// charge (so the totals do not move), survive a later `set_amount_scale`, and refuse an
/// unknown or already deleted id.
#[tokio::test]
async fn runtime_deletion_hides_from_listings_and_keeps_bills() {
    let s = serve(config()).await;
    let (sim, before) = (&s.sim, &s.data);
    let org = &before.orgs[0];
    let (cluster, project) = (&org.projects[0].clusters[1], &org.projects[2]);
    let flex = org.projects[0].listed_flex_clusters().next().expect("flex");
    assert!(sim.delete_cluster(&cluster.id));
    assert!(sim.delete_cluster(&flex.id));
    assert!(sim.delete_project(&project.id));
    assert!(!sim.delete_cluster(&cluster.id), "already deleted");
    assert!(!sim.delete_project(&project.id), "already deleted");
    assert!(!sim.delete_cluster("0123456789abcdef01234567"), "unknown");
    sim.set_amount_scale(1, 1);

    let after = sim.dataset();
    let (start, end) = (current().plus(-17), current().plus(1));
    assert_eq!(
        after.total_cents(&org.id, start, end),
        before.total_cents(&org.id, start, end)
    );
    let (o, p, c) = after.cluster_by_id(&cluster.id).expect("still known");
    assert_eq!(
        after.orgs[o].projects[p].clusters[c].deleted,
        Some(current())
    );
    let home = &org.projects[0].id;
    let (_, v) = s.get(&listing_path(home, "clusters"), JSON_TYPE).await;
    assert_eq!(result_ids(&v).len(), 2);
    assert!(!result_ids(&v).contains(&cluster.id));
    let (_, v) = s.get(&listing_path(home, "flexClusters"), FLEX_TYPE).await;
    assert!(result_ids(&v).is_empty());
    let (status, _) = s
        .get(&listing_path(&project.id, "clusters"), JSON_TYPE)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, v) = s.get(&projects_path(&org.id), JSON_TYPE).await;
    assert!(!result_ids(&v).contains(&project.id));
    assert_eq!(result_ids(&v).len(), 3);
}

/// Projects, clusters and Flex clusters carry `tags` as `{"key","value"}` pairs in their
/// listings, as `SimProject::tags`/`SimCluster::tags` say: values with spaces, unicode, a
/// quote and a backslash, some entities without tags, and a cluster without a key its
/// project has.
#[tokio::test]
async fn tags_are_served_on_projects_clusters_and_flex() {
    let s = serve(config()).await;
    let org = &s.data.orgs[0];
    let as_json = |tags: &[SimTag]| -> Value {
        tags.iter()
            .map(|t| json!({"key": t.key, "value": t.value}))
            .collect()
    };
    let (_, v) = s.get(&projects_path(&org.id), JSON_TYPE).await;
    for (row, project) in v["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(org.listed_projects())
    {
        assert_eq!(row["tags"], as_json(&project.tags), "{}", project.name);
    }
    let all_tags: Vec<&SimTag> = org
        .projects
        .iter()
        .flat_map(|p| p.tags.iter())
        .chain(org.all_clusters().flat_map(|(_, c)| c.tags.iter()))
        .collect();
    assert!(all_tags.iter().any(|t| t.value.contains(' ')));
    assert!(all_tags.iter().any(|t| !t.value.is_ascii()));
    assert!(
        all_tags
            .iter()
            .any(|t| t.value.contains('"') && t.value.contains('\\'))
    );
    assert!(org.projects[3].tags.is_empty(), "project 3 has no tags");
    assert!(org.projects[0].clusters[2].tags.is_empty());
    let has = |tags: &[SimTag], key: &str| tags.iter().any(|t| t.key == key);
    assert!(has(&org.projects[0].tags, "env") && !has(&org.projects[0].clusters[1].tags, "env"));

    let project = &org.projects[0];
    let (_, v) = s
        .get(&listing_path(&project.id, "clusters"), JSON_TYPE)
        .await;
    for (row, cluster) in v["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(project.listed_clusters(false))
    {
        assert_eq!(row["tags"], as_json(&cluster.tags));
    }
    let (_, v) = s
        .get(&listing_path(&project.id, "flexClusters"), FLEX_TYPE)
        .await;
    let flex = project.listed_flex_clusters().next().expect("flex");
    assert!(!flex.tags.is_empty());
    assert_eq!(v["results"][0]["tags"], as_json(&flex.tags));

    let bare = Dataset::generate(
        &SimConfig {
            tags: false,
            ..config()
        },
        current(),
    );
    assert!(
        bare.orgs
            .iter()
            .flat_map(|o| o.projects.iter())
            .all(|p| p.tags.is_empty() && p.clusters.iter().all(|c| c.tags.is_empty()))
    );
}

/// The `omit_empty_tags` variant leaves the `tags` key out of untagged projects and
/// clusters, and lists the tags of the others as before.
#[tokio::test]
async fn omit_empty_tags_variant_leaves_the_key_out_only_when_empty() {
    let s = serve(SimConfig {
        omit_empty_tags: true,
        ..config()
    })
    .await;
    let org = &s.data.orgs[0];
    let (_, v) = s.get(&projects_path(&org.id), JSON_TYPE).await;
    let rows = v["results"].as_array().expect("results");
    for (row, project) in rows.iter().zip(org.listed_projects()) {
        let fields = row.as_object().expect("object");
        assert_eq!(
            fields.contains_key("tags"),
            !project.tags.is_empty(),
            "{}",
            project.name
        );
    }
    assert!(rows.iter().any(|r| r.get("tags").is_none()));
    assert!(rows.iter().any(|r| r.get("tags").is_some()));
    let project = &org.projects[0];
    let (_, v) = s
        .get(&listing_path(&project.id, "clusters"), JSON_TYPE)
        .await;
    for (row, cluster) in v["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(project.listed_clusters(false))
    {
        assert_eq!(row.get("tags").is_some(), !cluster.tags.is_empty());
    }
}
