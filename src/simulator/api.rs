//! The HTTP handlers.
//!
//! Every request is counted, then answered with an injected fault if one is set, then
//! authenticated, then checked for media types, then validated; errors use the Atlas error
//! body. Errors are never wrapped in an envelope (only successful answers are).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use md5::{Digest as _, Md5};
use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::{Value, json};

use super::auth::{self, Denied};
use super::data::{Dataset, GroupBy, SimCluster, SimProject, SimTag};
use super::{CsvLayout, Fault, NotReady, RowKeys, SimEndpoint, Simulator};
use crate::month::Month;

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

/// Months of data Atlas keeps (and accepts queries for).
const HISTORY_MONTHS: i64 = 18;

/// Header of the CSV result table in the [`CsvLayout::Extended`] layout.
pub const CSV_HEADER: [&str; 11] = [
    "Billed Date",
    "Invoice Id",
    "Organization Name",
    "Organization ID",
    "Project Name",
    "Project Id",
    "Cluster Name",
    "Cluster Unique Id",
    "Service",
    "Usage Date",
    "Usage Amount",
];

/// The column labels of the spec's CSV example, in its order ([`CsvLayout::Spec`]).
pub const SPEC_CSV_HEADER: [&str; 9] = [
    "Billed Date",
    "Invoice Id",
    "Organization Name",
    "Organization ID",
    "Project Name",
    "Project Id",
    "Cluster Name",
    "Cluster Unique Id",
    "Usage Amount",
];

/// A body of the shape of the CSV example of `getCostExplorerUsage` in the Atlas OpenAPI
/// spec (2026-08), as YAML reads it: the labels down the first column, values under the
/// wrong labels (`Billed Date` holds an id, `Invoice Id` a date range), one line per label.
/// The values are the query's own (the spec's text is not copied). Served by
/// [`CsvLayout::SpecExample`].
fn spec_example_shaped(org_id: &str, org_name: &str, month: Option<Month>, cents: i64) -> String {
    let range = month.map_or_else(String::new, |m| {
        format!("{} - {}", m.first_day(), m.plus(1).first_day())
    });
    let values = [
        org_id.to_owned(),
        range,
        org_name.to_owned(),
        org_id.to_owned(),
        org_id.to_owned(),
        org_id.to_owned(),
        "TestCluster".to_owned(),
        org_id.to_owned(),
        format!(" {}", format_cents(cents)),
    ];
    let mut out = String::new();
    for (i, (label, value)) in SPEC_CSV_HEADER.iter().zip(values).enumerate() {
        let quoted = if value.contains(',') {
            format!("\"{value}\"")
        } else {
            value
        };
        // The spec's lines end in a comma for the first six labels only.
        let comma = if i < 6 { "," } else { "" };
        out.push_str(&format!("{label},{quoted}{comma}\n"));
    }
    out
}

/// The [`CsvLayout::NoPreamble`] header: the Extended labels in other cases, with stray
/// spaces, and two empty trailing cells.
const NO_PREAMBLE_HEADER: [&str; 13] = [
    " billed date",
    "INVOICE ID ",
    "organization name",
    " Organization Id ",
    "PROJECT NAME",
    "project id ",
    "Cluster name",
    " CLUSTER UNIQUE ID",
    "service ",
    " Usage date",
    "USAGE AMOUNT ",
    "",
    "",
];

/// A created query: its data snapshot, computed rows, and how often it was polled.
pub struct Query {
    org: usize,
    group_by: GroupBy,
    data: Arc<Dataset>,
    rows: Vec<Row>,
    polls: AtomicU32,
    created: Instant,
}

/// One result row: the group key and the summed amount.
struct Row {
    month: Month,
    project: Option<usize>,
    cluster: Option<usize>,
    service: Option<String>,
    cents: i64,
}

/// All routes, with `sim` as state.
pub fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/api/oauth/token", post(token))
        .route(
            "/api/atlas/v2/orgs/{org_id}/billing/costExplorer/usage",
            post(create),
        )
        .route(
            "/api/atlas/v2/orgs/{org_id}/billing/costExplorer/usage/{token}",
            get(poll),
        )
        .route("/api/atlas/v2/orgs/{org_id}/groups", get(projects))
        .route("/api/atlas/v2/groups/{group_id}/clusters", get(clusters))
        .route(
            "/api/atlas/v2/groups/{group_id}/flexClusters",
            get(flex_clusters),
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

// ---------------------------------------------------------------- responses

/// An error answer on its way out (boxed: a `Response` is large for a `Result`).
type Rejected = Box<Response>;

/// The Atlas error body with `status`.
fn atlas_error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    atlas_error_with(status, code, detail, Vec::new())
}

