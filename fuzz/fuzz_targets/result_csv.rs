//! Cost Explorer CSV results, as a poll answer (or an envelope's CSV content) is parsed.
//!
//! Properties: the heap a parse takes stays within `parse_bound` of the body; the header row
//! is the first with an amount and a date column (names matched as documented), and every
//! non-blank line after it is a row or a counted invalid row; each row's amount agrees with
//! an independent decimal reading of its cell, and its month and text values are its cells'.

#![no_main]

use atlas_cost_exporter::atlas::result::{parse_amount_text, parse_csv};
use atlas_cost_exporter_fuzz::alloc::{Meter, parse_bound};
use atlas_cost_exporter_fuzz::amount;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static HEAP: Meter = Meter::new();

/// The documented column names (case, spaces and punctuation aside) and what they hold:
/// 0..=6 the text values in `UsageRow` order, 7 usage date, 8 billed date, 9 amount.
fn column(header: &[u8]) -> Option<usize> {
    let key: String = String::from_utf8_lossy(header)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some(match key.as_str() {
        "organizationid" | "orgid" => 0,
        "organizationname" | "orgname" | "organization" => 1,
        "projectid" | "groupid" => 2,
        "projectname" | "project" | "groupname" => 3,
        "clusteruniqueid" | "clusterid" => 4,
        "clustername" | "cluster" => 5,
        "service" | "servicename" => 6,
        "usagedate" | "date" => 7,
        "billeddate" => 8,
        "usageamount" | "amount" | "usageamountusd" => 9,
        _ => return None,
    })
}

fn month(s: &str) -> Option<(i32, u32)> {
    let b = s.trim().as_bytes();
    if b.len() < 7 || b[4] != b'-' || (b.len() > 7 && b[7] != b'-') {
        return None;
    }
    if !b[..4].iter().chain(&b[5..7]).all(u8::is_ascii_digit) {
        return None;
    }
    let y: i32 = std::str::from_utf8(&b[..4]).ok()?.parse().ok()?;
    let m: u32 = std::str::from_utf8(&b[5..7]).ok()?.parse().ok()?;
    (1..=12).contains(&m).then_some((y, m))
}

fuzz_target!(|data: &[u8]| {
    let base = HEAP.start();
    let parsed = parse_csv(data);
    let peak = HEAP.peak_since(base);
    assert!(
        peak <= parse_bound(data.len()),
        "{peak} bytes for a {}-byte body",
        data.len()
    );
    let show = || String::from_utf8_lossy(data).into_owned();

    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let mut columns: Option<Vec<Option<usize>>> = None;
    // (cells by column kind, line) of each non-blank line after the header.
    let mut lines: Vec<[Option<String>; 10]> = Vec::new();
    for record in reader.byte_records() {
        let Ok(record) = record else {
            assert!(
                parsed.is_err(),
                "a CSV read error is a decode error: {}",
                show()
            );
            return;
        };
        match &columns {
            None => {
                let cols: Vec<Option<usize>> = record.iter().map(column).collect();
                if cols.contains(&Some(9)) && (cols.contains(&Some(7)) || cols.contains(&Some(8))) {
                    columns = Some(cols);
                }
            }
            Some(cols) => {
                if record.iter().all(<[u8]>::is_empty) {
                    continue;
                }
                let mut cells: [Option<String>; 10] = Default::default();
                for (cell, col) in record.iter().zip(cols) {
                    if let Some(c) = col {
                        cells[*c] = Some(String::from_utf8_lossy(cell).into_owned());
                    }
                }
                lines.push(cells);
            }
        }
    }
    let Some(_) = columns else {
        let e = parsed.expect_err("no header row: a decode error");
        assert!(e.0.contains("header"), "{e}: {}", show());
        return;
    };
    let got = parsed.unwrap_or_else(|e| panic!("a header row, yet {e}: {}", show()));
    assert_eq!(
        got.rows.len() + got.invalid_rows as usize,
        lines.len(),
        "every line after the header is a row or an invalid row: {}",
        show()
    );
    let mut rows = got.rows.iter();
    for cells in &lines {
        let Some(text) = cells[9].as_deref().filter(|t| !t.is_empty()) else {
            continue;
        };
        let (ours, want) = (parse_amount_text(text), amount::text_micros(text));
        // Text is read from its digits, like the decimal: the same amount, or none for both.
        assert_eq!(ours, want, "amount text {text:?}: ours vs the decimal's");
        let Some(micros) = ours else { continue };
        // A usage date, or the billed date when there is none (an empty cell is none).
        let date = cells[7]
            .as_deref()
            .filter(|d| !d.is_empty())
            .or(cells[8].as_deref());
        let Some(m) = date.and_then(month) else {
            continue;
        };
        let row = rows
            .next()
            .unwrap_or_else(|| panic!("a row missing: {}", show()));
        assert_eq!(row.amount_micros, micros, "{}", show());
        assert_eq!((row.month.year(), row.month.month()), m, "{}", show());
        let texts = [
            &row.org_id,
            &row.org_name,
            &row.project_id,
            &row.project_name,
            &row.cluster_id,
            &row.cluster_name,
            &row.service,
        ];
        for (got, want) in texts.iter().zip(&cells[..7]) {
            let want = want.as_deref().filter(|v| !v.is_empty());
            assert_eq!(got.as_deref(), want, "{}", show());
        }
    }
    assert!(
        rows.next().is_none(),
        "a row more than the lines hold: {}",
        show()
    );
});
