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
    // Values made of a SQL fragment only (see `whole_value`).
    "is",
    "like",
    "rlike",
    "ilike",
    "regexp",
    "glob",
    "notnull",
    "isnull",
    "in",
    "values",
    "case",
    "except",
    "intersect",
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
    // Typographic quotes (‘ ’ ´ “ ”) are folded onto ASCII quotes by many applications and
    // drivers ("best fit" mappings): read them as quotes. The replacement keeps byte offsets.
    let folded;
    let input = if input.len() > 1 && !input.is_ascii() && input.contains(TYPOGRAPHIC_QUOTES) {
        folded = fold_quotes(input);
        folded.as_str()
    } else {
        input
    };
    if !worth_tokenizing(input) {
        return None;
    }
    let lower = input.to_ascii_lowercase();
    let tokens = tokenize(input, &lower);
    if let Some(m) = classify(&tokens, Context::AsIs) {
        return Some(m);
    }
    if let Some(m) = whole_value(&tokens) {
        return Some(m);
    }
    for quote in ['\'', '"', '`'] {
        let Some(pos) = first_unescaped(input, quote) else {
            continue;
        };
        let offset = pos + quote.len_utf8();
        let rest = tokenize(&input[offset..], &lower[offset..]);
        let shift = |mut m: Match| {
            m.start += offset;
            m.end += offset;
            // Show the quote that breaks out.
            m.start = m.start.min(pos);
            m
        };
        if quote != '`'
            && let Some(m) = classify(&rest, Context::AfterQuote)
        {
            return Some(shift(m));
        }
        if let Some(m) = quote_at_start(&input[..pos], &input[offset..], quote, &rest) {
            return Some(shift(m));
        }
    }
    None
}

pub(crate) const TYPOGRAPHIC_QUOTES: [char; 9] = [
    '\u{2018}', '\u{2019}', '\u{201a}', '\u{201b}', '\u{00b4}', '\u{2032}', '\u{201c}', '\u{201d}',
    '\u{2033}',
];

/// `input` with typographic quotes replaced by ASCII quotes padded with spaces to the same
/// byte length.
fn fold_quotes(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        let ascii = match c {
            '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' | '\u{00b4}' | '\u{2032}' => '\'',
            '\u{201c}' | '\u{201d}' | '\u{2033}' => '"',
            c => {
                out.push(c);
                continue;
            }
        };
        out.push(ascii);
        for _ in 1..c.len_utf8() {
            out.push(' ');
        }
    }
    out
}

