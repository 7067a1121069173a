//! A create request's body: its validation into a [`Filter`], as Atlas documents the rules,
//! and the result [`Row`]s the filter selects from the data, summed by its grouping.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;

use super::is_object_id;
use super::respond::{Rejected, atlas_error, field_error};
use crate::month::Month;
use crate::simulator::data::{Dataset, GroupBy};

/// Months of data Atlas keeps (and accepts queries for).
const HISTORY_MONTHS: i64 = 18;

/// One result row: the group key and the summed amount.
pub(super) struct Row {
    pub(super) month: Month,
    pub(super) project: Option<usize>,
    pub(super) cluster: Option<usize>,
    /// Shared by every row of the same service: a query keeps its rows until it expires, and
    /// a string of its own in each of 1,000,000 rows would double their size.
    pub(super) service: Option<Arc<str>>,
    pub(super) cents: i64,
}

/// The validated body of a create request.
pub(super) struct Filter {
    /// `startDate`: the first month.
    pub(super) start: Month,
    /// `endDate`: the month after the last.
    pub(super) end: Month,
    pub(super) group_by: GroupBy,
    include_partial: bool,
    organizations: Vec<String>,
    projects: Vec<String>,
    clusters: Vec<String>,
    services: Vec<String>,
}

/// `YYYY-MM-01` exactly.
fn parse_first_of_month(s: &str) -> Option<Month> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) {
        return None;
    }
    if &s[8..10] != "01" {
        return None;
    }
    Month::parse_date(s)
}

/// The create body, validated against the documented rules and `current` (the last month
/// with data); the first rule broken is answered as Atlas does.
pub(super) fn parse_filter(body: &[u8], current: Month) -> Result<Filter, Rejected> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        atlas_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            format!("Malformed JSON body: {e}"),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err(Rejected::from(atlas_error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "The body must be a JSON object.",
        )));
    };
    let date = |field: &str| -> Result<Month, Rejected> {
        match obj.get(field) {
            None | Some(Value::Null) => Err(field_error(
                "VALIDATION_ERROR",
                field,
                format!("{field} is required."),
            )),
            Some(v) => v.as_str().and_then(parse_first_of_month).ok_or_else(|| {
                field_error(
                    "INVALID_DATE_FORMAT",
                    field,
                    format!("{field} must be a date YYYY-MM-DD on the first of a month, got {v}."),
                )
            }),
        }
    };
    let start = date("startDate")?;
    let end = date("endDate")?;
    if start >= end {
        return Err(field_error(
            "START_DATE_AFTER_END_DATE",
            "startDate",
            format!(
                "startDate {} must be before endDate {}.",
                start.first_day(),
                end.first_day()
            ),
        ));
    }
    let earliest = current.plus(1 - HISTORY_MONTHS);
    let latest_end = current.plus(1);
    if start < earliest || end > latest_end {
        return Err(field_error(
            "INVALID_DATE_RANGE",
            "startDate",
            format!(
                "The date range must lie within {} and {} (the past {HISTORY_MONTHS} months).",
                earliest.first_day(),
                latest_end.first_day()
            ),
        ));
    }
    // No groupBy (or an empty one, as the opencost plugin sent): one row per service and
    // month, as the one real answer in public code shows.
    let group_by = match obj.get("groupBy") {
        None | Some(Value::Null) => GroupBy::Services,
        Some(Value::String(v)) if v.is_empty() => GroupBy::Services,
        Some(v) => v.as_str().and_then(GroupBy::parse).ok_or_else(|| {
            field_error(
                "INVALID_ENUM_VALUE",
                "groupBy",
                format!("groupBy {v} is not one of organizations, projects, clusters, services."),
            )
        })?,
    };
    let include_partial = match obj.get("includePartialMatches") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(field_error(
                "VALIDATION_ERROR",
                "includePartialMatches",
                format!("includePartialMatches must be a boolean, got {v}."),
            ));
        }
    };
    let list = |field: &str, ids: bool| -> Result<Vec<String>, Rejected> {
        let bad = |detail: String| field_error("VALIDATION_ERROR", field, detail);
        match obj.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item.as_str() {
                    Some(s) if !ids || is_object_id(s) => Ok(s.to_string()),
                    _ => Err(bad(format!(
                        "{field} must hold {}, got {item}.",
                        if ids { "24-hex ids" } else { "strings" }
                    ))),
                })
                .collect(),
            Some(v) => Err(bad(format!("{field} must be an array, got {v}."))),
        }
    };
    let filter = Filter {
        start,
        end,
        group_by,
        include_partial,
        organizations: list("organizations", true)?,
        projects: list("projects", true)?,
        clusters: list("clusters", true)?,
        services: list("services", false)?,
    };
    // "At least one filter value needs to be provided for a dimension to be used." No groupBy
    // (or "") is per service and needs no filter.
    let explicit = obj
        .get("groupBy")
        .and_then(Value::as_str)
        .is_some_and(|g| !g.is_empty());
    let needed = match group_by {
        GroupBy::Services if explicit => Some(("services", &filter.services, "service")),
        GroupBy::Services => None,
        GroupBy::Organizations => Some(("organizations", &filter.organizations, "organization id")),
        GroupBy::Projects => Some(("projects", &filter.projects, "project id")),
        GroupBy::Clusters => Some(("clusters", &filter.clusters, "cluster unique id")),
    };
    if let Some((field, values, what)) = needed
        && values.is_empty()
    {
        return Err(field_error(
            "VALIDATION_ERROR",
            field,
            format!("Grouping by {field} needs at least one {what} in {field}."),
        ));
    }
    Ok(filter)
}

