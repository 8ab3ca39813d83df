//! A read-only TAXII 2.1 server over the STIX view of the published feed: one API root
//! (`/taxii2/api/`) with one collection, the shared feed, identical for every participant.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /taxii2/` | discovery |
//! | `GET /taxii2/api/` | the API root |
//! | `GET /taxii2/api/collections/` | the one collection |
//! | `GET /taxii2/api/collections/{id}/` | the collection |
//! | `GET /taxii2/api/collections/{id}/objects/` | objects: `added_after`, `limit`, `next`, `match[id|type|version|spec_version]` |
//! | `GET /taxii2/api/collections/{id}/objects/{object-id}/` | one object |
//! | `GET /taxii2/api/collections/{id}/objects/{object-id}/versions/` | its (one) version |
//! | `GET /taxii2/api/collections/{id}/manifest/` | the manifest, filtered and paged like objects |
//! | `POST …/objects/`, `DELETE …/objects/{object-id}/` | 403: the collection is read-only |
//! | `GET /taxii2/api/status/{id}/` | 404: no write ever makes a status |
//!
//! Every call authenticates like the REST API (HTTP Basic with the API key as password, any
//! user name; `Authorization: Bearer KEY`; or a registered TLS client certificate). The
//! collection holds the fixed attack-pattern catalogue (added 2024-01-01) and then, for each
//! published report in publication order, its objects (see [`crate::stix`]), each with the
//! report's publication time as `date_added`. An identity object comes again with every
//! report of its pseudonym (same id and version; de-duplicated within a page).

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use crate::HubState;
use crate::credentials::Caller;
use crate::error::HubError;
use crate::stix::{self, Located};
use crate::views::{Cursor, published_after, published_by_ids, published_by_reporter};

/// The TAXII 2.1 media type.
pub const MEDIA_TYPE: &str = "application/taxii+json;version=2.1";
/// The id of the shared-feed collection.
pub const COLLECTION_ID: &str = "5f0b6a7e-2c1d-4e3f-9a8b-7c6d5e4f3a2b";
/// Where the API root is.
pub const API_ROOT: &str = "/taxii2/api/";
/// Objects per page when the client names no limit, and the most it may ask for.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// The most reports one request reads (a page with very selective filters stops there and
/// answers `more` with a `next`).
const MAX_SCAN: usize = 5000;
/// `date_added` of the attack-pattern catalogue: 2024-01-01T00:00:00Z.
const CATALOGUE_MS: i64 = 1_704_067_200_000;
const CATALOGUE: Cursor = Cursor {
    published_at: CATALOGUE_MS,
    seq: 0,
};

/// The TAXII routes.
pub fn router(state: Arc<HubState>) -> Router {
    let c = "/taxii2/api/collections/{collection}";
    Router::new()
        .route("/taxii2/", get(discovery))
        .route("/taxii2", get(discovery))
        .route(API_ROOT, get(api_root))
        .route("/taxii2/api/status/{status}/", get(status))
        .route("/taxii2/api/collections/", get(collections))
        .route(&format!("{c}/"), get(collection))
        .route(&format!("{c}/manifest/"), get(manifest))
        .route(&format!("{c}/objects/"), get(objects).post(read_only))
        .route(
            &format!("{c}/objects/{{object}}/"),
            get(object).delete(read_only),
        )
        .route(&format!("{c}/objects/{{object}}/versions/"), get(versions))
        .with_state(state)
}

