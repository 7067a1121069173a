//! The Cost Explorer endpoints: `POST .../usage` creates a query over a snapshot of the data
//! and answers its token; `GET .../usage/{token}` answers "not ready" as configured, then the
//! result as JSON rows (rendered here) or CSV (`render_csv`), in an envelope when asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use md5::{Digest as _, Md5};
use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::json;

use super::faults::broken_response;
use super::filter::{Row, compute, parse_filter};
use super::respond::{
    Answer, Envelope, atlas_error, atlas_json, json_or_500, not_found, to_json_sized,
};
use super::{CSV_TYPE, JSON_TYPE, find_org, query_params, require_body_type, wants_envelope};
use crate::month::Month;
use crate::simulator::auth;
use crate::simulator::data::{Dataset, GroupBy};
use crate::simulator::{CreatedQuery, NotReady, RowKeys, SimEndpoint, Simulator};

/// A created query: its data snapshot, computed rows, and how often it was polled.
pub struct Query {
    pub(super) org: usize,
    pub(super) group_by: GroupBy,
    pub(super) data: Arc<Dataset>,
    pub(super) rows: Vec<Row>,
    polls: AtomicU32,
    created: Instant,
}

/// `POST /api/atlas/v2/orgs/{orgId}/billing/costExplorer/usage`: 202 and a 64-hex token (or
/// the same in a 200 `{"status":202}` envelope).
pub(super) async fn create(
    State(sim): State<Simulator>,
    Path(org_id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Answer {
    sim.admit(SimEndpoint::Create, Some(&org_id), &parts, &[JSON_TYPE])
        .await?;
    require_body_type(&parts, JSON_TYPE)?;
    let data = sim.dataset();
    let org = find_org(&data, &org_id)?;
    let filter = parse_filter(&body, sim.inner.current)?;
    sim.log_created(CreatedQuery {
        org_id: org_id.clone(),
        group_by: filter.group_by,
        start: filter.start,
        end: filter.end,
    });
    let rows = compute(&data, org, &filter, sim.inner.config.duplicate_rows);
    let token = auth::random_hex(32);
    let query = Arc::new(Query {
        org,
        group_by: filter.group_by,
        data,
        rows,
        polls: AtomicU32::new(0),
        created: Instant::now(),
    });
    {
        let ttl = sim.inner.config.query_ttl;
        let mut queries = sim.inner.queries.lock().unwrap_or_else(|e| e.into_inner());
        queries.retain(|_, q| q.created.elapsed() < ttl);
        queries.insert(token.clone(), query);
    }
    let params = query_params(&parts.uri);
    Ok(
        if wants_envelope(&params) && !sim.inner.ignore_envelope.load(Ordering::Relaxed) {
            atlas_json(
                StatusCode::OK,
                json!({"status": 202, "content": {"token": token}}).to_string(),
            )
        } else {
            atlas_json(StatusCode::ACCEPTED, json!({"token": token}).to_string())
        },
    )
}

/// `GET /api/atlas/v2/orgs/{orgId}/billing/costExplorer/usage/{token}`: 404 for an unknown or
/// expired token, "not ready" for the first polls, then the result in the negotiated type.
pub(super) async fn poll(
    State(sim): State<Simulator>,
    Path((org_id, token)): Path<(String, String)>,
    parts: Parts,
) -> Answer {
    let media = sim
        .admit(
            SimEndpoint::Poll,
            Some(&org_id),
            &parts,
            &[JSON_TYPE, CSV_TYPE],
        )
        .await?;
    let org = find_org(&sim.dataset(), &org_id)?;
    let query = {
        let queries = sim.inner.queries.lock().unwrap_or_else(|e| e.into_inner());
        queries.get(&token).cloned()
    };
    let query = match query {
        Some(q) if q.org == org && q.created.elapsed() < sim.inner.config.query_ttl => q,
        _ => {
            return Err(not_found(
                "RESOURCE_NOT_FOUND",
                &token,
                format!("Cannot find resource cost explorer query {token}."),
            ));
        }
    };
    let envelope = wants_envelope(&query_params(&parts.uri));
    let polls = query.polls.fetch_add(1, Ordering::Relaxed) + 1;
    if polls <= sim.inner.polls_before_ready.load(Ordering::Relaxed) {
        let form = *sim
            .inner
            .not_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let not_ready = || {
            if envelope {
                atlas_json(
                    StatusCode::OK,
                    r#"{"status":102,"content":null}"#.to_string(),
                )
            } else {
                broken_response()
            }
        };
        return Ok(match form {
            NotReady::Envelope => not_ready(),
            NotReady::Timeout(delay) => {
                tokio::time::sleep(delay).await;
                not_ready()
            }
            NotReady::Close => broken_response(),
        });
    }
    let envelope = envelope && !sim.inner.ignore_envelope.load(Ordering::Relaxed);
    if media == CSV_TYPE {
        let text = query.csv(sim.inner.config.csv_layout).map_err(|e| {
            atlas_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNEXPECTED_ERROR",
                format!("CSV encoding failed: {e}"),
            )
        })?;
        if envelope {
            let capacity = text.len() + text.len() / 8 + 64;
            return Ok(json_or_500(to_json_sized(
                &Envelope {
                    status: 200,
                    content: text,
                },
                capacity,
            )));
        }
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CSV_TYPE))],
            text,
        )
            .into_response());
    }
    let result = JsonResult {
        usage_details: JsonRows {
            query: &query,
            keys: sim.inner.config.row_keys,
        },
    };
    let capacity = query.rows.len().saturating_mul(JSON_ROW_BYTES) + 256;
    Ok(json_or_500(if envelope {
        to_json_sized(
            &Envelope {
                status: 200,
                content: result,
            },
            capacity,
        )
    } else {
        to_json_sized(&result, capacity)
    }))
}

