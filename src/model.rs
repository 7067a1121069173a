//! The domain model, at the bottom of the crate: it imports nothing of the crate, and every
//! layer above takes its vocabulary from here.
//!
//! - [`is_atlas_id`]: the one check of an Atlas id (org, project, cluster), and [`AtlasId`],
//!   an id that passed it;
//! - [`usd_to_micros`]: the one conversion of USD to micro-dollars, the unit of every amount;
//! - [`GroupBy`]: the Cost Explorer dimension a query groups by;
//! - [`Endpoint`] and [`Reason`]: the Atlas endpoints and the failure reasons, which the self
//!   metrics take as label values;
//! - [`ConfigError`]: a configuration mistake, one line naming the flag or key;
//! - [`Shard`] and [`fnv1a64`]: which orgs a replica exports, by a hash fixed by its
//!   definition.
//!
//! - [`Secret`] and [`Credentials`]: how the exporter signs in to Atlas, never printed;
//! - [`ResultFormat`]: JSON or CSV results;
//! - [`Clock`]: where "now" comes from.
//!
//! Months are in [`crate::month`], which imports nothing either; the cost series (label set,
//! typed key, amount) in [`crate::series`], which imports only these two.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

/// Checks an Atlas org, project or cluster id: exactly 24 lowercase hex characters.
/// Every id goes through this before it is put into a URL path.
pub fn is_atlas_id(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An Atlas org, project or cluster id that passed [`is_atlas_id`]: holding one is the proof
/// that it was checked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AtlasId(Box<str>);

impl AtlasId {
    /// `s` as an id, when it is one.
    pub fn parse(s: &str) -> Option<AtlasId> {
        is_atlas_id(s).then(|| AtlasId(Box::from(s)))
    }

    /// The id's 24 characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AtlasId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for AtlasId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The largest amount of USD taken for a real one: anything bigger is a broken value, not a
/// bill.
pub const MAX_USD: f64 = 1e12;

/// USD to micro-dollars (millionths of a dollar, the unit every amount is kept in), rounded
/// to the nearest; `None` for NaN, infinities and amounts of [`MAX_USD`] or more either way.
pub fn usd_to_micros(usd: f64) -> Option<i64> {
    if usd.is_finite() && usd.abs() < MAX_USD {
        // Below 1e18 micro-dollars: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        Some((usd * 1e6).round() as i64)
    } else {
        None
    }
}

/// The Cost Explorer `groupBy` dimension.
///
/// The spec says of `groupBy`: "At least one filter value needs to be provided for a
/// dimension to be used": `projects` needs project ids, `clusters` cluster ids, `services` a
/// services list. [`GroupBy::Ungrouped`] sends no `groupBy` at all, which is how the one real
/// request in public code got one row per service and month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// No `groupBy`: one row per service and month (the default `services` query).
    Ungrouped,
    /// One row per org (and month); `organizations` holds the org's id.
    Organizations,
    /// One row per project; needs project ids (discovered when not configured).
    Projects,
    /// One row per cluster; needs cluster unique ids (discovered when not configured).
    Clusters,
    /// One row per service; needs a `services` list.
    Services,
}

impl GroupBy {
    /// The value Atlas expects in `groupBy`; `None` for [`GroupBy::Ungrouped`], which sends
    /// no `groupBy`.
    pub fn atlas_value(self) -> Option<&'static str> {
        match self {
            GroupBy::Ungrouped => None,
            other => Some(other.as_str()),
        }
    }

    /// The name used in the configuration and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Ungrouped => "ungrouped",
            GroupBy::Organizations => "organizations",
            GroupBy::Projects => "projects",
            GroupBy::Clusters => "clusters",
            GroupBy::Services => "services",
        }
    }
}

