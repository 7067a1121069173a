//! Behaviour of the simulator, driven over real HTTP with reqwest.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::api::{CSV_HEADER, CSV_TYPE, FLEX_TYPE, JSON_TYPE, SPEC_CSV_HEADER};
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
    // 2 orgs; 4 live projects and 1 deleted one each; per org 4 * 3 dedicated clusters,
    // 2 Flex (projects 0 and 2), 3 deleted ones (projects 0, 1, 3) and 2 in the deleted
    // project.
    assert_eq!(ids.len(), 2 + 2 * 5 + 2 * (4 * 3 + 2 + 3 + 2));
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
    let expected: Vec<String> = org.listed_projects().map(|p| p.id.clone()).collect();
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

/// The variant flags default to the documented rules (Flex, deleted clusters and projects,
/// tags; `projectId` keys, the extended CSV) and switch each one.
#[test]
fn sim_args_map_variant_flags() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }
    let cfg = Cli::parse_from(["x"]).sim.to_config();
    assert!(cfg.flex_clusters && cfg.deleted_clusters && cfg.deleted_projects && cfg.tags);
    assert!(!cfg.flex_in_clusters_listing);
    assert_eq!(
        (cfg.row_keys, cfg.csv_layout),
        (RowKeys::ProjectId, CsvLayout::Extended)
    );
    let cfg = Cli::parse_from([
        "x",
        "--no-flex-clusters",
        "--flex-in-clusters-listing",
        "--no-deleted-clusters",
        "--no-deleted-projects",
        "--no-tags",
        "--row-keys",
        "group-id",
        "--csv-layout",
        "spec-example",
    ])
    .sim
    .to_config();
    assert!(!(cfg.flex_clusters || cfg.deleted_clusters || cfg.deleted_projects || cfg.tags));
    assert!(cfg.flex_in_clusters_listing);
    assert_eq!(
        (cfg.row_keys, cfg.csv_layout),
        (RowKeys::GroupId, CsvLayout::SpecExample)
    );
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

// ---------------------------------------------------------------- data and result variants

/// `config()` with results ready at the first poll.
fn ready_config() -> SimConfig {
    SimConfig {
        polls_before_ready: 0,
        ..config()
    }
}

