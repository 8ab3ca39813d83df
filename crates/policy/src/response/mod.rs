//! Response inspection: sensitive data leaving the API (card numbers, national identifiers,
//! e-mail addresses, secrets and keys, stack traces) found in a response body, reported, and
//! optionally replaced by a redaction.
//!
//! Pure and synchronous: the gateway buffers a response (up to a bound), hands the bytes here
//! and sends what comes back. A body where nothing matches is returned untouched, so clean
//! responses pass byte for byte.
//!
//! The whole body is first run through one `RegexSet` (a single pass); only the patterns that
//! matched somewhere are then located and checked (Luhn, issuer ranges, ...). JSON bodies are
//! then walked value by value (see [`json`]); other text is scanned as it is.

pub mod detectors;
mod json;

pub use detectors::{Detector, DetectorSet, luhn, valid_card, valid_ssn};

use detectors::{Hit, detector_of, evidence, find, patterns};

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseMode {
    /// Do not inspect.
    #[default]
    Off,
    /// Report findings; the body passes unchanged.
    Detect,
    /// Report findings and replace the data with a redaction.
    Mask,
}

/// How a response body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`, `application/*+json`: scanned value by value, masked as JSON.
    Json,
    /// `text/*`, XML, JavaScript, form data: scanned as text.
    Text,
}

/// The kind of body a `Content-Type` announces; `None` for bodies that are not text (images,
/// archives, protobuf, ...) and for a missing type.
pub fn body_kind(content_type: &[u8]) -> Option<BodyKind> {
    let text = std::str::from_utf8(content_type).ok()?;
    let essence = text.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    match (kind, subtype) {
        ("application", "json") => Some(BodyKind::Json),
        ("application", s) if s.ends_with("+json") => Some(BodyKind::Json),
        ("text", _) => Some(BodyKind::Text),
        ("application", "xml" | "javascript" | "x-www-form-urlencoded" | "x-ndjson") => {
            Some(BodyKind::Text)
        }
        ("application", s) if s.ends_with("+xml") => Some(BodyKind::Text),
        _ => None,
    }
}

/// One detector's findings in one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorFinding {
    pub detector: Detector,
    /// Occurrences found.
    pub count: usize,
    /// The first occurrence, redacted (see [`detectors::evidence`]).
    pub evidence: String,
}

/// The result of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// By detector, in the order of [`Detector::ALL`].
    pub findings: Vec<DetectorFinding>,
    /// The masked body, when masking was asked for and changed something.
    pub masked: Option<Vec<u8>>,
}

impl Scan {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Collects findings while a body is scanned.
#[derive(Default)]
pub struct Report {
    findings: Vec<DetectorFinding>,
}

/// Hits counted per response at most; past it a response is only counted as "many".
const MAX_COUNT: usize = 100_000;

impl Report {
    /// Records `hits` found in `text`; with `mask`, returns `text` with the hits replaced
    /// (overlapping hits: the first one wins).
    fn record(&mut self, text: &[u8], hits: &mut [Hit], mask: bool) -> Option<Vec<u8>> {
        hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        for hit in hits.iter() {
            match self
                .findings
                .iter_mut()
                .find(|f| f.detector == hit.detector)
            {
                Some(finding) => finding.count = (finding.count + 1).min(MAX_COUNT),
                None => self.findings.push(DetectorFinding {
                    detector: hit.detector,
                    count: 1,
                    evidence: evidence(hit.detector, &text[hit.start..hit.end]),
                }),
            }
        }
        if !mask {
            return None;
        }
        let mut out = Vec::with_capacity(text.len());
        let mut copied_to = 0;
        for hit in hits.iter() {
            if hit.start < copied_to {
                continue;
            }
            let start = match hit.detector {
                // `api_key=…`: the name stays, the value goes.
                Detector::ApiKey => value_start(text, hit.start, hit.end),
                _ => hit.start,
            };
            out.extend_from_slice(&text[copied_to..start]);
            out.extend_from_slice(hit.detector.redaction().as_bytes());
            copied_to = hit.end;
        }
        out.extend_from_slice(&text[copied_to..]);
        Some(out)
    }

    fn finish(mut self) -> Vec<DetectorFinding> {
        self.findings.sort_by_key(|f| f.detector);
        self.findings
    }
}

/// Where the value of a `name = value` credential starts (after the separator, spaces and
/// quotes); the whole match when it has no separator (a JSON value under a telling key).
fn value_start(text: &[u8], start: usize, end: usize) -> usize {
    let Some(separator) = text[start..end]
        .iter()
        .position(|b| *b == b':' || *b == b'=')
    else {
        return start;
    };
    let mut i = start + separator + 1;
    while i < end && matches!(text[i], b' ' | b'\t' | b'"' | b'\'') {
        i += 1;
    }
    i
}

/// Scans response bodies with a set of detectors.
#[derive(Debug, Clone)]
pub struct ResponseScanner {
    detectors: DetectorSet,
}

impl ResponseScanner {
    pub fn new(detectors: DetectorSet) -> Self {
        // Compile the shared patterns now (at configuration time), not on the first response.
        let _ = patterns();
        ResponseScanner { detectors }
    }

    pub fn detectors(&self) -> DetectorSet {
        self.detectors
    }

    /// Scans `body`. With `mask`, [`Scan::masked`] holds the body with every finding
    /// replaced (and is `None` when nothing was found: the body passes as it is).
    pub fn scan(&self, body: &[u8], kind: BodyKind, mask: bool) -> Scan {
        let p = patterns();
        let flagged: Vec<usize> = p
            .set
            .matches(body)
            .into_iter()
            .filter(|&i| self.detectors.contains(detector_of(i)))
            .collect();
        if flagged.is_empty() {
            return Scan::default();
        }
        let mut report = Report::default();
        if kind == BodyKind::Json {
            let keys = flagged.iter().any(|&i| detector_of(i) == Detector::ApiKey);
            if let Some(masked) = json::scan(body, &flagged, keys, mask, &mut report) {
                return Scan {
                    findings: report.finish(),
                    masked,
                };
            }
            // Not JSON after all: scan it as text.
            report = Report::default();
        }
        let mut hits = Vec::new();
        for &index in &flagged {
            find(index, body, &mut hits);
        }
        let masked = if hits.is_empty() {
            None
        } else {
            report.record(body, &mut hits, mask)
        };
        Scan {
            findings: report.finish(),
            masked,
        }
    }
}

#[cfg(test)]
mod tests;
