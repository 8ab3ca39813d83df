//! Every structural problem of a configuration file at once.
//!
//! serde stops at the first key it cannot place, so a file with three typos would take three
//! rounds of `apiguard validate` to fix. When the typed parse fails, the same text is also
//! checked against the configuration's JSON Schema (the one `apiguard schema` prints), which
//! reports every unknown key, missing field and wrong type; each is placed at its
//! `line:column` through an index of where every node of the YAML document starts.

use std::collections::HashMap;

use jsonschema::ValidationError;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, Span};

use super::Problem;
use crate::config::Config;

/// Past this many problems the rest are noise from the first ones.
const MAX_PROBLEMS: usize = 50;

/// Where a node of the document starts, and for a mapping entry where its key starts.
#[derive(Debug, Clone, Copy)]
struct Place {
    key: Option<(u64, u64)>,
    value: (u64, u64),
}

/// Every problem the configuration schema finds in `text`, placed in the file, in file order.
/// Empty when the text is not YAML (the parser's own error says why) or matches the schema.
pub(super) fn schema_problems(text: &str) -> Vec<Problem> {
    let Ok(document) = serde_saphyr::from_str::<Value>(text) else {
        return Vec::new();
    };
    let Ok(schema) = serde_json::to_value(schemars::schema_for!(Config)) else {
        return Vec::new();
    };
    let Ok(validator) = jsonschema::validator_for(&schema) else {
        return Vec::new();
    };
    let places = index_places(text);
    let mut problems = Vec::new();
    for error in validator.iter_errors(&document) {
        explain(&error, &places, &mut problems);
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
    }
    problems.sort_by_key(|p| p.position);
    problems.dedup();
    problems
}

/// The problem(s) one schema error stands for.
fn explain(error: &ValidationError<'_>, places: &HashMap<String, Place>, out: &mut Vec<Problem>) {
    let pointer = error.instance_path().as_str();
    let value_at = |pointer: &str| nearest(places, pointer).map(|p| p.value);
    let key_at = |pointer: &str| nearest(places, pointer).map(|p| p.key.unwrap_or(p.value));
    let at = |position, message: String| Problem { position, message };
    let field = readable(pointer);
    let inside = if field.is_empty() {
        String::new()
    } else {
        format!(" in `{field}`")
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                let child = format!("{pointer}/{}", escape(name));
                out.push(at(
                    key_at(&child),
                    format!("unknown field `{name}`{inside}"),
                ));
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(at(
                key_at(pointer),
                format!("missing field `{name}`{inside}"),
            ));
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            match matching_branch(pointer, context) {
                Some(branch) => {
                    for inner in branch {
                        explain(inner, places, out);
                    }
                }
                None => {
                    let message = if let Some(allowed) = allowed_constants(context) {
                        format!("`{field}` must be one of {allowed}")
                    } else if let Some(keys) = variant_keys(pointer, context) {
                        format!("`{field}` must have exactly one of the keys {keys}")
                    } else {
                        format!("`{field}` does not have any of the accepted forms")
                    };
                    out.push(at(value_at(pointer), message));
                }
            }
        }
        ValidationErrorKind::Type { kind } => {
            let wanted = match kind {
                TypeKind::Single(t) => t.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            out.push(at(
                value_at(pointer),
                format!("`{field}` must be of type {wanted}"),
            ));
        }
        ValidationErrorKind::Enum { options } => {
            let allowed = options
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            out.push(at(
                value_at(pointer),
                format!("`{field}` must be one of {allowed}"),
            ));
        }
        ValidationErrorKind::Constant { expected_value } => out.push(at(
            value_at(pointer),
            format!("`{field}` must be {expected_value}"),
        )),
        ValidationErrorKind::Minimum { limit } => out.push(at(
            value_at(pointer),
            format!("`{field}` must be at least {limit}"),
        )),
        ValidationErrorKind::Maximum { limit } => out.push(at(
            value_at(pointer),
            format!("`{field}` must be at most {limit}"),
        )),
        ValidationErrorKind::MinItems { limit } => out.push(at(
            value_at(pointer),
            format!("`{field}` must have at least {limit} item(s)"),
        )),
        _ => out.push(at(value_at(pointer), format!("`{field}`: {error}"))),
    }
}

