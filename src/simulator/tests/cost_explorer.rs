//! The Cost Explorer endpoints: create and poll, "not ready" forms, JSON rows and their
//! totals, request validation, and injected faults.

use super::*;

/// A query is "not ready" (`{"status":102}` envelope) for `polls_before_ready` polls, then its
/// enveloped result, whose amounts add up to `Dataset::total_cents` exactly.
#[tokio::test]
async fn query_is_not_ready_then_returns_exact_totals() {
    let s = serve(config()).await;
    let org = s.data.orgs[0].id.clone();
    let (start_m, end_m) = (current().plus(-5), current().plus(1));
    let mut body = usage(start_m, end_m);
    body["organizations"] = json!([org]);
    let query = s.create_token(&org, &body).await;
    for _ in 0..2 {
        let resp = s.poll(&org, &query, JSON_TYPE).await.expect("poll");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(json_of(resp).await, json!({"status": 102, "content": null}));
    }
    let resp = s.poll(&org, &query, JSON_TYPE).await.expect("poll");
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json_of(resp).await;
    assert_eq!(v["status"], 200);
    let rows = v["content"]["usageDetails"].as_array().expect("rows");
    assert!(!rows.is_empty());
    assert_eq!(sum_cents(rows), s.data.total_cents(&org, start_m, end_m));
    let row = &rows[0];
    assert_eq!(row["organizationId"], org.as_str());
    assert!(row["service"].is_string());
    assert!(row.get("projectId").is_none());
    assert!(row["usageDate"].as_str().expect("date").ends_with("-01"));
    assert_eq!(s.sim.requests(SimEndpoint::Poll), 3);
}

/// Grouping by clusters without partial matches leaves out org- and project-level charges;
/// rows carry project and cluster fields; duplicated rows still add up.
#[tokio::test]
async fn clusters_grouping_matches_grouped_total() {
    let mut cfg = ready_config();
    cfg.duplicate_rows = true;
    cfg.ignore_envelope = true;
    let s = serve(cfg).await;
    let org = &s.data.orgs[1];
    let clusters: Vec<&str> = org.all_clusters().map(|(_, c)| c.id.as_str()).collect();
    let m = current().plus(-1);
    let body = grouped(m, current(), "clusters", json!(clusters));
    let query = s.create_token(&org.id, &body).await;
    let resp = s.poll(&org.id, &query, JSON_TYPE).await.expect("poll");
    let v = json_of(resp).await;
    let rows = v["usageDetails"].as_array().expect("plain result");
    assert_eq!(
        sum_cents(rows),
        s.data
            .total_cents_grouped(&org.id, m, current(), GroupBy::Clusters, false)
    );
    assert!(rows.iter().all(|r| r["clusterId"].is_string()
        && r["clusterName"].is_string()
        && r["projectName"].is_string()));
    assert_eq!(rows[0]["clusterId"], rows[1]["clusterId"]);
    assert_eq!(rows[0]["service"], rows[1]["service"]);
}

/// With an envelope asked for, the CSV text comes as the envelope's JSON string `content`.
#[tokio::test]
async fn csv_in_envelope_is_a_json_string() {
    let s = serve(ready_config()).await;
    let org = s.data.orgs[0].id.clone();
    let query = s
        .create_token(&org, &usage(current(), current().plus(1)))
        .await;
    let resp = s.poll(&org, &query, CSV_TYPE).await.expect("poll");
    let v = json_of(resp).await;
    assert_eq!(v["status"], 200);
    assert!(
        v["content"]
            .as_str()
            .expect("csv string")
            .contains("Billed Date,Invoice Id")
    );
}

