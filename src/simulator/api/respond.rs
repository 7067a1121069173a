//! The shapes of the simulator's answers: the Atlas error body, a JSON body of the API's media
//! type, and the boxed error answer handlers return early with.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::JSON_TYPE;

/// An error answer on its way out (boxed: a `Response` is large for a `Result`).
pub(super) struct Rejected(Box<Response>);

impl From<Response> for Rejected {
    fn from(resp: Response) -> Self {
        Rejected(Box::new(resp))
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// What a handler answers: its response, or the error answer it stopped at.
pub(super) type Answer = Result<Response, Rejected>;

/// A successful answer wrapped as `envelope=true` asks: `{"status":..., "content":...}`.
#[derive(Serialize)]
pub(super) struct Envelope<T> {
    pub(super) status: u16,
    pub(super) content: T,
}

/// The Atlas error body with `status`.
pub(super) fn atlas_error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    atlas_error_with(status, code, detail, Vec::new())
}

/// The Atlas error body with `status` and these `parameters`.
pub(super) fn atlas_error_with(
    status: StatusCode,
    code: &str,
    detail: impl Into<String>,
    parameters: Vec<Value>,
) -> Response {
    let body = json!({
        "error": status.as_u16(),
        "errorCode": code,
        "reason": status.canonical_reason().unwrap_or("Error"),
        "detail": detail.into(),
        "parameters": parameters,
    });
    plain_json(status, body.to_string())
}

/// A 404 whose `parameters` name the one id that was not found (or not valid).
pub(super) fn not_found(code: &str, id: &str, detail: String) -> Rejected {
    atlas_error_with(
        StatusCode::NOT_FOUND,
        code,
        detail,
        vec![Value::String(id.to_string())],
    )
    .into()
}

/// A 400 `VALIDATION_ERROR` naming the offending field in `badRequestDetail`.
pub(super) fn field_error(code: &str, field: &str, detail: String) -> Rejected {
    let body = json!({
        "error": 400,
        "errorCode": code,
        "reason": "Bad Request",
        "detail": detail,
        "parameters": [field],
        "badRequestDetail": {"fields": [{"field": field, "description": detail}]},
    });
    plain_json(StatusCode::BAD_REQUEST, body.to_string()).into()
}

/// `body` as `application/json` (what Atlas errors and the OAuth endpoint answer).
pub(super) fn plain_json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// `body` as the API's versioned JSON media type.
pub(super) fn atlas_json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
        body,
    )
        .into_response()
}

/// `value` as JSON, written into a buffer of `capacity` bytes made up front: a large result
/// (hundreds of MB at 1,000,000 rows) is then not copied from buffer to buffer as it grows,
/// and the pages of an overestimate are never written, so never resident.
///
/// # Errors
/// When `value` cannot be serialized.
pub(super) fn to_json_sized<T: Serialize>(
    value: &T,
    capacity: usize,
) -> serde_json::Result<String> {
    let mut buf = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut buf, value)?;
    // serde_json writes UTF-8 only: taken as it is, no copy.
    Ok(String::from_utf8(buf)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// A 200 JSON answer, or a 500 when it could not be encoded.
pub(super) fn json_or_500(body: serde_json::Result<String>) -> Response {
    match body {
        Ok(b) => atlas_json(StatusCode::OK, b),
        Err(e) => atlas_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNEXPECTED_ERROR",
            format!("JSON encoding failed: {e}"),
        ),
    }
}

#[cfg(test)]
impl Rejected {
    /// The status and the JSON body of the refusal (a test helper).
    pub(super) async fn status_and_json(self) -> (u16, Value) {
        let resp = self.into_response();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The buffer's size up front changes nothing in the JSON: too small, it grows; far too
    /// large, the text is the same.
    #[test]
    fn json_written_into_a_sized_buffer_is_the_same_whatever_its_size() {
        let value = json!({"status": 200, "content": {"usageDetails": [
            {"service": "Clusters", "usageAmount": 12.5, "organizationName": "Zürich \"A\""}
        ]}});
        for capacity in [0, 8, 1 << 20] {
            assert_eq!(
                to_json_sized(&value, capacity).expect("serializable"),
                value.to_string()
            );
        }
    }
}