/// Of the alternatives of an `anyOf`/`oneOf`, the one the value evidently meant: the only
/// branch whose complaints all lie deeper than the value itself (it matched the value's shape,
/// only its contents are wrong). An `Option` is `anyOf [T, null]`; the null branch never wins.
fn matching_branch<'e>(
    pointer: &str,
    context: &'e [Vec<ValidationError<'static>>],
) -> Option<&'e [ValidationError<'static>]> {
    let not_null: Vec<&Vec<ValidationError<'static>>> = context
        .iter()
        .filter(|branch| !branch.iter().all(wants_null))
        .collect();
    if let [only] = not_null.as_slice() {
        return Some(only.as_slice());
    }
    let mut found = None;
    for branch in not_null {
        let deeper = !branch.is_empty()
            && branch.iter().all(|e| {
                e.instance_path().as_str().len() > pointer.len()
                    || matches!(
                        e.kind(),
                        ValidationErrorKind::Required { .. }
                            | ValidationErrorKind::AdditionalProperties { .. }
                            | ValidationErrorKind::AnyOf { .. }
                            | ValidationErrorKind::OneOfNotValid { .. }
                    )
            });
        if deeper {
            if found.is_some() {
                return None;
            }
            found = Some(branch.as_slice());
        }
    }
    found
}

/// An enum of unit variants is a `oneOf` of constants: its complaint is the list of them.
fn allowed_constants(context: &[Vec<ValidationError<'static>>]) -> Option<String> {
    let mut allowed = Vec::new();
    for branch in context {
        for error in branch {
            match error.kind() {
                ValidationErrorKind::Constant { expected_value } => {
                    allowed.push(expected_value.to_string())
                }
                ValidationErrorKind::Enum { options } => allowed.extend(
                    options
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(Value::to_string),
                ),
                ValidationErrorKind::AnyOf { context }
                | ValidationErrorKind::OneOfNotValid { context } => {
                    allowed.push(allowed_constants(context)?)
                }
                _ if wants_null(error) => {}
                _ => return None,
            }
        }
    }
    (!allowed.is_empty()).then(|| allowed.join(", "))
}

/// An enum of variants with data is a `oneOf` of single-key objects: its complaint is the
/// list of those keys.
fn variant_keys(pointer: &str, context: &[Vec<ValidationError<'static>>]) -> Option<String> {
    let mut keys = Vec::new();
    for branch in context {
        let required = branch.iter().find_map(|e| match e.kind() {
            ValidationErrorKind::Required { property } if e.instance_path().as_str() == pointer => {
                property.as_str().map(|name| format!("`{name}`"))
            }
            _ => None,
        });
        keys.push(required?);
    }
    (!keys.is_empty()).then(|| keys.join(", "))
}

fn wants_null(error: &ValidationError<'_>) -> bool {
    matches!(
        error.kind(),
        ValidationErrorKind::Type { kind: TypeKind::Single(t) } if t.to_string() == "null"
    )
}

/// The place of the node at `pointer`, or of its nearest ancestor that has one (a node that
/// came from an alias or a merge key has no place of its own).
fn nearest<'p>(places: &'p HashMap<String, Place>, pointer: &str) -> Option<&'p Place> {
    let mut pointer = pointer;
    loop {
        if let Some(place) = places.get(pointer) {
            return Some(place);
        }
        pointer = &pointer[..pointer.rfind('/')?];
    }
}

/// `/routes/0/match/path` as `routes[0].match.path`.
fn readable(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&token);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token);
        }
    }
    out
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn position(span: &Span) -> (u64, u64) {
    (span.start.line() as u64, span.start.col() as u64 + 1)
}

/// Collections open while the document is walked.
enum Open {
    Mapping {
        pointer: String,
        /// The key whose value comes next; `None` while a key is awaited.
        key: Option<(String, (u64, u64))>,
    },
    Sequence {
        pointer: String,
        next: usize,
    },
    /// A mapping or sequence used as a key: nothing inside it is addressable by a pointer.
    ComplexKey,
}

