//! Authentication as Atlas does it: OAuth client credentials (service accounts) giving
//! Bearer tokens, and HTTP Digest (RFC 7616, MD5, `qop="auth"`) for legacy API keys.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use percent_encoding::percent_decode_str;
use rand::Rng;

use super::SimConfig;

/// The Digest realm Atlas uses.
pub const REALM: &str = "MMS Public API";

/// Why a request to an Atlas v2 endpoint was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No usable credentials, wrong ones, a replayed `nc`, or a nonce this server does not
    /// know (unless those are answered as stale): a fresh challenge with `stale=false`.
    Unauthorized(&'static str),
    /// A correct digest over a nonce that expired, was used up, or that this server calls
    /// stale anyway: challenge again with `stale=true`.
    StaleNonce,
}

/// How the Digest answers were met so far (answers only, not requests without credentials).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestCounts {
    /// Answers let in.
    pub accepted: u64,
    /// Answers refused with a plain fresh challenge (`stale=false`).
    pub plain: u64,
    /// Answers refused with `stale=true`.
    pub stale: u64,
}

/// What the simulator knows of a nonce it issued.
#[derive(Debug)]
struct NonceRecord {
    issued: Instant,
    /// Answers over it that were let in.
    uses: u32,
    /// The `nc` values seen with it: one seen twice is a replay (RFC 7616 section 3.4).
    counts: HashSet<u32>,
}

/// The nonces issued and not forgotten, and the one every challenge offers with
/// [`SimConfig::shared_nonce`].
#[derive(Debug, Default)]
struct Nonces {
    records: HashMap<String, NonceRecord>,
    current: Option<String>,
}

impl NonceRecord {
    /// Whether a correct answer over it would be let in (not expired, not used up).
    fn usable(&self, cfg: &SimConfig) -> bool {
        self.issued.elapsed() < cfg.nonce_ttl && cfg.nonce_stale_after.is_none_or(|k| self.uses < k)
    }
}

/// Live OAuth tokens, issued Digest nonces, and how Digest answers were met.
///
/// `std::sync::Mutex`: every critical section is a map lookup or insert, never held across
/// an `.await`.
#[derive(Debug, Default)]
pub struct AuthState {
    tokens: Mutex<HashMap<String, Instant>>,
    nonces: Mutex<Nonces>,
    /// Correct answers over a usable nonce so far, for [`SimConfig::spurious_stale_every`].
    good_answers: AtomicU64,
    accepted: AtomicU64,
    plain: AtomicU64,
    stale: AtomicU64,
    /// The API key no longer lets anyone in.
    api_key_revoked: AtomicBool,
}

/// Random lowercase hex of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    let buf: Vec<u8> = (0..bytes).map(|_| rng.r#gen::<u8>()).collect();
    hex::encode(buf)
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// An `nc` as RFC 7616 writes it: 8 hex digits, counting from 1.
fn parse_nc(nc: &str) -> Option<u32> {
    if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(nc, 16).ok().filter(|n| *n > 0)
}

impl AuthState {
    /// Issues a Bearer token valid for `ttl`.
    pub fn issue_token(&self, ttl: Duration) -> String {
        let token = random_hex(32);
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(token.clone(), now + ttl);
        token
    }

