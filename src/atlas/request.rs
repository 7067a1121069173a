//! Sending one API request: its credentials, its rate gate, the body size cap, the
//! self-metrics of the call, the mapping of error statuses, and retries with backoff.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use tokio::time::Instant;

use super::auth::Challenge;
use super::error::error_detail;
use super::gate::{RateGate, backoff, rate_limit_remaining, retry_after};
use super::session::{AuthState, FRESH_TOKEN_AGE};
use super::{AtlasClient, AtlasError, JSON_MEDIA_TYPE};
use crate::model::Endpoint;

/// Longest wait between two polls, and between two tries of a request.
pub(super) const MAX_POLL_DELAY: Duration = Duration::from_secs(30);
/// Retries of one request (create, discovery page, poll error) before giving up.
pub(super) const MAX_RETRIES: u32 = 4;

/// An HTTP answer whose body was read in full (within the cap).
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl AtlasClient {
    /// Sends one request and reads its body within the size cap, recording metrics.
    pub(super) async fn execute(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<Reply, AtlasError> {
        let started = std::time::Instant::now();
        let result = self.execute_inner(endpoint, req).await;
        let code = match &result {
            Ok(r) => r.status.to_string(),
            Err(AtlasError::Timeout { .. }) => "timeout".to_owned(),
            Err(AtlasError::TooLarge { .. }) => "too_large".to_owned(),
            Err(_) => "error".to_owned(),
        };
        self.metrics
            .count_request(endpoint, code, started.elapsed());
        if let Ok(reply) = &result
            && let Some(remaining) = rate_limit_remaining(&reply.headers)
        {
            self.metrics
                .set_rate_limit_remaining(&self.org_id, endpoint, remaining);
        }
        result
    }

    async fn execute_inner(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<Reply, AtlasError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                AtlasError::Timeout { endpoint }
            } else {
                let incomplete = !e.is_connect();
                let e = e.without_url();
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message.push_str(": ");
                    message.push_str(&s.to_string());
                    source = s.source();
                }
                AtlasError::Transport {
                    endpoint,
                    incomplete,
                    message,
                }
            }
        };
        let mut resp = req
            .timeout(self.settings.request_timeout)
            .send()
            .await
            .map_err(transport)?;
        let limit = self.settings.max_response_bytes;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(AtlasError::TooLarge { endpoint, limit });
        }
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        let mut body = Vec::with_capacity(
            resp.content_length()
                .map_or(8192, |n| usize::try_from(n).unwrap_or(0)),
        );
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(AtlasError::TooLarge { endpoint, limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            headers,
            body: Bytes::from(body),
        })
    }

    /// The error of an answer that is not a success; a 429 defers `gate` (the gate of the
    /// request's endpoint set and scope, and only that one).
    pub(super) fn status_error(
        &self,
        endpoint: Endpoint,
        reply: Reply,
        gate: &RateGate,
    ) -> AtlasError {
        match reply.status {
            429 => {
                let retry_after = retry_after(&reply.headers, SystemTime::now());
                gate.defer(
                    retry_after.unwrap_or(self.settings.poll_interval.max(Duration::from_secs(1))),
                );
                AtlasError::RateLimited {
                    endpoint,
                    retry_after,
                }
            }
            401 => AtlasError::Auth {
                endpoint,
                status: 401,
                detail: error_detail(&reply.body),
            },
            403 => AtlasError::Forbidden {
                endpoint,
                detail: error_detail(&reply.body),
            },
            // Requests go to the configured base URL only: a redirect is not followed, and
            // it is no success either.
            status @ 300..=399 => AtlasError::Status {
                endpoint,
                status,
                detail:
                    "a redirect, not followed: the exporter talks to the configured base URL only"
                        .to_owned(),
            },
            status => AtlasError::Status {
                endpoint,
                status,
                detail: error_detail(&reply.body),
            },
        }
    }

    /// Sends an authenticated API request: renews an OAuth token once on 401 (unless a fresh
    /// token was refused: a missing role), answers Digest challenges (a fresh challenge after
    /// an answer once more, stale or not), and maps error statuses (3xx included). The gate
    /// comes from the endpoint and, for the per-project listings, the path's group id.
    pub(super) async fn send(
        &self,
        endpoint: Endpoint,
        method: Method,
        path_and_query: &str,
        accept: &'static str,
        body: Option<&[u8]>,
    ) -> Result<Reply, AtlasError> {
        let url = format!("{}{path_and_query}", self.settings.base_url);
        let gate = self.gates.for_request(endpoint, path_and_query);
        let mut renewed = false;
        let mut challenges = 0;
        let mut answers_refused = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(ACCEPT, accept);
            if let Some(b) = body {
                req = req.header(CONTENT_TYPE, JSON_MEDIA_TYPE).body(b.to_vec());
            }
            let mut sent_digest = false;
            let mut sent_token = None;
            if let AuthState::OAuth { .. } = &self.auth {
                let token = self.bearer().await?;
                req = req.bearer_auth(&token);
                sent_token = Some(token);
            } else if let Some(answer) = self
                .auth
                .digest_authorization(method.as_str(), path_and_query)
            {
                req = req.header(AUTHORIZATION, answer);
                sent_digest = true;
            }
            gate.admit(endpoint).await?;
            let reply = self.execute(endpoint, req).await?;
            if reply.status == 401 {
                match &self.auth {
                    // A cached token may have been revoked: renew once, not in a loop.
                    AuthState::OAuth { token, .. } if !renewed => {
                        if self.renew_after_401(token, sent_token.as_ref()).await {
                            renewed = true;
                            continue;
                        }
                        return Err(AtlasError::Auth {
                            endpoint,
                            status: 401,
                            detail: format!(
                                "{} (a token minted less than {} ago was refused: a role or an access-list entry is missing; no new token is minted for it)",
                                error_detail(&reply.body),
                                humantime::format_duration(FRESH_TOKEN_AGE)
                            ),
                        });
                    }
                    AuthState::Digest { .. } if challenges < 3 => {
                        let fresh = reply
                            .headers
                            .get_all(WWW_AUTHENTICATE)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .find_map(Challenge::parse);
                        // Answer a first challenge. A fresh challenge after an answer is
                        // answered once more with its nonce, stale or not: a server that
                        // forgot the nonce (a restart, another node behind the load
                        // balancer) challenges with stale=false. Only a second refusal of
                        // an answer means the credentials are wrong.
                        if let Some(fresh) = fresh
                            && (!sent_digest || answers_refused == 0)
                        {
                            if sent_digest {
                                answers_refused += 1;
                            }
                            self.auth.remember_challenge(fresh);
                            challenges += 1;
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            if reply.status >= 300 {
                return Err(self.status_error(endpoint, reply, &gate));
            }
            return Ok(reply);
        }
    }

    /// Runs `f` again on retryable errors, with backoff and jitter, within `deadline`.
    pub(super) async fn retrying<T, F, Fut>(
        &self,
        deadline: Instant,
        mut f: F,
    ) -> Result<T, AtlasError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AtlasError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e) if e.is_retryable() && attempt < MAX_RETRIES => {
                    let mut delay = backoff(self.settings.poll_interval, attempt, MAX_POLL_DELAY);
                    if let AtlasError::RateLimited {
                        retry_after: Some(wait),
                        ..
                    } = &e
                    {
                        delay = delay.max(*wait);
                    }
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(org_id = %self.org_id, error = %e, attempt, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atlas::tests::{api_key, client};
    use crate::model::Reason;

    fn reply(status: u16, headers: &[(&'static str, &str)], body: &str) -> Reply {
        let mut h = HeaderMap::new();
        for (name, value) in headers {
            h.insert(*name, value.parse().expect("header"));
        }
        Reply {
            status,
            headers: h,
            body: Bytes::from(body.to_owned()),
        }
    }

    /// A 429 on one project's cluster listing defers that listing's gate by its
    /// Retry-After, and the org's queries are not held.
    #[tokio::test(start_paused = true)]
    async fn a_429_defers_the_gate_of_its_request_only() {
        let c = client(&api_key());
        let a = "/api/atlas/v2/groups/aaaaaaaaaaaaaaaaaaaaaaaa/clusters";
        let held = c.gates.for_request(Endpoint::Clusters, a);
        let e = c.status_error(
            Endpoint::Clusters,
            reply(429, &[("retry-after", "600")], ""),
            &held,
        );
        assert!(matches!(
            e,
            AtlasError::RateLimited {
                endpoint: Endpoint::Clusters,
                retry_after: Some(d),
            } if d == Duration::from_secs(600)
        ));
        assert_eq!(
            held.held_until(),
            Some(Instant::now() + Duration::from_secs(600))
        );
        assert!(!c.rate_limited(), "the org's queries are not held");
    }

    /// A 429 without Retry-After still holds its gate, for the poll interval (at least a
    /// second), and says it named no time.
    #[tokio::test(start_paused = true)]
    async fn a_429_without_retry_after_holds_for_the_poll_interval() {
        let c = client(&api_key());
        let cost = c.gates.for_request(Endpoint::Poll, "/p");
        let e = c.status_error(Endpoint::Poll, reply(429, &[], ""), &cost);
        assert!(matches!(
            e,
            AtlasError::RateLimited {
                retry_after: None,
                ..
            }
        ));
        assert_eq!(
            cost.held_until(),
            Some(Instant::now() + Duration::from_secs(1))
        );
        assert!(c.rate_limited());
    }

    /// Error statuses map to their kinds and reasons; a redirect is an error that says it
    /// was not followed.
    #[tokio::test(start_paused = true)]
    async fn error_statuses_map_to_their_reasons() {
        let c = client(&api_key());
        let gate = c.gates.for_request(Endpoint::Projects, "/g");
        let body = r#"{"errorCode":"NOT_ORG_GROUP_CREATOR","detail":"no"}"#;
        let cases = [
            (401, Reason::Auth),
            (403, Reason::Forbidden),
            (302, Reason::ClientError),
            (404, Reason::ClientError),
            (503, Reason::ServerError),
        ];
        for (status, reason) in cases {
            let e = c.status_error(Endpoint::Projects, reply(status, &[], body), &gate);
            assert_eq!(e.reason(), reason, "{status}");
            let text = e.to_string();
            if status == 302 {
                assert!(text.contains("redirect, not followed"), "{text}");
            } else {
                assert!(text.contains("NOT_ORG_GROUP_CREATOR: no"), "{text}");
            }
        }
        assert_eq!(gate.held_until(), None, "only a 429 holds a gate");
    }
}
