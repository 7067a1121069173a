//! The CSV result in each [`CsvLayout`]: Atlas documents the CSV media type but its only
//! example is garbled, so each layout is one plausible reading.

use super::cost_explorer::Query;
use crate::month::Month;
use crate::simulator::data::GroupBy;
use crate::simulator::{CsvLayout, RowKeys};

/// The labels of the columns every layout has, in the spec's order: billing, organization,
/// project and cluster.
const DIMENSION_LABELS: [&str; 8] = [
    "Billed Date",
    "Invoice Id",
    "Organization Name",
    "Organization ID",
    "Project Name",
    "Project Id",
    "Cluster Name",
    "Cluster Unique Id",
];

/// Header of the CSV result table in the [`CsvLayout::Extended`] layout: the spec's labels
/// with `Service` and `Usage Date` before `Usage Amount`.
pub const CSV_HEADER: [&str; 11] = joined(
    &DIMENSION_LABELS,
    &["Service", "Usage Date", "Usage Amount"],
);

/// The column labels of the spec's CSV example, in its order ([`CsvLayout::Spec`]).
pub const SPEC_CSV_HEADER: [&str; 9] = joined(&DIMENSION_LABELS, &["Usage Amount"]);

/// `head` then `tail`, as one array (a compile error unless they fill it exactly).
const fn joined<const N: usize>(head: &[&'static str], tail: &[&'static str]) -> [&'static str; N] {
    assert!(
        head.len() + tail.len() == N,
        "the labels must fill the header"
    );
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < head.len() {
            head[i]
        } else {
            tail[i - head.len()]
        };
        i += 1;
    }
    out
}

/// A body of the shape of the CSV example of `getCostExplorerUsage` in the Atlas OpenAPI
/// spec (2026-08), as YAML reads it: the labels down the first column, values under the
/// wrong labels (`Billed Date` holds an id, `Invoice Id` a date range), one line per label.
/// The values are the query's own (the spec's text is not copied). Served by
/// [`CsvLayout::SpecExample`].
fn spec_example_shaped(org_id: &str, org_name: &str, month: Option<Month>, cents: i64) -> String {
    let range = month.map_or_else(String::new, |m| {
        format!("{} - {}", m.first_day(), m.plus(1).first_day())
    });
    let values = [
        org_id.to_owned(),
        range,
        org_name.to_owned(),
        org_id.to_owned(),
        org_id.to_owned(),
        org_id.to_owned(),
        "TestCluster".to_owned(),
        org_id.to_owned(),
        format!(" {}", format_cents(cents)),
    ];
    let mut out = String::new();
    for (i, (label, value)) in SPEC_CSV_HEADER.iter().zip(values).enumerate() {
        let quoted = if value.contains(',') {
            format!("\"{value}\"")
        } else {
            value
        };
        // The spec's lines end in a comma for the first six labels only.
        let comma = if i < 6 { "," } else { "" };
        out.push_str(&format!("{label},{quoted}{comma}\n"));
    }
    out
}

/// The [`CsvLayout::NoPreamble`] header: the Extended labels in other cases, with stray
/// spaces, and two empty trailing cells.
const NO_PREAMBLE_HEADER: [&str; 13] = [
    " billed date",
    "INVOICE ID ",
    "organization name",
    " Organization Id ",
    "PROJECT NAME",
    "project id ",
    "Cluster name",
    " CLUSTER UNIQUE ID",
    "service ",
    " Usage date",
    "USAGE AMOUNT ",
    "",
    "",
];

/// Generous bytes per CSV result row (they are about 200), to size the result's buffer.
const CSV_ROW_BYTES: usize = 300;

/// `-12.34` from cents.
fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

