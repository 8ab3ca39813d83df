//! Rules as data: built-in rule files compiled into the binary, user rule files added at
//! construction, all compiled into per-transformation groups, plus one prefilter (required
//! literals of every rule in one Aho-Corasick automaton) so a clean value costs one pass and
//! only the rules whose literals occur run.

pub(crate) mod fast;
mod format;
pub(crate) mod prefilter;

use std::collections::HashMap;

use aho_corasick::automaton::Automaton;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Anchored, MatchKind};
use apiguard_model::Severity;
use regex::Regex;

use crate::detectors::{Boundary, Detector};
use crate::error::RuleError;
use crate::gate::Bits;
use crate::normalize::Transform;
use crate::target::TargetGroup;
use format::{OperatorSpec, RuleFile, RuleSpec};

/// The built-in rule files, one per family, in evaluation order.
pub(crate) const BUILTIN_RULE_FILES: &[(&str, &str)] = &[
    (
        "builtin/injection.yaml",
        include_str!("../../rules/injection.yaml"),
    ),
    ("builtin/rce.yaml", include_str!("../../rules/rce.yaml")),
    ("builtin/files.yaml", include_str!("../../rules/files.yaml")),
    ("builtin/web.yaml", include_str!("../../rules/web.yaml")),
    (
        "builtin/languages.yaml",
        include_str!("../../rules/languages.yaml"),
    ),
    (
        "builtin/scanners.yaml",
        include_str!("../../rules/scanners.yaml"),
    ),
];

/// Largest compiled regex, so a user rule cannot make compilation explode.
const REGEX_SIZE_LIMIT: usize = 4 * 1024 * 1024;

/// Target groups a rule inspects when it names none.
const DEFAULT_GROUPS: &[TargetGroup] = &[
    TargetGroup::Args,
    TargetGroup::ArgNames,
    TargetGroup::Path,
    TargetGroup::Headers,
    TargetGroup::Cookies,
    TargetGroup::CookieNames,
    TargetGroup::Files,
];

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: String,
    pub class: String,
    pub severity: Severity,
    pub base64: bool,
    pub only_base64: bool,
    /// Bit set of [`TargetGroup`]s.
    group_mask: u16,
    /// Exact targets inspected in addition to the groups.
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Rule {
    /// Whether this rule inspects `target`.
    pub(crate) fn applies_to<'a>(&self, bit: u16, display: impl Fn() -> &'a str) -> bool {
        let selected = self.group_mask & bit != 0
            || self.include.iter().any(|p| selector_matches(p, display()));
        selected && !self.exclude.iter().any(|p| selector_matches(p, display()))
    }
}

/// `header:user-agent` style selector, `*` suffix for prefixes, case-insensitive.
fn selector_matches(pattern: &str, display: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            // Bytes, not str slices: a target name may hold multi-byte characters.
            display.len() >= prefix.len()
                && display.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        None => pattern.eq_ignore_ascii_case(display),
    }
}

impl ChainGroup {
    /// Every member rule's index.
    pub(crate) fn member_rules(&self) -> impl Iterator<Item = usize> + '_ {
        self.regexes
            .iter()
            .map(|(i, _)| *i)
            .chain(self.phrase_members.iter().copied())
            .chain(self.detectors.iter().map(|(i, _)| *i))
    }

    /// Whether any rule of this group may inspect `target` (shown as `display`).
    pub(crate) fn may_apply<'a>(&self, bit: u16, display: impl Fn() -> &'a str) -> bool {
        self.group_mask & bit != 0 || self.includes.iter().any(|p| selector_matches(p, display()))
    }
}