    /// Forgets every issued token, as a revocation would.
    pub fn revoke_tokens(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Refuses the API key from now on, as deleting it in Atlas would.
    pub fn revoke_api_key(&self) {
        self.api_key_revoked.store(true, Ordering::SeqCst);
    }

    /// Whether `token` was issued here and has not expired.
    pub fn token_live(&self, token: &str) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).is_some_and(|e| *e > Instant::now())
    }

    /// The nonce of a Digest challenge: a new one, or with [`SimConfig::shared_nonce`] the
    /// current one while it is usable.
    pub fn issue_nonce(&self, cfg: &SimConfig) -> String {
        let now = Instant::now();
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        if cfg.shared_nonce
            && let Some(current) = &nonces.current
            && nonces.records.get(current).is_some_and(|r| r.usable(cfg))
        {
            return current.clone();
        }
        let nonce = random_hex(16);
        // Keep expired nonces a while longer so their use is answered with stale=true.
        let ttl = cfg.nonce_ttl;
        nonces
            .records
            .retain(|_, r| now.duration_since(r.issued) < ttl * 4);
        nonces.records.insert(
            nonce.clone(),
            NonceRecord {
                issued: now,
                uses: 0,
                counts: HashSet::new(),
            },
        );
        nonces.current = Some(nonce.clone());
        nonce
    }

    /// Every token and nonce issued and still known.
    pub fn issued(&self) -> Vec<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .keys()
            .chain(nonces.records.keys())
            .cloned()
            .collect()
    }

    /// Forgets every nonce issued so far, as a restart or another node behind a load
    /// balancer would.
    pub fn forget_nonces(&self) {
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.records.clear();
        nonces.current = None;
    }

    /// How Digest answers were met so far.
    pub fn digest_counts(&self) -> DigestCounts {
        DigestCounts {
            accepted: self.accepted.load(Ordering::SeqCst),
            plain: self.plain.load(Ordering::SeqCst),
            stale: self.stale.load(Ordering::SeqCst),
        }
    }

    /// Checks the `Authorization` header of an Atlas v2 request: a live Bearer token, or a
    /// valid Digest response for `method` and `request_target` (path and query) under the
    /// nonce rules of `cfg`.
    ///
    /// # Errors
    /// [`Denied`] says which challenge to answer with.
    pub fn check(
        &self,
        headers: &HeaderMap,
        method: &str,
        request_target: &str,
        cfg: &SimConfig,
    ) -> Result<(), Denied> {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(Denied::Unauthorized("No credentials were given."));
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return if self.token_live(rest.trim()) {
                Ok(())
            } else {
                Err(Denied::Unauthorized(
                    "The access token is invalid or expired.",
                ))
            };
        }
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(Denied::Unauthorized("Unsupported authorization scheme."));
        }
        let verdict = self.check_digest(rest, method, request_target, cfg);
        let counter = match verdict {
            Ok(()) => &self.accepted,
            Err(Denied::Unauthorized(_)) => &self.plain,
            Err(Denied::StaleNonce) => &self.stale,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        verdict
    }

    /// [`AuthState::check`] of a Digest answer (`params`, after the scheme).
    fn check_digest(
        &self,
        params: &str,
        method: &str,
        request_target: &str,
        cfg: &SimConfig,
    ) -> Result<(), Denied> {
        let params = parse_auth_params(params);
        let get = |k: &str| params.get(k).map(String::as_str);
        let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return Err(Denied::Unauthorized("Incomplete Digest credentials."));
        };
        if get("qop") != Some("auth") {
            return Err(Denied::Unauthorized("Digest qop must be auth."));
        }
        if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return Err(Denied::Unauthorized("Digest algorithm must be MD5."));
        }
        let (Some(nc_text), Some(cnonce)) = (get("nc"), get("cnonce")) else {
            return Err(Denied::Unauthorized("Digest nc and cnonce are required."));
        };
        let Some(nc) = parse_nc(nc_text) else {
            return Err(Denied::Unauthorized(
                "Digest nc must be 8 hex digits counting from 00000001.",
            ));
        };
        let creds = &cfg.credentials;
        if realm != REALM || user != creds.public_key {
            return Err(Denied::Unauthorized("Unknown API key."));
        }
        if uri != request_target {
            return Err(Denied::Unauthorized(
                "Digest uri does not match the request.",
            ));
        }
        let ha1 = md5_hex(&format!("{user}:{realm}:{}", creds.private_key));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = md5_hex(&format!("{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}"));
        if !expected.eq_ignore_ascii_case(response) || self.api_key_revoked.load(Ordering::SeqCst) {
            return Err(Denied::Unauthorized("Wrong API key or Digest response."));
        }
        self.use_nonce(nonce, nc, cfg)?;
        match cfg.spurious_stale_every {
            Some(every)
                if every > 0
                    && (self.good_answers.fetch_add(1, Ordering::SeqCst) + 1)
                        .is_multiple_of(every) =>
            {
                Err(Denied::StaleNonce)
            }
            _ => Ok(()),
        }
    }

    /// Counts a correct answer's use of `nonce` with count `nc`, or says why the nonce does
    /// not let it in: unknown (stale or a plain challenge, as `cfg.unknown_nonce_stale`
    /// says), expired or used up (stale), or `nc` seen before with it (a replay: plain).
    /// After its `nonce_forgotten_after`-th use, a nonce is forgotten.
    fn use_nonce(&self, nonce: &str, nc: u32, cfg: &SimConfig) -> Result<(), Denied> {
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        let Some(record) = nonces.records.get_mut(nonce) else {
            return Err(if cfg.unknown_nonce_stale {
                Denied::StaleNonce
            } else {
                Denied::Unauthorized("Unknown Digest nonce.")
            });
        };
        if !record.usable(cfg) {
            return Err(Denied::StaleNonce);
        }
        if !record.counts.insert(nc) {
            return Err(Denied::Unauthorized(
                "Digest nc was used before with this nonce: a replay.",
            ));
        }
        record.uses += 1;
        if cfg.nonce_forgotten_after.is_some_and(|k| record.uses >= k) {
            nonces.records.remove(nonce);
        }
        Ok(())
    }
}

/// The `WWW-Authenticate` value of a Digest challenge.
pub fn challenge(nonce: &str, stale: bool) -> HeaderValue {
    let v = format!(
        "Digest realm=\"{REALM}\", domain=\"\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\", stale={stale}"
    );
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Digest realm=\"MMS Public API\""))
}

/// Parses `k=v, k="quoted, v"` pairs (RFC 7235 auth-params). Keys are lower-cased.
pub fn parse_auth_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            out.insert(key, value.trim().to_string());
        }
        if chars.peek().is_none() {
            break;
        }
    }
    out
}

/// Client id and secret from an HTTP Basic header: the raw pair, as the Atlas docs' curl
/// sends it, or each part form-decoded (RFC 6749 section 2.3.1, as Go's oauth2 encodes it)
/// when `form_decoded`.
pub fn basic_credentials(headers: &HeaderMap, form_decoded: bool) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    if form_decoded {
        Some((form_decode(id), form_decode(secret)))
    } else {
        Some((id.to_owned(), secret.to_owned()))
    }
}

/// `application/x-www-form-urlencoded` decoding of one component (`+` is a space).
pub fn form_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

/// Parses a form or query string into (name, value) pairs.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quoted values may hold commas and escaped quotes; bare values end at a comma.
    #[test]
    fn auth_params_parse_quoted_and_bare_values() {
        let p = parse_auth_params(
            r#"username="k", realm="MMS Public API", uri="/a?b=1,2", qop=auth, nc=00000001, x="a\"b""#,
        );
        assert_eq!(p["username"], "k");
        assert_eq!(p["realm"], "MMS Public API");
        assert_eq!(p["uri"], "/a?b=1,2");
        assert_eq!(p["qop"], "auth");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["x"], "a\"b");
    }
}
