//! The admin views of self-healing: `GET /heal` (status), `GET /heal/incidents`,
//! `GET /heal/incidents/{id}` (with transitions, evidence, actions and audit lines) and
//! `GET /heal/actions`.

use apiguard_heal::{ActionRecord, Healer, Incident};
use serde_json::{Value, json};

use super::HealHandle;

/// Incidents listed at most (newest first); `GET /heal/incidents/{id}` reaches any kept one.
const LIST_LIMIT: usize = 500;

fn summary(i: &Incident) -> Value {
    let since = |t: Option<u64>| t.map(|t| t.saturating_sub(i.opened_ms));
    json!({
        "id": i.id,
        "subject": i.subject,
        "kind": i.kind,
        "state": i.state,
        "opened_ms": i.opened_ms,
        "mitigated_ms": i.mitigated_ms,
        "verified_ms": i.verified_ms,
        "closed_ms": i.closed_ms,
        "time_to_mitigation_ms": since(i.mitigated_ms),
        "time_to_verification_ms": since(i.verified_ms),
        "actions": i.actions,
        "outcome": i.outcome,
    })
}

fn actions_of<'a>(healer: &'a Healer, incident: &Incident) -> Vec<&'a ActionRecord> {
    incident
        .actions
        .iter()
        .filter_map(|a| healer.action(*a))
        .collect()
}

/// `GET /heal/incidents`, optionally `?state=<state>` or `?open=true`.
pub fn incidents(handle: &HealHandle, query: Option<&str>) -> Value {
    let mut state = None;
    let mut open_only = false;
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("state", s)) => state = Some(s.to_owned()),
            Some(("open", "true")) => open_only = true,
            _ => {}
        }
    }
    handle.read(|healer| {
        let list: Vec<Value> = healer
            .incidents()
            .iter()
            .rev()
            .filter(|i| state.as_deref().is_none_or(|s| i.state.as_str() == s))
            .filter(|i| !open_only || i.is_open())
            .take(LIST_LIMIT)
            .map(summary)
            .collect();
        json!({ "incidents": list })
    })
}

/// `GET /heal/incidents/{id}`; `None` when there is no such incident.
pub fn incident(handle: &HealHandle, id: u64) -> Option<Value> {
    handle.read(|healer| {
        let incident = healer.incident(id)?;
        let audit: Vec<_> = healer
            .audit()
            .iter()
            .filter(|e| e.incident == Some(id))
            .collect();
        let mut view = serde_json::to_value(incident).ok()?;
        if let Value::Object(map) = &mut view {
            map.insert("summary".into(), summary(incident));
            map.insert("action_records".into(), json!(actions_of(healer, incident)));
            map.insert("audit".into(), json!(audit));
        }
        Some(view)
    })
}

/// `GET /heal/actions`, newest first.
pub fn actions(handle: &HealHandle) -> Value {
    handle.read(|healer| {
        let list: Vec<_> = healer.actions().iter().rev().take(LIST_LIMIT).collect();
        json!({ "actions": list })
    })
}

/// `GET /heal`: mode, learned thresholds, known good version, circuits, throttles.
pub fn status(handle: &HealHandle, throttles: Value) -> Value {
    let circuits = handle.state.circuits.list();
    let circuits: Vec<&crate::circuit::Circuit> = circuits.iter().map(|c| c.as_ref()).collect();
    handle.read(|healer| {
        let open = healer.incidents().iter().filter(|i| i.is_open()).count();
        json!({
            "mode": healer.settings().mode,
            "interval_ms": healer.settings().interval_ms,
            "open_incidents": open,
            "known_good_version": healer.known_good(),
            "thresholds": healer.thresholds(),
            "baselines": healer.baselines(),
            "circuits": circuits,
            "throttles": throttles,
            "tracked_clients": handle.state.ledger.len(),
        })
    })
}
