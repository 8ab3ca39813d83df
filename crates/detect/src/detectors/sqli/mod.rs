//! SQL injection by lexical analysis, the idea behind libinjection: the value is tokenized as
//! SQL in the three contexts it may be pasted into (as is, inside a single-quoted string, inside
//! a double-quoted string), and the token sequence is classified. What makes a value SQL is
//! structure (a quote that closes and is followed by a boolean expression, a UNION SELECT, a
//! stacked statement, a call of a timing or file function), not the presence of a word such as
//! "select", so prose and names like O'Brien pass.

mod lexer;

use lexer::{Kind, Token, tokenize};

use super::{Boundary, Match};

/// Functions whose call is an attack in itself (timing, file access, out-of-band, error-based
/// extraction).
const DANGEROUS_FUNCTIONS: &[&str] = &[
    "sleep",
    "benchmark",
    "pg_sleep",
    "load_file",
    "extractvalue",
    "updatexml",
    "randomblob",
    "xp_cmdshell",
    "receive_message",
    "get_host_address",
    "get_host_name",
    "pg_read_file",
    "openrowset",
    "opendatasource",
    "sp_executesql",
    "sp_oacreate",
    "dbms_xmlgen",
    "query_to_xml",
    "lo_import",
    "pg_ls_dir",
    "name_const",
    "gtid_subset",
    "st_latfromgeohash",
    "xmltype",
    "utl_inaddr",
    "ctxsys",
    "json_depth",
    "json_keys",
    "make_set",
    "elt",
    "sqlite_version",
];

/// System variables whose mention is reconnaissance.
const SYSTEM_VARIABLES: &[&str] = &[
    "@@version",
    "@@datadir",
    "@@hostname",
    "@@basedir",
    "@@tmpdir",
    "@@servername",
    "@@spid",
    "@@language",
    "@@global",
];

/// Statement keywords that may follow a `;` in a stacked query.
const STATEMENTS: &[&str] = &[
    "select", "insert", "update", "delete", "drop", "create", "alter", "truncate", "exec",
    "execute", "declare", "shutdown", "waitfor", "grant", "revoke", "set", "begin", "load",
];

/// Keywords without which (and without quotes, `@`, `&&` or `||`; see `Detector::may_match`)
/// no classification below can fire: clause and logic keywords, statement starts, catalogs, and function names (which only
/// count before a `(`). The prefilter's condition; keep it in step with the classifier.
const GATE_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "xor",
    "union",
    "select",
    "order",
    "group",
    "having",
    "limit",
    "procedure",
    "into",
    "where",
    "not",
    "exec",
    "execute",
    "waitfor",
    "information_schema",
    "sysobjects",
    "syscolumns",
];

/// The prefilter's literals: [`GATE_KEYWORDS`] and statement starts as SQL words, function
/// names as SQL words in values with a `(`.
pub(crate) fn gate_words() -> impl Iterator<Item = (&'static str, Boundary)> {
    GATE_KEYWORDS
        .iter()
        .chain(STATEMENTS)
        .map(|w| (*w, Boundary::Sql))
        .chain(lexer::FUNCTIONS.iter().map(|w| (*w, Boundary::SqlCall)))
}

