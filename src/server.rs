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

use crate::chart::usd;
use crate::exposition;
use crate::metrics::SelfMetrics;
use crate::model::Clock;
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
    /// The per-scrape parts, shared by the scrapes of one second.
    pub scrapes: exposition::ScrapeCache,
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
    let body = state
        .scrapes
        .render(&snapshot, &state.metrics, (state.clock)(), format, gzip);
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
        let waiting = snapshot
            .statuses
            .iter()
            .filter(|s| !s.attempted && !s.restored)
            .count();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: {waiting} queries have not finished their first refresh and have no \
                 kept data\n"
            ),
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

/// Micro-dollars as USD with cents and thousands separators (`-1,234.57`), rounded half away
/// from zero.
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
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}}.down{{color:#b00}}td.mtd,td.forecast{{text-align:right;font-variant-numeric:tabular-nums}}svg.spend-chart{{margin:.5em 1.5em .5em 0;vertical-align:top}}</style>\
         </head><body><h1>Atlas Cost Exporter</h1><p>Version {} &middot; refreshed every {} &middot; <a href=\"{}\">Metrics</a> &middot; \
         <a href=\"/healthz\">Health</a> &middot; <a href=\"/readyz\">Readiness</a></p>",
        crate::version::LONG,
        html(&crate::exposition::human_interval(snapshot.refresh)),
        html(&state.telemetry_path),
    );
    // The summaries were computed when the refresh was published: nothing is summed here.
    if let Some(month) = snapshot.orgs.first().map(|o| o.month) {
        let _ = write!(
            page,
            "<h2>Organizations</h2><table id=\"orgs\"><tr><th>Name</th><th>Org id</th>\
             <th>Month to date, {month} (USD)</th><th>Forecast, {month} (USD)</th></tr>"
        );
    }
    for o in &snapshot.orgs {
        let amount = |m: Option<i64>| m.map_or_else(|| "-".to_owned(), usd);
        let _ = write!(
            page,
            "<tr class=\"org\"><td class=\"org-name\">{}</td><td class=\"org-id\">{}</td>\
             <td class=\"mtd\">{}</td><td class=\"forecast\">{}</td></tr>",
            html(o.org_name.as_deref().unwrap_or("-")),
            html(&o.org_id),
            amount(o.month_to_date_micros),
            amount(o.forecast_micros),
        );
    }
    if !snapshot.orgs.is_empty() {
        page.push_str(
            "</table><p>From each org's <code>services</code> query (the org's total); the \
             forecast scales the month to date to the whole month.</p>\
             <h2>Monthly spend by service</h2><div id=\"spend\">",
        );
        // Each chart was built and escaped when the refresh was published: copied as it is.
        for o in &snapshot.orgs {
            page.push_str(&o.spend_chart);
        }
        page.push_str(
            "</div><p>Credits (negative amounts) hang below the axis; hover a bar for its \
             amount.</p>",
        );
    }
    page.push_str(
        "<h2>Queries</h2><table id=\"queries\"><tr><th>Query</th><th>Org</th><th>State</th>\
         <th>Last success</th><th>Age</th><th>Series</th><th>Last error</th></tr>",
    );
    for s in &snapshot.statuses {
        let status = match (s.attempted, s.restored, s.up) {
            (false, false, _) => "<td>pending</td>",
            (false, true, _) => "<td>kept (from before the restart)</td>",
            (true, true, false) => "<td class=\"down\">failing, serving kept data</td>",
            (true, _, true) => "<td>up</td>",
            (true, false, false) => "<td class=\"down\">failing</td>",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::month::Month;
    use crate::snapshot::{OrgSummary, Snapshot};

    /// The landing page shows each org's name beside its id with its month to date and
    /// forecast, the name HTML-escaped, `-` where there is no value yet, and the org's spend
    /// chart from the snapshot as it is.
    #[tokio::test]
    async fn landing_page_escapes_org_names_and_shows_amounts() {
        let month = Month::new(2026, 11).expect("valid month");
        let cell = Arc::new(SnapshotCell::new(Snapshot {
            orgs: vec![OrgSummary {
                org_id: "5f1b2c3d4e5f6a7b8c9d0e1f".to_owned(),
                org_name: Some("<script>x</script> & \"q\"".to_owned()),
                month,
                month_to_date_micros: Some(1_234_567_000),
                forecast_micros: None,
                spend_chart: "<svg class=\"spend-chart\"><title>built at publication</title></svg>"
                    .to_owned(),
            }],
            ..Snapshot::default()
        }));
        let state = Arc::new(AppState {
            cell,
            metrics: Arc::new(SelfMetrics::new("1h")),
            telemetry_path: "/metrics".to_owned(),
            clock: crate::config::system_clock(),
            scrapes: exposition::ScrapeCache::default(),
        });
        let body = axum::body::to_bytes(landing(State(state)).await.into_body(), usize::MAX)
            .await
            .expect("body");
        let page = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(
            page.contains(
                "<tr class=\"org\"><td class=\"org-name\">&lt;script&gt;x&lt;/script&gt; &amp; &quot;q&quot;</td>\
                 <td class=\"org-id\">5f1b2c3d4e5f6a7b8c9d0e1f</td>\
                 <td class=\"mtd\">1,234.57</td><td class=\"forecast\">-</td></tr>"
            ),
            "{page}"
        );
        assert!(page.contains("Month to date, 2026-11"), "{page}");
        assert!(!page.contains("<script>"), "{page}");
        // The chart built when the refresh was published, copied as it is.
        assert!(
            page.contains(
                "<div id=\"spend\"><svg class=\"spend-chart\"><title>built at publication</title></svg></div>"
            ),
            "{page}"
        );
    }

    /// Amounts read as dollars and cents with thousands separators, rounded half away from
    /// zero; credits keep their sign.
    #[test]
    fn usd_has_cents_and_separators() {
        assert_eq!(usd(0), "0.00");
        assert_eq!(usd(4_999), "0.00");
        assert_eq!(usd(5_000), "0.01");
        assert_eq!(usd(-5_000), "-0.01");
        assert_eq!(usd(-4_999), "0.00");
        assert_eq!(usd(999_995_000), "1,000.00");
        assert_eq!(usd(1_234_567_891_234), "1,234,567.89");
        assert_eq!(usd(-123_456_000), "-123.46");
        assert_eq!(usd(i64::MIN), "-9,223,372,036,854.78");
    }
}
