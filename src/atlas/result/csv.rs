//! CSV results: the header row found past any preamble, columns matched by meaning, and
//! each row read into the same [`UsageRow`](super::UsageRow) as JSON gives.

use super::{DecodeError, ParsedResult, RawRow, Strings, parse_amount_text, snippet};

/// What a CSV column means, matched on its header case-insensitively, ignoring spaces and
/// punctuation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Column {
    OrgId,
    OrgName,
    ProjectId,
    ProjectName,
    ClusterId,
    ClusterName,
    Service,
    UsageDate,
    BilledDate,
    Amount,
}

fn column_of(header: &[u8]) -> Option<Column> {
    let key: String = String::from_utf8_lossy(header)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    Some(match key.as_str() {
        "organizationid" | "orgid" => Column::OrgId,
        "organizationname" | "orgname" | "organization" => Column::OrgName,
        "projectid" | "groupid" => Column::ProjectId,
        "projectname" | "project" | "groupname" => Column::ProjectName,
        "clusteruniqueid" | "clusterid" => Column::ClusterId,
        "clustername" | "cluster" => Column::ClusterName,
        "service" | "servicename" => Column::Service,
        "usagedate" | "date" => Column::UsageDate,
        "billeddate" => Column::BilledDate,
        "usageamount" | "amount" | "usageamountusd" => Column::Amount,
        _ => return None,
    })
}

/// Columns the exporter knows and does not read.
fn column_of_known_unused(header: &[u8]) -> Option<()> {
    let key: String = String::from_utf8_lossy(header)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (key == "invoiceid").then_some(())
}