fn atlas_error_with(
    status: StatusCode,
    code: &str,
    detail: impl Into<String>,
    parameters: Vec<Value>,
) -> Response {
    let body = json!({
        "error": status.as_u16(),
        "errorCode": code,
        "reason": status.canonical_reason().unwrap_or("Error"),
        "detail": detail.into(),
        "parameters": parameters,
    });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// A 400 `VALIDATION_ERROR` naming the offending field in `badRequestDetail`.
fn field_error(code: &str, field: &str, detail: String) -> Rejected {
    let body = json!({
        "error": 400,
        "errorCode": code,
        "reason": "Bad Request",
        "detail": detail,
        "parameters": [field],
        "badRequestDetail": {"fields": [{"field": field, "description": detail}]},
    });
    (
        StatusCode::BAD_REQUEST,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
        .into()
}

fn atlas_json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
        body,
    )
        .into_response()
}

/// A 429 `RATE_LIMITED` with `RateLimit-Limit: 100`, `RateLimit-Remaining: 0` and, when
/// given, this `Retry-After`.
fn rate_limited(retry_after: Option<HeaderValue>) -> Response {
    let mut resp = atlas_error(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        "You have exceeded the rate limit for this endpoint.",
    );
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static("ratelimit-limit"),
        HeaderValue::from(100u32),
    );
    headers.insert(
        HeaderName::from_static("ratelimit-remaining"),
        HeaderValue::from(0u32),
    );
    if let Some(v) = retry_after {
        headers.insert(header::RETRY_AFTER, v);
    }
    resp
}

fn fault_response(fault: &Fault) -> Response {
    match fault {
        Fault::Delay(_) => atlas_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNEXPECTED_ERROR",
            "delay",
        ),
        Fault::Trickle(every) => {
            let every = *every;
            let body =
                br#"{"token":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
            let stream = futures_util::stream::unfold(0usize, move |i| async move {
                if i >= body.len() {
                    return None;
                }
                tokio::time::sleep(every).await;
                Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from_static(&body[i..=i])),
                    i + 1,
                ))
            });
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Fault::ResetMidBody => {
            let stream = futures_util::stream::iter([
                Ok::<Bytes, std::io::Error>(Bytes::from_static(
                    br#"{"usageDetails":[{"usageAmount":1"#,
                )),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated connection reset",
                )),
            ]);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Fault::Body {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let content_type = HeaderValue::from_str(content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
            (status, [(header::CONTENT_TYPE, content_type)], body.clone()).into_response()
        }
        Fault::Huge(size) => {
            const ROW: &[u8] = br#"{"organizationId":"000000000000000000000000","service":"Clusters","usageAmount":1.0,"usageDate":"2026-01-01"},"#;
            let rows = (*size / ROW.len()).max(1);
            let chunk_rows = (64 * 1024 / ROW.len()).max(1);
            let chunk = Bytes::from(ROW.repeat(chunk_rows));
            let head = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(
                Bytes::from_static(b"{\"usageDetails\":["),
            )]);
            let body = futures_util::stream::iter(
                (0..rows.div_ceil(chunk_rows)).map(move |_| Ok(chunk.clone())),
            );
            let tail = futures_util::stream::iter([Ok(Bytes::from_static(
                br#"{"usageAmount":1.0,"usageDate":"2026-01-01"}]}"#,
            ))]);
            use futures_util::StreamExt as _;
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
                Body::from_stream(head.chain(body).chain(tail)),
            )
                .into_response()
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error_code = match status.as_u16() {
                400 => "VALIDATION_ERROR",
                401 => "USER_UNAUTHORIZED",
                403 => "IP_ADDRESS_NOT_ON_WHITELIST",
                404 => "RESOURCE_NOT_FOUND",
                429 => "RATE_LIMITED",
                _ => "UNEXPECTED_ERROR",
            };
            atlas_error(status, error_code, "Injected fault.")
        }
        Fault::RateLimited { retry_after } => rate_limited(retry_after.map(HeaderValue::from)),
        Fault::RateLimitedUntil(ahead) => {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now() + *ahead);
            rate_limited(HeaderValue::from_str(&date).ok())
        }
        Fault::Redirect(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::FOUND);
            (
                status,
                [(
                    header::LOCATION,
                    HeaderValue::from_static("https://account.mongodb.com/account/login"),
                )],
            )
                .into_response()
        }
        Fault::Html(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY);
            let title = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            );
            let body = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                body,
            )
                .into_response()
        }
    }
}

