//! Behaviour of the simulator, driven over real HTTP with reqwest.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::api::{CSV_HEADER, CSV_TYPE, JSON_TYPE};
use super::auth::parse_auth_params;
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
    let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    v["access_token"].as_str().expect("token").to_string()
}

async fn create(base: &str, token: &str, org: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!(
            "{base}/api/atlas/v2/orgs/{org}/billing/costExplorer/usage"
        ))
        .bearer_auth(token)
        .header("Accept", JSON_TYPE)
        .header("Content-Type", JSON_TYPE)
        .body(body.to_string())
        .send()
        .await
        .expect("create request")
}

async fn create_token(base: &str, token: &str, org: &str, body: &Value) -> String {
    let resp = create(base, token, org, body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    let t = v["token"].as_str().expect("token").to_string();
    assert_eq!(t.len(), 64);
    t
}

async fn poll(
    base: &str,
    token: &str,
    org: &str,
    query: &str,
    accept: &str,
) -> reqwest::Result<reqwest::Response> {
    client()
        .get(format!(
            "{base}/api/atlas/v2/orgs/{org}/billing/costExplorer/usage/{query}?envelope=true"
        ))
        .bearer_auth(token)
        .header("Accept", accept)
        .send()
        .await
}

/// Sum of `usageAmount` in cents, rounding each amount to the cent.
fn sum_cents(rows: &[Value]) -> i64 {
    rows.iter()
        .map(|r| (r["usageAmount"].as_f64().expect("amount") * 100.0).round() as i64)
        .sum()
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The data set is deterministic from the seed, ids are unique 24-hex strings, names are
/// awkward (quotes, backslash, unicode) and cluster names follow the Atlas pattern.
#[test]
fn dataset_is_deterministic_with_unique_ids_and_awkward_names() {
    let a = Dataset::generate(&config(), current());
    let b = Dataset::generate(&config(), current());
    assert_eq!(a.usage, b.usage);
    let mut ids = HashSet::new();
    let mut names = Vec::new();
    for org in &a.orgs {
        ids.insert(org.id.clone());
        names.push(org.name.clone());
        for p in &org.projects {
            ids.insert(p.id.clone());
            names.push(p.name.clone());
            for c in &p.clusters {
                ids.insert(c.id.clone());
                let first = c.name.chars().next().expect("non-empty");
                assert!(first.is_ascii_alphanumeric());
                assert!(
                    c.name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                );
            }
        }
    }
    assert_eq!(ids.len(), 2 + 2 * 4 + 2 * 4 * 3);
    assert!(ids.iter().all(|id| {
        id.len() == 24
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }));
    assert!(names.iter().any(|n| n.contains('"') && n.contains('\\')));
    assert!(names.iter().any(|n| n.contains("Zürich")));
    assert!(names.iter().any(|n| n.contains("東京")));
    assert!(
        a.usage
            .iter()
            .any(|r| r.service == "Credits" && r.amount_cents < 0 && r.project.is_none())
    );
    assert!(
        a.usage
            .iter()
            .any(|r| r.project.is_some() && r.cluster.is_none())
    );
}

/// `with_series` lands near the target even for benchmark sizes, and builds quickly.
#[test]
fn with_series_hits_the_target_roughly() {
    for target in [1_000, 50_000, 500_000] {
        let cfg = SimConfig::with_series(target);
        let series = cfg.orgs
            * cfg.projects_per_org
            * cfg.clusters_per_project
            * cfg.services_per_cluster
            * cfg.months as usize;
        assert!(series >= target, "{series} < {target}");
        assert!(series <= target + target / 10 + 72, "{series} >> {target}");
    }
    let data = Dataset::generate(&SimConfig::with_series(500_000), current());
    assert!(data.usage.len() >= 500_000);
}

/// Scaling multiplies every amount, rounding half away from zero, and does not compound.
#[tokio::test]
async fn amount_scale_replaces_the_dataset() {
    let sim = Simulator::new(config());
    let before = sim.dataset();
    sim.set_amount_scale(3, 2);
    sim.set_amount_scale(2, 1);
    let after = sim.dataset();
    for (a, b) in before.usage.iter().zip(&after.usage) {
        assert_eq!(b.amount_cents, a.amount_cents * 2);
    }
    assert_eq!(before.scaled(1, 2).usage[0].amount_cents, {
        let x = before.usage[0].amount_cents;
        (x + x.signum()) / 2
    });
}

/// Good client credentials get a Bearer token; bad ones 401 invalid_client; a missing grant
/// type 400 invalid_request; in the Go-oauth2 variant id and secret are form-decoded after
/// base64.
#[tokio::test]
async fn token_endpoint_checks_client_credentials() {
    let mut cfg = config();
    cfg.credentials.client_secret = "s3cr:t &+x".to_string();
    cfg.basic_form_decoded = true;
    let (sim, base) = start(cfg).await;
    let url = format!("{base}/api/oauth/token");
    let encoded = "s3cr%3At+%26%2Bx";
    let good = client()
        .post(&url)
        .basic_auth("mdb_sa_id_demo", Some(encoded))
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("send");
    assert_eq!(good.status(), StatusCode::OK);
    let v: Value = serde_json::from_str(&good.text().await.expect("body")).expect("json");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert!(!v["access_token"].as_str().expect("token").is_empty());

    let bad = client()
        .post(&url)
        .basic_auth("mdb_sa_id_demo", Some("wrong"))
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let v: Value = serde_json::from_str(&bad.text().await.expect("body")).expect("json");
    assert_eq!(v["error"], "invalid_client");

    let no_grant = client()
        .post(&url)
        .basic_auth("mdb_sa_id_demo", Some(encoded))
        .body("")
        .send()
        .await
        .expect("send");
    assert_eq!(no_grant.status(), StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&no_grant.text().await.expect("body")).expect("json");
    assert_eq!(v["error"], "invalid_request");
    assert_eq!(sim.requests(SimEndpoint::Token), 3);
}

/// Without credentials the API answers 401 with a Digest challenge; a correct MD5 digest is
/// let in, a digest made with the wrong private key is not.
#[tokio::test]
async fn digest_challenge_then_correct_response_is_accepted() {
    let (sim, base) = start(config()).await;
    let org = sim.dataset().orgs[0].id.clone();
    let path = format!("/api/atlas/v2/orgs/{org}/groups?pageNum=1&itemsPerPage=10");
    let url = format!("{base}{path}");
    let first = client()
        .get(&url)
        .header("Accept", JSON_TYPE)
        .send()
        .await
        .expect("send");
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let challenge = first
        .headers()
        .get("www-authenticate")
        .expect("challenge")
        .to_str()
        .expect("ascii")
        .to_string();
    let v: Value = serde_json::from_str(&first.text().await.expect("body")).expect("json");
    assert_eq!(v["errorCode"], "USER_UNAUTHORIZED");
    assert!(challenge.starts_with("Digest "));
    let params = parse_auth_params(&challenge["Digest ".len()..]);
    assert_eq!(params["realm"], "MMS Public API");
    assert_eq!(params["qop"], "auth");
    assert_eq!(params["algorithm"], "MD5");
    assert_eq!(params["stale"], "false");
    let nonce = &params["nonce"];

    let authorization = |password: &str| {
        let ha1 = md5_hex(&format!("demopublic:MMS Public API:{password}"));
        let ha2 = md5_hex(&format!("GET:{path}"));
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:abcdef:auth:{ha2}"));
        format!(
            "Digest username=\"demopublic\", realm=\"MMS Public API\", nonce=\"{nonce}\", uri=\"{path}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abcdef\", response=\"{response}\""
        )
    };
    let ok = client()
        .get(&url)
        .header("Accept", JSON_TYPE)
        .header("Authorization", authorization("demo-private-key"))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), StatusCode::OK);
    let wrong = client()
        .get(&url)
        .header("Accept", JSON_TYPE)
        .header("Authorization", authorization("not-the-key"))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().contains_key("www-authenticate"));
}

