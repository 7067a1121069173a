//! Authentication state: the OAuth token cache (shared by the orgs of one service account,
//! with the token endpoint's own budget) and the Digest nonces of an API key.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use tokio::time::Instant;

use super::auth::{self, Challenge};
use super::error::error_detail;
use super::gate::{self, Hold, RateGate};
use super::{AtlasClient, AtlasError};
use crate::model::{Credentials, Endpoint, Secret};

/// A 401 on an OAuth token younger than this, when that token already replaced a refused
/// one, is a missing role or access-list entry (`USER_UNAUTHORIZED`), not a reason to mint
/// yet another token.
pub(super) const FRESH_TOKEN_AGE: Duration = Duration::from_secs(5 * 60);

/// The shortest token life believed: a token said to live less (`expires_in: 0`) would be
/// renewed before every request. Should it really expire sooner, the 401 renews it once.
const MIN_TOKEN_LIFE: Duration = Duration::from_secs(60);

/// The longest token life believed (Atlas's tokens live an hour): a larger `expires_in` would
/// overflow the renewal time, or keep a token past any rotation.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// The life of a token whose answer said `expires_in` (seconds; an hour when absent), within
/// [`MIN_TOKEN_LIFE`] and [`MAX_TOKEN_LIFE`], and whether it had to be clamped.
fn token_life(expires_in: Option<u64>) -> (Duration, bool) {
    let said = Duration::from_secs(expires_in.unwrap_or(3600));
    let life = said.clamp(MIN_TOKEN_LIFE, MAX_TOKEN_LIFE);
    (life, life != said)
}

/// How a client signs in: OAuth with a service account, or Digest with an API key.
pub(super) enum AuthState {
    /// A service account: a bearer token from the token endpoint, cached.
    OAuth {
        client_id: String,
        secret: Secret,
        token: TokenCache,
    },
    /// An API key: HTTP Digest over the nonces Atlas offered, kept in a [`TokenCache`] so
    /// that the orgs of one key share them.
    Digest {
        user: String,
        password: Secret,
        shared: TokenCache,
    },
}

/// How long an acceptance of Digest credentials counts as recent: a plain fresh challenge
/// after an answer is then taken for a forgotten nonce and answered again (within
/// [`auth::MAX_DIGEST_RETRIES`] and [`auth::MAX_DIGEST_ANSWERS`]). Longer than any sensible refresh interval, so the first
/// request of each refresh still knows the key works; a request that concludes the
/// credentials are wrong ends it at once.
pub(super) const DIGEST_TRUST_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Nonces kept with their counts; the oldest one that is not the shared nonce goes first.
const NONCES_KEPT: usize = 16;

/// The Digest nonces of an API key: each one Atlas offered lately with the count of answers
/// sent over it (its `nc`, shared by every request that uses it, so no two answers over one
/// nonce carry the same count), the nonce new requests answer, and when the credentials were
/// last accepted.
#[derive(Debug, Default)]
pub(super) struct DigestNonces {
    /// Oldest first.
    offered: VecDeque<NonceUse>,
    /// The nonce a request without a challenge of its own answers: the last one accepted
    /// and not refused since; while the credentials are not trusted, the first one offered
    /// (so a wrong key costs no request without credentials per call). When a trusted shared
    /// nonce is refused, new requests go without credentials until an answer is accepted
    /// again: they get challenges of their own instead of refusals.
    shared: Option<String>,
    /// The last accepted answer; `None` again once a request concluded the credentials are
    /// wrong.
    accepted: Option<Instant>,
}

/// A challenge, how many answers were sent over its nonce, and whether one was refused
/// since Atlas last offered it.
#[derive(Debug)]
struct NonceUse {
    challenge: Challenge,
    sent: u32,
    refused: bool,
}

/// The Digest side of one request: the nonce of the challenge Atlas sent it, answered before
/// the shared one (so that answer is the nonce's first use, whatever other requests do), the
/// nonce of its last answer, and the refusals it met.
#[derive(Debug, Default)]
pub(super) struct DigestRequest {
    own: Option<String>,
    answered: Option<String>,
    /// The `nc` of the last answer.
    pub(super) answered_nc: u32,
    /// The refused answers so far.
    pub(super) refusals: auth::Refusals,
    /// Challenges met before any answer was sent (one at most, unless Atlas misbehaves).
    pub(super) unanswered: u32,
}

