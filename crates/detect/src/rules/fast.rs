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

use crate::detectors::Boundary;
use crate::detectors::Detector;
use crate::gate::{Bits, Features, TRIGGERS, exact_mask};
use crate::normalize::Transform;
use crate::rules::{ChainGroup, Gate, LiteralGroups, Rule, RuleSet};
use crate::target::LiteralMask;

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
pub(crate) const UPPER: [u64; 2] = [0, 0x07ff_fffe];
/// The ASCII whitespace `remove_whitespace` drops, as a byte mask.
const WHITESPACE: [u64; 2] = [
    1 << b' ' | 1 << b'\t' | 1 << b'\n' | 1 << 0x0b | 1 << 0x0c | 1 << b'\r',
    0,
];
/// The ASCII lower-case letters, as a byte mask.
pub(crate) const LOWER: [u64; 2] = [0, 0x07ff_fffe << 32];

/// What the fast path concluded about a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Silence {
    /// No rule can fire, seen from the value's bytes and literals alone.
    Plain,
    /// No rule can fire, after running some of them: worth remembering for the request.
    Worked,
    /// Left to the full path.
    Unknown,
}

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
    /// The members of those groups whose chains remove whitespace, the union of those
    /// chains' other transforms, and whether none of those groups has a detector (see
    /// `RuleSet::stripped_silent`).
    pub rw_members: Bits,
    pub rw_rest: u16,
    pub rw_plain: bool,
    /// Bytes without which a value (ASCII, without literals) is settled at once: the
    /// canonical decoding's escapes, every chain's transforms' trigger bytes, the rules' own
    /// bytes, the detectors' byte conditions and `=` (embedded arguments).
    pub quick: [u64; 2],
    /// Those of them that arm something by their mere presence: the escapes, the rules' own
    /// bytes and `=`. The others (a space, `-`, `.`, `/`, ...) matter only in some
    /// arrangements, which the quick check looks at.
    pub hard: [u64; 2],
    /// The detectors' trigger bytes (see [`Detector::trigger_bytes`]).
    pub detector_bytes: [u64; 2],
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
    /// The value without whitespace, for the quick check.
    stripped_bytes: Vec<u8>,
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

