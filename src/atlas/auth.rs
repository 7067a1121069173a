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
        // Whitespace before the value (`nonce= "x"`) is no part of it.
        while matches!(chars.peek(), Some(c) if *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            // A quoted value is kept exactly: the nonce is echoed byte for byte.
            out.push((key, value));
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            out.push((key, value.trim().to_owned()));
        }
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

/// Refusals of a nonce's first answer (`nc=00000001`) one request takes and still answers
/// again: a handful, for nonces that go stale or are forgotten while concurrent requests
/// share them. Such a refusal says the server called a nonce stale (or forgot it) before
/// anyone used it; a refusal over a nonce that other answers used too says only that the
/// nonce was used up, and counts toward [`MAX_DIGEST_ANSWERS`] alone.
pub const MAX_DIGEST_RETRIES: u32 = 5;

/// Answers one request sends at most, whatever the refusals: the hard bound.
pub const MAX_DIGEST_ANSWERS: u32 = 12;

/// The refused Digest answers of one request so far, and the rule that says whether to answer
/// again (RFC 7616 section 3.3: `stale=true` means the response was right and only the nonce
/// was old).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Answers refused with `stale=true`.
    pub stale: u32,
    /// Answers refused with a plain fresh challenge (`stale=false`).
    pub plain: u32,
    /// Of those, refused answers that were their nonce's first.
    pub first_answers: u32,
}

/// What to do after Atlas refused an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer the new challenge.
    AnswerAgain,
    /// The credentials are wrong (or revoked): no more answers.
    WrongCredentials,
    /// Atlas keeps calling nonces stale: no more answers, but the credentials are right.
    StaleTooOften,
}

