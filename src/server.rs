//! The HTTP server: `/metrics` (or the configured path), a landing page, `/healthz` and
//! `/readyz`. Nothing here calls Atlas: every handler reads the published snapshot.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::header::{
    ACCEPT, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Clock;
use crate::exposition;
use crate::metrics::SelfMetrics;
use crate::snapshot::SnapshotCell;

/// What the handlers share.
pub struct AppState {
    /// The published data.
    pub cell: Arc<SnapshotCell>,
    /// Counters and histograms.
    pub metrics: Arc<SelfMetrics>,
    /// Path of the metrics endpoint.
    pub telemetry_path: String,
    /// Source of "now" for data age.
    pub clock: Clock,
}

/// The exporter's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(&state.telemetry_path.clone(), get(metrics))
        .route("/", get(landing))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let format = exposition::negotiate(header(ACCEPT));
    let gzip = exposition::accepts_gzip(header(ACCEPT_ENCODING));
    let snapshot = state.cell.load();
    let body = exposition::render(&snapshot, &state.metrics, (state.clock)(), format, gzip);
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response_headers.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    if gzip {
        response_headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    (response_headers, axum::body::Body::new(body)).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.cell.load();
    if snapshot.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let waiting = snapshot.statuses.iter().filter(|s| !s.attempted).count();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {waiting} queries have not finished their first refresh\n"),
        )
            .into_response()
    }
}

/// Escapes text for HTML.
fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn rfc3339ish(t: Option<SystemTime>) -> String {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or_else(
            || "never".to_owned(),
            |d| humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + d).to_string(),
        )
}

async fn landing(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.cell.load();
    let now = (state.clock)();
    let mut page = String::with_capacity(4096);
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Atlas Cost Exporter</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}}.down{{color:#b00}}</style>\
         </head><body><h1>Atlas Cost Exporter</h1><p>Version {} &middot; refreshed every {} &middot; <a href=\"{}\">Metrics</a> &middot; \
         <a href=\"/healthz\">Health</a> &middot; <a href=\"/readyz\">Readiness</a></p>\
         <table><tr><th>Query</th><th>Org</th><th>State</th><th>Last success</th><th>Age</th><th>Series</th><th>Last error</th></tr>",
        env!("CARGO_PKG_VERSION"),
        html(&snapshot.refresh),
        html(&state.telemetry_path),
    );
    for s in &snapshot.statuses {
        let status = match (s.attempted, s.up) {
            (false, _) => "<td>pending</td>",
            (true, true) => "<td>up</td>",
            (true, false) => "<td class=\"down\">failing</td>",
        };
        let age = s
            .last_success
            .and_then(|t| now.duration_since(t).ok())
            .map_or_else(
                || "-".to_owned(),
                |d| {
                    humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                        .to_string()
                },
            );
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td>{status}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html(&s.query),
            html(&s.org_id),
            rfc3339ish(s.last_success),
            html(&age),
            s.series,
            html(s.last_error.as_deref().unwrap_or("")),
        );
    }
    page.push_str("</table></body></html>\n");
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}