/// Rules sharing one transformation chain, compiled together.
#[derive(Debug)]
pub(crate) struct ChainGroup {
    pub chain: Vec<Transform>,
    /// Union of the rules' target groups (a target outside it skips the group entirely).
    pub group_mask: u16,
    /// Exact-target selectors of the member rules (a target outside `group_mask` is still
    /// inspected when one of these names it).
    pub includes: Vec<String>,
    /// The member rules' own regexes: rule index and regex.
    pub regexes: Vec<(usize, Regex)>,
    pub phrases: Option<AhoCorasick>,
    /// Rule index and whether it wants word boundaries, per phrase pattern.
    pub phrase_rules: Vec<(usize, bool)>,
    /// Rule indexes of the phrase rules (each once).
    pub phrase_members: Vec<usize>,
    pub detectors: Vec<(usize, Detector)>,
    /// Bit set of the member rules.
    pub members: Bits,
    /// Union of the members' trigger bytes.
    pub bytes: [u64; 2],
    /// Whether a member has no prefilter.
    pub has_always: bool,
    /// Bit set of the transforms after a leading `decode` (or all, without one).
    pub rest_mask: u16,
}

/// The prefilter's literals (ASCII case-insensitive) in an Aho-Corasick DFA that is walked
/// here directly: one table lookup per byte, every occurrence reported (overlapping) where it
/// ends.
#[derive(Debug)]
pub(crate) struct LiteralDfa(aho_corasick::dfa::DFA);

impl LiteralDfa {
    fn build(literals: &[Vec<u8>]) -> Result<LiteralDfa, aho_corasick::BuildError> {
        aho_corasick::dfa::Builder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(aho_corasick::StartKind::Unanchored)
            .prefilter(false)
            .build(literals)
            .map(LiteralDfa)
    }

    /// Calls `each(literal, start, end)` for every occurrence of a literal in `text`, in order
    /// of `end`; stops early when `each` returns false.
    #[inline]
    pub(crate) fn each(&self, text: &[u8], mut each: impl FnMut(usize, usize, usize) -> bool) {
        let dfa = &self.0;
        let Ok(mut sid) = dfa.start_state(Anchored::No) else {
            return;
        };
        let mut at = 0;
        // The walk between matches is its own function: with the match handling inlined
        // around it, the loop's state no longer fits in registers (17 instructions per byte
        // instead of 9).
        while let Some((end, next)) = self.next_special(text, at, sid) {
            sid = next;
            at = end;
            if dfa.is_dead(sid) {
                return;
            }
            if dfa.is_match(sid) {
                for k in 0..dfa.match_len(sid) {
                    let literal = dfa.match_pattern(sid, k);
                    let len = dfa.pattern_len(literal);
                    if !each(literal.as_usize(), end - len, end) {
                        return;
                    }
                }
            }
        }
    }

    /// The state a walk starts in.
    #[inline]
    pub(crate) fn start(&self) -> Option<aho_corasick::automaton::StateID> {
        self.0.start_state(Anchored::No).ok()
    }

    /// The state after `byte` from state `sid`.
    #[inline(always)]
    pub(crate) fn next(
        &self,
        sid: aho_corasick::automaton::StateID,
        byte: u8,
    ) -> aho_corasick::automaton::StateID {
        self.0.next_state(Anchored::No, sid, byte)
    }

    /// Whether `sid` is a match (or the dead) state.
    #[inline(always)]
    pub(crate) fn is_special(&self, sid: aho_corasick::automaton::StateID) -> bool {
        self.0.is_special(sid)
    }

    /// Calls `each(literal, length)` for every literal that ends where the walk reached
    /// state `sid`.
    #[inline(always)]
    pub(crate) fn matches(
        &self,
        sid: aho_corasick::automaton::StateID,
        mut each: impl FnMut(usize, usize),
    ) {
        let dfa = &self.0;
        if !dfa.is_match(sid) {
            // The dead state (a walk that cannot match any more) has no match either.
            return;
        }
        for k in 0..dfa.match_len(sid) {
            let literal = dfa.match_pattern(sid, k);
            each(literal.as_usize(), dfa.pattern_len(literal));
        }
    }

