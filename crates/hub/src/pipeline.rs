//! The worker's step, the same whichever bus carries it: a raw report (an [`Envelope`] from
//! the ingest queue) is normalised, anonymised, de-duplicated by id and stored as a sighting
//! of its indicator; then the indicator is evaluated under the trust model (see `feed.rs`):
//! the feed items this decides (a promotion) are committed to the feed log, and the caller
//! publishes them and marks the report done.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiguard_model::feed::indicator_key;
use apiguard_model::threat::{ThreatReport, Trust};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::anonymise::{Pseudonymiser, Redactor};
use crate::config::Settings;
use crate::error::HubError;
use crate::feed::{BatchEntry, FeedRow, Sighting, StoredBatch, StoredState, TrustRecord};
use crate::normalise::{NormaliseContext, RawReport, normalise};
use crate::store::{Participant, Store, StoredReport};
use crate::trust::organisation_key;

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
    /// Publish these feed items in order (none when the report promoted nothing), then
    /// call [`Pipeline::published`].
    Publish {
        /// The report processed.
        report_id: Uuid,
        /// Committed feed items to publish.
        items: Vec<FeedRow>,
        /// Held until the items are published and the report marked, so that a duplicate
        /// of the same id processed meanwhile by another worker finds it done.
        claim: Claim,
    },
    /// Stored and handled before: a redelivery. Acknowledge and drop it.
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
    /// Woken whenever this process appends to the feed log (GraphQL subscriptions wait on
    /// it; they also poll, for items appended by other hub processes).
    pub feed_notify: Notify,
    /// Taken by the workers' batch writes, so that they queue here rather than in SQLite's
    /// busy handler, which sleeps and retries (up to 100 ms a turn).
    writer: tokio::sync::Mutex<()>,
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
            feed_notify: Notify::new(),
            writer: tokio::sync::Mutex::new(()),
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

    /// Claims `id` unless another worker of this process handles it now.
    fn try_claim(&self, id: Uuid) -> Option<Claim> {
        let inserted = self
            .inflight
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
        inserted.then(|| Claim {
            id,
            inflight: self.inflight.clone(),
        })
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
        self.process_at(bytes, Utc::now()).await
    }

    /// Processes one message as if the time were `now` (simulations and tests run the trust
    /// model on their own clock).
    pub async fn process_at(
        &self,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Outcome, ProcessError> {
        let envelope = Envelope::from_bytes(bytes).map_err(ProcessError::Poison)?;
        let claim = self.claim(envelope.id).await;
        if let Some(outcome) = self.resume(envelope.id, now).await? {
            return Ok(outcome.with_claim(claim));
        }
        let trust_records = &mut HashMap::new();
        let Prepared {
            report,
            stored,
            sighting,
        } = self.prepare(&envelope, trust_records).await?;
        let inserted = self
            .store
            .insert_sighting(&stored, sighting.as_ref(), &self.settings.trust, now)
            .await
            .map_err(ProcessError::Transient)?;
        if !inserted {
            // Another worker (of another hub process) stored it meanwhile.
            return self
                .resume(envelope.id, now)
                .await?
                .map(|outcome| outcome.with_claim(claim))
                .ok_or_else(|| ProcessError::Transient(HubError::Store("report vanished".into())));
        }
        if let Some(allowed) = sighting
            .as_ref()
            .filter(|s| s.allowlisted)
            .and(report.indicators.ip)
        {
            tracing::info!(indicator = %allowed, "an allowlisted indicator was reported; it is not published");
        }
        let items = match sighting.filter(|s| !s.allowlisted) {
            Some(sighting) => self
                .evaluate(&sighting.indicator, now, report.id)
                .await
                .map_err(ProcessError::Transient)?,
            None => Vec::new(),
        };
        Ok(Outcome::Publish {
            report_id: report.id,
            items,
            claim,
        })
    }

    /// Normalises and anonymises one envelope into the report to store and its sighting.
    /// `trust_records` caches reporters' trust within a batch.
    async fn prepare(
        &self,
        envelope: &Envelope,
        trust_records: &mut HashMap<String, TrustRecord>,
    ) -> Result<Prepared, ProcessError> {
        let entry = self
            .participant(&envelope.participant)
            .await
            .map_err(ProcessError::Transient)?
            .ok_or_else(|| ProcessError::Poison("the reporting participant is unknown".into()))?;

        let epoch = self.pseudonymiser.epoch_at(envelope.received_at);
        let pseudonym = self.pseudonymiser.pseudonym(&entry.participant.id, epoch);
        let trust = &self.settings.trust;
        let record = match trust_records.get(&entry.participant.id) {
            Some(record) => *record,
            None => {
                let record = self
                    .store
                    .trust_record(&entry.participant.id)
                    .await
                    .map_err(ProcessError::Transient)?;
                trust_records.insert(entry.participant.id.clone(), record);
                record
            }
        };
        let context = NormaliseContext {
            settings: &self.settings,
            redactor: &entry.redactor,
            id: envelope.id,
            received_at: envelope.received_at,
            pseudonym,
            trust: Trust {
                score: (trust.score(record.evidence) * 100.0)
                    .round()
                    .clamp(0.0, 100.0) as u8,
                corroborations: 1,
            },
        };
        let report = normalise(&envelope.report, &context).map_err(|e| match e {
            HubError::Invalid(reason) => ProcessError::Poison(format!("invalid report: {reason}")),
            other => ProcessError::Poison(other.to_string()),
        })?;
        let sighting = indicator_key(&report.indicators).map(|indicator| Sighting {
            allowlisted: report
                .indicators
                .ip
                .is_some_and(|ip| trust.allowlisted(&ip).is_some()),
            indicator,
            organisation: organisation_key(&entry.participant.organisation),
        });
        let body = report.to_json();
        let stored = StoredReport {
            id: report.id,
            participant_id: entry.participant.id.clone(),
            ip: report.indicators.ip.map(|p| p.to_string()),
            class: report.category.class.as_str().to_owned(),
            severity: report.severity.as_str().to_owned(),
            received_at_ms: envelope.received_at.timestamp_millis(),
            valid_until_ms: report.valid_until.timestamp_millis(),
            body: String::from_utf8(body).expect("JSON is UTF-8"),
        };
        Ok(Prepared {
            report,
            stored,
            sighting,
        })
    }

    /// Processes a batch of messages from the ingest queue: every new report is stored and
    /// every indicator decided in one transaction (see [`Store::store_batch`]). The caller
    /// publishes [`Batch::items`], calls [`Pipeline::batch_published`], then settles each
    /// message by its [`BatchOutcome`].
    pub async fn process_batch(&self, messages: &[&[u8]]) -> Batch {
        self.process_batch_at(messages, Utc::now()).await
    }

    /// [`Pipeline::process_batch`] as if the time were `now`.
    pub async fn process_batch_at(&self, messages: &[&[u8]], now: DateTime<Utc>) -> Batch {
        let mut outcomes: Vec<BatchOutcome> = Vec::with_capacity(messages.len());
        let mut claims = Vec::new();
        let mut prepared: Vec<(usize, Prepared)> = Vec::new();
        let mut seen = HashSet::new();
        let mut trust_records = HashMap::new();
        for bytes in messages {
            let index = outcomes.len();
            let envelope = match Envelope::from_bytes(bytes) {
                Ok(envelope) => envelope,
                Err(reason) => {
                    outcomes.push(BatchOutcome::Poison(reason));
                    continue;
                }
            };
            if !seen.insert(envelope.id) {
                // A second copy in this batch: the first one stands for it (and is requeued
                // with it if it cannot be processed).
                outcomes.push(BatchOutcome::Duplicate);
                continue;
            }
            let Some(claim) = self.try_claim(envelope.id) else {
                outcomes.push(BatchOutcome::Alone);
                continue;
            };
            match self.prepare(&envelope, &mut trust_records).await {
                Ok(ready) => {
                    claims.push(claim);
                    prepared.push((index, ready));
                    outcomes.push(BatchOutcome::Done);
                }
                Err(ProcessError::Poison(reason)) => outcomes.push(BatchOutcome::Poison(reason)),
                Err(ProcessError::Transient(_)) => outcomes.push(BatchOutcome::Alone),
            }
        }
        let writing = self.writer.lock().await;
        let entries: Vec<BatchEntry<'_>> = prepared
            .iter()
            .map(|(_, p)| BatchEntry {
                report: &p.stored,
                sighting: p.sighting.as_ref(),
                parsed: Some(&p.report),
            })
            .collect();
        let stored = if entries.is_empty() {
            Ok(StoredBatch {
                states: Vec::new(),
                rows: Vec::new(),
            })
        } else {
            self.store
                .store_batch(&entries, &self.settings.trust, now)
                .await
        };
        drop(writing);
        let stored = match stored {
            Ok(stored) => stored,
            Err(error) => {
                // One bad report must not hold up the others: each goes the single way,
                // where a failure concerns it alone.
                tracing::warn!(%error, reports = prepared.len(), "a batch could not be stored; processing its reports one by one");
                for (index, _) in &prepared {
                    outcomes[*index] = BatchOutcome::Alone;
                }
                return Batch {
                    outcomes,
                    items: Vec::new(),
                    reports: Vec::new(),
                    claims: Vec::new(),
                };
            }
        };
        self.feed_appended(&stored.rows);
        let mut reports = Vec::with_capacity(prepared.len());
        for ((index, ready), state) in prepared.iter().zip(&stored.states) {
            match state {
                StoredState::Done => outcomes[*index] = BatchOutcome::Duplicate,
                StoredState::New | StoredState::Unfinished => {
                    if let Some(allowed) = ready
                        .sighting
                        .as_ref()
                        .filter(|s| s.allowlisted)
                        .and(ready.report.indicators.ip)
                    {
                        tracing::info!(indicator = %allowed, "an allowlisted indicator was reported; it is not published");
                    }
                    reports.push(ready.stored.id);
                }
            }
        }
        Batch {
            outcomes,
            items: stored.rows,
            reports,
            claims,
        }
    }

    /// Records that a batch's feed items reached the participants' exchange and that its
    /// reports are done, then releases its report ids.
    pub async fn batch_published(&self, batch: &mut Batch) -> Result<(), HubError> {
        let writing = self.writer.lock().await;
        let result = self
            .store
            .mark_batch_published(&batch.reports, &batch.items)
            .await;
        drop(writing);
        batch.claims.clear();
        result
    }

    /// Evaluates an indicator after a report of it; the feed rows appended.
    async fn evaluate(
        &self,
        indicator: &str,
        now: DateTime<Utc>,
        cause: Uuid,
    ) -> Result<Vec<FeedRow>, HubError> {
        let rows = self
            .store
            .evaluate(
                indicator,
                &self.settings.trust,
                now,
                Some(&cause.to_string()),
            )
            .await?;
        self.feed_appended(&rows);
        Ok(rows)
    }

    /// Wakes the subscriptions when rows were appended.
    pub fn feed_appended(&self, rows: &[FeedRow]) {
        if !rows.is_empty() {
            self.feed_notify.notify_waiters();
        }
    }

    /// A report already stored: done before (a duplicate), or stored by an attempt that did
    /// not finish: evaluate it again (idempotent) and publish what that attempt appended.
    async fn resume(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Resumed>, ProcessError> {
        let Some((body, done, _)) = self
            .store
            .report_state(id)
            .await
            .map_err(ProcessError::Transient)?
        else {
            return Ok(None);
        };
        if done {
            return Ok(Some(Resumed::Duplicate));
        }
        let report = ThreatReport::from_json(body.as_bytes())
            .map_err(|e| ProcessError::Poison(format!("the stored report is unreadable: {e}")))?;
        let mut items = self
            .store
            .feed_rows_caused_by(id)
            .await
            .map_err(ProcessError::Transient)?;
        let allowlisted = report
            .indicators
            .ip
            .is_some_and(|ip| self.settings.trust.allowlisted(&ip).is_some());
        if let Some(indicator) = indicator_key(&report.indicators).filter(|_| !allowlisted) {
            items.extend(
                self.evaluate(&indicator, now, id)
                    .await
                    .map_err(ProcessError::Transient)?,
            );
        }
        Ok(Some(Resumed::Publish(id, items)))
    }

    /// The sweep's store work at `now`: withdraws expired promotions (renewing those that
    /// fresh reports keep up) and settles uncorroborated reports. The feed rows to publish.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<FeedRow>, HubError> {
        let rows = self
            .store
            .expire_promotions(&self.settings.trust, now)
            .await?;
        self.feed_appended(&rows);
        self.store
            .settle_uncorroborated(&self.settings.trust, now)
            .await?;
        Ok(rows)
    }

    /// Records that a report's feed items reached the participants' exchange, and that the
    /// report is done.
    pub async fn published(&self, report_id: Uuid, items: &[FeedRow]) -> Result<(), HubError> {
        for item in items {
            self.store.mark_feed_published(item.id).await?;
        }
        self.store.mark_published(report_id).await
    }
}

