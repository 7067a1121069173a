//! Entry points for the fuzz targets in `fuzz/` (not part of the client's API): the client's
//! parsers of outside input that are private to their modules, each reached exactly as the
//! client reaches it (a header value goes through the same `HeaderMap` and `to_str`).

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::auth::Challenge;
pub use super::discovery::Tag;

/// One page of a listing as discovery reads it.
#[derive(Debug)]
pub struct ListingPage {
    /// `(id, name, tags)` of the items with an Atlas id, in order.
    pub listed: Vec<(String, String, Vec<Tag>)>,
    /// Items skipped for their id.
    pub skipped: usize,
    /// Items on the page.
    pub items: usize,
    /// `totalCount`.
    pub total_count: Option<u64>,
}

/// A projects, clusters or Flex clusters page (they share the parser).
///
/// # Errors
/// The decode error's message.
pub fn listing_page(body: &[u8]) -> Result<ListingPage, String> {
    let page = super::discovery::read_page(body).map_err(|e| e.to_string())?;
    Ok(ListingPage {
        listed: page
            .listed
            .into_iter()
            .map(|l| (l.id, l.name, l.tags))
            .collect(),
        skipped: page.skipped.len(),
        items: page.items,
        total_count: page.total_count,
    })
}

/// The detail an Atlas error body (or an OAuth error answer) gives.
pub fn error_detail(body: &[u8]) -> String {
    super::error::error_detail(body)
}

/// A token endpoint's 200 answer: the token and how long until it is renewed.
///
/// # Errors
/// The decode error's message.
pub fn token_answer(body: &[u8]) -> Result<(String, Duration), String> {
    let now = Instant::now();
    super::session::read_token_answer(body, now)
        .map(|(token, renew_at, _)| (token, renew_at.saturating_duration_since(now)))
        .map_err(|e| e.to_string())
}

/// A `createCostExplorerProcess` answer's token.
///
/// # Errors
/// The error's message.
pub fn create_answer(body: &[u8]) -> Result<String, String> {
    super::usage::read_create_answer(body).map_err(|e| e.to_string())
}

/// The headers of an answer holding `name: value`, or `None` when no HTTP answer can carry
/// those bytes as a header value.
fn one_header(name: &'static str, value: &[u8]) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static(name),
        HeaderValue::from_bytes(value).ok()?,
    );
    Some(headers)
}

/// Whether an answer can carry `value` as a header value at all.
pub fn is_header_value(value: &[u8]) -> bool {
    HeaderValue::from_bytes(value).is_ok()
}

/// `Retry-After: value`, received at `now`.
pub fn retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    super::gate::retry_after(&one_header("retry-after", value)?, now)
}

/// `RateLimit-Remaining: value`.
pub fn rate_limit_remaining(value: &[u8]) -> Option<u64> {
    super::gate::rate_limit_remaining(&one_header("ratelimit-remaining", value)?)
}

/// The Digest challenge of `WWW-Authenticate: value`, as a 401 is read.
pub fn challenge(value: &[u8]) -> Option<Challenge> {
    let headers = one_header("www-authenticate", value)?;
    headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(Challenge::parse)
}
