//! The invoice endpoints (issue 22), as the spec declares them:
//! - `GET /orgs/{orgId}/invoices/pending` (2023-01-01): a `PaginatedApiInvoiceView` of the
//!   current month's invoice (or, in the `Single` variant, that invoice alone), its
//!   `lineItems` posted up to yesterday; in the `linked_orgs` variant the first org's
//!   invoice holds the others' in `linkedInvoices`;
//! - `GET /orgs/{orgId}/invoices` (2023-01-01): the closed invoices of the earlier months,
//!   paginated, `fromDate` honoured;
//! - `GET /orgs/{orgId}/invoices/{invoiceId}/lineItems:search` (2024-08-05 only, a JSON body
//!   required: an empty one means every item): `PublicApiUsageDetailsLineItemView`s,
//!   paginated.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::{Value, json};

use super::discovery::{page, paging};
use super::respond::{Answer, atlas_error, atlas_json, not_found};
use super::{JSON_TYPE, find_org, query_param, query_params, require_body_type};
use crate::month::Month;
use crate::simulator::data::{Dataset, SimItem};
use crate::simulator::{ClosedDescription, InvoiceShape, SimEndpoint, Simulator};

/// The only version `searchOrgInvoiceLineItems` declares.
pub const LINE_ITEMS_TYPE: &str = "application/vnd.atlas.2024-08-05+json";

/// The id of org `org_id`'s invoice of `month`: 24 hex characters, stable.
pub fn invoice_id(org_id: &str, month: Month) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in org_id.bytes().chain(month.to_string().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}{h:016x}", h >> 32)
}

fn date(month: Month, day: u32) -> String {
    format!("{month}-{day:02}T00:00:00Z")
}

/// The date `days` after day `day` of `month` (the next month's first when it runs over).
fn date_after(month: Month, day: u32, days: u32) -> String {
    let end = day + days;
    if end > month.days() {
        date(month.plus(1), end - month.days())
    } else {
        date(month, end)
    }
}

fn tags_map(data: &Dataset, item: &SimItem) -> Value {
    let mut map = serde_json::Map::new();
    if let Some(r) = data.record(item) {
        let (project, cluster) = data.place(r);
        for t in project
            .map(|p| p.tags.as_slice())
            .unwrap_or(&[])
            .iter()
            .chain(cluster.map(|c| c.tags.as_slice()).unwrap_or(&[]))
        {
            map.insert(t.key.clone(), json!([t.value]));
        }
    }
    Value::Object(map)
}

fn nanos_text(n: i64) -> String {
    format!("{}.{:09}", n / 1_000_000_000, n % 1_000_000_000)
}

fn micros_text(n: i64) -> String {
    format!("{}.{:06}", n / 1_000_000, n % 1_000_000)
}

