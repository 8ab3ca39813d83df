//! The per-value fast path: a value on which no rule can fire is settled after one byte pass
//! and at most one or two Aho-Corasick searches, without walking the transformation groups,
//! building transformed copies or formatting target names.
//!
//! It mirrors, for every group that may apply to a target of the value's group, the engine's
//! own reasoning: the group's text is the value itself (every transform of the chain is
//! transparent on it), or the value without whitespace (the chain's only opaque transform is
//! `remove_whitespace`); the rules that the prefilter arms on that text (literals, trigger
//! bytes, a detector's byte condition) are then run right here on that exact text when the
//! chain provably leaves it unchanged. Anything it cannot settle — a rule that matches, a
//! chain that changes the value, a rule without a prefilter — goes to the full path, which
//! therefore produces every finding. The engine's tests check on the whole dev corpus that it
//! never skips a value on which a rule fires.

use crate::detectors::Detector;
use crate::gate::{Bits, Features};
use crate::normalize::Transform;
use crate::rules::{ChainGroup, Gate, Rule, RuleSet};

/// Number of target groups (see [`crate::target::TargetGroup`]).
pub(crate) const GROUP_COUNT: usize = 12;

/// Transforms that return their input unchanged whenever they are transparent on it (see
/// `Features::transparent`; `lowercase` also needs a value without upper-case letters).
const IDENTITY_WHEN_TRANSPARENT: u16 = tbit(Transform::Lowercase)
    | tbit(Transform::Log4j)
    | tbit(Transform::RemoveWhitespace)
    | tbit(Transform::CompressWhitespace)
    | tbit(Transform::RemoveComments)
    | tbit(Transform::RemoveNulls)
    | tbit(Transform::UrlDecode)
    | tbit(Transform::Unicode);

/// The ASCII upper-case letters, as a byte mask.
const UPPER: [u64; 2] = [0, 0x07ff_fffe];

const fn tbit(t: Transform) -> u16 {
    1 << (t as u16)
}

/// Per target group: the transformation groups that may apply to its targets.
#[derive(Debug, Clone, Default)]
pub(crate) struct FastPlan {
    pub groups: Vec<usize>,
    /// Union of those groups' transforms after a leading `decode`.
    pub rest_mask: u16,
    /// Union of those groups' trigger bytes.
    pub bytes: [u64; 2],
    /// Their detectors, each once.
    pub detectors: Vec<Detector>,
    /// Union of their member rules.
    pub members: Bits,
    /// Whether one of them has a rule without a prefilter.
    pub always: bool,
}

/// How the fast path runs one rule: its group and operator.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FastOp {
    /// The group's `regexes[i]`.
    Regex(usize, usize),
    /// The group's phrase automaton.
    Phrases(usize),
    Detector(Detector),
}

/// Reusable buffers of the fast path.
#[derive(Debug, Default)]
pub(crate) struct FastScratch {
    /// Rules armed by literals in the value, and in the value without whitespace.
    pub armed: Bits,
    armed_stripped: Bits,
    /// Rules already run on the value / on the value without whitespace.
    checked: [Bits; 2],
    stripped: String,
    /// The view lowercased, for rules of lowercasing chains.
    lower: String,
    /// Rules to run for the current group.
    todo: Vec<usize>,
    /// Values of this request already found silent (JSON arrays of objects repeat their keys
    /// and many values): open addressing over `(hash, start, len)` into `memo_text`.
    memo: Vec<(u64, u32, u32)>,
    memo_text: String,
    memo_len: usize,
}

/// Slots of the memo (a power of two); at most half are filled.
const MEMO_SLOTS: usize = 256;
/// Longest value remembered.
const MEMO_MAX_LEN: usize = 256;

fn memo_hash(bit: u16, text: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = u64::from(bit).wrapping_mul(K);
    let mut chunks = text.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ word).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    (h.rotate_left(5) ^ text.len() as u64).wrapping_mul(K) | 1
}

impl FastScratch {
    /// Whether `text` was found silent for target group `bit` earlier in this request.
    pub(crate) fn remembered(&self, bit: u16, text: &str) -> bool {
        if self.memo_len == 0 || text.len() > MEMO_MAX_LEN {
            return false;
        }
        let h = memo_hash(bit, text);
        let mut slot = h as usize & (MEMO_SLOTS - 1);
        loop {
            let (key, start, len) = self.memo[slot];
            if key == 0 {
                return false;
            }
            if key == h && self.memo_text[start as usize..(start + len) as usize] == *text {
                return true;
            }
            slot = (slot + 1) & (MEMO_SLOTS - 1);
        }
    }