/// 200 headers, then a body that fails at once: the client sees the connection die.
fn broken_response() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "simulated connection drop",
        ))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
        Body::from_stream(stream),
    )
        .into_response()
}

// ---------------------------------------------------------------- common checks

impl Simulator {
    /// Counts and logs the request; answers the injected fault, if any (a delay is waited
    /// out, then the request goes on).
    async fn begin(&self, endpoint: SimEndpoint, org: Option<&str>) -> Option<Response> {
        self.inner.counts[endpoint.index()].fetch_add(1, Ordering::Relaxed);
        {
            let mut log = self.inner.log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() >= super::LOG_LIMIT {
                log.pop_front();
            }
            log.push_back(super::SimRequest {
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
            fault => Some(fault_response(&fault)),
        }
    }

    /// What every Atlas API handler does first: count and log the request, answer an injected
    /// fault, check authentication, then negotiate the media type among `allowed`.
    async fn admit(
        &self,
        endpoint: SimEndpoint,
        org: Option<&str>,
        request: (&Method, &Uri, &HeaderMap),
        allowed: &[&'static str],
    ) -> Result<&'static str, Response> {
        let (method, uri, headers) = request;
        if let Some(fault) = self.begin(endpoint, org).await {
            return Err(fault);
        }
        self.authorize(method, uri, headers).map_err(|r| *r)?;
        let media = negotiate(headers, allowed).map_err(|r| *r)?;
        if let Some(status) = self.inner.config.refuse_csv_envelope
            && endpoint == SimEndpoint::Poll
            && media == CSV_TYPE
            && wants_envelope(&query_params(uri))
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
            ));
        }
        Ok(media)
    }

    /// Bearer or Digest; otherwise a 401 with a Digest challenge.
    fn authorize(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), Rejected> {
        let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let cfg = &self.inner.config;
        let denied = match self.inner.auth.check(
            headers,
            method.as_str(),
            target,
            &cfg.credentials,
            cfg.nonce_ttl,
            cfg.unknown_nonce_stale,
        ) {
            Ok(()) => return Ok(()),
            Err(d) => d,
        };
        let (stale, detail) = match denied {
            Denied::Unauthorized(why) => (false, why),
            Denied::StaleNonce => (true, "The Digest nonce is stale."),
        };
        let nonce = self.inner.auth.issue_nonce(cfg.nonce_ttl);
        let mut resp = atlas_error(
            StatusCode::UNAUTHORIZED,
            "USER_UNAUTHORIZED",
            format!("Current user is not authorized to perform this action. {detail}"),
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, auth::challenge(&nonce, stale));
        Err(Box::new(resp))
    }
}

/// The first media type of `Accept` (in header order) that is in `allowed`.
fn negotiate(headers: &HeaderMap, allowed: &[&'static str]) -> Result<&'static str, Rejected> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>();
    for a in &accept {
        if let Some(t) = allowed.iter().find(|t| **t == a) {
            return Ok(t);
        }
    }
    Err(Box::new(atlas_error_with(
        StatusCode::NOT_ACCEPTABLE,
        "INVALID_VERSION_DATE",
        format!(
            "The requested media type {:?} is not supported; use {}.",
            accept.join(", "),
            allowed.join(" or ")
        ),
        accept.into_iter().map(Value::String).collect(),
    )))
}

fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query().map(auth::parse_form).unwrap_or_default()
}

