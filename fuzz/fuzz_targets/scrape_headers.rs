//! The headers of a scrape: `Accept` (format), `Accept-Encoding` (gzip) and the basic-auth
//! `Authorization`. The first byte picks which; the rest is the header's value.
//!
//! Properties: the format and the compression are what RFC 9110's weights say (a `q` of any
//! case; an element whose `q` is malformed is ignored; gzip refused by `gzip;q=0` even when
//! `*` is accepted); basic credentials read back exactly what a client encoded, and a header
//! that is not `Basic <base64 of user:password>` gives none.

#![no_main]

use atlas_cost_exporter::exposition::{Format, accepts_gzip, negotiate};
use atlas_cost_exporter::web_config::fuzz_basic_credentials;
use atlas_cost_exporter_fuzz::headers;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

/// The header as the server hands it on: `None` unless it is visible ASCII text.
fn as_text(value: &[u8]) -> Option<&str> {
    let ok = atlas_cost_exporter::atlas::fuzzing::is_header_value(value);
    ok.then(|| std::str::from_utf8(value).ok())
        .flatten()
        .filter(|_| {
            value
                .iter()
                .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        })
}

fuzz_target!(|data: &[u8]| {
    let Some((which, value)) = data.split_first() else {
        return;
    };
    let show = String::from_utf8_lossy(value);
    match which % 3 {
        0 => {
            let got = negotiate(as_text(value)) == Format::OpenMetrics;
            assert_eq!(got, headers::wants_openmetrics(value), "Accept: {show}");
        }
        1 => {
            let got = accepts_gzip(as_text(value));
            assert_eq!(got, headers::accepts_gzip(value), "Accept-Encoding: {show}");
        }
        _ => {
            let got = fuzz_basic_credentials(value);
            if let Some((user, password)) = &got {
                assert!(!user.contains(':'));
                let again = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                );
                assert_eq!(
                    fuzz_basic_credentials(again.as_bytes()).as_ref(),
                    Some(&(user.clone(), password.clone()))
                );
            }
            // What a client sends for the bytes as user and password reads back exactly.
            let text = String::from_utf8_lossy(value);
            let (user, password) = text.split_once(':').unwrap_or((&text, ""));
            let user = user.replace(':', "");
            let header = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            assert_eq!(
                fuzz_basic_credentials(header.as_bytes()),
                Some((user.clone(), password.to_owned())),
                "{header}"
            );
        }
    }
});