/// A TAXII error: JSON `{title, description, http_status}` in the TAXII media type, with
/// `error_code` and `details` when a client can act on them.
struct TaxiiError {
    status: StatusCode,
    title: &'static str,
    description: String,
    /// `error_code` and `details` (boxed: most errors have neither).
    coded: Option<Box<(&'static str, Value)>>,
}

impl From<HubError> for TaxiiError {
    fn from(error: HubError) -> Self {
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(%error, "TAXII request failed");
        }
        if let HubError::CursorExpired {
            message,
            pruned_through,
        } = error
        {
            return TaxiiError {
                status,
                title: "The position is older than the collection kept",
                description: message,
                coded: Some(Box::new((
                    crate::error::FEED_CURSOR_EXPIRED,
                    json!({ "pruned_through": pruned_through }),
                ))),
            };
        }
        let title = match status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Authentication required",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "Not found",
            _ => "Server error",
        };
        TaxiiError {
            status,
            title,
            description: error.to_string(),
            coded: None,
        }
    }
}

impl TaxiiError {
    fn not_found(what: String) -> Self {
        TaxiiError {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            description: what,
            coded: None,
        }
    }
}

impl IntoResponse for TaxiiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "title": self.title,
            "description": self.description,
            "http_status": self.status.as_u16().to_string(),
        });
        if let Some(coded) = self.coded {
            let (code, details) = *coded;
            body["error_code"] = json!(code);
            body["details"] = details;
        }
        let mut response = (self.status, taxii_json(&body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"apiguard hub\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

type Result<T> = std::result::Result<T, TaxiiError>;

/// A JSON body in the TAXII media type.
fn taxii_json(value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

/// Refuses an `Accept` that excludes TAXII 2.1 JSON (406); no `Accept` is fine.
fn check_accept(headers: &HeaderMap) -> Result<()> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(());
    };
    let accept = accept.to_str().unwrap_or("");
    let acceptable = accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut version_ok = true;
        for parameter in parts {
            if let Some((name, value)) = parameter.split_once('=')
                && name.trim().eq_ignore_ascii_case("version")
            {
                version_ok = value.trim().trim_matches('"') == "2.1";
            }
        }
        match media.as_str() {
            "*/*" | "application/*" => true,
            "application/taxii+json" => version_ok,
            _ => false,
        }
    });
    if acceptable {
        Ok(())
    } else {
        Err(TaxiiError {
            status: StatusCode::NOT_ACCEPTABLE,
            title: "Not acceptable",
            description: format!("this server answers {MEDIA_TYPE}"),
            coded: None,
        })
    }
}

/// Authenticates the caller and checks `Accept`.
async fn admit(state: &HubState, caller: &Caller, headers: &HeaderMap) -> Result<()> {
    caller.authenticate(state).await?;
    check_accept(headers)
}

fn timestamp_ms(ms: i64) -> String {
    stix::timestamp(Utc.timestamp_millis_opt(ms).single().unwrap_or_default())
}

fn check_collection(id: &str) -> Result<()> {
    if id == COLLECTION_ID {
        Ok(())
    } else {
        Err(TaxiiError::not_found(format!(
            "no collection `{}`",
            truncated(id)
        )))
    }
}

fn truncated(text: &str) -> String {
    text.chars().take(100).collect()
}

/// The absolute URL of the API root, from the request's host and the listener's scheme.
fn api_root_url(headers: &HeaderMap, uri: &Uri, tls: bool) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(host) => {
            let scheme = if tls { "https" } else { "http" };
            format!("{scheme}://{host}{API_ROOT}")
        }
        None => API_ROOT.to_owned(),
    }
}

async fn discovery(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    let root = api_root_url(&headers, &uri, caller.over_tls());
    Ok(taxii_json(&json!({
        "title": "apiguard hub",
        "description": "Threats shared by the participants of an apiguard hub, anonymised, as STIX 2.1.",
        "default": root,
        "api_roots": [root],
    })))
}

async fn api_root(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    Ok(taxii_json(&json!({
        "title": "apiguard shared feed",
        "description": "The hub's published threat reports.",
        "versions": [MEDIA_TYPE],
        "max_content_length": state.settings.limits.max_body_bytes,
    })))
}