/// GETs `path` with a Bearer token and `accept`; the status and the JSON body.
async fn get_json(base: &str, token: &str, path: &str, accept: &str) -> (StatusCode, Value) {
    let resp = client()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .header("Accept", accept)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    let v = serde_json::from_str(&resp.text().await.expect("body")).expect("json");
    (status, v)
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

/// Creates a query and polls it once (the simulator must answer at once); the raw answer.
async fn run_query(base: &str, token: &str, org: &str, body: &Value, accept: &str) -> String {
    let query = create_token(base, token, org, body).await;
    let resp = client()
        .get(format!(
            "{base}/api/atlas/v2/orgs/{org}/billing/costExplorer/usage/{query}"
        ))
        .bearer_auth(token)
        .header("Accept", accept)
        .send()
        .await
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.expect("body")
}

/// `run_query` for JSON: the `usageDetails` rows.
async fn query_rows(base: &str, token: &str, org: &str, body: &Value) -> Vec<Value> {
    let text = run_query(base, token, org, body, JSON_TYPE).await;
    let v: Value = serde_json::from_str(&text).expect("json");
    v["usageDetails"].as_array().expect("rows").clone()
}

/// Flex clusters are listed by `/flexClusters` only (version 2024-11-13, other media types
/// 406, unknown project 404), never by `/clusters`; the endpoint is counted and faultable.
#[tokio::test]
async fn flex_clusters_are_listed_only_by_their_endpoint() {
    let (sim, base) = start(config()).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let project = &data.orgs[0].projects[0];
    let flex: Vec<&SimCluster> = project.clusters.iter().filter(|c| c.is_flex()).collect();
    assert_eq!(flex.len(), 1, "one Flex cluster in project 0");
    assert!(
        data.orgs[0].projects[1]
            .clusters
            .iter()
            .all(|c| !c.is_flex())
    );

    let path = format!("/api/atlas/v2/groups/{}/flexClusters", project.id);
    let (status, v) = get_json(&base, &token, &path, FLEX_TYPE).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result_ids(&v), vec![flex[0].id.clone()]);
    assert_eq!(v["totalCount"], 1);
    assert_eq!(v["results"][0]["name"], flex[0].name.as_str());
    assert_eq!(v["results"][0]["groupId"], project.id.as_str());
    assert!(v["results"][0]["tags"].is_array());
    assert!(v["links"].is_array());

    let (status, v) = get_json(
        &base,
        &token,
        &format!("/api/atlas/v2/groups/{}/clusters", project.id),
        JSON_TYPE,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!result_ids(&v).contains(&flex[0].id));

    let (status, v) = get_json(&base, &token, &path, JSON_TYPE).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(v["error"], 406);
    let (status, v) = get_json(
        &base,
        &token,
        "/api/atlas/v2/groups/0123456789abcdef01234567/flexClusters",
        FLEX_TYPE,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["errorCode"], "RESOURCE_NOT_FOUND");
    assert_eq!(sim.requests(SimEndpoint::FlexClusters), 3);

    sim.fail(SimEndpoint::FlexClusters, Fault::Status(503));
    let (status, _) = get_json(&base, &token, &path, FLEX_TYPE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// With `flex_in_clusters_listing` (Atlas before January 2026) `/clusters` lists the Flex
/// clusters too, and `/flexClusters` still does.
#[tokio::test]
async fn flex_in_clusters_listing_variant_lists_them_in_both() {
    let (sim, base) = start(SimConfig {
        flex_in_clusters_listing: true,
        ..config()
    })
    .await;
    let token = bearer(&base).await;
    let project = sim.dataset().orgs[0].projects[0].clone();
    let flex = project
        .listed_flex_clusters()
        .next()
        .expect("flex")
        .id
        .clone();
    let (_, v) = get_json(
        &base,
        &token,
        &format!("/api/atlas/v2/groups/{}/clusters", project.id),
        JSON_TYPE,
    )
    .await;
    assert_eq!(v["totalCount"], 4);
    assert!(result_ids(&v).contains(&flex));
}

/// A Flex cluster bills `Clusters` every month; its id works in the `clusters` filter and
/// comes back in grouped-by-clusters rows, adding up to `Dataset::cluster_cents`.
#[tokio::test]
async fn flex_clusters_are_billed_and_grouped_by_clusters() {
    let (sim, base) = start(ready_config()).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[1];
    let flex = org.projects[2].listed_flex_clusters().next().expect("flex");
    let (s, e) = (current().plus(-17), current().plus(1));
    let body = json!({"startDate": s.first_day(), "endDate": e.first_day(),
                      "groupBy": "clusters", "clusters": [flex.id]});
    let rows = query_rows(&base, &token, &org.id, &body).await;
    assert_eq!(rows.len(), 18, "one row a month");
    assert!(rows.iter().all(|r| r["clusterId"] == flex.id.as_str()
        && r["clusterName"] == flex.name.as_str()
        && r["service"] == "Clusters"));
    let cents = data.cluster_cents(&flex.id, s, e);
    assert!(cents > 0);
    assert_eq!(sum_cents(&rows), cents);
}

/// A deleted cluster is in no listing (not even with `includeDeletedWithRetainedBackups`),
/// bills up to its deletion month and nothing after, and the Cost Explorer still answers its
/// rows for its id.
#[tokio::test]
async fn deleted_clusters_are_billed_before_deletion_and_never_listed() {
    let (sim, base) = start(ready_config()).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[0];
    let project = &org.projects[0];
    let gone = project
        .clusters
        .iter()
        .find(|c| c.is_deleted() && !c.retained_backups)
        .expect("deleted cluster in project 0");
    assert_eq!(gone.name, "legacy-etl");
    let deleted = gone.deleted.expect("month");
    assert_eq!(deleted, current().plus(-2));
    for include in ["false", "true"] {
        let (_, v) = get_json(
            &base,
            &token,
            &format!(
                "/api/atlas/v2/groups/{}/clusters?includeDeletedWithRetainedBackups={include}",
                project.id
            ),
            JSON_TYPE,
        )
        .await;
        assert!(!result_ids(&v).contains(&gone.id), "{include}");
    }
    let (s, e) = (current().plus(-17), current().plus(1));
    let body = json!({"startDate": s.first_day(), "endDate": e.first_day(),
                      "groupBy": "clusters", "clusters": [gone.id]});
    let rows = query_rows(&base, &token, &org.id, &body).await;
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["clusterId"] == gone.id.as_str()
        && r["usageDate"].as_str().expect("date") <= deleted.first_day().as_str()));
    assert!(
        rows.iter()
            .any(|r| r["usageDate"] == deleted.first_day().as_str())
    );
    assert_eq!(sum_cents(&rows), data.cluster_cents(&gone.id, s, e));
    assert_eq!(data.cluster_cents(&gone.id, deleted.plus(1), e), 0);
}

