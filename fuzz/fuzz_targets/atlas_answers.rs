//! Atlas's other answers: error bodies (Atlas's and OAuth's), the token endpoint's answer and
//! the Cost Explorer's create answer. The first byte picks which; the rest is the body.
//!
//! Properties: an error body's detail is `errorCode: detail` (or OAuth's `error` and
//! `error_description`) exactly when the body is such an object, else a short printable
//! snippet; a token answer gives a bearer token and a renewal within its `expires_in`
//! clamped to a minute..a day, or a named decode error; a create answer's token is URL-safe, or an error.

#![no_main]

use std::time::Duration;

use atlas_cost_exporter::atlas::fuzzing::{create_answer, error_detail, token_answer};
use atlas_cost_exporter_fuzz::json::{self, J};
use libfuzzer_sys::fuzz_target;

/// A field serde's derive reads as `Option<String>`: absent or null is `Some(None)`, a string
/// `Some(Some)`, anything else refuses the body (`None`); a duplicate refuses it too.
fn field(j: &J, key: &str) -> Option<Option<String>> {
    if j.count(key) > 1 {
        return None;
    }
    match j.last(key) {
        None | Some(J::Null) => Some(None),
        Some(J::Str(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

fn infinite_inside(j: &J) -> bool {
    match j {
        J::Num(n) => n.parse::<f64>().map_or(true, f64::is_infinite),
        J::Arr(items) => items.iter().any(infinite_inside),
        J::Obj(entries) => entries.iter().any(|(_, v)| infinite_inside(v)),
        _ => false,
    }
}

fn error_body(body: &[u8]) {
    let got = error_detail(body);
    let read = json::read(body);
    if read.string_issue || read.depth > 100 {
        return;
    }
    let want = read
        .value
        .as_ref()
        .filter(|j| matches!(j, J::Obj(_)))
        .and_then(|j| {
            let code = field(j, "errorCode")?;
            let detail = field(j, "detail")?;
            let description = field(j, "error_description")?;
            if j.count("error") > 1 || j.last("error").is_some_and(infinite_inside) {
                return None;
            }
            let code = code.or_else(|| match j.last("error") {
                Some(J::Str(s)) => Some(s.clone()),
                _ => None,
            });
            match (code, detail.or(description)) {
                (Some(c), Some(d)) => Some(Some(format!("{c}: {d}"))),
                (Some(c), None) => Some(Some(c)),
                (None, Some(d)) => Some(Some(d)),
                (None, None) => Some(None),
            }
        });
    match want {
        Some(Some(w)) => assert_eq!(got, w, "{}", String::from_utf8_lossy(body)),
        _ => {
            // A snippet: at most 80 bytes of the body, printable, trimmed.
            assert!(got.chars().count() <= 80, "{got:?}");
            assert!(!got.chars().any(char::is_control), "{got:?}");
            assert_eq!(got, got.trim());
        }
    }
}

fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn token(body: &[u8]) {
    let got = token_answer(body);
    let read = json::read(body);
    if read.string_issue || read.depth > 100 {
        return;
    }
    let want = read
        .value
        .as_ref()
        .filter(|j| matches!(j, J::Obj(_)))
        .and_then(|j| {
            let token = field(j, "access_token")?.filter(|t| is_b64token(t))?;
            if j.count("expires_in") > 1 {
                return None;
            }
            let expires = match j.last("expires_in") {
                None | Some(J::Null) => 3600,
                Some(J::Num(n)) => n.parse::<u64>().ok()?,
                Some(_) => return None,
            };
            let life = Duration::from_secs(expires.clamp(60, 86_400));
            Some((token, life - Duration::from_secs(60).min(life / 2)))
        });
    let show = String::from_utf8_lossy(body);
    match (want, got) {
        (Some(w), Ok(g)) => assert_eq!(g, w, "{show}"),
        (None, Err(e)) => assert!(e.contains("token"), "{e}"),
        (want, got) => panic!("{show}: want {want:?}, got {got:?}"),
    }
}

fn create(body: &[u8]) {
    let got = create_answer(body);
    let read = json::read(body);
    if read.string_issue || read.depth > 100 {
        return;
    }
    let want = read
        .value
        .as_ref()
        .filter(|j| matches!(j, J::Obj(_)) && j.count("token") == 1)
        .and_then(|j| match j.last("token") {
            Some(J::Str(t)) => Some(t.clone()),
            _ => None,
        });
    let url_safe = |t: &str| {
        (1..=256).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match (want, got) {
        (Some(w), Ok(g)) => {
            assert_eq!(g, w);
            assert!(url_safe(&g), "{g:?}");
        }
        (Some(w), Err(_)) => assert!(!url_safe(&w), "{w:?} refused"),
        (None, Err(_)) => {}
        (None, Ok(g)) => panic!("{g:?} from {}", String::from_utf8_lossy(body)),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => error_body(body),
        1 => token(body),
        _ => create(body),
    }
});
