//! Rate limiting: one request budget per Atlas endpoint set and scope, the holds a 429's
//! `Retry-After` puts on them, and the backoff between retries.
//!
//! Atlas limits each endpoint set in its own scope: the Cost Explorer and the project listing
//! per org (at the configured number a minute), the cluster and Flex cluster listings per
//! project, the token endpoint per client and IP. A [`RateGate`] is one such budget; a 429
//! defers only the gate of the request that got it. Nothing here does I/O: the gates are
//! tested on tokio's paused clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

use super::AtlasError;
use crate::model::{Endpoint, is_atlas_id};

/// The token endpoint's budget: Atlas limits it to about 50 requests a minute per client and
/// IP. Owned with the shared [`TokenCache`](super::TokenCache), never an org's budget.
pub(super) const TOKEN_REQUESTS_PER_MINUTE: u32 = 50;
/// The "Clusters" endpoint set: per project, refill 5,000 a minute (Atlas docs).
const CLUSTERS_REQUESTS_PER_MINUTE: u32 = 5_000;
/// The "Flex Clusters" endpoint set: per project, refill 500 a minute (Atlas docs).
const FLEX_CLUSTERS_REQUESTS_PER_MINUTE: u32 = 500;
/// Longest `Retry-After` honoured; a longer one (or a date further ahead) is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// A request held by a `Retry-After` that ends this soon waits for it; a longer hold fails
/// the request at once, so that its caller decides within its deadline.
const MAX_HOLD_WAIT: Duration = Duration::from_secs(30);

/// The span of a budget: a gate lets through at most its limit in any window this long.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The budget of one endpoint set in one scope (an org, a project, the token endpoint): at
/// most `limit` requests in any 60 seconds (a sliding window, so no burst can exceed it),
/// and no request before the time a 429 named.
pub(super) struct RateGate {
    state: Mutex<GateState>,
    limit: usize,
}

struct GateState {
    /// Start times of the requests of the last 60 seconds, oldest first.
    sent: VecDeque<Instant>,
    /// No request before this time: the latest a 429 named.
    not_before: Option<Instant>,
}

impl RateGate {
    pub(super) fn new(per_minute: u32) -> RateGate {
        RateGate {
            state: Mutex::new(GateState {
                sent: VecDeque::new(),
                not_before: None,
            }),
            limit: usize::try_from(per_minute.max(1)).unwrap_or(usize::MAX),
        }
    }

    /// Waits while the minute's budget is spent or a short `Retry-After` holds the gate,
    /// and counts the request. A hold longer than [`MAX_HOLD_WAIT`] fails at once with the
    /// time left, so that the caller decides within its deadline.
    pub(super) async fn admit(&self, endpoint: Endpoint) -> Result<(), AtlasError> {
        loop {
            match self.try_acquire() {
                Ok(()) => return Ok(()),
                Err(Hold::Window(until)) => tokio::time::sleep_until(until).await,
                Err(Hold::RetryAfter(until))
                    if until.saturating_duration_since(Instant::now()) <= MAX_HOLD_WAIT =>
                {
                    tokio::time::sleep_until(until).await;
                }
                Err(Hold::RetryAfter(until)) => return Err(held(endpoint, until)),
            }
        }
    }

    /// Counts a request if one may go out now; otherwise says until when it may not.
    pub(super) fn try_acquire(&self) -> Result<(), Hold> {
        // std Mutex: the critical section has no await.
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
    pub(super) fn held_until(&self) -> Option<Instant> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.not_before.filter(|t| *t > Instant::now())
    }

    /// No request through this gate before `now + delay`.
    pub(super) fn defer(&self, delay: Duration) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let until = Instant::now() + delay;
        if s.not_before.is_none_or(|t| t < until) {
            s.not_before = Some(until);
        }
    }
}

/// Why a gate holds a request back, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hold {
    /// A 429 named this time.
    RetryAfter(Instant),
    /// The minute's budget is spent until this time.
    Window(Instant),
}