impl Refusals {
    /// Counts a refused answer (`stale` as its challenge said; `first_answer` when it was the
    /// first answer over its nonce) and decides. A plain challenge cannot tell a forgotten
    /// nonce from a wrong key: unless these credentials were `accepted_recently`, the second
    /// plain refusal says they are wrong. Otherwise (`stale=true`, or trusted credentials)
    /// the request answers again while at most [`MAX_DIGEST_RETRIES`] refused answers were
    /// their nonce's first and it has sent fewer than [`MAX_DIGEST_ANSWERS`]; past a bound
    /// the refusal's own `stale` flag says which failure it is.
    pub fn refused(&mut self, stale: bool, first_answer: bool, accepted_recently: bool) -> Verdict {
        if stale {
            self.stale += 1;
        } else {
            self.plain += 1;
        }
        if first_answer {
            self.first_answers += 1;
        }
        let failure = if stale {
            Verdict::StaleTooOften
        } else {
            Verdict::WrongCredentials
        };
        if !stale && !accepted_recently && self.plain >= 2 {
            Verdict::WrongCredentials
        } else if self.first_answers > MAX_DIGEST_RETRIES
            || self.stale + self.plain >= MAX_DIGEST_ANSWERS
        {
            failure
        } else {
            Verdict::AnswerAgain
        }
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
pub(crate) mod tests {
    /// The `nonce` and `nc` of a Digest `Authorization` header (the tests of the request
    /// and session layers read their answers with it).
    pub(crate) fn nonce_and_count(header: &str) -> (String, String) {
        let field = |name: &str| {
            let start = header.find(&format!(" {name}=")).expect(name) + name.len() + 2;
            header[start..]
                .split(',')
                .next()
                .expect("value")
                .trim_matches('"')
                .to_owned()
        };
        (field("nonce"), field("nc"))
    }

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

    /// A `stale=true` challenge is answered again whatever the process knows of the
    /// credentials, five times after a first answer refused; the sixth refusal of a nonce's
    /// first answer is a failure that is not about the credentials.
    #[test]
    fn stale_challenges_are_answered_again_up_to_the_bound() {
        for accepted_recently in [false, true] {
            let mut r = Refusals::default();
            for n in 1..=MAX_DIGEST_RETRIES {
                assert_eq!(
                    r.refused(true, true, accepted_recently),
                    Verdict::AnswerAgain,
                    "stale refusal {n}"
                );
            }
            assert_eq!(
                r.refused(true, true, accepted_recently),
                Verdict::StaleTooOften
            );
        }
    }

    /// Refusals of answers over a nonce others used too (a shared nonce used up) do not use
    /// up the handful, but the request stops at [`MAX_DIGEST_ANSWERS`] answers whatever the
    /// refusals.
    #[test]
    fn refusals_of_a_used_nonce_count_toward_the_hard_bound_only() {
        let mut r = Refusals::default();
        for n in 1..MAX_DIGEST_ANSWERS {
            assert_eq!(
                r.refused(true, false, true),
                Verdict::AnswerAgain,
                "answer {n}"
            );
        }
        assert_eq!(r.refused(true, false, true), Verdict::StaleTooOften);
        let mut r = Refusals::default();
        for _ in 1..MAX_DIGEST_ANSWERS {
            assert_eq!(r.refused(false, false, true), Verdict::AnswerAgain);
        }
        assert_eq!(r.refused(false, false, true), Verdict::WrongCredentials);
        assert_eq!(r.stale + r.plain, MAX_DIGEST_ANSWERS);
    }

    /// Credentials this process never saw accepted get one more answer after a plain fresh
    /// challenge, and fail at the second, whatever nonce was answered: the rule from before
    /// stale nonces were retried.
    #[test]
    fn never_accepted_credentials_fail_at_the_second_plain_refusal() {
        for first_answer in [false, true] {
            let mut r = Refusals::default();
            assert_eq!(r.refused(false, first_answer, false), Verdict::AnswerAgain);
            assert_eq!(
                r.refused(false, first_answer, false),
                Verdict::WrongCredentials
            );
        }
    }

    /// Credentials accepted recently get a plain fresh challenge answered again (the server
    /// forgot the nonce), five times after a first answer refused, then the sixth refusal of
    /// a nonce's first answer says they are wrong (revoked).
    #[test]
    fn recently_accepted_credentials_answer_plain_challenges_up_to_the_bound() {
        let mut r = Refusals::default();
        for n in 1..=MAX_DIGEST_RETRIES {
            assert_eq!(
                r.refused(false, true, true),
                Verdict::AnswerAgain,
                "refusal {n}"
            );
        }
        assert_eq!(r.refused(false, true, true), Verdict::WrongCredentials);
    }

    /// Stale refusals in between do not use up the one extra answer of never-accepted
    /// credentials, and they share the one bound with plain refusals: the refusal past it
    /// decides, by its own `stale` flag, which failure it is.
    #[test]
    fn stale_and_plain_refusals_share_one_bound() {
        let mut r = Refusals::default();
        assert_eq!(r.refused(true, true, false), Verdict::AnswerAgain);
        assert_eq!(r.refused(false, true, false), Verdict::AnswerAgain);
        assert_eq!(r.refused(true, true, false), Verdict::AnswerAgain);
        assert_eq!(r.refused(false, true, false), Verdict::WrongCredentials);
        let mut r = Refusals::default();
        for _ in 0..MAX_DIGEST_RETRIES {
            assert_eq!(r.refused(false, true, true), Verdict::AnswerAgain);
        }
        assert_eq!(r.refused(true, true, true), Verdict::StaleTooOften);
        assert_eq!(
            r,
            Refusals {
                stale: 1,
                plain: MAX_DIGEST_RETRIES,
                first_answers: MAX_DIGEST_RETRIES + 1,
            }
        );
    }

    /// A quoted value is kept exactly, spaces and tabs inside the quotes included: a nonce
    /// with a trailing space is answered with that nonce, not a trimmed one the server never
    /// issued (found by the `atlas_headers` fuzz target).
    #[test]
    fn quoted_challenge_values_are_kept_exactly() {
        let ch = Challenge::parse("Digest realm=\" r\t\", nonce= \" n1 \", opaque=\"o \"")
            .expect("parses");
        assert_eq!((ch.realm.as_str(), ch.nonce.as_str()), (" r\t", " n1 "));
        assert_eq!(ch.opaque.as_deref(), Some("o "));
        let answer = ch.authorization("u", "p", "GET", "/", 1, "c");
        assert!(answer.contains("nonce=\" n1 \""), "{answer}");
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
