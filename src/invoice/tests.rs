use super::*;

const ORG: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const LINKED: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

fn day(y: i64, m: u32, d: u32) -> i64 {
    days_from_civil(y, m, d)
}

fn item(sku: &str, start_day: i64, days: i64, cents: i64) -> LineItem {
    LineItem {
        sku: sku.to_owned(),
        start: start_day * DAY_SECS,
        end: Some((start_day + days) * DAY_SECS),
        quantity_nanos: 24 * NANOS_PER_UNIT,
        unit: Some("HOURS".to_owned()),
        unit_price_micros: Some(540_000),
        total_cents: cents,
        discount_cents: 0,
        tier_lower_nanos: None,
        project_id: Some("cccccccccccccccccccccccc".to_owned()),
        project_name: Some("Production".to_owned()),
        cluster_name: Some("prod-main".to_owned()),
        cloud_provider: Some("AWS".to_owned()),
        tags: Vec::new(),
    }
}

fn invoice(org: Option<&str>, id: &str, items: Vec<LineItem>) -> Invoice {
    Invoice {
        id: Some(id.to_owned()),
        org_id: org.map(str::to_owned),
        items,
        linked: Vec::new(),
    }
}

fn run(pending: &[Invoice], closed: &[LineItem], today: i64) -> InvoiceData {
    aggregate(
        ORG,
        pending,
        closed,
        today,
        &BTreeSet::new(),
        &SkuControls::default(),
    )
}

/// A three-day item is split over its days to the cent (the first days take the
/// remainder), so the last day shows its share and the month to date the whole item.
#[test]
fn a_multi_day_item_is_split_exactly_over_its_days() {
    let start = day(2026, 11, 10);
    let it = item("ATLAS_AWS_INSTANCE_M30", start, 3, 100);
    let shares: Vec<i64> = it.per_day().iter().map(|d| d.1).collect();
    assert_eq!(shares, [34, 33, 33]);
    let data = run(&[invoice(None, "i", vec![it])], &[], start + 3);
    assert_eq!(data.skus[0].month_to_date_micros, 1_000_000);
    assert_eq!(data.skus[0].last_day_micros, 330_000);
    assert_eq!(data.last_day_start, (start + 2) * DAY_SECS);
}

/// An `endDate` at midnight ends the item: it starts no day of its own; one a second
/// past midnight does; a missing or backwards end is one day.
#[test]
fn an_end_date_at_midnight_is_exclusive() {
    let start = day(2026, 11, 10);
    let mut it = item("S", start, 1, 10);
    assert_eq!(it.days(), start..start + 1);
    it.end = Some((start + 1) * DAY_SECS + 1);
    assert_eq!(it.days(), start..start + 2);
    it.end = None;
    assert_eq!(it.days(), start..start + 1);
    it.end = Some(start * DAY_SECS - 5);
    assert_eq!(it.days(), start..start + 1);
}

/// The net is after `discountCents`; credits stay negative; zero-cost items are series of
/// 0; tiers of one SKU add up into one series and its price is the highest tier's.
#[test]
fn discounts_credits_zero_cost_and_tiers() {
    let d = day(2026, 11, 5);
    let mut discounted = item("ATLAS_AWS_INSTANCE_M30", d, 1, 1_000);
    discounted.discount_cents = 150;
    let mut credit = item("CREDIT", d, 1, -2_500);
    credit.cluster_name = None;
    credit.project_id = None;
    credit.project_name = None;
    let zero = item("ATLAS_AWS_DATA_TRANSFER_DIFFERENT_REGION", d, 1, 0);
    let mut tier1 = item("ATLAS_DATA_FEDERATION", d, 1, 500);
    tier1.tier_lower_nanos = Some(0);
    tier1.unit_price_micros = Some(5_000_000);
    let mut tier2 = item("ATLAS_DATA_FEDERATION", d, 1, 200);
    tier2.tier_lower_nanos = Some(100 * NANOS_PER_UNIT);
    tier2.unit_price_micros = Some(2_000_000);
    let data = run(
        &[invoice(
            None,
            "i",
            vec![discounted, credit, zero, tier1, tier2],
        )],
        &[],
        d + 1,
    );
    let mtd = |sku: &str| {
        data.skus
            .iter()
            .find(|s| s.key.sku == sku)
            .map(|s| s.month_to_date_micros)
    };
    assert_eq!(mtd("ATLAS_AWS_INSTANCE_M30"), Some(8_500_000));
    assert_eq!(mtd("CREDIT"), Some(-25_000_000));
    assert_eq!(mtd("ATLAS_AWS_DATA_TRANSFER_DIFFERENT_REGION"), Some(0));
    assert_eq!(mtd("ATLAS_DATA_FEDERATION"), Some(7_000_000));
    let price = data
        .prices
        .iter()
        .find(|p| p.sku == "ATLAS_DATA_FEDERATION")
        .map(|p| p.micros);
    assert_eq!(price, Some(2_000_000));
    assert_eq!(data.org_month_to_date_micros[ORG], -9_500_000);
}