fn collection_json() -> Value {
    json!({
        "id": COLLECTION_ID,
        "title": "apiguard shared feed",
        "description": "Published, anonymised threat reports as STIX 2.1: indicators, sightings, attack patterns, and the reporters' pseudonyms. Read-only.",
        "can_read": true,
        "can_write": false,
        "media_types": [stix::MEDIA_TYPE],
    })
}

async fn collections(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    Ok(taxii_json(&json!({ "collections": [collection_json()] })))
}

async fn collection(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    check_collection(&id)?;
    Ok(taxii_json(&collection_json()))
}

async fn status(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    Err(TaxiiError::not_found(format!(
        "no status `{}`: the collection is read-only, so no write makes one",
        truncated(&id)
    )))
}

async fn read_only(State(state): State<Arc<HubState>>, caller: Caller) -> Result<Response> {
    caller.authenticate(&state).await?;
    Err(TaxiiError {
        status: StatusCode::FORBIDDEN,
        title: "Read-only collection",
        description: "the collection is read-only (can_write is false): report threats through \
                      POST /v1/reports, gRPC or GraphQL"
            .into(),
        coded: None,
    })
}

/// Which versions a filter wants.
enum Versions {
    /// `last`, `first` or `all` (every object here has one version).
    Any,
    /// These `modified` timestamps.
    Exact(Vec<String>),
}

/// The filters of an objects or manifest request.
struct Filters {
    /// Microseconds since the epoch.
    added_after_us: Option<i64>,
    limit: usize,
    next: Option<(Cursor, usize)>,
    ids: Option<HashSet<String>>,
    types: Option<HashSet<String>>,
    versions: Versions,
    /// `match[spec_version]` excludes 2.1.
    no_spec_version: bool,
}

fn parse_timestamp(field: &str, text: &str) -> std::result::Result<DateTime<Utc>, HubError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            HubError::Invalid(format!(
                "{field}: `{}` is not an RFC 3339 timestamp",
                truncated(text)
            ))
        })
}

fn parse_next(text: &str) -> std::result::Result<(Cursor, usize), HubError> {
    let bad = || {
        HubError::Invalid(format!(
            "next: `{}` is not a token of this server",
            truncated(text)
        ))
    };
    let (cursor, index) = text.rsplit_once('-').ok_or_else(bad)?;
    let cursor: Cursor = cursor.parse().map_err(|_| bad())?;
    let index: usize = index.parse().map_err(|_| bad())?;
    if index > 64 {
        return Err(bad());
    }
    Ok((cursor, index))
}

impl Filters {
    fn parse(
        query: &[(String, String)],
        allow_paging: bool,
    ) -> std::result::Result<Self, HubError> {
        let mut filters = Filters {
            added_after_us: None,
            limit: DEFAULT_LIMIT,
            next: None,
            ids: None,
            types: None,
            versions: Versions::Any,
            no_spec_version: false,
        };
        if query.len() > 64 {
            return Err(HubError::Invalid("too many query parameters".into()));
        }
        let list = |value: &str| -> HashSet<String> {
            value
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .take(256)
                .collect()
        };
        for (name, value) in query {
            match name.as_str() {
                "added_after" => {
                    let at = parse_timestamp("added_after", value)?;
                    filters.added_after_us = Some(at.timestamp_micros());
                }
                "limit" if allow_paging => {
                    let limit: usize = value.trim().parse().map_err(|_| {
                        HubError::Invalid(format!("limit: `{}` is not a number", truncated(value)))
                    })?;
                    filters.limit = if limit == 0 {
                        DEFAULT_LIMIT
                    } else {
                        limit.min(MAX_LIMIT)
                    };
                }
                "next" if allow_paging => filters.next = Some(parse_next(value)?),
                "match[id]" => filters.ids = Some(list(value)),
                "match[type]" => filters.types = Some(list(value)),
                "match[version]" => {
                    let wanted = list(value);
                    if !wanted
                        .iter()
                        .any(|v| matches!(v.as_str(), "all" | "first" | "last"))
                    {
                        let mut exact = Vec::new();
                        for v in wanted {
                            exact.push(stix::timestamp(parse_timestamp("match[version]", &v)?));
                        }
                        filters.versions = Versions::Exact(exact);
                    }
                }
                "match[spec_version]" => {
                    filters.no_spec_version = !list(value).contains(stix::SPEC_VERSION);
                }
                // Unknown parameters are ignored, as TAXII asks.
                _ => {}
            }
        }
        Ok(filters)
    }