    /// Remembers that `text` is silent for target group `bit`.
    pub(crate) fn remember(&mut self, bit: u16, text: &str) {
        if text.len() > MEMO_MAX_LEN || self.memo_len >= MEMO_SLOTS / 2 {
            return;
        }
        if self.memo.is_empty() {
            self.memo = vec![(0, 0, 0); MEMO_SLOTS];
        }
        let h = memo_hash(bit, text);
        let mut slot = h as usize & (MEMO_SLOTS - 1);
        while self.memo[slot].0 != 0 {
            slot = (slot + 1) & (MEMO_SLOTS - 1);
        }
        let start = self.memo_text.len() as u32;
        self.memo_text.push_str(text);
        self.memo[slot] = (h, start, text.len() as u32);
        self.memo_len += 1;
    }
}

impl FastScratch {
    pub(crate) fn new(rule_count: usize) -> FastScratch {
        FastScratch {
            armed: Bits::with_len(rule_count),
            armed_stripped: Bits::with_len(rule_count),
            checked: [Bits::with_len(rule_count), Bits::with_len(rule_count)],
            stripped: String::new(),
            lower: String::new(),
            todo: Vec::new(),
            memo: Vec::new(),
            memo_text: String::new(),
            memo_len: 0,
        }
    }
}

impl FastPlan {
    /// One plan per target group bit: the rules that may inspect a target of that group (by
    /// their groups, or by an exact-target selector that may name such a target) and the
    /// transformation groups holding them.
    pub(crate) fn build(groups: &[ChainGroup], rules: &[Rule], gate: &Gate) -> Vec<FastPlan> {
        (0..GROUP_COUNT)
            .map(|i| {
                let bit = 1u16 << i;
                let mut plan = FastPlan {
                    members: Bits::with_len(rules.len()),
                    ..FastPlan::default()
                };
                for (index, g) in groups.iter().enumerate() {
                    let mut applicable = false;
                    for rule in g.member_rules() {
                        let r = &rules[rule];
                        let included = r
                            .include
                            .iter()
                            .any(|p| crate::target::selector_groups(p) & bit != 0);
                        if r.group_mask & bit == 0 && !included {
                            continue;
                        }
                        applicable = true;
                        plan.members.set(rule);
                        plan.always |= gate.always[rule];
                        plan.bytes[0] |= gate.bytes[rule][0];
                        plan.bytes[1] |= gate.bytes[rule][1];
                        if let Some((_, d)) = g.detectors.iter().find(|(x, _)| *x == rule)
                            && !plan.detectors.contains(d)
                        {
                            plan.detectors.push(*d);
                        }
                    }
                    if applicable {
                        plan.groups.push(index);
                        plan.rest_mask |= g.rest_mask;
                    }
                }
                plan
            })
            .collect()
    }
}

/// Per rule: how the fast path runs it.
pub(crate) fn fast_ops(groups: &[ChainGroup], rule_count: usize) -> Vec<Option<FastOp>> {
    let mut ops = vec![None; rule_count];
    for (g, group) in groups.iter().enumerate() {
        for (i, (rule, _)) in group.regexes.iter().enumerate() {
            ops[*rule] = Some(FastOp::Regex(g, i));
        }
        for rule in &group.phrase_members {
            ops[*rule] = Some(FastOp::Phrases(g));
        }
        for (rule, d) in &group.detectors {
            ops[*rule] = Some(FastOp::Detector(*d));
        }
    }
    ops
}

/// One text a group may see: the value, or the value without whitespace.
struct View<'a> {
    text: &'a str,
    features: Features,
    /// Transforms transparent on this text.
    transparent: u16,
    upper: bool,
}

