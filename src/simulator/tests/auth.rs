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
    digest_with_count(path, nonce, password, cnonce, algorithm, "00000001")
}

/// [`digest_authorization`] with the nonce count `nc` as written on the wire.
fn digest_with_count(
    path: &str,
    nonce: &str,
    password: &str,
    cnonce: &str,
    algorithm: Option<&str>,
    nc: &str,
) -> String {
    let ha1 = md5_hex(&format!("demopublic:MMS Public API:{password}"));
    let ha2 = md5_hex(&format!("GET:{path}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    let algorithm = algorithm.map_or_else(String::new, |a| format!(" algorithm={a},"));
    format!(
        "Digest username=\"demopublic\", realm=\"MMS Public API\", nonce=\"{nonce}\", uri=\"{path}\",{algorithm} qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\""
    )
}

/// A Digest endpoint of a simulator: asks for challenges and sends answers over them.
struct DigestTarget {
    sim: Simulator,
    url: String,
    path: String,
}

impl DigestTarget {
    async fn start(cfg: SimConfig) -> DigestTarget {
        let (sim, base) = start(cfg).await;
        let org = sim.dataset().orgs[0].id.clone();
        let path = format!("/api/atlas/v2/orgs/{org}/groups");
        DigestTarget {
            sim,
            url: format!("{base}{path}"),
            path,
        }
    }

    /// The nonce of the challenge to a request without credentials.
    async fn nonce(&self) -> String {
        let first = client().get(&self.url).send().await.expect("send");
        assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
        let challenge = challenge_of(&first);
        parse_auth_params(&challenge["Digest ".len()..])["nonce"].clone()
    }

    /// The status of a correct answer over `nonce` with count `nc` (as written), and the
    /// `stale` flag of its challenge if refused.
    async fn answer(&self, nonce: &str, nc: &str) -> (StatusCode, Option<String>) {
        self.answer_as(nonce, nc, "demo-private-key").await
    }

    async fn answer_as(
        &self,
        nonce: &str,
        nc: &str,
        password: &str,
    ) -> (StatusCode, Option<String>) {
        let auth = digest_with_count(&self.path, nonce, password, "c0ffee", None, nc);
        let resp = client()
            .get(&self.url)
            .header("Accept", JSON_TYPE)
            .header("Authorization", auth)
            .send()
            .await
            .expect("send");
        let stale = resp
            .headers()
            .get("www-authenticate")
            .map(|_| parse_auth_params(&challenge_of(&resp)["Digest ".len()..])["stale"].clone());
        (resp.status(), stale)
    }
}

const OK: (StatusCode, Option<String>) = (StatusCode::OK, None);

fn refused(stale: bool) -> (StatusCode, Option<String>) {
    (StatusCode::UNAUTHORIZED, Some(stale.to_string()))
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

/// With `nonce_stale_after: 3` a nonce lets in three answers, and a correct fourth is met
/// with `stale=true`; the counts say so.
#[tokio::test]
async fn a_nonce_goes_stale_after_its_k_answers() {
    let t = DigestTarget::start(SimConfig {
        nonce_stale_after: Some(3),
        ..config()
    })
    .await;
    let nonce = t.nonce().await;
    for nc in ["00000001", "00000002", "00000003"] {
        assert_eq!(t.answer(&nonce, nc).await, OK, "{nc}");
    }
    assert_eq!(t.answer(&nonce, "00000004").await, refused(true));
    assert_eq!(
        t.sim.digest_counts(),
        DigestCounts {
            accepted: 3,
            plain: 0,
            stale: 1
        }
    );
}

/// With `nonce_forgotten_after: 2` a nonce lets in two answers and is then unknown: a third
/// correct answer gets a plain fresh challenge when unknown nonces are not called stale, and
/// `stale=true` when they are.
#[tokio::test]
async fn a_nonce_forgotten_after_k_answers_is_met_as_unknown() {
    for unknown_nonce_stale in [false, true] {
        let t = DigestTarget::start(SimConfig {
            nonce_forgotten_after: Some(2),
            unknown_nonce_stale,
            ..config()
        })
        .await;
        let nonce = t.nonce().await;
        assert_eq!(t.answer(&nonce, "00000001").await, OK);
        assert_eq!(t.answer(&nonce, "00000002").await, OK);
        assert_eq!(
            t.answer(&nonce, "00000003").await,
            refused(unknown_nonce_stale),
            "unknown_nonce_stale {unknown_nonce_stale}"
        );
    }
}

/// A nonce count seen before with the same nonce is a replay (RFC 7616 section 3.4) and is
/// refused with a plain challenge; so is a count that is not 8 hex digits from 00000001.
/// Other counts, in any order, are let in.
#[tokio::test]
async fn a_repeated_or_malformed_nonce_count_is_refused() {
    let t = DigestTarget::start(config()).await;
    let nonce = t.nonce().await;
    assert_eq!(t.answer(&nonce, "00000002").await, OK);
    assert_eq!(t.answer(&nonce, "00000001").await, OK);
    assert_eq!(t.answer(&nonce, "00000002").await, refused(false));
    for bad in ["00000000", "1", "0000000g", "000000001"] {
        assert_eq!(t.answer(&nonce, bad).await, refused(false), "{bad}");
    }
    assert_eq!(t.answer(&nonce, "0000000a").await, OK);
    assert_eq!(t.sim.digest_counts().plain, 5);
}

/// With `spurious_stale_every: 3` every third correct answer is called stale although its
/// nonce is fresh, and the nonce goes on letting answers in.
#[tokio::test]
async fn every_kth_good_answer_is_called_stale_anyway() {
    let t = DigestTarget::start(SimConfig {
        spurious_stale_every: Some(3),
        ..config()
    })
    .await;
    let nonce = t.nonce().await;
    let mut seen = Vec::new();
    for nc in 1..=6 {
        seen.push(t.answer(&nonce, &format!("{nc:08x}")).await);
    }
    assert_eq!(
        seen,
        [OK, OK, refused(true), OK, OK, refused(true)].to_vec()
    );
}

/// A revoked API key is refused with a plain fresh challenge, even over a nonce that let it
/// in before; a wrong private key never gets in, nor uses up a nonce's count.
#[tokio::test]
async fn a_revoked_or_wrong_api_key_gets_a_plain_challenge() {
    let t = DigestTarget::start(SimConfig {
        nonce_stale_after: Some(1),
        ..config()
    })
    .await;
    let nonce = t.nonce().await;
    assert_eq!(
        t.answer_as(&nonce, "00000001", "not-the-key").await,
        refused(false)
    );
    assert_eq!(t.answer(&nonce, "00000002").await, OK);
    let nonce = t.nonce().await;
    t.sim.revoke_api_key();
    assert_eq!(t.answer(&nonce, "00000001").await, refused(false));
}

/// With `shared_nonce` every challenge offers the same nonce while it is usable, and a new
/// one once it went stale; by default each challenge has a nonce of its own.
#[tokio::test]
async fn a_shared_nonce_is_offered_until_it_goes_stale() {
    let t = DigestTarget::start(SimConfig {
        shared_nonce: true,
        nonce_stale_after: Some(2),
        ..config()
    })
    .await;
    let nonce = t.nonce().await;
    assert_eq!(t.nonce().await, nonce);
    assert_eq!(t.answer(&nonce, "00000001").await, OK);
    assert_eq!(t.nonce().await, nonce, "usable once more");
    assert_eq!(t.answer(&nonce, "00000002").await, OK);
    let next = t.nonce().await;
    assert_ne!(next, nonce, "a new nonce once the old one is used up");
    assert_eq!(t.nonce().await, next);
    let own = DigestTarget::start(config()).await;
    assert_ne!(own.nonce().await, own.nonce().await);
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