/// A cluster deleted with retained backups is listed only with
/// `includeDeletedWithRetainedBackups=true` (the `next` link keeps the parameter) and bills
/// only `Backup` after its deletion.
#[tokio::test]
async fn retained_backup_clusters_are_listed_only_when_asked_and_bill_backup() {
    let (sim, base) = start(SimConfig {
        max_page_size: 2,
        ..ready_config()
    })
    .await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[0];
    let project = &org.projects[1];
    let kept = project
        .clusters
        .iter()
        .find(|c| c.retained_backups)
        .expect("retained-backup cluster in project 1");
    assert_eq!(kept.name, "old-billing");
    let deleted = kept.deleted.expect("deleted");
    let list = |include: bool| {
        let (base, token, id) = (base.clone(), token.clone(), project.id.clone());
        async move {
            let mut ids = Vec::new();
            let mut url = format!(
                "/api/atlas/v2/groups/{id}/clusters?itemsPerPage=2{}",
                if include {
                    "&includeDeletedWithRetainedBackups=true"
                } else {
                    ""
                }
            );
            loop {
                let (_, v) = get_json(&base, &token, &url, JSON_TYPE).await;
                ids.extend(result_ids(&v));
                let next = v["links"]
                    .as_array()
                    .expect("links")
                    .iter()
                    .find(|l| l["rel"] == "next")
                    .map(|l| l["href"].as_str().expect("href").to_string());
                match next {
                    Some(href) => url = href.replacen(&base, "", 1),
                    None => return ids,
                }
            }
        }
    };
    let without = list(false).await;
    let with = list(true).await;
    assert_eq!(without.len(), 3);
    assert!(!without.contains(&kept.id));
    assert_eq!(with.len(), 4);
    assert!(with.contains(&kept.id));

    let (s, e) = (deleted.plus(1), current().plus(1));
    let body = json!({"startDate": s.first_day(), "endDate": e.first_day(),
                      "groupBy": "clusters", "clusters": [kept.id]});
    let rows = query_rows(&base, &token, &org.id, &body).await;
    assert_eq!(rows.len() as i64, e.since(s));
    assert!(rows.iter().all(|r| r["service"] == "Backup"));
    assert_eq!(sum_cents(&rows), data.cluster_cents(&kept.id, s, e));
}