/// A correct digest over an expired nonce gets a new challenge with `stale=true`.
#[tokio::test]
async fn expired_nonce_is_challenged_as_stale() {
    let mut cfg = config();
    cfg.nonce_ttl = Duration::from_millis(50);
    let (sim, base) = start(cfg).await;
    let org = sim.dataset().orgs[0].id.clone();
    let path = format!("/api/atlas/v2/orgs/{org}/groups");
    let url = format!("{base}{path}");
    let first = client().get(&url).send().await.expect("send");
    let challenge = first.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string();
    let nonce = parse_auth_params(&challenge["Digest ".len()..])["nonce"].clone();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ha1 = md5_hex("demopublic:MMS Public API:demo-private-key");
    let ha2 = md5_hex(&format!("GET:{path}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:00000001:c:auth:{ha2}"));
    let auth = format!(
        "Digest username=\"demopublic\", realm=\"MMS Public API\", nonce=\"{nonce}\", uri=\"{path}\", qop=auth, nc=00000001, cnonce=\"c\", response=\"{response}\""
    );
    let again = client()
        .get(&url)
        .header("Accept", JSON_TYPE)
        .header("Authorization", auth)
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let challenge = again.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("stale=true"), "{challenge}");
}

/// A query is "not ready" (`{"status":102}` envelope) for `polls_before_ready` polls, then its
/// enveloped result, whose amounts add up to `Dataset::total_cents` exactly.
#[tokio::test]
async fn query_is_not_ready_then_returns_exact_totals() {
    let (sim, base) = start(config()).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = data.orgs[0].id.clone();
    let (start_m, end_m) = (current().plus(-5), current().plus(1));
    let body = json!({"startDate": start_m.first_day(), "endDate": end_m.first_day(),
                      "organizations": [org]});
    let query = create_token(&base, &token, &org, &body).await;
    for _ in 0..2 {
        let resp = poll(&base, &token, &org, &query, JSON_TYPE)
            .await
            .expect("poll");
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
        assert_eq!(v, json!({"status": 102, "content": null}));
    }
    let resp = poll(&base, &token, &org, &query, JSON_TYPE)
        .await
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(v["status"], 200);
    let rows = v["content"]["usageDetails"].as_array().expect("rows");
    assert!(!rows.is_empty());
    assert_eq!(sum_cents(rows), data.total_cents(&org, start_m, end_m));
    let row = &rows[0];
    assert_eq!(row["organizationId"], org.as_str());
    assert!(row["service"].is_string());
    assert!(row.get("projectId").is_none());
    assert!(row["usageDate"].as_str().expect("date").ends_with("-01"));
    assert_eq!(sim.requests(SimEndpoint::Poll), 3);
}

