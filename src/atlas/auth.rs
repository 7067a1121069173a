//! HTTP Digest (RFC 7616 with MD5, `qop=auth`) for Atlas API keys, and the HTTP Basic
//! header of the OAuth token request.

use base64::Engine as _;
use md5::{Digest as _, Md5};

/// A parsed `WWW-Authenticate: Digest ...` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back when present.
    pub opaque: Option<String>,
    /// `stale=true`: the nonce expired, the credentials were fine.
    pub stale: bool,
}

/// Splits `k=v, k="v, with comma"` into pairs.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.push((key, value.trim().to_owned()));
    }
    out
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value; `None` unless it is a Digest challenge with
    /// a nonce, `qop=auth` (or no qop) and MD5 (or no algorithm).
    pub fn parse(header: &str) -> Option<Challenge> {
        let rest = header.trim();
        let (scheme, rest) = rest.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut stale = false;
        for (k, v) in params(rest) {
            match k.as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                "algorithm" if !v.eq_ignore_ascii_case("md5") => return None,
                "qop" if !v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")) => {
                    return None;
                }
                _ => {}
            }
        }
        Some(Challenge {
            realm: realm.unwrap_or_default(),
            nonce: nonce.filter(|n| !n.is_empty())?,
            opaque,
            stale,
        })
    }

    /// The `Authorization` header answering this challenge for `method uri`.
    #[allow(clippy::too_many_arguments)]
    pub fn authorization(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let ha1 = md5_hex(&format!("{user}:{}:{password}", self.realm));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce));
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\", algorithm=MD5",
            quote(user),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri)
        );
        if let Some(opaque) = &self.opaque {
            header.push_str(&format!(", opaque=\"{}\"", quote(opaque)));
        }
        header
    }
}

/// Lower-case hex MD5 of `s`.
pub fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// `Basic base64(form(id):form(secret))`: each part `application/x-www-form-urlencoded` as
/// RFC 6749 section 2.3.1 asks (what Go's oauth2, so the Atlas Go SDK, sends). Atlas ids and
/// secrets (`mdb_sa_id_...`, `mdb_sa_sk_...`) only hold characters this leaves alone, so the
/// header is the same bytes as the docs' curl `base64("<id>:<secret>")`.
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let pair = format!("{}:{}", form_encode(client_id), form_encode(client_secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Form-encodes one component as Go's `url.QueryEscape` does: `A-Za-z0-9-._~` unchanged, a
/// space as `+`, every other byte of the UTF-8 as `%XX`.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 2617 section 3.5 example: the computed response matches the published one.
    #[test]
    fn digest_response_matches_rfc_2617_example() {
        let ch = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("challenge parses");
        let header = ch.authorization(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            header.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{header}"
        );
        assert!(header.contains("nc=00000001"));
        assert!(header.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#));
    }

    /// Atlas's challenge parses, and `stale=true` is recognised.
    #[test]
    fn atlas_challenge_with_stale_parses() {
        let ch = Challenge::parse(
            r#"Digest realm="MMS Public API", domain="", nonce="abc, def", algorithm=MD5, qop="auth", stale=true"#,
        )
        .expect("parses");
        assert_eq!(ch.realm, "MMS Public API");
        assert_eq!(ch.nonce, "abc, def");
        assert!(ch.stale);
        assert!(Challenge::parse("Bearer realm=x").is_none());
        assert!(Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-256"#).is_none());
    }

    /// Real Atlas service-account credentials go out as the docs' curl sends them:
    /// `base64("<id>:<secret>")` of the raw characters, byte for byte (no `%5F` for `_`).
    #[test]
    fn basic_header_of_atlas_credentials_is_the_raw_pair() {
        let id = "mdb_sa_id_66d7254246a21a41036ff2e9";
        let secret = "mdb_sa_sk_Zq-8.x~Y_0";
        let h = basic_authorization(id, secret);
        assert_eq!(
            h,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
            )
        );
        assert_eq!(
            basic_authorization("mdb_sa_id_demo", "mdb_sa_sk_demo"),
            "Basic bWRiX3NhX2lkX2RlbW86bWRiX3NhX3NrX2RlbW8="
        );
    }

    /// Characters outside `A-Za-z0-9-._~` are form-encoded before base64 (a space as `+`,
    /// the rest as upper-case `%XX` of their UTF-8), so a `:` in a secret cannot split the pair.
    #[test]
    fn basic_header_form_encodes_other_characters() {
        let h = basic_authorization("id x", "a:b/+%é");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(h.trim_start_matches("Basic "))
            .expect("base64");
        assert_eq!(decoded, b"id+x:a%3Ab%2F%2B%25%C3%A9");
    }
}
