//! The discovery endpoints: an org's projects, and a project's clusters and Flex clusters,
//! each paginated with `pageNum`/`itemsPerPage`, `totalCount` and `links`, entries with
//! `tags`. Deleted projects and clusters are left out as Atlas leaves them out.

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::respond::{Answer, Rejected, atlas_error, atlas_error_with, atlas_json, not_found};
use super::{
    CLUSTER_TYPES, FLEX_TYPE, JSON_TYPE, find_org, is_object_id, query_param, query_params,
};
use crate::simulator::data::{SimCluster, SimProject, SimTag};
use crate::simulator::{SimEndpoint, Simulator};

/// (pageNum, itemsPerPage) from the query, itemsPerPage capped at `max`.
pub(super) fn paging(params: &[(String, String)], max: usize) -> Result<(usize, usize), Rejected> {
    let num = |name: &str, default: usize| -> Result<usize, Rejected> {
        match query_param(params, name) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Rejected::from(atlas_error_with(
                    StatusCode::BAD_REQUEST,
                    "INVALID_QUERY_PARAMETER",
                    format!("{name} must be a positive integer, got {v:?}."),
                    vec![Value::String(name.to_string())],
                ))
            }),
        }
    };
    Ok((
        num("pageNum", 1)?,
        num("itemsPerPage", 100)?.min(max.max(1)),
    ))
}

/// A page of `items` with `totalCount` and `self`/`previous`/`next` links (which keep the
/// request's other query parameters, e.g. `includeDeletedWithRetainedBackups`).
pub(super) fn page(
    headers: &HeaderMap,
    uri: &Uri,
    page_num: usize,
    per_page: usize,
    items: Vec<Value>,
) -> Response {
    let total = items.len();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let path = uri.path();
    let others: String = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            !kv.is_empty() && key != "pageNum" && key != "itemsPerPage"
        })
        .map(|kv| format!("&{kv}"))
        .collect();
    let href =
        |n: usize| format!("http://{host}{path}?pageNum={n}&itemsPerPage={per_page}{others}");
    let start = (page_num - 1).saturating_mul(per_page);
    let results: Vec<Value> = items.into_iter().skip(start).take(per_page).collect();
    let mut links = vec![json!({"rel": "self", "href": href(page_num)})];
    if page_num > 1 {
        links.push(json!({"rel": "previous", "href": href(page_num - 1)}));
    }
    if start.saturating_add(per_page) < total {
        links.push(json!({"rel": "next", "href": href(page_num + 1)}));
    }
    atlas_json(
        StatusCode::OK,
        json!({"links": links, "results": results, "totalCount": total}).to_string(),
    )
}

/// `GET /api/atlas/v2/orgs/{orgId}/groups`: the org's projects, deleted ones left out.
pub(super) async fn projects(
    State(sim): State<Simulator>,
    Path(org_id): Path<String>,
    parts: Parts,
) -> Answer {
    sim.admit(SimEndpoint::Projects, Some(&org_id), &parts, &[JSON_TYPE])
        .await?;
    let data = sim.dataset();
    let org = find_org(&data, &org_id)?;
    let (page_num, per_page) = paging(&query_params(&parts.uri), sim.inner.config.max_page_size)?;
    let Some(org_rec) = data.orgs.get(org) else {
        return Ok(atlas_error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            "No such org.",
        ));
    };
    let items = org_rec
        .listed_projects()
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.name,
                "orgId": org_rec.id,
                "clusterCount": p.listed_clusters(false).count(),
                "created": "2024-01-15T09:30:00Z",
                "tags": tags_json(&p.tags),
            })
        })
        .map(|v| without_empty_tags(v, sim.inner.config.omit_empty_tags))
        .collect();
    Ok(page(&parts.headers, &parts.uri, page_num, per_page, items))
}

/// `tags` as the API lists them: `{"key", "value"}` objects.
fn tags_json(tags: &[SimTag]) -> Value {
    tags.iter()
        .map(|t| json!({"key": t.key, "value": t.value}))
        .collect()
}

/// `v` without its `tags` key when `omit` and the list is empty (the `omit_empty_tags`
/// variant).
fn without_empty_tags(mut v: Value, omit: bool) -> Value {
    if omit
        && let Some(fields) = v.as_object_mut()
        && fields
            .get("tags")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        fields.remove("tags");
    }
    v
}

