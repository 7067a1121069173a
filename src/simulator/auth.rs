//! Authentication as Atlas does it: OAuth client credentials (service accounts) giving
//! Bearer tokens, and HTTP Digest (RFC 7616, MD5, `qop="auth"`) for legacy API keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use percent_encoding::percent_decode_str;
use rand::Rng;

use super::SimCredentials;

/// The Digest realm Atlas uses.
pub const REALM: &str = "MMS Public API";

/// Why a request to an Atlas v2 endpoint was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No usable credentials, or wrong ones: a fresh challenge with `stale=false`.
    Unauthorized(&'static str),
    /// A correct digest over an expired nonce, or an unknown one when unknown nonces are
    /// answered as stale: challenge again with `stale=true`.
    StaleNonce,
}

/// Live OAuth tokens and issued Digest nonces.
///
/// `std::sync::Mutex`: every critical section is a map lookup or insert, never held across
/// an `.await`.
#[derive(Debug, Default)]
pub struct AuthState {
    tokens: Mutex<HashMap<String, Instant>>,
    nonces: Mutex<HashMap<String, Instant>>,
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

    /// Whether `token` was issued here and has not expired.
    pub fn token_live(&self, token: &str) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).is_some_and(|e| *e > Instant::now())
    }

    /// Issues a nonce for a Digest challenge.
    pub fn issue_nonce(&self, ttl: Duration) -> String {
        let nonce = random_hex(16);
        let now = Instant::now();
        let mut nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        // Keep expired nonces a while longer so their use is answered with stale=true.
        nonces.retain(|_, issued| now.duration_since(*issued) < ttl * 4);
        nonces.insert(nonce.clone(), now);
        nonce
    }

    /// `Some(fresh)` for a nonce issued here, `None` for one this server does not know.
    fn nonce_fresh(&self, nonce: &str, ttl: Duration) -> Option<bool> {
        let nonces = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        nonces.get(nonce).map(|i| i.elapsed() < ttl)
    }

    /// Forgets every nonce issued so far, as a restart or another node behind a load
    /// balancer would.
    pub fn forget_nonces(&self) {
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Checks the `Authorization` header of an Atlas v2 request: a live Bearer token, or a
    /// valid Digest response for `method` and `request_target` (path and query).
    ///
    /// # Errors
    /// [`Denied`] says which challenge to answer with. A correct digest over a nonce this
    /// server does not know is [`Denied::StaleNonce`] when `unknown_nonce_stale`, else a
    /// plain [`Denied::Unauthorized`] (the server cannot tell it was ever valid).
    pub fn check(
        &self,
        headers: &HeaderMap,
        method: &str,
        request_target: &str,
        creds: &SimCredentials,
        nonce_ttl: Duration,
        unknown_nonce_stale: bool,
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
        let params = parse_auth_params(rest);
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
        let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
            return Err(Denied::Unauthorized("Digest nc and cnonce are required."));
        };
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
        let expected = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        if !expected.eq_ignore_ascii_case(response) {
            return Err(Denied::Unauthorized("Wrong API key or Digest response."));
        }
        match self.nonce_fresh(nonce, nonce_ttl) {
            Some(true) => Ok(()),
            Some(false) => Err(Denied::StaleNonce),
            None if unknown_nonce_stale => Err(Denied::StaleNonce),
            None => Err(Denied::Unauthorized("Unknown Digest nonce.")),
        }
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