fn query_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn wants_envelope(params: &[(String, String)]) -> bool {
    query_param(params, "envelope").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn is_object_id(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The org index of a path `orgId`, or the Atlas error for it.
fn find_org(data: &Dataset, org_id: &str) -> Result<usize, Rejected> {
    if !is_object_id(org_id) {
        return Err(Box::new(atlas_error_with(
            StatusCode::NOT_FOUND,
            "INVALID_ORG_ID",
            format!("The specified organization ID {org_id} is invalid."),
            vec![Value::String(org_id.to_string())],
        )));
    }
    data.org_by_id(org_id).ok_or_else(|| {
        Box::new(atlas_error_with(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            format!("Cannot find resource organization {org_id}."),
            vec![Value::String(org_id.to_string())],
        ))
    })
}

// ---------------------------------------------------------------- OAuth token

async fn token(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(fault) = sim.begin(SimEndpoint::Token, None).await {
        return fault;
    }
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json!({"error": error, "error_description": description}).to_string(),
        )
            .into_response()
    };
    let creds = &sim.inner.config.credentials;
    match auth::basic_credentials(&headers, sim.inner.config.basic_form_decoded) {
        Some((id, secret)) if id == creds.client_id && secret == creds.client_secret => {}
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid client credentials.",
            );
        }
    }
    let form = auth::parse_form(&String::from_utf8_lossy(&body));
    match form.iter().find(|(k, _)| k == "grant_type") {
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing grant_type.",
        ),
        Some((_, g)) if g != "client_credentials" => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only client_credentials is supported.",
        ),
        Some(_) => {
            let ttl = sim.inner.config.token_expires_in;
            let token = sim
                .inner
                .auth
                .issue_token(std::time::Duration::from_secs(ttl));
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                json!({"access_token": token, "expires_in": ttl, "token_type": "Bearer"})
                    .to_string(),
            )
                .into_response()
        }
    }
}

// ---------------------------------------------------------------- create

/// The validated body of a create request.
struct Filter {
    start: Month,
    end: Month,
    group_by: GroupBy,
    include_partial: bool,
    organizations: Vec<String>,
    projects: Vec<String>,
    clusters: Vec<String>,
    services: Vec<String>,
}

/// `YYYY-MM-01` exactly.
fn parse_first_of_month(s: &str) -> Option<Month> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) {
        return None;
    }
    if &s[8..10] != "01" {
        return None;
    }
    Month::parse_date(s)
}

fn parse_filter(body: &[u8], current: Month) -> Result<Filter, Rejected> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        atlas_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("Malformed JSON body: {e}"),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err(Box::new(atlas_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "The body must be a JSON object.",
        )));
    };
    let date = |field: &str| -> Result<Month, Rejected> {
        match obj.get(field) {
            None | Some(Value::Null) => Err(field_error(
                "VALIDATION_ERROR",
                field,
                format!("{field} is required."),
            )),
            Some(v) => v.as_str().and_then(parse_first_of_month).ok_or_else(|| {
                field_error(
                    "INVALID_DATE_FORMAT",
                    field,
                    format!("{field} must be a date YYYY-MM-DD on the first of a month, got {v}."),
                )
            }),
        }
    };
    let start = date("startDate")?;
    let end = date("endDate")?;
    if start >= end {
        return Err(field_error(
            "START_DATE_AFTER_END_DATE",
            "startDate",
            format!(
                "startDate {} must be before endDate {}.",
                start.first_day(),
                end.first_day()
            ),
        ));
    }
    let earliest = current.plus(1 - HISTORY_MONTHS);
    let latest_end = current.plus(1);
    if start < earliest || end > latest_end {
        return Err(field_error(
            "INVALID_DATE_RANGE",
            "startDate",
            format!(
                "The date range must lie within {} and {} (the past {HISTORY_MONTHS} months).",
                earliest.first_day(),
                latest_end.first_day()
            ),
        ));
    }
    // No groupBy (or an empty one, as the opencost plugin sent): one row per service and
    // month, as the one real answer in public code shows.
    let group_by = match obj.get("groupBy") {
        None | Some(Value::Null) => GroupBy::Services,
        Some(Value::String(v)) if v.is_empty() => GroupBy::Services,
        Some(v) => v.as_str().and_then(GroupBy::parse).ok_or_else(|| {
            field_error(
                "INVALID_ENUM_VALUE",
                "groupBy",
                format!("groupBy {v} is not one of organizations, projects, clusters, services."),
            )
        })?,
    };
    let include_partial = match obj.get("includePartialMatches") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(field_error(
                "VALIDATION_ERROR",
                "includePartialMatches",
                format!("includePartialMatches must be a boolean, got {v}."),
            ));
        }
    };
    let list = |field: &str, ids: bool| -> Result<Vec<String>, Rejected> {
        let bad = |detail: String| field_error("VALIDATION_ERROR", field, detail);
        match obj.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item.as_str() {
                    Some(s) if !ids || is_object_id(s) => Ok(s.to_string()),
                    _ => Err(bad(format!(
                        "{field} must hold {}, got {item}.",
                        if ids { "24-hex ids" } else { "strings" }
                    ))),
                })
                .collect(),
            Some(v) => Err(bad(format!("{field} must be an array, got {v}."))),
        }
    };
    let filter = Filter {
        start,
        end,
        group_by,
        include_partial,
        organizations: list("organizations", true)?,
        projects: list("projects", true)?,
        clusters: list("clusters", true)?,
        services: list("services", false)?,
    };
    // "At least one filter value needs to be provided for a dimension to be used." No groupBy
    // (or "") is per service and needs no filter.
    let explicit = obj
        .get("groupBy")
        .and_then(Value::as_str)
        .is_some_and(|g| !g.is_empty());
    let needed = match group_by {
        GroupBy::Services if explicit => Some(("services", &filter.services, "service")),
        GroupBy::Services => None,
        GroupBy::Organizations => Some(("organizations", &filter.organizations, "organization id")),
        GroupBy::Projects => Some(("projects", &filter.projects, "project id")),
        GroupBy::Clusters => Some(("clusters", &filter.clusters, "cluster unique id")),
    };
    if let Some((field, values, what)) = needed
        && values.is_empty()
    {
        return Err(field_error(
            "VALIDATION_ERROR",
            field,
            format!("Grouping by {field} needs at least one {what} in {field}."),
        ));
    }
    Ok(filter)
}

