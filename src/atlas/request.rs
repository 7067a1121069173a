//! Sending one API request: its credentials, its rate gate, the body size cap, the
//! self-metrics of the call, the mapping of error statuses, and retries with backoff.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use tokio::time::Instant;

use super::auth::{Challenge, Verdict};
use super::error::error_detail;
use super::gate::{RateGate, backoff, rate_limit_remaining, retry_after};
use super::session::{AuthState, DigestRequest, FRESH_TOKEN_AGE};
use super::{AtlasClient, AtlasError, JSON_MEDIA_TYPE};
use crate::model::Endpoint;

/// Longest wait between two polls, and between two tries of a request.
pub(super) const MAX_POLL_DELAY: Duration = Duration::from_secs(30);
/// Retries of one request (create, discovery page, poll error) before giving up.
pub(super) const MAX_RETRIES: u32 = 4;

/// Challenges one request may get without having sent an answer.
const MAX_UNANSWERED: u32 = 3;

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
    /// token was refused: a missing role), answers Digest challenges (see
    /// [`Self::after_digest_refusal`]), and maps error statuses (3xx included). The gate
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
        let mut digest = DigestRequest::default();
        loop {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(ACCEPT, accept);
            if let Some(b) = body {
                // A JSON body is sent in the version it is answered in (`lineItems:search`
                // declares only 2024-08-05); the Cost Explorer's is 2023-01-01.
                let content_type = if accept.ends_with("+json") {
                    accept
                } else {
                    JSON_MEDIA_TYPE
                };
                req = req.header(CONTENT_TYPE, content_type).body(b.to_vec());
            }
            let mut sent_digest = false;
            let mut sent_token = None;
            if let AuthState::OAuth { .. } = &self.auth {
                let token = self.bearer().await?;
                req = req.bearer_auth(&token);
                sent_token = Some(token);
            } else if let Some(answer) =
                self.auth
                    .digest_authorization(method.as_str(), path_and_query, &mut digest)
            {
                req = req.header(AUTHORIZATION, answer);
                sent_digest = true;
            }
            gate.admit(endpoint).await?;
            let reply = self.execute(endpoint, req).await?;
            if reply.status != 401 {
                // Only a success proves the key: a 429 or 5xx may come from in front of the
                // authentication.
                if sent_digest && (200..300).contains(&reply.status) {
                    self.auth.digest_accepted(&digest);
                }
            } else {
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
                    AuthState::Digest { .. } => {
                        let fresh = reply
                            .headers
                            .get_all(WWW_AUTHENTICATE)
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .find_map(Challenge::parse);
                        // Without a Digest challenge there is nothing to answer: an auth
                        // error below.
                        if let Some(fresh) = fresh {
                            let stale = fresh.stale;
                            self.auth.digest_challenged(&mut digest, fresh, sent_digest);
                            if sent_digest {
                                self.after_digest_refusal(endpoint, &reply, stale, &mut digest)?;
                                continue;
                            }
                            // The challenge to a request without credentials: its nonce is
                            // answered next. Another one takes a request's own nonce being
                            // pushed out by many newer ones while none is shared: rare,
                            // and bounded.
                            digest.unanswered += 1;
                            if digest.unanswered <= MAX_UNANSWERED {
                                continue;
                            }
                        }
                    }
                    AuthState::OAuth { .. } => {}
                }
            }
            if reply.status >= 300 {
                return Err(self.status_error(endpoint, reply, &gate));
            }
            return Ok(reply);
        }
    }

    /// After Atlas refused a Digest answer with a new challenge (`stale` as it said): `Ok` to
    /// answer it, or the error that ends the request, by [`Refusals::refused`]: `stale=true`
    /// is answered again within the bounds, a plain challenge too when these credentials were
    /// accepted lately (the server forgot the nonce), else once only. Ending on a plain
    /// challenge is an auth error that ends the trust in the credentials; ending on
    /// `stale=true` is not about the credentials (`client_error`).
    ///
    /// [`Refusals::refused`]: super::auth::Refusals::refused
    fn after_digest_refusal(
        &self,
        endpoint: Endpoint,
        reply: &Reply,
        stale: bool,
        digest: &mut DigestRequest,
    ) -> Result<(), AtlasError> {
        let accepted_recently = self.auth.digest_accepted_recently();
        let answers = 1 + digest.refusals.stale + digest.refusals.plain;
        let first_answer = digest.answered_nc == 1;
        match digest
            .refusals
            .refused(stale, first_answer, accepted_recently)
        {
            Verdict::AnswerAgain => {
                tracing::debug!(org_id = %self.org_id, %endpoint, stale, answers, "answering a new Digest challenge");
                Ok(())
            }
            Verdict::WrongCredentials => {
                self.auth.digest_credentials_refused();
                Err(AtlasError::Auth {
                    endpoint,
                    status: 401,
                    detail: format!(
                        "{} ({answers} Digest answers refused, the last over a nonce Atlas had just offered{})",
                        error_detail(&reply.body),
                        if accepted_recently {
                            "; the key was accepted before: revoked?"
                        } else {
                            ""
                        }
                    ),
                })
            }
            Verdict::StaleTooOften => Err(AtlasError::Status {
                endpoint,
                status: 401,
                detail: format!(
                    "{} (Atlas called the Digest nonce stale {} times in {answers} answers of one request; stale means the credentials are right)",
                    error_detail(&reply.body),
                    digest.refusals.stale
                ),
            }),
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
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;
    use axum::response::{IntoResponse as _, Response};

    use super::*;
    use crate::atlas::auth::MAX_DIGEST_ANSWERS;
    use crate::atlas::auth::tests::nonce_and_count;
    use crate::atlas::tests::{ORG, api_key, client};
    use crate::metrics::SelfMetrics;
    use crate::model::{Credentials, Reason};

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

    /// How the scripted server answers an Authorization header.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Ok,
        Plain,
        Stale,
        Unavailable,
    }

    /// What the scripted server answers next, and the Authorization headers it saw.
    #[derive(Default)]
    struct Script {
        steps: std::collections::VecDeque<Step>,
        rest: Option<Step>,
        seen: Vec<Option<String>>,
        /// Every challenge offers the nonce `n` (a server with one nonce for all).
        same_nonce: bool,
    }

    /// A server that challenges requests without credentials (`stale=false`) and answers
    /// each Digest answer by its script (the steps in order, then the rest), every
    /// challenge with a new nonce `n<request number>`. It checks no digest: the script is
    /// the test.
    struct Scripted {
        script: Arc<Mutex<Script>>,
        client: AtlasClient,
    }

    /// The scripted server's answer to a request with `authorization`.
    fn scripted_answer(script: &Mutex<Script>, authorization: Option<String>) -> Response {
        let mut s = script.lock().expect("script");
        let step = match authorization {
            None => Step::Plain,
            Some(_) => s.steps.pop_front().or(s.rest).unwrap_or(Step::Ok),
        };
        s.seen.push(authorization);
        let stale = match step {
            Step::Ok => return (StatusCode::OK, "[]").into_response(),
            Step::Unavailable => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
            Step::Plain => false,
            Step::Stale => true,
        };
        let nonce = if s.same_nonce {
            "n".to_owned()
        } else {
            format!("n{}", s.seen.len())
        };
        let challenge = format!(
            r#"Digest realm="MMS Public API", nonce="{nonce}", algorithm=MD5, qop="auth", stale={stale}"#
        );
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            r#"{"errorCode":"USER_UNAUTHORIZED","detail":"no"}"#,
        )
            .into_response();
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, challenge.parse().expect("header value"));
        resp
    }

    impl Scripted {
        async fn start(credentials: &Credentials) -> Scripted {
            let script = Arc::new(Mutex::new(Script::default()));
            let state = script.clone();
            let app = axum::Router::new().fallback(move |headers: HeaderMap| {
                let authorization = headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let answer = scripted_answer(&state, authorization);
                async move { answer }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            tokio::spawn(async move { axum::serve(listener, app).await });
            let mut settings = client(credentials).settings.clone();
            settings.base_url = url;
            settings.requests_per_minute = 60_000;
            let client = AtlasClient::new(
                reqwest::Client::new(),
                settings,
                ORG,
                credentials,
                Arc::new(SelfMetrics::new("1h")),
            )
            .expect("client");
            Scripted { script, client }
        }

        /// From now on: `steps`, then `rest` for ever.
        fn script(&self, steps: &[Step], rest: Step) {
            let mut s = self.script.lock().expect("script");
            s.steps = steps.iter().copied().collect();
            s.rest = Some(rest);
        }

        /// One request through [`AtlasClient::send`]; returns its outcome and the
        /// Authorization headers of the tries it made.
        async fn send(&self) -> (Result<Reply, AtlasError>, Vec<Option<String>>) {
            let before = self.script.lock().expect("script").seen.len();
            let result = self
                .client
                .send(
                    Endpoint::Projects,
                    Method::GET,
                    &format!("/api/atlas/v2/orgs/{ORG}/groups"),
                    JSON_MEDIA_TYPE,
                    None,
                )
                .await;
            let seen = self.script.lock().expect("script").seen[before..].to_vec();
            (result, seen)
        }
    }

    /// A server that calls every answer stale gets the first answer and five more, each
    /// over the nonce of the challenge just received with `nc=00000001`, and then an error
    /// that is not `auth` (stale says the credentials are right).
    #[tokio::test]
    async fn stale_challenges_are_answered_five_more_times_then_fail_as_no_auth_error() {
        let server = Scripted::start(&api_key()).await;
        server.script(&[], Step::Stale);
        let (result, seen) = server.send().await;
        let e = result.err().expect("refused");
        assert_eq!(e.reason(), Reason::ClientError, "{e}");
        assert!(e.to_string().contains("stale 6 times in 6 answers"), "{e}");
        assert_eq!(seen.len(), 1 + 1 + 5, "{seen:?}");
        assert_eq!(seen[0], None, "the first request carries no credentials");
        for (i, answer) in seen.iter().enumerate().skip(1) {
            assert_eq!(
                nonce_and_count(answer.as_deref().expect("an answer")),
                (format!("n{i}"), "00000001".to_owned()),
                "answer {i} is over the nonce Atlas just offered"
            );
        }
    }

    /// A server that offers one nonce to every challenge and calls every answer stale: the
    /// answers over that nonce (counts 1, 2, 3, ...) are refusals of a used nonce after the
    /// first, which do not use up the handful, and the request stops at the hard bound of
    /// twelve answers, with an error that is not `auth`.
    #[tokio::test]
    async fn a_used_up_shared_nonce_is_answered_up_to_the_hard_bound() {
        let server = Scripted::start(&api_key()).await;
        server.script.lock().expect("script").same_nonce = true;
        server.script(&[], Step::Stale);
        let (result, seen) = server.send().await;
        let e = result.err().expect("refused");
        assert_eq!(e.reason(), Reason::ClientError, "{e}");
        assert_eq!(seen.len(), 1 + MAX_DIGEST_ANSWERS as usize, "{seen:?}");
        for (i, answer) in seen.iter().enumerate().skip(1) {
            assert_eq!(
                nonce_and_count(answer.as_deref().expect("an answer")),
                ("n".to_owned(), format!("{i:08x}")),
                "one count per answer over the one nonce"
            );
        }
    }

    /// Five stale challenges in a row, then an accepted answer: the request succeeds (a
    /// second challenge after an answer used to be an auth failure).
    #[tokio::test]
    async fn stale_challenges_within_the_bound_end_in_success() {
        let server = Scripted::start(&api_key()).await;
        server.script(&[Step::Stale; 5], Step::Ok);
        let (result, seen) = server.send().await;
        assert_eq!(result.expect("accepted").status, 200);
        assert_eq!(seen.len(), 7);
    }

    /// Credentials never accepted by this process fail with `auth` at the second plain
    /// refusal: three requests for the first call (one without credentials), two for the
    /// next (the first nonce offered is kept).
    #[tokio::test]
    async fn never_accepted_credentials_fail_at_the_second_plain_refusal() {
        let server = Scripted::start(&api_key()).await;
        server.script(&[], Step::Plain);
        let (result, seen) = server.send().await;
        assert_eq!(result.err().expect("refused").reason(), Reason::Auth);
        assert_eq!(seen.len(), 3, "{seen:?}");
        let (result, seen) = server.send().await;
        assert_eq!(result.err().expect("refused").reason(), Reason::Auth);
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    /// Once an answer was accepted, plain fresh challenges (a server that forgot the nonce)
    /// are answered again: three in a row, then success.
    #[tokio::test]
    async fn accepted_credentials_answer_forgotten_nonces_again() {
        let server = Scripted::start(&api_key()).await;
        server.script(&[], Step::Ok);
        assert!(server.send().await.0.is_ok());
        server.script(&[Step::Plain; 3], Step::Ok);
        let (result, seen) = server.send().await;
        assert_eq!(result.expect("accepted").status, 200);
        assert_eq!(seen.len(), 4, "{seen:?}");
    }

    /// Only a success proves the key: after an answer met with 503 (which may come from in
    /// front of the authentication), plain challenges still fail at the second refusal.
    #[tokio::test]
    async fn an_answer_met_with_an_error_status_does_not_prove_the_key() {
        let server = Scripted::start(&api_key()).await;
        server.script(&[], Step::Unavailable);
        let e = server.send().await.0.err().expect("503");
        assert_eq!(e.reason(), Reason::ServerError, "{e}");
        server.script(&[], Step::Plain);
        let (result, seen) = server.send().await;
        assert_eq!(result.err().expect("refused").reason(), Reason::Auth);
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    /// Credentials accepted before and then refused for good (revoked) fail with `auth`
    /// after the first answer (over the shared nonce, used before) and six more over fresh
    /// nonces, the sixth refusal of a nonce's first answer; that ends the trust, so the next
    /// request fails at the second plain refusal (after one without credentials: the refused
    /// shared nonce was dropped), and the one after in two requests.
    #[tokio::test]
    async fn revoked_credentials_fail_after_the_bound_then_fast() {
        let server = Scripted::start(&api_key()).await;
        server.script(&[], Step::Ok);
        assert!(server.send().await.0.is_ok());
        server.script(&[], Step::Plain);
        let (result, seen) = server.send().await;
        let e = result.err().expect("refused");
        assert_eq!(e.reason(), Reason::Auth);
        assert!(e.to_string().contains("revoked?"), "{e}");
        assert_eq!(seen.len(), 1 + 6, "{seen:?}");
        for tries in [3, 2] {
            let (result, seen) = server.send().await;
            assert_eq!(result.err().expect("refused").reason(), Reason::Auth);
            assert_eq!(seen.len(), tries, "{seen:?}");
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