/// Grouping by clusters without partial matches leaves out org- and project-level charges;
/// rows carry project and cluster fields; duplicated rows still add up.
#[tokio::test]
async fn clusters_grouping_matches_grouped_total() {
    let mut cfg = config();
    cfg.polls_before_ready = 0;
    cfg.duplicate_rows = true;
    cfg.ignore_envelope = true;
    let (sim, base) = start(cfg).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[1];
    let clusters: Vec<&str> = org
        .projects
        .iter()
        .flat_map(|p| p.clusters.iter().map(|c| c.id.as_str()))
        .collect();
    let m = current().plus(-1);
    let body = json!({"startDate": m.first_day(), "endDate": current().first_day(),
                      "groupBy": "clusters", "clusters": clusters});
    let query = create_token(&base, &token, &org.id, &body).await;
    let resp = poll(&base, &token, &org.id, &query, JSON_TYPE)
        .await
        .expect("poll");
    let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    let rows = v["usageDetails"].as_array().expect("plain result");
    assert_eq!(
        sum_cents(rows),
        data.total_cents_grouped(&org.id, m, current(), GroupBy::Clusters, false)
    );
    assert!(rows.iter().all(|r| r["clusterId"].is_string()
        && r["clusterName"].is_string()
        && r["projectName"].is_string()));
    assert_eq!(rows[0]["clusterId"], rows[1]["clusterId"]);
    assert_eq!(rows[0]["service"], rows[1]["service"]);
}

