//! The errors of the Atlas client: one enum, its `reason` label, whether a retry can help,
//! and the detail read from an Atlas error body.

use std::time::Duration;

use serde::Deserialize;

use super::result;
use crate::model::{Endpoint, Reason};

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
    pub(super) fn is_retryable(&self) -> bool {
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

/// `errorCode: detail` from an Atlas error body, or a snippet of whatever came instead.
pub(super) fn error_detail(body: &[u8]) -> String {
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
        Ok(e) if super::is_json_object(body) => {
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
        _ => result::snippet(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The detail of an error names Atlas's `errorCode` and `detail`, or the OAuth
    /// `error` and `error_description`, or else the first bytes of what came.
    #[test]
    fn error_detail_reads_atlas_and_oauth_bodies() {
        assert_eq!(
            error_detail(br#"{"errorCode":"RATE_LIMITED","detail":"slow down"}"#),
            "RATE_LIMITED: slow down"
        );
        assert_eq!(
            error_detail(br#"{"error":"invalid_client","error_description":"bad secret"}"#),
            "invalid_client: bad secret"
        );
        assert_eq!(error_detail(br#"{"errorCode":"X"}"#), "X");
        // An array is no error body, though serde's derive reads one by position.
        assert_eq!(error_detail(br#"["X","y"]"#), r#"["X","y"]"#);
        assert_eq!(
            error_detail(b"<html>\n<b>502</b> Bad Gateway</html>"),
            "<html> <b>502</b> Bad Gateway</html>"
        );
    }

    /// Only errors that a later try can overcome are retried: rate limits, timeouts,
    /// broken connections, server errors, 408 and undecodable bodies; never credentials,
    /// a 403 or another 4xx.
    #[test]
    fn only_transient_errors_are_retryable() {
        let e = Endpoint::Create;
        let status = |status| AtlasError::Status {
            endpoint: e,
            status,
            detail: String::new(),
        };
        let retryable = [
            AtlasError::RateLimited {
                endpoint: e,
                retry_after: None,
            },
            AtlasError::Timeout { endpoint: e },
            status(500),
            status(408),
            AtlasError::Decode {
                endpoint: e,
                message: String::new(),
            },
        ];
        let final_ = [
            AtlasError::Auth {
                endpoint: e,
                status: 401,
                detail: String::new(),
            },
            AtlasError::Forbidden {
                endpoint: e,
                detail: String::new(),
            },
            status(404),
            AtlasError::TooLarge {
                endpoint: e,
                limit: 1,
            },
            AtlasError::Deadline(Duration::from_secs(1)),
            AtlasError::InvalidId("x".to_owned()),
        ];
        assert!(retryable.iter().all(AtlasError::is_retryable));
        assert!(!final_.iter().any(AtlasError::is_retryable));
        assert_eq!(status(502).reason(), Reason::ServerError);
        assert_eq!(status(404).reason(), Reason::ClientError);
    }
}