    fn accepts(&self, object: &Value) -> bool {
        let text = |key: &str| object[key].as_str().unwrap_or_default();
        if self.no_spec_version {
            return false;
        }
        if let Some(ids) = &self.ids
            && !ids.contains(text("id"))
        {
            return false;
        }
        if let Some(types) = &self.types
            && !types.contains(text("type"))
        {
            return false;
        }
        if let Versions::Exact(versions) = &self.versions
            && !versions.iter().any(|v| v == text("modified"))
        {
            return false;
        }
        true
    }

    fn added(&self, date_added_ms: i64) -> bool {
        self.added_after_us
            .is_none_or(|after| date_added_ms.saturating_mul(1000) > after)
    }
}

/// One page of objects: each with its `date_added` (ms), whether more follow, and the token.
struct Page {
    items: Vec<(Value, i64)>,
    next: Option<(Cursor, usize)>,
}

struct Walk<'a> {
    filters: &'a Filters,
    items: Vec<(Value, i64)>,
    seen: HashSet<String>,
    next: Option<(Cursor, usize)>,
}

impl Walk<'_> {
    /// Takes the objects of one group from `from`; false once the page is full (and `next`
    /// set).
    fn group(&mut self, cursor: Cursor, objects: Vec<Value>, from: usize) -> bool {
        if !self.filters.added(cursor.published_at) {
            return true;
        }
        for (index, object) in objects.into_iter().enumerate().skip(from) {
            if self.items.len() == self.filters.limit {
                self.next = Some((cursor, index));
                return false;
            }
            if self.filters.accepts(&object) {
                let id = object["id"].as_str().unwrap_or_default().to_owned();
                if self.seen.insert(id) {
                    self.items.push((object, cursor.published_at));
                }
            }
        }
        true
    }
}

/// Refuses a `next` token or an `added_after` that reaches back before the part of the feed
/// log kept: the objects after it were pruned (`limits.feed_retention`), and answering from
/// the oldest kept would skip them without a word.
async fn check_not_pruned(
    state: &HubState,
    filters: &Filters,
) -> std::result::Result<(), HubError> {
    let token = filters
        .next
        .map(|(start, _)| start)
        .filter(|s| *s > CATALOGUE);
    if token.is_none() && filters.added_after_us.is_none() {
        return Ok(());
    }
    let bounds = state.pipeline.store.feed_bounds().await?;
    let expired = |what: String| HubError::CursorExpired {
        message: format!(
            "{what} reaches back before what this collection keeps: the objects added up to {} \
             were pruned (limits.feed_retention). Ask again without `next` and with an \
             `added_after` of at least that time (the objects in between are missed)",
            timestamp_ms(bounds.pruned_added_ms)
        ),
        pruned_through: bounds.pruned_through,
    };
    // A token names the report to continue with: gone once its position was pruned.
    if let Some(start) = token
        && start.seq <= bounds.pruned_through
    {
        return Err(expired("the `next` token".to_owned()));
    }
    if let Some(after_us) = filters.added_after_us
        && after_us < bounds.pruned_added_ms.saturating_mul(1000)
    {
        return Err(expired(format!(
            "added_after {}",
            stix::timestamp(Utc.timestamp_micros(after_us).single().unwrap_or_default())
        )));
    }
    Ok(())
}

