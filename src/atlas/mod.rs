//! The Atlas client: authentication, rate limiting, the two Cost Explorer calls and
//! discovery of projects and clusters.
//!
//! One [`AtlasClient`] serves one org. It only ever talks to the configured base URL, puts
//! only validated ids into URL paths, and keeps one request budget per Atlas endpoint set and
//! scope (the Cost Explorer and the project listing per org at the configured number a
//! minute, cluster and Flex cluster listings per project, the token endpoint with the shared
//! token); a 429 (Retry-After first) holds only its own set and scope.

pub mod auth;
pub mod result;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::Method;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::QuerySpec;
use crate::metrics::{EndpointLabels, QueryLabels, RequestLabels, SelfMetrics};
use crate::model::is_atlas_id;
use crate::model::{Credentials, ResultFormat, Secret};
pub use crate::model::{Endpoint, Reason};
use crate::month::Month;
use auth::Challenge;
use result::{Parsed, ParsedResult};

/// The only API version the Cost Explorer operations declare.
pub const JSON_MEDIA_TYPE: &str = "application/vnd.atlas.2023-01-01+json";
/// CSV results.
pub const CSV_MEDIA_TYPE: &str = "application/vnd.atlas.2023-01-01+csv";
/// `listGroupClusters`: 2024-08-05 is its current version (2023-01-01 and 2023-02-01 are
/// sunset on 2027-07-01). Only `id` and `name` are read, which every version has.
pub const CLUSTERS_MEDIA_TYPE: &str = "application/vnd.atlas.2024-08-05+json";
/// `listGroupFlexClusters`: the only version it declares.
pub const FLEX_MEDIA_TYPE: &str = "application/vnd.atlas.2024-11-13+json";
/// Longest wait between two polls.
const MAX_POLL_DELAY: Duration = Duration::from_secs(30);
/// Retries of one request (create, discovery page, poll error) before giving up.
const MAX_RETRIES: u32 = 4;
/// Times a query is created again after Atlas forgot its token.
const MAX_CREATES: u32 = 3;
/// Discovery page size (the API maximum).
pub const PAGE_SIZE: usize = 500;
/// Pages read at most per listing: 5M items, far beyond any org.
const MAX_PAGES: usize = 10_000;
/// The token endpoint's budget: Atlas limits it to about 50 requests a minute per client and
/// IP. Owned with the shared [`TokenCache`], never an org's budget.
const TOKEN_REQUESTS_PER_MINUTE: u32 = 50;
/// The "Clusters" endpoint set: per project, refill 5,000 a minute (Atlas docs).
const CLUSTERS_REQUESTS_PER_MINUTE: u32 = 5_000;
/// The "Flex Clusters" endpoint set: per project, refill 500 a minute (Atlas docs).
const FLEX_CLUSTERS_REQUESTS_PER_MINUTE: u32 = 500;
/// A 401 on an OAuth token younger than this, when that token already replaced a refused
/// one, is a missing role or access-list entry (`USER_UNAUTHORIZED`), not a reason to mint
/// yet another token.
const FRESH_TOKEN_AGE: Duration = Duration::from_secs(5 * 60);
/// Longest `Retry-After` honoured; a longer one (or a date further ahead) is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// A request held by a `Retry-After` that ends this soon waits for it; a longer hold fails
/// the request at once, so that its caller decides within its deadline.
const MAX_HOLD_WAIT: Duration = Duration::from_secs(30);
/// A poll answered `{}` (an empty JSON object) is polled again this many times before the
/// answer is judged a decode error.
const MAX_EMPTY_POLLS: u32 = 3;
/// A 404 on a poll this soon after the create may be a node that does not know the new
/// token yet: poll again (at most [`MAX_NOT_FOUND_GRACE`] times) before creating again.
const NOT_FOUND_GRACE: Duration = Duration::from_secs(10);
/// 404s right after a create that get the grace of [`NOT_FOUND_GRACE`].
const MAX_NOT_FOUND_GRACE: u32 = 2;

/// Errors of the Atlas client. Messages never hold secrets.
#[derive(Debug, thiserror::Error)]
pub enum AtlasError {
    /// 429.
    #[error("{endpoint}: rate limited by Atlas (HTTP 429{})", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// Where.
        endpoint: Endpoint,
        /// Retry-After, when Atlas sent it.
        retry_after: Option<Duration>,
    },
    /// 401 after re-authenticating.
    #[error("{endpoint}: Atlas refused the credentials (HTTP {status}): {detail}")]
    Auth {
        /// Where.
        endpoint: Endpoint,
        /// 401 (or 400 from the token endpoint).
        status: u16,
        /// Atlas's explanation.
        detail: String,
    },
    /// 403.
    #[error("{endpoint}: forbidden (HTTP 403): {detail}")]
    Forbidden {
        /// Where.
        endpoint: Endpoint,
        /// Atlas's explanation.
        detail: String,
    },
    /// Another error status.
    #[error("{endpoint}: HTTP {status}: {detail}")]
    Status {
        /// Where.
        endpoint: Endpoint,
        /// The status.
        status: u16,
        /// `errorCode: detail` from the error body, or a snippet of it.
        detail: String,
    },
    /// The request timed out.
    #[error("{endpoint}: no complete answer within the request timeout")]
    Timeout {
        /// Where.
        endpoint: Endpoint,
    },
    /// No answer at all.
    #[error("{endpoint}: {message}")]
    Transport {
        /// Where.
        endpoint: Endpoint,
        /// What failed.
        message: String,
        /// The connection was established and then closed before a full answer.
        incomplete: bool,
    },
    /// The body was larger than the cap.
    #[error("{endpoint}: answer larger than {limit} bytes, refused")]
    TooLarge {
        /// Where.
        endpoint: Endpoint,
        /// The cap.
        limit: usize,
    },
    /// The body was not what the endpoint returns.
    #[error("{endpoint}: {message}")]
    Decode {
        /// Where.
        endpoint: Endpoint,
        /// What was wrong.
        message: String,
    },
    /// Not ready before the deadline.
    #[error("result not ready within the query deadline of {}", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// An id from Atlas or the configuration that cannot go into a URL path.
    #[error("refusing to put {0:?} into a URL path: not an Atlas id")]
    InvalidId(String),
}

