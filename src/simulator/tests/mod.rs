//! Behaviour of the simulator, driven over real HTTP with reqwest: one file per endpoint
//! family (and one for the data, one for the command line); the shared set-up is here.

mod auth;
mod cost_explorer;
mod data;
mod discovery;
mod invoices;
mod render_csv;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::api::{CSV_HEADER, CSV_TYPE, FLEX_TYPE, JSON_TYPE, SPEC_CSV_HEADER};
use super::*;

/// Fixed month so tests do not depend on the clock.
fn current() -> Month {
    Month::new(2026, 11).expect("valid month")
}

fn config() -> SimConfig {
    SimConfig {
        current_month: Some(current()),
        ..SimConfig::default()
    }
}

/// `config()` with results ready at the first poll.
fn ready_config() -> SimConfig {
    SimConfig {
        polls_before_ready: 0,
        ..config()
    }
}

/// Serves `config` on a free port; the server lives as long as the test's runtime.
async fn start(config: SimConfig) -> (Simulator, String) {
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(sim.clone().serve(listener, std::future::pending()));
    (sim, base)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The body of `resp` as JSON.
async fn json_of(resp: reqwest::Response) -> Value {
    serde_json::from_str(&resp.text().await.expect("body")).expect("json")
}

async fn bearer(base: &str) -> String {
    let resp = client()
        .post(format!("{base}/api/oauth/token"))
        .basic_auth("mdb_sa_id_demo", Some("mdb_sa_sk_demo"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), StatusCode::OK);
    json_of(resp).await["access_token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// A served simulator, a Bearer token for it, and the data it served at the start.
struct Served {
    sim: Simulator,
    base: String,
    token: String,
    data: Arc<Dataset>,
}

/// Serves `config` ([`start`]) and gets a Bearer token.
async fn serve(config: SimConfig) -> Served {
    let (sim, base) = start(config).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    Served {
        sim,
        base,
        token,
        data,
    }
}

impl Served {
    /// POSTs `body` as a query for `org`.
    async fn create(&self, org: &str, body: &Value) -> reqwest::Response {
        self.create_as(org, body, JSON_TYPE).await
    }

    /// POSTs `body` as a query for `org`, accepting `accept`.
    async fn create_as(&self, org: &str, body: &Value, accept: &str) -> reqwest::Response {
        client()
            .post(format!(
                "{}/api/atlas/v2/orgs/{org}/billing/costExplorer/usage",
                self.base
            ))
            .bearer_auth(&self.token)
            .header("Accept", accept)
            .header("Content-Type", JSON_TYPE)
            .body(body.to_string())
            .send()
            .await
            .expect("create request")
    }

    /// Creates a query; its 64-hex token.
    async fn create_token(&self, org: &str, body: &Value) -> String {
        let resp = self.create(org, body).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let t = json_of(resp).await["token"]
            .as_str()
            .expect("token")
            .to_string();
        assert_eq!(t.len(), 64);
        t
    }

    /// Polls `query` of `org` with `envelope=true`.
    async fn poll(
        &self,
        org: &str,
        query: &str,
        accept: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.get_raw(
            &format!("/api/atlas/v2/orgs/{org}/billing/costExplorer/usage/{query}?envelope=true"),
            accept,
        )
        .await
    }

    /// GETs `path` with the Bearer token and `accept`.
    async fn get_raw(&self, path: &str, accept: &str) -> reqwest::Result<reqwest::Response> {
        client()
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Accept", accept)
            .send()
            .await
    }

    /// GETs `path` with the Bearer token and `accept`; the status and the JSON body.
    async fn get(&self, path: &str, accept: &str) -> (StatusCode, Value) {
        let resp = self.get_raw(path, accept).await.expect("send");
        (resp.status(), json_of(resp).await)
    }

    /// Creates a query and polls it once (the simulator must answer at once); the raw answer.
    async fn run_query(&self, org: &str, body: &Value, accept: &str) -> String {
        let query = self.create_token(org, body).await;
        let path = format!("/api/atlas/v2/orgs/{org}/billing/costExplorer/usage/{query}");
        let resp = self.get_raw(&path, accept).await.expect("poll");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.expect("body")
    }

    /// `run_query` for JSON: the `usageDetails` rows.
    async fn query_rows(&self, org: &str, body: &Value) -> Vec<Value> {
        let text = self.run_query(org, body, JSON_TYPE).await;
        let v: Value = serde_json::from_str(&text).expect("json");
        v["usageDetails"].as_array().expect("rows").clone()
    }
}

/// A query body over [`start`, `end`).
fn usage(start: Month, end: Month) -> Value {
    json!({"startDate": start.first_day(), "endDate": end.first_day()})
}

/// A query body over [`start`, `end`) grouped by `by`, with `ids` as the filter of the same
/// name (`"clusters"` filters `clusters`).
fn grouped(start: Month, end: Month, by: &str, ids: Value) -> Value {
    let mut body = usage(start, end);
    body["groupBy"] = json!(by);
    body[by] = ids;
    body
}

/// The path of the projects listing of `org_id`.
fn projects_path(org_id: &str) -> String {
    format!("/api/atlas/v2/orgs/{org_id}/groups")
}

/// The path of a project's `listing` (`clusters` or `flexClusters`).
fn listing_path(project_id: &str, listing: &str) -> String {
    format!("/api/atlas/v2/groups/{project_id}/{listing}")
}

/// The ids of a listing page's `results`.
fn result_ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

/// Sum of `usageAmount` in cents, rounding each amount to the cent.
fn sum_cents(rows: &[Value]) -> i64 {
    rows.iter()
        .map(|r| (r["usageAmount"].as_f64().expect("amount") * 100.0).round() as i64)
        .sum()
}

/// The status and `errorCode` of an Atlas error answer (whose `error` must be the status).
async fn error_code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let v = json_of(resp).await;
    assert_eq!(v["error"], status.as_u16());
    (status, v["errorCode"].as_str().expect("code").to_string())
}