/// On the 1st the last complete day comes from the closed invoice of the previous month,
/// and the new pending invoice's items of the 1st count in the month to date only.
#[test]
fn on_the_first_the_last_day_comes_from_the_closed_invoice() {
    let first = day(2026, 12, 1);
    let pending = [invoice(None, "p", vec![item("S", first, 1, 700)])];
    let mut last = item("S", first - 1, 1, 400);
    last.end = None;
    let older = item("S", first - 2, 1, 999);
    let data = run(&pending, &[last, older], first + 1);
    assert_eq!(
        data.skus[0].last_day_micros, 7_000_000,
        "the 1st is yesterday on the 2nd"
    );
    let data = run(&pending, &[item("S", first - 1, 1, 400)], first);
    assert_eq!(data.last_day_start, (first - 1) * DAY_SECS);
    let s = &data.skus[0];
    assert_eq!(
        (s.month_to_date_micros, s.last_day_micros),
        (7_000_000, 4_000_000)
    );
}

/// A paying org's linked invoices are attributed to the org that incurred them, counted
/// once when listed twice, and left out when that org is configured (its own source
/// reports them).
#[test]
fn linked_invoices_are_attributed_once() {
    let d = day(2026, 11, 5);
    let mut payer = invoice(Some(ORG), "p", vec![item("S", d, 1, 100)]);
    payer.linked = vec![invoice(Some(LINKED), "l", vec![item("S", d, 1, 300)])];
    let again = invoice(Some(LINKED), "l", vec![item("S", d, 1, 300)]);
    let pending = [payer, again];
    let data = run(&pending, &[], d + 1);
    assert_eq!(data.org_month_to_date_micros[ORG], 1_000_000);
    assert_eq!(data.org_month_to_date_micros[LINKED], 3_000_000);
    let skip = BTreeSet::from([LINKED.to_owned()]);
    let own = aggregate(ORG, &pending, &[], d + 1, &skip, &SkuControls::default());
    assert!(own.skus.iter().all(|s| s.key.org_id == ORG));
    assert!(!own.org_month_to_date_micros.contains_key(LINKED));
}