impl AtlasError {
    /// The `reason` label of this error.
    pub fn reason(&self) -> Reason {
        match self {
            AtlasError::RateLimited { .. } => Reason::RateLimited,
            AtlasError::Auth { .. } => Reason::Auth,
            AtlasError::Forbidden { .. } => Reason::Forbidden,
            AtlasError::Status { status, .. } if *status >= 500 => Reason::ServerError,
            AtlasError::Status { .. } => Reason::ClientError,
            AtlasError::Timeout { .. } => Reason::Timeout,
            AtlasError::Transport { .. } => Reason::Transport,
            AtlasError::TooLarge { .. } => Reason::TooLarge,
            AtlasError::Decode { .. } => Reason::Decode,
            AtlasError::Deadline(_) => Reason::Deadline,
            AtlasError::InvalidId(_) => Reason::ClientError,
        }
    }

    /// Whether trying again later can help.
    fn is_retryable(&self) -> bool {
        match self {
            AtlasError::RateLimited { .. }
            | AtlasError::Timeout { .. }
            | AtlasError::Transport { .. } => true,
            AtlasError::Status { status, .. } => *status >= 500 || *status == 408,
            // A proxy's HTML error page or a cut body is worth one more try.
            AtlasError::Decode { .. } => true,
            _ => false,
        }
    }
}

/// An HTTP answer whose body was read in full (within the cap).
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// The budget of one endpoint set in one scope (an org, a project, the token endpoint): at
/// most `limit` requests in any 60 seconds (a sliding window, so no burst can exceed it),
/// and no request before the time a 429 named.
struct RateGate {
    state: Mutex<GateState>,
    limit: usize,
}

struct GateState {
    /// Start times of the requests of the last 60 seconds, oldest first.
    sent: std::collections::VecDeque<Instant>,
    not_before: Option<Instant>,
}

const RATE_WINDOW: Duration = Duration::from_secs(60);

impl RateGate {
    fn new(per_minute: u32) -> RateGate {
        RateGate {
            state: Mutex::new(GateState {
                sent: std::collections::VecDeque::new(),
                not_before: None,
            }),
            limit: usize::try_from(per_minute.max(1)).unwrap_or(usize::MAX),
        }
    }

    /// Waits until a request may go out, and counts it.
    #[cfg(test)]
    async fn acquire(&self) {
        while let Err(hold) = self.try_acquire() {
            tokio::time::sleep_until(hold.until()).await;
        }
    }

    /// Waits while the minute's budget is spent or a short `Retry-After` holds the gate,
    /// and counts the request. A hold longer than [`MAX_HOLD_WAIT`] fails at once with the
    /// time left, so that the caller decides within its deadline.
    async fn admit(&self, endpoint: Endpoint) -> Result<(), AtlasError> {
        loop {
            match self.try_acquire() {
                Ok(()) => return Ok(()),
                Err(Hold::Window(until)) => tokio::time::sleep_until(until).await,
                Err(Hold::RetryAfter(until))
                    if until.saturating_duration_since(Instant::now()) <= MAX_HOLD_WAIT =>
                {
                    tokio::time::sleep_until(until).await;
                }
                Err(Hold::RetryAfter(until)) => {
                    return Err(AtlasError::RateLimited {
                        endpoint,
                        retry_after: Some(until.saturating_duration_since(Instant::now())),
                    });
                }
            }
        }
    }

    /// Counts a request if one may go out now; otherwise says until when it may not.
    fn try_acquire(&self) -> Result<(), Hold> {
        // std Mutex: the critical section has no await.
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        while s.sent.front().is_some_and(|t| *t + RATE_WINDOW <= now) {
            s.sent.pop_front();
        }
        match (s.not_before, s.sent.front()) {
            (Some(t), _) if t > now => Err(Hold::RetryAfter(t)),
            (_, Some(oldest)) if s.sent.len() >= self.limit => {
                Err(Hold::Window(*oldest + RATE_WINDOW))
            }
            _ => {
                s.sent.push_back(now);
                Ok(())
            }
        }
    }

    /// The time a 429 named, while it is still ahead.
    fn held_until(&self) -> Option<Instant> {
        let s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.not_before.filter(|t| *t > Instant::now())
    }

    /// No request through this gate before `now + delay`.
    fn defer(&self, delay: Duration) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = Instant::now() + delay;
        if s.not_before.is_none_or(|t| t < until) {
            s.not_before = Some(until);
        }
    }
}

