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

/// A decimal number written as text (`51.19`, `-3`, `1.5e2`, `+.5`) to micro-dollars, exactly:
/// no float is involved, so every amount with at most six decimals comes out as written, and
/// longer ones are rounded half away from zero, as [`usd_to_micros`] rounds. `None` for
/// anything else (no digit, a stray character, an empty exponent) and for amounts of
/// [`MAX_USD`] or more either way.
pub fn decimal_to_micros(text: &str) -> Option<i64> {
    decimal_to_scaled(text, 6)
}

/// A decimal number written as text to billionths (a line item's `quantity` in nano-units),
/// exactly, as [`decimal_to_micros`] reads dollars; `None` for anything else and for
/// quantities of 10^9 units or more either way.
pub fn decimal_to_nanos(text: &str) -> Option<i64> {
    decimal_to_scaled(text, 9)
}

/// A decimal number as text, times 10^`places`, exactly (rounded half away from zero);
/// `None` unless its magnitude is below 10^(18 - `places`).
pub fn decimal_to_scaled(text: &str, places: i64) -> Option<i64> {
    let b = text.as_bytes();
    let (negative, mut i) = match b.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    // The significant digits (no leading zeros) and how many of them come before the point.
    let mut digits: Vec<u8> = Vec::new();
    let mut point: i64 = 0;
    let (mut seen_digit, mut seen_point) = (false, false);
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => {
                seen_digit = true;
                if c != b'0' || !digits.is_empty() {
                    digits.push(c - b'0');
                    point += i64::from(!seen_point);
                } else if seen_point {
                    point -= 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        let rest = &text[i + 1..];
        let unsigned = rest.strip_prefix(['+', '-']).unwrap_or(rest);
        if unsigned.is_empty() || !unsigned.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // Clamped: any exponent this large already puts a non-zero amount out of range.
        let exp = unsigned
            .parse::<i64>()
            .unwrap_or(i64::MAX)
            .min(1_000_000_000);
        point += if rest.starts_with('-') { -exp } else { exp };
    } else if i != b.len() {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    // The amount is 0.DIGITS x 10^point dollars: at 10^12 or more once point passes 12.
    if point > 18 - places {
        return None;
    }
    // The digits of whole micro-dollars, then the first one dropped (rounds half away).
    let whole = point + places;
    let mut micros: i64 = 0;
    for k in 0..whole.max(0) {
        let d = usize::try_from(k).ok().and_then(|k| digits.get(k)).copied();
        micros = micros * 10 + i64::from(d.unwrap_or(0));
    }
    let first_dropped = usize::try_from(whole).ok().and_then(|k| digits.get(k));
    if first_dropped.is_some_and(|d| *d >= 5) {
        micros += 1;
    }
    Some(if negative { -micros } else { micros })
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

impl ConfigError {
    /// The same error on one line: control characters a file or variable put into the
    /// message (a key or a variable name with a newline) written as escapes, `\n`.
    #[must_use]
    pub fn one_line(self) -> ConfigError {
        if !self.0.chars().any(char::is_control) {
            return self;
        }
        ConfigError(
            self.0
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().collect()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    }
}

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
    /// `GET /api/atlas/v2/orgs/{orgId}/invoices/pending` (`listOrgInvoicePending`).
    PendingInvoices,
    /// `GET /api/atlas/v2/orgs/{orgId}/invoices` (`listOrgInvoices`).
    Invoices,
    /// `GET /api/atlas/v2/orgs/{orgId}/invoices/{invoiceId}/lineItems:search`.
    LineItems,
}

impl Endpoint {
    /// The invoice source's endpoints: their series exist only where it runs.
    pub const INVOICES: [Endpoint; 3] = [
        Endpoint::PendingInvoices,
        Endpoint::Invoices,
        Endpoint::LineItems,
    ];

    /// Every endpoint of the Cost Explorer source and discovery (the invoice source's are
    /// [`Endpoint::INVOICES`]).
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
            Endpoint::PendingInvoices => "pending_invoices",
            Endpoint::Invoices => "invoices",
            Endpoint::LineItems => "line_items",
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

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `micros` written the way an amount is written: `-12.000345`, or `7` when whole.
    pub(crate) fn written(micros: i64) -> String {
        let sign = if micros < 0 { "-" } else { "" };
        let (whole, frac) = (
            micros.unsigned_abs() / 1_000_000,
            micros.unsigned_abs() % 1_000_000,
        );
        if frac == 0 {
            format!("{sign}{whole}")
        } else {
            format!("{sign}{whole}.{frac:06}")
        }
    }

    const CAP: i64 = 1_000_000_000_000_000_000;

    proptest! {
        /// Every amount below the cap, written with up to six decimals, reads back exactly.
        #[test]
        fn a_written_amount_reads_back_exactly(m in -(CAP - 1)..CAP) {
            prop_assert_eq!(decimal_to_micros(&written(m)), Some(m));
        }

        /// An amount with its point moved into an exponent (`12345e-3`, `0.12e2`) is the
        /// same amount.
        #[test]
        fn an_exponent_moves_the_point_only(m in -(CAP - 1)..CAP, k in 0u32..12) {
            let digits = m.unsigned_abs().to_string();
            let sign = if m < 0 { "-" } else { "" };
            let exp = i64::from(k) - 6;
            let text = format!("{sign}{digits}e{exp}");
            // m micro-dollars = digits x 10^-6 dollars; with the exponent it is m x 10^k.
            let want = i128::from(m) * 10i128.pow(k);
            let got = decimal_to_micros(&text);
            if want.abs() < i128::from(CAP) {
                prop_assert_eq!(got.map(i128::from), Some(want), "{}", text);
            } else {
                prop_assert_eq!(got, None, "{} is over the cap", text);
            }
        }

        /// A seventh decimal rounds half away from zero, as `usd_to_micros` rounds.
        #[test]
        fn a_seventh_decimal_rounds_half_away_from_zero(m in -(CAP / 10)..(CAP / 10), d in 0u8..10) {
            let base = written(m);
            let text = if base.contains('.') {
                format!("{base}{d}")
            } else {
                format!("{base}.000000{d}")
            };
            let up = i64::from(d >= 5);
            let want = if m < 0 || (m == 0 && base.starts_with('-')) { m - up } else { m + up };
            prop_assert_eq!(decimal_to_micros(&text), Some(want), "{}", text);
        }

        /// Where an f64 is exact (six decimals, under 2^31 dollars), the float conversion and
        /// the decimal one agree.
        #[test]
        fn decimal_and_float_agree_where_a_float_is_exact(m in -(1i64 << 31) * 1_000_000..(1i64 << 31) * 1_000_000) {
            let text = written(m);
            let float = text.parse::<f64>().ok().and_then(usd_to_micros);
            prop_assert_eq!(decimal_to_micros(&text), float, "{}", text);
        }

        /// Text that is no decimal is refused, never read as some amount.
        #[test]
        fn text_that_is_no_decimal_is_refused(s in "[0-9.eE+-]{0,12}[^0-9.eE+-][0-9.eE+-]{0,12}") {
            prop_assert_eq!(decimal_to_micros(&s), None, "{}", s);
        }
    }

    /// The edges: the cap either way, a bare point, empty exponents, signs and zeros.
    #[test]
    fn decimal_edges_are_read_or_refused() {
        assert_eq!(decimal_to_micros("999999999999.999999"), Some(CAP - 1));
        assert_eq!(decimal_to_micros("1e12"), None);
        assert_eq!(decimal_to_micros("-1000000000000"), None);
        assert_eq!(decimal_to_micros("0e999999999999999999999"), Some(0));
        assert_eq!(decimal_to_micros("1e-999999999999999999999"), Some(0));
        assert_eq!(decimal_to_micros("1e999999999999999999999"), None);
        assert_eq!(decimal_to_micros("+.5"), Some(500_000));
        assert_eq!(decimal_to_micros("5."), Some(5_000_000));
        for bad in [
            "", ".", "-", "+", "e5", "1e", "1e+", "1.2.3", "1,5", " 1", "0x10",
        ] {
            assert_eq!(decimal_to_micros(bad), None, "{bad:?}");
        }
    }
}
