//! The invoice calls: the pending invoices (`listOrgInvoicePending`), the closed invoices
//! (`listOrgInvoices`) and a closed invoice's items (`searchOrgInvoiceLineItems`), read into
//! the typed [`crate::invoice`] model, every amount exactly (no float on the way).
//!
//! The pending call answers a `PaginatedApiInvoiceView` (`{"results": [...]}`) per the spec;
//! the one public client decodes a single invoice object instead, so that is read too. A
//! paying org's answer may hold its linked orgs' invoices, in `results` or nested in
//! `linkedInvoices`: each keeps its own `orgId`.
//!
//! All three calls are in the "Invoices" endpoint set with the Cost Explorer, per org: they
//! share its request budget (`gate`).

use std::collections::HashSet;

use reqwest::Method;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::{AtlasClient, AtlasError, JSON_MEDIA_TYPE, PAGE_SIZE};
use crate::invoice::{Invoice, LineItem, parse_timestamp};
use crate::model::{Endpoint, decimal_to_micros, decimal_to_nanos, decimal_to_scaled};

/// `searchOrgInvoiceLineItems`: the only version it declares.
pub const LINE_ITEMS_MEDIA_TYPE: &str = "application/vnd.atlas.2024-08-05+json";
/// Pages read at most per listing.
const MAX_PAGES: usize = 1_000;

/// Items read, and items skipped because a field they cannot do without was missing or
/// broken (counted as invalid rows, never a failed refresh).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Read<T> {
    /// What was read.
    pub items: Vec<T>,
    /// Items skipped.
    pub invalid: u64,
}

#[derive(Deserialize)]
struct PendingPage {
    #[serde(default)]
    results: Option<Vec<RawInvoice>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInvoice {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    line_items: Option<Vec<RawItem>>,
    #[serde(default)]
    linked_invoices: Option<Vec<RawInvoice>>,
}

/// A line item as sent: numbers kept as their text, read exactly.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawItem {
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
    #[serde(default)]
    usage_date: Option<String>,
    #[serde(default)]
    quantity: Option<Box<RawValue>>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    unit_price_dollars: Option<Box<RawValue>>,
    #[serde(default)]
    total_price_cents: Option<Box<RawValue>>,
    #[serde(default)]
    discount_cents: Option<Box<RawValue>>,
    #[serde(default)]
    tier_lower_bound: Option<Box<RawValue>>,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    group_name: Option<String>,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    cloud_provider: Option<String>,
    /// Read leniently: the spec's map of lists, or `{"key", "value"}` pairs.
    #[serde(default)]
    tags: Option<serde_json::Value>,
}

fn number(raw: Option<&RawValue>, read: fn(&str) -> Option<i64>) -> Option<i64> {
    raw.map(RawValue::get)
        .filter(|t| *t != "null")
        .and_then(|t| read(t.trim_matches('"')))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// The tags of an item: the spec's map from a key to a list of values (the first value),
/// a map of plain strings, or a list of `{"key", "value"}` pairs; anything else is none.
fn tags(value: Option<&serde_json::Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match value {
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                let first = match v {
                    serde_json::Value::Array(vs) => vs.iter().find_map(|v| v.as_str()),
                    serde_json::Value::String(s) => Some(s.as_str()),
                    _ => None,
                };
                if let Some(v) = first.filter(|v| !v.is_empty() && !k.is_empty()) {
                    out.push((k.clone(), v.to_owned()));
                }
            }
        }
        Some(serde_json::Value::Array(pairs)) => {
            for t in pairs {
                if let (Some(k), Some(v)) = (
                    t.get("key").and_then(|k| k.as_str()),
                    t.get("value").and_then(|v| v.as_str()),
                ) && !k.is_empty()
                    && !v.is_empty()
                {
                    out.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        _ => {}
    }
    out
}

impl RawItem {
    /// The typed item; `None` without a SKU (or description), a start (or usage) date or a
    /// whole number of cents. A closed item has only a `description`: it is read as the SKU
    /// here and mapped to a known SKU by the refresher ([`crate::invoice::match_sku`]).
    fn typed(self) -> Option<LineItem> {
        let sku = non_empty(self.sku).or(non_empty(self.description))?;
        let start = self
            .start_date
            .as_deref()
            .or(self.usage_date.as_deref())
            .and_then(parse_timestamp)?;
        let end = match self.end_date.as_deref() {
            Some(e) => Some(parse_timestamp(e)?),
            None => None,
        };
        let total_cents = number(self.total_price_cents.as_deref(), |t| {
            decimal_to_scaled(t, 0)
        })?;
        let discount_cents = match self.discount_cents.as_deref() {
            None => 0,
            Some(raw) if raw.get() == "null" => 0,
            Some(raw) => number(Some(raw), |t| decimal_to_scaled(t, 0))?,
        };
        Some(LineItem {
            sku,
            start,
            end,
            quantity_nanos: number(self.quantity.as_deref(), decimal_to_nanos).unwrap_or(0),
            unit: non_empty(self.unit),
            unit_price_micros: number(self.unit_price_dollars.as_deref(), decimal_to_micros),
            total_cents,
            discount_cents,
            tier_lower_nanos: number(self.tier_lower_bound.as_deref(), decimal_to_nanos),
            project_id: non_empty(self.group_id),
            project_name: non_empty(self.group_name),
            cluster_name: non_empty(self.cluster_name),
            cloud_provider: non_empty(self.cloud_provider),
            tags: tags(self.tags.as_ref()),
        })
    }
}

impl RawInvoice {
    fn typed(self, invalid: &mut u64) -> Invoice {
        let items = self
            .line_items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| {
                let typed = i.typed();
                *invalid += u64::from(typed.is_none());
                typed
            })
            .collect();
        Invoice {
            id: non_empty(self.id),
            org_id: non_empty(self.org_id),
            items,
            linked: self
                .linked_invoices
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.typed(invalid))
                .collect(),
        }
    }
}