/// A deleted project is absent from the projects listing, its cluster and Flex listings answer
/// 404 `RESOURCE_NOT_FOUND`, and a `projects` query with its id still returns its rows up to
/// its deletion month.
#[tokio::test]
async fn deleted_projects_are_billed_but_unlisted_and_404() {
    let (sim, base) = start(ready_config()).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[0];
    let retired = &org.projects[4];
    assert_eq!(retired.name, "Retired Project");
    let deleted = retired.deleted.expect("deleted");
    assert!(retired.clusters.iter().all(|c| c.deleted == Some(deleted)));

    let (_, v) = get_json(
        &base,
        &token,
        &format!("/api/atlas/v2/orgs/{}/groups", org.id),
        JSON_TYPE,
    )
    .await;
    assert_eq!(v["totalCount"], 4);
    assert!(!result_ids(&v).contains(&retired.id));
    for (listing, accept) in [("clusters", JSON_TYPE), ("flexClusters", FLEX_TYPE)] {
        let (status, v) = get_json(
            &base,
            &token,
            &format!("/api/atlas/v2/groups/{}/{listing}", retired.id),
            accept,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{listing}");
        assert_eq!(v["errorCode"], "RESOURCE_NOT_FOUND");
    }

    let (s, e) = (current().plus(-17), current().plus(1));
    let body = json!({"startDate": s.first_day(), "endDate": e.first_day(),
                      "groupBy": "projects", "projects": [retired.id]});
    let rows = query_rows(&base, &token, &org.id, &body).await;
    assert!(rows.iter().all(|r| r["projectId"] == retired.id.as_str()
        && r["usageDate"].as_str().expect("date") <= deleted.first_day().as_str()));
    let cents = data.project_cents(&retired.id, s, e);
    assert!(cents > 0);
    assert_eq!(sum_cents(&rows), cents);
}

/// `delete_cluster` and `delete_project` take effect on the listings at once, keep every
/// charge (so the totals do not move), survive a later `set_amount_scale`, and refuse an
/// unknown or already deleted id.
#[tokio::test]
async fn runtime_deletion_hides_from_listings_and_keeps_bills() {
    let (sim, base) = start(config()).await;
    let token = bearer(&base).await;
    let before = sim.dataset();
    let org = &before.orgs[0];
    let (cluster, project) = (&org.projects[0].clusters[1], &org.projects[2]);
    let flex = org.projects[0].listed_flex_clusters().next().expect("flex");
    assert!(sim.delete_cluster(&cluster.id));
    assert!(sim.delete_cluster(&flex.id));
    assert!(sim.delete_project(&project.id));
    assert!(!sim.delete_cluster(&cluster.id), "already deleted");
    assert!(!sim.delete_project(&project.id), "already deleted");
    assert!(!sim.delete_cluster("0123456789abcdef01234567"), "unknown");
    sim.set_amount_scale(1, 1);

    let after = sim.dataset();
    let (s, e) = (current().plus(-17), current().plus(1));
    assert_eq!(
        after.total_cents(&org.id, s, e),
        before.total_cents(&org.id, s, e)
    );
    let (o, p, c) = after.cluster_by_id(&cluster.id).expect("still known");
    assert_eq!(
        after.orgs[o].projects[p].clusters[c].deleted,
        Some(current())
    );
    let clusters_of = |project_id: &str, accept: &'static str, listing: &'static str| {
        let (base, token, path) = (
            base.clone(),
            token.clone(),
            format!("/api/atlas/v2/groups/{project_id}/{listing}"),
        );
        async move { get_json(&base, &token, &path, accept).await }
    };
    let (_, v) = clusters_of(&org.projects[0].id, JSON_TYPE, "clusters").await;
    assert_eq!(result_ids(&v).len(), 2);
    assert!(!result_ids(&v).contains(&cluster.id));
    let (_, v) = clusters_of(&org.projects[0].id, FLEX_TYPE, "flexClusters").await;
    assert!(result_ids(&v).is_empty());
    let (status, _) = clusters_of(&project.id, JSON_TYPE, "clusters").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, v) = get_json(
        &base,
        &token,
        &format!("/api/atlas/v2/orgs/{}/groups", org.id),
        JSON_TYPE,
    )
    .await;
    assert!(!result_ids(&v).contains(&project.id));
    assert_eq!(result_ids(&v).len(), 3);
}

