//! The worker's step, the same whichever bus carries it: a raw report (an [`Envelope`] from
//! the ingest queue) is normalised, anonymised, scored, de-duplicated by id and stored; the
//! caller then publishes the result and marks it published.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiguard_model::threat::{ThreatReport, Trust};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::anonymise::{Pseudonymiser, Redactor};
use crate::config::Settings;
use crate::error::HubError;
use crate::normalise::{NormaliseContext, RawReport, normalise};
use crate::store::{Participant, Store, StoredReport};
use crate::subscription::routing_key;

/// The largest envelope a worker reads from the ingest queue.
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// The envelope format version.
pub const ENVELOPE_VERSION: u32 = 1;

/// A raw report on the ingest queue: what the participant sent, who sent it (hub-internal),
/// and the canonical id assigned at ingest (a redelivery carries the same id).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub id: Uuid,
    pub participant: String,
    pub received_at: DateTime<Utc>,
    pub protocol: String,
    pub report: RawReport,
}

impl Envelope {
    /// The envelope as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope serialises")
    }

    /// Parses an envelope, with a size limit.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(format!(
                "envelope of {} bytes exceeds {MAX_ENVELOPE_BYTES}",
                bytes.len()
            ));
        }
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format!("unreadable envelope: {e}"))?;
        if envelope.v != ENVELOPE_VERSION {
            return Err(format!("envelope version {} is unknown", envelope.v));
        }
        Ok(envelope)
    }
}

/// A participant with its redactor built once.
#[derive(Debug)]
pub struct ParticipantEntry {
    pub participant: Participant,
    pub redactor: Redactor,
}

impl ParticipantEntry {
    pub fn new(participant: Participant) -> Self {
        let identifiers: Vec<&str> = [
            participant.id.as_str(),
            participant.name.as_str(),
            participant.organisation.as_str(),
        ]
        .into_iter()
        .chain(participant.own_hosts.iter().map(String::as_str))
        .collect();
        let redactor = Redactor::new(identifiers, participant.own_networks.iter().copied());
        Self {
            participant,
            redactor,
        }
    }
}

/// What to do with a processed message.
#[derive(Debug)]
pub enum Outcome {
    /// Publish this report (new, or stored earlier but not yet published), then call
    /// [`Pipeline::published`].
    Publish {
        report: Box<ThreatReport>,
        routing_key: String,
        body: Vec<u8>,
        /// The reporting participant (hub-internal): its own feed does not get the report
        /// back.
        origin: String,
        /// Held until the report is published and marked, so that a duplicate of the same
        /// id processed meanwhile by another worker finds it published.
        claim: Claim,
    },
    /// Stored and published before: a redelivery. Acknowledge and drop it.
    Duplicate,
}

/// Why a message could not be processed.
#[derive(Debug)]
pub enum ProcessError {
    /// The message can never be processed: dead-letter it with this reason.
    Poison(String),
    /// A transient failure (the store): retry it later.
    Transient(HubError),
}

/// A report found in the store.
enum Stored {
    Published,
    Unpublished(Box<ThreatReport>, Vec<u8>, String),
}

impl Stored {
    fn outcome(self, claim: Claim) -> Outcome {
        match self {
            Stored::Published => Outcome::Duplicate,
            Stored::Unpublished(report, body, origin) => Outcome::Publish {
                routing_key: routing_key(&report),
                report,
                body,
                origin,
                claim,
            },
        }
    }
}

/// Report ids being processed in this process.
#[derive(Default)]
struct Inflight {
    ids: Mutex<HashSet<Uuid>>,
    released: Notify,
}

/// The right to process one report id; released on drop.
pub struct Claim {
    id: Uuid,
    inflight: Arc<Inflight>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claim({})", self.id)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.inflight
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
        self.inflight.released.notify_waiters();
    }
}

/// Normalisation, anonymisation, scoring and storage.
pub struct Pipeline {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub pseudonymiser: Pseudonymiser,
    participants: Mutex<HashMap<String, Arc<ParticipantEntry>>>,
    inflight: Arc<Inflight>,
}

impl Pipeline {
    pub fn new(settings: Arc<Settings>, store: Store) -> Self {
        let pseudonymiser = Pseudonymiser::new(settings.secret.clone(), settings.pseudonym_epoch);
        Self {
            settings,
            store,
            pseudonymiser,
            participants: Mutex::new(HashMap::new()),
            inflight: Arc::new(Inflight::default()),
        }
    }

