//! The layout of the published cost text, in one place: which families come in which order,
//! each as its header and then every query's (or org's) lines of it.
//!
//! The refresher hands over the pieces it keeps (each query's lines per family, each org's
//! invoice lines per family, the budget families) by name; the order is decided here only:
//! `atlas_cost_usage_usd`, `atlas_cost_month_to_date_usd`, the forecasts, the previous
//! month, the budget families, then the invoice source's families ([`INVOICE_FAMILIES`]),
//! present only when some org runs that source.

use super::costs::{mtd_header, usage_header};
use super::invoices::{INVOICE_FAMILIES, InvoicePieces};
use super::text::family_header;
use crate::snapshot::CostPiece;

/// One query's lines of each per-series cost family, encoded for the current day.
#[derive(Clone, Copy, Debug)]
pub struct QueryPieces<'a> {
    /// `atlas_cost_usage_usd`.
    pub usage: &'a CostPiece,
    /// `atlas_cost_month_to_date_usd`.
    pub month_to_date: &'a CostPiece,
    /// `atlas_cost_month_forecast_usd`.
    pub forecast: &'a CostPiece,
    /// `atlas_cost_previous_month_usd`.
    pub previous: &'a CostPiece,
}

/// Everything one publication exposes, by name.
pub struct Publication<'a> {
    /// The refresh interval as HELP text shows it.
    pub refresh_help: &'a str,
    /// Every query's pieces, in configuration order.
    pub queries: Vec<QueryPieces<'a>>,
    /// Writes the forecast family's header ([`crate::budget`] owns its HELP).
    pub forecast_header: &'a dyn Fn(&mut String),
    /// Writes the previous month family's header.
    pub previous_header: &'a dyn Fn(&mut String),
    /// The budget families, whole (headers included).
    pub budgets: CostPiece,
    /// Every org's invoice pieces, in configuration order (none without the source).
    pub invoices: Vec<&'a InvoicePieces>,
}

fn header(write: &dyn Fn(&mut String)) -> CostPiece {
    let mut text = String::new();
    write(&mut text);
    CostPiece::seal(text)
}

/// The pieces of a publication in exposition order (empty ones included; the caller's
/// [`crate::snapshot::EncodedCosts::from_pieces`] drops them).
pub fn pieces(p: Publication<'_>) -> Vec<CostPiece> {
    let refresh = p.refresh_help;
    let mut out: Vec<CostPiece> = Vec::new();
    let mut family = |write: &dyn Fn(&mut String), lines: fn(&QueryPieces<'_>) -> CostPiece| {
        out.push(header(write));
        out.extend(p.queries.iter().map(lines));
    };
    family(&|t| usage_header(t, refresh), |q| q.usage.clone());
    family(&|t| mtd_header(t, refresh), |q| q.month_to_date.clone());
    family(p.forecast_header, |q| q.forecast.clone());
    family(p.previous_header, |q| q.previous.clone());
    out.push(p.budgets);
    if !p.invoices.is_empty() {
        for (i, (name, help)) in INVOICE_FAMILIES.iter().enumerate() {
            out.push(header(&|t| family_header(t, name, help)));
            out.extend(p.invoices.iter().map(|org| org.families[i].clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &str) -> CostPiece {
        CostPiece::seal(text.to_owned())
    }

    fn names(pieces: &[CostPiece]) -> Vec<String> {
        pieces
            .iter()
            .flat_map(|p| {
                String::from_utf8_lossy(&p.text)
                    .into_owned()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|l| {
                l.strip_prefix("# TYPE ")
                    .map(|n| n.split(' ').next().unwrap_or("").to_owned())
            })
            .collect()
    }

    /// The families come in one order: the four per-query families (each header, then every
    /// query's lines), the budgets, then the eight invoice families, only when an org runs
    /// the invoice source; every query's and org's lines follow their own family's header.
    #[test]
    fn families_come_in_one_order_with_their_lines_after_their_header() {
        let (u, m, f, p) = (piece("u1\n"), piece("m1\n"), piece("f1\n"), piece("p1\n"));
        let query = QueryPieces {
            usage: &u,
            month_to_date: &m,
            forecast: &f,
            previous: &p,
        };
        let invoices = InvoicePieces {
            families: std::array::from_fn(|i| piece(&format!("i{i}\n"))),
        };
        fn publication<'a>(
            query: QueryPieces<'a>,
            invoices: Vec<&'a InvoicePieces>,
        ) -> Publication<'a> {
            Publication {
                refresh_help: "1h",
                queries: vec![query, query],
                forecast_header: &|t: &mut String| family_header(t, "forecast", "f"),
                previous_header: &|t: &mut String| family_header(t, "previous", "p"),
                budgets: piece("# TYPE budgets gauge\n"),
                invoices,
            }
        }
        let without = pieces(publication(query, Vec::new()));
        assert_eq!(
            names(&without),
            [
                "atlas_cost_usage_usd",
                "atlas_cost_month_to_date_usd",
                "forecast",
                "previous",
                "budgets"
            ]
        );
        let text = |ps: &[CostPiece]| -> String {
            ps.iter()
                .map(|p| String::from_utf8_lossy(&p.text).into_owned())
                .collect()
        };
        let body = text(&without);
        let after = |needle: &str, header: &str| body.find(needle) > body.find(header);
        assert!(
            after("u1", "# TYPE atlas_cost_usage_usd")
                && !after("u1", "# TYPE atlas_cost_month_to_date_usd")
        );
        let with = pieces(publication(query, vec![&invoices]));
        let all = names(&with);
        assert_eq!(all.len(), 13);
        let invoice_names: Vec<&str> = INVOICE_FAMILIES.iter().map(|(n, _)| *n).collect();
        assert_eq!(&all[5..], invoice_names.as_slice());
        let body = text(&with);
        for (i, (name, _)) in INVOICE_FAMILIES.iter().enumerate() {
            let line = body.find(&format!("i{i}\n")).expect("the org's lines");
            assert!(body.find(&format!("# TYPE {name} gauge")).expect("header") < line);
        }
    }
}
