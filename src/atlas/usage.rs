//! Usage: one Cost Explorer query, created (`createCostExplorerProcess`), then polled until
//! its result is ready, and created again when Atlas forgets its token.

use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::request::{MAX_POLL_DELAY, MAX_RETRIES};
use super::result::{self, Parsed, ParsedResult};
use super::{AtlasClient, AtlasError, JSON_MEDIA_TYPE};
use crate::metrics::QueryLabels;
use crate::model::{Endpoint, GroupBy, ResultFormat};
use crate::month::Month;

/// CSV results.
pub const CSV_MEDIA_TYPE: &str = "application/vnd.atlas.2023-01-01+csv";
/// Times a query is created again after Atlas forgot its token.
const MAX_CREATES: u32 = 3;
/// A poll answered `{}` (an empty JSON object) is polled again this many times before the
/// answer is judged a decode error.
const MAX_EMPTY_POLLS: u32 = 3;
/// A 404 on a poll this soon after the create may be a node that does not know the new
/// token yet: poll again (at most [`MAX_NOT_FOUND_GRACE`] times) before creating again.
const NOT_FOUND_GRACE: Duration = Duration::from_secs(10);
/// 404s right after a create that get the grace of [`NOT_FOUND_GRACE`].
const MAX_NOT_FOUND_GRACE: u32 = 2;

/// One Cost Explorer query of one org over a range of months: what the client sends, and the
/// name its self-metrics and logs carry.
#[derive(Clone, Copy, Debug)]
pub struct UsageQuery<'a> {
    /// The `query` label value.
    pub name: &'a str,
    /// The `groupBy` dimension.
    pub group_by: GroupBy,
    /// JSON or CSV results.
    pub format: ResultFormat,
    /// The first month read.
    pub start: Month,
    /// The month after the last one read.
    pub end: Month,
    /// Project ids to filter on; empty is no filter.
    pub projects: &'a [String],
    /// Cluster unique ids to filter on; empty is no filter.
    pub clusters: &'a [String],
    /// Service names to filter on; empty is no filter.
    pub services: &'a [String],
    /// Atlas's `includePartialMatches`.
    pub include_partial_matches: bool,
}

/// Statistics of one query execution.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueryStats {
    /// Polls sent.
    pub polls: u64,
    /// Created -> ready, for the last creation.
    pub poll_latency: Duration,
}

/// The body of `createCostExplorerProcess`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    start_date: String,
    end_date: String,
    organizations: [&'a str; 1],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    projects: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    clusters: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    services: &'a [String],
    /// Left out for [`GroupBy::Ungrouped`]: a `groupBy` without its filter risks a 400.
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<&'static str>,
    include_partial_matches: bool,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
}

/// A token from `createCostExplorerProcess`: opaque, but it goes into a URL path, so only
/// URL-safe characters are accepted.
fn is_valid_token(t: &str) -> bool {
    (1..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The token of a `createCostExplorerProcess` answer, checked to be URL-safe.
///
/// # Errors
/// [`AtlasError::Decode`] without a token, [`AtlasError::InvalidId`] for a token that cannot
/// go into a URL path.
pub(super) fn read_create_answer(body: &[u8]) -> Result<String, AtlasError> {
    if !super::is_json_object(body) {
        return Err(AtlasError::Decode {
            endpoint: Endpoint::Create,
            message: format!(
                "create answer is not a JSON object: {}",
                super::result::snippet(body)
            ),
        });
    }
    let token = serde_json::from_slice::<TokenAnswer>(body)
        .map_err(|e| AtlasError::Decode {
            endpoint: Endpoint::Create,
            message: format!("create answer has no token: {e}"),
        })?
        .token;
    if !is_valid_token(&token) {
        return Err(AtlasError::InvalidId(token));
    }
    Ok(token)
}

/// The JSON body that creates `query` for `org_id`.
fn create_body(org_id: &str, query: &UsageQuery<'_>) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&CreateBody {
        start_date: query.start.first_day(),
        end_date: query.end.first_day(),
        organizations: [org_id],
        projects: query.projects,
        clusters: query.clusters,
        services: query.services,
        group_by: query.group_by.atlas_value(),
        include_partial_matches: query.include_partial_matches,
    })
}

/// What the polls of one query carry from one creation to the next.
struct Polling<'q> {
    query: &'q UsageQuery<'q>,
    accept: &'static str,
    csv: bool,
    labels: QueryLabels,
    /// The whole time the query was given, for [`AtlasError::Deadline`].
    budget: Duration,
    deadline: Instant,
    /// Cleared for the rest of the query once Atlas refuses an envelope around CSV.
    envelope: bool,
    stats: QueryStats,
}

/// How the polls of one creation ended, short of an error.
enum Polled {
    Ready(ParsedResult),
    /// Atlas no longer knows the token: create the query again.
    Forgotten,
}

