//! The headers of Atlas's answers: `WWW-Authenticate` (Digest), `Retry-After` and
//! `RateLimit-Remaining`. The first byte picks which; the rest is the header's value.
//!
//! Properties: each header either parses as its RFC says or is ignored, as documented (a
//! value no HTTP answer can carry is ignored; a malformed challenge may be read leniently but
//! a well-formed one is read exactly); and the answer to a challenge is a valid header whose
//! realm, nonce and opaque read back as the challenge gave them.

#![no_main]

use std::time::{Duration, SystemTime};

use atlas_cost_exporter::atlas::fuzzing::{
    challenge, is_header_value, rate_limit_remaining, retry_after,
};
use atlas_cost_exporter_fuzz::headers::{self, Challenge};
use libfuzzer_sys::fuzz_target;

fn www_authenticate(value: &[u8]) {
    let got = challenge(value);
    let want = if is_header_value(value) {
        headers::challenge(value)
    } else {
        Challenge::Ignored
    };
    let show = String::from_utf8_lossy(value);
    match (&want, &got) {
        (Challenge::Digest(w), Some(g)) => {
            assert_eq!(
                (&g.realm, &g.nonce, &g.opaque, g.stale),
                (&w.realm, &w.nonce, &w.opaque, w.stale),
                "{show}"
            );
        }
        (Challenge::Ignored, None) | (Challenge::Malformed, _) => {}
        (want, got) => panic!("{show}: the RFC says {want:?}, read {got:?}"),
    }
    let Some(g) = got else { return };
    assert!(!g.nonce.is_empty());
    let answer = g.authorization("user \"q\"", "pw", "GET", "/api/x?a=1", 7, "0a4f113b");
    assert!(
        is_header_value(answer.as_bytes()),
        "the answer is a header value: {answer:?}"
    );
    let params = answer
        .strip_prefix("Digest ")
        .and_then(headers::auth_params)
        .unwrap_or_else(|| panic!("the answer is well-formed: {answer}"));
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("nonce").as_ref(), Some(&g.nonce), "{answer}");
    assert_eq!(get("realm").as_ref(), Some(&g.realm), "{answer}");
    assert_eq!(get("opaque"), g.opaque, "{answer}");
    assert_eq!(get("username").as_deref(), Some("user \"q\""), "{answer}");
    assert_eq!(get("nc").as_deref(), Some("00000007"), "{answer}");
}

fuzz_target!(|data: &[u8]| {
    let Some((which, value)) = data.split_first() else {
        return;
    };
    // A fixed "now" (2026-11-29 12:00:00 UTC): dates are seen from it.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_953_600);
    match which % 3 {
        0 => www_authenticate(value),
        1 => assert_eq!(
            retry_after(value, now),
            headers::retry_after(value, now),
            "Retry-After: {}",
            String::from_utf8_lossy(value)
        ),
        _ => assert_eq!(
            rate_limit_remaining(value),
            headers::rate_limit_remaining(value),
            "RateLimit-Remaining: {}",
            String::from_utf8_lossy(value)
        ),
    }
});