/// Walks the collection from the request's position.
async fn walk(state: &HubState, filters: &Filters) -> std::result::Result<Page, HubError> {
    let (start, start_index) = filters.next.unwrap_or_default();
    let mut walk = Walk {
        filters,
        items: Vec::new(),
        seen: HashSet::new(),
        next: None,
    };
    if start <= CATALOGUE {
        let from = if start == CATALOGUE { start_index } else { 0 };
        if !walk.group(CATALOGUE, stix::catalogue(), from) {
            return Ok(Page {
                items: walk.items,
                next: walk.next,
            });
        }
    }
    // Reports from `start` (inclusive) or after the catalogue, and after `added_after`.
    let mut after = if start > CATALOGUE {
        Cursor {
            published_at: start.published_at,
            seq: start.seq - 1,
        }
    } else {
        CATALOGUE
    };
    if let Some(us) = filters.added_after_us {
        let floor = Cursor {
            published_at: us.div_euclid(1000),
            seq: i64::MAX,
        };
        after = after.max(floor);
    }
    let batch = filters.limit.clamp(16, 500);
    let mut scanned = 0;
    loop {
        let rows = published_after(&state.pipeline.store, after, batch as u32).await?;
        let count = rows.len();
        for row in rows {
            let from = if row.cursor == start { start_index } else { 0 };
            if scanned == MAX_SCAN && walk.items.len() < filters.limit {
                // Enough reading for one request: the client continues from here.
                walk.next = Some((row.cursor, 0));
                return Ok(Page {
                    items: walk.items,
                    next: walk.next,
                });
            }
            scanned += 1;
            if !walk.group(row.cursor, stix::report_objects(&row.report), from) {
                return Ok(Page {
                    items: walk.items,
                    next: walk.next,
                });
            }
            after = row.cursor;
        }
        if count < batch {
            return Ok(Page {
                items: walk.items,
                next: None,
            });
        }
    }
}

fn paged(body: Value, page: &Page) -> Response {
    let mut response = taxii_json(&body);
    let headers = response.headers_mut();
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        for (name, ms) in [
            ("x-taxii-date-added-first", first.1),
            ("x-taxii-date-added-last", last.1),
        ] {
            if let Ok(value) = HeaderValue::from_str(&timestamp_ms(ms)) {
                headers.insert(name, value);
            }
        }
    }
    response
}

fn envelope(page: Page) -> Response {
    let mut body = json!({ "more": page.next.is_some() });
    if let Some((cursor, index)) = page.next {
        body["next"] = json!(format!("{cursor}-{index}"));
    }
    if !page.items.is_empty() {
        body["objects"] = Value::Array(page.items.iter().map(|(o, _)| o.clone()).collect());
    }
    paged(body, &page)
}

async fn objects(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    check_collection(&id)?;
    let filters = Filters::parse(&query, true)?;
    check_not_pruned(&state, &filters).await?;
    let page = walk(&state, &filters).await?;
    Ok(envelope(page))
}

async fn manifest(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    check_collection(&id)?;
    let filters = Filters::parse(&query, true)?;
    check_not_pruned(&state, &filters).await?;
    let page = walk(&state, &filters).await?;
    let records: Vec<Value> = page
        .items
        .iter()
        .map(|(object, added)| {
            json!({
                "id": object["id"],
                "date_added": timestamp_ms(*added),
                "version": object["modified"],
                "media_type": stix::MEDIA_TYPE,
            })
        })
        .collect();
    let mut body = json!({ "more": page.next.is_some() });
    if let Some((cursor, index)) = page.next {
        body["next"] = json!(format!("{cursor}-{index}"));
    }
    if !records.is_empty() {
        body["objects"] = Value::Array(records);
    }
    Ok(paged(body, &page))
}