/// The CSV result has a two-line preamble, then a header and rows the csv crate reads, with
/// names quoted as needed and amounts summing to the exact total.
#[tokio::test]
async fn csv_result_parses_after_preamble() {
    let mut cfg = config();
    cfg.polls_before_ready = 0;
    let (sim, base) = start(cfg).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[0];
    let projects: Vec<&str> = org.projects.iter().map(|p| p.id.as_str()).collect();
    let (s, e) = (current().plus(-17), current().plus(1));
    let body = json!({"startDate": s.first_day(), "endDate": e.first_day(),
                      "groupBy": "projects", "projects": projects, "includePartialMatches": true});
    let query = create_token(&base, &token, &org.id, &body).await;
    sim.set_ignore_envelope(true);
    let resp = poll(&base, &token, &org.id, &query, CSV_TYPE)
        .await
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], CSV_TYPE);
    let text = resp.text().await.expect("body");
    let mut lines = text.splitn(3, '\n');
    assert!(lines.next().expect("line 1").contains("Organization: "));
    assert_eq!(lines.next(), Some(""));
    let mut reader = csv::Reader::from_reader(lines.next().expect("table").as_bytes());
    let headers = reader.headers().expect("header").clone();
    assert_eq!(headers.iter().collect::<Vec<_>>(), CSV_HEADER.to_vec());
    let mut total = 0i64;
    let mut saw_org_name = false;
    for record in reader.records() {
        let record = record.expect("record");
        saw_org_name |= record[2] == org.name;
        let amount: f64 = record[10].parse().expect("amount");
        total += (amount * 100.0).round() as i64;
    }
    assert!(saw_org_name, "org name with quotes round-trips");
    assert_eq!(total, data.total_cents(&org.id, s, e));
}

/// With an envelope asked for, the CSV text comes as the envelope's JSON string `content`.
#[tokio::test]
async fn csv_in_envelope_is_a_json_string() {
    let mut cfg = config();
    cfg.polls_before_ready = 0;
    let (sim, base) = start(cfg).await;
    let token = bearer(&base).await;
    let org = sim.dataset().orgs[0].id.clone();
    let body =
        json!({"startDate": current().first_day(), "endDate": current().plus(1).first_day()});
    let query = create_token(&base, &token, &org, &body).await;
    let resp = poll(&base, &token, &org, &query, CSV_TYPE)
        .await
        .expect("poll");
    let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(v["status"], 200);
    assert!(
        v["content"]
            .as_str()
            .expect("csv string")
            .contains("Billed Date,Invoice Id")
    );
}

