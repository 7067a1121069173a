//! The exporter's own web configuration: TLS and basic auth, in the exporter-toolkit format.
//!
//! `--web.config.file` takes the file Prometheus exporters read through
//! [exporter-toolkit](https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: clients.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...                          # bcrypt hash
//! ```
//!
//! Relative paths are relative to the file's directory, as in exporter-toolkit. Keys of that
//! format this exporter cannot honour (cipher suites, curves, inline certificates, allowed
//! SANs, extra headers) are refused by name rather than silently ignored. Everything is
//! checked at start-up: files readable, certificate and key loaded and matching, bcrypt hashes
//! well-formed.
//!
//! Basic auth, like exporter-toolkit, protects every path, `/healthz` and `/readyz` included.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The realm of the `WWW-Authenticate` challenge.
pub const REALM: &str = "atlas-cost-exporter";

/// How long a client has to finish the TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Successful verifications remembered; beyond this the cache starts afresh. bcrypt ignores
/// bytes past the 72nd, so one user has endless matching passwords: the bound keeps a
/// logged-in client from growing the cache without end.
const AUTH_CACHE_LIMIT: usize = 1024;

/// The highest bcrypt cost taken. Each step doubles the time of a check (cost 10, the
/// usual, takes about 50 ms; 16 about 4 s): a higher one would hold every new client, and
/// the start-up's own dummy hash, for minutes to days (31 is about a day per check).
const MAX_BCRYPT_COST: u32 = 16;

/// An invalid `--web.config.file`: one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("--web.config.file: {0}")]
pub struct WebConfigError(String);

fn bad<T>(msg: impl Into<String>) -> Result<T, WebConfigError> {
    Err(WebConfigError(msg.into()))
}

/// The file as exporter-toolkit defines it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileWebConfig {
    tls_server_config: Option<FileTls>,
    http_server_config: Option<FileHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    // Part of the format, not supported here: refused by name.
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
    cert: Option<serde_norway::Value>,
    key: Option<serde_norway::Value>,
    client_ca: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    // Only an allowance: the exporter speaks HTTP/1.1, which every scraper does.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<serde_norway::Value>,
}

/// The validated web configuration: TLS settings and basic-auth users, either optional.
pub struct WebConfig {
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Option<Arc<BasicAuth>>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.auth)
            .finish()
    }
}

impl WebConfig {
    /// Reads and validates a web configuration file.
    ///
    /// # Errors
    /// A [`WebConfigError`] naming the key that is wrong: unreadable files, a certificate and
    /// key that do not load or match, a malformed bcrypt hash, an unknown or unsupported key.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path)
            .or_else(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        WebConfig::parse(&text, dir)
    }

