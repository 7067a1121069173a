//! TLS and basic auth of the exporter's own endpoints (`--web.config.file`), over real
//! connections: certificates made at test time with rcgen, bcrypt hashes made here.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::Path;
use std::sync::Arc;

use atlas_cost_exporter::web_config::WebConfig;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

/// Writes a self-signed server certificate for 127.0.0.1 and localhost; returns its PEM.
fn write_server_cert(dir: &Path) -> String {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    std::fs::write(dir.join("server.crt"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), ck.signing_key.serialize_pem()).unwrap();
    ck.cert.pem()
}

/// Writes `web.yml` into `dir` and loads it as the exporter does.
fn web_config(dir: &Path, yaml: &str) -> Arc<WebConfig> {
    let path = dir.join("web.yml");
    std::fs::write(&path, yaml).unwrap();
    Arc::new(WebConfig::load(&path).unwrap())
}

fn tls_and_auth_yaml() -> String {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         basic_auth_users:\n  {USER}: '{hash}'\n"
    )
}

/// An exporter against a one-org simulator, serving with a web configuration, and the PEM of
/// the server certificate its clients trust.
struct Served {
    ca: String,
    exporter: Exporter,
    _sim: Sim,
}

/// Writes a server certificate and `web.yml` (`yaml`) into `dir` (which may hold more files
/// the configuration names), then starts an exporter with that web configuration.
async fn serve(dir: &Path, yaml: &str) -> Served {
    let ca = write_server_cert(dir);
    let web = web_config(dir, yaml);
    let sim = start_sim(with_orgs(1)).await;
    let exporter = sim
        .exporter(&[services()])
        .tweak(|c| c.web = Some(web))
        .start()
        .await;
    Served {
        ca,
        exporter,
        _sim: sim,
    }
}

impl Served {
    /// A client that trusts the server certificate.
    fn client(&self) -> reqwest::Client {
        https_client(&self.ca)
    }

    /// `GET path` over HTTPS with `client`, as `USER` with `password` when one is given.
    async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        password: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut req = client.get(format!("https://{}{path}", self.exporter.addr));
        if let Some(password) = password {
            req = req.basic_auth(USER, Some(password));
        }
        req.send().await
    }
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// Over HTTPS with the right user and password, `/metrics` answers 200 with the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_scrape_with_the_right_password_works() {
    let served = serve(&temp_dir(), &tls_and_auth_yaml()).await;
    let client = served.client();
    for _ in 0..2 {
        // The second time from the verification cache: same answer.
        let r = served
            .get(&client, "/metrics", Some(PASSWORD))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("atlas_cost_build_info"));
    }
    served.exporter.stop().await;
}

/// A wrong password gets 401 with a Basic challenge naming the realm, on every path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_a_challenge() {
    let served = serve(&temp_dir(), &tls_and_auth_yaml()).await;
    let client = served.client();
    for path in ["/metrics", "/", "/healthz", "/readyz", "/nope"] {
        let r = served.get(&client, path, Some("wrong")).await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Basic realm=\"atlas-cost-exporter\""
        );
        assert!(!r.text().await.unwrap().contains("atlas_cost"));
    }
    served.exporter.stop().await;
}

/// No credentials, an unknown user and a non-Basic scheme all get 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_and_unknown_users_are_refused() {
    let served = serve(&temp_dir(), &tls_and_auth_yaml()).await;
    let client = served.client();
    let none = served.get(&client, "/metrics", None).await.unwrap();
    assert_eq!(none.status(), 401);
    let url = format!("https://{}/metrics", served.exporter.addr);
    let unknown = client
        .get(&url)
        .basic_auth("intruder", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let bearer = client.get(&url).bearer_auth(PASSWORD).send().await.unwrap();
    assert_eq!(bearer.status(), 401);
    served.exporter.stop().await;
}

/// Plain HTTP against the TLS port fails, and a silent client that never finishes its
/// handshake blocks nobody: HTTPS keeps being served afterwards and meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_against_the_tls_port_fails_and_the_server_keeps_serving() {
    let served = serve(&temp_dir(), &tls_and_auth_yaml()).await;
    let plain = reqwest::Client::new()
        .get(served.exporter.url("/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.as_ref().unwrap().status().is_success(),
        "plain HTTP was served: {plain:?}"
    );
    // A client that connects and says nothing, held open during the next scrape.
    let _silent = tokio::net::TcpStream::connect(served.exporter.addr)
        .await
        .unwrap();
    let r = served
        .get(&served.client(), "/metrics", Some(PASSWORD))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    served.exporter.stop().await;
}

/// TLS without basic auth: an HTTPS client that does not trust the certificate is refused,
/// one that does is served without credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alone_serves_clients_that_trust_the_certificate() {
    let served = serve(
        &temp_dir(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .await;
    let untrusting = served.get(&reqwest::Client::new(), "/healthz", None).await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    let r = served
        .get(&served.client(), "/healthz", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    served.exporter.stop().await;
}

/// Basic auth without TLS works over plain HTTP (for a TLS-terminating proxy in front).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_alone_works_over_plain_http() {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let served = serve(
        &temp_dir(),
        &format!("basic_auth_users:\n  {USER}: '{hash}'\n"),
    )
    .await;
    let exporter = &served.exporter;
    assert_eq!(exporter.get("/metrics", &[]).await.status(), 401);
    let r = exporter
        .http
        .get(exporter.url("/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    served.exporter.stop().await;
}

/// With `RequireAndVerifyClientCert`, a client without a certificate is refused and one
/// with a certificate from `client_ca_file` is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified() {
    let dir = temp_dir();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("clients.crt"), ca.pem()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["scraper".to_owned()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();
    let served = serve(
        &dir,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n",
    )
    .await;
    let anonymous = served.get(&served.client(), "/healthz", None).await;
    assert!(anonymous.is_err(), "{anonymous:?}");
    let identity = format!("{}{}", client_cert.pem(), client_key.serialize_pem());
    let with_cert = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(served.ca.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = served.get(&with_cert, "/healthz", None).await.unwrap();
    assert_eq!(r.status(), 200);
    served.exporter.stop().await;
}

/// The binary refuses an invalid `--web.config.file` at start-up with exit code 2 and one
/// line naming the key.
#[test]
fn invalid_web_config_file_stops_the_binary_naming_the_key() {
    let dir = temp_dir();
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atlas-cost-exporter"))
        .args(["--atlas.org-id", "5f1b2c3d4e5f6a7b8c9d0e1f"])
        .arg("--web.config.file")
        .arg(&path)
        .env("MONGODB_ATLAS_CLIENT_ID", "id")
        .env("MONGODB_ATLAS_CLIENT_SECRET", "secret")
        .env_remove("MONGODB_ATLAS_PUBLIC_API_KEY")
        .env_remove("MONGODB_ATLAS_PRIVATE_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "invalid configuration: --web.config.file: tls_server_config.cert_file: cannot read"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