/// Why a gate holds a request back, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// A 429 named this time.
    RetryAfter(Instant),
    /// The minute's budget is spent until this time.
    Window(Instant),
}

impl Hold {
    #[cfg(test)]
    fn until(self) -> Instant {
        match self {
            Hold::RetryAfter(t) | Hold::Window(t) => t,
        }
    }
}

/// One gate per scope (a project) of one endpoint set. Grows with the projects seen, which
/// discovery bounds.
struct ScopedGates {
    per_minute: u32,
    gates: Mutex<std::collections::HashMap<String, Arc<RateGate>>>,
}

impl ScopedGates {
    fn new(per_minute: u32) -> ScopedGates {
        ScopedGates {
            per_minute,
            gates: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn get(&self, scope: &str) -> Arc<RateGate> {
        // std Mutex: a map lookup, no await.
        let mut gates = self
            .gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            gates
                .entry(scope.to_owned())
                .or_insert_with(|| Arc::new(RateGate::new(self.per_minute))),
        )
    }
}

/// The rate limits of one org's client, one per endpoint set and scope, as Atlas scopes
/// them: a 429 on one set defers only that set in that scope.
struct Gates {
    /// Cost Explorer create and poll (the "Invoices" set, per org): the configured budget.
    cost: Arc<RateGate>,
    /// The org's project listing (its set is undocumented): the configured budget, apart
    /// from the Cost Explorer one.
    projects: Arc<RateGate>,
    /// The clusters listing, per project.
    clusters: ScopedGates,
    /// The Flex clusters listing, per project.
    flex_clusters: ScopedGates,
}

impl Gates {
    fn new(per_minute: u32) -> Gates {
        Gates {
            cost: Arc::new(RateGate::new(per_minute)),
            projects: Arc::new(RateGate::new(per_minute)),
            clusters: ScopedGates::new(CLUSTERS_REQUESTS_PER_MINUTE),
            flex_clusters: ScopedGates::new(FLEX_CLUSTERS_REQUESTS_PER_MINUTE),
        }
    }

    /// The gate of a request to `endpoint` at `path_and_query`. The token endpoint's gate is
    /// the [`TokenCache`]'s; it never comes here.
    fn for_request(&self, endpoint: Endpoint, path_and_query: &str) -> Arc<RateGate> {
        match endpoint {
            Endpoint::Create | Endpoint::Poll | Endpoint::Token => Arc::clone(&self.cost),
            Endpoint::Projects => Arc::clone(&self.projects),
            Endpoint::Clusters => self.clusters.get(group_of(path_and_query)),
            Endpoint::FlexClusters => self.flex_clusters.get(group_of(path_and_query)),
        }
    }
}

/// The project id of `/api/atlas/v2/groups/{groupId}/...`, or `""` for any other path.
fn group_of(path_and_query: &str) -> &str {
    path_and_query
        .strip_prefix("/api/atlas/v2/groups/")
        .and_then(|rest| rest.split(['/', '?']).next())
        .filter(|id| is_atlas_id(id))
        .unwrap_or("")
}

/// Exponential backoff with jitter: `base * 2^attempt`, capped, then a random 50-100%.
fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

enum AuthState {
    OAuth {
        client_id: String,
        secret: Secret,
        token: TokenCache,
    },
    Digest {
        user: String,
        password: Secret,
        challenge: Mutex<Option<Challenge>>,
        nc: std::sync::atomic::AtomicU32,
    },
}

/// A cached OAuth token, its renewal time, and the token endpoint's own rate limit. Clients
/// that share one (orgs with the same service account, see [`crate::fleet::TokenCaches`])
/// share one token and one token budget.
#[derive(Clone)]
pub struct TokenCache(Arc<TokenShared>);

struct TokenShared {
    // tokio Mutex: held across the token request so concurrent queries (of every org that
    // shares the cache) wait for one renewal instead of each fetching a token. Never held
    // while waiting for a gate.
    slot: tokio::sync::Mutex<TokenSlot>,
    /// The token endpoint's budget (per client and IP at Atlas), not any org's.
    gate: RateGate,
}

#[derive(Default)]
struct TokenSlot {
    cached: Option<CachedToken>,
    /// The last token was dropped because Atlas refused it (401).
    refused: bool,
}

struct CachedToken {
    token: String,
    renew_at: Instant,
    obtained: Instant,
    /// Obtained to replace a token Atlas refused.
    after_refusal: bool,
}

impl Default for TokenCache {
    fn default() -> TokenCache {
        TokenCache(Arc::new(TokenShared {
            slot: tokio::sync::Mutex::new(TokenSlot::default()),
            gate: RateGate::new(TOKEN_REQUESTS_PER_MINUTE),
        }))
    }
}

impl TokenCache {
    /// Whether two caches are the same one.
    pub fn same_as(&self, other: &TokenCache) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A project found by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// 24-hex id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A cluster found by discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// 24-hex unique id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// Settings of a client.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// First delay between polls; also the base of retry backoff.
    pub poll_interval: Duration,
    /// Request budget per minute.
    pub requests_per_minute: u32,
    /// Body size cap.
    pub max_response_bytes: usize,
}

/// Statistics of one query execution.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueryStats {
    /// Polls sent.
    pub polls: u64,
    /// Created -> ready, for the last creation.
    pub poll_latency: Duration,
}