impl DigestNonces {
    fn find(&mut self, nonce: &str) -> Option<&mut NonceUse> {
        self.offered.iter_mut().find(|u| u.challenge.nonce == nonce)
    }

    /// The challenge to answer for `request` and its `nc`: the request's own nonce while it
    /// is kept, else the shared one; `None` before any challenge.
    fn next_answer(&mut self, request: &mut DigestRequest) -> Option<(Challenge, u32)> {
        let nonce = request
            .own
            .clone()
            .filter(|n| self.offered.iter().any(|u| &u.challenge.nonce == n))
            .or_else(|| self.shared.clone())?;
        let used = self.find(&nonce)?;
        // 2^32 answers over one nonce do not happen; saturating keeps this panic-free.
        used.sent = used.sent.saturating_add(1);
        request.answered = Some(nonce);
        request.answered_nc = used.sent;
        Some((used.challenge.clone(), used.sent))
    }

    /// Whether an answer was accepted within [`DIGEST_TRUST_WINDOW`] and no request has
    /// concluded since that the credentials are wrong.
    fn trusted(&self) -> bool {
        self.accepted
            .is_some_and(|at| at.elapsed() < DIGEST_TRUST_WINDOW)
    }

    /// `request`'s last answer was refused: its nonce is not answered again unless Atlas
    /// offers it again, and no longer shared if the credentials are trusted.
    fn refused(&mut self, request: &DigestRequest) {
        let Some(nonce) = &request.answered else {
            return;
        };
        if let Some(used) = self.find(nonce) {
            used.refused = true;
        }
        if self.trusted() && self.shared.as_ref() == Some(nonce) {
            self.shared = None;
        }
    }

    /// Keeps `challenge` as `request`'s own, newest of the kept nonces (a nonce offered again
    /// keeps its count).
    fn offered(&mut self, request: &mut DigestRequest, challenge: Challenge) {
        let nonce = challenge.nonce.clone();
        let known = self
            .offered
            .iter()
            .position(|u| u.challenge.nonce == nonce)
            .and_then(|i| self.offered.remove(i));
        self.offered.push_back(NonceUse {
            challenge,
            sent: known.map_or(0, |k| k.sent),
            refused: false,
        });
        while self.offered.len() > NONCES_KEPT {
            let Some(oldest) = self
                .offered
                .iter()
                .position(|u| Some(&u.challenge.nonce) != self.shared.as_ref())
            else {
                break;
            };
            self.offered.remove(oldest);
        }
        if self.shared.is_none() && !self.trusted() {
            self.shared = Some(nonce.clone());
        }
        request.own = Some(nonce);
    }
}

/// What the clients of one set of credentials share: for a service account the cached OAuth
/// token, its renewal time and the token endpoint's own rate limit; for an API key its Digest
/// nonces and their counts, and when the key was last accepted. Clients that share one (orgs
/// with the same credentials, see [`crate::fleet::TokenCaches`]) share one token and one token
/// budget, or one count per nonce (an `nc` sent by one org is never sent again by another).
#[derive(Clone)]
pub struct TokenCache(Arc<TokenShared>);

struct TokenShared {
    // tokio Mutex: held across the token request so concurrent queries (of every org that
    // shares the cache) wait for one renewal instead of each fetching a token. Never held
    // while waiting for a gate.
    slot: tokio::sync::Mutex<TokenSlot>,
    /// The token endpoint's budget (per client and IP at Atlas), not any org's.
    gate: RateGate,
    // std Mutex: a lookup and an increment, never held across an await.
    digest: Mutex<DigestNonces>,
    /// Whether an `expires_in` out of range was logged (once per cache).
    life_clamp_reported: AtomicBool,
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
            gate: RateGate::new(gate::TOKEN_REQUESTS_PER_MINUTE),
            digest: Mutex::new(DigestNonces::default()),
            life_clamp_reported: AtomicBool::new(false),
        }))
    }
}