impl AtlasClient {
    /// Runs one Cost Explorer query and returns its parsed result: create it, poll until
    /// ready (every "not ready" form counts), create it again if Atlas forgets the token, all
    /// within `deadline`.
    ///
    /// # Errors
    /// The error that ended the query; [`AtlasError::Deadline`] when it was never ready.
    pub async fn fetch_usage(
        &self,
        query: &UsageQuery<'_>,
        deadline: Instant,
    ) -> Result<(ParsedResult, QueryStats), AtlasError> {
        let body = create_body(&self.org_id, query).map_err(|e| AtlasError::Decode {
            endpoint: Endpoint::Create,
            message: e.to_string(),
        })?;
        let mut polling = Polling {
            query,
            accept: match query.format {
                ResultFormat::Json => JSON_MEDIA_TYPE,
                ResultFormat::Csv => CSV_MEDIA_TYPE,
            },
            csv: query.format == ResultFormat::Csv,
            labels: QueryLabels {
                query: query.name.to_owned(),
                org_id: self.org_id.clone(),
            },
            budget: deadline.saturating_duration_since(Instant::now()),
            deadline,
            envelope: true,
            stats: QueryStats::default(),
        };
        for _ in 0..MAX_CREATES {
            let token = self.create(&body, deadline).await?;
            match self.poll_until_ready(&mut polling, &token).await? {
                Polled::Ready(result) => return Ok((result, polling.stats)),
                Polled::Forgotten => {}
            }
        }
        Err(AtlasError::Status {
            endpoint: Endpoint::Poll,
            status: 404,
            detail: format!("query token expired {MAX_CREATES} times in a row"),
        })
    }

    /// Creates the query (with retries) and returns its token, checked to be URL-safe.
    async fn create(&self, body: &[u8], deadline: Instant) -> Result<String, AtlasError> {
        let create_path = format!(
            "/api/atlas/v2/orgs/{}/billing/costExplorer/usage",
            self.org_id
        );
        let reply = self
            .retrying(deadline, || {
                self.send(
                    Endpoint::Create,
                    Method::POST,
                    &create_path,
                    JSON_MEDIA_TYPE,
                    Some(body),
                )
            })
            .await?;
        read_create_answer(&reply.body)
    }