/// The Atlas client of one org.
pub struct AtlasClient {
    http: reqwest::Client,
    settings: ClientSettings,
    org_id: String,
    auth: AuthState,
    gates: Gates,
    metrics: Arc<SelfMetrics>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageQuery<'a> {
    start_date: String,
    end_date: String,
    organizations: [&'a str; 1],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    projects: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    clusters: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    services: &'a [String],
    /// Left out for [`GroupBy::Ungrouped`](crate::config::GroupBy::Ungrouped): a `groupBy`
    /// without its filter risks a 400.
    #[serde(skip_serializing_if = "Option::is_none")]
    group_by: Option<&'static str>,
    include_partial_matches: bool,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
}

#[derive(Deserialize)]
struct OAuthAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    results: Vec<Item>,
    #[serde(default, rename = "totalCount")]
    total_count: Option<u64>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// A token from `createCostExplorerProcess`: opaque, but it goes into a URL path, so only
/// URL-safe characters are accepted.
fn is_valid_token(t: &str) -> bool {
    (1..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `errorCode: detail` from an Atlas error body, or a snippet of whatever came instead.
fn error_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default, rename = "errorCode")]
        error_code: Option<String>,
        #[serde(default)]
        detail: Option<String>,
        #[serde(default)]
        error: Option<serde_json::Value>,
        #[serde(default)]
        error_description: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => {
            let code = e
                .error_code
                .or_else(|| e.error.and_then(|v| v.as_str().map(str::to_owned)));
            let detail = e.detail.or(e.error_description);
            match (code, detail) {
                (Some(c), Some(d)) => format!("{c}: {d}"),
                (Some(c), None) => c,
                (None, Some(d)) => d,
                (None, None) => result::snippet(body),
            }
        }
        Err(_) => result::snippet(body),
    }
}

