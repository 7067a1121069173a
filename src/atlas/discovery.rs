//! Discovery: the org's projects, and each project's clusters and Flex clusters, read page
//! by page. Only ids that are Atlas ids come out of it.

use std::collections::HashSet;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::{AtlasClient, AtlasError, JSON_MEDIA_TYPE};
use crate::model::{Endpoint, is_atlas_id};

/// `listGroupClusters`: 2024-08-05 is its current version (2023-01-01 and 2023-02-01 are
/// sunset on 2027-07-01). Only `id` and `name` are read, which every version has.
pub const CLUSTERS_MEDIA_TYPE: &str = "application/vnd.atlas.2024-08-05+json";
/// `listGroupFlexClusters`: the only version it declares.
pub const FLEX_MEDIA_TYPE: &str = "application/vnd.atlas.2024-11-13+json";
/// Discovery page size (the API maximum).
pub const PAGE_SIZE: usize = 500;
/// Pages read at most per listing: 5M items, far beyond any org.
const MAX_PAGES: usize = 10_000;

/// A project found by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// 24-hex id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A cluster found by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// 24-hex unique id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// One page of a listing.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    results: Vec<Item>,
    #[serde(default, rename = "totalCount")]
    total_count: Option<u64>,
}

/// One item of a page: a project or a cluster.
#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl AtlasClient {
    /// Lists the org's projects (all pages).
    ///
    /// # Errors
    /// The first error that retries did not overcome.
    pub async fn projects(&self, deadline: Instant) -> Result<Vec<Project>, AtlasError> {
        let path = format!("/api/atlas/v2/orgs/{}/groups?", self.org_id);
        let items = self
            .list(Endpoint::Projects, &path, JSON_MEDIA_TYPE, deadline)
            .await?;
        Ok(items
            .into_iter()
            .map(|(id, name)| Project { id, name })
            .collect())
    }

    /// Lists the clusters of a project (all pages), those deleted with retained backups
    /// included: they still bill for backup. A project that is gone (404: deleted while the
    /// org was being listed) has no clusters.
    ///
    /// # Errors
    /// [`AtlasError::InvalidId`] for a project id that is not an Atlas id; else the first
    /// error that retries did not overcome.
    pub async fn clusters(
        &self,
        project_id: &str,
        deadline: Instant,
    ) -> Result<Vec<Cluster>, AtlasError> {
        self.project_listing(
            Endpoint::Clusters,
            project_id,
            "clusters?includeDeletedWithRetainedBackups=true&",
            CLUSTERS_MEDIA_TYPE,
            deadline,
        )
        .await
    }

    /// Lists the Flex clusters of a project (all pages). Since January 2026 the clusters
    /// listing no longer shows them; only this one does. A project that is gone has none.
    ///
    /// # Errors
    /// As [`AtlasClient::clusters`].
    pub async fn flex_clusters(
        &self,
        project_id: &str,
        deadline: Instant,
    ) -> Result<Vec<Cluster>, AtlasError> {
        self.project_listing(
            Endpoint::FlexClusters,
            project_id,
            "flexClusters?",
            FLEX_MEDIA_TYPE,
            deadline,
        )
        .await
    }

    async fn project_listing(
        &self,
        endpoint: Endpoint,
        project_id: &str,
        path_and_params: &str,
        accept: &'static str,
        deadline: Instant,
    ) -> Result<Vec<Cluster>, AtlasError> {
        if !is_atlas_id(project_id) {
            return Err(AtlasError::InvalidId(project_id.to_owned()));
        }
        let path = format!("/api/atlas/v2/groups/{project_id}/{path_and_params}");
        match self.list(endpoint, &path, accept, deadline).await {
            Ok(items) => Ok(items
                .into_iter()
                .map(|(id, name)| Cluster { id, name })
                .collect()),
            Err(AtlasError::Status { status: 404, .. }) => {
                tracing::debug!(org_id = %self.org_id, %endpoint, project_id, "project not found while listing it: no clusters");
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads every page of a listing (`path` ends in `?` or `&`). Stops on an empty page, on
    /// a page that brings no new id (a server that ignores `pageNum` would otherwise be read
    /// 10,000 times), or on a short page once `totalCount` items are in (the spec calls
    /// `totalCount` an estimate). Items whose id is not an Atlas id are skipped and logged:
    /// they could not be used in a URL anyway.
    async fn list(
        &self,
        endpoint: Endpoint,
        path: &str,
        accept: &'static str,
        deadline: Instant,
    ) -> Result<Vec<(String, String)>, AtlasError> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut seen = HashSet::new();
        for page_num in 1..=MAX_PAGES {
            let url = format!("{path}pageNum={page_num}&itemsPerPage={PAGE_SIZE}");
            let reply = self
                .retrying(deadline, || {
                    self.send(endpoint, Method::GET, &url, accept, None)
                })
                .await?;
            let page: Page =
                serde_json::from_slice(&reply.body).map_err(|e| AtlasError::Decode {
                    endpoint,
                    message: format!("listing page {page_num} is not a results page: {e}"),
                })?;
            let n = page.results.len();
            let before = out.len();
            for item in page.results {
                match (item.id, item.name) {
                    (Some(id), name) if is_atlas_id(&id) => {
                        if seen.insert(id.clone()) {
                            out.push((id, name.unwrap_or_default()));
                        }
                    }
                    (id, _) => {
                        tracing::warn!(org_id = %self.org_id, %endpoint, id = ?id, "skipping an item whose id is not an Atlas id");
                    }
                }
            }
            let total = page.total_count.map_or(u64::MAX, |t| t);
            if n == 0 || out.len() == before || (n < PAGE_SIZE && out.len() as u64 >= total) {
                return Ok(out);
            }
        }
        Ok(out)
    }
}