    /// Polls the query behind `token` until its result is ready, with a doubling delay.
    async fn poll_until_ready(
        &self,
        p: &mut Polling<'_>,
        token: &str,
    ) -> Result<Polled, AtlasError> {
        let created = Instant::now();
        let poll_base = format!(
            "/api/atlas/v2/orgs/{}/billing/costExplorer/usage/{token}",
            self.org_id
        );
        let name = p.query.name;
        let mut delay = self.settings.poll_interval;
        let mut errors = 0;
        let mut empties = 0;
        let mut not_found = 0;
        loop {
            if Instant::now() + delay >= p.deadline {
                return Err(AtlasError::Deadline(p.budget));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL_DELAY);
            p.stats.polls += 1;
            self.metrics.count_poll(&p.labels);
            let poll_path = if p.envelope {
                format!("{poll_base}?envelope=true")
            } else {
                poll_base.clone()
            };
            let reply = match self
                .send(Endpoint::Poll, Method::GET, &poll_path, p.accept, None)
                .await
            {
                Ok(r) => r,
                // The 102 hazard: a poll that times out or whose connection closes before
                // a final answer means "not ready yet".
                Err(AtlasError::Timeout { .. }) => {
                    tracing::debug!(org_id = %self.org_id, query = %name, "poll timed out: not ready");
                    continue;
                }
                Err(AtlasError::Transport {
                    incomplete: true,
                    message,
                    ..
                }) => {
                    tracing::debug!(org_id = %self.org_id, query = %name, %message, "poll connection closed: not ready");
                    continue;
                }
                // Atlas refuses an envelope around CSV: poll without it from now on (the
                // 102 hazard is then covered by timeouts and closed connections).
                Err(AtlasError::Status {
                    status: status @ (400 | 406),
                    detail,
                    ..
                }) if p.csv && p.envelope => {
                    p.envelope = false;
                    tracing::info!(org_id = %self.org_id, query = %name, status, %detail, "Atlas refused envelope=true with CSV; polling without it");
                    continue;
                }
                // Right after the create, a node may not know the token yet.
                Err(AtlasError::Status { status: 404, .. })
                    if created.elapsed() < NOT_FOUND_GRACE && not_found < MAX_NOT_FOUND_GRACE =>
                {
                    not_found += 1;
                    tracing::debug!(org_id = %self.org_id, query = %name, "poll right after the create answered 404; polling again");
                    continue;
                }
                Err(AtlasError::Status {
                    status: 404 | 400,
                    detail,
                    ..
                }) => {
                    tracing::info!(org_id = %self.org_id, query = %name, %detail, "Atlas forgot the query token; creating the query again");
                    return Ok(Polled::Forgotten);
                }
                // Polled again once the Retry-After is over, if that is within the deadline.
                Err(
                    e @ AtlasError::RateLimited {
                        retry_after: Some(wait),
                        ..
                    },
                ) if errors < MAX_RETRIES => {
                    if Instant::now() + wait >= p.deadline {
                        return Err(e);
                    }
                    errors += 1;
                    tracing::debug!(org_id = %self.org_id, query = %name, error = %e, "poll rate limited; polling again after Retry-After");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) if e.is_retryable() && errors < MAX_RETRIES => {
                    errors += 1;
                    tracing::debug!(org_id = %self.org_id, query = %name, error = %e, "poll failed; polling again");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if reply.status == 102 || reply.status == 202 {
                continue;
            }
            let csv = p.csv;
            let parsed = tokio::task::spawn_blocking(move || result::parse_body(&reply.body, csv))
                .await
                .map_err(|e| AtlasError::Decode {
                    endpoint: Endpoint::Poll,
                    message: format!("parser stopped: {e}"),
                })?;
            match parsed {
                Ok(Parsed::NotReady) => continue,
                // `{}`: the spec's only JSON example, and no result yet; judged only if it
                // stays so.
                Ok(Parsed::Empty) if empties < MAX_EMPTY_POLLS => {
                    empties += 1;
                    tracing::debug!(org_id = %self.org_id, query = %name, "poll answered {{}}; polling again");
                    continue;
                }
                Ok(Parsed::Empty) => {
                    return Err(AtlasError::Decode {
                        endpoint: Endpoint::Poll,
                        message: format!(
                            "a JSON object with no result in it ({{}}), {} polls in a row",
                            MAX_EMPTY_POLLS + 1
                        ),
                    });
                }
                Ok(Parsed::Ready(result)) => {
                    p.stats.poll_latency = created.elapsed();
                    self.metrics
                        .observe_poll_latency(&p.labels, p.stats.poll_latency);
                    return Ok(Polled::Ready(result));
                }
                Err(e) => {
                    return Err(AtlasError::Decode {
                        endpoint: Endpoint::Poll,
                        message: e.0,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A create answer is an object with a URL-safe token; a JSON array is not one, though
    /// serde's derive would read `["tok"]` by position (found by the `atlas_answers` fuzz
    /// target).
    #[test]
    fn a_create_answer_is_an_object_with_a_token() {
        assert_eq!(
            read_create_answer(br#"{"token":"a1-b_2"}"#).expect("token"),
            "a1-b_2"
        );
        assert!(matches!(
            read_create_answer(br#"["a1b2"]"#),
            Err(AtlasError::Decode { message, .. }) if message.contains("not a JSON object")
        ));
        assert!(matches!(
            read_create_answer(br#"{"token":"../x"}"#),
            Err(AtlasError::InvalidId(_))
        ));
    }

    /// A token goes into a URL path only when it is URL-safe.
    #[test]
    fn tokens_must_be_url_safe() {
        assert!(is_valid_token(
            "4ABBE973862346D40F3AE859D4BE96E0F895764EB14EAB039E7B82F9D638C05C"
        ));
        for bad in ["", "../x", "a/b", "a?b", "a b", "%2e%2e"] {
            assert!(!is_valid_token(bad), "{bad}");
        }
        assert!(!is_valid_token(&"a".repeat(257)));
    }

    fn query<'a>(group_by: GroupBy, projects: &'a [String]) -> UsageQuery<'a> {
        UsageQuery {
            name: "q",
            group_by,
            format: ResultFormat::Json,
            start: Month::new(2026, 10).expect("month"),
            end: Month::new(2026, 12).expect("month"),
            projects,
            clusters: &[],
            services: &[],
            include_partial_matches: false,
        }
    }

    /// An ungrouped query sends no `groupBy` and no empty filter; the range runs from the
    /// first day of its first month to the first day of the month after it.
    #[test]
    fn an_ungrouped_query_sends_no_group_by_and_no_empty_filters() {
        let body = create_body("o", &query(GroupBy::Ungrouped, &[])).expect("body");
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            r#"{"startDate":"2026-10-01","endDate":"2026-12-01","organizations":["o"],"includePartialMatches":false}"#
        );
    }

    /// A grouped query sends its `groupBy` and the ids it filters on.
    #[test]
    fn a_grouped_query_sends_its_dimension_and_ids() {
        let ids = ["aaaaaaaaaaaaaaaaaaaaaaaa".to_owned()];
        let mut q = query(GroupBy::Projects, &ids);
        q.include_partial_matches = true;
        let body: serde_json::Value =
            serde_json::from_slice(&create_body("o", &q).expect("body")).expect("json");
        assert_eq!(body["groupBy"], "projects");
        assert_eq!(body["projects"], serde_json::json!(ids));
        assert_eq!(body["includePartialMatches"], true);
        assert!(body.get("clusters").is_none());
    }
}
