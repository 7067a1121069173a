//! Discovery: the org's projects, and each project's clusters and Flex clusters, read page
//! by page, with their resource tags. Only ids that are Atlas ids come out of it.

use std::collections::HashSet;

use reqwest::Method;
use serde::Deserialize;
use tokio::time::Instant;

use super::{AtlasClient, AtlasError, JSON_MEDIA_TYPE};
use crate::model::{Endpoint, is_atlas_id};

/// `listGroupClusters`: 2024-08-05 is its current version (2023-01-01 and 2023-02-01 are
/// sunset on 2027-07-01). `id`, `name` and, when present, `tags` are read.
pub const CLUSTERS_MEDIA_TYPE: &str = "application/vnd.atlas.2024-08-05+json";
/// `listGroupFlexClusters`: the only version it declares.
pub const FLEX_MEDIA_TYPE: &str = "application/vnd.atlas.2024-11-13+json";
/// Discovery page size (the API maximum).
pub const PAGE_SIZE: usize = 500;
/// Pages read at most per listing: 5M items, far beyond any org.
const MAX_PAGES: usize = 10_000;

/// A resource tag of a project or cluster, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The key (`team`).
    pub key: String,
    /// The value.
    pub value: String,
}

/// A project found by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// 24-hex id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its resource tags as listed (none when the listing has no `tags`).
    pub tags: Vec<Tag>,
}

/// A cluster found by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// 24-hex unique id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its resource tags as listed (none when the listing has no `tags`).
    pub tags: Vec<Tag>,
}

/// An item of a listing with a valid id.
pub(super) struct Listed {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) tags: Vec<Tag>,
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
    /// Read leniently: a missing, null or oddly shaped `tags` is no tags, never a failed page.
    #[serde(default)]
    tags: Option<serde_json::Value>,
}

/// The `{"key", "value"}` pairs of a `tags` value; entries without a string key and value
/// (or with an empty key) are skipped.
fn parse_tags(tags: Option<&serde_json::Value>) -> Vec<Tag> {
    let Some(serde_json::Value::Array(items)) = tags else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|t| {
            let key = t.get("key")?.as_str()?;
            let value = t.get("value")?.as_str()?;
            (!key.is_empty()).then(|| Tag {
                key: key.to_owned(),
                value: value.to_owned(),
            })
        })
        .collect()
}

/// One page of a listing, read: its items with an Atlas id (in order, tags parsed), the ids
/// of the others, how many items it had and its `totalCount`.
pub(super) struct ReadPage {
    pub(super) listed: Vec<Listed>,
    pub(super) skipped: Vec<Option<String>>,
    pub(super) items: usize,
    pub(super) total_count: Option<u64>,
}

/// Reads one page of a listing (projects, clusters and Flex clusters share the shape).
///
/// # Errors
/// When the body is not a JSON results page.
pub(super) fn read_page(body: &[u8]) -> Result<ReadPage, serde_json::Error> {
    if !super::is_json_object(body) {
        return Err(serde::de::Error::custom("not a JSON object"));
    }
    let page: Page = serde_json::from_slice(body)?;
    let mut read = ReadPage {
        listed: Vec::with_capacity(page.results.len()),
        skipped: Vec::new(),
        items: page.results.len(),
        total_count: page.total_count,
    };
    for item in page.results {
        match (item.id, item.name) {
            (Some(id), name) if is_atlas_id(&id) => read.listed.push(Listed {
                tags: parse_tags(item.tags.as_ref()),
                id,
                name: name.unwrap_or_default(),
            }),
            (id, _) => read.skipped.push(id),
        }
    }
    Ok(read)
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
            .map(|l| Project {
                id: l.id,
                name: l.name,
                tags: l.tags,
            })
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
                .map(|l| Cluster {
                    id: l.id,
                    name: l.name,
                    tags: l.tags,
                })
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
    ) -> Result<Vec<Listed>, AtlasError> {
        let mut out: Vec<Listed> = Vec::new();
        let mut seen = HashSet::new();
        for page_num in 1..=MAX_PAGES {
            let url = format!("{path}pageNum={page_num}&itemsPerPage={PAGE_SIZE}");
            let reply = self
                .retrying(deadline, || {
                    self.send(endpoint, Method::GET, &url, accept, None)
                })
                .await?;
            let page = read_page(&reply.body).map_err(|e| AtlasError::Decode {
                endpoint,
                message: format!("listing page {page_num} is not a results page: {e}"),
            })?;
            let n = page.items;
            let before = out.len();
            for id in &page.skipped {
                tracing::warn!(org_id = %self.org_id, %endpoint, id = ?id, "skipping an item whose id is not an Atlas id");
            }
            for item in page.listed {
                if seen.insert(item.id.clone()) {
                    out.push(item);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing page is a JSON object: `[]` (or any array, which serde's derive would read
    /// by position) is a decode error, not an empty page that ends the listing (found by the
    /// `listing` fuzz target).
    #[test]
    fn a_page_that_is_no_object_is_an_error() {
        for body in [
            &b"[]"[..],
            br#"[[{"id":"aaaaaaaaaaaaaaaaaaaaaaaa"}], 1]"#,
            b"null",
        ] {
            let e = read_page(body).err().expect("not a page");
            assert!(e.to_string().contains("not a JSON object"), "{e}");
        }
        let page = read_page(br#" {"results":[{"id":"aaaaaaaaaaaaaaaaaaaaaaaa","name":"c"}]}"#)
            .expect("a page");
        assert_eq!((page.items, page.listed.len()), (1, 1));
    }

    /// Tags are read as listed; a missing, null or malformed `tags`, and entries without a
    /// string key and value, are no tags rather than a failed page.
    #[test]
    fn tags_are_read_leniently() {
        let page: Page = serde_json::from_str(
            r#"{"results": [
                {"id": "a", "tags": [{"key": "team", "value": "web"}, {"key": "env"},
                                     {"key": "", "value": "x"}, {"key": 1, "value": "y"},
                                     {"key": "cost-center", "value": "CC \u00e9"}]},
                {"id": "b"},
                {"id": "c", "tags": null},
                {"id": "d", "tags": {"team": "web"}}
            ]}"#,
        )
        .expect("a page");
        let tags: Vec<Vec<Tag>> = page
            .results
            .iter()
            .map(|i| parse_tags(i.tags.as_ref()))
            .collect();
        let tag = |k: &str, v: &str| Tag {
            key: k.to_owned(),
            value: v.to_owned(),
        };
        assert_eq!(
            tags,
            [
                vec![tag("team", "web"), tag("cost-center", "CC \u{e9}")],
                vec![],
                vec![],
                vec![]
            ]
        );
    }
}
