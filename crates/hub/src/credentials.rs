//! Participant credentials: API keys, mTLS client certificates, or both.
//!
//! A participant is registered with an authentication mode:
//!
//! | mode | a call is accepted when |
//! | --- | --- |
//! | `api_key` (default) | it carries one of the participant's API keys |
//! | `certificate` | its TLS client certificate matches one registered to the participant |
//! | `both` | it carries a key **and** a certificate, both the participant's |
//!
//! A certificate is registered by the SHA-256 of its DER (a pin on exactly that
//! certificate) or by its subject (any certificate with that subject that the listener's
//! `tls.client_ca` verified). Whatever the mode, a call whose key and certificate belong to
//! two different participants is refused. Every front door (REST, GraphQL, gRPC, TAXII)
//! authenticates through [`authenticate`].

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::HubState;
use crate::auth::{generate_api_key, hash_api_key, parse_sha256_hex};
use crate::bus::Bus;
use crate::error::HubError;
use crate::pipeline::ParticipantEntry;
use crate::store::{
    NewParticipant, Participant, Store, execute, fetch_all, participant_from_row, participant_row,
};
use crate::tls::{ClientCert, Peer, normalise_subject};

/// The longest API key or subject looked up.
const MAX_CREDENTIAL_LEN: usize = 1024;
/// The most certificates registered to one participant at once.
const MAX_CERTS: usize = 16;

/// How a participant authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// An API key.
    #[default]
    ApiKey,
    /// A TLS client certificate.
    Certificate,
    /// An API key and a TLS client certificate, both the participant's.
    Both,
}

impl AuthMode {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::ApiKey => "api_key",
            AuthMode::Certificate => "certificate",
            AuthMode::Both => "both",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "api_key" | "key" => Some(AuthMode::ApiKey),
            "certificate" | "cert" => Some(AuthMode::Certificate),
            "both" => Some(AuthMode::Both),
            _ => None,
        }
    }

    /// Whether the mode uses an API key.
    pub fn uses_key(self) -> bool {
        self != AuthMode::Certificate
    }

    /// Whether the mode uses a certificate.
    pub fn uses_certificate(self) -> bool {
        self != AuthMode::ApiKey
    }
}

impl std::str::FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuthMode::parse(s).ok_or_else(|| {
            format!(
                "unknown authentication mode `{}`: use api_key, certificate or both",
                s.chars().take(32).collect::<String>()
            )
        })
    }
}

/// How a certificate is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "match", content = "value", rename_all = "snake_case")]
pub enum CertMatch {
    /// SHA-256 of the certificate's DER, lowercase hex.
    Sha256(String),
    /// The certificate's subject, normalised (`CN=gw-1, O=Example`).
    Subject(String),
}

impl CertMatch {
    /// A fingerprint given as 64 hex digits (colons allowed, as `openssl x509 -fingerprint`
    /// prints them).
    pub fn sha256(text: &str) -> Result<Self, String> {
        let hex: String = text
            .trim()
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        parse_sha256_hex(&hex)
            .map(|_| CertMatch::Sha256(hex))
            .ok_or_else(|| "a certificate fingerprint is 64 hex digits (SHA-256)".to_owned())
    }

    /// A subject such as `CN=gw-1, O=Example`.
    pub fn subject(text: &str) -> Result<Self, String> {
        let subject = normalise_subject(text);
        if subject.is_empty() || subject.len() > MAX_CREDENTIAL_LEN || !subject.contains('=') {
            return Err("a certificate subject looks like `CN=name, O=organisation`".to_owned());
        }
        Ok(CertMatch::Subject(subject))
    }

    fn kind(&self) -> &'static str {
        match self {
            CertMatch::Sha256(_) => "sha256",
            CertMatch::Subject(_) => "subject",
        }
    }

    fn value(&self) -> &str {
        match self {
            CertMatch::Sha256(v) | CertMatch::Subject(v) => v,
        }
    }
}