/// `Retry-After` as seconds or as an HTTP date (RFC 7231 IMF-fixdate, or the obsolete
/// forms), capped at [`MAX_RETRY_AFTER`]; a date in the past is no wait.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `RateLimit-Remaining`, when Atlas sent a number.
fn rate_limit_remaining(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("ratelimit-remaining")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl AtlasClient {
    /// A client for `org_id`.
    ///
    /// # Errors
    /// [`AtlasError::InvalidId`] when `org_id` is not an Atlas id.
    pub fn new(
        http: reqwest::Client,
        settings: ClientSettings,
        org_id: &str,
        credentials: &Credentials,
        metrics: Arc<SelfMetrics>,
    ) -> Result<AtlasClient, AtlasError> {
        if !is_atlas_id(org_id) {
            return Err(AtlasError::InvalidId(org_id.to_owned()));
        }
        let auth = match credentials {
            Credentials::ServiceAccount {
                client_id,
                client_secret,
            } => AuthState::OAuth {
                client_id: client_id.clone(),
                secret: client_secret.clone(),
                token: TokenCache::default(),
            },
            Credentials::ApiKey {
                public_key,
                private_key,
            } => AuthState::Digest {
                user: public_key.clone(),
                password: private_key.clone(),
                challenge: Mutex::new(None),
                nc: std::sync::atomic::AtomicU32::new(0),
            },
        };
        Ok(AtlasClient {
            http,
            gates: Gates::new(settings.requests_per_minute),
            settings,
            org_id: org_id.to_owned(),
            auth,
            metrics,
        })
    }

    /// Makes this client use `cache` for its OAuth token (no effect with an API key).
    #[must_use]
    pub fn with_token_cache(mut self, cache: TokenCache) -> AtlasClient {
        if let AuthState::OAuth { token, .. } = &mut self.auth {
            *token = cache;
        }
        self
    }

    /// The org this client serves.
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// Whether Atlas's last 429 on the Cost Explorer still holds this org's queries.
    pub fn rate_limited(&self) -> bool {
        self.gates.cost.held_until().is_some()
    }

    /// Sends one request and reads its body within the size cap, recording metrics.
    async fn execute(
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
            .api_requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                code,
            })
            .inc();
        self.metrics
            .api_request_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(started.elapsed().as_secs_f64());
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

    /// A bearer token, fetched when none is cached or the cached one is about to expire.
    ///
    /// The token endpoint has its own gate, shared with the token: a `Retry-After` on one
    /// org's calls never holds the token that other orgs need, and the lock every sharing org
    /// waits on is never held while a gate holds the request back.
    async fn bearer(&self) -> Result<String, AtlasError> {
        let AuthState::OAuth {
            client_id,
            secret,
            token,
        } = &self.auth
        else {
            return Err(AtlasError::InvalidId("no OAuth credentials".to_owned()));
        };
        let mut slot = loop {
            let slot = token.0.slot.lock().await;
            if let Some(c) = slot.cached.as_ref()
                && c.renew_at > Instant::now()
            {
                return Ok(c.token.clone());
            }
            match token.0.gate.try_acquire() {
                Ok(()) => break slot,
                // The caller's retries wait out the Retry-After within its deadline.
                Err(Hold::RetryAfter(until)) => {
                    return Err(AtlasError::RateLimited {
                        endpoint: Endpoint::Token,
                        retry_after: Some(until.saturating_duration_since(Instant::now())),
                    });
                }
                Err(Hold::Window(until)) => {
                    drop(slot);
                    tokio::time::sleep_until(until).await;
                }
            }
        };
        slot.cached = None;
        let req = self
            .http
            .post(format!("{}/api/oauth/token", self.settings.base_url))
            .header(
                AUTHORIZATION,
                auth::basic_authorization(client_id, secret.expose()),
            )
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials");
        let reply = self.execute(Endpoint::Token, req).await?;
        match reply.status {
            200 => {
                let answer: OAuthAnswer =
                    serde_json::from_slice(&reply.body).map_err(|e| AtlasError::Decode {
                        endpoint: Endpoint::Token,
                        message: format!("token answer is not a token: {e}"),
                    })?;
                // Renew a minute before expiry (or at half-life for short-lived tokens).
                let life = Duration::from_secs(answer.expires_in.unwrap_or(3600));
                let margin = Duration::from_secs(60).min(life / 2);
                let now = Instant::now();
                slot.cached = Some(CachedToken {
                    token: answer.access_token.clone(),
                    renew_at: now + life - margin,
                    obtained: now,
                    after_refusal: std::mem::take(&mut slot.refused),
                });
                Ok(answer.access_token)
            }
            401 | 400 => Err(AtlasError::Auth {
                endpoint: Endpoint::Token,
                status: reply.status,
                detail: error_detail(&reply.body),
            }),
            _ => Err(self.status_error(Endpoint::Token, reply, &token.0.gate)),
        }
    }

    /// The error of an answer that is not a success; a 429 defers `gate` (the gate of the
    /// request's endpoint set and scope, and only that one).
    fn status_error(&self, endpoint: Endpoint, reply: Reply, gate: &RateGate) -> AtlasError {
        match reply.status {
            429 => {
                let retry_after = retry_after(&reply.headers);
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

    /// After a 401 on an OAuth request: `true` to send once more with a renewed (or newer)
    /// token, `false` when the 401 is a missing role, not a bad token. A token that already
    /// replaced a refused one and is younger than [`FRESH_TOKEN_AGE`] is not replaced again:
    /// a missing role costs one renewal, not one per request.
    async fn renew_after_401(&self, token: &TokenCache, sent: Option<&String>) -> bool {
        let mut slot = token.0.slot.lock().await;
        match slot.cached.as_ref() {
            Some(c) if Some(&c.token) == sent => {
                if c.after_refusal && c.obtained.elapsed() < FRESH_TOKEN_AGE {
                    return false;
                }
                slot.cached = None;
                slot.refused = true;
                true
            }
            // Another request already replaced or dropped the refused token: concurrent 401s
            // lead to one renewal, not one each.
            _ => true,
        }
    }

    /// Sends an authenticated API request: renews an OAuth token once on 401 (unless a fresh
    /// token was refused: a missing role), answers Digest challenges (a fresh challenge after
    /// an answer once more, stale or not), and maps error statuses (3xx included). The gate
    /// comes from the endpoint and, for the per-project listings, the path's group id.
    async fn send(
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
            match &self.auth {
                AuthState::OAuth { .. } => {
                    let token = self.bearer().await?;
                    req = req.bearer_auth(&token);
                    sent_token = Some(token);
                }
                AuthState::Digest {
                    user,
                    password,
                    challenge,
                    nc,
                } => {
                    let current = challenge
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    if let Some(ch) = current {
                        let n = nc.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        let cnonce = format!("{:016x}", rand::thread_rng().r#gen::<u64>());
                        req = req.header(
                            AUTHORIZATION,
                            ch.authorization(
                                user,
                                password.expose(),
                                method.as_str(),
                                path_and_query,
                                n,
                                &cnonce,
                            ),
                        );
                        sent_digest = true;
                    }
                }
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
                    AuthState::Digest { challenge, .. } if challenges < 3 => {
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
                            *challenge
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fresh);
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
    async fn retrying<T, F, Fut>(&self, deadline: Instant, mut f: F) -> Result<T, AtlasError>
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

    /// Lists the org's projects (all pages).
    ///
    /// # Errors
    /// The first error that retries did not overcome.
    pub async fn projects(&self, deadline: Instant) -> Result<Vec<Project>, AtlasError> {
        let path = format!("/api/atlas/v2/orgs/{}/groups?", self.org_id);
        let items = self
            .list(Endpoint::Projects, &path, JSON_MEDIA_TYPE, deadline)
            .await?;
        Ok(items
            .into_iter()
            .map(|(id, name)| Project { id, name })
            .collect())
    }

    /// Lists the clusters of a project (all pages), those deleted with retained backups
    /// included: they still bill for backup. A project that is gone (404: deleted while the
    /// org was being listed) has no clusters.
    ///
    /// # Errors
    /// [`AtlasError::InvalidId`] for a project id that is not an Atlas id; else the first
    /// error that retries did not overcome.
    pub async fn clusters(
        &self,
        project_id: &str,
        deadline: Instant,
    ) -> Result<Vec<Cluster>, AtlasError> {
        self.project_listing(
            Endpoint::Clusters,
            project_id,
            "clusters?includeDeletedWithRetainedBackups=true&",
            CLUSTERS_MEDIA_TYPE,
            deadline,
        )
        .await
    }

    /// Lists the Flex clusters of a project (all pages). Since January 2026 the clusters
    /// listing no longer shows them; only this one does. A project that is gone has none.
    ///
    /// # Errors
    /// As [`AtlasClient::clusters`].
    pub async fn flex_clusters(
        &self,
        project_id: &str,
        deadline: Instant,
    ) -> Result<Vec<Cluster>, AtlasError> {
        self.project_listing(
            Endpoint::FlexClusters,
            project_id,
            "flexClusters?",
            FLEX_MEDIA_TYPE,
            deadline,
        )
        .await
    }

    async fn project_listing(
        &self,
        endpoint: Endpoint,
        project_id: &str,
        path_and_params: &str,
        accept: &'static str,
        deadline: Instant,
    ) -> Result<Vec<Cluster>, AtlasError> {
        if !is_atlas_id(project_id) {
            return Err(AtlasError::InvalidId(project_id.to_owned()));
        }
        let path = format!("/api/atlas/v2/groups/{project_id}/{path_and_params}");
        match self.list(endpoint, &path, accept, deadline).await {
            Ok(items) => Ok(items
                .into_iter()
                .map(|(id, name)| Cluster { id, name })
                .collect()),
            Err(AtlasError::Status { status: 404, .. }) => {
                tracing::debug!(org_id = %self.org_id, %endpoint, project_id, "project not found while listing it: no clusters");
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads every page of a listing (`path` ends in `?` or `&`). Stops on an empty page, on
    /// a page that brings no new id (a server that ignores `pageNum` would otherwise be read
    /// 10,000 times), or on a short page once `totalCount` items are in (the spec calls
    /// `totalCount` an estimate). Items whose id is not an Atlas id are skipped and logged:
    /// they could not be used in a URL anyway.
    async fn list(
        &self,
        endpoint: Endpoint,
        path: &str,
        accept: &'static str,
        deadline: Instant,
    ) -> Result<Vec<(String, String)>, AtlasError> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for page_num in 1..=MAX_PAGES {
            let url = format!("{path}pageNum={page_num}&itemsPerPage={PAGE_SIZE}");
            let reply = self
                .retrying(deadline, || {
                    self.send(endpoint, Method::GET, &url, accept, None)
                })
                .await?;
            let page: Page =
                serde_json::from_slice(&reply.body).map_err(|e| AtlasError::Decode {
                    endpoint,
                    message: format!("listing page {page_num} is not a results page: {e}"),
                })?;
            let n = page.results.len();
            let before = out.len();
            for item in page.results {
                match (item.id, item.name) {
                    (Some(id), name) if is_atlas_id(&id) => {
                        if seen.insert(id.clone()) {
                            out.push((id, name.unwrap_or_default()));
                        }
                    }
                    (id, _) => {
                        tracing::warn!(org_id = %self.org_id, %endpoint, id = ?id, "skipping an item whose id is not an Atlas id");
                    }
                }
            }
            let total = page.total_count.map_or(u64::MAX, |t| t);
            if n == 0 || out.len() == before || (n < PAGE_SIZE && out.len() as u64 >= total) {
                return Ok(out);
            }
        }
        Ok(out)
    }

    /// Runs one Cost Explorer query over `[start, end)` and returns its parsed result: create
    /// it, poll until ready (every "not ready" form counts), create it again if Atlas forgets
    /// the token, all within `deadline`.
    ///
    /// # Errors
    /// The error that ended the query; [`AtlasError::Deadline`] when it was never ready.
    pub async fn run_query(
        &self,
        spec: &QuerySpec,
        projects: &[String],
        clusters: &[String],
        start: Month,
        end: Month,
        deadline: Instant,
    ) -> Result<(ParsedResult, QueryStats), AtlasError> {
        let body = serde_json::to_vec(&UsageQuery {
            start_date: start.first_day(),
            end_date: end.first_day(),
            organizations: [&self.org_id],
            projects,
            clusters,
            services: &spec.services,
            group_by: spec.group_by.atlas_value(),
            include_partial_matches: spec.include_partial_matches,
        })
        .map_err(|e| AtlasError::Decode {
            endpoint: Endpoint::Create,
            message: e.to_string(),
        })?;
        let accept = match spec.format {
            ResultFormat::Json => JSON_MEDIA_TYPE,
            ResultFormat::Csv => CSV_MEDIA_TYPE,
        };
        let labels = QueryLabels {
            query: spec.name.clone(),
            org_id: self.org_id.clone(),
        };
        let budget = deadline.saturating_duration_since(Instant::now());
        let mut stats = QueryStats::default();
        let csv = spec.format == ResultFormat::Csv;
        // Cleared for the rest of this query once Atlas refuses an envelope around CSV.
        let mut envelope = true;
        for _ in 0..MAX_CREATES {
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
                        Some(&body),
                    )
                })
                .await?;
            let token = serde_json::from_slice::<TokenAnswer>(&reply.body)
                .map_err(|e| AtlasError::Decode {
                    endpoint: Endpoint::Create,
                    message: format!("create answer has no token: {e}"),
                })?
                .token;
            if !is_valid_token(&token) {
                return Err(AtlasError::InvalidId(token));
            }
            let created = Instant::now();
            let poll_base = format!(
                "/api/atlas/v2/orgs/{}/billing/costExplorer/usage/{token}",
                self.org_id
            );
            let mut delay = self.settings.poll_interval;
            let mut errors = 0;
            let mut empties = 0;
            let mut not_found = 0;
            loop {
                if Instant::now() + delay >= deadline {
                    return Err(AtlasError::Deadline(budget));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_POLL_DELAY);
                stats.polls += 1;
                self.metrics.polls.get_or_create(&labels).inc();
                let poll_path = if envelope {
                    format!("{poll_base}?envelope=true")
                } else {
                    poll_base.clone()
                };
                let reply = match self
                    .send(Endpoint::Poll, Method::GET, &poll_path, accept, None)
                    .await
                {
                    Ok(r) => r,
                    // The 102 hazard: a poll that times out or whose connection closes before
                    // a final answer means "not ready yet".
                    Err(AtlasError::Timeout { .. }) => {
                        tracing::debug!(org_id = %self.org_id, query = %spec.name, "poll timed out: not ready");
                        continue;
                    }
                    Err(AtlasError::Transport {
                        incomplete: true,
                        message,
                        ..
                    }) => {
                        tracing::debug!(org_id = %self.org_id, query = %spec.name, %message, "poll connection closed: not ready");
                        continue;
                    }
                    // Atlas refuses an envelope around CSV: poll without it from now on (the
                    // 102 hazard is then covered by timeouts and closed connections).
                    Err(AtlasError::Status {
                        status: status @ (400 | 406),
                        detail,
                        ..
                    }) if csv && envelope => {
                        envelope = false;
                        tracing::info!(org_id = %self.org_id, query = %spec.name, status, %detail, "Atlas refused envelope=true with CSV; polling without it");
                        continue;
                    }
                    // Right after the create, a node may not know the token yet.
                    Err(AtlasError::Status { status: 404, .. })
                        if created.elapsed() < NOT_FOUND_GRACE
                            && not_found < MAX_NOT_FOUND_GRACE =>
                    {
                        not_found += 1;
                        tracing::debug!(org_id = %self.org_id, query = %spec.name, "poll right after the create answered 404; polling again");
                        continue;
                    }
                    Err(AtlasError::Status {
                        status: 404 | 400,
                        detail,
                        ..
                    }) => {
                        tracing::info!(org_id = %self.org_id, query = %spec.name, %detail, "Atlas forgot the query token; creating the query again");
                        break;
                    }
                    // Polled again once the Retry-After is over, if that is within the deadline.
                    Err(
                        e @ AtlasError::RateLimited {
                            retry_after: Some(wait),
                            ..
                        },
                    ) if errors < MAX_RETRIES => {
                        if Instant::now() + wait >= deadline {
                            return Err(e);
                        }
                        errors += 1;
                        tracing::debug!(org_id = %self.org_id, query = %spec.name, error = %e, "poll rate limited; polling again after Retry-After");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(e) if e.is_retryable() && errors < MAX_RETRIES => {
                        errors += 1;
                        tracing::debug!(org_id = %self.org_id, query = %spec.name, error = %e, "poll failed; polling again");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if reply.status == 102 || reply.status == 202 {
                    continue;
                }
                let parsed =
                    tokio::task::spawn_blocking(move || result::parse_body(&reply.body, csv))
                        .await
                        .map_err(|e| AtlasError::Decode {
                            endpoint: Endpoint::Poll,
                            message: format!("parser stopped: {e}"),
                        })?;
                match parsed {
                    Ok(Parsed::NotReady) => continue,
                    // `{}`: the spec's only JSON example, and no result yet; judged only if
                    // it stays so.
                    Ok(Parsed::Empty) if empties < MAX_EMPTY_POLLS => {
                        empties += 1;
                        tracing::debug!(org_id = %self.org_id, query = %spec.name, "poll answered {{}}; polling again");
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
                        stats.poll_latency = created.elapsed();
                        self.metrics
                            .poll_latency
                            .get_or_create(&labels)
                            .observe(stats.poll_latency.as_secs_f64());
                        return Ok((result, stats));
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
        Err(AtlasError::Status {
            endpoint: Endpoint::Poll,
            status: 404,
            detail: format!("query token expired {MAX_CREATES} times in a row"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a budget of 5 a minute, the sixth request waits until the first leaves the
    /// 60-second window, and no 60-second window ever holds more than 5.
    #[tokio::test(start_paused = true)]
    async fn gate_never_exceeds_the_budget_in_any_minute() {
        let gate = RateGate::new(5);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..12 {
            gate.acquire().await;
            times.push(Instant::now() - start);
        }
        assert!(times[..5].iter().all(|t| *t == Duration::ZERO));
        assert_eq!(times[5], RATE_WINDOW);
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().filter(|u| **u < *t + RATE_WINDOW).count();
            assert!(
                in_window <= 5,
                "{in_window} requests in the minute from {t:?}"
            );
        }
    }

    /// After a 429 with Retry-After, no request goes out before the named time.
    #[tokio::test(start_paused = true)]
    async fn gate_holds_requests_until_retry_after() {
        let gate = RateGate::new(100);
        let start = Instant::now();
        gate.acquire().await;
        gate.defer(Duration::from_secs(7));
        gate.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
        // A shorter deferral does not shorten a longer one.
        gate.defer(Duration::from_secs(3));
        gate.defer(Duration::from_secs(1));
        gate.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
    }

    /// Backoff doubles per attempt up to the cap, with jitter between half and all of it.
    #[test]
    fn backoff_is_exponential_with_jitter() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(30);
        for attempt in 0..8u32 {
            let full = base.saturating_mul(1 << attempt).min(cap);
            let samples: Vec<Duration> = (0..200).map(|_| backoff(base, attempt, cap)).collect();
            assert!(
                samples.iter().all(|d| *d >= full / 2 && *d <= full),
                "attempt {attempt}"
            );
            let distinct: std::collections::HashSet<_> = samples.iter().collect();
            assert!(distinct.len() > 10, "attempt {attempt}: jittered");
        }
    }

    fn client() -> AtlasClient {
        AtlasClient::new(
            reqwest::Client::new(),
            ClientSettings {
                base_url: "http://127.0.0.1:9".to_owned(),
                request_timeout: Duration::from_secs(1),
                poll_interval: Duration::from_secs(1),
                requests_per_minute: 100,
                max_response_bytes: 1 << 20,
            },
            "66d7254246a21a41036ff2e9",
            &Credentials::ApiKey {
                public_key: "p".to_owned(),
                private_key: Secret::new("k"),
            },
            Arc::new(SelfMetrics::new("1h")),
        )
        .expect("client")
    }

    /// Each endpoint set has its own gate in its own scope: create and poll share the org's
    /// Cost Explorer gate, the projects listing has its own, and each project has its own
    /// clusters gate and Flex clusters gate.
    #[test]
    fn gates_follow_atlas_endpoint_sets_and_scopes() {
        let c = client();
        let a = "/api/atlas/v2/groups/aaaaaaaaaaaaaaaaaaaaaaaa/clusters?pageNum=1";
        let b = "/api/atlas/v2/groups/bbbbbbbbbbbbbbbbbbbbbbbb/clusters";
        let flex_a = "/api/atlas/v2/groups/aaaaaaaaaaaaaaaaaaaaaaaa/flexClusters?pageNum=2";
        let g = |e, p| c.gates.for_request(e, p);
        let cost = g(Endpoint::Create, "/x");
        assert!(Arc::ptr_eq(&cost, &g(Endpoint::Poll, "/y")));
        let distinct = [
            cost,
            g(Endpoint::Projects, "/api/atlas/v2/orgs/o/groups"),
            g(Endpoint::Clusters, a),
            g(Endpoint::Clusters, b),
            g(Endpoint::FlexClusters, flex_a),
        ];
        for (i, x) in distinct.iter().enumerate() {
            for y in &distinct[i + 1..] {
                assert!(!Arc::ptr_eq(x, y));
            }
        }
        assert!(Arc::ptr_eq(
            &g(Endpoint::Clusters, a),
            &g(Endpoint::Clusters, &a.replace("pageNum=1", "pageNum=7"))
        ));
        assert_eq!(distinct[2].limit, CLUSTERS_REQUESTS_PER_MINUTE as usize);
        assert_eq!(
            distinct[4].limit,
            FLEX_CLUSTERS_REQUESTS_PER_MINUTE as usize
        );
        assert_eq!(distinct[1].limit, 100);
    }

    /// A 429 on one project's cluster listing holds that listing only: the Cost Explorer
    /// calls, the projects listing and another project's listing go out at once.
    #[tokio::test(start_paused = true)]
    async fn a_429_on_one_project_listing_defers_only_that_gate() {
        let c = client();
        let a = "/api/atlas/v2/groups/aaaaaaaaaaaaaaaaaaaaaaaa/clusters";
        let b = "/api/atlas/v2/groups/bbbbbbbbbbbbbbbbbbbbbbbb/clusters";
        let held = c.gates.for_request(Endpoint::Clusters, a);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "600".parse().expect("header"));
        let e = c.status_error(
            Endpoint::Clusters,
            Reply {
                status: 429,
                headers,
                body: Bytes::new(),
            },
            &held,
        );
        assert_eq!(e.reason(), Reason::RateLimited);
        let start = Instant::now();
        for (endpoint, path) in [
            (Endpoint::Create, "/c"),
            (Endpoint::Poll, "/p"),
            (Endpoint::Projects, "/g"),
            (Endpoint::Clusters, b),
        ] {
            c.gates.for_request(endpoint, path).acquire().await;
        }
        assert_eq!(Instant::now(), start, "nothing else waited");
        assert!(!c.rate_limited(), "the org's queries are not held");
        c.gates.for_request(Endpoint::Clusters, a).acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(600));
    }

    /// `Retry-After` is read as seconds or as an HTTP date; a past date is no wait, and
    /// anything is capped at an hour; garbage is ignored.
    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let header = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().expect("header"));
            retry_after(&h)
        };
        assert_eq!(header("7"), Some(Duration::from_secs(7)));
        assert_eq!(header("86400"), Some(MAX_RETRY_AFTER));
        let ahead =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(600));
        let wait = header(&ahead).expect("a date is understood");
        // Whole seconds in the header; generous below for a slow machine.
        assert!(
            wait <= Duration::from_secs(600) && wait >= Duration::from_secs(500),
            "{wait:?}"
        );
        assert_eq!(
            header("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            header("Fri, 01 Jan 2100 00:00:00 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(header("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
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
    }
}