/// Reads the answer of `listOrgInvoicePending`: the spec's `{"results": [...]}`, or a single
/// invoice object (what the one public client expects).
///
/// # Errors
/// A message naming what is wrong when the body is neither.
pub fn parse_pending(body: &[u8]) -> Result<Read<Invoice>, String> {
    if !super::is_json_object(body) {
        return Err("the pending invoices answer is not a JSON object".to_owned());
    }
    let page: PendingPage = serde_json::from_slice(body)
        .map_err(|e| format!("the pending invoices answer is not a results page: {e}"))?;
    let invoices = match page.results {
        Some(results) => results,
        None => {
            let single: RawInvoice = serde_json::from_slice(body)
                .map_err(|e| format!("the pending invoice is not an invoice: {e}"))?;
            if single.line_items.is_none() && single.id.is_none() {
                return Err(
                    "the pending invoices answer has neither `results` nor an invoice's `lineItems`"
                        .to_owned(),
                );
            }
            vec![single]
        }
    };
    let mut invalid = 0;
    let items = invoices
        .into_iter()
        .map(|i| i.typed(&mut invalid))
        .collect();
    Ok(Read { items, invalid })
}

#[derive(Deserialize)]
struct ItemsPage {
    results: Vec<RawItem>,
}

/// Reads one page of `searchOrgInvoiceLineItems` (`PaginatedPublicApiUsageDetailsLineItemView`:
/// `results` of items with `usageDate`, `description`, `totalPriceCents`, ...).
///
/// # Errors
/// A message naming what is wrong when the body is no results page.
pub fn parse_line_items(body: &[u8]) -> Result<Read<LineItem>, String> {
    if !super::is_json_object(body) {
        return Err("the line items answer is not a JSON object".to_owned());
    }
    let page: ItemsPage = serde_json::from_slice(body)
        .map_err(|e| format!("the line items answer is not a results page: {e}"))?;
    let mut invalid = 0;
    let items = page
        .results
        .into_iter()
        .filter_map(|i| {
            let typed = i.typed();
            invalid += u64::from(typed.is_none());
            typed
        })
        .collect();
    Ok(Read { items, invalid })
}

/// A closed invoice as listed: its id, org and the start of its billing period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoiceMeta {
    /// `id` (an Atlas id).
    pub id: String,
    /// `orgId`.
    pub org_id: Option<String>,
    /// `startDate`, Unix seconds.
    pub start: i64,
    /// `statusName`.
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct MetaPage {
    results: Vec<RawMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    status_name: Option<String>,
}