/// The error of a request to `endpoint` that a `Retry-After` holds back until `until`.
pub(super) fn held(endpoint: Endpoint, until: Instant) -> AtlasError {
    AtlasError::RateLimited {
        endpoint,
        retry_after: Some(until.saturating_duration_since(Instant::now())),
    }
}

/// One gate per scope (a project) of one endpoint set. Grows with the projects seen, which
/// discovery bounds.
struct ScopedGates {
    per_minute: u32,
    gates: Mutex<HashMap<String, Arc<RateGate>>>,
}

impl ScopedGates {
    fn new(per_minute: u32) -> ScopedGates {
        ScopedGates {
            per_minute,
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, scope: &str) -> Arc<RateGate> {
        // std Mutex: a map lookup, no await.
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            gates
                .entry(scope.to_owned())
                .or_insert_with(|| Arc::new(RateGate::new(self.per_minute))),
        )
    }
}

/// The rate limits of one org's client, one per endpoint set and scope, as Atlas scopes
/// them: a 429 on one set defers only that set in that scope.
pub(super) struct Gates {
    /// Cost Explorer create and poll and the invoice calls (one "Invoices" set, per org):
    /// the configured budget, shared.
    pub(super) cost: Arc<RateGate>,
    /// The org's project listing (its set is undocumented): the configured budget, apart
    /// from the Cost Explorer one.
    projects: Arc<RateGate>,
    /// The clusters listing, per project.
    clusters: ScopedGates,
    /// The Flex clusters listing, per project.
    flex_clusters: ScopedGates,
}

impl Gates {
    pub(super) fn new(per_minute: u32) -> Gates {
        Gates {
            cost: Arc::new(RateGate::new(per_minute)),
            projects: Arc::new(RateGate::new(per_minute)),
            clusters: ScopedGates::new(CLUSTERS_REQUESTS_PER_MINUTE),
            flex_clusters: ScopedGates::new(FLEX_CLUSTERS_REQUESTS_PER_MINUTE),
        }
    }