/// The credentials a participant is registered with.
#[derive(Debug, Clone, Default)]
pub struct NewCredentials {
    pub mode: AuthMode,
    /// Certificates that identify it (required for `certificate` and `both`).
    pub certs: Vec<CertMatch>,
}

impl NewCredentials {
    fn check(&self) -> Result<(), HubError> {
        if self.mode.uses_certificate() && self.certs.is_empty() {
            return Err(HubError::Invalid(format!(
                "auth `{}` needs a client certificate (a PEM file, its SHA-256 or its subject)",
                self.mode.as_str()
            )));
        }
        if !self.mode.uses_certificate() && !self.certs.is_empty() {
            return Err(HubError::Invalid(
                "a certificate was given but auth is `api_key`: use `certificate` or `both`".into(),
            ));
        }
        if self.certs.len() > MAX_CERTS {
            return Err(HubError::Invalid(format!(
                "at most {MAX_CERTS} certificates per participant"
            )));
        }
        Ok(())
    }
}

/// A participant with its credentials, for listings.
#[derive(Debug, Clone)]
pub struct ParticipantCredentials {
    pub participant: Participant,
    pub mode: AuthMode,
    /// How many API keys it has.
    pub keys: u32,
    pub certs: Vec<CertMatch>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hub_participant_auth (participant_id TEXT PRIMARY KEY \
     REFERENCES hub_participants(id), mode TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_participant_certs (match_kind TEXT NOT NULL, \
     value TEXT NOT NULL, participant_id TEXT NOT NULL REFERENCES hub_participants(id), \
     created_at BIGINT NOT NULL, PRIMARY KEY (match_kind, value))",
];

/// Creates the credential tables (same SQL on SQLite and PostgreSQL).
pub(crate) async fn migrate(store: &Store) -> Result<(), HubError> {
    for statement in SCHEMA {
        execute!(store, *statement)?;
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The authentication mode of a participant (`api_key` when none was recorded).
pub async fn mode_of(store: &Store, participant_id: &str) -> Result<AuthMode, HubError> {
    let rows = fetch_all!(
        store,
        "SELECT mode FROM hub_participant_auth WHERE participant_id = $1",
        [participant_id],
        |row| row.try_get::<String, _>(0)
    )?;
    match rows.first() {
        None => Ok(AuthMode::ApiKey),
        Some(text) => AuthMode::parse(text).ok_or_else(|| {
            HubError::Store(format!(
                "participant {participant_id}: unknown authentication mode `{text}`"
            ))
        }),
    }
}

/// Participant columns and its mode, for the two lookups below.
const PARTICIPANT_AND_MODE: &str = "SELECT p.id, p.name, p.organisation, p.own_networks, p.own_hosts, p.subscription, \
     COALESCE(a.mode, 'api_key') FROM hub_participants p \
     LEFT JOIN hub_participant_auth a ON a.participant_id = p.id";

fn with_mode(
    rows: Vec<(crate::store::ParticipantRow, String)>,
) -> Result<Option<(Participant, AuthMode)>, HubError> {
    let Some((row, mode)) = rows.into_iter().next() else {
        return Ok(None);
    };
    let participant = participant_from_row(row)?;
    let mode = AuthMode::parse(&mode).ok_or_else(|| {
        HubError::Store(format!(
            "participant {}: unknown authentication mode `{mode}`",
            participant.id
        ))
    })?;
    Ok(Some((participant, mode)))
}

/// The participant owning the API key with this hash, and its mode (one query).
async fn participant_by_key(
    store: &Store,
    key_hash: &str,
) -> Result<Option<(Participant, AuthMode)>, HubError> {
    let sql = format!(
        "{PARTICIPANT_AND_MODE} JOIN hub_api_keys k ON k.participant_id = p.id \
         WHERE k.key_hash = $1"
    );
    let rows = fetch_all!(store, sqlx::AssertSqlSafe(sql), [key_hash], |row| Ok((
        participant_row(row)?,
        row.try_get::<String, _>(6)?
    )))?;
    with_mode(rows)
}

/// The participant a verified client certificate belongs to, and its mode: by fingerprint
/// first, then by subject.
async fn participant_by_cert(
    store: &Store,
    cert: &ClientCert,
) -> Result<Option<(Participant, AuthMode)>, HubError> {
    let subject = cert.subject.as_deref().unwrap_or("");
    // `sha256` sorts before `subject`: a pinned certificate wins over a subject match.
    let sql = format!(
        "{PARTICIPANT_AND_MODE} JOIN hub_participant_certs c ON c.participant_id = p.id \
         WHERE (c.match_kind = 'sha256' AND c.value = $1) \
            OR (c.match_kind = 'subject' AND c.value = $2) \
         ORDER BY c.match_kind LIMIT 1"
    );
    let rows = fetch_all!(
        store,
        sqlx::AssertSqlSafe(sql),
        [cert.sha256.as_str(), subject],
        |row| Ok((participant_row(row)?, row.try_get::<String, _>(6)?))
    )?;
    with_mode(rows)
}

/// The certificates registered to a participant.
pub async fn certs_of(store: &Store, participant_id: &str) -> Result<Vec<CertMatch>, HubError> {
    let rows = fetch_all!(
        store,
        "SELECT match_kind, value FROM hub_participant_certs WHERE participant_id = $1 \
         ORDER BY created_at, match_kind, value",
        [participant_id],
        |row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?))
    )?;
    Ok(rows
        .into_iter()
        .map(|(kind, value)| match kind.as_str() {
            "sha256" => CertMatch::Sha256(value),
            _ => CertMatch::Subject(value),
        })
        .collect())
}

async fn key_count(store: &Store, participant_id: &str) -> Result<u32, HubError> {
    let rows = fetch_all!(
        store,
        "SELECT COUNT(*) FROM hub_api_keys WHERE participant_id = $1",
        [participant_id],
        |row| row.try_get::<i64, _>(0)
    )?;
    Ok(u32::try_from(rows.first().copied().unwrap_or(0)).unwrap_or(u32::MAX))
}

/// Every participant with its credentials, oldest first.
pub async fn list(store: &Store) -> Result<Vec<ParticipantCredentials>, HubError> {
    let mut out = Vec::new();
    for participant in store.participants().await? {
        out.push(ParticipantCredentials {
            mode: mode_of(store, &participant.id).await?,
            keys: key_count(store, &participant.id).await?,
            certs: certs_of(store, &participant.id).await?,
            participant,
        });
    }
    Ok(out)
}

/// Registers a participant with its credentials in the store alone (no bus): answers it and
/// its first API key when its mode uses one (shown only now; the store keeps its hash).
pub async fn register_in_store(
    store: &Store,
    new: &NewParticipant,
    credentials: &NewCredentials,
) -> Result<(Participant, Option<String>), HubError> {
    credentials.check()?;
    for cert in &credentials.certs {
        let taken = fetch_all!(
            store,
            "SELECT participant_id FROM hub_participant_certs WHERE match_kind = $1 AND value = $2",
            [cert.kind(), cert.value()],
            |row| row.try_get::<String, _>(0)
        )?;
        if !taken.is_empty() {
            return Err(HubError::Conflict(format!(
                "the certificate {} `{}` is registered to another participant",
                cert.kind(),
                cert.value()
            )));
        }
    }
    let participant = store.add_participant(new).await?;
    match add_credentials(store, &participant.id, credentials).await {
        Ok(key) => Ok((participant, key)),
        Err(error) => {
            // Undo the half-registered participant (a concurrent registration of the same
            // certificate is the only expected cause).
            let _ = remove(store, &participant.id).await;
            Err(error)
        }
    }
}

async fn add_credentials(
    store: &Store,
    participant_id: &str,
    credentials: &NewCredentials,
) -> Result<Option<String>, HubError> {
    execute!(
        store,
        "INSERT INTO hub_participant_auth (participant_id, mode) VALUES ($1, $2)",
        participant_id,
        credentials.mode.as_str(),
    )?;
    for cert in &credentials.certs {
        let inserted = execute!(
            store,
            "INSERT INTO hub_participant_certs (match_kind, value, participant_id, created_at) \
             VALUES ($1, $2, $3, $4)",
            cert.kind(),
            cert.value(),
            participant_id,
            now_ms(),
        );
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(HubError::Conflict(format!(
                    "the certificate {} `{}` is registered to another participant",
                    cert.kind(),
                    cert.value()
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !credentials.mode.uses_key() {
        return Ok(None);
    }
    let key = generate_api_key()?;
    store
        .add_api_key(participant_id, &hash_api_key(&key))
        .await?;
    Ok(Some(key))
}

async fn remove(store: &Store, participant_id: &str) -> Result<(), HubError> {
    for statement in [
        "DELETE FROM hub_participant_certs WHERE participant_id = $1",
        "DELETE FROM hub_participant_auth WHERE participant_id = $1",
        "DELETE FROM hub_api_keys WHERE participant_id = $1",
        "DELETE FROM hub_participants WHERE id = $1",
    ] {
        execute!(store, statement, participant_id)?;
    }
    Ok(())
}

/// Registers a participant on a running hub: the store, then its queue on the bus.
pub async fn register(
    state: &HubState,
    new: NewParticipant,
    credentials: NewCredentials,
) -> Result<(Participant, Option<String>), HubError> {
    let (participant, key) = register_in_store(&state.pipeline.store, &new, &credentials).await?;
    state
        .bus
        .ensure_participant(&participant.id, &participant.subscription)
        .await?;
    state.pipeline.remember(participant.clone());
    Ok((participant, key))
}

/// The participant behind a call's API key and/or verified client certificate, checked
/// against its authentication mode.
pub async fn authenticate(
    state: &HubState,
    key: Option<&str>,
    cert: Option<&ClientCert>,
) -> Result<Arc<ParticipantEntry>, HubError> {
    let store = &state.pipeline.store;
    let key = key.map(str::trim).filter(|k| !k.is_empty());
    let by_key = match key {
        None => None,
        Some(key) if key.len() > MAX_CREDENTIAL_LEN => {
            return Err(HubError::Unauthenticated("unknown API key".into()));
        }
        Some(key) => Some(
            participant_by_key(store, &hash_api_key(key))
                .await?
                .ok_or_else(|| HubError::Unauthenticated("unknown API key".into()))?,
        ),
    };
    let by_cert = match cert {
        None => None,
        Some(cert) => participant_by_cert(store, cert).await?,
    };
    let cert_owner = by_cert.as_ref().map(|(p, _)| p.id.clone());
    let (participant, mode) = match (by_key, by_cert) {
        (Some((k, _)), Some((c, _))) if k.id != c.id => {
            return Err(HubError::Unauthenticated(
                "the API key and the client certificate belong to different participants".into(),
            ));
        }
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => {
            return Err(HubError::Unauthenticated(match cert {
                Some(cert) => format!(
                    "the client certificate (SHA-256 {}, subject `{}`) is not registered to \
                     any participant; send an API key as `authorization: Bearer KEY`",
                    cert.sha256,
                    cert.subject.as_deref().unwrap_or("")
                ),
                None => "send the API key as `authorization: Bearer KEY` (or a registered \
                         TLS client certificate)"
                    .into(),
            }));
        }
    };
    let has_key = key.is_some();
    let cert_matches = cert_owner.as_deref() == Some(participant.id.as_str());
    match mode {
        AuthMode::ApiKey if !has_key => {
            return Err(HubError::Unauthenticated(
                "this participant authenticates with an API key: send it as \
                 `authorization: Bearer KEY`"
                    .into(),
            ));
        }
        AuthMode::Certificate if !cert_matches => {
            return Err(HubError::Unauthenticated(
                "this participant authenticates with its TLS client certificate".into(),
            ));
        }
        AuthMode::Both if !(has_key && cert_matches) => {
            return Err(HubError::Unauthenticated(
                "this participant must send its API key and present its TLS client \
                 certificate"
                    .into(),
            ));
        }
        _ => {}
    }
    if let Bus::Memory(bus) = &state.bus {
        // A participant registered from the command line while this embedded hub runs
        // gets its in-process queue at its first call.
        bus.ensure_participant(&participant.id, &participant.subscription);
    }
    Ok(state.pipeline.remember(participant))
}

/// The credentials a request carries: an API key (`Authorization: Bearer KEY`,
/// `Authorization: Basic` with the key as password, or `X-Api-Key`) and the TLS client
/// certificate of its connection. An extractor: it never fails, [`Caller::authenticate`]
/// does.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    key: Option<String>,
    cert: Option<Arc<ClientCert>>,
    tls: bool,
}

impl Caller {
    /// Reads the credentials of a request.
    pub fn from_parts(headers: &HeaderMap, extensions: &axum::http::Extensions) -> Self {
        let peer = extensions.get::<ConnectInfo<Peer>>().map(|info| &info.0);
        Self {
            key: api_key(headers),
            cert: peer.and_then(|p| p.cert.clone()),
            tls: peer.is_some_and(|p| p.tls),
        }
    }

    /// Whether the request came over TLS.
    pub fn over_tls(&self) -> bool {
        self.tls
    }

    /// The participant making the call.
    pub async fn authenticate(&self, state: &HubState) -> Result<Arc<ParticipantEntry>, HubError> {
        authenticate(state, self.key.as_deref(), self.cert.as_deref()).await
    }

    /// Whether the request carried any credential.
    pub fn is_anonymous(&self) -> bool {
        self.key.is_none() && self.cert.is_none()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller::from_parts(&parts.headers, &parts.extensions))
    }
}

/// The API key of a request, from `Authorization: Bearer`, `Authorization: Basic` (the
/// password; the user name is ignored) or `X-Api-Key`.
pub fn api_key(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = crate::auth::bearer_token(value) {
            return Some(token.to_owned());
        }
        if let Some(password) = basic_password(value) {
            return Some(password);
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

/// The password of an `Authorization: Basic base64(user:password)` value.
fn basic_password(value: &str) -> Option<String> {
    let value = value.trim();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case("basic ") {
        return None;
    }
    let encoded = value[6..].trim();
    if encoded.len() > 4 * MAX_CREDENTIAL_LEN {
        return None;
    }
    let decoded = base64_decode(encoded)?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.trim().to_owned()).filter(|p| !p.is_empty())
}

/// Standard base64 with padding (what HTTP Basic uses).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    if !text.len().is_multiple_of(4) || text.len() - bytes.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let produced = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for i in 0..produced {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_auth_carries_the_key_as_password() {
        let mut headers = HeaderMap::new();
        // base64("gw:ahk_abc")
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Z3c6YWhrX2FiYw=="),
        );
        assert_eq!(api_key(&headers).as_deref(), Some("ahk_abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer k1"));
        assert_eq!(api_key(&headers).as_deref(), Some("k1"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic %%%"));
        assert_eq!(api_key(&headers), None);
        // base64("nopassword")
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic bm9wYXNzd29yZA=="),
        );
        assert_eq!(api_key(&headers), None);
    }

    #[test]
    fn base64_decodes_every_padding() {
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert!(base64_decode("YWJ").is_none());
        assert!(base64_decode("Y===").is_none());
    }

    #[test]
    fn fingerprints_and_subjects_are_checked() {
        let hex = "AB:".repeat(31) + "AB";
        assert_eq!(
            CertMatch::sha256(&hex).unwrap(),
            CertMatch::Sha256("ab".repeat(32))
        );
        assert!(CertMatch::sha256("abc").is_err());
        assert_eq!(
            CertMatch::subject("CN = gw, O=x").unwrap(),
            CertMatch::Subject("CN=gw, O=x".into())
        );
        assert!(CertMatch::subject("gw").is_err());
        assert_eq!("both".parse::<AuthMode>().unwrap(), AuthMode::Both);
        assert_eq!("api-key".parse::<AuthMode>().unwrap(), AuthMode::ApiKey);
        assert!("x".parse::<AuthMode>().is_err());
    }
}