/// Parses a CSV result: skips any preamble before the header row (the first row with a
/// "Usage Amount" and a date column), matches columns by meaning, and tolerates a BOM, CRLF, stray
/// spaces and short or long rows.
///
/// # Errors
/// A [`DecodeError`] when no header row with an amount column is found.
pub fn parse_csv(body: &[u8]) -> Result<ParsedResult, DecodeError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(body);
    let mut columns: Option<Vec<Option<Column>>> = None;
    let mut out = ParsedResult::default();
    let mut record = ::csv::ByteRecord::new();
    let mut line = 0usize;
    let mut strings = Strings::default();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(DecodeError(format!("invalid CSV result: {e}"))),
        }
        line += 1;
        let Some(cols) = &columns else {
            // The header row: an amount column and a date column. A line that merely holds
            // the words "Usage Amount" (the spec's garbled example is such a line) is not one.
            let candidate: Vec<Option<Column>> = record.iter().map(column_of).collect();
            let has = |c: Column| candidate.contains(&Some(c));
            if has(Column::Amount) && (has(Column::UsageDate) || has(Column::BilledDate)) {
                for (cell, col) in record.iter().zip(&candidate) {
                    if col.is_none() && !cell.is_empty() && column_of_known_unused(cell).is_none() {
                        out.unknown_key(&String::from_utf8_lossy(cell));
                    }
                }
                columns = Some(candidate);
            }
            continue;
        };
        if record.iter().all(<[u8]>::is_empty) {
            continue;
        }
        let mut raw = RawRow::default();
        let mut amount_text = None;
        for (cell, col) in record.iter().zip(cols.iter()) {
            let Some(col) = col else { continue };
            let value = String::from_utf8_lossy(cell);
            let slot = match col {
                Column::OrgId => &mut raw.org_id,
                Column::OrgName => &mut raw.org_name,
                Column::ProjectId => &mut raw.project_id,
                Column::ProjectName => &mut raw.project_name,
                Column::ClusterId => &mut raw.cluster_id,
                Column::ClusterName => &mut raw.cluster_name,
                Column::Service => &mut raw.service,
                // An empty cell is no date: the billed date stands in for an empty usage date.
                Column::UsageDate => {
                    raw.usage_date = Some(value.into_owned()).filter(|d| !d.is_empty());
                    continue;
                }
                Column::BilledDate => {
                    raw.billed_date = Some(value.into_owned()).filter(|d| !d.is_empty());
                    continue;
                }
                Column::Amount => {
                    amount_text = Some(value.into_owned());
                    continue;
                }
            };
            *slot = Some(strings.intern(&value));
        }
        let row = match amount_text.filter(|t| !t.is_empty()) {
            None => Err("no Usage Amount".to_owned()),
            Some(text) => {
                raw.amount = Some(
                    parse_amount_text(&text)
                        .ok_or_else(|| format!("Usage Amount {text:?} is not a number")),
                );
                raw.into_row()
            }
        };
        match row {
            Ok(r) => out.rows.push(r),
            Err(why) => out.invalid(format!("CSV line {line}: {why}")),
        }
    }
    if columns.is_none() {
        return Err(DecodeError(format!(
            "CSV result has no header row with a Usage Amount and a date column: {}",
            snippet(body)
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CSV with a preamble, a BOM, CRLF line ends, quoted commas and the spec's column names
    /// parses; a non-numeric amount is counted.
    #[test]
    fn csv_with_preamble_bom_crlf_and_quotes_parses() {
        let body = "\u{feff}Organization: ACME\r\n\r\n Billed Date , Invoice Id,Organization Name,Organization ID,Project Name,Project Id,Cluster Name,Cluster Unique Id,Usage Amount,\r\n2026-10-01,inv,\"ACME, Inc.\",5f1b2c3d4e5f6a7b8c9d0e1f,\"Proj \"\"A\"\"\",aaaaaaaaaaaaaaaaaaaaaaaa,c1,bbbbbbbbbbbbbbbbbbbbbbbb,\"1,234.56\",\r\n2026-10-01,inv,x,y,p,q,c,d,n/a\r\n";
        let r = parse_csv(body.as_bytes()).expect("parses");
        assert_eq!(r.rows.len(), 1);
        let row = &r.rows[0];
        assert_eq!(row.org_name.as_deref(), Some("ACME, Inc."));
        assert_eq!(row.project_name.as_deref(), Some("Proj \"A\""));
        assert_eq!(row.cluster_id.as_deref(), Some("bbbbbbbbbbbbbbbbbbbbbbbb"));
        assert_eq!(row.amount_micros, 1_234_560_000);
        assert_eq!(row.month.to_string(), "2026-10");
        assert_eq!(r.invalid_rows, 1);
    }

    /// The spec's CSV example (labels and values on alternate cells, `Billed Date` holding an
    /// id) is not a result: an error, never success with zero rows.
    #[test]
    fn the_specs_garbled_csv_example_is_an_error() {
        // The same shape as the spec's example, with values of our own.
        let body = "Billed Date,5f1b2c3d4e5f6a7b8c9d0e1f,\n\nInvoice Id,\"October 1, 2026 - November 1, 2026\",\n\nOrganization Name,ACME,\n\nOrganization ID,5f1b2c3d4e5f6a7b8c9d0e1f,\n\nProject Name,5f1b2c3d4e5f6a7b8c9d0e1f,\n\nProject Id,5f1b2c3d4e5f6a7b8c9d0e1f,\n\nCluster Name,prod\n\nCluster Unique Id,5f1b2c3d4e5f6a7b8c9d0e1f\n\nUsage Amount, 42.10\n";
        let e = parse_csv(body.as_bytes()).expect_err("not a result");
        assert!(e.0.contains("no header row"), "{e}");
    }

    /// An empty Usage Date cell is no usage date: the row takes its Billed Date's month, as a
    /// JSON row without `usageDate` does (it was an invalid row: found by the `result_csv`
    /// fuzz target's seed).
    #[test]
    fn an_empty_usage_date_falls_back_to_the_billed_date() {
        let r = parse_csv(
            b"usage date,billed date,usage amount
,2026-10-01,1
2026-11,,2
",
        )
        .expect("parses");
        let months: Vec<String> = r.rows.iter().map(|x| x.month.to_string()).collect();
        assert_eq!(months, ["2026-10", "2026-11"]);
        assert_eq!(r.invalid_rows, 0);
    }

    /// A CSV whose columns are partly missing still yields what it has; one without an
    /// amount column is an error.
    #[test]
    fn csv_missing_columns() {
        let r = parse_csv(b"usage date,usage amount\n2026-11-01,2\n2026-11-01\n").expect("parses");
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.invalid_rows, 1);
        assert!(parse_csv(b"a,b\n1,2\n").is_err());
    }
}
