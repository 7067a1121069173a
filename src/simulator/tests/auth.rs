//! OAuth client credentials at the token endpoint, and HTTP Digest on the API endpoints.

use base64::Engine as _;
use md5::{Digest as _, Md5};

use super::super::auth::{basic_credentials, parse_auth_params};
use super::*;

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// An `Authorization` header answering the Digest challenge `nonce` for `GET path` as the
/// demo API key with `password`, with this client nonce and, when given, `algorithm`.
fn digest_authorization(
    path: &str,
    nonce: &str,
    password: &str,
    cnonce: &str,
    algorithm: Option<&str>,
) -> String {
    let ha1 = md5_hex(&format!("demopublic:MMS Public API:{password}"));
    let ha2 = md5_hex(&format!("GET:{path}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
    let algorithm = algorithm.map_or_else(String::new, |a| format!(" algorithm={a},"));
    format!(
        "Digest username=\"demopublic\", realm=\"MMS Public API\", nonce=\"{nonce}\", uri=\"{path}\",{algorithm} qop=auth, nc=00000001, cnonce=\"{cnonce}\", response=\"{response}\""
    )
}

/// The `WWW-Authenticate` challenge of a 401.
fn challenge_of(resp: &reqwest::Response) -> String {
    resp.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string()
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
    let ask = |secret: &'static str, body: &'static str| {
        client()
            .post(&url)
            .basic_auth("mdb_sa_id_demo", Some(secret))
            .body(body)
            .send()
    };
    let good = ask(encoded, "grant_type=client_credentials")
        .await
        .expect("send");
    assert_eq!(good.status(), StatusCode::OK);
    let v = json_of(good).await;
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert!(!v["access_token"].as_str().expect("token").is_empty());

    let bad = ask("wrong", "grant_type=client_credentials")
        .await
        .expect("send");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(bad).await["error"], "invalid_client");

    let no_grant = ask(encoded, "").await.expect("send");
    assert_eq!(no_grant.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(no_grant).await["error"], "invalid_request");
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
    let get = |authorization: Option<String>| {
        let request = client().get(&url).header("Accept", JSON_TYPE);
        match authorization {
            Some(a) => request.header("Authorization", a),
            None => request,
        }
        .send()
    };
    let first = get(None).await.expect("send");
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge_of(&first);
    let v = json_of(first).await;
    assert_eq!(v["errorCode"], "USER_UNAUTHORIZED");
    assert!(challenge.starts_with("Digest "));
    let params = parse_auth_params(&challenge["Digest ".len()..]);
    assert_eq!(params["realm"], "MMS Public API");
    assert_eq!(params["qop"], "auth");
    assert_eq!(params["algorithm"], "MD5");
    assert_eq!(params["stale"], "false");
    let nonce = &params["nonce"];

    let authorization = |password: &str| {
        Some(digest_authorization(
            &path,
            nonce,
            password,
            "abcdef",
            Some("MD5"),
        ))
    };
    let ok = get(authorization("demo-private-key")).await.expect("send");
    assert_eq!(ok.status(), StatusCode::OK);
    let wrong = get(authorization("not-the-key")).await.expect("send");
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
    let challenge = challenge_of(&first);
    let nonce = parse_auth_params(&challenge["Digest ".len()..])["nonce"].clone();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let auth = digest_authorization(&path, &nonce, "demo-private-key", "c", None);
    let again = client()
        .get(&url)
        .header("Accept", JSON_TYPE)
        .header("Authorization", auth)
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge_of(&again);
    assert!(challenge.contains("stale=true"), "{challenge}");
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
        basic_credentials(&headers, false),
        Some(("a%20b".to_string(), "c%3Ad".to_string()))
    );
    assert_eq!(
        basic_credentials(&headers, true),
        Some(("a b".to_string(), "c:d".to_string()))
    );
}
