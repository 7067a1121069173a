//! The simulator's HTTP face: the routes, and what every Atlas API handler does first.
//!
//! Every request is counted, then answered with an injected fault if one is set, then
//! authenticated, then checked for media types, then validated; errors use the Atlas error
//! body. Errors are never wrapped in an envelope (only successful answers are).
//!
//! The handlers, by endpoint family: `token` (OAuth), `cost_explorer` (create and poll, with
//! `filter` for the create body and `render_csv` for CSV results) and `discovery` (projects,
//! clusters, Flex clusters). `respond` shapes the answers, `faults` the injected ones.

mod cost_explorer;
mod discovery;
mod faults;
mod filter;
mod invoices;
mod render_csv;
mod respond;
mod token;

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;

pub(super) use cost_explorer::Query;
pub use invoices::{LINE_ITEMS_TYPE, invoice_id, sku_name};
pub use render_csv::{CSV_HEADER, SPEC_CSV_HEADER};
use respond::{Rejected, atlas_error, atlas_error_with, not_found};

use super::auth::{self, Denied};
use super::data::Dataset;
use super::{Fault, LOG_LIMIT, SimEndpoint, SimRequest, Simulator};

/// The JSON media type of the only API version these endpoints declare.
pub const JSON_TYPE: &str = "application/vnd.atlas.2023-01-01+json";
/// The CSV media type of the result.
pub const CSV_TYPE: &str = "application/vnd.atlas.2023-01-01+csv";
/// The versions `listGroupClusters` declares: 2024-08-05 is current, the other two are
/// sunset on 2027-07-01.
pub const CLUSTER_TYPES: [&str; 3] = [
    "application/vnd.atlas.2024-08-05+json",
    "application/vnd.atlas.2023-02-01+json",
    JSON_TYPE,
];

/// The only version `listGroupFlexClusters` declares.
pub const FLEX_TYPE: &str = "application/vnd.atlas.2024-11-13+json";

/// All routes, with `sim` as state.
pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/api/oauth/token", post(token::token))
        .route(
            "/api/atlas/v2/orgs/{org_id}/billing/costExplorer/usage",
            post(cost_explorer::create),
        )
        .route(
            "/api/atlas/v2/orgs/{org_id}/billing/costExplorer/usage/{token}",
            get(cost_explorer::poll),
        )
        .route(
            "/api/atlas/v2/orgs/{org_id}/groups",
            get(discovery::projects),
        )
        .route(
            "/api/atlas/v2/groups/{group_id}/clusters",
            get(discovery::clusters),
        )
        .route(
            "/api/atlas/v2/groups/{group_id}/flexClusters",
            get(discovery::flex_clusters),
        )
        .route(
            "/api/atlas/v2/orgs/{org_id}/invoices/pending",
            get(invoices::pending),
        )
        .route("/api/atlas/v2/orgs/{org_id}/invoices", get(invoices::list))
        .route(
            "/api/atlas/v2/orgs/{org_id}/invoices/{invoice_id}/lineItems:search",
            get(invoices::line_items),
        )
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            track_in_flight,
        ))
        .with_state(sim)
}

/// Counts requests between their arrival and their response headers, for
/// [`Simulator::max_in_flight`].
async fn track_in_flight(
    State(sim): State<Simulator>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let now = sim.inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    sim.inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let resp = next.run(req).await;
    sim.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

impl Simulator {
    /// Counts and logs the request; answers the injected fault, if any (a delay is waited
    /// out, then the request goes on).
    async fn begin(&self, endpoint: SimEndpoint, org: Option<&str>) -> Option<Response> {
        self.inner.counts[endpoint.index()].fetch_add(1, Ordering::Relaxed);
        {
            let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() >= LOG_LIMIT {
                log.pop_front();
            }
            log.push_back(SimRequest {
                at: Instant::now(),
                endpoint,
                org_id: org.map(str::to_owned),
            });
        }
        match self.take_fault(endpoint, org)? {
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                None
            }
            fault => Some(faults::fault_response(&fault)),
        }
    }

    /// What every Atlas API handler does first: count and log the request, answer an injected
    /// fault, check authentication, then negotiate the media type among `allowed`.
    async fn admit(
        &self,
        endpoint: SimEndpoint,
        org: Option<&str>,
        request: &Parts,
        allowed: &[&'static str],
    ) -> Result<&'static str, Rejected> {
        if let Some(fault) = self.begin(endpoint, org).await {
            return Err(fault.into());
        }
        self.authorize(request)?;
        let media = negotiate(&request.headers, allowed)?;
        if let Some(status) = self.inner.config.refuse_csv_envelope
            && endpoint == SimEndpoint::Poll
            && media == CSV_TYPE
            && wants_envelope(&query_params(&request.uri))
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_ACCEPTABLE);
            return Err(atlas_error(
                status,
                if status == StatusCode::NOT_ACCEPTABLE {
                    "INVALID_VERSION_DATE"
                } else {
                    "INVALID_QUERY_PARAMETER"
                },
                "envelope=true is not supported with text/csv results.",
            )
            .into());
        }
        Ok(media)
    }

    /// Bearer or Digest; otherwise a 401 with a Digest challenge.
    fn authorize(&self, request: &Parts) -> Result<(), Rejected> {
        let uri = &request.uri;
        let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let cfg = &self.inner.config;
        let denied =
            match self
                .inner
                .auth
                .check(&request.headers, request.method.as_str(), target, cfg)
            {
                Ok(()) => return Ok(()),
                Err(d) => d,
            };
        let (stale, detail) = match denied {
            Denied::Unauthorized(why) => (false, why),
            Denied::StaleNonce => (true, "The Digest nonce is stale."),
        };
        let nonce = self.inner.auth.issue_nonce(cfg);
        let mut resp = atlas_error(
            StatusCode::UNAUTHORIZED,
            "USER_UNAUTHORIZED",
            format!("Current user is not authorized to perform this action. {detail}"),
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, auth::challenge(&nonce, stale));
        Err(resp.into())
    }
}