/// A result row as JSON: dimension fields absent when not part of the grouping, project and
/// cluster keys spelled as `keys` says.
pub(super) struct JsonRow<'a> {
    keys: RowKeys,
    pub(super) invoice_id: String,
    pub(super) organization_id: &'a str,
    pub(super) organization_name: &'a str,
    pub(super) project_id: Option<&'a str>,
    pub(super) project_name: Option<&'a str>,
    pub(super) cluster_id: Option<&'a str>,
    pub(super) cluster_name: Option<&'a str>,
    pub(super) service: Option<&'a str>,
    usage_amount: f64,
    pub(super) cents: i64,
    pub(super) usage_date: String,
    pub(super) billed_date: String,
}

impl Serialize for JsonRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let [project_id, project_name, cluster_id, cluster_name] = self.keys.keys();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("invoiceId", &self.invoice_id)?;
        m.serialize_entry("organizationId", self.organization_id)?;
        m.serialize_entry("organizationName", self.organization_name)?;
        for (key, value) in [
            (project_id, self.project_id),
            (project_name, self.project_name),
            (cluster_id, self.cluster_id),
            (cluster_name, self.cluster_name),
            ("service", self.service),
        ] {
            if let Some(v) = value {
                m.serialize_entry(key, v)?;
            }
        }
        m.serialize_entry("usageAmount", &self.usage_amount)?;
        m.serialize_entry("usageDate", &self.usage_date)?;
        m.serialize_entry("billedDate", &self.billed_date)?;
        m.end()
    }
}

/// Generous bytes per JSON result row (they are about 300), to size the body's buffer.
const JSON_ROW_BYTES: usize = 400;

/// The JSON result body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResult<'a> {
    usage_details: JsonRows<'a>,
}

/// A query's rows serialized one at a time as they are made: a 1,000,000-row result never
/// holds all its [`JsonRow`]s (three owned strings each) at once.
struct JsonRows<'a> {
    query: &'a Query,
    keys: RowKeys,
}

impl Serialize for JsonRows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.query.json_rows(self.keys))
    }
}

/// Invoice ids are per org and month, stable across queries.
fn invoice_id(org_id: &str, month: Month) -> String {
    let digest = Md5::digest(format!("invoice:{org_id}:{month}").as_bytes());
    let mut id = hex::encode(digest);
    id.truncate(24);
    id
}

impl Query {
    /// The result rows as JSON, project and cluster keys spelled as `keys` says, made one at
    /// a time (none when the org is unknown).
    pub(super) fn json_rows(&self, keys: RowKeys) -> impl Iterator<Item = JsonRow<'_>> {
        let org = self.data.orgs.get(self.org);
        org.into_iter().flat_map(move |org| {
            self.rows.iter().map(move |r| {
                let project = r.project.and_then(|p| org.projects.get(p));
                let cluster = r
                    .cluster
                    .and_then(|c| project.and_then(|p| p.clusters.get(c)));
                #[allow(clippy::cast_precision_loss)]
                let usage_amount = r.cents as f64 / 100.0;
                JsonRow {
                    keys,
                    invoice_id: invoice_id(&org.id, r.month),
                    organization_id: &org.id,
                    organization_name: &org.name,
                    project_id: project.map(|p| p.id.as_str()),
                    project_name: project.map(|p| p.name.as_str()),
                    cluster_id: cluster.map(|c| c.id.as_str()),
                    cluster_name: cluster.map(|c| c.name.as_str()),
                    service: r.service.as_deref(),
                    usage_amount,
                    cents: r.cents,
                    usage_date: r.month.first_day(),
                    billed_date: r.month.plus(1).first_day(),
                }
            })
        })
    }
}