/// With `NotReady::Close` a not-ready poll breaks the connection; the client sees an error,
/// and a later poll gets the result.
#[tokio::test]
async fn close_form_breaks_the_connection() {
    let mut cfg = config();
    cfg.polls_before_ready = 1;
    cfg.not_ready = NotReady::Close;
    let s = serve(cfg).await;
    let org = s.data.orgs[0].id.clone();
    let query = s
        .create_token(&org, &usage(current(), current().plus(1)))
        .await;
    let first = match s.poll(&org, &query, JSON_TYPE).await {
        Ok(resp) => resp.text().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(first.is_err(), "connection should break");
    let second = s.poll(&org, &query, JSON_TYPE).await.expect("poll");
    assert_eq!(second.status(), StatusCode::OK);
}

/// Bad org ids, dates not on the 1st, ranges outside 18 months, reversed ranges, unknown
/// groupBy, grouping by projects without ids and a wrong API version are refused with the
/// documented status and error code.
#[tokio::test]
async fn create_validates_requests() {
    let s = serve(config()).await;
    let org = s.data.orgs[0].id.clone();
    let (s_m, e_m) = (current(), current().plus(1));
    let (start, end) = (s_m.first_day(), e_m.first_day());
    let window = usage(s_m, e_m);
    let with = |extra: Value| {
        let mut body = window.clone();
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        body
    };
    let cases = [
        ("not-an-org", window.clone(), 404, "INVALID_ORG_ID"),
        (
            "0123456789abcdef01234567",
            window.clone(),
            404,
            "RESOURCE_NOT_FOUND",
        ),
        (
            org.as_str(),
            json!({"startDate": "2026-11-02", "endDate": end}),
            400,
            "INVALID_DATE_FORMAT",
        ),
        (
            org.as_str(),
            json!({"endDate": end}),
            400,
            "VALIDATION_ERROR",
        ),
        (
            org.as_str(),
            json!({"startDate": end, "endDate": start}),
            400,
            "START_DATE_AFTER_END_DATE",
        ),
        (
            org.as_str(),
            usage(current().plus(-18), e_m),
            400,
            "INVALID_DATE_RANGE",
        ),
        (
            org.as_str(),
            usage(s_m, current().plus(2)),
            400,
            "INVALID_DATE_RANGE",
        ),
        (
            org.as_str(),
            with(json!({"groupBy": "regions"})),
            400,
            "INVALID_ENUM_VALUE",
        ),
        (
            org.as_str(),
            with(json!({"groupBy": "projects"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            org.as_str(),
            with(json!({"groupBy": "clusters", "projects": []})),
            400,
            "VALIDATION_ERROR",
        ),
        // "At least one filter value needs to be provided for a dimension to be used."
        (
            org.as_str(),
            with(json!({"groupBy": "services"})),
            400,
            "VALIDATION_ERROR",
        ),
        (
            org.as_str(),
            with(json!({"groupBy": "organizations"})),
            400,
            "VALIDATION_ERROR",
        ),
    ];
    for (org_id, body, status, code) in cases {
        let got = error_code(s.create(org_id, &body).await).await;
        assert_eq!(
            got,
            (
                StatusCode::from_u16(status).expect("status"),
                code.to_string()
            ),
            "{body}"
        );
    }
    let wrong_version = s
        .create_as(&org, &window, "application/vnd.atlas.2024-08-05+json")
        .await;
    assert_eq!(wrong_version.status(), StatusCode::NOT_ACCEPTABLE);
    let unknown_token = s
        .poll(&org, &"A".repeat(64), JSON_TYPE)
        .await
        .expect("poll");
    assert_eq!(error_code(unknown_token).await.1, "RESOURCE_NOT_FOUND");
}

/// An injected fault answers every request of its endpoint (rate limit headers included)
/// until cleared; other endpoints are unaffected.
#[tokio::test]
async fn faults_apply_until_cleared() {
    let s = serve(config()).await;
    let org = s.data.orgs[0].id.clone();
    let body = usage(current(), current().plus(1));

    s.sim.fail(SimEndpoint::Create, Fault::Status(503));
    let (status, code) = error_code(s.create(&org, &body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNEXPECTED_ERROR")
    );

    s.sim.fail(
        SimEndpoint::Create,
        Fault::RateLimited {
            retry_after: Some(7),
        },
    );
    let resp = s.create(&org, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");
    assert_eq!(error_code(resp).await.1, "RATE_LIMITED");

    s.sim.fail(SimEndpoint::Create, Fault::Html(502));
    let resp = s.create(&org, &body).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(resp.text().await.expect("body").contains("<html>"));

    s.sim.clear_faults();
    let resp = s.create(&org, &body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(s.sim.requests(SimEndpoint::Create), 4);
}

/// Each `RowKeys` variant spells the project and cluster keys of JSON rows its own way
/// (`projectId`..., `groupId`/`clusterUniqueId`..., or unguessable `grp`/`clstr`...); rows of
/// a query without `groupBy` carry `service` and none of those keys.
#[tokio::test]
async fn row_keys_variants_spell_dimension_keys() {
    let every_key: HashSet<&str> = [RowKeys::ProjectId, RowKeys::GroupId, RowKeys::Unknown]
        .iter()
        .flat_map(|k| k.keys())
        .collect();
    for keys in [RowKeys::ProjectId, RowKeys::GroupId, RowKeys::Unknown] {
        let s = serve(SimConfig {
            row_keys: keys,
            ..ready_config()
        })
        .await;
        let org = &s.data.orgs[0];
        let cluster = &org.projects[0].clusters[0];
        let (start, end) = (current(), current().plus(1));
        let body = grouped(start, end, "clusters", json!([cluster.id]));
        let rows = s.query_rows(&org.id, &body).await;
        assert!(!rows.is_empty());
        let [pid, pname, cid, cname] = keys.keys();
        for r in &rows {
            assert_eq!(r[pid], org.projects[0].id.as_str(), "{keys:?}");
            assert_eq!(r[pname], org.projects[0].name.as_str());
            assert_eq!(r[cid], cluster.id.as_str());
            assert_eq!(r[cname], cluster.name.as_str());
            let obj = r.as_object().expect("object");
            let dims = obj
                .keys()
                .filter(|k| every_key.contains(k.as_str()))
                .count();
            assert_eq!(dims, 4, "{keys:?}: only its own spellings");
        }
        let rows = s.query_rows(&org.id, &usage(start, end)).await;
        assert!(rows.iter().all(|r| {
            r["service"].is_string()
                && r.as_object()
                    .expect("object")
                    .keys()
                    .all(|k| !every_key.contains(k.as_str()))
        }));
        assert_eq!(sum_cents(&rows), s.data.total_cents(&org.id, start, end));
    }
}

/// A Flex cluster bills `Clusters` every month; its id works in the `clusters` filter and
/// comes back in grouped-by-clusters rows, adding up to `Dataset::cluster_cents`.
#[tokio::test]
async fn flex_clusters_are_billed_and_grouped_by_clusters() {
    let s = serve(ready_config()).await;
    let org = &s.data.orgs[1];
    let flex = org.projects[2].listed_flex_clusters().next().expect("flex");
    let (start, end) = (current().plus(-17), current().plus(1));
    let body = grouped(start, end, "clusters", json!([flex.id]));
    let rows = s.query_rows(&org.id, &body).await;
    assert_eq!(rows.len(), 18, "one row a month");
    assert!(rows.iter().all(|r| r["clusterId"] == flex.id.as_str()
        && r["clusterName"] == flex.name.as_str()
        && r["service"] == "Clusters"));
    let cents = s.data.cluster_cents(&flex.id, start, end);
    assert!(cents > 0);
    assert_eq!(sum_cents(&rows), cents);
}