/// Projects, clusters and Flex clusters carry `tags` as `{"key","value"}` pairs in their
/// listings, as `SimProject::tags`/`SimCluster::tags` say: values with spaces and unicode,
/// some entities without tags, and a cluster without a key its project has.
#[tokio::test]
async fn tags_are_served_on_projects_clusters_and_flex() {
    let (sim, base) = start(config()).await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[0];
    let as_json = |tags: &[SimTag]| -> Value {
        tags.iter()
            .map(|t| json!({"key": t.key, "value": t.value}))
            .collect()
    };
    let (_, v) = get_json(
        &base,
        &token,
        &format!("/api/atlas/v2/orgs/{}/groups", org.id),
        JSON_TYPE,
    )
    .await;
    for (row, project) in v["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(org.listed_projects())
    {
        assert_eq!(row["tags"], as_json(&project.tags), "{}", project.name);
    }
    let all_tags: Vec<&SimTag> = org
        .projects
        .iter()
        .flat_map(|p| p.tags.iter())
        .chain(org.all_clusters().flat_map(|(_, c)| c.tags.iter()))
        .collect();
    assert!(all_tags.iter().any(|t| t.value.contains(' ')));
    assert!(all_tags.iter().any(|t| !t.value.is_ascii()));
    assert!(org.projects[3].tags.is_empty(), "project 3 has no tags");
    assert!(org.projects[0].clusters[2].tags.is_empty());
    let has = |tags: &[SimTag], key: &str| tags.iter().any(|t| t.key == key);
    assert!(has(&org.projects[0].tags, "env") && !has(&org.projects[0].clusters[1].tags, "env"));

    let project = &org.projects[0];
    let (_, v) = get_json(
        &base,
        &token,
        &format!("/api/atlas/v2/groups/{}/clusters", project.id),
        JSON_TYPE,
    )
    .await;
    for (row, cluster) in v["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip(project.listed_clusters(false))
    {
        assert_eq!(row["tags"], as_json(&cluster.tags));
    }
    let (_, v) = get_json(
        &base,
        &token,
        &format!("/api/atlas/v2/groups/{}/flexClusters", project.id),
        FLEX_TYPE,
    )
    .await;
    let flex = project.listed_flex_clusters().next().expect("flex");
    assert!(!flex.tags.is_empty());
    assert_eq!(v["results"][0]["tags"], as_json(&flex.tags));

    let bare = Dataset::generate(
        &SimConfig {
            tags: false,
            ..config()
        },
        current(),
    );
    assert!(
        bare.orgs
            .iter()
            .flat_map(|o| o.projects.iter())
            .all(|p| p.tags.is_empty() && p.clusters.iter().all(|c| c.tags.is_empty()))
    );
}

/// Each `RowKeys` variant spells the project and cluster keys of JSON rows its own way
/// (`projectId`..., `groupId`/`clusterUniqueId`..., or unguessable `grp`/`clstr`...); rows of
/// a query without `groupBy` carry `service` and none of those keys.
#[tokio::test]
async fn row_keys_variants_spell_dimension_keys() {
    let every_key: HashSet<&str> = [RowKeys::ProjectId, RowKeys::GroupId, RowKeys::Unknown]
        .iter()
        .flat_map(|k| k.keys())
        .collect();
    for keys in [RowKeys::ProjectId, RowKeys::GroupId, RowKeys::Unknown] {
        let (sim, base) = start(SimConfig {
            row_keys: keys,
            ..ready_config()
        })
        .await;
        let token = bearer(&base).await;
        let data = sim.dataset();
        let org = &data.orgs[0];
        let cluster = &org.projects[0].clusters[0];
        let (s, e) = (current(), current().plus(1));
        let body = json!({"startDate": s.first_day(), "endDate": e.first_day(),
                          "groupBy": "clusters", "clusters": [cluster.id]});
        let rows = query_rows(&base, &token, &org.id, &body).await;
        assert!(!rows.is_empty());
        let [pid, pname, cid, cname] = keys.keys();
        for r in &rows {
            assert_eq!(r[pid], org.projects[0].id.as_str(), "{keys:?}");
            assert_eq!(r[pname], org.projects[0].name.as_str());
            assert_eq!(r[cid], cluster.id.as_str());
            assert_eq!(r[cname], cluster.name.as_str());
            let obj = r.as_object().expect("object");
            let dims = obj
                .keys()
                .filter(|k| every_key.contains(k.as_str()))
                .count();
            assert_eq!(dims, 4, "{keys:?}: only its own spellings");
        }
        let body = json!({"startDate": s.first_day(), "endDate": e.first_day()});
        let rows = query_rows(&base, &token, &org.id, &body).await;
        assert!(rows.iter().all(|r| {
            r["service"].is_string()
                && r.as_object()
                    .expect("object")
                    .keys()
                    .all(|k| !every_key.contains(k.as_str()))
        }));
        assert_eq!(sum_cents(&rows), data.total_cents(&org.id, s, e));
    }
}

/// `CsvLayout::Spec` starts with exactly the spec's labels (plus `Service` before `Usage
/// Amount` when rows carry a service), puts the usage month's first day in `Billed Date`, and
/// adds up to the exact total; grouped by organizations it has no `Service` column.
#[tokio::test]
async fn csv_spec_layout_has_the_spec_labels_and_usage_month() {
    let (sim, base) = start(SimConfig {
        csv_layout: CsvLayout::Spec,
        ..ready_config()
    })
    .await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[0];
    let (s, e) = (current().plus(-2), current().plus(1));
    let body = json!({"startDate": s.first_day(), "endDate": e.first_day()});
    let text = run_query(&base, &token, &org.id, &body, CSV_TYPE).await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut expected = SPEC_CSV_HEADER.to_vec();
    expected.insert(8, "Service");
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        expected
    );
    let months: HashSet<String> = (0..3).map(|i| s.plus(i).first_day()).collect();
    let mut total = 0;
    for record in reader.records() {
        let record = record.expect("record");
        assert!(months.contains(&record[0]), "usage month in Billed Date");
        assert_eq!(&record[3], org.id.as_str());
        assert_eq!(&record[4], "", "no project column value without grouping");
        assert!(!record[8].is_empty());
        total += (record[9].parse::<f64>().expect("amount") * 100.0).round() as i64;
    }
    assert_eq!(total, data.total_cents(&org.id, s, e));

    let body = json!({"startDate": s.first_day(), "endDate": e.first_day(),
                      "groupBy": "organizations", "organizations": [org.id]});
    let text = run_query(&base, &token, &org.id, &body, CSV_TYPE).await;
    let first = text.lines().next().expect("header");
    assert_eq!(first, SPEC_CSV_HEADER.join(","));
}

/// `CsvLayout::NoPreamble` starts with the header, its labels in other cases with stray
/// spaces, every line ending in two empty cells and each amount led by a space.
#[tokio::test]
async fn csv_no_preamble_layout_has_messy_header_and_trailing_cells() {
    let (sim, base) = start(SimConfig {
        csv_layout: CsvLayout::NoPreamble,
        ..ready_config()
    })
    .await;
    let token = bearer(&base).await;
    let data = sim.dataset();
    let org = &data.orgs[0];
    let (s, e) = (current(), current().plus(1));
    let body = json!({"startDate": s.first_day(), "endDate": e.first_day()});
    let text = run_query(&base, &token, &org.id, &body, CSV_TYPE).await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header.len(), 13);
    let normal: Vec<String> = header[..11]
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let expected: Vec<String> = CSV_HEADER.iter().map(|h| h.to_ascii_lowercase()).collect();
    assert_eq!(normal, expected);
    assert_ne!(header[..11], CSV_HEADER.map(str::to_string));
    assert!(header[11].is_empty() && header[12].is_empty());
    let mut total = 0;
    for record in reader.records() {
        let record = record.expect("record");
        assert!(record[10].starts_with(' '));
        assert!(record[11].is_empty() && record[12].is_empty());
        total += (record[10].trim().parse::<f64>().expect("amount") * 100.0).round() as i64;
    }
    assert_eq!(total, data.total_cents(&org.id, s, e));
}