impl RuleSet {
    /// Whether no rule of any group that may apply to a target of group `bit` can fire on
    /// `text` (whose features are `f`), a value that the canonical decoding leaves unchanged.
    /// On return `scratch.armed` holds the literal scan of `text` when `scanned` is set.
    pub(crate) fn fast_silent(
        &self,
        bit: u16,
        text: &str,
        f: &Features,
        scratch: &mut FastScratch,
        scanned: &mut bool,
    ) -> bool {
        if f.non_ascii {
            return false;
        }
        let plan = &self.plans[bit.trailing_zeros() as usize];
        let value = View {
            text,
            features: *f,
            transparent: f.transparent_mask(text, plan.rest_mask),
            upper: f.intersects(&UPPER),
        };
        // The common case, decided on the unions over all those groups: every chain
        // transparent, no trigger byte, no detector condition, no armed rule.
        let any_literal = scan_if_any(&self.gate, text, f, &mut scratch.armed);
        *scanned = true;
        if plan.always {
            return false;
        }
        let armed_any = any_literal && scratch.armed.intersects(&plan.members);
        if value.transparent & plan.rest_mask == plan.rest_mask
            && !f.intersects(&plan.bytes)
            && !armed_any
            && !plan.detectors.iter().any(|d| d.may_match(text, f))
        {
            return true;
        }
        let FastScratch {
            armed,
            armed_stripped,
            checked,
            stripped,
            lower,
            todo,
            ..
        } = scratch;
        let [checked_value, checked_stripped] = checked;
        checked_value.clear();
        // The value without whitespace: its features, transparent transforms and whether a
        // literal occurs in it, once computed.
        let mut stripped_state: Option<(Features, u16, bool)> = None;
        let rw = tbit(Transform::RemoveWhitespace);
        for &g in &plan.groups {
            let group = &self.groups[g];
            let opaque = group.rest_mask & !value.transparent;
            let stripped_view;
            let (view, armed, any, checked) = if opaque == 0 {
                (&value, &*armed, any_literal, &mut *checked_value)
            } else if opaque == rw && group.detectors.is_empty() {
                // The group's text is the value without whitespace (up to ASCII case), when
                // its other transforms are transparent on that text too.
                let (features, transparent, any) = *stripped_state.get_or_insert_with(|| {
                    stripped.clear();
                    stripped.extend(
                        text.bytes()
                            .filter(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
                            .map(char::from),
                    );
                    let features = Features::of(stripped);
                    checked_stripped.clear();
                    let any = scan_if_any(&self.gate, stripped, &features, armed_stripped);
                    (
                        features,
                        features.transparent_mask(stripped, plan.rest_mask),
                        any,
                    )
                });
                if group.rest_mask & !rw & !transparent != 0 {
                    return false;
                }
                stripped_view = View {
                    text: stripped.as_str(),
                    features,
                    transparent,
                    upper: value.upper,
                };
                (
                    &stripped_view,
                    &*armed_stripped,
                    any,
                    &mut *checked_stripped,
                )
            } else {
                return false;
            };
            // The group's text is `view.text` up to ASCII case. Collect the rules the prefilter
            // arms on it (each once per text).
            todo.clear();
            if any && armed.intersects(&group.members) {
                todo.extend(
                    armed
                        .iter_and(&group.members)
                        .filter(|&rule| plan.members.get(rule)),
                );
            }
            if view.features.intersects(&group.bytes) {
                todo.extend(group.member_rules().filter(|&rule| {
                    plan.members.get(rule) && view.features.intersects(&self.gate.bytes[rule])
                }));
            }
            for (rule, d) in &group.detectors {
                if plan.members.get(*rule) && d.may_match(view.text, &view.features) {
                    todo.push(*rule);
                }
            }
            if todo.is_empty() {
                continue;
            }
            todo.retain(|&rule| {
                let fresh = !checked.get(rule);
                checked.set(rule);
                fresh
            });
            if todo.is_empty() {
                continue;
            }
            // They run here, on the group's exact text, when the chain leaves the view
            // unchanged but for `lowercase`.
            if group.rest_mask & !(IDENTITY_WHEN_TRANSPARENT | rw) != 0 {
                return false;
            }
            let exact = if view.upper && group.rest_mask & tbit(Transform::Lowercase) != 0 {
                lower.clear();
                lower.push_str(view.text);
                lower.make_ascii_lowercase();
                lower.as_str()
            } else {
                view.text
            };
            if !todo.iter().all(|&rule| self.fast_run(rule, exact)) {
                return false;
            }
        }
        true
    }

    /// Whether `rule` finds nothing in `text` (its group's exact text).
    fn fast_run(&self, rule: usize, text: &str) -> bool {
        match self.fast_ops[rule] {
            Some(FastOp::Regex(g, i)) => !self.groups[g].regexes[i].1.is_match(text),
            Some(FastOp::Phrases(g)) => self.groups[g]
                .phrases
                .as_ref()
                .is_none_or(|ac| !ac.is_match(text)),
            Some(FastOp::Detector(d)) => d.run(text).is_none(),
            None => false,
        }
    }
}

/// Arms (in `armed`, cleared first) the rules whose required literals occur in `text`, after a
/// cheaper search for any literal at all; false when there is none.
pub(crate) fn scan_if_any(gate: &Gate, text: &str, f: &Features, armed: &mut Bits) -> bool {
    armed.clear();
    let Some(ac) = &gate.literals else {
        return false;
    };
    if ac.find(text).is_none() {
        return false;
    }
    crate::engine::scan(gate, text, f, armed);
    true
}