/// A human-readable name of `sku` without its code: `ATLAS_AWS_INSTANCE_M30` reads
/// `AWS Instance M30` (short words kept as they are, longer ones capitalised).
pub fn sku_name(sku: &str) -> String {
    sku.strip_prefix("ATLAS_")
        .unwrap_or(sku)
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            if w.len() <= 3 {
                w.to_owned()
            } else {
                let lower = w.to_ascii_lowercase();
                let mut c = lower.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A closed item's `description` of `item` in the configured variant.
fn closed_description(sim: &Simulator, data: &Dataset, month: Month, item: &SimItem) -> String {
    match sim.inner.config.invoices.closed_description {
        ClosedDescription::Sku => item.sku.clone(),
        ClosedDescription::SkuAndDetails => {
            let place = data
                .record(item)
                .and_then(|r| data.place(r).1.map(|c| c.name.clone()))
                .unwrap_or_else(|| "Organization".to_owned());
            format!("{} - {place} ({month}-{:02})", item.sku, item.day)
        }
        ClosedDescription::Name => sku_name(&item.sku),
    }
}

/// A pending invoice's `InvoiceLineItem`.
fn pending_item(sim: &Simulator, data: &Dataset, month: Month, item: &SimItem) -> Value {
    let variants = &sim.inner.config.invoices;
    let mut v = json!({
        "sku": item.sku,
        "startDate": date(month, item.day),
        "endDate": date_after(month, item.day, item.days),
        "created": date_after(month, item.day, item.days).replace("T00:00:00Z", "T02:57:56Z"),
        "quantity": Value::Number(nanos_text(item.quantity_nanos).parse().unwrap_or(0.into())),
        "unit": item.unit,
        "unitPriceDollars": Value::Number(micros_text(item.price_micros).parse().unwrap_or(0.into())),
        "totalPriceCents": item.net_cents + item.discount_cents,
    });
    let fields = v.as_object_mut();
    let Some(fields) = fields else { return v };
    if item.discount_cents > 0 {
        fields.insert("discountCents".into(), json!(item.discount_cents));
        fields.insert("percentDiscount".into(), json!(10.0));
    }
    let Some(r) = data.record(item) else { return v };
    let (project, cluster) = data.place(r);
    if let Some(p) = project {
        fields.insert("groupId".into(), json!(p.id));
        fields.insert("groupName".into(), json!(p.name));
    }
    let drop_name = variants.without_cluster_name && r.service == "Backup";
    if let Some(c) = cluster
        && !drop_name
    {
        fields.insert("clusterName".into(), json!(c.name));
    }
    fields.insert(
        "cloudProvider".into(),
        json!(if cluster.is_some() { "AWS" } else { "ATLAS" }),
    );
    if r.service == "App Services" {
        fields.insert("stitchAppName".into(), json!("Triggers"));
    }
    if variants.tags {
        fields.insert("tags".into(), tags_map(data, item));
    }
    v
}

/// The pending invoice of org `org`: the current month's items posted before today.
fn pending_invoice(sim: &Simulator, data: &Dataset, org: usize) -> Value {
    let month = sim.current_month();
    let posted = sim.posted_days();
    let chunk = if sim.inner.config.invoices.multi_day {
        3
    } else {
        1
    };
    let items = data.invoice_items(org, month, posted, chunk);
    let billed: i64 = items.iter().map(|i| i.net_cents + i.discount_cents).sum();
    let org_id = data.orgs.get(org).map_or("", |o| o.id.as_str());
    json!({
        "id": invoice_id(org_id, month),
        "orgId": org_id,
        "startDate": date(month, 1),
        "endDate": date(month.plus(1), 1),
        "statusName": "PENDING",
        "amountBilledCents": billed,
        "lineItems": items.iter().map(|i| pending_item(sim, data, month, i)).collect::<Vec<_>>(),
    })
}

/// `GET /api/atlas/v2/orgs/{orgId}/invoices/pending`.
pub(super) async fn pending(
    State(sim): State<Simulator>,
    Path(org_id): Path<String>,
    parts: Parts,
) -> Answer {
    sim.admit(
        SimEndpoint::PendingInvoices,
        Some(&org_id),
        &parts,
        &[JSON_TYPE],
    )
    .await?;
    let data = sim.dataset();
    let org = find_org(&data, &org_id)?;
    let mut invoice = pending_invoice(&sim, &data, org);
    if sim.inner.config.invoices.linked_orgs && org == 0 {
        let linked: Vec<Value> = (1..data.orgs.len())
            .map(|o| pending_invoice(&sim, &data, o))
            .collect();
        if let Some(fields) = invoice.as_object_mut() {
            fields.insert("linkedInvoices".into(), Value::Array(linked));
        }
    }
    let body = match sim.inner.config.invoices.shape {
        InvoiceShape::Paginated => json!({"links": [], "results": [invoice], "totalCount": 1}),
        InvoiceShape::Single => invoice,
    };
    Ok(atlas_json(StatusCode::OK, body.to_string()))
}

/// The closed months of the data set, newest first.
fn closed_months(sim: &Simulator) -> Vec<Month> {
    let current = sim.current_month();
    (1..i64::from(sim.inner.config.months))
        .map(|n| current.plus(-n))
        .collect()
}

/// `GET /api/atlas/v2/orgs/{orgId}/invoices`: the closed invoices, newest first.
pub(super) async fn list(
    State(sim): State<Simulator>,
    Path(org_id): Path<String>,
    parts: Parts,
) -> Answer {
    sim.admit(SimEndpoint::Invoices, Some(&org_id), &parts, &[JSON_TYPE])
        .await?;
    let data = sim.dataset();
    let org = find_org(&data, &org_id)?;
    let params = query_params(&parts.uri);
    let (page_num, per_page) = paging(&params, sim.inner.config.max_page_size)?;
    let from = query_param(&params, "fromDate").and_then(Month::parse_date);
    let items: Vec<Value> = closed_months(&sim)
        .into_iter()
        .filter(|m| from.is_none_or(|f| *m >= f))
        .map(|m| {
            let billed: i64 = data
                .invoice_items(org, m, m.days(), 1)
                .iter()
                .map(|i| i.net_cents + i.discount_cents)
                .sum();
            json!({
                "id": invoice_id(&org_id, m),
                "orgId": org_id,
                "startDate": date(m, 1),
                "endDate": date(m.plus(1), 1),
                "statusName": if m == sim.current_month().plus(-1) { "CLOSED" } else { "PAID" },
                "amountBilledCents": billed,
            })
        })
        .collect();
    Ok(page(&parts.headers, &parts.uri, page_num, per_page, items))
}

/// `GET /api/atlas/v2/orgs/{orgId}/invoices/{invoiceId}/lineItems:search`.
pub(super) async fn line_items(
    State(sim): State<Simulator>,
    Path((org_id, invoice)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Answer {
    sim.admit(
        SimEndpoint::LineItems,
        Some(&org_id),
        &parts,
        &[LINE_ITEMS_TYPE],
    )
    .await?;
    require_body_type(&parts, LINE_ITEMS_TYPE)?;
    if !serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object()) {
        return Err(atlas_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "The request body must be a JSON object (empty for every line item).",
        )
        .into());
    }
    let data = sim.dataset();
    let org = find_org(&data, &org_id)?;
    let Some(month) = closed_months(&sim)
        .into_iter()
        .find(|m| invoice_id(&org_id, *m) == invoice)
    else {
        return Err(not_found(
            "INVOICE_NOT_FOUND",
            &invoice,
            format!("Cannot find invoice {invoice}."),
        ));
    };
    let (page_num, per_page) = paging(&query_params(&parts.uri), sim.inner.config.max_page_size)?;
    let items: Vec<Value> = data
        .invoice_items(org, month, month.days(), 1)
        .iter()
        .map(|i| {
            let mut v = json!({
                "usageDate": date(month, i.day),
                "billDate": date_after(month, i.day, 1),
                "description": closed_description(&sim, &data, month, i),
                "totalPriceCents": i.net_cents,
                "quantity": Value::Number(nanos_text(i.quantity_nanos).parse().unwrap_or(0.into())),
                "unitPriceDollars": Value::Number(micros_text(i.price_micros).parse().unwrap_or(0.into())),
            });
            if let (Some(fields), Some(r)) = (v.as_object_mut(), data.record(i)) {
                let (project, cluster) = data.place(r);
                if let Some(p) = project {
                    fields.insert("groupId".into(), json!(p.id));
                }
                if let Some(c) = cluster {
                    fields.insert("clusterName".into(), json!(c.name));
                }
                fields.insert(
                    "cloudProvider".into(),
                    json!(if cluster.is_some() { "AWS" } else { "ATLAS" }),
                );
            }
            v
        })
        .collect();
    Ok(page(&parts.headers, &parts.uri, page_num, per_page, items))
}

#[cfg(test)]
mod tests {
    use super::sku_name;

    /// The `name` variant's descriptions carry no SKU code: `ATLAS_` dropped, words
    /// spaced, long ones capitalised, short ones (`AWS`, `M30`) kept.
    #[test]
    fn a_sku_name_is_readable_and_carries_no_sku_code() {
        assert_eq!(sku_name("ATLAS_AWS_INSTANCE_M30"), "AWS Instance M30");
        assert_eq!(
            sku_name("ATLAS_AWS_DATA_TRANSFER_DIFFERENT_REGION"),
            "AWS Data Transfer Different Region"
        );
        assert_eq!(sku_name("CREDIT"), "Credit");
        for sku in [
            "ATLAS_AWS_INSTANCE_M30",
            "CREDIT",
            "ATLAS_SUPPORT_DEVELOPER",
        ] {
            assert!(!sku_name(sku).contains(sku), "{sku}");
        }
    }
}