    /// Walks `text[at..]` from state `sid` up to the first byte that leads to a special state
    /// (a match or the dead state): the position after that byte, and the state.
    #[inline(never)]
    fn next_special(
        &self,
        text: &[u8],
        at: usize,
        mut sid: aho_corasick::automaton::StateID,
    ) -> Option<(usize, aho_corasick::automaton::StateID)> {
        let dfa = &self.0;
        for (i, &b) in text.get(at..)?.iter().enumerate() {
            sid = dfa.next_state(Anchored::No, sid, b);
            if dfa.is_special(sid) {
                return Some((at + i + 1, sid));
            }
        }
        None
    }
}

impl Gate {
    /// The same prefilter for the rules `keep` selects only (their literals, in a smaller
    /// automaton).
    fn restricted(&self, keep: impl Fn(usize) -> bool) -> Result<Gate, RuleError> {
        let mut patterns = Vec::new();
        let mut literal_rules = Vec::new();
        for (pattern, rules) in self.patterns.iter().zip(&self.literal_rules) {
            let kept: Vec<(usize, Boundary)> = rules
                .iter()
                .copied()
                .filter(|(rule, _)| keep(*rule))
                .collect();
            if !kept.is_empty() {
                patterns.push(pattern.clone());
                literal_rules.push(kept);
            }
        }
        let literals = if patterns.is_empty() {
            None
        } else {
            Some(LiteralDfa::build(&patterns).map_err(|e| RuleError::Rule {
                file: "(compiled)".into(),
                rule: "(prefilter)".into(),
                message: e.to_string(),
            })?)
        };
        Ok(Gate {
            literals,
            patterns,
            literal_rules,
            bytes: self.bytes.clone(),
            always: self.always.clone(),
        })
    }
}

/// The prefilter of a rule set: one Aho-Corasick automaton over every rule's required
/// literals (see [`prefilter`]), plus single bytes per rule.
#[derive(Debug)]
pub(crate) struct Gate {
    pub literals: Option<LiteralDfa>,
    /// The literals (lowercase), by index.
    pub patterns: Vec<Vec<u8>>,
    /// Per literal: the rules it arms and the boundary it needs.
    pub literal_rules: Vec<Vec<(usize, Boundary)>>,
    /// Per rule: bytes whose presence arms it.
    pub bytes: Vec<[u64; 2]>,
    /// Per rule: no literal could be proven necessary, so it always runs.
    pub always: Vec<bool>,
}

/// All rules of an engine, compiled.
#[derive(Debug)]
pub(crate) struct RuleSet {
    pub rules: Vec<Rule>,
    pub groups: Vec<ChainGroup>,
    pub gate: Gate,
    /// Union of the groups' transform masks.
    pub transform_mask: u16,
    /// Per target group (by bit index): the per-value fast path.
    pub plans: Vec<fast::FastPlan>,
    /// Per rule: how the fast path runs it.
    pub fast_ops: Vec<Option<fast::FastOp>>,
    /// Per literal of the prefilter: the target groups (bits) whose plans have a rule it
    /// arms, per boundary the literal needs there.
    pub literal_groups: Vec<LiteralGroups>,
    /// The prefilter restricted to the rules whose chains remove whitespace.
    pub whitespace_gate: Gate,
}

/// The target groups for which one prefilter literal arms a rule, per boundary (see
/// [`Boundary`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LiteralGroups {
    pub any: u16,
    pub sql: u16,
    pub sql_call: u16,
    pub command: u16,
    pub command_word: u16,
    pub shell_syntax: u16,
    pub paren: u16,
}

struct Pending {
    chain: Vec<Transform>,
    regexes: Vec<(usize, String)>,
    phrases: Vec<(usize, String, bool)>,
    detectors: Vec<(usize, Detector)>,
}