/// (month, project, cluster, service): ordered so results come month by month.
type GroupKey<'a> = (Month, Option<usize>, Option<usize>, Option<&'a str>);

/// Sums the matching records of `org` by the group key.
fn compute(data: &Dataset, org: usize, f: &Filter, duplicate: bool) -> Vec<Row> {
    let Some(org_rec) = data.orgs.get(org) else {
        return Vec::new();
    };
    if !f.organizations.is_empty() && !f.organizations.contains(&org_rec.id) {
        return Vec::new();
    }
    let projects: HashSet<usize> = f
        .projects
        .iter()
        .filter_map(|id| data.project_by_id(id))
        .filter(|(o, _)| *o == org)
        .map(|(_, p)| p)
        .collect();
    let clusters: HashSet<(usize, usize)> = f
        .clusters
        .iter()
        .filter_map(|id| data.cluster_by_id(id))
        .filter(|(o, _, _)| *o == org)
        .map(|(_, p, c)| (p, c))
        .collect();
    let services: HashSet<&str> = f.services.iter().map(String::as_str).collect();
    let mut groups: BTreeMap<GroupKey<'_>, i64> = BTreeMap::new();
    for r in data.org_usage(org) {
        if r.month < f.start || r.month >= f.end {
            continue;
        }
        if !services.is_empty() && !services.contains(r.service.as_str()) {
            continue;
        }
        if !f.projects.is_empty() {
            match r.project {
                Some(p) if !projects.contains(&p) => continue,
                None if !f.include_partial => continue,
                _ => {}
            }
        }
        if !f.clusters.is_empty() {
            match (r.project, r.cluster) {
                (Some(p), Some(c)) if !clusters.contains(&(p, c)) => continue,
                (_, None) if !f.include_partial => continue,
                _ => {}
            }
        }
        let service = Some(r.service.as_str());
        let key = match f.group_by {
            GroupBy::Organizations => (r.month, None, None, None),
            GroupBy::Services => (r.month, None, None, service),
            GroupBy::Projects => (r.month, r.project, None, service),
            GroupBy::Clusters => (r.month, r.project, r.cluster, service),
        };
        *groups.entry(key).or_insert(0) += r.amount_cents;
    }
    let mut rows = Vec::with_capacity(groups.len() * if duplicate { 2 } else { 1 });
    for ((month, project, cluster, service), cents) in groups {
        let row = |cents| Row {
            month,
            project,
            cluster,
            service: service.map(str::to_string),
            cents,
        };
        if duplicate {
            let half = cents / 2;
            rows.push(row(half));
            rows.push(row(cents - half));
        } else {
            rows.push(row(cents));
        }
    }
    rows
}

