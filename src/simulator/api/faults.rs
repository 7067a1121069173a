//! The answers of injected faults ([`Fault`]): late, trickling, broken, huge, rate-limited,
//! redirected or proxy-made responses, and the broken connection of a "not ready" poll.

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::JSON_TYPE;
use super::respond::atlas_error;
use crate::simulator::Fault;

/// `body` with status 200 and the API's JSON media type.
fn ok_json(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE))],
        body,
    )
        .into_response()
}

/// A 429 `RATE_LIMITED` with `RateLimit-Limit: 100`, `RateLimit-Remaining: 0` and, when
/// given, this `Retry-After`.
fn rate_limited(retry_after: Option<HeaderValue>) -> Response {
    let mut resp = atlas_error(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        "You have exceeded the rate limit for this endpoint.",
    );
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static("ratelimit-limit"),
        HeaderValue::from(100u32),
    );
    headers.insert(
        HeaderName::from_static("ratelimit-remaining"),
        HeaderValue::from(0u32),
    );
    if let Some(v) = retry_after {
        headers.insert(header::RETRY_AFTER, v);
    }
    resp
}

/// What `fault` answers instead of the real response. A [`Fault::Delay`] is waited out
/// before the request goes on, so it only gets here by mistake: a 500.
pub(super) fn fault_response(fault: &Fault) -> Response {
    match fault {
        Fault::Delay(_) => atlas_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNEXPECTED_ERROR",
            "delay",
        ),
        Fault::Trickle(every) => {
            let every = *every;
            let body =
                br#"{"token":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
            let stream = futures_util::stream::unfold(0usize, move |i| async move {
                if i >= body.len() {
                    return None;
                }
                tokio::time::sleep(every).await;
                Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from_static(&body[i..=i])),
                    i + 1,
                ))
            });
            ok_json(Body::from_stream(stream))
        }
        Fault::ResetMidBody => {
            let stream = futures_util::stream::iter([
                Ok::<Bytes, std::io::Error>(Bytes::from_static(
                    br#"{"usageDetails":[{"usageAmount":1"#,
                )),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated connection reset",
                )),
            ]);
            ok_json(Body::from_stream(stream))
        }
        Fault::Body {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let content_type = HeaderValue::from_str(content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
            (status, [(header::CONTENT_TYPE, content_type)], body.clone()).into_response()
        }
        Fault::Huge(size) => {
            const ROW: &[u8] = br#"{"organizationId":"000000000000000000000000","service":"Clusters","usageAmount":1.0,"usageDate":"2026-01-01"},"#;
            let rows = (*size / ROW.len()).max(1);
            let chunk_rows = (64 * 1024 / ROW.len()).max(1);
            let chunk = Bytes::from(ROW.repeat(chunk_rows));
            let head = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(
                Bytes::from_static(b"{\"usageDetails\":["),
            )]);
            let body = futures_util::stream::iter(
                (0..rows.div_ceil(chunk_rows)).map(move |_| Ok(chunk.clone())),
            );
            let tail = futures_util::stream::iter([Ok(Bytes::from_static(
                br#"{"usageAmount":1.0,"usageDate":"2026-01-01"}]}"#,
            ))]);
            use futures_util::StreamExt as _;
            ok_json(Body::from_stream(head.chain(body).chain(tail)))
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error_code = match status.as_u16() {
                400 => "VALIDATION_ERROR",
                401 => "USER_UNAUTHORIZED",
                403 => "IP_ADDRESS_NOT_ON_WHITELIST",
                404 => "RESOURCE_NOT_FOUND",
                429 => "RATE_LIMITED",
                _ => "UNEXPECTED_ERROR",
            };
            atlas_error(status, error_code, "Injected fault.")
        }
        Fault::RateLimited { retry_after } => rate_limited(retry_after.map(HeaderValue::from)),
        Fault::RateLimitedUntil(ahead) => {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now() + *ahead);
            rate_limited(HeaderValue::from_str(&date).ok())
        }
        Fault::Redirect(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::FOUND);
            (
                status,
                [(
                    header::LOCATION,
                    HeaderValue::from_static("https://account.mongodb.com/account/login"),
                )],
            )
                .into_response()
        }
        Fault::Html(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY);
            let title = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            );
            let body = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                )],
                body,
            )
                .into_response()
        }
    }
}

/// 200 headers, then a body that fails at once: the client sees the connection die.
pub(super) fn broken_response() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "simulated connection drop",
        ))
    });
    ok_json(Body::from_stream(stream))
}