/// Reads one page of `listOrgInvoices`; invoices without an Atlas id or a start date are
/// skipped.
///
/// # Errors
/// A message naming what is wrong when the body is no results page.
pub fn parse_invoice_list(body: &[u8]) -> Result<Vec<InvoiceMeta>, String> {
    if !super::is_json_object(body) {
        return Err("the invoices listing is not a JSON object".to_owned());
    }
    let page: MetaPage = serde_json::from_slice(body)
        .map_err(|e| format!("the invoices listing is not a results page: {e}"))?;
    Ok(page
        .results
        .into_iter()
        .filter_map(|m| {
            let id = m.id.filter(|id| crate::model::is_atlas_id(id))?;
            Some(InvoiceMeta {
                id,
                org_id: non_empty(m.org_id),
                start: m.start_date.as_deref().and_then(parse_timestamp)?,
                status: non_empty(m.status_name),
            })
        })
        .collect())
}

impl AtlasClient {
    /// The org's pending invoices (linked orgs' included).
    ///
    /// # Errors
    /// The first error retries did not overcome; [`AtlasError::Decode`] for an answer that is
    /// no invoice.
    pub async fn pending_invoices(&self, deadline: Instant) -> Result<Read<Invoice>, AtlasError> {
        let endpoint = Endpoint::PendingInvoices;
        let path = format!("/api/atlas/v2/orgs/{}/invoices/pending", self.org_id);
        let reply = self
            .retrying(deadline, || {
                self.send(endpoint, Method::GET, &path, JSON_MEDIA_TYPE, None)
            })
            .await?;
        parse_pending(&reply.body).map_err(|message| AtlasError::Decode { endpoint, message })
    }

    /// The closed invoice of the billing period starting in the month of `month_start`
    /// (Unix seconds) for this org, if it is listed.
    ///
    /// # Errors
    /// As [`AtlasClient::pending_invoices`].
    pub async fn closed_invoice(
        &self,
        month_start: i64,
        from_date: &str,
        deadline: Instant,
    ) -> Result<Option<InvoiceMeta>, AtlasError> {
        let endpoint = Endpoint::Invoices;
        let month = crate::invoice::month_of_day(month_start.div_euclid(crate::invoice::DAY_SECS));
        for page_num in 1..=MAX_PAGES {
            let path = format!(
                "/api/atlas/v2/orgs/{}/invoices?fromDate={from_date}&viewLinkedInvoices=false&pageNum={page_num}&itemsPerPage={PAGE_SIZE}",
                self.org_id
            );
            let reply = self
                .retrying(deadline, || {
                    self.send(endpoint, Method::GET, &path, JSON_MEDIA_TYPE, None)
                })
                .await?;
            let page = parse_invoice_list(&reply.body)
                .map_err(|message| AtlasError::Decode { endpoint, message })?;
            let n = page.len();
            if let Some(found) = page.into_iter().find(|m| {
                crate::invoice::month_of_day(m.start.div_euclid(crate::invoice::DAY_SECS)) == month
                    && m.org_id.as_deref().is_none_or(|o| o == self.org_id)
                    && m.status.as_deref() != Some("PENDING")
            }) {
                return Ok(Some(found));
            }
            if n < PAGE_SIZE {
                break;
            }
        }
        Ok(None)
    }