async fn create(
    State(sim): State<Simulator>,
    Path(org_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(resp) = sim
        .admit(
            SimEndpoint::Create,
            Some(&org_id),
            (&method, &uri, &headers),
            &[JSON_TYPE],
        )
        .await
    {
        return resp;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if content_type.as_deref() != Some(JSON_TYPE) {
        return atlas_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("The request body must be {JSON_TYPE}."),
        );
    }
    let data = sim.dataset();
    let org = match find_org(&data, &org_id) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    let filter = match parse_filter(&body, sim.inner.current) {
        Ok(f) => f,
        Err(resp) => return *resp,
    };
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
    let params = query_params(&uri);
    if wants_envelope(&params) && !sim.inner.ignore_envelope.load(Ordering::Relaxed) {
        atlas_json(
            StatusCode::OK,
            json!({"status": 202, "content": {"token": token}}).to_string(),
        )
    } else {
        atlas_json(StatusCode::ACCEPTED, json!({"token": token}).to_string())
    }
}

// ---------------------------------------------------------------- poll

/// A result row as JSON: dimension fields absent when not part of the grouping, project and
/// cluster keys spelled as `keys` says.
struct JsonRow<'a> {
    keys: RowKeys,
    invoice_id: String,
    organization_id: &'a str,
    organization_name: &'a str,
    project_id: Option<&'a str>,
    project_name: Option<&'a str>,
    cluster_id: Option<&'a str>,
    cluster_name: Option<&'a str>,
    service: Option<&'a str>,
    usage_amount: f64,
    cents: i64,
    usage_date: String,
    billed_date: String,
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResult<'a> {
    usage_details: Vec<JsonRow<'a>>,
}

#[derive(Serialize)]
struct Envelope<T> {
    status: u16,
    content: T,
}

/// Invoice ids are per org and month, stable across queries.
fn invoice_id(org_id: &str, month: Month) -> String {
    let digest = Md5::digest(format!("invoice:{org_id}:{month}").as_bytes());
    let mut id = hex::encode(digest);
    id.truncate(24);
    id
}

/// `-12.34` from cents.
fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