/// Slots of the memo at first and at most (powers of two); at most half are filled.
const MEMO_FIRST_SLOTS: usize = 32;
const MEMO_SLOTS: usize = 512;
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
        let mask = self.memo.len() - 1;
        let mut slot = h as usize & mask;
        loop {
            let (key, start, len) = self.memo[slot];
            if key == 0 {
                return false;
            }
            if key == h && self.memo_text[start as usize..(start + len) as usize] == *text {
                return true;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Remembers that `text` is silent for target group `bit`.
    pub(crate) fn remember(&mut self, bit: u16, text: &str) {
        if text.len() > MEMO_MAX_LEN {
            return;
        }
        if self.memo_len >= self.memo.len() / 2 {
            // Start small (most requests remember a few values) and grow up to the bound.
            let slots = (self.memo.len() * 2).max(MEMO_FIRST_SLOTS);
            if slots > MEMO_SLOTS {
                return;
            }
            let old = std::mem::replace(&mut self.memo, vec![(0, 0, 0); slots]);
            for entry in old.into_iter().filter(|e| e.0 != 0) {
                self.insert(entry);
            }
        }
        let start = self.memo_text.len() as u32;
        self.memo_text.push_str(text);
        self.insert((memo_hash(bit, text), start, text.len() as u32));
        self.memo_len += 1;
    }

    fn insert(&mut self, entry: (u64, u32, u32)) {
        let mask = self.memo.len() - 1;
        let mut slot = entry.0 as usize & mask;
        while self.memo[slot].0 != 0 {
            slot = (slot + 1) & mask;
        }
        self.memo[slot] = entry;
    }
}

impl FastScratch {
    pub(crate) fn new(rule_count: usize) -> FastScratch {
        FastScratch {
            armed: Bits::with_len(rule_count),
            armed_stripped: Bits::with_len(rule_count),
            checked: [Bits::with_len(rule_count), Bits::with_len(rule_count)],
            stripped: String::new(),
            stripped_bytes: Vec::new(),
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
                    rw_members: Bits::with_len(rules.len()),
                    rw_plain: true,
                    ..FastPlan::default()
                };
                for (index, g) in groups.iter().enumerate() {
                    let mut applicable = false;
                    let removes_whitespace = g.rest_mask & tbit(Transform::RemoveWhitespace) != 0;
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
                        if removes_whitespace {
                            plan.rw_members.set(rule);
                        }
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
                        if removes_whitespace {
                            plan.rw_rest |= g.rest_mask & !tbit(Transform::RemoveWhitespace);
                            plan.rw_plain &= g.detectors.is_empty();
                        }
                    }
                }
                let add = |a: [u64; 2], b: [u64; 2]| [a[0] | b[0], a[1] | b[1]];
                let hard = add(
                    add(plan.bytes, TRIGGERS[Transform::Decode as usize]),
                    exact_mask(b"="),
                );
                let mut quick = hard;
                for t in Transform::ALL {
                    if plan.rest_mask & t.bit() != 0 {
                        quick = add(quick, TRIGGERS[t as usize]);
                    }
                }
                for d in &plan.detectors {
                    plan.detector_bytes = add(plan.detector_bytes, d.trigger_bytes());
                }
                quick = add(quick, plan.detector_bytes);
                plan.hard = hard;
                plan.quick = quick;
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
    /// The quickest settlement: whether `text` (whose features are `f`), a value of target
    /// group `bit`, is ASCII, has none of the plan's `hard` bytes and arms none of its rules
    /// (`literals` from the search of a whole document, or a search of `text`). Without any
    /// `quick` byte that is enough: every chain is transparent on it and no rule, detector or
    /// embedded argument can fire. Otherwise the chains' transparency and the detectors' byte
    /// conditions decide, as in [`RuleSet::fast_silent`], which would say
    /// [`Silence::Plain`] whenever this says true. Base64 is the caller's.
    /// The first and cheapest case of [`RuleSet::quick_silent`], for a value whose literals
    /// (from a document search) are known: ASCII, no byte of the plan's `quick` set (which
    /// holds its `hard` set), no literal that arms a rule of group `bit`, and no rule of the
    /// plan without a prefilter. When this holds, `quick_silent` holds.
    #[inline]
    pub(crate) fn plainly_silent(&self, bit: u16, f: &Features, literals: LiteralMask) -> bool {
        let plan = &self.plans[bit.trailing_zeros() as usize];
        !f.non_ascii && !plan.always && !f.intersects(&plan.quick) && !literals.arms(bit, f)
    }

    pub(crate) fn quick_silent(
        &self,
        bit: u16,
        text: &str,
        f: &Features,
        literals: Option<LiteralMask>,
        scratch: &mut FastScratch,
    ) -> bool {
        if f.non_ascii {
            return false;
        }
        let plan = &self.plans[bit.trailing_zeros() as usize];
        if plan.always || f.intersects(&plan.hard) {
            return false;
        }
        let armed = match literals {
            Some(mask) => mask.arms(bit, f),
            None => {
                scan_if_any(&self.gate, text, f, &mut scratch.armed)
                    && scratch.armed.intersects(&plan.members)
            }
        };
        if armed {
            return false;
        }
        if !f.intersects(&plan.quick) {
            return true;
        }
        let opaque = plan.rest_mask & !f.transparent_mask(text, plan.rest_mask);
        (opaque == 0 || opaque == tbit(Transform::RemoveWhitespace))
            && (!f.intersects(&plan.detector_bytes)
                || !plan
                    .detectors
                    .iter()
                    .any(|d| f.intersects(&d.trigger_bytes()) && d.may_match(text, f)))
            && (opaque == 0 || self.stripped_silent(plan, text, f, scratch))
    }

    /// Whether no rule of any group that may apply to a target of group `bit` can fire on
    /// `text` (whose features are `f`), a value that the canonical decoding leaves unchanged.
    /// `literals`, when known, says which prefilter literals occur in `text` (a search over
    /// the whole document found them); otherwise `text` is searched, and on return
    /// `scratch.armed` holds that search when `scanned` is set.
    pub(crate) fn fast_silent(
        &self,
        bit: u16,
        text: &str,
        f: &Features,
        literals: Option<LiteralMask>,
        scratch: &mut FastScratch,
        scanned: &mut bool,
    ) -> Silence {
        if f.non_ascii {
            return Silence::Unknown;
        }
        let plan = &self.plans[bit.trailing_zeros() as usize];
        if plan.always {
            return Silence::Unknown;
        }
        let value = View {
            text,
            features: *f,
            transparent: f.transparent_mask(text, plan.rest_mask),
            upper: f.intersects(&UPPER),
        };
        // Literals: from the search of the whole document when it found none of this plan's
        // (which rules a literal arms is not kept, so a value with some is searched again).
        let doc_silent = literals.is_some_and(|mask| !mask.arms(bit, f));
        let (any_literal, armed_any) = if doc_silent {
            scratch.armed.clear();
            (false, false)
        } else {
            let any = scan_if_any(&self.gate, text, f, &mut scratch.armed);
            *scanned = true;
            (any, any && scratch.armed.intersects(&plan.members))
        };
        // The common case, decided on the unions over all those groups: every chain
        // transparent (or only whitespace removal opaque, and nothing armed on the value
        // without whitespace), no trigger byte, no detector condition, no armed rule.
        let opaque = plan.rest_mask & !value.transparent;
        if (opaque == 0 || opaque == tbit(Transform::RemoveWhitespace))
            && !f.intersects(&plan.bytes)
            && !armed_any
            && !plan.detectors.iter().any(|d| d.may_match(text, f))
            && (opaque == 0 || self.stripped_silent(plan, text, f, scratch))
        {
            return Silence::Plain;
        }
        if scratch.remembered(bit, text) {
            return Silence::Plain;
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
                    strip_whitespace(text, stripped);
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
                    return Silence::Unknown;
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
                return Silence::Unknown;
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
                return Silence::Unknown;
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
                return Silence::Unknown;
            }
        }
        Silence::Worked
    }

    /// For a value on which every chain of `plan` is transparent but whitespace removal, and
    /// which arms none of its rules: whether the groups that remove whitespace see nothing
    /// either, in the value without whitespace (the literals of `ja va`, `ev al(` appear
    /// only there). Those groups have no detector, their other transforms are transparent on
    /// that text, and it has no byte the value lacks.
    fn stripped_silent(
        &self,
        plan: &FastPlan,
        text: &str,
        f: &Features,
        scratch: &mut FastScratch,
    ) -> bool {
        if !plan.rw_plain {
            return false;
        }
        let stripped = &mut scratch.stripped_bytes;
        strip_whitespace_bytes(text.as_bytes(), stripped);
        let features = f.without(&WHITESPACE);
        if features.transparent_mask(stripped.as_slice(), plan.rw_rest) != plan.rw_rest {
            return false;
        }
        scratch.armed_stripped.clear();
        !(crate::engine::scan(
            &self.whitespace_gate,
            stripped,
            &features,
            &mut scratch.armed_stripped,
        ) && scratch.armed_stripped.intersects(&plan.rw_members))
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

/// Writes `text` without the ASCII whitespace `remove_whitespace` drops into `out` (cleared
/// first; its buffer is reused).
fn strip_whitespace(text: &str, out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    strip_whitespace_bytes(text.as_bytes(), &mut bytes);
    // Only ASCII bytes were dropped, so the rest is UTF-8 still.
    *out = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// [`strip_whitespace`] for bytes, without a branch per byte.
fn strip_whitespace_bytes(text: &[u8], out: &mut Vec<u8>) {
    const SPACES: u64 = 1 << b' ' | 1 << b'\t' | 1 << b'\n' | 1 << 0x0b | 1 << 0x0c | 1 << b'\r';
    out.clear();
    out.resize(text.len(), 0);
    let mut kept = 0;
    for &b in text {
        out[kept] = b;
        kept += usize::from(b >= 64 || SPACES >> b & 1 == 0);
    }
    out.truncate(kept);
}

/// Arms (in `armed`, cleared first) the rules whose required literals occur in `text`; false
/// when no literal occurs at all.
pub(crate) fn scan_if_any(gate: &Gate, text: &str, f: &Features, armed: &mut Bits) -> bool {
    armed.clear();
    crate::engine::scan(gate, text, f, armed)
}

impl RuleSet {
    /// Adds to `literals` the target groups for which the prefilter literals that end at
    /// `value[..end]` (where a walk of the literal automaton from the start of `value` reached
    /// state `sid`) arm a rule, their boundaries holding there; groups armed only if the
    /// value has a second word go to `if_second_word`. `value` may run on past the value's
    /// end into the text around it (a JSON document): a byte there is a quote or JSON
    /// punctuation, which no boundary tells from the end of a value.
    #[inline(never)]
    pub(crate) fn classify_matches(
        &self,
        sid: aho_corasick::automaton::StateID,
        value: &[u8],
        end: usize,
        literals: &mut LiteralMask,
        if_second_word: &mut u16,
    ) {
        let Some(dfa) = &self.gate.literals else {
            return;
        };
        dfa.matches(sid, |literal, len| {
            let start = end - len;
            let groups = self.literal_groups[literal];
            literals.groups |= groups.any;
            literals.call_groups |= groups.paren;
            let edges = |boundary| crate::engine::edges_hold(boundary, value, start, end);
            if groups.sql != 0 && edges(Boundary::Sql) {
                literals.groups |= groups.sql;
                literals.call_groups |= groups.sql_call;
            }
            let commands = groups.command | groups.command_word | groups.shell_syntax;
            if commands != 0 && edges(Boundary::Command) {
                literals.shell_groups |= commands;
                // Command words that arm only as the value's first word.
                if (groups.command | groups.command_word) != 0
                    && crate::detectors::cmdi::at_first_word(value, start)
                {
                    literals.groups |= groups.command;
                    *if_second_word |= groups.command_word;
                }
            }
        });
    }
}

/// Per literal of `gate`: the target groups (bits) whose plans have a rule it arms, per
/// boundary.
pub(crate) fn literal_groups(
    plans: &[FastPlan],
    gate: &Gate,
    rule_count: usize,
) -> Vec<LiteralGroups> {
    let rule_groups: Vec<u16> = (0..rule_count)
        .map(|rule| {
            plans
                .iter()
                .enumerate()
                .filter(|(_, p)| p.members.get(rule))
                .fold(0u16, |m, (i, _)| m | 1 << i)
        })
        .collect();
    gate.literal_rules
        .iter()
        .map(|rules| {
            let mut groups = LiteralGroups::default();
            for &(rule, boundary) in rules {
                let slot = match boundary {
                    Boundary::None => &mut groups.any,
                    Boundary::Sql => &mut groups.sql,
                    Boundary::SqlCall => &mut groups.sql_call,
                    Boundary::Command => &mut groups.command,
                    Boundary::CommandWord => &mut groups.command_word,
                    Boundary::ShellSyntax => &mut groups.shell_syntax,
                    Boundary::Paren => &mut groups.paren,
                };
                *slot |= rule_groups[rule];
            }
            groups
        })
        .collect()
}
