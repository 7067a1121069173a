//! The invoice endpoints: items that add up to the Cost Explorer records, the shapes and
//! variants, the closed invoices and their paginated line items, and the media types.

use super::*;

use crate::simulator::api::{LINE_ITEMS_TYPE, invoice_id};

fn invoices(variants: InvoiceVariants) -> SimConfig {
    SimConfig {
        months: 3,
        invoices: variants,
        ..config()
    }
}

fn pending_path(org: &str) -> String {
    format!("/api/atlas/v2/orgs/{org}/invoices/pending")
}

/// Per record (so per cluster, service and month), the items of every month add up to the
/// record's cents, in one-day and three-day chunks, the whole month posted or a part.
#[test]
fn invoice_items_add_up_to_the_records_to_the_cent() {
    let data = Dataset::generate(&invoices(InvoiceVariants::default()), current());
    for month in [current(), current().plus(-1)] {
        for (posted, chunk) in [(month.days(), 1), (11, 1), (11, 3), (1, 3)] {
            let items = data.invoice_items(0, month, posted, chunk);
            let mut by_record: HashMap<usize, i64> = HashMap::new();
            for i in &items {
                *by_record.entry(i.record).or_insert(0) += i.net_cents;
                assert!(i.day >= 1 && i.day + i.days - 1 <= posted.max(1));
            }
            for (n, r) in data.usage.iter().enumerate() {
                if r.org == 0 && r.month == month {
                    assert_eq!(by_record.get(&n).copied().unwrap_or(0), r.amount_cents);
                }
            }
        }
    }
}

/// The pending answer is the spec's results page by default and one invoice object in the
/// `Single` variant, with the same items; in `linked_orgs` the first org's invoice holds the
/// others' in `linkedInvoices`, each with its own `orgId`.
#[tokio::test]
async fn pending_invoices_come_in_each_shape() {
    let s = serve(invoices(InvoiceVariants {
        linked_orgs: true,
        ..InvoiceVariants::default()
    }))
    .await;
    let org = &s.data.orgs[0].id;
    let (status, page) = s.get(&pending_path(org), JSON_TYPE).await;
    assert_eq!(status, StatusCode::OK);
    let invoice = &page["results"][0];
    assert_eq!(invoice["orgId"], org.as_str());
    assert_eq!(invoice["statusName"], "PENDING");
    let linked = invoice["linkedInvoices"].as_array().expect("linked");
    assert_eq!(linked[0]["orgId"], s.data.orgs[1].id.as_str());
    let single = serve(invoices(InvoiceVariants {
        shape: InvoiceShape::Single,
        ..InvoiceVariants::default()
    }))
    .await;
    let (_, one) = single.get(&pending_path(org), JSON_TYPE).await;
    assert!(one.get("results").is_none());
    assert_eq!(one["lineItems"], invoice["lineItems"]);
}

/// `tags` is the spec's map from a key to a list of values; without the variant there is
/// none; `without_cluster_name` drops `clusterName` from `Backup` items only.
#[tokio::test]
async fn item_variants_shape_tags_and_cluster_names() {
    let s = serve(invoices(InvoiceVariants {
        tags: true,
        without_cluster_name: true,
        ..InvoiceVariants::default()
    }))
    .await;
    let (_, page) = s.get(&pending_path(&s.data.orgs[0].id), JSON_TYPE).await;
    let items = page["results"][0]["lineItems"].as_array().expect("items");
    let tagged = items
        .iter()
        .find(|i| i["tags"].as_object().is_some_and(|t| !t.is_empty()))
        .expect("a tagged item");
    assert!(
        tagged["tags"]
            .as_object()
            .expect("map")
            .values()
            .all(Value::is_array)
    );
    let backup = items
        .iter()
        .find(|i| i["sku"] == "ATLAS_AWS_BACKUP_SNAPSHOT_STORAGE")
        .expect("a backup item");
    assert!(backup.get("clusterName").is_none());
    assert!(
        items
            .iter()
            .any(|i| i["sku"] == "ATLAS_AWS_INSTANCE_M30" && i["clusterName"].is_string())
    );
}

/// Closed invoices are listed newest first, `fromDate` honoured; their line items come
/// page by page with the 2024-08-05 media type and a JSON body, and add up to the month.
#[tokio::test]
async fn closed_invoice_items_are_paginated_and_add_up() {
    let mut cfg = invoices(InvoiceVariants::default());
    cfg.max_page_size = 50;
    let s = serve(cfg).await;
    let org = &s.data.orgs[0].id;
    let previous = current().plus(-1);
    let (status, list) = s
        .get(
            &format!(
                "/api/atlas/v2/orgs/{org}/invoices?fromDate={}",
                previous.first_day()
            ),
            JSON_TYPE,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["results"].as_array().expect("list").len(), 1);
    assert_eq!(list["results"][0]["id"], invoice_id(org, previous).as_str());
    let mut total = 0;
    let mut page = 1;
    loop {
        let resp = client()
            .get(format!(
                "{}/api/atlas/v2/orgs/{org}/invoices/{}/lineItems:search?pageNum={page}&itemsPerPage=500",
                s.base,
                invoice_id(org, previous)
            ))
            .bearer_auth(&s.token)
            .header("Accept", LINE_ITEMS_TYPE)
            .header("Content-Type", LINE_ITEMS_TYPE)
            .body("{}")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        let v = json_of(resp).await;
        let results = v["results"].as_array().expect("results");
        assert!(results.len() <= 50);
        total += results
            .iter()
            .map(|i| i["totalPriceCents"].as_i64().expect("cents"))
            .sum::<i64>();
        if results.len() < 50 {
            break;
        }
        page += 1;
    }
    assert!(page > 1, "more than one page");
    assert_eq!(total, s.data.total_cents(org, previous, current()));
}

/// `lineItems:search` declares only 2024-08-05 and needs a JSON body: another version is
/// 406, no body 400, another body type 415, an unknown invoice 404.
#[tokio::test]
async fn line_items_refuse_what_the_spec_does_not_declare() {
    let s = serve(invoices(InvoiceVariants::default())).await;
    let org = &s.data.orgs[0].id;
    let path = |id: &str| {
        format!(
            "{}/api/atlas/v2/orgs/{org}/invoices/{id}/lineItems:search",
            s.base
        )
    };
    let id = invoice_id(org, current().plus(-1));
    let send = |url: String, accept: &'static str, content: &'static str, body: &'static str| {
        client()
            .get(url)
            .bearer_auth(&s.token)
            .header("Accept", accept)
            .header("Content-Type", content)
            .body(body)
            .send()
    };
    let r = send(path(&id), JSON_TYPE, JSON_TYPE, "{}")
        .await
        .expect("send");
    assert_eq!(error_code(r).await.0, StatusCode::NOT_ACCEPTABLE);
    let r = send(path(&id), LINE_ITEMS_TYPE, LINE_ITEMS_TYPE, "")
        .await
        .expect("send");
    assert_eq!(
        error_code(r).await,
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR".to_owned())
    );
    let r = send(path(&id), LINE_ITEMS_TYPE, JSON_TYPE, "{}")
        .await
        .expect("send");
    assert_eq!(error_code(r).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = send(
        path("0123456789abcdef01234567"),
        LINE_ITEMS_TYPE,
        LINE_ITEMS_TYPE,
        "{}",
    )
    .await
    .expect("send");
    assert_eq!(error_code(r).await.0, StatusCode::NOT_FOUND);
}