impl Query {
    fn json_rows(&self, keys: RowKeys) -> Vec<JsonRow<'_>> {
        let Some(org) = self.data.orgs.get(self.org) else {
            return Vec::new();
        };
        self.rows
            .iter()
            .map(|r| {
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
            .collect()
    }

    fn csv(&self, layout: CsvLayout) -> Result<String, csv::Error> {
        let mut w = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::new());
        let with_service = self.group_by != GroupBy::Organizations;
        match layout {
            CsvLayout::SpecExample => {
                let org = self.data.orgs.get(self.org);
                let month = self.rows.first().map(|r| r.month);
                return Ok(spec_example_shaped(
                    org.map_or("", |o| o.id.as_str()),
                    org.map_or("", |o| o.name.as_str()),
                    month,
                    self.rows.iter().map(|r| r.cents).sum(),
                ));
            }
            CsvLayout::Extended => {
                // A metadata preamble like Atlas invoice CSVs: one line, then an empty line.
                let org_name = self.data.orgs.get(self.org).map_or("", |o| o.name.as_str());
                w.write_record([format!("Organization: {org_name}")])?;
                let mut buf = w.into_inner().map_err(|e| e.into_error())?;
                buf.push(b'\n');
                w = csv::WriterBuilder::new().flexible(true).from_writer(buf);
                w.write_record(CSV_HEADER)?;
            }
            CsvLayout::NoPreamble => w.write_record(NO_PREAMBLE_HEADER)?,
            CsvLayout::Spec => {
                let mut header = SPEC_CSV_HEADER.to_vec();
                if with_service {
                    header.insert(header.len() - 1, "Service");
                }
                w.write_record(header)?;
            }
        }
        for r in self.json_rows(RowKeys::ProjectId) {
            let amount = format_cents(r.cents);
            let usage_date = r.usage_date.as_str();
            let dimensions = [
                r.invoice_id.as_str(),
                r.organization_name,
                r.organization_id,
                r.project_name.unwrap_or(""),
                r.project_id.unwrap_or(""),
                r.cluster_name.unwrap_or(""),
                r.cluster_id.unwrap_or(""),
            ];
            let service = r.service.unwrap_or("");
            let mut record: Vec<&str> = Vec::with_capacity(13);
            match layout {
                CsvLayout::Spec => {
                    // The only date column carries the usage month.
                    record.push(usage_date);
                    record.extend(dimensions);
                    if with_service {
                        record.push(service);
                    }
                    record.push(&amount);
                }
                CsvLayout::Extended | CsvLayout::NoPreamble | CsvLayout::SpecExample => {
                    record.push(&r.billed_date);
                    record.extend(dimensions);
                    record.extend([service, usage_date]);
                    if layout == CsvLayout::NoPreamble {
                        let spaced = format!(" {amount}");
                        record.extend([spaced.as_str(), "", ""]);
                        w.write_record(&record)?;
                        continue;
                    }
                    record.push(&amount);
                }
            }
            w.write_record(&record)?;
        }
        let buf = w.into_inner().map_err(|e| e.into_error())?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

async fn poll(
    State(sim): State<Simulator>,
    Path((org_id, token)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let media = match sim
        .admit(
            SimEndpoint::Poll,
            Some(&org_id),
            (&method, &uri, &headers),
            &[JSON_TYPE, CSV_TYPE],
        )
        .await
    {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let org = match find_org(&sim.dataset(), &org_id) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    let query = {
        let queries = sim.inner.queries.lock().unwrap_or_else(|e| e.into_inner());
        queries.get(&token).cloned()
    };
    let query = match query {
        Some(q) if q.org == org && q.created.elapsed() < sim.inner.config.query_ttl => q,
        _ => {
            return atlas_error_with(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_FOUND",
                format!("Cannot find resource cost explorer query {token}."),
                vec![Value::String(token.clone())],
            );
        }
    };
    let params = query_params(&uri);
    let envelope = wants_envelope(&params);
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
        return match form {
            NotReady::Envelope => not_ready(),
            NotReady::Timeout(delay) => {
                tokio::time::sleep(delay).await;
                not_ready()
            }
            NotReady::Close => broken_response(),
        };
    }
    let envelope = envelope && !sim.inner.ignore_envelope.load(Ordering::Relaxed);
    if media == CSV_TYPE {
        let text = match query.csv(sim.inner.config.csv_layout) {
            Ok(t) => t,
            Err(e) => {
                return atlas_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNEXPECTED_ERROR",
                    format!("CSV encoding failed: {e}"),
                );
            }
        };
        if envelope {
            let body = serde_json::to_string(&Envelope {
                status: 200,
                content: text,
            });
            return json_or_500(body);
        }
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CSV_TYPE))],
            text,
        )
            .into_response();
    }
    let result = JsonResult {
        usage_details: query.json_rows(sim.inner.config.row_keys),
    };
    let body = if envelope {
        serde_json::to_string(&Envelope {
            status: 200,
            content: result,
        })
    } else {
        serde_json::to_string(&result)
    };
    json_or_500(body)
}

fn json_or_500(body: serde_json::Result<String>) -> Response {
    match body {
        Ok(b) => atlas_json(StatusCode::OK, b),
        Err(e) => atlas_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNEXPECTED_ERROR",
            format!("JSON encoding failed: {e}"),
        ),
    }
}

// ---------------------------------------------------------------- discovery

