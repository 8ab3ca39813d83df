//! The limits walker: measures a parsed GraphQL operation (depth, aliases, root fields,
//! static cost, introspection) without a schema.
//!
//! Fragments are measured once each, in dependency order, and a spread reuses the result, so
//! a document whose fragments spread each other many times costs linear time to measure
//! (while its *measured* cost grows as the server's work would). Recursion only follows the
//! nesting of one selection set, which the pre-scan bounds.

use std::collections::{HashMap, VecDeque};

use async_graphql_parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql_value::{ConstValue, Value};

/// How a static cost is computed: every field costs `field_cost`, and a field that returns a
/// list multiplies the cost of what is selected under it by the list's size: the value of its
/// first size argument (`first`, `last`, `limit`; a literal or a variable), else
/// `default_list_size` when it is a known list field or the size cannot be known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostModel {
    pub field_cost: u64,
    /// Argument names that give a list's size.
    pub list_arguments: Vec<String>,
    /// Fields known to return lists without a size argument (`users`, `orders`).
    pub list_fields: Vec<String>,
    /// The size assumed for a list whose size is not given.
    pub default_list_size: u64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            field_cost: 1,
            list_arguments: vec!["first".into(), "last".into(), "limit".into()],
            list_fields: Vec::new(),
            default_list_size: 10,
        }
    }
}

/// What one operation (or one fragment) selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Fields along the longest path (`{ user { name } }` is 2). Fragments add no level.
    pub depth: usize,
    /// Aliased fields, counting each use of a fragment.
    pub aliases: u64,
    /// Fields selected at the top level (for an operation: its root fields).
    pub root_fields: u64,
    /// The static cost (see [`CostModel`]), saturating.
    pub cost: u64,
    /// Whether `__schema` or `__type` is selected anywhere.
    pub introspection: bool,
}

impl Stats {
    /// Adds what a fragment (inline or spread) selects at the same level.
    fn absorb(&mut self, other: &Stats) {
        self.depth = self.depth.max(other.depth);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.root_fields = self.root_fields.saturating_add(other.root_fields);
        self.cost = self.cost.saturating_add(other.cost);
        self.introspection |= other.introspection;
    }
}

/// Why a document could not be measured (the server would refuse it too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalyzeError {
    /// A spread names a fragment the document does not define.
    UnknownFragment(String),
    /// Fragments spread each other in a cycle (which the specification forbids).
    FragmentCycle(String),
    /// `operationName` names no operation of the document.
    UnknownOperation(String),
}

impl std::fmt::Display for AnalyzeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnalyzeError::UnknownFragment(name) => write!(f, "fragment `{name}` is not defined"),
            AnalyzeError::FragmentCycle(name) => {
                write!(f, "fragment `{name}` spreads itself (a cycle)")
            }
            AnalyzeError::UnknownOperation(name) => {
                write!(f, "operation `{name}` is not in the document")
            }
        }
    }
}

/// Measures the operation `operation_name` selects in `doc`; with no name (or several
/// anonymous choices), every operation, taking the largest of each measure, since a server
/// will run at most one of them. `variables` is the request's `variables` object, used for
/// list sizes given as variables.
pub fn analyze_document(
    doc: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: Option<&serde_json::Map<String, serde_json::Value>>,
    model: &CostModel,
) -> Result<Stats, AnalyzeError> {
    let selected: Vec<&OperationDefinition> = match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => vec![&op.node],
        (DocumentOperations::Multiple(ops), Some(name)) => vec![
            &ops.get(name)
                .ok_or_else(|| AnalyzeError::UnknownOperation(name.to_owned()))?
                .node,
        ],
        (DocumentOperations::Multiple(ops), None) => ops.values().map(|op| &op.node).collect(),
    };
    let walker = Walker {
        model,
        variables,
        defaults: selected
            .iter()
            .flat_map(|op| op.variable_definitions.iter())
            .filter_map(|def| {
                let size = match def.node.default_value.as_ref().map(|v| &v.node) {
                    Some(ConstValue::Number(n)) => n.as_u64()?,
                    _ => return None,
                };
                Some((def.node.name.node.as_str(), size))
            })
            .collect(),
        fragments: HashMap::new(),
    };
    let walker = walker.with_fragments(doc)?;
    let mut stats = Stats::default();
    for op in selected {
        let op_stats = walker.set(&op.selection_set.node)?;
        stats.depth = stats.depth.max(op_stats.depth);
        stats.aliases = stats.aliases.max(op_stats.aliases);
        stats.root_fields = stats.root_fields.max(op_stats.root_fields);
        stats.cost = stats.cost.max(op_stats.cost);
        stats.introspection |= op_stats.introspection;
    }
    Ok(stats)
}