impl RuleSet {
    /// Compiles the built-in rules and `extra` files (name, text), keeping rules at or below
    /// `paranoia`.
    pub(crate) fn compile(extra: &[(String, String)], paranoia: u8) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        let files = BUILTIN_RULE_FILES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .chain(extra.iter().cloned());
        for (file, text) in files {
            let parsed: RuleFile =
                serde_saphyr::from_str(&text).map_err(|e| RuleError::Syntax {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
            for spec in parsed.rules {
                let err = |message: String| RuleError::Rule {
                    file: file.clone(),
                    rule: spec.id.clone(),
                    message,
                };
                if let Some(previous) = seen.insert(spec.id.clone(), file.clone()) {
                    return Err(err(format!(
                        "duplicate rule id (first defined in {previous})"
                    )));
                }
                if !(1..=4).contains(&spec.paranoia) {
                    return Err(err(format!("paranoia {} is not 1 to 4", spec.paranoia)));
                }
                let compiled = compile_rule(&spec).map_err(err)?;
                let (rule, chain, operator) = compiled;
                if spec.paranoia > paranoia {
                    continue;
                }
                let index = rules.len();
                rules.push(rule);
                let group = match pending.iter_mut().position(|p| p.chain == chain) {
                    Some(i) => &mut pending[i],
                    None => {
                        pending.push(Pending {
                            chain,
                            regexes: Vec::new(),
                            phrases: Vec::new(),
                            detectors: Vec::new(),
                        });
                        pending.last_mut().expect("just pushed")
                    }
                };
                match operator {
                    CompiledOperator::Regex(r) => group.regexes.push((index, r)),
                    CompiledOperator::Phrases(list, word) => group
                        .phrases
                        .extend(list.into_iter().map(|p| (index, p, word))),
                    CompiledOperator::Detector(d) => group.detectors.push((index, d)),
                }
            }
        }
        let gate = build_gate(&pending, rules.len())?;
        let groups = pending
            .into_iter()
            .map(|p| build_group(p, &rules, &gate))
            .collect::<Result<Vec<_>, _>>()?;
        let transform_mask = groups.iter().fold(0, |m, g| m | g.rest_mask);
        let plans = fast::FastPlan::build(&groups, &rules, &gate);
        let fast_ops = fast::fast_ops(&groups, rules.len());
        let literal_groups = fast::literal_groups(&plans, &gate, rules.len());
        // The literals of the rules whose chains remove whitespace, for the quick check of
        // values with spaces (see `fast::RuleSet::stripped_silent`).
        let mut removes_whitespace = Bits::with_len(rules.len());
        for g in groups
            .iter()
            .filter(|g| g.rest_mask & Transform::RemoveWhitespace.bit() != 0)
        {
            for rule in g.member_rules() {
                removes_whitespace.set(rule);
            }
        }
        let whitespace_gate = gate.restricted(|rule| removes_whitespace.get(rule))?;
        Ok(RuleSet {
            literal_groups,
            whitespace_gate,
            rules,
            groups,
            gate,
            transform_mask,
            plans,
            fast_ops,
        })
    }
}

enum CompiledOperator {
    Regex(String),
    Phrases(Vec<String>, bool),
    Detector(Detector),
}

fn compile_rule(spec: &RuleSpec) -> Result<(Rule, Vec<Transform>, CompiledOperator), String> {
    if spec.id.is_empty() || spec.class.is_empty() {
        return Err("id and class must not be empty".into());
    }
    let mut group_mask = 0u16;
    let mut include = Vec::new();
    for t in &spec.targets {
        match TargetGroup::parse(t) {
            Some(g) => group_mask |= g.bit(),
            None if t.contains(':') => include.push(t.clone()),
            None => return Err(format!("unknown target `{t}` (groups: {})", group_names())),
        }
    }
    if spec.targets.is_empty() {
        group_mask = DEFAULT_GROUPS.iter().fold(0, |m, g| m | g.bit());
    }
    let chain = match &spec.transforms {
        None => vec![Transform::Decode],
        Some(names) => names
            .iter()
            .map(|n| Transform::parse(n).ok_or_else(|| format!("unknown transform `{n}`")))
            .collect::<Result<_, _>>()?,
    };
    let operator = match &spec.operator {
        OperatorSpec::Regex(r) => {
            // Compile once here so the error names this rule.
            regex::RegexBuilder::new(r)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("invalid regex: {e}"))?;
            CompiledOperator::Regex(r.clone())
        }
        OperatorSpec::Phrases(list) | OperatorSpec::Words(list) => {
            if list.is_empty() || list.iter().any(String::is_empty) {
                return Err("phrase lists must be non-empty and without empty phrases".into());
            }
            CompiledOperator::Phrases(
                list.clone(),
                matches!(spec.operator, OperatorSpec::Words(_)),
            )
        }
        OperatorSpec::Detector(name) => {
            CompiledOperator::Detector(Detector::parse(name).ok_or_else(|| {
                format!("unknown detector `{name}` (sqli, xss, cmdi, ssrf, ldap)")
            })?)
        }
    };
    let rule = Rule {
        id: spec.id.clone(),
        class: spec.class.clone(),
        severity: spec.severity,
        base64: spec.base64 || spec.only_base64,
        only_base64: spec.only_base64,
        group_mask,
        include,
        exclude: spec.exclude_targets.clone(),
    };
    Ok((rule, chain, operator))
}