/// A report ready to store.
struct Prepared {
    report: ThreatReport,
    stored: StoredReport,
    sighting: Option<Sighting>,
}

/// What to do with one message of a batch once the batch's items are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored and decided (or taken up again after an unfinished attempt): acknowledge it.
    Done,
    /// Processed before, or a second copy within the batch: acknowledge it.
    Duplicate,
    /// Process it on its own, after the batch: another worker handles its id now, or the
    /// batch could not be stored.
    Alone,
    /// It can never be processed: dead-letter it with this reason.
    Poison(String),
}

/// A processed batch: feed items to publish and what to do with each message.
#[derive(Debug)]
pub struct Batch {
    /// One per message, in order.
    pub outcomes: Vec<BatchOutcome>,
    /// Committed feed items to publish, in log order.
    pub items: Vec<FeedRow>,
    /// Reports to mark done once the items are published.
    pub reports: Vec<Uuid>,
    /// Held until the batch is published and marked.
    claims: Vec<Claim>,
}

/// A stored report found again.
enum Resumed {
    Duplicate,
    Publish(Uuid, Vec<FeedRow>),
}

impl Resumed {
    fn with_claim(self, claim: Claim) -> Outcome {
        match self {
            Resumed::Duplicate => Outcome::Duplicate,
            Resumed::Publish(report_id, items) => Outcome::Publish {
                report_id,
                items,
                claim,
            },
        }
    }
}
