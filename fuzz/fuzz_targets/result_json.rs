//! Cost Explorer JSON results (plain, or in an envelope), as a poll answer is parsed.
//!
//! Properties: the heap a parse takes stays within `parse_bound` of the body; a body is rows
//! or a named decode error, never both and never neither: what an independent JSON reader
//! makes of the body decides which (every element of `usageDetails` is a row or a counted
//! invalid row); each row's amount is exact to the micro-dollar against an independent
//! decimal reading, and its month and text values are what the body says.

#![no_main]

use atlas_cost_exporter::atlas::result::{
    Parsed, ParsedResult, parse_amount_text, parse_body, parse_csv,
};
use atlas_cost_exporter_fuzz::alloc::{Meter, parse_bound};
use atlas_cost_exporter_fuzz::amount;
use atlas_cost_exporter_fuzz::json::{self, J};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static HEAP: Meter = Meter::new();

/// What the body should give.
enum Expect {
    Error,
    NotReady,
    Empty,
    Rows(Vec<Row>, usize),
    /// CSV inside an envelope: whatever the CSV parser makes of this text.
    Csv(String),
}

/// A row as the body writes it.
struct Row {
    amount: Amount,
    month: (i32, u32),
    texts: [Text; 7],
}

enum Amount {
    /// A JSON number: exact.
    Exact(i64),
    /// A string: amount text.
    Text(String),
}

#[derive(Clone)]
enum Text {
    None,
    Is(String),
    /// A number or boolean: some text.
    Some,
}

/// The month of a date as documented: `YYYY-MM`, then nothing or `-...`, after trimming.
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

/// A number serde_json reads as a float would be infinite: it refuses it.
fn infinite(j: &J) -> bool {
    matches!(j, J::Num(n) if n.parse::<f64>().map_or(true, |f| f.is_infinite()))
}

const TEXT_KEYS: [&[&str]; 7] = [
    &["organizationId"],
    &["organizationName"],
    &["projectId", "groupId"],
    &["projectName", "groupName"],
    &["clusterId", "clusterUniqueId"],
    &["clusterName"],
    &["service", "serviceName"],
];