/// JSON pointer of every node → where it starts in the text.
fn index_places(text: &str) -> HashMap<String, Place> {
    let mut places = HashMap::new();
    let mut open: Vec<Open> = Vec::new();
    let mut skipping = 0usize;
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let starts = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
        let ends = matches!(event, Event::MappingEnd | Event::SequenceEnd);
        let is_node = starts || matches!(event, Event::Scalar(..) | Event::Alias(..));
        if skipping > 0 {
            if starts {
                skipping += 1;
            } else if ends {
                skipping -= 1;
                if skipping == 0 {
                    open.pop();
                    node_done(&mut open);
                }
            }
            continue;
        }
        if ends {
            open.pop();
            node_done(&mut open);
            continue;
        }
        if !is_node {
            continue;
        }
        // A node: either a mapping key, or a value with a pointer.
        if let Some(Open::Mapping {
            key: key @ None, ..
        }) = open.last_mut()
        {
            match &event {
                Event::Scalar(text, ..) => *key = Some((text.to_string(), position(&span))),
                _ if starts => {
                    open.push(Open::ComplexKey);
                    skipping = 1;
                }
                _ => *key = Some((String::from("?"), position(&span))),
            }
            continue;
        }
        let (pointer, key_position) = match open.last() {
            None => (String::new(), None),
            Some(Open::Mapping {
                pointer,
                key: Some((name, at)),
            }) => (format!("{pointer}/{}", escape(name)), Some(*at)),
            Some(Open::Sequence { pointer, next }) => (format!("{pointer}/{next}"), None),
            Some(_) => (String::from("/?"), None),
        };
        places.entry(pointer.clone()).or_insert(Place {
            key: key_position,
            value: position(&span),
        });
        match event {
            Event::MappingStart(..) => open.push(Open::Mapping { pointer, key: None }),
            Event::SequenceStart(..) => open.push(Open::Sequence { pointer, next: 0 }),
            _ => node_done(&mut open),
        }
    }
    places
}

/// A value finished: its mapping now awaits a key, its sequence the next item.
fn node_done(open: &mut [Open]) {
    match open.last_mut() {
        Some(Open::Mapping { key, .. }) => {
            // A finished complex key leaves a placeholder so its value is still walked.
            *key = match key.take() {
                None => Some((String::from("?"), (0, 0))),
                Some(_) => None,
            }
        }
        Some(Open::Sequence { next, .. }) => *next += 1,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(text: &str) -> Vec<String> {
        schema_problems(text)
            .into_iter()
            .map(|p| match p.position {
                Some((l, c)) => format!("{l}:{c}: {}", p.message),
                None => p.message,
            })
            .collect()
    }

    #[test]
    fn places_point_at_keys_and_values() {
        let places = index_places("a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\n");
        assert_eq!(places["/a/b"].key, Some((2, 3)));
        assert_eq!(places["/a/b"].value, (2, 6));
        assert_eq!(places["/a/c/1/d"].value, (5, 11));
        assert_eq!(places["/a/c/0"].value, (4, 7));
    }

    #[test]
    fn every_structural_problem_is_reported_with_its_place() {
        let text = "\
listeners:
  - adress: 127.0.0.1:8080
routes:
  - id: r
    upstream: app
    match: {path: {prefix: /}}
    limits: {max_body_bytes: lots}
";
        let found = messages(text);
        assert!(
            found
                .iter()
                .any(|m| m.starts_with("1:1: missing field `upstreams`")
                    || m == "missing field `upstreams`"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|m| m.starts_with("2:5: unknown field `adress` in `listeners[0]`")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|m| m.starts_with("2:5: missing field `address` in `listeners[0]`")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|m| m.starts_with("7:30: `routes[0].limits.max_body_bytes` must be of type")),
            "{found:?}"
        );
    }

    #[test]
    fn a_valid_structure_has_no_schema_problems() {
        let text = "\
listeners: [{address: 127.0.0.1:8080}]
upstreams: {app: {targets: [127.0.0.1:9000]}}
routes: [{id: r, upstream: app}]
";
        assert_eq!(messages(text), Vec::<String>::new());
    }

    #[test]
    fn text_that_is_not_yaml_yields_nothing_here() {
        assert!(messages("listeners: [unclosed").is_empty());
    }
}