    /// The gate of a request to `endpoint` at `path_and_query`. The token endpoint's gate is
    /// the [`TokenCache`](super::TokenCache)'s; it never comes here.
    pub(super) fn for_request(&self, endpoint: Endpoint, path_and_query: &str) -> Arc<RateGate> {
        match endpoint {
            // The invoice calls are in the Cost Explorer's "Invoices" set: one budget.
            Endpoint::Create
            | Endpoint::Poll
            | Endpoint::Token
            | Endpoint::PendingInvoices
            | Endpoint::Invoices
            | Endpoint::LineItems => Arc::clone(&self.cost),
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
pub(super) fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// `Retry-After` as seconds or as an HTTP date (RFC 7231 IMF-fixdate, or the obsolete
/// forms) seen from `now`, capped at [`MAX_RETRY_AFTER`]; a date in the past is no wait.
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if is_digits(v) {
        // delay-seconds is 1*DIGIT (RFC 9110): more seconds than a u64 holds is still a wait,
        // capped like any other.
        Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Whether `s` is one or more ASCII digits and nothing else (no sign, no space).
fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `RateLimit-Remaining`, when Atlas sent a number (digits only, within a u64).
pub(super) fn rate_limit_remaining(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get("ratelimit-remaining")?.to_str().ok()?.trim();
    is_digits(v).then(|| v.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT_A: &str = "/api/atlas/v2/groups/aaaaaaaaaaaaaaaaaaaaaaaa/clusters?pageNum=1";
    const PROJECT_B: &str = "/api/atlas/v2/groups/bbbbbbbbbbbbbbbbbbbbbbbb/clusters";

    /// With a budget of 5 a minute, the sixth request waits until the first leaves the
    /// 60-second window, and no 60-second window ever holds more than 5.
    #[tokio::test(start_paused = true)]
    async fn gate_never_exceeds_the_budget_in_any_minute() {
        let gate = RateGate::new(5);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..12 {
            gate.admit(Endpoint::Create).await.expect("a budget waits");
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

    /// A spent budget is a wait, never an error: the request that finds it spent is told
    /// when the oldest request leaves the window.
    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_names_when_it_refills() {
        let gate = RateGate::new(2);
        let start = Instant::now();
        assert_eq!(gate.try_acquire(), Ok(()));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(gate.try_acquire(), Ok(()));
        assert_eq!(gate.try_acquire(), Err(Hold::Window(start + RATE_WINDOW)));
        assert_eq!(gate.held_until(), None, "a spent budget is no 429 hold");
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(gate.try_acquire(), Ok(()));
        assert_eq!(
            gate.try_acquire(),
            Err(Hold::Window(start + Duration::from_secs(10) + RATE_WINDOW))
        );
    }

    /// After a 429 with Retry-After, no request goes out before the named time, and a
    /// shorter deferral does not shorten a longer one.
    #[tokio::test(start_paused = true)]
    async fn gate_holds_requests_until_retry_after() {
        let gate = RateGate::new(100);
        let start = Instant::now();
        gate.admit(Endpoint::Poll).await.expect("open");
        gate.defer(Duration::from_secs(7));
        assert_eq!(gate.held_until(), Some(start + Duration::from_secs(7)));
        gate.admit(Endpoint::Poll)
            .await
            .expect("a short hold waits");
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
        gate.defer(Duration::from_secs(3));
        gate.defer(Duration::from_secs(1));
        gate.admit(Endpoint::Poll)
            .await
            .expect("a short hold waits");
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
        assert_eq!(gate.held_until(), None);
    }

    /// A hold longer than 30 seconds fails the request at once with the time left, so
    /// that its caller decides within its deadline; the request is not counted.
    #[tokio::test(start_paused = true)]
    async fn a_hold_over_30_seconds_is_rate_limited_at_once() {
        let gate = RateGate::new(1);
        let start = Instant::now();
        gate.defer(Duration::from_secs(31));
        match gate.admit(Endpoint::Clusters).await {
            Err(AtlasError::RateLimited {
                endpoint: Endpoint::Clusters,
                retry_after: Some(left),
            }) => assert_eq!(left, Duration::from_secs(31)),
            other => panic!("expected rate_limited, got {other:?}"),
        }
        assert_eq!(Instant::now(), start, "no wait");
        // Once the hold is over, the one request of the budget is still there.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(gate.try_acquire(), Ok(()));
    }

    /// A hold of exactly 30 seconds is waited out.
    #[tokio::test(start_paused = true)]
    async fn a_hold_of_30_seconds_is_waited_out() {
        let gate = RateGate::new(10);
        let start = Instant::now();
        gate.defer(MAX_HOLD_WAIT);
        gate.admit(Endpoint::Create).await.expect("waited");
        assert_eq!(Instant::now() - start, MAX_HOLD_WAIT);
    }

    /// Each endpoint set has its own gate in its own scope: create and poll share the org's
    /// Cost Explorer gate, the projects listing has its own, and each project has its own
    /// clusters gate and Flex clusters gate, at the budgets Atlas documents.
    #[test]
    fn gates_follow_atlas_endpoint_sets_and_scopes() {
        let gates = Gates::new(100);
        let flex_a = "/api/atlas/v2/groups/aaaaaaaaaaaaaaaaaaaaaaaa/flexClusters?pageNum=2";
        let g = |e, p| gates.for_request(e, p);
        let cost = g(Endpoint::Create, "/x");
        assert!(Arc::ptr_eq(&cost, &g(Endpoint::Poll, "/y")));
        assert!(Arc::ptr_eq(&cost, &gates.cost));
        let distinct = [
            cost,
            g(Endpoint::Projects, "/api/atlas/v2/orgs/o/groups"),
            g(Endpoint::Clusters, PROJECT_A),
            g(Endpoint::Clusters, PROJECT_B),
            g(Endpoint::FlexClusters, flex_a),
        ];
        for (i, x) in distinct.iter().enumerate() {
            for y in &distinct[i + 1..] {
                assert!(!Arc::ptr_eq(x, y));
            }
        }
        assert!(Arc::ptr_eq(
            &g(Endpoint::Clusters, PROJECT_A),
            &g(
                Endpoint::Clusters,
                &PROJECT_A.replace("pageNum=1", "pageNum=7")
            )
        ));
        assert_eq!(distinct[2].limit, CLUSTERS_REQUESTS_PER_MINUTE as usize);
        assert_eq!(
            distinct[4].limit,
            FLEX_CLUSTERS_REQUESTS_PER_MINUTE as usize
        );
        assert_eq!(distinct[1].limit, 100);
    }

    /// A Retry-After on one project's cluster listing holds that listing only: the Cost
    /// Explorer calls, the projects listing, the same project's Flex listing and another
    /// project's listing go out at once.
    #[tokio::test(start_paused = true)]
    async fn a_hold_blocks_only_its_own_endpoint_set_and_scope() {
        let gates = Gates::new(100);
        gates
            .for_request(Endpoint::Clusters, PROJECT_A)
            .defer(Duration::from_secs(600));
        let start = Instant::now();
        for (endpoint, path) in [
            (Endpoint::Create, "/c"),
            (Endpoint::Poll, "/p"),
            (Endpoint::Projects, "/g"),
            (Endpoint::Clusters, PROJECT_B),
            (
                Endpoint::FlexClusters,
                "/api/atlas/v2/groups/aaaaaaaaaaaaaaaaaaaaaaaa/flexClusters",
            ),
        ] {
            gates
                .for_request(endpoint, path)
                .admit(endpoint)
                .await
                .expect("not held");
        }
        assert_eq!(Instant::now(), start, "nothing else waited");
        assert_eq!(gates.cost.held_until(), None);
        let held = gates
            .for_request(Endpoint::Clusters, PROJECT_A)
            .admit(Endpoint::Clusters)
            .await;
        assert!(matches!(held, Err(AtlasError::RateLimited { .. })));
    }

    /// Paths that name no valid project share one scope: a hostile id cannot make a gate
    /// per request.
    #[test]
    fn paths_without_a_valid_project_share_one_scope() {
        assert_eq!(group_of(PROJECT_A), "aaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(group_of("/api/atlas/v2/groups/not-an-id/clusters"), "");
        assert_eq!(group_of("/api/atlas/v2/orgs/x/groups"), "");
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().expect("header"));
        h
    }

    /// `Retry-After` is read as seconds or as an HTTP date seen from now; a past date is no
    /// wait, anything is capped at an hour, and garbage is ignored.
    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 29 Nov 2026 12:00:00 GMT").expect("date");
        let read = |v: &str| retry_after(&headers("retry-after", v), now);
        assert_eq!(read("7"), Some(Duration::from_secs(7)));
        assert_eq!(read(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(read("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            read("Sun, 29 Nov 2026 12:10:00 GMT"),
            Some(Duration::from_secs(600))
        );
        // The obsolete RFC 850 form is a date too.
        assert_eq!(
            read("Sunday, 29-Nov-26 12:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(read("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(read("Fri, 01 Jan 2100 00:00:00 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(read("soon"), None);
        assert_eq!(read("-5"), None);
        assert_eq!(read("+5"), None, "delay-seconds has no sign");
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    /// `RateLimit-Remaining` is read when it is a number, and ignored otherwise.
    #[test]
    fn rate_limit_remaining_reads_numbers_only() {
        assert_eq!(
            rate_limit_remaining(&headers("ratelimit-remaining", " 42 ")),
            Some(42)
        );
        assert_eq!(
            rate_limit_remaining(&headers("ratelimit-remaining", "many")),
            None
        );
        assert_eq!(rate_limit_remaining(&HeaderMap::new()), None);
        assert_eq!(
            rate_limit_remaining(&headers("ratelimit-remaining", "+7")),
            None,
            "a number has no sign"
        );
    }

    /// A `Retry-After` of more seconds than a u64 holds is the longest wait, not ignored
    /// (ignored, the 429 held only for the poll interval).
    #[test]
    fn a_retry_after_beyond_u64_is_the_longest_wait() {
        let now = httpdate::parse_http_date("Sun, 29 Nov 2026 12:00:00 GMT").expect("date");
        let h = headers("retry-after", "99999999999999999999999");
        assert_eq!(retry_after(&h, now), Some(MAX_RETRY_AFTER));
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
}