    /// Every line item of the invoice `invoice_id`, page by page (an empty JSON body: no
    /// filter).
    ///
    /// # Errors
    /// [`AtlasError::InvalidId`] for an id that is not an Atlas id; else as
    /// [`AtlasClient::pending_invoices`].
    pub async fn line_items(
        &self,
        invoice_id: &str,
        deadline: Instant,
    ) -> Result<Read<LineItem>, AtlasError> {
        if !crate::model::is_atlas_id(invoice_id) {
            return Err(AtlasError::InvalidId(invoice_id.to_owned()));
        }
        let endpoint = Endpoint::LineItems;
        let mut out = Read {
            items: Vec::new(),
            invalid: 0,
        };
        let mut seen_pages: HashSet<Vec<u8>> = HashSet::new();
        for page_num in 1..=MAX_PAGES {
            let path = format!(
                "/api/atlas/v2/orgs/{}/invoices/{invoice_id}/lineItems:search?pageNum={page_num}&itemsPerPage={PAGE_SIZE}",
                self.org_id
            );
            let reply = self
                .retrying(deadline, || {
                    self.send(
                        endpoint,
                        Method::GET,
                        &path,
                        LINE_ITEMS_MEDIA_TYPE,
                        Some(b"{}"),
                    )
                })
                .await?;
            // A server that ignores `pageNum` would answer page 1 forever.
            if !seen_pages.insert(reply.body.to_vec()) {
                break;
            }
            let page = parse_line_items(&reply.body)
                .map_err(|message| AtlasError::Decode { endpoint, message })?;
            let n = page.items.len() + usize::try_from(page.invalid).unwrap_or(usize::MAX);
            out.items.extend(page.items);
            out.invalid += page.invalid;
            if n < PAGE_SIZE {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEM: &str = r#"{"sku": "ATLAS_AWS_DATA_TRANSFER_DIFFERENT_REGION",
        "startDate": "2024-10-10T00:00:00Z", "endDate": "2024-10-11T00:00:00Z",
        "created": "2024-10-11T02:57:56Z", "unit": "GB", "quantity": 6.035e-07,
        "unitPriceDollars": 0.02, "totalPriceCents": 0}"#;

    /// The spec's paginated `results` and the single invoice object read to the same
    /// invoice; the OpenCost fixture's item reads exactly (a tiny quantity in nano-units,
    /// the price in micro-dollars, zero cents).
    #[test]
    fn pending_reads_the_results_list_and_a_single_invoice_alike() {
        let listed = format!(
            r#"{{"results": [{{"id": "aaaaaaaaaaaaaaaaaaaaaaaa", "lineItems": [{ITEM}]}}], "totalCount": 1}}"#
        );
        let single = format!(r#"{{"id": "aaaaaaaaaaaaaaaaaaaaaaaa", "lineItems": [{ITEM}]}}"#);
        let a = parse_pending(listed.as_bytes()).expect("listed");
        let b = parse_pending(single.as_bytes()).expect("single");
        assert_eq!(a, b);
        let item = &a.items[0].items[0];
        assert_eq!(item.quantity_nanos, 604);
        assert_eq!(item.unit_price_micros, Some(20_000));
        assert_eq!(item.total_cents, 0);
        assert_eq!(
            item.days().end - item.days().start,
            1,
            "endDate at midnight is exclusive"
        );
    }

    /// An item without a SKU, a start date or whole cents is skipped and counted; a body
    /// that is no object, or an object with neither `results` nor `lineItems`, is an error
    /// that says so.
    #[test]
    fn broken_items_are_counted_and_broken_answers_named() {
        let body = br#"{"results": [{"lineItems": [
            {"sku": "A", "startDate": "2026-11-02T00:00:00Z", "totalPriceCents": 5},
            {"startDate": "2026-11-02T00:00:00Z", "totalPriceCents": 5},
            {"sku": "B", "startDate": "yesterday", "totalPriceCents": 5},
            {"sku": "C", "startDate": "2026-11-02T00:00:00Z", "totalPriceCents": "lots"}
        ]}]}"#;
        let read = parse_pending(body).expect("a page");
        assert_eq!((read.items[0].items.len(), read.invalid), (1, 3));
        assert!(
            parse_pending(b"[]")
                .expect_err("refused")
                .contains("not a JSON object")
        );
        assert!(
            parse_pending(b"{\"totalCount\": 3}")
                .expect_err("refused")
                .contains("neither")
        );
    }

    /// Tags as the spec's map of lists, as plain strings, and as discovery's pairs read
    /// the same.
    #[test]
    fn tags_read_as_a_map_of_lists_or_as_pairs() {
        let map = serde_json::json!({"team": ["web", "api"], "env": "prod", "": ["x"]});
        let pairs =
            serde_json::json!([{"key": "team", "value": "web"}, {"key": "env", "value": "prod"}]);
        let mut a = tags(Some(&map));
        let mut b = tags(Some(&pairs));
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(
            a,
            [
                ("env".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "web".to_owned())
            ]
        );
    }

    /// A closed invoice's items (`usageDate`, `description`) read as one-day items of that
    /// SKU.
    #[test]
    fn closed_items_read_usage_date_and_description() {
        let body = br#"{"results": [{"usageDate": "2026-10-31T00:00:00Z",
            "description": "ATLAS_AWS_INSTANCE_M30", "totalPriceCents": 1234,
            "quantity": 24, "unitPriceDollars": 0.54, "clusterName": "prod-main",
            "groupId": "bbbbbbbbbbbbbbbbbbbbbbbb"}], "totalCount": 1}"#;
        let read = parse_line_items(body).expect("a page");
        let item = &read.items[0];
        assert_eq!(item.sku, "ATLAS_AWS_INSTANCE_M30");
        assert_eq!(item.end, None);
        assert_eq!(item.net_cents(), 1234);
        assert_eq!(item.quantity_nanos, 24 * crate::invoice::NANOS_PER_UNIT);
    }
}
