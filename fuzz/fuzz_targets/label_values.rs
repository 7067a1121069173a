//! Label values from Atlas, end to end: a project name as a JSON result and as a CSV result
//! carry it, read by the result parsers, then escaped by the exposition.
//!
//! Properties: the JSON result gives back the exact string (the CSV one, the string without
//! the ASCII whitespace around it, as documented); escaped into a label of an exposition
//! line, it parses back to the same string under the text format's rules, and the line holds
//! no raw newline.

#![no_main]

use atlas_cost_exporter::atlas::result::{Parsed, parse_body, parse_csv};
use atlas_cost_exporter::exposition::label_text;
use atlas_cost_exporter::series::{SeriesKey, TagLabels};
use atlas_cost_exporter_fuzz::read_label_value;
use libfuzzer_sys::fuzz_target;

fn read_back(labels: &str, name: &str) -> Option<String> {
    let mut rest = labels;
    loop {
        let (n, after) = rest.split_once('=')?;
        let (value, after) = read_label_value(after)?;
        if n == name {
            return Some(value);
        }
        rest = after.strip_prefix(',')?;
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let body = format!(
        r#"{{"usageDetails":[{{"projectName":{quoted},"usageAmount":1.5,"usageDate":"2026-11-01"}}]}}"#
    );
    let row = match parse_body(body.as_bytes(), false) {
        Ok(Parsed::Ready(r)) if r.rows.len() == 1 => r.rows[0].clone(),
        other => panic!("{body}: {other:?}"),
    };
    let want = (!value.is_empty()).then_some(value);
    assert_eq!(row.project_name.as_deref(), want, "JSON: {value:?}");

    let mut csv = csv::Writer::from_writer(Vec::new());
    let written = csv
        .write_record(["usage date", "project name", "usage amount"])
        .and_then(|()| csv.write_record(["2026-11-01", value, "1.5"]))
        .and_then(|()| csv.flush().map_err(csv::Error::from));
    if written.is_ok() {
        let bytes = csv.into_inner().unwrap_or_default();
        let trimmed = value.trim_matches(|c: char| c.is_ascii_whitespace());
        match parse_csv(&bytes) {
            Ok(r) if r.rows.len() == 1 => assert_eq!(
                r.rows[0].project_name.as_deref(),
                (!trimmed.is_empty()).then_some(trimmed),
                "CSV: {value:?}"
            ),
            // A value that is itself blank after trimming makes a blank line: skipped.
            Ok(r) if trimmed.is_empty() && r.rows.is_empty() => {}
            other => panic!("CSV of {value:?}: {other:?}"),
        }
    }

    let key = SeriesKey::new([
        Some("o"),
        None,
        None,
        row.project_name.as_deref(),
        None,
        None,
        Some("S"),
    ]);
    let labels = label_text("q\"\\\n", &key, &TagLabels::default());
    assert!(!labels.contains('\n'), "no raw newline: {labels:?}");
    assert_eq!(read_back(&labels, "query").as_deref(), Some("q\"\\\n"));
    assert_eq!(
        read_back(&labels, "project_name").as_deref(),
        want,
        "{labels}"
    );
    assert_eq!(read_back(&labels, "atlas_service").as_deref(), Some("S"));
});