impl TokenCache {
    /// Whether two caches are the same one.
    pub fn same_as(&self, other: &TokenCache) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct OAuthAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Whether `token` can go into `Authorization: Bearer` as it is: RFC 6750's `b64token`
/// (what a JWT is made of), so a token with a space, a control character or non-ASCII text is
/// refused here rather than failing every request it would be sent with.
fn is_bearer_token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Reads a token endpoint's 200 answer received at `now`: the token, when to renew it (a
/// minute before expiry, or at half-life for short-lived tokens, on a life within
/// [`MIN_TOKEN_LIFE`] and [`MAX_TOKEN_LIFE`]: see [`token_life`]), and whether its
/// `expires_in` had to be clamped.
///
/// # Errors
/// [`AtlasError::Decode`] when the body is not a token answer or its token is not a bearer
/// token.
pub(super) fn read_token_answer(
    body: &[u8],
    now: Instant,
) -> Result<(String, Instant, bool), AtlasError> {
    let decode = |message: String| AtlasError::Decode {
        endpoint: Endpoint::Token,
        message,
    };
    if !super::is_json_object(body) {
        return Err(decode(format!(
            "token answer is not a JSON object: {}",
            super::result::snippet(body)
        )));
    }
    let answer: OAuthAnswer = serde_json::from_slice(body)
        .map_err(|e| decode(format!("token answer is not a token: {e}")))?;
    if !is_bearer_token(&answer.access_token) {
        return Err(decode(format!(
            "token answer's access_token is not a bearer token (RFC 6750 b64token): {}",
            super::result::snippet(answer.access_token.as_bytes())
        )));
    }
    let (life, clamped) = token_life(answer.expires_in);
    let margin = Duration::from_secs(60).min(life / 2);
    Ok((answer.access_token, now + (life - margin), clamped))
}

impl AuthState {
    /// The state of a client that signs in with `credentials`, with a token cache of its own.
    pub(super) fn new(credentials: &Credentials) -> AuthState {
        match credentials {
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
                shared: TokenCache::default(),
            },
        }
    }

    /// The Digest nonces, locked (`None` with OAuth).
    fn digest_nonces(&self) -> Option<std::sync::MutexGuard<'_, DigestNonces>> {
        match self {
            AuthState::Digest { shared, .. } => Some(
                shared
                    .0
                    .digest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            ),
            AuthState::OAuth { .. } => None,
        }
    }

    /// The `Authorization` header of `request`'s next answer: over its own challenge's nonce
    /// while there is one, else the shared nonce, with the next count of that nonce (`None`
    /// before the first challenge, and with OAuth).
    pub(super) fn digest_authorization(
        &self,
        method: &str,
        path_and_query: &str,
        request: &mut DigestRequest,
    ) -> Option<String> {
        let AuthState::Digest { user, password, .. } = self else {
            return None;
        };
        let Some((challenge, nc)) = self.digest_nonces()?.next_answer(request) else {
            request.answered = None;
            return None;
        };
        let cnonce = format!("{:016x}", rand::thread_rng().r#gen::<u64>());
        Some(challenge.authorization(user, password.expose(), method, path_and_query, nc, &cnonce))
    }

    /// Keeps `fresh`, the challenge of a 401 to `request`, for that request's next answer
    /// (and for every request while no nonce is shared and the credentials are not trusted);
    /// when the 401 refused an answer (`refused_answer`), that answer's nonce is done with.
    /// Digest only.
    pub(super) fn digest_challenged(
        &self,
        request: &mut DigestRequest,
        fresh: Challenge,
        refused_answer: bool,
    ) {
        if let Some(mut nonces) = self.digest_nonces() {
            if refused_answer {
                nonces.refused(request);
            }
            nonces.offered(request, fresh);
        }
    }

    /// `request`'s answer was accepted: the credentials are right, and the nonce it used is
    /// the one new requests answer.
    pub(super) fn digest_accepted(&self, request: &DigestRequest) {
        if let Some(mut nonces) = self.digest_nonces() {
            nonces.accepted = Some(Instant::now());
            if let Some(nonce) = &request.answered
                && nonces.find(nonce).is_some_and(|u| !u.refused)
            {
                nonces.shared = Some(nonce.clone());
            }
        }
    }

    /// A request concluded that the credentials are wrong: until they are accepted again, a
    /// plain challenge after an answer is answered once more only.
    pub(super) fn digest_credentials_refused(&self) {
        if let Some(mut nonces) = self.digest_nonces() {
            nonces.accepted = None;
        }
    }

    /// Whether an answer was accepted within [`DIGEST_TRUST_WINDOW`] and no request has
    /// concluded since that the credentials are wrong.
    pub(super) fn digest_accepted_recently(&self) -> bool {
        self.digest_nonces().is_some_and(|n| n.trusted())
    }
}

