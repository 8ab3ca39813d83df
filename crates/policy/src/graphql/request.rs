//! GraphQL over HTTP: the operations a request carries. `POST` with a JSON body (one request
//! object, or an array of them: a batch), `POST` with `application/graphql` (the document
//! alone), and `GET` with `?query=` (and `operationName`, `variables`, `extensions` as JSON).

use serde::Deserialize;

/// One GraphQL request: a document (or the hash of a persisted one) and its parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphqlRequest {
    pub query: Option<String>,
    pub operation_name: Option<String>,
    /// The `variables` object (other JSON types are ignored here; the server refuses them).
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// `extensions.persistedQuery.sha256Hash` (Apollo automatic persisted queries), as sent.
    pub persisted_hash: Option<String>,
}

/// Why a request's GraphQL parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// A `POST` whose content type is neither JSON nor `application/graphql`.
    ContentType,
    /// The body (or a `GET` parameter) is not the JSON expected.
    Json(String),
    /// The body or batch holds no operation at all.
    Empty,
    /// `POST` with `application/graphql` whose body is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::ContentType => {
                f.write_str("a GraphQL POST must be application/json or application/graphql")
            }
            RequestError::Json(e) => write!(f, "the GraphQL request is not valid JSON: {e}"),
            RequestError::Empty => f.write_str("the request carries no GraphQL operation"),
            RequestError::NotUtf8 => f.write_str("the GraphQL document is not UTF-8"),
        }
    }
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    query: Option<String>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default)]
    extensions: Option<serde_json::Value>,
}

impl Wire {
    fn into_request(self) -> GraphqlRequest {
        GraphqlRequest {
            query: self.query,
            operation_name: self.operation_name,
            variables: match self.variables {
                Some(serde_json::Value::Object(map)) => Some(map),
                _ => None,
            },
            persisted_hash: self.extensions.as_ref().and_then(persisted_hash),
        }
    }
}

fn persisted_hash(extensions: &serde_json::Value) -> Option<String> {
    extensions
        .get("persistedQuery")?
        .get("sha256Hash")?
        .as_str()
        .map(str::to_owned)
}

/// The operations of a `POST` body, and whether it was a batch (a JSON array).
pub fn from_post(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Vec<GraphqlRequest>, bool), RequestError> {
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media == "application/graphql" {
        let text = std::str::from_utf8(body).map_err(|_| RequestError::NotUtf8)?;
        if text.trim().is_empty() {
            return Err(RequestError::Empty);
        }
        let request = GraphqlRequest {
            query: Some(text.to_owned()),
            ..GraphqlRequest::default()
        };
        return Ok((vec![request], false));
    }
    if media != "application/json" && !media.ends_with("+json") {
        return Err(RequestError::ContentType);
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let json_error = |e: serde_json::Error| RequestError::Json(e.to_string());
    match first {
        None => Err(RequestError::Empty),
        Some(b'[') => {
            let batch: Vec<Wire> = serde_json::from_slice(body).map_err(json_error)?;
            if batch.is_empty() {
                return Err(RequestError::Empty);
            }
            Ok((batch.into_iter().map(Wire::into_request).collect(), true))
        }
        Some(_) => {
            let one: Wire = serde_json::from_slice(body).map_err(json_error)?;
            Ok((vec![one.into_request()], false))
        }
    }
}

/// The operation of a `GET` query string; `None` when it has neither `query` nor
/// `extensions` (not a GraphQL operation: a GraphiQL page, a health check).
pub fn from_get(query_string: Option<&str>) -> Result<Option<GraphqlRequest>, RequestError> {
    let Some(qs) = query_string else {
        return Ok(None);
    };
    let mut request = GraphqlRequest::default();
    let mut extensions = None;
    let mut found = false;
    for pair in qs.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match form_decode(name).as_str() {
            "query" => &mut request.query,
            "operationName" => &mut request.operation_name,
            "variables" => {
                let value = form_decode(value);
                if !value.is_empty() {
                    let parsed: serde_json::Value = serde_json::from_str(&value)
                        .map_err(|e| RequestError::Json(e.to_string()))?;
                    if let serde_json::Value::Object(map) = parsed {
                        request.variables = Some(map);
                    }
                }
                continue;
            }
            "extensions" => {
                found = true;
                let value = form_decode(value);
                extensions = Some(
                    serde_json::from_str::<serde_json::Value>(&value)
                        .map_err(|e| RequestError::Json(e.to_string()))?,
                );
                continue;
            }
            _ => continue,
        };
        *slot = Some(form_decode(value));
        found |= request.query.is_some();
    }
    request.persisted_hash = extensions.as_ref().and_then(persisted_hash);
    Ok(found.then_some(request))
}

/// `application/x-www-form-urlencoded` decoding of one name or value: `+` is a space, `%XX`
/// a byte; invalid escapes stay as they are and invalid UTF-8 becomes U+FFFD.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: &u8| (*b as char).to_digit(16);
                if let (Some(high), Some(low)) = (
                    bytes.get(i + 1).and_then(hex),
                    bytes.get(i + 2).and_then(hex),
                ) {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_single_and_batched() {
        let (one, batch) = from_post(
            Some("application/json; charset=utf-8"),
            br#"{"query":"{ a }","operationName":null,"variables":{"n":3}}"#,
        )
        .unwrap();
        assert!(!batch);
        assert_eq!(one[0].query.as_deref(), Some("{ a }"));
        assert_eq!(one[0].variables.as_ref().unwrap()["n"], 3);
        let (many, batch) = from_post(
            Some("application/json"),
            br#" [{"query":"{ a }"},{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"ab"}}}]"#,
        )
        .unwrap();
        assert!(batch);
        assert_eq!(many.len(), 2);
        assert_eq!(many[1].persisted_hash.as_deref(), Some("ab"));
        assert_eq!(
            from_post(Some("application/json"), b"[]"),
            Err(RequestError::Empty)
        );
        assert!(matches!(
            from_post(Some("application/json"), b"{\"query\": 3}"),
            Err(RequestError::Json(_))
        ));
        assert_eq!(
            from_post(Some("text/plain"), b"{ a }"),
            Err(RequestError::ContentType)
        );
    }

    #[test]
    fn graphql_bodies_and_get_parameters() {
        let (one, _) = from_post(Some("application/graphql"), b"{ a }").unwrap();
        assert_eq!(one[0].query.as_deref(), Some("{ a }"));
        let get = from_get(Some(
            "query=%7B+user(id%3A+1)+%7B+name+%7D+%7D&variables=%7B%22n%22%3A1%7D&operationName=Q",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(get.query.as_deref(), Some("{ user(id: 1) { name } }"));
        assert_eq!(get.operation_name.as_deref(), Some("Q"));
        assert_eq!(get.variables.unwrap()["n"], 1);
        assert_eq!(from_get(Some("page=2")).unwrap(), None);
        assert_eq!(from_get(None).unwrap(), None);
        let apq = from_get(Some(
            "extensions=%7B%22persistedQuery%22%3A%7B%22sha256Hash%22%3A%22cd%22%7D%7D",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(apq.persisted_hash.as_deref(), Some("cd"));
        assert_eq!(form_decode("a%zz%4"), "a%zz%4");
    }
}
