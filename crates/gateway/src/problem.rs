//! Error responses as `application/problem+json` (RFC 9457), always carrying the request id.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ResponseBody;

/// Builds a problem response. `detail` is for the client: it never carries attack details.
pub fn problem(status: StatusCode, detail: &str, request_id: &str) -> Response<ResponseBody> {
    problem_with_params(status, detail, request_id, &[])
}

/// A problem response that names the request fields that failed validation, as RFC 9457's
/// `invalid-params` extension: `[{"name": "query:limit", "reason": "must be of type
/// integer"}]`. Names and reasons come from the API specification, never from the request.
pub fn problem_with_params(
    status: StatusCode,
    detail: &str,
    request_id: &str,
    invalid: &[(&str, &str)],
) -> Response<ResponseBody> {
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "request_id": request_id,
    });
    if !invalid.is_empty() {
        body["invalid-params"] = invalid
            .iter()
            .map(|(name, reason)| serde_json::json!({"name": name, "reason": reason}))
            .collect();
    }
    let mut response = Response::new(ResponseBody::local(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(crate::headers::X_REQUEST_ID, id);
    }
    response
}