/// The object with this id and its `date_added`, if the collection holds it.
async fn find(state: &HubState, id: &str) -> std::result::Result<Option<(Value, i64)>, HubError> {
    let Some(located) = stix::locate(id) else {
        return Ok(None);
    };
    let found = match located {
        Located::AttackPattern(class) => Some((stix::attack_pattern(class), CATALOGUE_MS)),
        Located::Report(candidates) => published_by_ids(&state.pipeline.store, &candidates)
            .await?
            .into_iter()
            .find_map(|published| {
                stix::report_objects(&published.report)
                    .into_iter()
                    .find(|object| object["id"] == id)
                    .map(|object| (object, published.cursor.published_at))
            }),
        Located::Identity(pattern) => published_by_reporter(&state.pipeline.store, &pattern)
            .await?
            .map(|published| {
                (
                    stix::identity(&published.report.reporter),
                    published.cursor.published_at,
                )
            })
            .filter(|(object, _)| object["id"] == id),
    };
    Ok(found)
}

async fn one_object(
    state: &HubState,
    collection: &str,
    object_id: &str,
    query: &[(String, String)],
) -> Result<(Value, i64)> {
    check_collection(collection)?;
    let filters = Filters::parse(query, false)?;
    match find(state, object_id).await? {
        Some((object, added)) if filters.accepts(&object) && filters.added(added) => {
            Ok((object, added))
        }
        _ => Err(TaxiiError::not_found(format!(
            "no object `{}` in this collection",
            truncated(object_id)
        ))),
    }
}

async fn object(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
    Path((collection, object_id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    let (object, added) = one_object(&state, &collection, &object_id, &query).await?;
    Ok(envelope(Page {
        items: vec![(object, added)],
        next: None,
    }))
}

async fn versions(
    State(state): State<Arc<HubState>>,
    caller: Caller,
    headers: HeaderMap,
    Path((collection, object_id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response> {
    admit(&state, &caller, &headers).await?;
    let (object, added) = one_object(&state, &collection, &object_id, &query).await?;
    let page = Page {
        items: vec![(object, added)],
        next: None,
    };
    let body = json!({ "more": false, "versions": [page.items[0].0["modified"]] });
    Ok(paged(body, &page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiguard_model::threat::AttackClass;

    #[test]
    fn accept_headers() {
        let mut headers = HeaderMap::new();
        assert!(check_accept(&headers).is_ok());
        for ok in [
            "application/taxii+json;version=2.1",
            "application/taxii+json",
            "text/html, */*;q=0.1",
        ] {
            headers.insert(header::ACCEPT, HeaderValue::from_static(ok));
            assert!(check_accept(&headers).is_ok(), "{ok}");
        }
        for bad in ["application/taxii+json;version=2.0", "text/html"] {
            headers.insert(header::ACCEPT, HeaderValue::from_static(bad));
            assert!(check_accept(&headers).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_tokens_round_trip_and_refuse_garbage() {
        let (cursor, index) = parse_next("1700000000000-42-3").unwrap();
        assert_eq!(
            (cursor.published_at, cursor.seq, index),
            (1_700_000_000_000, 42, 3)
        );
        for bad in ["", "1-2", "a-b-c", "1-2-999", "1-2-3-4"] {
            assert!(parse_next(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_parse_and_match() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        let f = Filters::parse(
            &q(&[
                ("match[type]", "indicator,sighting"),
                ("limit", "5000"),
                ("match[version]", "2024-01-01T00:00:00Z"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(f.limit, MAX_LIMIT);
        let ap = stix::attack_pattern(AttackClass::Sqli);
        assert!(!f.accepts(&ap));
        assert!(Filters::parse(&q(&[("added_after", "yesterday")]), true).is_err());
        assert!(Filters::parse(&q(&[("limit", "-1")]), true).is_err());
        let f =
            Filters::parse(&q(&[("added_after", "2024-01-01T00:00:00.000500Z")]), true).unwrap();
        assert!(!f.added(CATALOGUE_MS));
        assert!(f.added(CATALOGUE_MS + 1));
        assert_eq!(AttackClass::ALL.len(), stix::catalogue().len());
    }
}