/// What the two cluster listings share: count, fault, auth and media type, then the project
/// (404 when unknown or deleted) and the paging. `items` makes the page's entries.
async fn project_listing(
    sim: &Simulator,
    endpoint: SimEndpoint,
    group_id: &str,
    parts: &Parts,
    allowed: &[&'static str],
    items: impl FnOnce(&SimProject, &[(String, String)]) -> Vec<Value>,
) -> Answer {
    let owner = {
        let data = sim.dataset();
        data.project_by_id(group_id)
            .and_then(|(o, _)| data.orgs.get(o).map(|org| org.id.clone()))
    };
    sim.admit(endpoint, owner.as_deref(), parts, allowed)
        .await?;
    let data = sim.dataset();
    let missing = |code: &str| {
        Err(not_found(
            code,
            group_id,
            format!("Cannot find resource project {group_id}."),
        ))
    };
    if !is_object_id(group_id) {
        return missing("INVALID_GROUP_ID");
    }
    // A deleted project is gone for every listing, though its bills remain.
    let Some(project) = data
        .project_by_id(group_id)
        .and_then(|(o, p)| data.orgs.get(o).and_then(|org| org.projects.get(p)))
        .filter(|p| !p.is_deleted())
    else {
        return missing("RESOURCE_NOT_FOUND");
    };
    let params = query_params(&parts.uri);
    let (page_num, per_page) = paging(&params, sim.inner.config.max_page_size)?;
    let omit = sim.inner.config.omit_empty_tags;
    let items = items(project, &params)
        .into_iter()
        .map(|v| without_empty_tags(v, omit))
        .collect();
    Ok(page(&parts.headers, &parts.uri, page_num, per_page, items))
}

/// A cluster as a listing shows it: the fields both listings share, and `extra`, the
/// listing's own.
fn cluster_json(project: &SimProject, c: &SimCluster, extra: Value) -> Value {
    let mut v = json!({
        "id": c.id,
        "name": c.name,
        "groupId": project.id,
        "clusterType": "REPLICASET",
        "stateName": "IDLE",
        "mongoDBVersion": "8.0.4",
        "tags": tags_json(&c.tags),
    });
    if let (Some(fields), Value::Object(extra)) = (v.as_object_mut(), extra) {
        fields.extend(extra);
    }
    v
}

/// `GET /api/atlas/v2/groups/{groupId}/clusters`: dedicated clusters (with
/// `includeDeletedWithRetainedBackups=true`, those deleted with retained backups too; Flex
/// ones only in the `flex_in_clusters_listing` variant).
pub(super) async fn clusters(
    State(sim): State<Simulator>,
    Path(group_id): Path<String>,
    parts: Parts,
) -> Answer {
    let flex_too = sim.inner.config.flex_in_clusters_listing;
    project_listing(
        &sim,
        SimEndpoint::Clusters,
        &group_id,
        &parts,
        &CLUSTER_TYPES,
        |project, params| {
            let retained = query_param(params, "includeDeletedWithRetainedBackups")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            project
                .clusters
                .iter()
                .filter(|c| c.in_clusters_listing(retained) || (flex_too && c.in_flex_listing()))
                .map(|c| cluster_json(project, c, json!({"paused": false})))
                .collect()
        },
    )
    .await
}

/// `GET /api/atlas/v2/groups/{groupId}/flexClusters`: the project's live Flex clusters.
pub(super) async fn flex_clusters(
    State(sim): State<Simulator>,
    Path(group_id): Path<String>,
    parts: Parts,
) -> Answer {
    project_listing(
        &sim,
        SimEndpoint::FlexClusters,
        &group_id,
        &parts,
        &[FLEX_TYPE],
        |project, _| {
            project
                .listed_flex_clusters()
                .map(|c| {
                    let extra = json!({
                        "versionReleaseSystem": "LTS",
                        "terminationProtectionEnabled": false,
                        "createDate": "2025-03-04T10:00:00Z",
                        "providerSettings": {
                            "backingProviderName": "AWS",
                            "providerName": "FLEX",
                            "regionName": "US_EAST_1",
                            "diskSizeGB": 5.0,
                        },
                    });
                    cluster_json(project, c, extra)
                })
                .collect()
        },
    )
    .await
}
