//! Authentication state: the OAuth token cache (shared by the orgs of one service account,
//! with the token endpoint's own budget) and the Digest challenge of an API key.

use std::sync::atomic::{AtomicU32, Ordering};
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

/// How a client signs in: OAuth with a service account, or Digest with an API key.
pub(super) enum AuthState {
    /// A service account: a bearer token from the token endpoint, cached.
    OAuth {
        client_id: String,
        secret: Secret,
        token: TokenCache,
    },
    /// An API key: HTTP Digest, answering the last challenge Atlas sent.
    Digest {
        user: String,
        password: Secret,
        // std Mutex: cloned or replaced, never held across an await.
        challenge: Mutex<Option<Challenge>>,
        /// The nonce count of the answers sent.
        nc: AtomicU32,
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
            gate: RateGate::new(gate::TOKEN_REQUESTS_PER_MINUTE),
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
                challenge: Mutex::new(None),
                nc: AtomicU32::new(0),
            },
        }
    }

    /// The `Authorization` header answering the last Digest challenge, if there is one
    /// (`None` before the first challenge, and with OAuth).
    pub(super) fn digest_authorization(
        &self,
        method: &str,
        path_and_query: &str,
    ) -> Option<String> {
        let AuthState::Digest {
            user,
            password,
            challenge,
            nc,
        } = self
        else {
            return None;
        };
        let current = challenge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let n = nc.fetch_add(1, Ordering::Relaxed) + 1;
        let cnonce = format!("{:016x}", rand::thread_rng().r#gen::<u64>());
        Some(current.authorization(user, password.expose(), method, path_and_query, n, &cnonce))
    }

    /// Answers `fresh` from now on (Digest only).
    pub(super) fn remember_challenge(&self, fresh: Challenge) {
        if let AuthState::Digest { challenge, .. } = self {
            *challenge.lock().unwrap_or_else(PoisonError::into_inner) = Some(fresh);
        }
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

    /// A Digest client sends no `Authorization` before the first challenge, then answers
    /// the last one with a rising nonce count; OAuth has no Digest answer.
    #[test]
    fn digest_answers_the_last_challenge_with_a_rising_count() {
        let auth = AuthState::new(&api_key());
        assert_eq!(auth.digest_authorization("GET", "/x"), None);
        let challenge =
            Challenge::parse(r#"Digest realm="r", nonce="n1", qop="auth""#).expect("challenge");
        auth.remember_challenge(challenge);
        let first = auth.digest_authorization("GET", "/x").expect("answer");
        let second = auth.digest_authorization("POST", "/y").expect("answer");
        assert!(
            first.contains(r#"nonce="n1""#) && first.contains("nc=00000001"),
            "{first}"
        );
        assert!(
            second.contains("nc=00000002") && second.contains(r#"uri="/y""#),
            "{second}"
        );
        let oauth = AuthState::new(&service_account());
        oauth.remember_challenge(Challenge::parse(r#"Digest nonce="n""#).expect("challenge"));
        assert_eq!(oauth.digest_authorization("GET", "/x"), None);
    }
}