/// (pageNum, itemsPerPage) from the query, itemsPerPage capped at `max`.
fn paging(params: &[(String, String)], max: usize) -> Result<(usize, usize), Rejected> {
    let num = |name: &str, default: usize| -> Result<usize, Rejected> {
        match query_param(params, name) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Box::new(atlas_error_with(
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
fn page(
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

async fn projects(
    State(sim): State<Simulator>,
    Path(org_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(resp) = sim
        .admit(
            SimEndpoint::Projects,
            Some(&org_id),
            (&method, &uri, &headers),
            &[JSON_TYPE],
        )
        .await
    {
        return resp;
    }
    let data = sim.dataset();
    let org = match find_org(&data, &org_id) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    let (page_num, per_page) = match paging(&query_params(&uri), sim.inner.config.max_page_size) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let Some(org_rec) = data.orgs.get(org) else {
        return atlas_error(StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", "No such org.");
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
        .collect();
    page(&headers, &uri, page_num, per_page, items)
}

fn tags_json(tags: &[SimTag]) -> Value {
    tags.iter()
        .map(|t| json!({"key": t.key, "value": t.value}))
        .collect()
}

/// What the two cluster listings share: count, fault, auth and media type, then the project
/// (404 when unknown or deleted) and the paging. `items` makes the page's entries.
async fn project_listing(
    sim: &Simulator,
    endpoint: SimEndpoint,
    group_id: &str,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    allowed: &[&'static str],
    items: impl FnOnce(&SimProject, &[(String, String)]) -> Vec<Value>,
) -> Response {
    let owner = {
        let data = sim.dataset();
        data.project_by_id(group_id)
            .and_then(|(o, _)| data.orgs.get(o).map(|org| org.id.clone()))
    };
    if let Err(resp) = sim
        .admit(endpoint, owner.as_deref(), (method, uri, headers), allowed)
        .await
    {
        return resp;
    }
    let data = sim.dataset();
    let not_found = |code: &str| {
        atlas_error_with(
            StatusCode::NOT_FOUND,
            code,
            format!("Cannot find resource project {group_id}."),
            vec![Value::String(group_id.to_string())],
        )
    };
    if !is_object_id(group_id) {
        return not_found("INVALID_GROUP_ID");
    }
    // A deleted project is gone for every listing, though its bills remain.
    let Some(project) = data
        .project_by_id(group_id)
        .and_then(|(o, p)| data.orgs.get(o).and_then(|org| org.projects.get(p)))
        .filter(|p| !p.is_deleted())
    else {
        return not_found("RESOURCE_NOT_FOUND");
    };
    let params = query_params(uri);
    let (page_num, per_page) = match paging(&params, sim.inner.config.max_page_size) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let items = items(project, &params);
    page(headers, uri, page_num, per_page, items)
}

fn cluster_json(project: &SimProject, c: &SimCluster) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "groupId": project.id,
        "clusterType": "REPLICASET",
        "stateName": "IDLE",
        "mongoDBVersion": "8.0.4",
        "paused": false,
        "tags": tags_json(&c.tags),
    })
}

async fn clusters(
    State(sim): State<Simulator>,
    Path(group_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let flex_too = sim.inner.config.flex_in_clusters_listing;
    project_listing(
        &sim,
        SimEndpoint::Clusters,
        &group_id,
        (&method, &uri, &headers),
        &CLUSTER_TYPES,
        |project, params| {
            let retained = query_param(params, "includeDeletedWithRetainedBackups")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            project
                .clusters
                .iter()
                .filter(|c| c.in_clusters_listing(retained) || (flex_too && c.in_flex_listing()))
                .map(|c| cluster_json(project, c))
                .collect()
        },
    )
    .await
}

async fn flex_clusters(
    State(sim): State<Simulator>,
    Path(group_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    project_listing(
        &sim,
        SimEndpoint::FlexClusters,
        &group_id,
        (&method, &uri, &headers),
        &[FLEX_TYPE],
        |project, _| {
            project
                .listed_flex_clusters()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "name": c.name,
                        "groupId": project.id,
                        "clusterType": "REPLICASET",
                        "stateName": "IDLE",
                        "mongoDBVersion": "8.0.4",
                        "versionReleaseSystem": "LTS",
                        "terminationProtectionEnabled": false,
                        "createDate": "2025-03-04T10:00:00Z",
                        "providerSettings": {
                            "backingProviderName": "AWS",
                            "providerName": "FLEX",
                            "regionName": "US_EAST_1",
                            "diskSizeGB": 5.0,
                        },
                        "tags": tags_json(&c.tags),
                    })
                })
                .collect()
        },
    )
    .await
}

async fn fallback(uri: Uri) -> Response {
    atlas_error(
        StatusCode::NOT_FOUND,
        "RESOURCE_NOT_FOUND",
        format!("Cannot find resource {}.", uri.path()),
    )
}