    /// Parses and validates a web configuration; relative paths are resolved against `dir`.
    ///
    /// # Errors
    /// As [`WebConfig::load`].
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, WebConfigError> {
        // An empty file is a valid configuration: plain HTTP, no auth.
        let file: FileWebConfig = if text.trim().is_empty() {
            FileWebConfig::default()
        } else {
            serde_norway::from_str(text).or_else(|e| bad(e.to_string().replace('\n', " ")))?
        };
        if let Some(http) = &file.http_server_config
            && http.headers.is_some()
        {
            return bad("http_server_config.headers: not supported by this exporter");
        }
        let tls = file
            .tls_server_config
            .map(|t| tls_config(t, dir).map(Arc::new))
            .transpose()?;
        let auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users)?)),
            _ => None,
        };
        Ok(WebConfig { tls, auth })
    }

    /// The TLS server configuration, when TLS is on.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }

    /// The basic-auth checker, when users are configured.
    pub fn basic_auth(&self) -> Option<Arc<BasicAuth>> {
        self.auth.clone()
    }
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let bytes = std::fs::read(path)
        .or_else(|e| bad(format!("{key}: cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .or_else(|e| bad(format!("{key}: {}: {e}", path.display())))?;
    if certs.is_empty() {
        return bad(format!("{key}: no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

fn tls_version(key: &str, v: Option<&str>) -> Result<Option<u8>, WebConfigError> {
    // rustls speaks TLS 1.2 and 1.3; older minimums are met by 1.2 anyway.
    match v {
        None => Ok(None),
        Some("TLS10" | "TLS11" | "TLS12") => Ok(Some(2)),
        Some("TLS13") => Ok(Some(3)),
        Some(other) => bad(format!(
            "{key}: {other:?} is not one of TLS10, TLS11, TLS12, TLS13"
        )),
    }
}

fn tls_config(t: FileTls, dir: &Path) -> Result<rustls::ServerConfig, WebConfigError> {
    for (name, set) in [
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
        ("cert", t.cert.is_some()),
        ("key", t.key.is_some()),
        ("client_ca", t.client_ca.is_some()),
    ] {
        if set {
            return bad(format!(
                "tls_server_config.{name}: not supported by this exporter{}",
                if matches!(name, "cert" | "key" | "client_ca") {
                    format!(" (use {name}_file)")
                } else {
                    String::new()
                }
            ));
        }
    }
    let Some(cert_file) = t.cert_file else {
        return bad("tls_server_config.cert_file: missing");
    };
    let Some(key_file) = t.key_file else {
        return bad("tls_server_config.key_file: missing");
    };
    let cert_path = resolve(dir, &cert_file);
    let certs = read_certs("tls_server_config.cert_file", &cert_path)?;
    let key_path = resolve(dir, &key_file);
    let key_bytes = std::fs::read(&key_path).or_else(|e| {
        bad(format!(
            "tls_server_config.key_file: cannot read {}: {e}",
            key_path.display()
        ))
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).or_else(|e| {
        bad(format!(
            "tls_server_config.key_file: no usable PEM private key in {}: {e}",
            key_path.display()
        ))
    })?;

    let min = tls_version("tls_server_config.min_version", t.min_version.as_deref())?.unwrap_or(2);
    let max = tls_version("tls_server_config.max_version", t.max_version.as_deref())?.unwrap_or(3);
    if min > max {
        return bad("tls_server_config.min_version: above max_version");
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let auth_type = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let verifier = match auth_type {
        "" | "NoClientCert" => {
            if t.client_ca_file.is_some() {
                return bad(
                    "tls_server_config.client_ca_file: set without a client_auth_type that verifies \
                     client certificates (VerifyClientCertIfGiven or RequireAndVerifyClientCert)",
                );
            }
            None
        }
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let Some(ca_file) = &t.client_ca_file else {
                return bad(format!(
                    "tls_server_config.client_ca_file: required by client_auth_type {auth_type}"
                ));
            };
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("tls_server_config.client_ca_file", &resolve(dir, ca_file))? {
                roots
                    .add(c)
                    .or_else(|e| bad(format!("tls_server_config.client_ca_file: {e}")))?;
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if auth_type == "VerifyClientCertIfGiven" {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(
                builder
                    .build()
                    .or_else(|e| bad(format!("tls_server_config.client_ca_file: {e}")))?,
            )
        }
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            return bad(format!(
                "tls_server_config.client_auth_type: {auth_type} (a client certificate without \
                 verification) is not supported; use VerifyClientCertIfGiven or \
                 RequireAndVerifyClientCert with client_ca_file"
            ));
        }
        other => {
            return bad(format!(
                "tls_server_config.client_auth_type: {other:?} is not one of NoClientCert, \
                 VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ));
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .or_else(|e| bad(format!("tls_server_config.min_version: {e}")))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).or_else(|e| {
        bad(format!(
            "tls_server_config: cert_file {} and key_file {} do not make a usable pair: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    // exporter-toolkit's default is true.
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    // axum serves HTTP/1.1 here.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Checks `Authorization: Basic` credentials against bcrypt hashes.
///
/// Timing does not tell which users exist: an unknown user costs one bcrypt verification too,
/// against a dummy hash of the same cost. bcrypt's own comparison is constant-time. Successful
/// verifications are cached (as exporter-toolkit does) under a SHA-256 of user, password and
/// hash, so a scrape every 15 s does not cost a bcrypt run each time.
pub struct BasicAuth {
    users: HashMap<String, String>,
    dummy_hash: String,
    // std Mutex: held for one set lookup or insert, never across an .await.
    cache: Mutex<HashSet<[u8; 32]>>,
    // bcrypt runs at once: one per core. A flood of wrong passwords then queues here instead
    // of filling the blocking thread pool, and cached scrapes skip the queue.
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("BasicAuth")
            .field("users", &users)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, WebConfigError> {
        let mut cost = 0;
        for (user, hash) in &users {
            if user.contains(':') {
                return bad(format!("basic_auth_users: user name {user:?} contains ':'"));
            }
            match hash.parse::<bcrypt::HashParts>() {
                Ok(parts) if parts.get_cost() > MAX_BCRYPT_COST => {
                    return bad(format!(
                        "basic_auth_users.{user}: bcrypt cost {} is above {MAX_BCRYPT_COST}: \
                         each check of a password would take minutes or more",
                        parts.get_cost()
                    ));
                }
                Ok(parts) => cost = cost.max(parts.get_cost()),
                // The hash is not echoed: it is a secret's digest.
                Err(_) => {
                    return bad(format!(
                        "basic_auth_users.{user}: not a bcrypt hash (want $2y$<cost>$<53 characters>)"
                    ));
                }
            }
        }
        let dummy_hash = bcrypt::hash("atlas-cost-exporter dummy password", cost)
            .or_else(|e| bad(format!("basic_auth_users: cost {cost}: {e}")))?;
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            dummy_hash,
            cache: Mutex::new(HashSet::new()),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            )),
        })
    }

    /// The hash to check `user` against, and whether the user exists.
    fn hash_of(&self, user: &str) -> (&str, bool) {
        match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        }
    }

    /// Whether `user` and `password` passed [`BasicAuth::verify`] before: cheap, no bcrypt.
    pub fn is_cached(&self, user: &str, password: &str) -> bool {
        let (hash, known) = self.hash_of(user);
        known && self.cache_lock().contains(&cache_key(user, password, hash))
    }

    /// Whether `user` and `password` match a configured user. CPU-bound (one bcrypt run when
    /// not cached): call it off the async runtime.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = self.hash_of(user);
        let key = cache_key(user, password, hash);
        if known && self.cache_lock().contains(&key) {
            return true;
        }
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        let ok = matches && known;
        if ok {
            let mut cache = self.cache_lock();
            if cache.len() >= AUTH_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A panic while holding the lock cannot leave a set of digests inconsistent.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn cache_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, password, hash] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// [`basic_credentials`] of a header value's bytes (`None` for bytes no request can carry):
/// the entry of the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn fuzz_basic_credentials(value: &[u8]) -> Option<(String, String)> {
    basic_credentials(Some(&HeaderValue::from_bytes(value).ok()?))
}

/// Splits an `Authorization: Basic` header into user and password.
fn basic_credentials(value: Option<&HeaderValue>) -> Option<(String, String)> {
    let value = value?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Middleware: lets the request through with valid basic-auth credentials, answers 401 with
/// a `WWW-Authenticate` challenge otherwise.
pub async fn require_basic_auth(
    State(auth): State<Arc<BasicAuth>>,
    request: Request,
    next: Next,
) -> Response {
    let ok = match basic_credentials(request.headers().get(AUTHORIZATION)) {
        Some((user, password)) if auth.is_cached(&user, &password) => true,
        Some((user, password)) => match auth.bcrypt_slots.clone().acquire_owned().await {
            Ok(slot) => {
                let auth = auth.clone();
                // The slot moves into the task: a client that hangs up does not free it
                // while its bcrypt run goes on.
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    auth.verify(&user, &password)
                })
                .await
                .unwrap_or(false)
            }
            Err(_) => false,
        },
        None => false,
    };
    if ok {
        return next.run(request).await;
    }
    // No user name is logged: people type passwords into the user field.
    tracing::debug!(path = %request.uri().path(), "basic auth refused");
    (
        StatusCode::UNAUTHORIZED,
        [(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"atlas-cost-exporter\""),
        )],
        "Unauthorized\n",
    )
        .into_response()
}

/// A TCP listener that hands axum TLS streams. Handshakes run concurrently, each bounded by a
/// timeout, so a client that connects and says nothing (or speaks plain HTTP) delays nobody;
/// a failed handshake is logged at debug and the listener goes on.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<(Result<TlsStream<TcpStream>, String>, SocketAddr)>,
}

impl TlsListener {
    /// Wraps `tcp` with the TLS configuration.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Ok(tls),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(_) => Err("handshake timed out".to_owned()),
                            };
                            (result, peer)
                        });
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        if !is_connection_error(&e) {
                            // Out of file descriptors, for example: back off as axum does.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    match done {
                        Ok((Ok(tls), peer)) => return (tls, peer),
                        Ok((Err(e), peer)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(e) => tracing::debug!(error = %e, "TLS handshake task failed"),
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::temp_dir;

    /// Writes a fresh self-signed certificate and its key as `server.crt` and `server.key`.
    fn write_cert(dir: &Path) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        std::fs::write(dir.join("server.crt"), ck.cert.pem()).expect("write cert");
        std::fs::write(dir.join("server.key"), ck.signing_key.serialize_pem()).expect("write key");
    }

    fn parse_err(yaml: &str, dir: &Path) -> String {
        WebConfig::parse(yaml, dir)
            .expect_err("the configuration is refused")
            .to_string()
    }

    /// An empty file is valid: plain HTTP and no authentication.
    #[test]
    fn empty_file_means_plain_http_without_auth() {
        let c = WebConfig::parse("", Path::new(".")).expect("empty is valid");
        assert!(c.tls().is_none() && c.basic_auth().is_none());
    }

    /// Keys outside the exporter-toolkit format are refused, naming the key.
    #[test]
    fn unknown_keys_are_refused() {
        let e = parse_err("tls_server_config:\n  cert_fil: x\n", Path::new("."));
        assert!(e.starts_with("--web.config.file: "), "{e}");
        assert!(e.contains("cert_fil"), "{e}");
        let e = parse_err("basic_auth: {}\n", Path::new("."));
        assert!(e.contains("basic_auth"), "{e}");
    }

    /// Toolkit keys this exporter cannot honour are refused by name, not silently ignored.
    #[test]
    fn unsupported_toolkit_keys_are_refused_by_name() {
        let dir = temp_dir("web-config");
        write_cert(&dir);
        let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
        let e = parse_err(
            &format!("{base}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            &dir,
        );
        assert!(
            e.contains("tls_server_config.cipher_suites: not supported"),
            "{e}"
        );
        let e = parse_err(
            &format!("{base}  client_auth_type: RequestClientCert\n"),
            &dir,
        );
        assert!(
            e.contains("tls_server_config.client_auth_type: RequestClientCert"),
            "{e}"
        );
        let e = parse_err(
            "http_server_config:\n  headers: {X-Frame-Options: deny}\n",
            &dir,
        );
        assert!(e.contains("http_server_config.headers"), "{e}");
    }

    /// A missing or unreadable certificate or key is named by its key.
    #[test]
    fn missing_or_unreadable_cert_and_key_are_named() {
        let dir = temp_dir("web-config");
        let e = parse_err("tls_server_config:\n  key_file: k\n", &dir);
        assert_eq!(e, "--web.config.file: tls_server_config.cert_file: missing");
        let e = parse_err(
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
            &dir,
        );
        assert!(
            e.starts_with("--web.config.file: tls_server_config.cert_file: cannot read "),
            "{e}"
        );
        assert!(e.contains("nope.crt"), "{e}");
        write_cert(&dir);
        let e = parse_err(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: nope.key\n",
            &dir,
        );
        assert!(
            e.starts_with("--web.config.file: tls_server_config.key_file: cannot read "),
            "{e}"
        );
        // A certificate file that holds no certificate.
        std::fs::write(dir.join("empty.crt"), "not pem\n").expect("write");
        let e = parse_err(
            "tls_server_config:\n  cert_file: empty.crt\n  key_file: server.key\n",
            &dir,
        );
        assert!(
            e.contains("tls_server_config.cert_file: no PEM certificate"),
            "{e}"
        );
    }

    /// Relative paths resolve against the file's directory; min_version TLS13 is accepted.
    #[test]
    fn cert_and_key_load_relative_to_the_file() {
        let dir = temp_dir("web-config");
        write_cert(&dir);
        let path = dir.join("web.yml");
        std::fs::write(
            &path,
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n",
        )
        .expect("write");
        let c = WebConfig::load(&path).expect("valid");
        let tls = c.tls().expect("TLS on");
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(c.basic_auth().is_none());
    }

    /// A certificate with somebody else's key is refused at start-up.
    #[test]
    fn mismatched_cert_and_key_are_refused() {
        let dir = temp_dir("web-config");
        write_cert(&dir);
        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(dir.join("other.key"), other.serialize_pem()).expect("write");
        let e = parse_err(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
            &dir,
        );
        assert!(e.contains("do not make a usable pair"), "{e}");
    }

    /// Verifying client certificates needs a CA file, and a CA file needs a verifying mode.
    #[test]
    fn client_ca_and_client_auth_type_go_together() {
        let dir = temp_dir("web-config");
        write_cert(&dir);
        let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
        let e = parse_err(
            &format!("{base}  client_auth_type: RequireAndVerifyClientCert\n"),
            &dir,
        );
        assert!(
            e.contains("tls_server_config.client_ca_file: required"),
            "{e}"
        );
        let e = parse_err(&format!("{base}  client_ca_file: server.crt\n"), &dir);
        assert!(
            e.contains("tls_server_config.client_ca_file: set without"),
            "{e}"
        );
        let e = parse_err(&format!("{base}  client_auth_type: Sometimes\n"), &dir);
        assert!(
            e.contains("tls_server_config.client_auth_type: \"Sometimes\""),
            "{e}"
        );
        let e = parse_err(&format!("{base}  min_version: TLS14\n"), &dir);
        assert!(e.contains("tls_server_config.min_version"), "{e}");
        let ok = WebConfig::parse(
            &format!(
                "{base}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n"
            ),
            &dir,
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// A malformed bcrypt hash is refused naming the user, without echoing the hash.
    #[test]
    fn malformed_bcrypt_hash_is_refused_naming_the_user() {
        let e = parse_err(
            "basic_auth_users:\n  alice: plaintext-password\n",
            Path::new("."),
        );
        assert!(
            e.contains("basic_auth_users.alice: not a bcrypt hash"),
            "{e}"
        );
        assert!(!e.contains("plaintext-password"), "{e}");
    }

    /// A bcrypt cost above 16 is refused at start-up, naming the user: with cost 31 the
    /// start-up's dummy hash alone ran for about a day (found by the `web_config` fuzz
    /// target, as a timeout).
    #[test]
    fn a_bcrypt_cost_above_16_is_refused() {
        let hash = |cost: &str| {
            format!(
                "basic_auth_users:\n  alice: $2y${cost}$Jk2Q6bl1V5i4o5hHkJmHre3bQd6q7zSx0MExmH2m0xGOGOlCzY6nO\n"
            )
        };
        let e = parse_err(&hash("31"), Path::new("."));
        assert!(
            e.contains("basic_auth_users.alice: bcrypt cost 31 is above 16"),
            "{e}"
        );
        assert!(!e.contains("Jk2Q6"), "the hash is not echoed: {e}");
        assert!(parse_err(&hash("17"), Path::new(".")).contains("cost 17"));
    }

    /// The right password passes; a wrong password and an unknown user do not, also once the
    /// right one is cached.
    #[test]
    fn only_the_right_password_passes() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let c = WebConfig::parse(
            &format!("basic_auth_users:\n  alice: '{hash}'\n"),
            Path::new("."),
        )
        .expect("valid");
        let auth = c.basic_auth().expect("auth on");
        assert!(!auth.verify("alice", "wrong"));
        assert!(!auth.is_cached("alice", "s3cret"));
        assert!(auth.verify("alice", "s3cret"));
        assert!(auth.is_cached("alice", "s3cret"));
        assert!(auth.verify("alice", "s3cret"), "cached");
        assert!(!auth.verify("alice", "wrong"));
        assert!(!auth.is_cached("alice", "wrong") && !auth.is_cached("bob", "s3cret"));
        assert!(!auth.verify("bob", "s3cret"));
        assert!(!auth.verify("", ""));
    }

    /// The dummy hash of unknown users has the configured users' cost, so it takes as long.
    #[test]
    fn dummy_hash_has_the_users_cost() {
        let hash = bcrypt::hash("x", 5).expect("hash");
        let c = WebConfig::parse(
            &format!("basic_auth_users:\n  a: '{hash}'\n"),
            Path::new("."),
        )
        .expect("valid");
        let auth = c.basic_auth().expect("auth on");
        let parts: bcrypt::HashParts = auth.dummy_hash.parse().expect("bcrypt");
        assert_eq!(parts.get_cost(), 5);
    }

    /// `Authorization: Basic` parsing: any case of the scheme, a colon in the password; other
    /// schemes and garbage give nothing.
    #[test]
    fn basic_header_parsing() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let h = |s: String| HeaderValue::from_str(&s).expect("header");
        assert_eq!(
            basic_credentials(Some(&h(format!("basic {}", enc("u:p:q"))))),
            Some(("u".to_owned(), "p:q".to_owned()))
        );
        assert_eq!(
            basic_credentials(Some(&h(format!("Bearer {}", enc("u:p"))))),
            None
        );
        assert_eq!(basic_credentials(Some(&h("Basic !!!".to_owned()))), None);
        assert_eq!(
            basic_credentials(Some(&h(format!("Basic {}", enc("nocolon"))))),
            None
        );
        assert_eq!(basic_credentials(None), None);
    }

    /// `Debug` shows user names and whether TLS is on, never a hash.
    #[test]
    fn debug_output_hides_hashes() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let c = WebConfig::parse(
            &format!("basic_auth_users:\n  alice: '{hash}'\n"),
            Path::new("."),
        )
        .expect("valid");
        let d = format!("{c:?}");
        assert!(
            d.contains("alice") && !d.contains(&hash) && !d.contains("$2"),
            "{d}"
        );
    }
}