/// With `NotReady::Close` a not-ready poll breaks the connection; the client sees an error,
/// and a later poll gets the result.
#[tokio::test]
async fn close_form_breaks_the_connection() {
    let mut cfg = config();
    cfg.polls_before_ready = 1;
    cfg.not_ready = NotReady::Close;
    let (sim, base) = start(cfg).await;
    let token = bearer(&base).await;
    let org = sim.dataset().orgs[0].id.clone();
    let body =
        json!({"startDate": current().first_day(), "endDate": current().plus(1).first_day()});
    let query = create_token(&base, &token, &org, &body).await;
    let first = match poll(&base, &token, &org, &query, JSON_TYPE).await {
        Ok(resp) => resp.text().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(first.is_err(), "connection should break");
    let second = poll(&base, &token, &org, &query, JSON_TYPE)
        .await
        .expect("poll");
    assert_eq!(second.status(), StatusCode::OK);
}

/// All projects come back across pages when `itemsPerPage` is capped at 2, with totalCount and
/// a `next` link until the last page.
#[tokio::test]
async fn discovery_paginates_with_small_pages() {
    let mut cfg = config();
    cfg.max_page_size = 2;
    cfg.projects_per_org = 5;
    let (sim, base) = start(cfg).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[0];
    let mut seen = Vec::new();
    for page in 1..=4 {
        let resp = client()
            .get(format!(
                "{base}/api/atlas/v2/orgs/{}/groups?pageNum={page}&itemsPerPage=500",
                org.id
            ))
            .bearer_auth(&token)
            .header("Accept", JSON_TYPE)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
        assert_eq!(v["totalCount"], 5);
        let results = v["results"].as_array().expect("results");
        assert!(results.len() <= 2);
        seen.extend(
            results
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_string()),
        );
        let has_next = v["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["rel"] == "next");
        assert_eq!(has_next, page < 3);
    }
    let expected: Vec<String> = org.projects.iter().map(|p| p.id.clone()).collect();
    assert_eq!(seen, expected);

    let project = &org.projects[0];
    let resp = client()
        .get(format!(
            "{base}/api/atlas/v2/groups/{}/clusters",
            project.id
        ))
        .bearer_auth(&token)
        .header("Accept", JSON_TYPE)
        .send()
        .await
        .expect("send");
    let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(v["totalCount"], 3);
    assert_eq!(v["results"][0]["id"], project.clusters[0].id.as_str());
}

async fn error_code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let v: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    assert_eq!(v["error"], status.as_u16());
    (status, v["errorCode"].as_str().expect("code").to_string())
}