/// A value that opens with a quote (nothing, a number or an escape before it) breaks out of a
/// string at once: a logic operator or a statement keyword right after it is SQL (`' or abc!`,
/// `1' xor x`, `'union a`, `\'and`), where prose with an apostrophe (`parents' or yours`, `l'or
/// du Rhin`) has words before the quote.
fn quote_at_start(prefix: &str, after: &str, quote: char, rest: &[Token]) -> Option<Match> {
    let escaped = prefix.ends_with('\\');
    let at_start = prefix.trim().is_empty() || prefix.bytes().all(|b| b.is_ascii_digit());
    if !(escaped || at_start) {
        return None;
    }
    let first = rest.first()?;
    match first.kind {
        Kind::Logic => {
            let operand = rest.get(1).is_some_and(|t| {
                is_operand(t)
                    || matches!(t.kind, Kind::Func | Kind::LParen | Kind::Op | Kind::Keyword)
            });
            // After an escaped quote (`\' or ...`) anything goes: the backslash is there to
            // defeat an escaping routine, which no prose does.
            if operand || escaped {
                return m(rest, 0, 1, "quote followed by a logic operator");
            }
        }
        Kind::Keyword
            if matches!(
                first.text,
                "union"
                    | "select"
                    | "alter"
                    | "drop"
                    | "insert"
                    | "update"
                    | "delete"
                    | "exec"
                    | "execute"
                    | "create"
                    | "truncate"
                    | "declare"
                    | "shutdown"
                    | "waitfor"
            ) && !after.contains(quote)
                && (quote != '`' || escaped) =>
        {
            return m(rest, 0, 1, "quote followed by a statement keyword");
        }
        Kind::Keyword
            if first.text == "as"
                && rest
                    .get(1)
                    .is_some_and(|t| matches!(t.kind, Kind::Word | Kind::Str { .. }))
                && text_at(rest, 2) == "from" =>
        {
            return m(rest, 0, 2, "quote followed by a clause");
        }
        Kind::Semi | Kind::Comment if escaped => {
            return m(rest, 0, 0, "escaped quote breaking the string");
        }
        _ => {}
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
/// The punctuation that makes any value worth tokenizing (see [`worth_tokenizing`]), as a
/// table: a look-up per byte instead of a search of the set.
static SQL_PUNCTUATION: [bool; 256] = {
    let mut table = [false; 256];
    let set = b"'\"();=<>#-/@|&*+`!:?";
    let mut i = 0;
    while i < set.len() {
        table[set[i] as usize] = true;
        i += 1;
    }
    table
};

fn worth_tokenizing(input: &str) -> bool {
    input.bytes().any(|b| SQL_PUNCTUATION[usize::from(b)])
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
        // `'''or 1`: empty strings glued to the closing quote change nothing.
        let empties = tokens
            .iter()
            .take_while(|t| matches!(t.kind, Kind::Str { closed: true }) && t.text.len() == 2)
            .count();
        if empties > 0
            && let Some(found) = after_break(tokens, empties, true)
        {
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
    // `user'collate nocase--`, ``'collate`utf8mb4_bin`--``: a COLLATE clause (a keyword only
    // SQL has) naming a collation, then the rest of the query commented out.
    if last == 2
        && tokens[0].kind == Kind::Keyword
        && tokens[0].text == "collate"
        && matches!(tokens[1].kind, Kind::Word | Kind::Str { closed: true })
        && is_collation(tokens[1].text)
    {
        return m(tokens, 0, last, "context break, collation and comment");
    }
    None
}

/// A collation name: SQLite's built-ins, the C/POSIX locales, or a charset-qualified name with
/// a sensitivity suffix (`utf8mb4_general_ci`, `latin1_bin`, `SQL_Latin1_General_CP1_CI_AS`).
fn is_collation(text: &str) -> bool {
    let name = text
        .trim_matches(|c: char| matches!(c, '`' | '"' | '\'' | '\\'))
        .to_ascii_lowercase();
    matches!(
        name.as_str(),
        "nocase" | "binary" | "rtrim" | "c" | "posix" | "default" | "ucs_basic" | "unicode"
    ) || (name.contains('_')
        && ["_ci", "_cs", "_bin", "_ai", "_as", "_ks", "_ws"]
            .iter()
            .any(|s| name.ends_with(s)))
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

fn text_at<'a>(tokens: &[Token<'a>], i: usize) -> &'a str {
    tokens.get(i).map_or("", |t| t.text)
}

fn is_operand(t: &Token) -> bool {
    matches!(
        t.kind,
        Kind::Num | Kind::Str { .. } | Kind::Word | Kind::Var
    ) || (t.kind == Kind::Keyword && matches!(t.text, "true" | "false" | "null"))
}

fn is_literal(t: &Token) -> bool {
    matches!(t.kind, Kind::Num | Kind::Str { .. })
        || (t.kind == Kind::Keyword && matches!(t.text, "true" | "false" | "null"))
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
                    if matches!(next.text, "not" | "exists" | "select" | "case" | "if") =>
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
                                || matches!(t.text, "all" | "any" | "some" | "select")
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
        Kind::Cmp if quoted && matches!(t.text, "notnull" | "isnull") => {
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
            let hit = match t.text {
                "union" => {
                    matches!(next, "select" | "all" | "distinct" | "(")
                        || kind_at(tokens, i + 1) == Some(Kind::Comment)
                }
                "order" | "group" => next == "by",
                "having" | "limit" | "procedure" => kind_at(tokens, i + 1).is_some_and(|k| {
                    matches!(k, Kind::Num | Kind::Word | Kind::Func | Kind::Keyword)
                }),
                "into" => matches!(next, "outfile" | "dumpfile"),
                "as" => {
                    tokens
                        .get(i + 1)
                        .is_some_and(|t| matches!(t.kind, Kind::Word | Kind::Str { .. }))
                        && text_at(tokens, i + 2) == "from"
                }
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
    if t.kind != Kind::Keyword || !STATEMENTS.contains(&t.text) {
        return None;
    }
    let next = tokens.get(i + 1);
    let next_text = text_at(tokens, i + 1);
    let hit = match t.text {
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
    if first.kind == Kind::Word && DANGEROUS_FUNCTIONS.contains(&first.text) {
        return m(tokens, i, j, "select statement");
    }
    // An unterminated string is where the value ends, not an item (`Select all' button`).
    let expression_item = matches!(
        first.kind,
        Kind::Num | Kind::Func | Kind::Var | Kind::Str { closed: true } | Kind::LParen
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
                    && matches!(f.text, "from" | "union" | "into" | "where" | "limit" | "as"))
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
                    t.text,
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

/// Whether position `i` names a SQL type (`int`, `jsonb`, `double precision`).
fn cast_target(tokens: &[Token], i: usize) -> bool {
    tokens
        .get(i)
        .is_some_and(|t| !matches!(t.kind, Kind::Str { .. }) && lexer::SQL_TYPES.contains(&t.text))
}

/// A PostgreSQL JSON/containment operator at `i` followed by an operand.
fn json_operator_at(tokens: &[Token], i: usize) -> bool {
    let op = text_at(tokens, i);
    let json_op = matches!(
        op,
        "@>" | "<@" | "?" | "?|" | "?&" | "@?" | "@@" | "->" | "->>" | "#>" | "#>>"
    );
    json_op
        && tokens
            .get(i + 1)
            .is_some_and(|t| matches!(t.kind, Kind::Str { .. } | Kind::Num) || t.text == "array")
}

/// A call of a SQL function whose arguments are SQL: another SQL function call, a hex literal
/// or a subquery (`concat(0x7e,version())`, `encode(lo_get(16400),'base64')`,
/// `json_search(json_array(password),...)`).
fn function_shape(tokens: &[Token], i: usize) -> Option<Match> {
    if kind_at(tokens, i + 1) != Some(Kind::LParen) {
        return None;
    }
    let end = matching_paren(tokens, i + 1).unwrap_or(tokens.len());
    let args = &tokens[i + 2..end.min(tokens.len())];
    let sql_arg = args.iter().enumerate().any(|(k, a)| {
        (a.kind == Kind::Func && args.get(k + 1).is_some_and(|p| p.kind == Kind::LParen))
            || (a.kind == Kind::Num && a.text.starts_with("0x") && a.text.len() > 2)
            || (a.kind == Kind::Keyword && a.text == "select")
    });
    if sql_arg {
        return m(tokens, i, end, "nested SQL function call");
    }
    None
}

/// Shapes that are SQL when they make up the whole value: a fragment of a statement as an
/// attacker probes with it (`IS NULL`, `in (0,1)`, `1=1`, `VALUES ('a', 'b')`, `) AS t FROM`,
/// `ALTER TABLE x ...`, `ABS(`). Prose does not consist of SQL tokens only: two plain words in
/// a row end the check.
fn whole_value(tokens: &[Token]) -> Option<Match> {
    let first = tokens.first()?;
    if let Some(found) = statement_start(tokens) {
        return Some(found);
    }
    if first.kind == Kind::RParen {
        if let Some(found) = after_break(tokens, 0, true) {
            return Some(found);
        }
        let mut i = 0;
        while kind_at(tokens, i) == Some(Kind::RParen) {
            i += 1;
        }
        let next = tokens.get(i + 1);
        let hit = match (kind_at(tokens, i), text_at(tokens, i)) {
            (Some(Kind::Keyword), "as") => {
                next.is_some_and(|t| matches!(t.kind, Kind::Word | Kind::Str { .. }))
                    && text_at(tokens, i + 2) == "from"
            }
            (Some(Kind::Keyword), "from" | "where" | "union") => true,
            (Some(Kind::Keyword), "when") => tokens[i..].iter().take(4).any(|t| t.text == "then"),
            (Some(Kind::Cmp), _) => next.is_some_and(|t| {
                matches!(
                    t.kind,
                    Kind::LParen | Kind::Str { .. } | Kind::Num | Kind::Func
                )
            }),
            _ => false,
        };
        if hit {
            return m(tokens, 0, i + 2, "closing parenthesis followed by a clause");
        }
    }
    // A value that is one SQL operator (`<=>`, `<>`, `||`, `!=`, `XOR`, `RLIKE`): a probe for
    // which operators reach the query unfiltered. Single characters and English words
    // (`like`, `is`, `and`) are left alone.
    if let [only] = tokens
        && matches!(only.kind, Kind::Cmp | Kind::Logic | Kind::Op)
        && (matches!(only.text, "xor" | "regexp" | "rlike")
            || (only.text.len() >= 2 && !only.text.bytes().any(|b| b.is_ascii_alphanumeric())))
    {
        return m(tokens, 0, 0, "SQL operator");
    }
    if tokens.len() > 16
        || tokens
            .windows(2)
            .any(|w| w[0].kind == Kind::Word && w[1].kind == Kind::Word)
        || tokens.iter().any(|t| t.kind == Kind::Other)
    {
        return None;
    }
    let n = tokens.len();
    let next_text = text_at(tokens, 1);
    let hit = match (first.kind, first.text) {
        // `VALUES ('a', 'b')`
        (Kind::Keyword | Kind::Func, "values") => {
            kind_at(tokens, 1) == Some(Kind::LParen) && tokens.iter().skip(2).any(is_literal)
        }
        // `ABS(`, `database(`, `version()`: a probe for a function name; `if(2=`: a condition
        // in an unclosed call.
        (Kind::Func, _) => {
            kind_at(tokens, 1) == Some(Kind::LParen)
                && (n == 2
                    || (n == 3 && tokens[2].kind == Kind::RParen)
                    || (matching_paren(tokens, 1).is_none()
                        && tokens[2..].iter().any(|t| t.kind == Kind::Cmp)))
        }
        // `from `db`.`t` limit`, `FROM t WHERE name="x"`
        (Kind::Keyword, "from") => {
            let mut k = 2;
            while kind_at(tokens, k) == Some(Kind::Dot) {
                k += 2;
            }
            kind_at(tokens, 1) == Some(Kind::Word)
                && matches!(
                    text_at(tokens, k),
                    "where" | "limit" | "order" | "group" | "join" | "union" | "having"
                )
        }
        // `; select`, `;drop`: a new statement probed for.
        (Kind::Semi, _) => {
            tokens
                .get(1)
                .is_some_and(|t| t.kind == Kind::Keyword && STATEMENTS.contains(&t.text))
                && tokens
                    .get(2)
                    .is_none_or(|t| matches!(t.kind, Kind::Op | Kind::Other))
        }
        // `IS NULL`, `LIKE NULL`, `not regexp '2'`
        (Kind::Cmp, "is" | "like" | "rlike" | "regexp") | (Kind::Keyword, "not") => {
            let mut j = 1;
            while matches!(text_at(tokens, j), "not" | "like" | "regexp" | "rlike") {
                j += 1;
            }
            j == n - 1 && is_literal(&tokens[j])
        }
        // `in (0,1)`, `IN (815914, 815913)`
        (Kind::Keyword, "in") => {
            kind_at(tokens, 1) == Some(Kind::LParen)
                && tokens.iter().any(|t| t.kind == Kind::Comma)
                && matches!(tokens.last().map(|t| t.kind), Some(Kind::RParen))
        }
        // `HAVING COUNT(id) > 5`, `having 1=`
        (Kind::Keyword, "having") => tokens.iter().any(|t| t.kind == Kind::Cmp),
        // `ORDER BY` alone or with a column number
        (Kind::Keyword, "order" | "group") => {
            next_text == "by"
                && (n == 2
                    || (n == 3 && tokens[2].kind == Kind::Num)
                    || tokens.get(3).is_some_and(|t| {
                        matches!(t.kind, Kind::Comma | Kind::Comment)
                            || matches!(t.text, "asc" | "desc" | "limit")
                    }))
        }
        (Kind::Keyword, "case") => next_text == "when" && tokens.iter().any(|t| t.text == "then"),
        (Kind::Keyword, "procedure") => matches!(next_text, "analyse" | "analyze"),
        (Kind::Keyword, "except" | "intersect") => {
            matches!(next_text, "select" | "values") || kind_at(tokens, 1) == Some(Kind::Op)
        }
        _ => false,
    };
    if hit {
        return m(tokens, 0, n, "SQL fragment");
    }
    // `1=1`, `11!=1`, `b,1=1`, `'admin', '1'='1'`, `42 like 42`, `1 is not 2`: literals compared
    // (after an optional list of operands).
    let mut i = 0;
    while tokens.get(i).is_some_and(is_operand) && kind_at(tokens, i + 1) == Some(Kind::Comma) {
        i += 2;
    }
    if let Some(a) = tokens.get(i)
        && is_literal(a)
    {
        let mut j = i + 1;
        if text_at(tokens, j) == "not" {
            j += 1;
        }
        // `123<456` is arithmetic; equality, pattern and null tests are probes.
        let ordering = matches!(
            tokens.get(j).map(|t| t.text),
            Some("<" | ">" | "<=" | ">=" | ":=")
        );
        if kind_at(tokens, j) == Some(Kind::Cmp) && !ordering {
            j += 1;
            if text_at(tokens, j) == "not" {
                j += 1;
            }
            if j == n - 1 && is_literal(&tokens[j]) {
                return m(tokens, 0, n, "literals compared");
            }
        }
    }
    // `hash = 'abc', 0x1a`, `product = 'item', (5)`: a SET list.
    if n >= 5
        && first.kind == Kind::Word
        && text_at(tokens, 1) == "="
        && is_literal(&tokens[2])
        && tokens[3].kind == Kind::Comma
        && matches!(tokens[4].kind, Kind::Num | Kind::Str { .. } | Kind::LParen)
    {
        return m(tokens, 0, n, "assignment list");
    }
    None
}

/// A statement that starts the value, in a shape prose does not take (`ALTER TABLE `t` ...`,
/// `DELETE FROM users;--`, `declare @b`, `SET @x`, `EXECUTE IMMEDIATE "`).
fn statement_start(tokens: &[Token]) -> Option<Match> {
    let t = tokens.first()?;
    if t.kind != Kind::Keyword {
        return None;
    }
    let next = text_at(tokens, 1);
    // After the object name: the end, punctuation or a keyword, not a second plain word.
    let object_then = |k: usize| {
        tokens.get(k).is_some_and(|o| {
            matches!(
                o.kind,
                Kind::Word | Kind::Keyword | Kind::Func | Kind::Str { .. }
            )
        }) && (tokens.get(k).is_some_and(|o| o.text.starts_with('`'))
            || tokens
                .get(k + 1)
                .is_none_or(|a| !matches!(a.kind, Kind::Word) || a.text.starts_with('`')))
    };
    let hit = match t.text {
        "drop" | "create" | "alter" | "truncate" => {
            matches!(
                next,
                "table"
                    | "database"
                    | "procedure"
                    | "function"
                    | "view"
                    | "index"
                    | "schema"
                    | "trigger"
                    | "user"
            ) && object_then(2)
                || (matches!(t.text, "drop" | "truncate")
                    && kind_at(tokens, 1) == Some(Kind::Word)
                    && matches!(kind_at(tokens, 2), Some(Kind::Semi | Kind::Comment)))
        }
        "delete" => next == "from" && object_then(2),
        "insert" => next == "into" && object_then(2),
        "update" => kind_at(tokens, 1) == Some(Kind::Word) && text_at(tokens, 2) == "set",
        "declare" | "set" => kind_at(tokens, 1) == Some(Kind::Var),
        "waitfor" => matches!(next, "delay" | "time"),
        _ => false,
    };
    if hit {
        return m(tokens, 0, 2, "statement");
    }
    None
}

/// Shapes that are SQL wherever they appear.
fn anywhere(tokens: &[Token]) -> Option<Match> {
    for (i, t) in tokens.iter().enumerate() {
        match t.kind {
            Kind::Op if t.text == "::" && i > 0 && cast_target(tokens, i + 1) => {
                let before = &tokens[i - 1];
                if matches!(
                    before.kind,
                    Kind::Str { .. } | Kind::Num | Kind::Word | Kind::RParen | Kind::Var
                ) {
                    return m(tokens, i - 1, i + 1, "type cast");
                }
            }
            Kind::Str { .. } if json_operator_at(tokens, skip_casts(tokens, i + 1)) => {
                return m(tokens, i, i + 2, "JSON operator expression");
            }
            // `'{"a":2}' < '$.c[2].f' = 7`: a chain of comparisons between quoted literals.
            Kind::Str { closed: true }
                if kind_at(tokens, i + 1) == Some(Kind::Cmp)
                    && matches!(kind_at(tokens, i + 2), Some(Kind::Str { closed: true }))
                    && kind_at(tokens, i + 3) == Some(Kind::Cmp)
                    && tokens.get(i + 4).is_some_and(is_literal) =>
            {
                return m(tokens, i, i + 4, "chained comparison of literals");
            }
            Kind::Func
                if !DANGEROUS_FUNCTIONS.contains(&t.text)
                    && function_shape(tokens, i).is_some() =>
            {
                return function_shape(tokens, i);
            }
            Kind::Keyword
                if t.text == "case"
                    && i > 0
                    && (tokens[i - 1].kind == Kind::LParen
                        || matches!(tokens[i - 1].text, "select" | "," | "="))
                    && (text_at(tokens, i + 1) == "when" || i + 1 == tokens.len()) =>
            {
                return m(tokens, i - 1, i + 1, "case expression");
            }
            Kind::Logic
                if kind_at(tokens, i + 1) == Some(Kind::Comment)
                    && i > 0
                    && is_literal(&tokens[i - 1]) =>
            {
                return m(tokens, i - 1, i + 1, "logic operator cut by a comment");
            }
            Kind::Keyword
                if t.text == "having"
                    && kind_at(tokens, i + 1) == Some(Kind::Func)
                    && tokens[i..].iter().take(12).any(|t| t.kind == Kind::Cmp) =>
            {
                return m(tokens, i, i + 2, "having clause");
            }
            Kind::Keyword
                if matches!(t.text, "exec" | "execute")
                    && text_at(tokens, i + 1) == "immediate" =>
            {
                return m(tokens, i, i + 1, "dynamic SQL execution");
            }
            Kind::Keyword if t.text == "union" => {
                let mut j = i + 1;
                // `union+all+select`: a `+` where the URL layer that turns it into a space
                // was skipped (paths, JSON) still separates the words for many lexers.
                while matches!(text_at(tokens, j), "all" | "distinct" | "+")
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
            Kind::Func if DANGEROUS_FUNCTIONS.contains(&t.text) => {
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
                if matches!(t.text, "exec" | "execute")
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

    #[test]
    fn detects_fragments_and_dialect_shapes() {
        for attack in [
            // Fragments that make up the whole value.
            "IS NULL",
            "in (0,1)",
            " IN (815914, 815913)",
            "1=1",
            "11!=1",
            "'1' not regexp '2'",
            "42 like 42",
            "VALUES ('192.168.0.1', 'test')",
            "HAVING COUNT(CustomerID) > 5",
            "ABS(",
            "database(\n",
            "if(2=",
            ") AS Role FROM",
            ") like (",
            "<=>",
            "XOR",
            "; select",
            "declare @b",
            "from `db_miwf`.`sys_refindex` limit",
            // Statements that start the value.
            "ALTER TABLE `mass_mails` CHANGE `receivers` `receivers` ENUM('A')",
            "DELETE FROM users;--",
            "DROP sampletable;--",
            "EXECUTE IMMEDIATE \"",
            // PostgreSQL casts and JSON operators.
            "password::int",
            "1+current_user::int",
            "encode(lo_get(16400),'base64')::int",
            "'[1,2]' ? '1'",
            "'{\"a\":1}'::jsonb #> '{a,b}' ? 'c'",
            "/get/OR '{\"b\":2}' <@ '{\"a\":1, \"b\":2}'::jsonb",
            // Nested SQL functions.
            "concat(0x223e,version(),0x3c)",
            "1\"and json_search (json_array(password),0b11,\"t__\")#",
            // Quote breaks.
            "'union a",
            "\" ALTER A",
            "' or abc!",
            "\\'and",
            "admin@juice-sh.op\\' or json (id);",
            "'''or 1",
            "\u{2019} OR \u{2019}1\u{2019}=\u{2019}x\u{2019}--",
            "SELECT (CASE",
            "1='1' or-- -",
            "1234 AS \"foobar\" FROM tablevar2=whatever",
            "select pg_sleep",
        ] {
            assert!(sqli(attack), "missed: {attack}");
        }
    }

    #[test]
    fn fragments_leave_prose_alone() {
        for benign in [
            "123<456",
            "like",
            "in (London)",
            "Order by phone",
            "Drop table for two at 8pm",
            "l'or du Rhin",
            "is this your parents' or yours?",
            "If you\u{2019}re looking for a recommendation, if you\u{2019}re willing",
            "Wall Street\u{2019}s benchmark stock index",
            "Date (2024)",
            "5 * 3",
            "The meeting is in (room 4)",
            "std::string",
            "fe80::1",
            "really? 'yes'",
            "Tom & Jerry's",
            "Select all' button",
        ] {
            assert!(
                !sqli(benign),
                "false positive: {benign}: {:?}",
                is_sql_injection(benign)
            );
        }
    }

    #[test]
    fn collations_plus_separated_unions_escaped_quotes_and_literal_chains() {
        for attack in [
            "user'collate nocase--",
            "user'collate`utf8mb4_general_ci`--",
            "user'collate\"\\utf8mb4_general_ci\"--",
            "/post/foo/24'union+all+select+1,2,3+from+aa",
            "x union+select 1,2",
            "admin@juice-sh.op\\' or glob (id,id);",
            "'{\"a\":2,\"c\":[4,5]}' < '$.c[1]' = 7",
        ] {
            assert!(sqli(attack), "missed: {attack}");
        }
        for benign in [
            "user'collate foo--",
            "it's a collate nocase thing",
            "1+1 is two",
            "rock 'n' roll",
            "'a' < 'b'",
            "O\\'Brien",
        ] {
            assert!(!sqli(benign), "false positive: {benign}");
        }
    }
}
