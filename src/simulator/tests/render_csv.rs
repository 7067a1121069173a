//! CSV results in each `CsvLayout`.

use super::*;

/// Serves `ready_config()` with CSV results laid out as `layout`.
async fn serve_csv(layout: CsvLayout) -> Served {
    serve(SimConfig {
        csv_layout: layout,
        ..ready_config()
    })
    .await
}

/// Cents of a CSV amount cell.
fn cents_of(cell: &str) -> i64 {
    (cell.parse::<f64>().expect("amount") * 100.0).round() as i64
}

/// The CSV result has a two-line preamble, then a header and rows the csv crate reads, with
/// names quoted as needed and amounts summing to the exact total.
#[tokio::test]
async fn csv_result_parses_after_preamble() {
    let s = serve(ready_config()).await;
    let org = &s.data.orgs[0];
    let projects: Vec<&str> = org.projects.iter().map(|p| p.id.as_str()).collect();
    let (start, end) = (current().plus(-17), current().plus(1));
    let mut body = grouped(start, end, "projects", json!(projects));
    body["includePartialMatches"] = json!(true);
    let query = s.create_token(&org.id, &body).await;
    s.sim.set_ignore_envelope(true);
    let resp = s.poll(&org.id, &query, CSV_TYPE).await.expect("poll");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], CSV_TYPE);
    let text = resp.text().await.expect("body");
    let mut lines = text.splitn(3, '\n');
    assert!(lines.next().expect("line 1").contains("Organization: "));
    assert_eq!(lines.next(), Some(""));
    let mut reader = csv::Reader::from_reader(lines.next().expect("table").as_bytes());
    let headers = reader.headers().expect("header").clone();
    assert_eq!(headers.iter().collect::<Vec<_>>(), CSV_HEADER.to_vec());
    let mut total = 0i64;
    let mut saw_org_name = false;
    for record in reader.records() {
        let record = record.expect("record");
        saw_org_name |= record[2] == org.name;
        total += cents_of(&record[10]);
    }
    assert!(saw_org_name, "org name with quotes round-trips");
    assert_eq!(total, s.data.total_cents(&org.id, start, end));
}

/// `CsvLayout::Spec` starts with exactly the spec's labels (plus `Service` before `Usage
/// Amount` when rows carry a service), puts the usage month's first day in `Billed Date`, and
/// adds up to the exact total; grouped by organizations it has no `Service` column.
#[tokio::test]
async fn csv_spec_layout_has_the_spec_labels_and_usage_month() {
    let s = serve_csv(CsvLayout::Spec).await;
    let org = &s.data.orgs[0];
    let (start, end) = (current().plus(-2), current().plus(1));
    let text = s.run_query(&org.id, &usage(start, end), CSV_TYPE).await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut expected = SPEC_CSV_HEADER.to_vec();
    expected.insert(8, "Service");
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        expected
    );
    let months: HashSet<String> = (0..3).map(|i| start.plus(i).first_day()).collect();
    let mut total = 0;
    for record in reader.records() {
        let record = record.expect("record");
        assert!(months.contains(&record[0]), "usage month in Billed Date");
        assert_eq!(&record[3], org.id.as_str());
        assert_eq!(&record[4], "", "no project column value without grouping");
        assert!(!record[8].is_empty());
        total += cents_of(&record[9]);
    }
    assert_eq!(total, s.data.total_cents(&org.id, start, end));

    let body = grouped(start, end, "organizations", json!([org.id]));
    let text = s.run_query(&org.id, &body, CSV_TYPE).await;
    let first = text.lines().next().expect("header");
    assert_eq!(first, SPEC_CSV_HEADER.join(","));
}

/// `CsvLayout::NoPreamble` starts with the header, its labels in other cases with stray
/// spaces, every line ending in two empty cells and each amount led by a space.
#[tokio::test]
async fn csv_no_preamble_layout_has_messy_header_and_trailing_cells() {
    let s = serve_csv(CsvLayout::NoPreamble).await;
    let org = &s.data.orgs[0];
    let (start, end) = (current(), current().plus(1));
    let text = s.run_query(&org.id, &usage(start, end), CSV_TYPE).await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header.len(), 13);
    let normal: Vec<String> = header[..11]
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let expected: Vec<String> = CSV_HEADER.iter().map(|h| h.to_ascii_lowercase()).collect();
    assert_eq!(normal, expected);
    assert_ne!(header[..11], CSV_HEADER.map(str::to_string));
    assert!(header[11].is_empty() && header[12].is_empty());
    let mut total = 0;
    for record in reader.records() {
        let record = record.expect("record");
        assert!(record[10].starts_with(' '));
        assert!(record[11].is_empty() && record[12].is_empty());
        total += cents_of(record[10].trim());
    }
    assert_eq!(total, s.data.total_cents(&org.id, start, end));
}

/// `CsvLayout::SpecExample` answers the spec's garbled example body verbatim, whatever was
/// asked: labels down the first column, one row of values at most, nothing that adds up.
#[tokio::test]
async fn csv_spec_example_layout_serves_the_specs_garbled_shape() {
    let s = serve_csv(CsvLayout::SpecExample).await;
    let org = s.data.orgs[0].id.clone();
    let body = usage(current(), current().plus(1));
    let text = s.run_query(&org, &body, CSV_TYPE).await;
    assert!(
        text.starts_with(&format!("Billed Date,{org},\nInvoice Id,")),
        "{text}"
    );
    assert!(text.contains("\nUsage Amount, "), "{text}");
    assert_eq!(text.lines().count(), 9);
    // JSON results are unaffected by the CSV layout.
    assert!(!s.query_rows(&org, &body).await.is_empty());
}