/// The first media type of `Accept` (in header order) that is in `allowed`.
fn negotiate(headers: &HeaderMap, allowed: &[&'static str]) -> Result<&'static str, Rejected> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(media_type)
        .collect::<Vec<_>>();
    for a in &accept {
        if let Some(t) = allowed.iter().find(|t| **t == a) {
            return Ok(t);
        }
    }
    Err(atlas_error_with(
        StatusCode::NOT_ACCEPTABLE,
        "INVALID_VERSION_DATE",
        format!(
            "The requested media type {:?} is not supported; use {}.",
            accept.join(", "),
            allowed.join(" or ")
        ),
        accept.into_iter().map(Value::String).collect(),
    )
    .into())
}

/// The media type of a header value, without parameters, in lower case.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Refuses a request body that is not of media type `expected` with Atlas's 415.
fn require_body_type(parts: &Parts, expected: &str) -> Result<(), Rejected> {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type);
    if content_type.as_deref() == Some(expected) {
        return Ok(());
    }
    Err(atlas_error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        format!("The request body must be {expected}."),
    )
    .into())
}

/// The decoded query string of `uri`, in order.
fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query().map(auth::parse_form).unwrap_or_default()
}

/// The first value of `name` among `params`.
fn query_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether `envelope=true` was asked for.
fn wants_envelope(params: &[(String, String)]) -> bool {
    query_param(params, "envelope").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether `s` has the shape of an Atlas id: 24 lowercase hex characters.
fn is_object_id(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The org index of a path `orgId`, or the Atlas error for it.
fn find_org(data: &Dataset, org_id: &str) -> Result<usize, Rejected> {
    if !is_object_id(org_id) {
        return Err(not_found(
            "INVALID_ORG_ID",
            org_id,
            format!("The specified organization ID {org_id} is invalid."),
        ));
    }
    data.org_by_id(org_id).ok_or_else(|| {
        not_found(
            "RESOURCE_NOT_FOUND",
            org_id,
            format!("Cannot find resource organization {org_id}."),
        )
    })
}

/// An Atlas-style 404 for every other path.
async fn fallback(uri: Uri) -> Response {
    atlas_error(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        format!("Cannot find resource {}.", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// `Accept` is read in header order, values split at commas, parameters and letter case
    /// ignored: the first allowed type wins, even when a later one is also allowed.
    #[test]
    fn negotiation_takes_the_first_allowed_type_in_header_order() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::ACCEPT,
            HeaderValue::from_static("text/html, Application/VND.atlas.2023-01-01+CSV; q=0.1"),
        );
        headers.append(header::ACCEPT, HeaderValue::from_static(JSON_TYPE));
        assert_eq!(
            negotiate(&headers, &[JSON_TYPE, CSV_TYPE]).ok(),
            Some(CSV_TYPE)
        );
        assert_eq!(negotiate(&headers, &[JSON_TYPE]).ok(), Some(JSON_TYPE));
    }

    /// Without an allowed type in `Accept` the answer is 406 `INVALID_VERSION_DATE`, with
    /// what was asked for in `parameters`.
    #[tokio::test]
    async fn an_accept_without_an_allowed_type_is_refused_with_406() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let Err(refusal) = negotiate(&headers, &[FLEX_TYPE]) else {
            panic!("application/json accepted for the Flex listing");
        };
        let (status, body) = refusal.status_and_json().await;
        assert_eq!(status, 406);
        assert_eq!(body["errorCode"], "INVALID_VERSION_DATE");
        assert_eq!(body["parameters"], serde_json::json!(["application/json"]));
    }

    /// Path ids are 24 lowercase hex characters; anything else is not an id.
    #[test]
    fn only_24_lowercase_hex_characters_are_an_id() {
        assert!(is_object_id("0123456789abcdef01234567"));
        assert!(!is_object_id("0123456789ABCDEF01234567"));
        assert!(!is_object_id("0123456789abcdef0123456"));
        assert!(!is_object_id("0123456789abcdef0123456g"));
    }

    /// An unknown org id is a 404 `RESOURCE_NOT_FOUND`, a malformed one `INVALID_ORG_ID`; each
    /// names the id in `parameters`.
    #[tokio::test]
    async fn an_org_id_is_found_or_refused_with_404() {
        let month = crate::month::Month::new(2026, 11).expect("month");
        let data = Dataset::generate(&super::super::SimConfig::default(), month);
        assert_eq!(find_org(&data, &data.orgs[1].id).ok(), Some(1));
        for (id, code) in [
            ("0123456789abcdef01234567", "RESOURCE_NOT_FOUND"),
            ("not-an-id", "INVALID_ORG_ID"),
        ] {
            let Err(refusal) = find_org(&data, id) else {
                panic!("{id} found");
            };
            let (status, body) = refusal.status_and_json().await;
            assert_eq!((status, body["errorCode"].as_str()), (404, Some(code)));
            assert_eq!(body["parameters"], serde_json::json!([id]));
        }
    }
}