/// The controls fold SKUs into `(other)` per place with exact sums: top N, a minimum,
/// allow and deny, and a series limit that folds into one `(other)` per org.
#[test]
fn controls_fold_skus_with_exact_sums() {
    let d = day(2026, 11, 5);
    let items: Vec<LineItem> = (1..=6)
        .map(|i| item(&format!("SKU_{i}"), d, 1, i * 100))
        .collect();
    let pending = [invoice(None, "i", items)];
    let total =
        |data: &InvoiceData| -> i64 { data.skus.iter().map(|s| s.month_to_date_micros).sum() };
    let with = |c: SkuControls| aggregate(ORG, &pending, &[], d + 1, &BTreeSet::new(), &c);
    let all = with(SkuControls::default());
    assert_eq!(all.skus.len(), 6);
    let top = with(SkuControls {
        top: Some(2),
        ..SkuControls::default()
    });
    let names: Vec<&str> = top.skus.iter().map(|s| s.key.sku.as_str()).collect();
    assert_eq!(names, ["(other)", "SKU_5", "SKU_6"]);
    assert_eq!(top.skus[0].month_to_date_micros, 10_000_000);
    let min = with(SkuControls {
        min_micros: Some(4_000_000),
        ..SkuControls::default()
    });
    assert_eq!(min.skus.len(), 4);
    let re = |s: &str| regex::Regex::new(s).ok();
    let deny = with(SkuControls {
        deny: re("SKU_[12]"),
        allow: re("SKU_.*"),
        ..SkuControls::default()
    });
    assert_eq!(deny.skus.len(), 5);
    let limited = with(SkuControls {
        max_series: Some(3),
        ..SkuControls::default()
    });
    assert_eq!(limited.skus.len(), 3);
    let other = limited
        .skus
        .iter()
        .find(|s| s.key.sku == OTHER)
        .expect("(other)");
    assert_eq!(other.key.cluster_name, None);
    for data in [&top, &min, &deny, &limited] {
        assert_eq!(total(data), total(&all));
    }
}

/// ISO 8601 dates and timestamps read to Unix seconds, offsets applied; anything else
/// is refused.
#[test]
fn timestamps_parse_exactly_or_not_at_all() {
    let d = day(2024, 10, 10) * DAY_SECS;
    assert_eq!(parse_timestamp("2024-10-10T00:00:00Z"), Some(d));
    assert_eq!(parse_timestamp("2024-10-10"), Some(d));
    assert_eq!(
        parse_timestamp("2024-10-10T02:57:56.123Z"),
        Some(d + 10_676)
    );
    assert_eq!(parse_timestamp("2024-10-10T02:00:00+02:00"), Some(d));
    for bad in [
        "",
        "2024-13-01",
        "2024-02-30T00:00:00Z",
        "2024-10-10T25:00:00Z",
        "yesterday",
        "2024-10-10T00:00:00Q",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad}");
    }
    assert_eq!(
        month_of_day(day(2024, 12, 31)),
        Month::new(2024, 12).expect("m")
    );
}

/// A closed item's description maps to a known SKU: equal to it; else the SKU appearing in
/// it as a whole token, the longest of several; a SKU that is only a substring of a token
/// (or of another SKU) does not match, nor does a description naming no known SKU.
#[test]
fn a_description_maps_to_the_known_sku_it_names_as_a_whole_token() {
    let known = [
        "ATLAS_AWS_INSTANCE",
        "ATLAS_AWS_INSTANCE_M30",
        "ATLAS_AWS_INSTANCE_M300",
        "CREDIT",
    ];
    let m = |d: &str| match_sku(d, known.iter().copied());
    assert_eq!(
        m("ATLAS_AWS_INSTANCE_M30"),
        Some("ATLAS_AWS_INSTANCE_M30"),
        "exact"
    );
    assert_eq!(
        m("ATLAS_AWS_INSTANCE_M30 - Cluster0 (2026-11-30)"),
        Some("ATLAS_AWS_INSTANCE_M30"),
        "a token, the longest known SKU among the tokens"
    );
    assert_eq!(
        m("Usage: ATLAS_AWS_INSTANCE, then ATLAS_AWS_INSTANCE_M300."),
        Some("ATLAS_AWS_INSTANCE_M300"),
        "the longest token wins whatever its place"
    );
    assert_eq!(
        m("XATLAS_AWS_INSTANCE_M30 - Cluster0"),
        None,
        "a substring of a token is no match"
    );
    assert_eq!(
        m("CREDITS applied"),
        None,
        "a prefix of a token is no match"
    );
    assert_eq!(m("AWS Instance M30"), None, "a name without the code");
    assert_eq!(m("Credit"), None, "tokens match case-sensitively");
    assert_eq!(
        match_sku("ATLAS_AWS_INSTANCE_M30", []),
        None,
        "nothing known"
    );
}
