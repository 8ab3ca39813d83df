//! What survives a restart: incidents with their transitions, action records, the offender
//! memory, the learned thresholds and the audit trail, in one JSON file written through a
//! temporary file and a rename (as the behaviour baselines are), so a crash never leaves half
//! a file. The state is bounded (closed incidents, actions and audit entries are capped), so
//! keeping it whole in memory and rewriting it is cheaper than a database and needs none.

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::action::ActionRecord;
use crate::incident::Incident;
use crate::learning::Thresholds;
use crate::target::Target;

/// The file format version.
pub const FORMAT: u32 = 1;

/// Larger state files are refused (the bounds keep real ones far smaller).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// One repeat offender: how many times it was blocked, and when last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offender {
    pub target: Target,
    pub blocks: u32,
    pub last_ms: u64,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<u64>,
    pub what: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// Everything persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub format: u32,
    pub next_incident: u64,
    pub next_action: u64,
    /// Oldest first.
    pub incidents: Vec<Incident>,
    /// Oldest first.
    pub actions: Vec<ActionRecord>,
    pub offenders: Vec<Offender>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    pub audit: VecDeque<AuditEntry>,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            format: FORMAT,
            next_incident: 1,
            next_action: 1,
            incidents: Vec::new(),
            actions: Vec::new(),
            offenders: Vec::new(),
            thresholds: None,
            audit: VecDeque::new(),
        }
    }
}

/// Why the state could not be read or written.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Writes `state` to `path` atomically.
pub fn save(path: &Path, state: &Persisted) -> Result<(), StoreError> {
    let text = serde_json::to_vec(state)
        .map_err(|e| StoreError(format!("cannot serialise the heal state: {e}")))?;
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| StoreError(format!("cannot write {}: {e}", path.display())))
}

/// Reads the state at `path`; `Ok(None)` when there is no file yet.
pub fn load(path: &Path) -> Result<Option<Persisted>, StoreError> {
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError(format!("cannot read {}: {e}", path.display()))),
    };
    if size > MAX_FILE_BYTES {
        return Err(StoreError(format!(
            "{} is {size} bytes, over the {MAX_FILE_BYTES} limit",
            path.display()
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| StoreError(format!("cannot read {}: {e}", path.display())))?;
    let state: Persisted = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError(format!("{} is not a heal state file: {e}", path.display())))?;
    if state.format != FORMAT {
        return Err(StoreError(format!(
            "{} has format {}, this build reads {FORMAT}",
            path.display(),
            state.format
        )));
    }
    Ok(Some(state))
}