/// Classifies `input`; `None` when it does not read as an injection.
pub fn is_sql_injection(input: &str) -> Option<Match> {
    if !worth_tokenizing(input) {
        return None;
    }
    let tokens = tokenize(input);
    if let Some(m) = classify(&tokens, Context::AsIs) {
        return Some(m);
    }
    for quote in ['\'', '"'] {
        if let Some(pos) = first_unescaped(input, quote) {
            let offset = pos + 1;
            let rest = tokenize(&input[offset..]);
            if let Some(mut m) = classify(&rest, Context::AfterQuote) {
                m.start += offset;
                m.end += offset;
                // Show the quote that breaks out.
                m.start = m.start.min(pos);
                return Some(m);
            }
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// The value as is (numeric or unquoted context).
    AsIs,
    /// The value after its first quote, which closed a string.
    AfterQuote,
}

/// Cheap rejection: SQL needs punctuation or one of its few keywords.
fn worth_tokenizing(input: &str) -> bool {
    input.bytes().any(|b| b"'\"();=<>#-/@|&*+`".contains(&b))
        || input
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .any(|w| {
                let w = w.trim_start_matches(|c: char| c.is_ascii_digit());
                w.len() >= 2
                    && (GATE_KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
                        || STATEMENTS.iter().any(|k| k.eq_ignore_ascii_case(w)))
            })
}

fn first_unescaped(input: &str, quote: char) -> Option<usize> {
    input.find(quote)
}

fn m(tokens: &[Token], from: usize, to: usize, reason: &'static str) -> Option<Match> {
    let to = to.min(tokens.len().saturating_sub(1));
    Some(Match {
        reason,
        start: tokens[from].start,
        end: tokens[to.max(from)].end,
    })
}

fn classify(tokens: &[Token], context: Context) -> Option<Match> {
    if tokens.is_empty() {
        return None;
    }
    if context == Context::AfterQuote {
        if let Some(found) = after_break(tokens, 0, true) {
            return Some(found);
        }
        if let Some(found) = expression_then_comment(tokens) {
            return Some(found);
        }
    } else {
        // A value that starts with a logic operator continues a condition (`or 1=1`,
        // `OR '{"b":2}'::jsonb @> '{}'`).
        if tokens[0].kind == Kind::Logic
            && let Some(found) = after_break(tokens, 0, false)
        {
            return Some(found);
        }
        // A numeric context: the value starts with a number (possibly negative) and goes on as SQL.
        let first = usize::from(tokens[0].kind == Kind::Op && tokens[0].text == "-");
        if tokens.get(first).is_some_and(|t| t.kind == Kind::Num)
            && let Some(found) = after_break(tokens, first + 1, false)
        {
            return Some(found);
        }
    }
    anywhere(tokens)
}

/// After a closing quote: a short SQL expression (an operator, keyword or call) and then a
/// comment that cuts off the rest of the query (`x'&email--`, `user'collate nocase--`,
/// `admin'and unlikely(id)#`). The comment must be bare (`--`, `-- -`, `#`, `/*`), as injected
/// comments are, not prose after a dash.
fn expression_then_comment(tokens: &[Token]) -> Option<Match> {
    let last = tokens.len().checked_sub(1)?;
    let comment = &tokens[last];
    if comment.kind != Kind::Comment || last == 0 || last > 10 {
        return None;
    }
    let tail = comment.text.trim_start_matches(['-', '#', '/', '*']).trim();
    if tail.len() > 3 || tail.contains(|c: char| c.is_alphanumeric()) {
        return None;
    }
    // An operator or a call: a bare keyword and a word (`'collate foo--`) is too little.
    let sql = tokens[..last].iter().any(|t| {
        matches!(
            t.kind,
            Kind::Logic | Kind::Cmp | Kind::Op | Kind::Func | Kind::LParen
        )
    });
    if sql {
        return m(tokens, 0, last, "context break, expression and comment");
    }
    None
}

/// Skips `::type` casts starting at `i`.
fn skip_casts(tokens: &[Token], mut i: usize) -> usize {
    while text_at(tokens, i) == "::" && kind_at(tokens, i + 1).is_some() {
        i += 2;
    }
    i
}

fn kind_at(tokens: &[Token], i: usize) -> Option<Kind> {
    tokens.get(i).map(|t| t.kind)
}

fn text_at(tokens: &[Token], i: usize) -> &str {
    tokens.get(i).map_or("", |t| t.text.as_str())
}

fn is_operand(t: &Token) -> bool {
    matches!(
        t.kind,
        Kind::Num | Kind::Str { .. } | Kind::Word | Kind::Var
    ) || (t.kind == Kind::Keyword && matches!(t.text.as_str(), "true" | "false" | "null"))
}

fn is_literal(t: &Token) -> bool {
    matches!(t.kind, Kind::Num | Kind::Str { .. })
        || (t.kind == Kind::Keyword && matches!(t.text.as_str(), "true" | "false" | "null"))
}

/// Whether position `i` ends an expression: end of input, a comment, `;`, `)`, a logic operator.
fn ends_expression(tokens: &[Token], i: usize) -> bool {
    match kind_at(tokens, i) {
        None => true,
        Some(
            Kind::Comment | Kind::Semi | Kind::RParen | Kind::Logic | Kind::Str { closed: false },
        ) => true,
        Some(Kind::Keyword) => matches!(
            text_at(tokens, i),
            "union" | "order" | "group" | "limit" | "having" | "into"
        ),
        _ => false,
    }
}

/// What follows a context break (a closing quote, or the number that starts a numeric value).
fn after_break(tokens: &[Token], start: usize, quoted: bool) -> Option<Match> {
    let mut i = start;
    while kind_at(tokens, i) == Some(Kind::RParen) {
        i += 1;
    }
    let t = tokens.get(i)?;
    match t.kind {
        Kind::Logic => {
            let j = i + 1;
            let next = tokens.get(j)?;
            let hit = match next.kind {
                Kind::Func | Kind::LParen | Kind::Var => true,
                Kind::Keyword
                    if matches!(
                        next.text.as_str(),
                        "not" | "exists" | "select" | "case" | "if"
                    ) =>
                {
                    true
                }
                _ if is_literal(next) && {
                    // `or '{"b":2}'::jsonb <@ '{...}'`: a cast literal compared.
                    let k = skip_casts(tokens, j + 1);
                    k > j + 1 && kind_at(tokens, k) == Some(Kind::Cmp)
                } =>
                {
                    true
                }
                _ if is_operand(next) => {
                    // `' or 1=1`, `' or 'a'='a`, `' or true--`, `1 and 1 --`
                    (kind_at(tokens, j + 1) == Some(Kind::Cmp)
                        && tokens.get(j + 2).is_none_or(|t| {
                            is_operand(t)
                                || t.kind == Kind::Func
                                || t.kind == Kind::LParen
                                || matches!(t.text.as_str(), "all" | "any" | "some" | "select")
                        }))
                        || (kind_at(tokens, j + 1) == Some(Kind::Cmp)
                            && matches!(text_at(tokens, j + 1), "notnull" | "isnull"))
                        || (is_literal(next) && ends_expression(tokens, j + 1))
                        || (kind_at(tokens, j + 1) == Some(Kind::Op)
                            && tokens.get(j + 2).is_some_and(is_operand)
                            && kind_at(tokens, j + 3).is_some_and(|k| k == Kind::Cmp))
                        || (kind_at(tokens, j + 1) == Some(Kind::Keyword)
                            && matches!(text_at(tokens, j + 1), "between" | "in" | "not"))
                }
                _ => false,
            };
            if hit {
                return m(
                    tokens,
                    i,
                    j + 2,
                    "context break followed by a boolean expression",
                );
            }
        }
        Kind::Cmp if quoted && matches!(t.text.as_str(), "notnull" | "isnull") => {
            return m(tokens, i, i + 1, "context break followed by a null test");
        }
        Kind::Cmp if quoted => {
            let operand = tokens
                .get(i + 1)
                .is_some_and(|t| is_literal(t) || t.kind == Kind::Func || t.kind == Kind::Var)
                || (kind_at(tokens, i + 1) == Some(Kind::Word)
                    && matches!(kind_at(tokens, i + 2), Some(Kind::Comment | Kind::Semi)));
            if operand && ends_expression(tokens, i + 2) {
                return m(tokens, i, i + 2, "context break followed by a comparison");
            }
        }
        Kind::Op if t.text != "-" || quoted => {
            let next = tokens.get(i + 1)?;
            let subquery = next.kind == Kind::LParen && text_at(tokens, i + 2) == "select";
            if next.kind == Kind::Func
                || next.kind == Kind::Var
                || subquery
                || (next.kind == Kind::Keyword && next.text == "select")
            {
                return m(tokens, i, i + 2, "context break followed by an expression");
            }
        }
        Kind::Semi => {
            if let Some(found) = statement_at(tokens, i + 1) {
                return Some(found);
            }
            if quoted && matches!(kind_at(tokens, i + 1), None | Some(Kind::Comment)) {
                return m(tokens, i, i + 1, "context break ending the statement");
            }
            // `'; select ...`, `"; exec ...`: a string closed, the statement ended, and a new one
            // started, even if what follows is cut short.
            if quoted
                && kind_at(tokens, i + 1) == Some(Kind::Keyword)
                && STATEMENTS.contains(&text_at(tokens, i + 1))
            {
                return m(
                    tokens,
                    i,
                    i + 1,
                    "context break followed by a new statement",
                );
            }
        }
        Kind::Comment if quoted => {
            return m(
                tokens,
                start.saturating_sub(0),
                i,
                "context break followed by a comment",
            );
        }
        Kind::Keyword => {
            let next = text_at(tokens, i + 1);
            let hit = match t.text.as_str() {
                "union" => {
                    matches!(next, "select" | "all" | "distinct" | "(")
                        || kind_at(tokens, i + 1) == Some(Kind::Comment)
                }
                "order" | "group" => next == "by",
                "having" | "limit" | "procedure" => kind_at(tokens, i + 1).is_some_and(|k| {
                    matches!(k, Kind::Num | Kind::Word | Kind::Func | Kind::Keyword)
                }),
                "into" => matches!(next, "outfile" | "dumpfile"),
                "where" => true,
                "not" => {
                    kind_at(tokens, i + 1).is_some_and(|k| matches!(k, Kind::Cmp | Kind::LParen))
                        || matches!(next, "in" | "between" | "exists")
                }
                _ => false,
            };
            if hit {
                return m(tokens, i, i + 1, "context break followed by a clause");
            }
        }
        _ => {}
    }
    None
}

/// A statement starting at `i` (after a `;`): only real statement shapes count, so prose after a
/// semicolon ("; update your profile") does not.
fn statement_at(tokens: &[Token], i: usize) -> Option<Match> {
    let t = tokens.get(i)?;
    if t.kind != Kind::Keyword || !STATEMENTS.contains(&t.text.as_str()) {
        return None;
    }
    let next = tokens.get(i + 1);
    let next_text = text_at(tokens, i + 1);
    let hit = match t.text.as_str() {
        "drop" | "create" | "alter" | "truncate" => {
            matches!(
                next_text,
                "table"
                    | "database"
                    | "procedure"
                    | "function"
                    | "user"
                    | "view"
                    | "index"
                    | "schema"
                    | "trigger"
            )
        }
        "delete" => next_text == "from",
        "insert" => next_text == "into",
        "update" => next.is_some_and(|n| n.kind == Kind::Word) && text_at(tokens, i + 2) == "set",
        "select" => select_at(tokens, i).is_some(),
        "exec" | "execute" => next
            .is_some_and(|n| matches!(n.kind, Kind::Word | Kind::Func | Kind::Var | Kind::LParen)),
        "declare" | "set" => next.is_some_and(|n| n.kind == Kind::Var),
        "shutdown" => matches!(
            kind_at(tokens, i + 1),
            None | Some(Kind::Comment | Kind::Semi) | Some(Kind::Keyword)
        ),
        "waitfor" => next_text == "delay" || next_text == "time",
        "grant" | "revoke" => {
            next.is_some_and(|n| n.kind == Kind::Keyword || n.kind == Kind::Word)
                && tokens[i..]
                    .iter()
                    .take(8)
                    .any(|t| t.text == "to" || t.text == "on")
        }
        "begin" => next_text == "declare",
        "load" => next_text == "data",
        _ => false,
    };
    if hit {
        m(tokens, i.saturating_sub(1), i + 1, "stacked statement")
    } else {
        None
    }
}

/// A SELECT whose item list or FROM clause is SQL rather than prose.
fn select_at(tokens: &[Token], i: usize) -> Option<Match> {
    let mut j = i + 1;
    while matches!(text_at(tokens, j), "all" | "distinct" | "top")
        || (kind_at(tokens, j) == Some(Kind::Num) && text_at(tokens, j - 1) == "top")
    {
        j += 1;
    }
    let first = tokens.get(j);
    let first = first?;
    // `select 1,2,3`, `select @@version`, `select sleep(5)`, `select * from`, `select(0)from`.
    let expression_item = matches!(
        first.kind,
        Kind::Num | Kind::Func | Kind::Var | Kind::Str { .. } | Kind::LParen
    ) || (first.kind == Kind::Op && first.text == "*");
    if expression_item {
        let mut k = j + 1;
        if first.kind == Kind::LParen || first.kind == Kind::Func {
            k = matching_paren(tokens, if first.kind == Kind::Func { j + 1 } else { j })
                .map_or(tokens.len(), |p| p + 1);
        }
        let follows = tokens.get(k);
        let ok = match follows {
            None => first.kind != Kind::LParen || k > j + 2,
            Some(f) => {
                matches!(
                    f.kind,
                    Kind::Comma | Kind::Comment | Kind::RParen | Kind::Semi | Kind::Logic
                ) || (f.kind == Kind::Keyword
                    && matches!(
                        f.text.as_str(),
                        "from" | "union" | "into" | "where" | "limit" | "as"
                    ))
                    || (f.kind == Kind::Op && first.kind != Kind::Op)
                    || f.kind == Kind::Cmp
            }
        };
        if ok {
            return m(tokens, i, k, "select statement");
        }
    }
    // `select name from users`, `select a,b from t where`.
    let limit = (j + 24).min(tokens.len());
    let from = (j..limit).find(|&k| tokens[k].kind == Kind::Keyword && tokens[k].text == "from")?;
    let items = &tokens[j..from];
    let list_like = !items.is_empty()
        && items
            .iter()
            .all(|t| matches!(t.kind, Kind::Word | Kind::Comma | Kind::Dot | Kind::Keyword))
        && items.iter().filter(|t| t.kind == Kind::Word).count()
            <= items.iter().filter(|t| t.kind == Kind::Comma).count() + 1;
    let table = tokens.get(from + 1);
    let table_ok = table.is_some_and(|t| matches!(t.kind, Kind::Word | Kind::Keyword | Kind::Var))
        || kind_at(tokens, from + 1) == Some(Kind::LParen);
    let mut after = from + 2;
    while kind_at(tokens, after) == Some(Kind::Dot) {
        after += 2;
    }
    let clause_follows = match tokens.get(after) {
        None => true,
        Some(t) => {
            matches!(
                t.kind,
                Kind::Comment
                    | Kind::Semi
                    | Kind::RParen
                    | Kind::Logic
                    | Kind::Str { closed: false }
            ) || (t.kind == Kind::Keyword
                && matches!(
                    t.text.as_str(),
                    "where" | "limit" | "order" | "group" | "union" | "join" | "having" | "into"
                ))
        }
    };
    if list_like && table_ok && clause_follows {
        return m(tokens, i, after, "select statement");
    }
    None
}

fn matching_paren(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, t) in tokens.iter().enumerate().skip(open) {
        match t.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Shapes that are SQL wherever they appear.
fn anywhere(tokens: &[Token]) -> Option<Match> {
    for (i, t) in tokens.iter().enumerate() {
        match t.kind {
            Kind::Keyword if t.text == "union" => {
                let mut j = i + 1;
                while matches!(text_at(tokens, j), "all" | "distinct")
                    || kind_at(tokens, j) == Some(Kind::LParen)
                    || kind_at(tokens, j) == Some(Kind::Comment)
                {
                    j += 1;
                }
                if text_at(tokens, j) == "select" {
                    return m(tokens, i, j, "union select");
                }
            }
            Kind::Keyword if t.text == "select" => {
                // A select that follows SQL punctuation (`(select`, `=select`, `;select`) or starts
                // the value.
                let prev = i.checked_sub(1).and_then(|p| tokens.get(p));
                let placed = prev.is_none_or(|p| {
                    matches!(
                        p.kind,
                        Kind::LParen
                            | Kind::Cmp
                            | Kind::Op
                            | Kind::Logic
                            | Kind::Comma
                            | Kind::Semi
                            | Kind::Str { .. }
                            | Kind::Keyword
                    )
                });
                if placed && let Some(found) = select_at(tokens, i) {
                    return Some(found);
                }
            }
            Kind::Semi => {
                if let Some(found) = statement_at(tokens, i + 1) {
                    return Some(found);
                }
            }
            Kind::Func if DANGEROUS_FUNCTIONS.contains(&t.text.as_str()) => {
                let arg = tokens.get(i + 2);
                // `sleep(` at the very end is a probe for the function itself.
                let sql_arg = arg.is_none()
                    || arg.is_some_and(|a| {
                        matches!(
                            a.kind,
                            Kind::Num
                                | Kind::Str { .. }
                                | Kind::Var
                                | Kind::Func
                                | Kind::LParen
                                | Kind::RParen
                        ) || (a.kind == Kind::Keyword && a.text == "select")
                            || (a.kind == Kind::Op && a.text == "~")
                    });
                if sql_arg {
                    return m(tokens, i, i + 3, "call of a dangerous SQL function");
                }
            }
            Kind::Keyword
                if matches!(t.text.as_str(), "exec" | "execute")
                    && tokens.get(i + 1).is_some_and(|n| {
                        n.text.starts_with("xp_") || n.text.starts_with("sp_") || n.text == "master"
                    }) =>
            {
                return m(tokens, i, i + 1, "stored procedure execution");
            }
            Kind::Keyword
                if t.text == "waitfor" && matches!(text_at(tokens, i + 1), "delay" | "time") =>
            {
                return m(tokens, i, i + 2, "waitfor delay");
            }
            Kind::Keyword
                if (t.text == "information_schema"
                    || t.text == "sysobjects"
                    || t.text == "syscolumns")
                    && (matches!(kind_at(tokens, i + 1), Some(Kind::Dot))
                        || i > 0 && text_at(tokens, i - 1) == "from") =>
            {
                return m(tokens, i, i + 2, "system catalog access");
            }
            Kind::Var if SYSTEM_VARIABLES.iter().any(|v| t.text.starts_with(v)) => {
                return m(tokens, i, i, "system variable");
            }
            Kind::Keyword
                if t.text == "into" && matches!(text_at(tokens, i + 1), "outfile" | "dumpfile") =>
            {
                return m(tokens, i, i + 2, "select into file");
            }
            Kind::Logic => {
                // Tautologies: two literals compared (`or 1=1`, `and 'a'='a'`, `|| 2>1`).
                let (a, op, b) = (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3));
                if let (Some(a), Some(op), Some(b)) = (a, op, b) {
                    let literal_pair = is_literal(a) && is_literal(b);
                    let same_word =
                        a.kind == Kind::Word && b.kind == Kind::Word && a.text == b.text;
                    if op.kind == Kind::Cmp
                        && (literal_pair || same_word)
                        && ends_expression(tokens, i + 4)
                    {
                        return m(tokens, i, i + 3, "tautology");
                    }
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqli(s: &str) -> bool {
        is_sql_injection(s).is_some()
    }

    #[test]
    fn detects_attacks() {
        for attack in [
            "1' or '1'='1",
            "admin'--",
            "admin' #",
            "' OR 1=1 -- -",
            "1 or 1=1",
            "-1 union all select 1,2,@@version",
            "1) AND (SELECT 1 FROM (SELECT SLEEP(5))a)",
            "'; DROP TABLE users; --",
            "1; exec master..xp_cmdshell 'ping 10.0.0.1'",
            "(select(0)from(select(sleep(15)))v)/*'+(select(0)from(select(sleep(15)))v)+'\"+(select(0)from(select(sleep(15)))v)+\"*/",
            "-1134') OR JSON_EXTRACT('{\"aKER\": 9648}', '$.aKER') = 9648*7799 AND ('QlYa' LIKE 'QlYa",
            "x' AND extractvalue(1,concat(0x7e,version()))-- ",
            "1' waitfor delay '0:0:5'--",
            "' UNION/**/SELECT password FROM users--",
            "/*!50000union*/ /*!50000select*/ 1,2",
            "foo'||(select extractvalue(xmltype('<x/>'),'/l') from dual)||'",
            "id'not like id--",
            "1 and sleep(5)",
            "' or true--",
            "select name from users",
            "\" or \"\"=\"",
            "1' order by 3--",
            "x'&email--",
            "admin@juice-sh.op'and unlikely (id)--",
            "x' mod id--",
            " exec xp_cmdshell",
            "';select password",
            "OR '{\"b\":2}'::jsonb <@ '{\"a\":1}'::jsonb",
        ] {
            assert!(sqli(attack), "missed: {attack}");
        }
    }

    #[test]
    fn passes_benign() {
        for benign in [
            "O'Brien",
            "Please select the drop down from the menu",
            "union was a great select",
            "_SELECT all the rows of fromDate = @-_",
            "DELETE 75oBC$",
            "I'd like to drop by and select a few items from your store",
            "Rock 'n' roll and blues",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
            "' for",
            "'ortrue",
            "Left (WA, RR), following wood edge south (‘Restrictive Byway’/RB) for ½ mile",
            "One quarter (24%) of people have had an affair",
            "the users' and the admins' data",
            "{\"query\": \"from the list\"}",
            "It's 5 o'clock; time to select a dinner from the menu",
            "SELECT is my favourite keyword",
            "O'Brien and sons -- the best",
            "it's fine; select one you like",
            "user'collate foo--",
            "execute the plan",
        ] {
            assert!(
                !sqli(benign),
                "false positive: {benign}: {:?}",
                is_sql_injection(benign)
            );
        }
    }
}