fn group_names() -> String {
    "method, path, args, arg_names, files, part_headers, xml_declarations, graphql, headers, structured_headers, cookie_names, cookies".to_string()
}

fn build_group(p: Pending, rules: &[Rule], gate: &Gate) -> Result<ChainGroup, RuleError> {
    let member_rules = p
        .regexes
        .iter()
        .map(|(i, _)| *i)
        .chain(p.phrases.iter().map(|(i, _, _)| *i))
        .chain(p.detectors.iter().map(|(i, _)| *i));
    let mut group_mask = 0u16;
    let mut includes: Vec<String> = Vec::new();
    for i in member_rules {
        group_mask |= rules[i].group_mask;
        for selector in &rules[i].include {
            if !includes.contains(selector) {
                includes.push(selector.clone());
            }
        }
    }
    let internal = |message: String| RuleError::Rule {
        file: "(compiled)".into(),
        rule: "(group)".into(),
        message,
    };
    let regexes = p
        .regexes
        .iter()
        .map(|(i, r)| {
            Ok((
                *i,
                regex::RegexBuilder::new(r)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| internal(e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>, RuleError>>()?;
    let phrases = if p.phrases.is_empty() {
        None
    } else {
        Some(
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(p.phrases.iter().map(|(_, s, _)| s.as_str()))
                .map_err(|e| internal(e.to_string()))?,
        )
    };
    let mut phrase_members: Vec<usize> = p.phrases.iter().map(|(i, _, _)| *i).collect();
    phrase_members.dedup();
    let mut members = Bits::with_len(rules.len());
    let mut bytes = [0u64; 2];
    let mut has_always = false;
    for i in p
        .regexes
        .iter()
        .map(|(i, _)| *i)
        .chain(phrase_members.iter().copied())
        .chain(p.detectors.iter().map(|(i, _)| *i))
    {
        members.set(i);
        bytes[0] |= gate.bytes[i][0];
        bytes[1] |= gate.bytes[i][1];
        has_always |= gate.always[i];
    }
    let rest: &[Transform] = match p.chain.split_first() {
        Some((Transform::Decode, rest)) => rest,
        _ => &p.chain,
    };
    let rest_mask = rest.iter().fold(0u16, |m, t| m | t.bit());
    Ok(ChainGroup {
        members,
        bytes,
        has_always,
        rest_mask,
        chain: p.chain,
        group_mask,
        includes,
        regexes,
        phrases,
        phrase_rules: p.phrases.iter().map(|(i, _, w)| (*i, *w)).collect(),
        phrase_members,
        detectors: p.detectors,
    })
}

/// Builds the prefilter: required literals of every regex, the phrases themselves, and the
/// detectors' trigger words.
fn build_gate(pending: &[Pending], rule_count: usize) -> Result<Gate, RuleError> {
    let mut literals: Vec<Vec<u8>> = Vec::new();
    let mut literal_rules: Vec<Vec<(usize, Boundary)>> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut bytes = vec![[0u64; 2]; rule_count];
    let mut always = vec![false; rule_count];
    let mut add = |rule: usize, lit: &[u8], word: Boundary, bytes: &mut Vec<[u64; 2]>| {
        if lit.len() == 1 && lit[0] < 0x80 && matches!(word, Boundary::None | Boundary::Paren) {
            let m = crate::gate::mask(lit);
            bytes[rule][0] |= m[0];
            bytes[rule][1] |= m[1];
        } else {
            let lit = lit.to_ascii_lowercase();
            let slot = *index.entry(lit.clone()).or_insert_with(|| {
                literals.push(lit);
                literal_rules.push(Vec::new());
                literal_rules.len() - 1
            });
            if !literal_rules[slot].contains(&(rule, word)) {
                literal_rules[slot].push((rule, word));
            }
        }
    };
    for p in pending {
        for (rule, pattern) in &p.regexes {
            match prefilter::required_literals(pattern) {
                Some(set) => {
                    // A function-call shape (every match has a `(`) needs one in the value.
                    let boundary = if prefilter::requires_byte(pattern, b'(') {
                        Boundary::Paren
                    } else {
                        Boundary::None
                    };
                    for lit in set {
                        add(*rule, &lit, boundary, &mut bytes);
                    }
                }
                None => always[*rule] = true,
            }
        }
        for (rule, phrase, _) in &p.phrases {
            let mut lit = phrase.as_bytes().to_vec();
            lit.truncate(24);
            add(*rule, &lit, Boundary::None, &mut bytes);
        }
        for (rule, detector) in &p.detectors {
            for (w, boundary) in detector.gate_literals() {
                add(*rule, w.as_bytes(), boundary, &mut bytes);
            }
        }
    }
    let automaton = if literals.is_empty() {
        None
    } else {
        Some(LiteralDfa::build(&literals).map_err(|e| RuleError::Rule {
            file: "(compiled)".into(),
            rule: "(prefilter)".into(),
            message: e.to_string(),
        })?)
    };
    Ok(Gate {
        literals: automaton,
        patterns: literals,
        literal_rules,
        bytes,
        always,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn selectors_compare_target_names_with_multi_byte_characters() {
        // Found by the `engine` fuzz target: a header name cut inside a character.
        assert!(!selector_matches("header:x-*", "header:\u{fffd}\u{fffd}"));
        assert!(!selector_matches("header:user-agent*", "header:us\u{fffd}"));
        assert!(selector_matches("header:x-*", "header:x-\u{fffd}"));
    }

    use super::*;

    #[test]
    fn builtin_rules_compile() {
        for level in 1..=4 {
            let set = RuleSet::compile(&[], level).expect("built-in rules compile");
            assert!(!set.rules.is_empty());
        }
    }

    #[test]
    fn user_rule_errors_name_the_rule() {
        let bad = vec![("mine.yaml".to_string(), "rules:\n  - id: x.bad\n    class: x\n    severity: critical\n    operator:\n      regex: '(unclosed'\n".to_string())];
        let err = RuleSet::compile(&bad, 1).unwrap_err().to_string();
        assert!(err.contains("mine.yaml") && err.contains("x.bad"), "{err}");
        let dup = vec![("mine.yaml".to_string(), "rules:\n  - id: sqli.tokenizer\n    class: x\n    severity: critical\n    operator:\n      phrases: [a]\n".to_string())];
        assert!(
            RuleSet::compile(&dup, 1)
                .unwrap_err()
                .to_string()
                .contains("duplicate")
        );
        let unknown = vec![("mine.yaml".to_string(), "rules:\n  - id: a.b\n    class: x\n    severity: critical\n    targets: [nope]\n    operator:\n      phrases: [a]\n".to_string())];
        assert!(
            RuleSet::compile(&unknown, 1)
                .unwrap_err()
                .to_string()
                .contains("unknown target")
        );
    }
}
