//! `POST /api/oauth/token`: service-account client credentials (HTTP Basic) for a Bearer
//! token, answered with OAuth's own error body (not the Atlas one).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::respond::plain_json;
use crate::simulator::auth;
use crate::simulator::{SimEndpoint, Simulator};

/// The OAuth error body (RFC 6749 section 5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    plain_json(
        status,
        json!({"error": error, "error_description": description}).to_string(),
    )
}

/// The token endpoint: 401 `invalid_client` for wrong credentials, 400 for a missing or
/// unsupported `grant_type`, else a Bearer token with its `expires_in`.
pub(super) async fn token(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(fault) = sim.begin(SimEndpoint::Token, None).await {
        return fault;
    }
    let creds = &sim.inner.config.credentials;
    match auth::basic_credentials(&headers, sim.inner.config.basic_form_decoded) {
        Some((id, secret)) if id == creds.client_id && secret == creds.client_secret => {}
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid client credentials.",
            );
        }
    }
    let form = auth::parse_form(&String::from_utf8_lossy(&body));
    match form.iter().find(|(k, _)| k == "grant_type") {
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing grant_type.",
        ),
        Some((_, g)) if g != "client_credentials" => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only client_credentials is supported.",
        ),
        Some(_) => {
            let ttl = sim.inner.config.token_expires_in;
            let token = sim
                .inner
                .auth
                .issue_token(std::time::Duration::from_secs(ttl));
            plain_json(
                StatusCode::OK,
                json!({"access_token": token, "expires_in": ttl, "token_type": "Bearer"})
                    .to_string(),
            )
        }
    }
}