struct Walker<'a> {
    model: &'a CostModel,
    variables: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Default values of the selected operations' variables, for sizes given as variables.
    defaults: HashMap<&'a str, u64>,
    /// Every fragment's stats, once measured.
    fragments: HashMap<&'a str, Stats>,
}

impl<'a> Walker<'a> {
    /// Measures every fragment of `doc`, each after the fragments it spreads (Kahn's
    /// algorithm), so measuring never recurses from one fragment into another.
    fn with_fragments(mut self, doc: &'a ExecutableDocument) -> Result<Self, AnalyzeError> {
        let mut waiting_on: HashMap<&'a str, usize> = HashMap::new();
        let mut dependents: HashMap<&'a str, Vec<&'a str>> = HashMap::new();
        let mut ready = VecDeque::new();
        for (name, fragment) in &doc.fragments {
            let mut spreads = Vec::new();
            spreads_in(&fragment.node.selection_set.node, &mut spreads);
            spreads.sort_unstable();
            spreads.dedup();
            for spread in &spreads {
                if !doc.fragments.contains_key(*spread) {
                    return Err(AnalyzeError::UnknownFragment((*spread).to_owned()));
                }
                dependents.entry(spread).or_default().push(name.as_str());
            }
            waiting_on.insert(name.as_str(), spreads.len());
            if spreads.is_empty() {
                ready.push_back(name.as_str());
            }
        }
        while let Some(name) = ready.pop_front() {
            let fragment = &doc.fragments[name];
            let stats = self.set(&fragment.node.selection_set.node)?;
            self.fragments.insert(name, stats);
            for dependent in dependents.get(name).into_iter().flatten() {
                let count = waiting_on
                    .get_mut(dependent)
                    .expect("every fragment is counted");
                *count -= 1;
                if *count == 0 {
                    ready.push_back(dependent);
                }
            }
        }
        if let Some((name, _)) = waiting_on.iter().find(|(_, n)| **n > 0) {
            return Err(AnalyzeError::FragmentCycle((*name).to_owned()));
        }
        Ok(self)
    }

    /// Measures one selection set; the fragments it spreads are already measured.
    fn set(&self, set: &SelectionSet) -> Result<Stats, AnalyzeError> {
        let mut stats = Stats::default();
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let below = self.set(&field.selection_set.node)?;
                    let name = field.name.node.as_str();
                    let multiplier = self.list_size(field);
                    stats.depth = stats.depth.max(below.depth + 1);
                    stats.aliases = stats
                        .aliases
                        .saturating_add(u64::from(field.alias.is_some()))
                        .saturating_add(below.aliases);
                    stats.root_fields = stats.root_fields.saturating_add(1);
                    stats.cost = stats.cost.saturating_add(
                        self.model
                            .field_cost
                            .saturating_add(multiplier.saturating_mul(below.cost)),
                    );
                    stats.introspection |=
                        below.introspection || name == "__schema" || name == "__type";
                }
                Selection::InlineFragment(inline) => {
                    stats.absorb(&self.set(&inline.node.selection_set.node)?);
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let fragment = self
                        .fragments
                        .get(name)
                        .ok_or_else(|| AnalyzeError::UnknownFragment(name.to_owned()))?;
                    stats.absorb(fragment);
                }
            }
        }
        Ok(stats)
    }

    /// How many times a field's selection is repeated: its size argument, or the default
    /// size for a known list field, or 1.
    fn list_size(&self, field: &async_graphql_parser::types::Field) -> u64 {
        let model = self.model;
        let argument = field
            .arguments
            .iter()
            .find(|(name, _)| model.list_arguments.iter().any(|a| a == name.node.as_str()));
        if let Some((_, value)) = argument {
            let size = match &value.node {
                Value::Number(n) => n.as_u64(),
                Value::Variable(name) => self
                    .variables
                    .and_then(|v| v.get(name.as_str()))
                    .and_then(serde_json::Value::as_u64)
                    .or_else(|| self.defaults.get(name.as_str()).copied()),
                _ => None,
            };
            return size.unwrap_or(model.default_list_size);
        }
        if model
            .list_fields
            .iter()
            .any(|f| f == field.name.node.as_str())
        {
            return model.default_list_size;
        }
        1
    }
}