/// (month, project, cluster, service): ordered so results come month by month.
type GroupKey<'a> = (Month, Option<usize>, Option<usize>, Option<&'a str>);

/// Sums the matching records of `org` by the group key.
pub(super) fn compute(data: &Dataset, org: usize, f: &Filter, duplicate: bool) -> Vec<Row> {
    let Some(org_rec) = data.orgs.get(org) else {
        return Vec::new();
    };
    if !f.organizations.is_empty() && !f.organizations.contains(&org_rec.id) {
        return Vec::new();
    }
    let projects: HashSet<usize> = f
        .projects
        .iter()
        .filter_map(|id| data.project_by_id(id))
        .filter(|(o, _)| *o == org)
        .map(|(_, p)| p)
        .collect();
    let clusters: HashSet<(usize, usize)> = f
        .clusters
        .iter()
        .filter_map(|id| data.cluster_by_id(id))
        .filter(|(o, _, _)| *o == org)
        .map(|(_, p, c)| (p, c))
        .collect();
    let services: HashSet<&str> = f.services.iter().map(String::as_str).collect();
    let mut groups: BTreeMap<GroupKey<'_>, i64> = BTreeMap::new();
    for r in data.org_usage(org) {
        if r.month < f.start || r.month >= f.end {
            continue;
        }
        if !services.is_empty() && !services.contains(r.service.as_str()) {
            continue;
        }
        if !f.projects.is_empty() {
            match r.project {
                Some(p) if !projects.contains(&p) => continue,
                None if !f.include_partial => continue,
                _ => {}
            }
        }
        if !f.clusters.is_empty() {
            match (r.project, r.cluster) {
                (Some(p), Some(c)) if !clusters.contains(&(p, c)) => continue,
                (_, None) if !f.include_partial => continue,
                _ => {}
            }
        }
        let service = Some(r.service.as_str());
        let key = match f.group_by {
            GroupBy::Organizations => (r.month, None, None, None),
            GroupBy::Services => (r.month, None, None, service),
            GroupBy::Projects => (r.month, r.project, None, service),
            GroupBy::Clusters => (r.month, r.project, r.cluster, service),
        };
        *groups.entry(key).or_insert(0) += r.amount_cents;
    }
    let mut rows = Vec::with_capacity(groups.len() * if duplicate { 2 } else { 1 });
    let mut names: HashMap<&str, Arc<str>> = HashMap::new();
    for ((month, project, cluster, service), cents) in groups {
        let service = service.map(|s| Arc::clone(names.entry(s).or_insert_with(|| Arc::from(s))));
        let row = |cents| Row {
            month,
            project,
            cluster,
            service: service.clone(),
            cents,
        };
        if duplicate {
            let half = cents / 2;
            rows.push(row(half));
            rows.push(row(cents - half));
        } else {
            rows.push(row(cents));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::simulator::SimConfig;

    fn current() -> Month {
        Month::new(2026, 11).expect("month")
    }

    fn parse(body: &Value) -> Result<Filter, Rejected> {
        parse_filter(body.to_string().as_bytes(), current())
    }

    fn accepted(body: &Value) -> Filter {
        parse(body).unwrap_or_else(|_| panic!("refused: {body}"))
    }

    /// The default data set, its current month fixed.
    fn data() -> Dataset {
        let config = SimConfig {
            current_month: Some(current()),
            ..SimConfig::default()
        };
        Dataset::generate(&config, current())
    }

    /// No `groupBy`, a null one or an empty one (as the opencost plugin sent) is per service
    /// and needs no filter.
    #[test]
    fn no_group_by_is_per_service_without_a_filter() {
        for group_by in [None, Some(json!(null)), Some(json!(""))] {
            let mut body = json!({"startDate": "2026-10-01", "endDate": "2026-12-01"});
            if let Some(g) = group_by {
                body["groupBy"] = g;
            }
            let filter = accepted(&body);
            assert_eq!(filter.group_by, GroupBy::Services, "{body}");
            assert_eq!(
                (filter.start, filter.end),
                (current().plus(-1), current().plus(1))
            );
        }
    }

    /// An explicit grouping without a value in its filter is a 400 `VALIDATION_ERROR` naming
    /// that filter, in `parameters` and in `badRequestDetail`.
    #[tokio::test]
    async fn a_grouping_without_its_filter_is_refused_naming_the_filter() {
        for (group_by, field) in [
            ("projects", "projects"),
            ("clusters", "clusters"),
            ("services", "services"),
            ("organizations", "organizations"),
        ] {
            let body = json!({"startDate": "2026-11-01", "endDate": "2026-12-01",
                              "groupBy": group_by});
            let Err(refusal) = parse(&body) else {
                panic!("accepted: {body}");
            };
            let (status, v) = refusal.status_and_json().await;
            assert_eq!(
                (status, v["errorCode"].as_str()),
                (400, Some("VALIDATION_ERROR"))
            );
            assert_eq!(v["parameters"], json!([field]));
            assert_eq!(v["badRequestDetail"]["fields"][0]["field"], field);
        }
    }

    /// Dates must be the first of a month, in order, within the 18 months Atlas keeps (the end
    /// at most next month's first day); each broken rule has its own error code.
    #[tokio::test]
    async fn dates_are_checked_for_shape_order_and_range() {
        for (start, end, code) in [
            ("2026-11-02", "2026-12-01", "INVALID_DATE_FORMAT"),
            ("2026-11-01T00:00:00Z", "2026-12-01", "INVALID_DATE_FORMAT"),
            ("2026-12-01", "2026-11-01", "START_DATE_AFTER_END_DATE"),
            ("2025-05-01", "2026-12-01", "INVALID_DATE_RANGE"),
            ("2026-11-01", "2027-01-01", "INVALID_DATE_RANGE"),
        ] {
            let body = json!({"startDate": start, "endDate": end});
            let Err(refusal) = parse(&body) else {
                panic!("accepted: {body}");
            };
            let (status, v) = refusal.status_and_json().await;
            assert_eq!(
                (status, v["errorCode"].as_str()),
                (400, Some(code)),
                "{body}"
            );
        }
        let earliest = json!({"startDate": "2025-06-01", "endDate": "2026-12-01"});
        assert_eq!(accepted(&earliest).start, current().plus(-17));
    }

    /// Grouped by projects, the org-level charges count only with `includePartialMatches`:
    /// without it every row has a project and the sum is the grouped total, with it the sum is
    /// the org's whole total.
    #[test]
    fn partial_matches_decide_whether_org_level_charges_count() {
        let data = data();
        let org = &data.orgs[0];
        let ids: Vec<&str> = org.projects.iter().map(|p| p.id.as_str()).collect();
        let (start, end) = (current().plus(-2), current().plus(1));
        let mut body = json!({"startDate": start.first_day(), "endDate": end.first_day(),
                              "groupBy": "projects", "projects": ids});
        let strict = compute(&data, 0, &accepted(&body), false);
        assert!(
            strict
                .iter()
                .all(|r| r.project.is_some() && r.cluster.is_none())
        );
        let grouped = data.total_cents_grouped(&org.id, start, end, GroupBy::Projects, false);
        assert_eq!(strict.iter().map(|r| r.cents).sum::<i64>(), grouped);
        body["includePartialMatches"] = json!(true);
        let partial = compute(&data, 0, &accepted(&body), false);
        assert!(partial.iter().any(|r| r.project.is_none()));
        let total = data.total_cents(&org.id, start, end);
        assert_eq!(partial.iter().map(|r| r.cents).sum::<i64>(), total);
        assert!(total != grouped);
    }

    /// With duplicated rows each sum comes as two rows with the same key whose amounts add up
    /// to it.
    #[test]
    fn duplicated_rows_are_two_halves_of_each_sum() {
        let data = data();
        let filter = accepted(&json!({"startDate": "2026-11-01", "endDate": "2026-12-01"}));
        let single = compute(&data, 0, &filter, false);
        let double = compute(&data, 0, &filter, true);
        assert!(!single.is_empty());
        assert_eq!(double.len(), 2 * single.len());
        for (row, halves) in single.iter().zip(double.chunks(2)) {
            assert_eq!(halves[0].cents + halves[1].cents, row.cents);
            assert!(
                halves
                    .iter()
                    .all(|h| (h.month, &h.service) == (row.month, &row.service))
            );
        }
    }

    /// The rows of one service hold one shared copy of its name, not one string each: a
    /// query keeps its rows (1,000,000 at `simulate --series 1000000` in one org) until it
    /// expires.
    #[test]
    fn rows_of_one_service_share_one_copy_of_its_name() {
        let data = data();
        let filter = accepted(&json!({"startDate": "2025-06-01", "endDate": "2026-12-01"}));
        let rows = compute(&data, 0, &filter, false);
        let clusters: Vec<&Arc<str>> = rows
            .iter()
            .filter_map(|r| r.service.as_ref())
            .filter(|s| &***s == "Clusters")
            .collect();
        assert!(clusters.len() > 1, "Clusters is billed every month");
        assert!(clusters.iter().all(|s| Arc::ptr_eq(s, clusters[0])));
        let storage = rows
            .iter()
            .filter_map(|r| r.service.as_ref())
            .find(|s| &***s == "Storage")
            .expect("Storage is billed");
        assert!(!Arc::ptr_eq(storage, clusters[0]));
    }

    /// An `organizations` filter that leaves out the org, or an org index out of range, gives
    /// no rows.
    #[test]
    fn another_orgs_filter_or_an_unknown_org_gives_no_rows() {
        let data = data();
        let mut body = json!({"startDate": "2026-11-01", "endDate": "2026-12-01",
                              "organizations": [data.orgs[1].id]});
        assert!(compute(&data, 0, &accepted(&body), false).is_empty());
        assert!(!compute(&data, 1, &accepted(&body), false).is_empty());
        body["organizations"] = json!([]);
        assert!(compute(&data, 99, &accepted(&body), false).is_empty());
    }
}