    /// Waits until no other worker of this process handles `id`, then claims it.
    /// (Duplicates across hub processes remain possible; consumers de-duplicate by id.)
    async fn claim(&self, id: Uuid) -> Claim {
        loop {
            let released = self.inflight.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let inserted = self
                .inflight
                .ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id);
            if inserted {
                return Claim {
                    id,
                    inflight: self.inflight.clone(),
                };
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), released).await;
        }
    }

    /// The participant with this id, from a cache in front of the store.
    pub async fn participant(&self, id: &str) -> Result<Option<Arc<ParticipantEntry>>, HubError> {
        if let Some(entry) = self.cache().get(id) {
            return Ok(Some(entry.clone()));
        }
        let Some(participant) = self.store.participant(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.remember(participant)))
    }

    /// Caches a participant (after registration or authentication).
    pub fn remember(&self, participant: Participant) -> Arc<ParticipantEntry> {
        let entry = Arc::new(ParticipantEntry::new(participant));
        self.cache()
            .insert(entry.participant.id.clone(), entry.clone());
        entry
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ParticipantEntry>>> {
        self.participants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Processes one message from the ingest queue.
    pub async fn process(&self, bytes: &[u8]) -> Result<Outcome, ProcessError> {
        let envelope = Envelope::from_bytes(bytes).map_err(ProcessError::Poison)?;
        let claim = self.claim(envelope.id).await;
        if let Some(stored) = self.stored(envelope.id).await? {
            return Ok(stored.outcome(claim));
        }
        let entry = self
            .participant(&envelope.participant)
            .await
            .map_err(ProcessError::Transient)?
            .ok_or_else(|| ProcessError::Poison("the reporting participant is unknown".into()))?;

        let epoch = self.pseudonymiser.epoch_at(envelope.received_at);
        let pseudonym = self.pseudonymiser.pseudonym(&entry.participant.id, epoch);
        let mut context = NormaliseContext {
            settings: &self.settings,
            redactor: &entry.redactor,
            id: envelope.id,
            received_at: envelope.received_at,
            pseudonym,
            trust: Trust {
                score: self.settings.trust_score,
                corroborations: 1,
            },
        };
        let mut report = normalise(&envelope.report, &context).map_err(|e| match e {
            HubError::Invalid(reason) => ProcessError::Poison(format!("invalid report: {reason}")),
            other => ProcessError::Poison(other.to_string()),
        })?;
        let ip = report.indicators.ip.map(|p| p.to_string());
        if let Some(ip) = &ip {
            let window = chrono::Duration::from_std(self.settings.corroboration_window)
                .unwrap_or(chrono::Duration::days(1));
            let since = (envelope.received_at - window).timestamp_millis();
            let others = self
                .store
                .other_reporters(ip, since, &entry.participant.id)
                .await
                .map_err(ProcessError::Transient)?;
            context.trust.corroborations = 1 + others;
            report.trust = context.trust;
        }
        let body = report.to_json();
        let stored = StoredReport {
            id: report.id,
            participant_id: entry.participant.id.clone(),
            ip,
            class: report.category.class.as_str().to_owned(),
            severity: report.severity.as_str().to_owned(),
            received_at_ms: envelope.received_at.timestamp_millis(),
            valid_until_ms: report.valid_until.timestamp_millis(),
            body: String::from_utf8(body.clone()).expect("JSON is UTF-8"),
        };
        let inserted = self
            .store
            .insert_report(&stored)
            .await
            .map_err(ProcessError::Transient)?;
        if !inserted {
            // Another worker stored it meanwhile.
            return self
                .stored(envelope.id)
                .await?
                .map(|stored| stored.outcome(claim))
                .ok_or_else(|| ProcessError::Transient(HubError::Store("report vanished".into())));
        }
        Ok(Outcome::Publish {
            routing_key: routing_key(&report),
            report: Box::new(report),
            body,
            origin: entry.participant.id.clone(),
            claim,
        })
    }

    async fn stored(&self, id: Uuid) -> Result<Option<Stored>, ProcessError> {
        match self
            .store
            .report_state(id)
            .await
            .map_err(ProcessError::Transient)?
        {
            None => Ok(None),
            Some((_, true, _)) => Ok(Some(Stored::Published)),
            Some((body, false, origin)) => {
                let report = ThreatReport::from_json(body.as_bytes()).map_err(|e| {
                    ProcessError::Poison(format!("the stored report is unreadable: {e}"))
                })?;
                Ok(Some(Stored::Unpublished(
                    Box::new(report),
                    body.into_bytes(),
                    origin,
                )))
            }
        }
    }

    /// Records that a report reached the participants' exchange.
    pub async fn published(&self, id: Uuid) -> Result<(), HubError> {
        self.store.mark_published(id).await
    }
}