/// Bad org ids, dates not on the 1st, ranges outside 18 months, reversed ranges, unknown
/// groupBy, grouping by projects without ids and a wrong API version are refused with the
/// documented status and error code.
#[tokio::test]
async fn create_validates_requests() {
    let (sim, base) = start(config()).await;
    let token = bearer(&base).await;
    let org = sim.dataset().orgs[0].id.clone();
    let (s, e) = (current().first_day(), current().plus(1).first_day());
    let cases = [
        (
            "not-an-org",
            json!({"startDate": s, "endDate": e}),
            404,
            "INVALID_ORG_ID",
        ),
        (
            "0123456789abcdef01234567",
            json!({"startDate": s, "endDate": e}),
            404,
            "RESOURCE_NOT_FOUND",
        ),
        (
            org.as_str(),
            json!({"startDate": "2026-11-02", "endDate": e}),
            400,
            "INVALID_DATE_FORMAT",
        ),
        (org.as_str(), json!({"endDate": e}), 400, "VALIDATION_ERROR"),
        (
            org.as_str(),
            json!({"startDate": e, "endDate": s}),
            400,
            "START_DATE_AFTER_END_DATE",
        ),
        (
            org.as_str(),
            json!({"startDate": current().plus(-18).first_day(), "endDate": e}),
            400,
            "INVALID_DATE_RANGE",
        ),
        (
            org.as_str(),
            json!({"startDate": s, "endDate": current().plus(2).first_day()}),
            400,
            "INVALID_DATE_RANGE",
        ),
        (
            org.as_str(),
            json!({"startDate": s, "endDate": e, "groupBy": "regions"}),
            400,
            "INVALID_ENUM_VALUE",
        ),
        (
            org.as_str(),
            json!({"startDate": s, "endDate": e, "groupBy": "projects"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            org.as_str(),
            json!({"startDate": s, "endDate": e, "groupBy": "clusters", "projects": []}),
            400,
            "VALIDATION_ERROR",
        ),
        // "At least one filter value needs to be provided for a dimension to be used."
        (
            org.as_str(),
            json!({"startDate": s, "endDate": e, "groupBy": "services"}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            org.as_str(),
            json!({"startDate": s, "endDate": e, "groupBy": "organizations"}),
            400,
            "VALIDATION_ERROR",
        ),
    ];
    for (org_id, body, status, code) in cases {
        let got = error_code(create(&base, &token, org_id, &body).await).await;
        assert_eq!(
            got,
            (
                StatusCode::from_u16(status).expect("status"),
                code.to_string()
            ),
            "{body}"
        );
    }
    let wrong_version = client()
        .post(format!(
            "{base}/api/atlas/v2/orgs/{org}/billing/costExplorer/usage"
        ))
        .bearer_auth(&token)
        .header("Accept", "application/vnd.atlas.2024-08-05+json")
        .header("Content-Type", JSON_TYPE)
        .body(json!({"startDate": s, "endDate": e}).to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_version.status(), StatusCode::NOT_ACCEPTABLE);
    let unknown_token = poll(&base, &token, &org, &"A".repeat(64), JSON_TYPE)
        .await
        .expect("poll");
    assert_eq!(error_code(unknown_token).await.1, "RESOURCE_NOT_FOUND");
}

/// An injected fault answers every request of its endpoint (rate limit headers included)
/// until cleared; other endpoints are unaffected.
#[tokio::test]
async fn faults_apply_until_cleared() {
    let (sim, base) = start(config()).await;
    let token = bearer(&base).await;
    let org = sim.dataset().orgs[0].id.clone();
    let body =
        json!({"startDate": current().first_day(), "endDate": current().plus(1).first_day()});

    sim.fail(SimEndpoint::Create, Fault::Status(503));
    let (status, code) = error_code(create(&base, &token, &org, &body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNEXPECTED_ERROR")
    );

    sim.fail(
        SimEndpoint::Create,
        Fault::RateLimited {
            retry_after: Some(7),
        },
    );
    let resp = create(&base, &token, &org, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");
    assert_eq!(error_code(resp).await.1, "RATE_LIMITED");

    sim.fail(SimEndpoint::Create, Fault::Html(502));
    let resp = create(&base, &token, &org, &body).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.text().await.expect("body").contains("<html>"));

    sim.clear_faults();
    let resp = create(&base, &token, &org, &body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(sim.requests(SimEndpoint::Create), 4);
}

/// `SimArgs` defaults give the demo configuration; `--series` overrides the shape.
#[test]
fn sim_args_map_to_config() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }
    let cli = Cli::parse_from(["x"]);
    let cfg = cli.sim.to_config();
    assert_eq!(
        (cfg.orgs, cfg.projects_per_org, cfg.clusters_per_project),
        (2, 4, 3)
    );
    assert_eq!(cli.sim.listen().to_string(), "127.0.0.1:8080");
    let cli = Cli::parse_from([
        "x",
        "--series",
        "100000",
        "--not-ready",
        "timeout",
        "--not-ready-delay",
        "5s",
    ]);
    let cfg = cli.sim.to_config();
    assert!(cfg.orgs * cfg.projects_per_org * cfg.clusters_per_project * 72 >= 100_000);
    assert_eq!(cfg.not_ready, NotReady::Timeout(Duration::from_secs(5)));
}

/// The token endpoint's Basic pair is compared raw by default (as the docs' curl sends it),
/// and form-decoded only in the Go-oauth2 variant.
#[test]
fn basic_credentials_are_raw_unless_form_decoded() {
    let mut headers = axum::http::HeaderMap::new();
    let raw = base64::engine::general_purpose::STANDARD.encode("a%20b:c%3Ad");
    headers.insert(
        "authorization",
        format!("Basic {raw}").parse().expect("header"),
    );
    assert_eq!(
        super::auth::basic_credentials(&headers, false),
        Some(("a%20b".to_string(), "c%3Ad".to_string()))
    );
    assert_eq!(
        super::auth::basic_credentials(&headers, true),
        Some(("a b".to_string(), "c:d".to_string()))
    );
}
