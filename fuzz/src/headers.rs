//! The headers as their RFCs define them, read independently of the exporter.

use std::time::{Duration, SystemTime};

/// Longest `Retry-After` the exporter honours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Header value text as a client sees it: visible ASCII, spaces and tabs (else `None`: the
/// exporter ignores such a header), without the spaces and tabs around it.
pub fn text(value: &[u8]) -> Option<&str> {
    if !value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
    {
        return None;
    }
    std::str::from_utf8(value)
        .ok()
        .map(|s| s.trim_matches([' ', '\t']))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 9110 `Retry-After`: `delay-seconds` (digits) or an HTTP date, capped at an hour; a
/// past date is no wait; anything else is ignored.
pub fn retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let v = text(value)?;
    let wait = if digits(v) {
        Duration::from_secs(v.parse().unwrap_or(u64::MAX))
    } else {
        httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `RateLimit-Remaining`: digits within a u64, else ignored.
pub fn rate_limit_remaining(value: &[u8]) -> Option<u64> {
    text(value).filter(|v| digits(v))?.parse().ok()
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// RFC 9110 `#auth-param` after a scheme: `name=token` or `name="quoted"`, comma-separated
/// with optional whitespace; `None` when the list is malformed. Names are lower-cased.
pub fn auth_params(s: &str) -> Option<Vec<(String, String)>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let ows = |i: &mut usize| {
        while matches!(b.get(*i), Some(b' ' | b'\t')) {
            *i += 1;
        }
    };
    loop {
        // Empty list elements are allowed: `a=1, , b=2`.
        while matches!(b.get(i), Some(b' ' | b'\t' | b',')) {
            i += 1;
        }
        if i == b.len() {
            return Some(out);
        }
        let start = i;
        while b.get(i).is_some_and(|c| is_tchar(*c)) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let name = s[start..i].to_ascii_lowercase();
        ows(&mut i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        ows(&mut i);
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = String::new();
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        v.push(char::from(*b.get(i + 1)?));
                        i += 2;
                    }
                    c => {
                        v.push(char::from(c));
                        i += 1;
                    }
                }
            }
            v
        } else {
            let vs = i;
            while b.get(i).is_some_and(|c| is_tchar(*c)) {
                i += 1;
            }
            if i == vs {
                return None;
            }
            s[vs..i].to_owned()
        };
        out.push((name, value));
        ows(&mut i);
        match b.get(i) {
            None => return Some(out),
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
}

/// A Digest challenge the exporter can answer, as RFC 7616 and the exporter's documentation
/// say: realm, nonce (required, non-empty), opaque, stale.
#[derive(Debug, PartialEq, Eq)]
pub struct Digest {
    /// `realm` ("" when absent).
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`.
    pub opaque: Option<String>,
    /// `stale=true`.
    pub stale: bool,
}

/// What a `WWW-Authenticate` value is to a client that answers Digest with MD5 and
/// `qop=auth`.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    /// Not well-formed: the exporter may read it leniently or ignore it.
    Malformed,
    /// Well-formed, and not a challenge the exporter can answer: ignored.
    Ignored,
    /// A challenge to answer.
    Digest(Digest),
}

/// Reads a `WWW-Authenticate` value holding one challenge (later duplicates of a parameter
/// win; any `algorithm` other than MD5 or `qop` list without `auth` refuses it).
pub fn challenge(value: &[u8]) -> Challenge {
    let Some(v) = text(value) else {
        return Challenge::Ignored;
    };
    let scheme_end = v.bytes().position(|c| !is_tchar(c)).unwrap_or(v.len());
    let (scheme, rest) = v.split_at(scheme_end);
    if scheme.is_empty() || (!rest.is_empty() && !rest.starts_with(' ')) {
        return Challenge::Malformed;
    }
    let Some(params) = auth_params(rest.trim_start_matches(' ')) else {
        return Challenge::Malformed;
    };
    if !scheme.eq_ignore_ascii_case("digest") || rest.is_empty() {
        return Challenge::Ignored;
    }
    let mut d = Digest {
        realm: String::new(),
        nonce: String::new(),
        opaque: None,
        stale: false,
    };
    for (k, v) in params {
        match k.as_str() {
            "realm" => d.realm = v,
            "nonce" => d.nonce = v,
            "opaque" => d.opaque = Some(v),
            "stale" => d.stale = v.eq_ignore_ascii_case("true"),
            "algorithm" if !v.eq_ignore_ascii_case("md5") => return Challenge::Ignored,
            "qop" if !v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")) => {
                return Challenge::Ignored;
            }
            _ => {}
        }
    }
    if d.nonce.is_empty() {
        return Challenge::Ignored;
    }
    Challenge::Digest(d)
}

/// An RFC 9110 `qvalue` (`0`, `0.5`, `1.000`), or `None` when malformed.
pub fn qvalue(s: &str) -> Option<f32> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let ok = frac.len() <= 3
        && frac.bytes().all(|c| c.is_ascii_digit())
        && (int == "0" || (int == "1" && frac.bytes().all(|c| c == b'0')));
    ok.then(|| s.parse().ok()).flatten()
}

/// The weight of one element of an `Accept` or `Accept-Encoding` list and its value: `q` (any
/// case) or 1; `None` when its `q` is malformed (the element is then ignored).
fn element(item: &str) -> Option<(String, f32)> {
    let mut parts = item.split(';');
    let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut q = 1.0;
    for p in parts {
        let p = p.trim();
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("q")
        {
            q = qvalue(v.trim())?;
            break;
        }
    }
    Some((name, q))
}

/// OpenMetrics when `Accept` weighs `application/openmetrics-text` above zero and at least as
/// much as text (`text/plain`, `text/*`, `*/*`).
pub fn wants_openmetrics(accept: &[u8]) -> bool {
    let Some(v) = text(accept) else {
        return false;
    };
    let (mut om, mut txt) = (0.0f32, 0.0f32);
    for (name, q) in v.split(',').filter_map(element) {
        match name.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => txt = txt.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= txt
}

/// RFC 9110 `Accept-Encoding`: gzip when listed with a weight above zero, or, when not
/// listed, when `*` is.
pub fn accepts_gzip(accept_encoding: &[u8]) -> bool {
    let Some(v) = text(accept_encoding) else {
        return false;
    };
    let (mut gzip, mut star): (Option<f32>, Option<f32>) = (None, None);
    for (name, q) in v.split(',').filter_map(element) {
        let slot = match name.as_str() {
            "gzip" => &mut gzip,
            "*" => &mut star,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |s: f32| s.max(q)));
    }
    gzip.or(star).is_some_and(|q| q > 0.0)
}