/// The names of the fragments spread anywhere in `set` (inline fragments included).
fn spreads_in<'a>(set: &'a SelectionSet, out: &mut Vec<&'a str>) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => spreads_in(&field.node.selection_set.node, out),
            Selection::InlineFragment(inline) => spreads_in(&inline.node.selection_set.node, out),
            Selection::FragmentSpread(spread) => out.push(spread.node.fragment_name.node.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql_parser::parse_query;

    use super::*;

    fn stats(doc: &str) -> Stats {
        analyze(doc, None).expect("measurable")
    }

    fn analyze(doc: &str, vars: Option<serde_json::Value>) -> Result<Stats, AnalyzeError> {
        let parsed = parse_query(doc).expect("parses");
        let vars = vars.and_then(|v| v.as_object().cloned());
        analyze_document(&parsed, None, vars.as_ref(), &CostModel::default())
    }

    #[test]
    fn depth_counts_fields_not_fragments() {
        assert_eq!(stats("{ a }").depth, 1);
        assert_eq!(stats("{ a { b { c } } d }").depth, 3);
        let doc = "{ a { ...F ... on T { x { y } } } } fragment F on T { b { c { d } } }";
        assert_eq!(stats(doc).depth, 4);
    }

    #[test]
    fn aliases_and_root_fields_count_each_fragment_use() {
        let doc = "{ x: a y: b ...F ...F } fragment F on Q { z: c w: d }";
        let s = stats(doc);
        assert_eq!(s.aliases, 6);
        assert_eq!(s.root_fields, 6);
    }

    #[test]
    fn cost_multiplies_by_list_sizes() {
        // users(first: 5) { id orders(first: 3) { id } }: 1 + 5 * (1 + (1 + 3 * 1)) = 26.
        assert_eq!(
            stats("{ users(first: 5) { id orders(first: 3) { id } } }").cost,
            26
        );
        // A variable is resolved from the request, else from its default, else the default
        // list size (10).
        let doc = "query($n: Int = 4) { users(first: $n) { id } }";
        assert_eq!(analyze(doc, None).unwrap().cost, 5);
        assert_eq!(
            analyze(doc, Some(serde_json::json!({"n": 100})))
                .unwrap()
                .cost,
            101
        );
        assert_eq!(stats("query($m: Int) { users(first: $m) { id } }").cost, 11);
    }

    #[test]
    fn fragment_reuse_is_measured_without_expanding() {
        // Each level spreads the next twice: 2^30 leaf fields, measured in linear time.
        let mut doc = String::from("{ ...F0 }");
        for i in 0..30 {
            doc.push_str(&format!(
                " fragment F{i} on Q {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        doc.push_str(" fragment F30 on Q { a }");
        let s = stats(&doc);
        assert_eq!(s.root_fields, 1 << 30);
        assert_eq!(s.cost, 1 << 30);
    }

    #[test]
    fn introspection_is_seen_through_fragments() {
        assert!(
            stats("{ ...F } fragment F on Query { __schema { types { name } } }").introspection
        );
        assert!(stats("{ __type(name: \"User\") { name } }").introspection);
        assert!(!stats("{ users { __typename } }").introspection);
    }

    #[test]
    fn bad_fragments_and_operations_are_errors() {
        assert_eq!(
            analyze("{ ...Nope }", None),
            Err(AnalyzeError::UnknownFragment("Nope".into()))
        );
        assert!(matches!(
            analyze(
                "{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }",
                None
            ),
            Err(AnalyzeError::FragmentCycle(_))
        ));
        let doc = parse_query("query A { a } query B { b { c } }").unwrap();
        let model = CostModel::default();
        assert_eq!(
            analyze_document(&doc, Some("C"), None, &model),
            Err(AnalyzeError::UnknownOperation("C".into()))
        );
        assert_eq!(
            analyze_document(&doc, Some("A"), None, &model)
                .unwrap()
                .depth,
            1
        );
        assert_eq!(analyze_document(&doc, None, None, &model).unwrap().depth, 2);
    }
}