/// A configuration error: one line that names what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The Atlas endpoints the exporter calls; the `endpoint` label takes these values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /api/oauth/token`.
    Token,
    /// `POST .../billing/costExplorer/usage`.
    Create,
    /// `GET .../billing/costExplorer/usage/{token}`.
    Poll,
    /// `GET /api/atlas/v2/orgs/{orgId}/groups`.
    Projects,
    /// `GET /api/atlas/v2/groups/{groupId}/clusters`.
    Clusters,
    /// `GET /api/atlas/v2/groups/{groupId}/flexClusters`.
    FlexClusters,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Token,
        Endpoint::Create,
        Endpoint::Poll,
        Endpoint::Projects,
        Endpoint::Clusters,
        Endpoint::FlexClusters,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Create => "create",
            Endpoint::Poll => "poll",
            Endpoint::Projects => "projects",
            Endpoint::Clusters => "clusters",
            Endpoint::FlexClusters => "flex_clusters",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a refresh failed (or rows were skipped): the `reason` label, a small fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// 429 from Atlas.
    RateLimited,
    /// 401: credentials refused.
    Auth,
    /// 403: a role or the IP access list is missing.
    Forbidden,
    /// A request timed out (not counted for polls, where it means "not ready").
    Timeout,
    /// 5xx from Atlas.
    ServerError,
    /// Another 4xx from Atlas.
    ClientError,
    /// No answer: connection refused or reset, DNS failure.
    Transport,
    /// The answer could not be read as a result.
    Decode,
    /// The result was not ready before the query's deadline.
    Deadline,
    /// The answer was larger than the configured cap.
    TooLarge,
    /// Rows skipped because their amount or date was invalid.
    InvalidRow,
}

impl Reason {
    /// Every reason, for pre-creating the error counters.
    pub const ALL: [Reason; 11] = [
        Reason::RateLimited,
        Reason::Auth,
        Reason::Forbidden,
        Reason::Timeout,
        Reason::ServerError,
        Reason::ClientError,
        Reason::Transport,
        Reason::Decode,
        Reason::Deadline,
        Reason::TooLarge,
        Reason::InvalidRow,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::Auth => "auth",
            Reason::Forbidden => "forbidden",
            Reason::Timeout => "timeout",
            Reason::ServerError => "server_error",
            Reason::ClientError => "client_error",
            Reason::Transport => "transport",
            Reason::Decode => "decode",
            Reason::Deadline => "deadline",
            Reason::TooLarge => "too_large",
            Reason::InvalidRow => "invalid_row",
        }
    }
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Which orgs this replica exports: those whose hash falls in its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Number of shards (replicas that split the orgs), at least 1.
    pub count: u32,
    /// This replica's shard, `0..count`.
    pub index: u32,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard { count: 1, index: 0 }
    }
}

impl Shard {
    /// Validates `--shard.count` and `--shard.index`.
    ///
    /// # Errors
    /// A one-line error naming the flag when `count` is 0 or `index` is not below `count`.
    pub fn new(count: u32, index: u32) -> Result<Shard, ConfigError> {
        if count == 0 {
            return Err(ConfigError("--shard.count: must be at least 1".to_owned()));
        }
        if index >= count {
            return Err(ConfigError(format!(
                "--shard.index: {index} must be below --shard.count ({count}): 0 to {}",
                count - 1
            )));
        }
        Ok(Shard { count, index })
    }

    /// The shard an org belongs to.
    pub fn of(org_id: &str, count: u32) -> u32 {
        let h = fnv1a64(org_id.as_bytes()) % u64::from(count.max(1));
        u32::try_from(h).unwrap_or(0)
    }

    /// Whether this replica exports `org_id`.
    pub fn owns(&self, org_id: &str) -> bool {
        Shard::of(org_id, self.count) == self.index
    }
}

/// A secret string: never printed, not even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the exporter authenticates to Atlas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// OAuth 2.0 client credentials of a service account (recommended by MongoDB).
    ServiceAccount {
        /// Client id (not secret).
        client_id: String,
        /// Client secret.
        client_secret: Secret,
    },
    /// A legacy programmatic API key, used with HTTP Digest.
    ApiKey {
        /// Public key (the Digest user name).
        public_key: String,
        /// Private key (the Digest password).
        private_key: Secret,
    },
}

impl Credentials {
    /// A short, secret-free description for logs and the landing page.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::ServiceAccount { .. } => "service account",
            Credentials::ApiKey { .. } => "API key",
        }
    }
}

/// Which representation of the result to ask Atlas for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultFormat {
    /// `application/vnd.atlas.2023-01-01+json` (the default).
    #[default]
    Json,
    /// `application/vnd.atlas.2023-01-01+csv`.
    Csv,
}

/// Where "now" comes from; tests pin it to check month roll-over.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}
