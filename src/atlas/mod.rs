//! The Atlas client: authentication, rate limiting, the two Cost Explorer calls and
//! discovery of projects and clusters.
//!
//! One [`AtlasClient`] serves one org. It only ever talks to the configured base URL, puts
//! only validated ids into URL paths, and keeps one request budget per Atlas endpoint set and
//! scope (the Cost Explorer and the project listing per org at the configured number a
//! minute, cluster and Flex cluster listings per project, the token endpoint with the shared
//! token); a 429 (Retry-After first) holds only its own set and scope.
//!
//! It depends on the model, the months and the self-metrics, never on the configuration:
//! its callers hand it [`ClientSettings`], [`Credentials`] and a [`UsageQuery`].
//!
//! - `error`: [`AtlasError`] and its `reason` label;
//! - `gate`: the request budgets per endpoint set and scope, `Retry-After`, backoff;
//! - [`auth`]: the wire formats of Digest and Basic, and when to answer a Digest challenge
//!   again; `session`: the OAuth token cache and the Digest nonces, shared by the orgs of
//!   one set of credentials;
//! - `request`: one authenticated request, with its gate, size cap, metrics and retries;
//! - `discovery`: projects, clusters and Flex clusters, page by page;
//! - `usage`: a Cost Explorer query, created and polled until ready;
//! - [`invoices`]: the pending and closed invoices and their line items (issue 22);
//! - [`result`]: the JSON and CSV result parsers;
//! - `fuzzing`: the private parsers' entry points for the fuzz targets in `fuzz/`.

pub mod auth;
mod discovery;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod gate;
pub mod invoices;
mod request;
pub mod result;
mod session;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::SelfMetrics;
use crate::model::{Credentials, is_atlas_id};

pub use crate::model::{Endpoint, Reason};
pub use discovery::{CLUSTERS_MEDIA_TYPE, Cluster, FLEX_MEDIA_TYPE, PAGE_SIZE, Project, Tag};
pub use error::AtlasError;
pub use session::TokenCache;
pub use usage::{CSV_MEDIA_TYPE, QueryStats, UsageQuery};

use gate::Gates;
use session::AuthState;

/// Whether a JSON answer is an object. serde's derive also reads a struct from an array, by
/// position (`["X", "y"]` would be an error body with code `X`), so every answer read into a
/// struct is checked with this first.
fn is_json_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The only API version the Cost Explorer operations declare.
pub const JSON_MEDIA_TYPE: &str = "application/vnd.atlas.2023-01-01+json";

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

/// The Atlas client of one org.
pub struct AtlasClient {
    http: reqwest::Client,
    settings: ClientSettings,
    org_id: String,
    auth: AuthState,
    gates: Gates,
    metrics: Arc<SelfMetrics>,
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
        Ok(AtlasClient {
            http,
            gates: Gates::new(settings.requests_per_minute),
            settings,
            org_id: org_id.to_owned(),
            auth: AuthState::new(credentials),
            metrics,
        })
    }

    /// Makes this client share `cache` with the other clients of the same credentials: the
    /// OAuth token of a service account, or the Digest nonces of an API key.
    #[must_use]
    pub fn with_token_cache(mut self, cache: TokenCache) -> AtlasClient {
        match &mut self.auth {
            AuthState::OAuth { token, .. } => *token = cache,
            AuthState::Digest { shared, .. } => *shared = cache,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secret;

    /// An org id that is an Atlas id.
    pub(super) const ORG: &str = "66d7254246a21a41036ff2e9";

    /// A client that can reach nothing: the tests that use it never send a request.
    pub(super) fn client(credentials: &Credentials) -> AtlasClient {
        AtlasClient::new(
            reqwest::Client::new(),
            ClientSettings {
                base_url: "http://127.0.0.1:9".to_owned(),
                request_timeout: Duration::from_secs(1),
                poll_interval: Duration::from_secs(1),
                requests_per_minute: 100,
                max_response_bytes: 1 << 20,
            },
            ORG,
            credentials,
            Arc::new(SelfMetrics::new("1h")),
        )
        .expect("client")
    }

    /// API-key credentials.
    pub(super) fn api_key() -> Credentials {
        Credentials::ApiKey {
            public_key: "p".to_owned(),
            private_key: Secret::new("k"),
        }
    }

    /// Service-account credentials.
    pub(super) fn service_account() -> Credentials {
        Credentials::ServiceAccount {
            client_id: "mdb_sa_id_x".to_owned(),
            client_secret: Secret::new("mdb_sa_sk_y"),
        }
    }

    /// A client is only made for an org id that can go into a URL path.
    #[test]
    fn a_client_needs_an_atlas_org_id() {
        for bad in [
            "",
            "../groups",
            "66D7254246A21A41036FF2E9",
            "66d7254246a21a41036ff2e",
        ] {
            let made = AtlasClient::new(
                reqwest::Client::new(),
                client(&api_key()).settings.clone(),
                bad,
                &api_key(),
                Arc::new(SelfMetrics::new("1h")),
            );
            assert!(
                matches!(made, Err(AtlasError::InvalidId(ref id)) if id == bad),
                "{bad:?}"
            );
        }
        assert_eq!(client(&api_key()).org_id(), ORG);
    }

    /// `with_token_cache` shares the cache of a service account (its token) and of an API
    /// key (its Digest nonces).
    #[test]
    fn a_token_cache_is_shared_by_both_kinds_of_credentials() {
        let cache = TokenCache::default();
        let account = client(&service_account()).with_token_cache(cache.clone());
        let AuthState::OAuth { token, .. } = &account.auth else {
            panic!("a service account signs in with OAuth");
        };
        assert!(token.same_as(&cache));
        assert!(!TokenCache::default().same_as(&cache));
        let key = client(&api_key()).with_token_cache(cache.clone());
        let AuthState::Digest { shared, .. } = &key.auth else {
            panic!("an API key signs in with Digest");
        };
        assert!(shared.same_as(&cache));
    }
}