/// One element of `usageDetails`: `Ok(Some(row))`, `Ok(None)` for an invalid row, `Err` when
/// the whole body must fail.
fn row(j: &J) -> Result<Option<Row>, ()> {
    let J::Obj(entries) = j else {
        return if infinite(j) { Err(()) } else { Ok(None) };
    };
    let mut texts: [Text; 7] = std::array::from_fn(|_| Text::None);
    let (mut usage, mut billed): (Option<String>, Option<String>) = (None, None);
    let mut amount: Option<&J> = None;
    for (k, v) in entries {
        if let Some(slot) = TEXT_KEYS.iter().position(|keys| keys.contains(&k.as_str())) {
            if infinite(v) {
                return Err(());
            }
            texts[slot] = match v {
                J::Str(s) if s.is_empty() => Text::None,
                J::Str(s) => Text::Is(s.clone()),
                J::Num(_) | J::Bool(_) => Text::Some,
                _ => Text::None,
            };
            continue;
        }
        let date = |v: &J| match v {
            J::Str(s) => Some(s.clone()),
            J::Num(n) => Some(n.clone()),
            J::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        match k.as_str() {
            "usageDate" | "billedDate" if infinite(v) => return Err(()),
            "usageDate" => usage = date(v),
            "billedDate" => billed = date(v),
            "usageAmount" => amount = Some(v),
            _ => {}
        }
    }
    let amount = match amount {
        Some(J::Num(n)) => match amount::micros(n) {
            Some(m) => Amount::Exact(m),
            None => return Ok(None),
        },
        Some(J::Str(s)) => {
            // Which text is an amount is the exporter's documented rule, checked against the
            // decimal reading here; the row's amount is checked once it is a row.
            let got = parse_amount_text(s);
            let want = amount::text_micros(s);
            assert_eq!(got, want, "amount text {s:?}: ours vs the decimal's");
            if got.is_none() {
                return Ok(None);
            }
            Amount::Text(s.clone())
        }
        _ => return Ok(None),
    };
    let Some(month) = usage.or(billed).as_deref().and_then(month) else {
        return Ok(None);
    };
    Ok(Some(Row {
        amount,
        month,
        texts,
    }))
}

/// Whether reading `j` as a result document (a row, a value or a content that the streaming
/// parser reads with a type) fails the whole body.
fn fails(j: &J) -> bool {
    let J::Obj(entries) = j else { return true };
    entries.iter().any(|(k, v)| match k.as_str() {
        "usageDetails" => match v {
            J::Null => false,
            J::Arr(items) => items.iter().any(|i| row(i).is_err()),
            _ => true,
        },
        "status" | "detail" => infinite(v),
        "content" => match v {
            J::Null | J::Str(_) => false,
            J::Obj(_) => fails(v),
            _ => true,
        },
        _ => false,
    })
}

/// What a JSON object at the top (or as an envelope's content) should give, once it reads.
fn interpret(j: &J) -> Expect {
    let J::Obj(entries) = j else {
        return Expect::Error;
    };
    if let Some(usage) = j.last("usageDetails") {
        let mut rows = Vec::new();
        let mut invalid = 0;
        if let J::Arr(items) = usage {
            for item in items {
                match row(item) {
                    Ok(Some(r)) => rows.push(r),
                    _ => invalid += 1,
                }
            }
        }
        return Expect::Rows(rows, invalid);
    }
    let status = match j.last("status") {
        Some(J::Num(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    match (status, j.last("content")) {
        (Some(102), _) => Expect::NotReady,
        (Some(200..=299), Some(c @ J::Obj(_))) => interpret(c),
        (Some(200..=299), Some(J::Str(text))) => Expect::Csv(text.clone()),
        (Some(_), _) => Expect::Error,
        (None, None) if entries.is_empty() => Expect::Empty,
        (None, _) => Expect::Error,
    }
}

fn check_rows(got: &ParsedResult, rows: &[Row], invalid: usize, body: &[u8]) {
    let show = || String::from_utf8_lossy(body).into_owned();
    assert_eq!(
        got.rows.len() + got.invalid_rows as usize,
        rows.len() + invalid,
        "every element is a row or an invalid row: {}",
        show()
    );
    for (g, want) in got.rows.iter().zip(rows) {
        match &want.amount {
            Amount::Exact(m) => assert_eq!(g.amount_micros, *m, "exact amount: {}", show()),
            Amount::Text(t) => text_amount(g.amount_micros, t, &show),
        }
        assert_eq!(
            (g.month.year(), g.month.month()),
            want.month,
            "month: {}",
            show()
        );
        let got_texts = [
            &g.org_id,
            &g.org_name,
            &g.project_id,
            &g.project_name,
            &g.cluster_id,
            &g.cluster_name,
            &g.service,
        ];
        for (gt, wt) in got_texts.iter().zip(&want.texts) {
            match wt {
                Text::None => assert!(gt.is_none(), "no value: {}", show()),
                Text::Is(s) => assert_eq!(gt.as_deref(), Some(s.as_str()), "{}", show()),
                Text::Some => assert!(gt.is_some(), "a value: {}", show()),
            }
        }
    }
}

/// An amount read from text: exactly the decimal's micro-dollars (the exporter reads text
/// from its digits, with no float), and no amount where the decimal refuses one.
fn text_amount(got: i64, text: &str, show: &dyn Fn() -> String) {
    match amount::text_micros(text) {
        Some(want) => assert_eq!(got, want, "text amount {text:?}: {}", show()),
        None => panic!("{text:?} is no amount, read as {got}: {}", show()),
    }
}

fuzz_target!(|data: &[u8]| {
    let base = HEAP.start();
    let parsed = parse_body(data, false);
    let peak = HEAP.peak_since(base);
    assert!(
        peak <= parse_bound(data.len()),
        "{peak} bytes for a {}-byte body",
        data.len()
    );

    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        match first {
            None => assert!(matches!(parsed, Ok(Parsed::NotReady))),
            _ => assert!(parsed.is_err(), "not JSON, so not a result"),
        }
        return;
    }
    let read = json::read(body);
    if read.string_issue || read.depth > 100 {
        return;
    }
    let expect = match &read.value {
        Some(j) if !fails(j) => interpret(j),
        _ => Expect::Error,
    };
    let show = String::from_utf8_lossy(data);
    match (expect, &parsed) {
        (Expect::Error, Err(e)) => assert!(!e.0.is_empty(), "a named error"),
        (Expect::NotReady, Ok(Parsed::NotReady)) | (Expect::Empty, Ok(Parsed::Empty)) => {}
        (Expect::Rows(rows, invalid), Ok(Parsed::Ready(got))) => {
            check_rows(got, &rows, invalid, data);
        }
        (Expect::Csv(text), got) => match (parse_csv(text.as_bytes()), got) {
            (Ok(want), Ok(Parsed::Ready(got))) => {
                assert_eq!(want.rows, got.rows, "{show}");
                assert_eq!(want.invalid_rows, got.invalid_rows, "{show}");
            }
            (Err(_), Err(_)) => {}
            (want, got) => panic!("CSV content: {want:?} vs {got:?}: {show}"),
        },
        (_, got) => panic!("wrong outcome {got:?} for {show}"),
    }
});