impl Query {
    /// The result as CSV text in `layout`.
    pub(super) fn csv(&self, layout: CsvLayout) -> Result<String, csv::Error> {
        // Sized for the whole result up front (pages never written are never resident), so
        // that a 1,000,000-row result is not copied from buffer to buffer while it grows.
        let mut w = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::with_capacity(
                self.rows.len().saturating_mul(CSV_ROW_BYTES) + 1024,
            ));
        let with_service = self.group_by != GroupBy::Organizations;
        match layout {
            CsvLayout::SpecExample => {
                let org = self.data.orgs.get(self.org);
                let month = self.rows.first().map(|r| r.month);
                return Ok(spec_example_shaped(
                    org.map_or("", |o| o.id.as_str()),
                    org.map_or("", |o| o.name.as_str()),
                    month,
                    self.rows.iter().map(|r| r.cents).sum(),
                ));
            }
            CsvLayout::Extended => {
                // A metadata preamble like Atlas invoice CSVs: one line, then an empty line.
                let org_name = self.data.orgs.get(self.org).map_or("", |o| o.name.as_str());
                w.write_record([format!("Organization: {org_name}")])?;
                let mut buf = w.into_inner().map_err(|e| e.into_error())?;
                buf.push(b'\n');
                w = csv::WriterBuilder::new().flexible(true).from_writer(buf);
                w.write_record(CSV_HEADER)?;
            }
            CsvLayout::NoPreamble => w.write_record(NO_PREAMBLE_HEADER)?,
            CsvLayout::Spec => {
                let mut header = SPEC_CSV_HEADER.to_vec();
                if with_service {
                    header.insert(header.len() - 1, "Service");
                }
                w.write_record(header)?;
            }
        }
        for r in self.json_rows(RowKeys::ProjectId) {
            let amount = format_cents(r.cents);
            let usage_date = r.usage_date.as_str();
            let dimensions = [
                r.invoice_id.as_str(),
                r.organization_name,
                r.organization_id,
                r.project_name.unwrap_or(""),
                r.project_id.unwrap_or(""),
                r.cluster_name.unwrap_or(""),
                r.cluster_id.unwrap_or(""),
            ];
            let service = r.service.unwrap_or("");
            let mut record: Vec<&str> = Vec::with_capacity(13);
            match layout {
                CsvLayout::Spec => {
                    // The only date column carries the usage month.
                    record.push(usage_date);
                    record.extend(dimensions);
                    if with_service {
                        record.push(service);
                    }
                    record.push(&amount);
                }
                CsvLayout::Extended | CsvLayout::NoPreamble | CsvLayout::SpecExample => {
                    record.push(&r.billed_date);
                    record.extend(dimensions);
                    record.extend([service, usage_date]);
                    if layout == CsvLayout::NoPreamble {
                        let spaced = format!(" {amount}");
                        record.extend([spaced.as_str(), "", ""]);
                        w.write_record(&record)?;
                        continue;
                    }
                    record.push(&amount);
                }
            }
            w.write_record(&record)?;
        }
        let buf = w.into_inner().map_err(|e| e.into_error())?;
        // Every field written is a &str: the buffer is UTF-8, taken as it is (no copy).
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec layout's header is the spec's nine labels; the extended one shares its first
    /// eight and adds `Service` and `Usage Date` before `Usage Amount`.
    #[test]
    fn headers_are_the_spec_labels_and_the_extended_columns() {
        assert_eq!(
            SPEC_CSV_HEADER.join(","),
            "Billed Date,Invoice Id,Organization Name,Organization ID,Project Name,Project Id,\
             Cluster Name,Cluster Unique Id,Usage Amount"
        );
        assert_eq!(CSV_HEADER[..8], SPEC_CSV_HEADER[..8]);
        assert_eq!(CSV_HEADER[8..], ["Service", "Usage Date", "Usage Amount"]);
    }

    /// Amounts are dollars with two decimals, a minus sign only when negative.
    #[test]
    fn cents_are_written_as_dollars_with_two_decimals() {
        let written: Vec<String> = [0, 5, 100, 123_456, -5, -1234]
            .into_iter()
            .map(format_cents)
            .collect();
        assert_eq!(
            written,
            ["0.00", "0.05", "1.00", "1234.56", "-0.05", "-12.34"]
        );
    }

    /// The spec-example body puts one label a line with the value beside it, ids under
    /// `Billed Date` and the month's range under `Invoice Id`; only the first six lines end in
    /// a comma, and a value holding a comma is quoted.
    #[test]
    fn the_spec_example_puts_values_beside_the_wrong_labels() {
        let month = Month::new(2026, 11).expect("month");
        let org = "0123456789abcdef01234567";
        let text = spec_example_shaped(org, "Soylent, Inc.", Some(month), -1234);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9);
        assert_eq!(lines[0], format!("Billed Date,{org},"));
        assert_eq!(lines[1], "Invoice Id,2026-11-01 - 2026-12-01,");
        assert_eq!(lines[2], "Organization Name,\"Soylent, Inc.\",");
        assert_eq!(lines[6], "Cluster Name,TestCluster");
        assert_eq!(lines[8], "Usage Amount, -12.34");
        assert!(lines[..6].iter().all(|l| l.ends_with(',')));
    }
}