impl AtlasClient {
    /// A bearer token, fetched when none is cached or the cached one is about to expire.
    ///
    /// The token endpoint has its own gate, shared with the token: a `Retry-After` on one
    /// org's calls never holds the token that other orgs need, and the lock every sharing org
    /// waits on is never held while a gate holds the request back.
    pub(super) async fn bearer(&self) -> Result<String, AtlasError> {
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
                Err(Hold::RetryAfter(until)) => return Err(gate::held(Endpoint::Token, until)),
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
                let now = Instant::now();
                let (access, renew_at, clamped) = read_token_answer(&reply.body, now)?;
                if clamped && !token.0.life_clamp_reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        renew_in_secs = renew_at.saturating_duration_since(now).as_secs(),
                        "the token endpoint's expires_in is out of range (60 s to 24 h): \
                         renewing on the clamped life instead (logged once)"
                    );
                }
                slot.cached = Some(CachedToken {
                    token: access.clone(),
                    renew_at,
                    obtained: now,
                    after_refusal: std::mem::take(&mut slot.refused),
                });
                Ok(access)
            }
            401 | 400 => Err(AtlasError::Auth {
                endpoint: Endpoint::Token,
                status: reply.status,
                detail: error_detail(&reply.body),
            }),
            _ => Err(self.status_error(Endpoint::Token, reply, &token.0.gate)),
        }
    }

    /// After a 401 on an OAuth request: `true` to send once more with a renewed (or newer)
    /// token, `false` when the 401 is a missing role, not a bad token. A token that already
    /// replaced a refused one and is younger than [`FRESH_TOKEN_AGE`] is not replaced again:
    /// a missing role costs one renewal, not one per request.
    pub(super) async fn renew_after_401(&self, token: &TokenCache, sent: Option<&String>) -> bool {
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
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use reqwest::header::{HeaderMap, RETRY_AFTER};

    use super::*;
    use crate::atlas::auth::tests::nonce_and_count;
    use crate::atlas::request::Reply;
    use crate::atlas::tests::{api_key, client, service_account};

    fn cache_of(c: &AtlasClient) -> &TokenCache {
        match &c.auth {
            AuthState::OAuth { token, .. } => token,
            AuthState::Digest { .. } => panic!("a service account signs in with OAuth"),
        }
    }

    fn too_many_requests(secs: u64) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, secs.into());
        Reply {
            status: 429,
            headers,
            body: Bytes::new(),
        }
    }

    async fn cache_token(cache: &TokenCache, token: &str, after_refusal: bool) {
        let now = Instant::now();
        cache.0.slot.lock().await.cached = Some(CachedToken {
            token: token.to_owned(),
            renew_at: now + Duration::from_secs(3600),
            obtained: now,
            after_refusal,
        });
    }

    /// A token endpoint on loopback that answers every request with `answer` (a JSON body),
    /// and counts the requests. Returns its base URL and the count.
    async fn token_endpoint(answer: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        let app = axum::Router::new().route(
            "/api/oauth/token",
            axum::routing::post(move || {
                seen.fetch_add(1, Ordering::SeqCst);
                async move { ([(CONTENT_TYPE, "application/json")], answer) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, count)
    }

    /// A service-account client of the token endpoint at `base_url`.
    fn client_of(base_url: String) -> AtlasClient {
        let mut settings = client(&service_account()).settings.clone();
        settings.base_url = base_url;
        AtlasClient::new(
            reqwest::Client::new(),
            settings,
            crate::atlas::tests::ORG,
            &service_account(),
            Arc::new(crate::metrics::SelfMetrics::new("1h")),
        )
        .expect("client")
    }

    /// An `expires_in` too large for a renewal time (`u64::MAX` seconds) neither panics nor
    /// fetches a token per request: the token is used again.
    #[tokio::test]
    async fn a_huge_expires_in_is_clamped_not_a_panic() {
        let (url, count) =
            token_endpoint(r#"{"access_token":"t1","expires_in":18446744073709551615}"#).await;
        let c = client_of(url);
        assert_eq!(c.bearer().await.expect("a token"), "t1");
        assert_eq!(c.bearer().await.expect("a token"), "t1");
        assert_eq!(count.load(Ordering::SeqCst), 1, "one token for both");
    }

    /// `expires_in: 0` does not make every request mint a token: the token lives the
    /// shortest believed life (60 s) and is used again meanwhile.
    #[tokio::test]
    async fn a_zero_expires_in_does_not_mint_a_token_per_request() {
        let (url, count) = token_endpoint(r#"{"access_token":"t0","expires_in":0}"#).await;
        let c = client_of(url);
        for _ in 0..3 {
            assert_eq!(c.bearer().await.expect("a token"), "t0");
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "one token for three requests"
        );
    }

    /// A token life is what the answer says within 60 s and 24 h (an hour when absent), and
    /// says when it was clamped.
    #[test]
    fn token_life_is_clamped_to_a_sane_range() {
        assert_eq!(token_life(Some(3600)), (Duration::from_secs(3600), false));
        assert_eq!(token_life(None), (Duration::from_secs(3600), false));
        assert_eq!(token_life(Some(0)), (MIN_TOKEN_LIFE, true));
        assert_eq!(token_life(Some(u64::MAX)), (MAX_TOKEN_LIFE, true));
        assert_eq!(token_life(Some(60)), (MIN_TOKEN_LIFE, false));
    }

    /// A 429 from the token endpoint holds the token gate only: the next token request fails
    /// at once with the time left, while the org's own calls go out.
    #[tokio::test(start_paused = true)]
    async fn a_held_token_endpoint_does_not_hold_the_org() {
        let c = client(&service_account());
        let e = c.status_error(
            Endpoint::Token,
            too_many_requests(600),
            &cache_of(&c).0.gate,
        );
        assert_eq!(e.reason(), crate::model::Reason::RateLimited);
        let start = Instant::now();
        match c.bearer().await {
            Err(AtlasError::RateLimited {
                endpoint: Endpoint::Token,
                retry_after: Some(left),
            }) => assert_eq!(left, Duration::from_secs(600)),
            other => panic!("expected the token endpoint rate limited, got {other:?}"),
        }
        assert!(!c.rate_limited(), "the org's queries are not held");
        c.gates
            .for_request(Endpoint::Create, "/c")
            .admit(Endpoint::Create)
            .await
            .expect("the org's gate is open");
        assert_eq!(Instant::now(), start, "nothing waited");
    }

    /// A 429 on the Cost Explorer holds the org's queries and leaves the token endpoint's
    /// budget, which other orgs share, alone.
    #[tokio::test(start_paused = true)]
    async fn a_held_org_does_not_hold_the_token_endpoint() {
        let c = client(&service_account());
        let cost = c.gates.for_request(Endpoint::Create, "/c");
        c.status_error(Endpoint::Create, too_many_requests(600), &cost);
        assert!(c.rate_limited());
        assert_eq!(cache_of(&c).0.gate.held_until(), None);
        assert_eq!(cache_of(&c).0.gate.try_acquire(), Ok(()));
    }

    /// The token endpoint's budget is its own 50 a minute, whatever the org's budget.
    #[tokio::test(start_paused = true)]
    async fn the_token_budget_is_50_a_minute() {
        let gate = &TokenCache::default().0.gate;
        for _ in 0..gate::TOKEN_REQUESTS_PER_MINUTE {
            assert_eq!(gate.try_acquire(), Ok(()));
        }
        assert!(matches!(gate.try_acquire(), Err(Hold::Window(_))));
    }

    /// Orgs that share a token cache share its hold: a 429 on one org's token request holds
    /// the other's too.
    #[tokio::test(start_paused = true)]
    async fn orgs_sharing_a_token_cache_share_its_hold() {
        let shared = TokenCache::default();
        let a = client(&service_account()).with_token_cache(shared.clone());
        let b = client(&service_account()).with_token_cache(shared);
        a.status_error(Endpoint::Token, too_many_requests(60), &cache_of(&a).0.gate);
        assert!(matches!(
            b.bearer().await,
            Err(AtlasError::RateLimited {
                endpoint: Endpoint::Token,
                ..
            })
        ));
    }

    /// A cached token needs no token request, so a hold on the token endpoint does not
    /// stop it.
    #[tokio::test(start_paused = true)]
    async fn a_cached_token_is_served_while_the_token_endpoint_is_held() {
        let c = client(&service_account());
        cache_token(cache_of(&c), "cached", false).await;
        cache_of(&c).0.gate.defer(Duration::from_secs(600));
        assert_eq!(c.bearer().await.expect("cached"), "cached");
    }

    /// A 401 on the cached token drops it for one renewal; a 401 on a token that already
    /// replaced a refused one, minted less than five minutes ago, is a missing role and is
    /// not renewed again.
    #[tokio::test(start_paused = true)]
    async fn a_401_renews_a_token_once_not_per_request() {
        let c = client(&service_account());
        let cache = cache_of(&c);
        cache_token(cache, "old", false).await;
        assert!(c.renew_after_401(cache, Some(&"old".to_owned())).await);
        {
            let slot = cache.0.slot.lock().await;
            assert!(slot.cached.is_none() && slot.refused);
        }
        cache_token(cache, "new", true).await;
        assert!(!c.renew_after_401(cache, Some(&"new".to_owned())).await);
        // Another request's 401 on a token already replaced: send again with the new one.
        assert!(c.renew_after_401(cache, Some(&"old".to_owned())).await);
        assert!(cache.0.slot.lock().await.cached.is_some());
        tokio::time::advance(FRESH_TOKEN_AGE).await;
        assert!(c.renew_after_401(cache, Some(&"new".to_owned())).await);
    }

    /// A token answer's `expires_in` as large as JSON allows is a token kept a day (renewed
    /// a minute before), not an overflow of the clock (it panicked before).
    #[test]
    fn a_huge_expires_in_keeps_the_token_a_day_without_overflow() {
        let now = Instant::now();
        let body = br#"{"access_token":"eyJ.a-b_c","expires_in":18446744073709551615}"#;
        let (token, renew_at, clamped) = read_token_answer(body, now).expect("a token");
        assert_eq!(token, "eyJ.a-b_c");
        assert_eq!(renew_at, now + MAX_TOKEN_LIFE - Duration::from_secs(60));
        assert!(clamped);
        // Below a minute, a minute (renewed at half-life), so a token is not minted per request.
        let (_, short, clamped) =
            read_token_answer(br#"{"access_token":"t","expires_in":10}"#, now).expect("a token");
        assert_eq!(short, now + Duration::from_secs(30));
        assert!(clamped);
        let (_, default, clamped) =
            read_token_answer(br#"{"access_token":"t"}"#, now).expect("a token");
        assert_eq!(default, now + Duration::from_secs(3600 - 60));
        assert!(!clamped);
    }

    /// A token that could not go into `Authorization: Bearer` (a space, a control character,
    /// non-ASCII, nothing) is a decode error of the token endpoint, named, instead of a token
    /// that fails every request it is sent with.
    #[test]
    fn a_token_that_is_no_bearer_token_is_a_decode_error() {
        let now = Instant::now();
        for bad in [r#""""#, r#""a b""#, r#""a\nb""#, r#""é""#, r#""==""#, "1"] {
            let body = format!(r#"{{"access_token":{bad},"expires_in":3600}}"#);
            match read_token_answer(body.as_bytes(), now) {
                Err(AtlasError::Decode {
                    endpoint: Endpoint::Token,
                    message,
                }) => assert!(message.contains("token"), "{bad}: {message}"),
                other => panic!("{bad}: expected a decode error, got {other:?}"),
            }
        }
        assert!(read_token_answer(br#"{"access_token":"aGk+/x=="}"#, now).is_ok());
        // serde's derive would read an array by position.
        assert!(read_token_answer(br#"["aGk", 60]"#, now).is_err());
    }

    fn challenge(nonce: &str) -> Challenge {
        Challenge::parse(&format!(r#"Digest realm="r", nonce="{nonce}", qop="auth""#))
            .expect("challenge")
    }

    /// A Digest client sends no `Authorization` before the first challenge; then a request
    /// answers the challenge it got, and so do later requests (the first nonce offered is
    /// shared until one is accepted), with a count that rises per nonce. OAuth has no Digest
    /// answer.
    #[test]
    fn digest_answers_count_per_nonce_from_one() {
        let auth = AuthState::new(&api_key());
        let mut first = DigestRequest::default();
        assert_eq!(auth.digest_authorization("GET", "/x", &mut first), None);
        auth.digest_challenged(&mut first, challenge("n1"), false);
        let a = auth
            .digest_authorization("GET", "/x", &mut first)
            .expect("answer");
        let b = auth
            .digest_authorization("POST", "/y", &mut DigestRequest::default())
            .expect("answer");
        assert_eq!(
            nonce_and_count(&a),
            ("n1".to_owned(), "00000001".to_owned())
        );
        assert_eq!(
            nonce_and_count(&b),
            ("n1".to_owned(), "00000002".to_owned())
        );
        assert!(b.contains(r#"uri="/y""#), "{b}");
        let oauth = AuthState::new(&service_account());
        let mut r = DigestRequest::default();
        oauth.digest_challenged(&mut r, challenge("n"), false);
        assert_eq!(oauth.digest_authorization("GET", "/x", &mut r), None);
    }

    /// A request challenged with a new nonce answers it with `nc=00000001` while other
    /// requests go on over the shared nonce and its count; once that answer is accepted, its
    /// nonce is the shared one, its count going on from there.
    #[test]
    fn a_challenged_request_answers_its_own_nonce_first_and_shares_it_once_accepted() {
        let auth = AuthState::new(&api_key());
        let mut setup = DigestRequest::default();
        auth.digest_challenged(&mut setup, challenge("old"), false);
        for _ in 0..3 {
            auth.digest_authorization("GET", "/x", &mut DigestRequest::default());
        }
        let mut retried = DigestRequest::default();
        auth.digest_authorization("GET", "/x", &mut retried);
        auth.digest_challenged(&mut retried, challenge("new"), true);
        let own = auth
            .digest_authorization("GET", "/x", &mut retried)
            .expect("answer");
        assert_eq!(nonce_and_count(&own), ("new".into(), "00000001".into()));
        let other = auth
            .digest_authorization("GET", "/x", &mut DigestRequest::default())
            .expect("answer");
        assert_eq!(nonce_and_count(&other), ("old".into(), "00000005".into()));
        auth.digest_accepted(&retried);
        let later = auth
            .digest_authorization("GET", "/x", &mut DigestRequest::default())
            .expect("answer");
        assert_eq!(nonce_and_count(&later), ("new".into(), "00000002".into()));
    }

    /// A nonce offered again (to another request, or the shared one) keeps its count, so no
    /// `nc` is sent twice over one nonce, and it is kept as the newest.
    #[test]
    fn a_nonce_offered_again_keeps_its_count() {
        let auth = AuthState::new(&api_key());
        auth.digest_challenged(&mut DigestRequest::default(), challenge("shared"), false);
        let mut a = DigestRequest::default();
        auth.digest_challenged(&mut a, challenge("n"), false);
        auth.digest_authorization("GET", "/x", &mut a);
        let mut b = DigestRequest::default();
        auth.digest_challenged(&mut b, challenge("n"), false);
        let again = auth
            .digest_authorization("GET", "/x", &mut b)
            .expect("answer");
        assert_eq!(nonce_and_count(&again), ("n".into(), "00000002".into()));
        for i in 0..NONCES_KEPT - 1 {
            auth.digest_challenged(
                &mut DigestRequest::default(),
                challenge(&format!("m{i}")),
                false,
            );
            if i == NONCES_KEPT / 2 {
                auth.digest_challenged(&mut b, challenge("n"), true);
            }
        }
        let kept = auth
            .digest_authorization("GET", "/x", &mut b)
            .expect("answer");
        assert_eq!(nonce_and_count(&kept), ("n".into(), "00000003".into()));
    }

    /// Requests on many threads answering one nonce at once get every count from 1 to their
    /// number exactly once.
    #[test]
    fn concurrent_answers_over_one_nonce_get_distinct_counts() {
        let auth = Arc::new(AuthState::new(&api_key()));
        auth.digest_challenged(&mut DigestRequest::default(), challenge("n"), false);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let auth = auth.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| {
                            let h = auth
                                .digest_authorization("GET", "/x", &mut DigestRequest::default())
                                .expect("answer");
                            u32::from_str_radix(&nonce_and_count(&h).1, 16).expect("hex nc")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut counts: Vec<u32> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=400).collect::<Vec<_>>());
    }

    /// Two orgs' clients of one API key, sharing a cache, count one nonce together and share
    /// the acceptance: neither sends an `nc` the other sent.
    #[test]
    fn clients_sharing_a_cache_count_a_nonce_together() {
        let cache = TokenCache::default();
        let [a, b] = [(), ()].map(|()| {
            let mut auth = AuthState::new(&api_key());
            if let AuthState::Digest { shared, .. } = &mut auth {
                *shared = cache.clone();
            }
            auth
        });
        let mut first = DigestRequest::default();
        a.digest_challenged(&mut first, challenge("n"), false);
        let from_a = a.digest_authorization("GET", "/x", &mut first);
        let from_b = b.digest_authorization("GET", "/x", &mut DigestRequest::default());
        assert_eq!(nonce_and_count(&from_a.expect("a")).1, "00000001");
        assert_eq!(nonce_and_count(&from_b.expect("b")).1, "00000002");
        a.digest_accepted(&first);
        assert!(b.digest_accepted_recently());
    }

    /// Many newer challenges push old nonces out, never the shared one; a request whose own
    /// nonce went answers the shared nonce (its count known) rather than restart a count.
    #[test]
    fn old_nonces_go_first_and_the_shared_one_stays() {
        let auth = AuthState::new(&api_key());
        let mut first = DigestRequest::default();
        auth.digest_challenged(&mut first, challenge("shared"), false);
        auth.digest_authorization("GET", "/x", &mut first);
        let mut stale = DigestRequest::default();
        auth.digest_challenged(&mut stale, challenge("pushed-out"), false);
        for i in 0..NONCES_KEPT {
            auth.digest_challenged(
                &mut DigestRequest::default(),
                challenge(&format!("n{i}")),
                false,
            );
        }
        let h = auth
            .digest_authorization("GET", "/x", &mut stale)
            .expect("answer");
        assert_eq!(nonce_and_count(&h), ("shared".into(), "00000002".into()));
        let AuthState::Digest { shared, .. } = &auth else {
            panic!("an API key signs in with Digest");
        };
        assert_eq!(
            shared.0.digest.lock().expect("lock").offered.len(),
            NONCES_KEPT
        );
    }

    /// Credentials count as accepted recently from an accepted answer until the trust window
    /// ends, or until a request concludes they are wrong; never before the first acceptance.
    #[tokio::test(start_paused = true)]
    async fn digest_trust_lasts_the_window_or_until_a_refusal() {
        let auth = AuthState::new(&api_key());
        assert!(!auth.digest_accepted_recently());
        let mut r = DigestRequest::default();
        auth.digest_challenged(&mut r, challenge("n"), false);
        auth.digest_authorization("GET", "/x", &mut r);
        auth.digest_accepted(&r);
        assert!(auth.digest_accepted_recently());
        tokio::time::advance(DIGEST_TRUST_WINDOW - Duration::from_secs(1)).await;
        assert!(auth.digest_accepted_recently());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!auth.digest_accepted_recently());
        auth.digest_accepted(&r);
        auth.digest_credentials_refused();
        assert!(!auth.digest_accepted_recently());
        assert!(!AuthState::new(&service_account()).digest_accepted_recently());
    }
}