/// `CsvLayout::SpecExample` answers the spec's garbled example body verbatim, whatever was
/// asked: labels down the first column, one row of values at most, nothing that adds up.
#[tokio::test]
async fn csv_spec_example_layout_serves_the_specs_garbled_shape() {
    let (sim, base) = start(SimConfig {
        csv_layout: CsvLayout::SpecExample,
        ..ready_config()
    })
    .await;
    let token = bearer(&base).await;
    let org = sim.dataset().orgs[0].id.clone();
    let body =
        json!({"startDate": current().first_day(), "endDate": current().plus(1).first_day()});
    let text = run_query(&base, &token, &org, &body, CSV_TYPE).await;
    assert!(
        text.starts_with(&format!("Billed Date,{org},\nInvoice Id,")),
        "{text}"
    );
    assert!(text.contains("\nUsage Amount, "), "{text}");
    assert_eq!(text.lines().count(), 9);
    // JSON results are unaffected by the CSV layout.
    assert!(!query_rows(&base, &token, &org, &body).await.is_empty());
}

/// The totals helpers agree with each other to the cent: the org total is org-level plus
/// project-level plus every cluster (deleted and Flex included); the projects plus the
/// org-level charges give it too; per-month and per-service totals sum to it; and the
/// unlisted part is what deleted projects and clusters bill.
#[test]
fn totals_helpers_add_up_to_the_org_total() {
    let data = Dataset::generate(&config(), current());
    let (s, e) = (current().plus(-17), current().plus(1));
    for org in &data.orgs {
        let total = data.total_cents(&org.id, s, e);
        let org_level = data.org_level_cents(&org.id, s, e);
        let project_level = data.project_level_cents(&org.id, s, e);
        let clusters: i64 = org
            .all_clusters()
            .map(|(_, c)| data.cluster_cents(&c.id, s, e))
            .sum();
        assert_eq!(org_level + project_level + clusters, total);
        assert_eq!(
            clusters,
            data.total_cents_grouped(&org.id, s, e, GroupBy::Clusters, false)
        );
        let projects: i64 = org
            .projects
            .iter()
            .map(|p| data.project_cents(&p.id, s, e))
            .sum();
        assert_eq!(projects + org_level, total);
        assert_eq!(
            data.monthly_service_cents(&org.id, s, e)
                .values()
                .sum::<i64>(),
            total
        );
        assert_eq!(data.monthly_cents(&org.id, s, e).len(), 18);
        assert_eq!(
            data.monthly_cents(&org.id, s, e).values().sum::<i64>(),
            total
        );
        let services: HashSet<&str> = data
            .org_usage(data.org_by_id(&org.id).expect("org"))
            .iter()
            .map(|r| r.service.as_str())
            .collect();
        let by_service: i64 = services
            .iter()
            .map(|sv| data.service_cents(&org.id, sv, s, e))
            .sum();
        assert_eq!(by_service, total);

        let unlisted = data.unlisted_cents(&org.id, s, e, true);
        let expected: i64 = org
            .projects
            .iter()
            .filter(|p| p.is_deleted())
            .map(|p| data.project_cents(&p.id, s, e))
            .sum::<i64>()
            + org
                .all_clusters()
                .filter(|(p, c)| !p.is_deleted() && c.is_deleted() && !c.retained_backups)
                .map(|(_, c)| data.cluster_cents(&c.id, s, e))
                .sum::<i64>();
        assert!(unlisted > 0);
        assert_eq!(unlisted, expected);
        assert!(data.unlisted_cents(&org.id, s, e, false) > unlisted);
    }
}

/// Turning the extras off gives the bare account: only live dedicated clusters and projects.
#[test]
fn extras_can_be_switched_off() {
    let data = Dataset::generate(
        &SimConfig {
            flex_clusters: false,
            deleted_clusters: false,
            deleted_projects: false,
            ..config()
        },
        current(),
    );
    for org in &data.orgs {
        assert_eq!(org.projects.len(), 4);
        assert!(org.all_clusters().all(|(p, c)| !c.is_flex()
            && !c.is_deleted()
            && !p.is_deleted()
            && p.clusters.len() == 3));
    }
}
