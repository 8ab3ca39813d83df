//! What every front door shares: authentication by API key, validation, the canonical id,
//! and queueing on the bus, so REST, gRPC (and later GraphQL) have the same semantics.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::HubState;
use crate::error::HubError;
use crate::normalise::{RawReport, validate};
use crate::pipeline::{ENVELOPE_VERSION, Envelope, ParticipantEntry};

/// The participant owning `key` (checked against its authentication mode: a participant
/// that must present a certificate is refused here; see `credentials`).
pub async fn authenticate(
    state: &HubState,
    key: Option<&str>,
) -> Result<Arc<ParticipantEntry>, HubError> {
    crate::credentials::authenticate(state, key, None).await
}

/// Refuses batches over `limits.max_batch` and empty ones.
pub fn check_batch_size(state: &HubState, len: usize) -> Result<(), HubError> {
    let max = state.settings.limits.max_batch;
    if len == 0 {
        return Err(HubError::Invalid("the batch is empty".into()));
    }
    if len > max {
        return Err(HubError::Invalid(format!(
            "the batch has {len} reports; the limit is {max}"
        )));
    }
    Ok(())
}

/// Validates a raw report and wraps it with its canonical id.
pub fn prepare(
    state: &HubState,
    entry: &ParticipantEntry,
    raw: RawReport,
    protocol: &str,
) -> Result<Envelope, HubError> {
    validate(&raw, &state.settings, &entry.redactor)?;
    let now = Utc::now();
    let id = state
        .pipeline
        .pseudonymiser
        .report_id(&entry.participant.id, raw.id, now);
    Ok(Envelope {
        v: ENVELOPE_VERSION,
        id,
        participant: entry.participant.id.clone(),
        received_at: now,
        protocol: protocol.to_owned(),
        report: raw,
    })
}

/// Validates and queues one report; answers its canonical id once the bus confirmed it.
pub async fn ingest(
    state: &HubState,
    entry: &ParticipantEntry,
    raw: RawReport,
    protocol: &str,
) -> Result<Uuid, HubError> {
    let envelope = prepare(state, entry, raw, protocol)?;
    state.bus.submit(envelope.id, envelope.to_bytes()).await?;
    Ok(envelope.id)
}

/// Validates every report first (one invalid report refuses the batch, naming its index),
/// then queues them together; answers each id with whether the bus confirmed it. The
/// answer comes only after every confirm (or refusal).
pub async fn ingest_batch(
    state: &HubState,
    entry: &ParticipantEntry,
    raws: Vec<RawReport>,
    protocol: &str,
) -> Result<Vec<(Uuid, Result<(), HubError>)>, HubError> {
    check_batch_size(state, raws.len())?;
    let mut envelopes = Vec::with_capacity(raws.len());
    for (index, raw) in raws.into_iter().enumerate() {
        envelopes.push(
            prepare(state, entry, raw, protocol)
                .map_err(|e| HubError::Invalid(format!("reports[{index}]: {e}")))?,
        );
    }
    // Published together, confirmed together: one broker round (and one quorum-queue
    // fsync) for the whole batch rather than one per report.
    let items: Vec<(Uuid, Vec<u8>)> = envelopes.iter().map(|e| (e.id, e.to_bytes())).collect();
    let results = state.bus.submit_many(&items).await;
    Ok(items.into_iter().map(|(id, _)| id).zip(results).collect())
}
