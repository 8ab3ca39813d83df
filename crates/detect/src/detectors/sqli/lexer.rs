//! A SQL tokenizer tolerant of fragments: a request value is usually the middle of a statement,
//! so unterminated strings and comments are normal input, not errors.

use std::collections::HashSet;
use std::sync::LazyLock;

/// Token kinds, coarse enough that dialect differences do not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A quoted string; `closed` is false when the input ends inside it.
    Str {
        closed: bool,
    },
    Num,
    /// An identifier or a word that is not a SQL keyword.
    Word,
    /// A SQL keyword (the lowercase text tells which).
    Keyword,
    /// A known SQL function name followed by `(`.
    Func,
    /// `and`, `or`, `xor`, `&&`, `||`.
    Logic,
    /// A comparison: `=`, `<`, `>`, `!=`, `<>`, `<=`, `>=`, `<=>`, `==`, `like`, `regexp`, `is`.
    Cmp,
    /// Arithmetic and bit operators, `::` casts.
    Op,
    LParen,
    RParen,
    Comma,
    Semi,
    /// `--`, `#` or `/* */`.
    Comment,
    /// `@var` or `@@system_var`.
    Var,
    Dot,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub kind: Kind,
    /// Lowercased text for words, keywords and functions; the operator for operators.
    pub text: &'a str,
    /// Byte range in the input.
    pub start: usize,
    pub end: usize,
}

/// Keywords that matter for classification (statement starts, clauses, literals).
const KEYWORDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "drop",
    "create",
    "alter",
    "truncate",
    "exec",
    "execute",
    "declare",
    "shutdown",
    "grant",
    "revoke",
    "union",
    "from",
    "where",
    "into",
    "values",
    "set",
    "table",
    "database",
    "order",
    "group",
    "by",
    "having",
    "limit",
    "offset",
    "join",
    "between",
    "in",
    "not",
    "null",
    "as",
    "case",
    "when",
    "then",
    "else",
    "end",
    "waitfor",
    "delay",
    "procedure",
    "top",
    "distinct",
    "all",
    "exists",
    "true",
    "false",
    "outfile",
    "dumpfile",
    "sounds",
    "div",
    "mod",
    "collate",
    "escape",
    "begin",
    "load",
    "information_schema",
    "sysobjects",
    "syscolumns",
    "char",
    "nchar",
    "varchar",
    "nvarchar",
    "cast",
    "convert",
    "if",
    "elt",
    "rlike",
    "like",
    "regexp",
    "is",
    "xor",
    "and",
    "or",
    "analyse",
    "any",
    "some",
    "except",
    "intersect",
    "immediate",
    "analyse",
    "analyze",
    "returns",
    "function",
    "character",
    "array",
];

/// SQL functions: a call of one of these is SQL, not prose.
pub(crate) const FUNCTIONS: &[&str] = &[
    "sleep",
    "benchmark",
    "pg_sleep",
    "load_file",
    "extractvalue",
    "updatexml",
    "randomblob",
    "concat",
    "concat_ws",
    "group_concat",
    "char",
    "chr",
    "nchar",
    "ascii",
    "ord",
    "substring",
    "substr",
    "mid",
    "hex",
    "unhex",
    "version",
    "database",
    "user",
    "current_user",
    "system_user",
    "session_user",
    "schema",
    "ifnull",
    "isnull",
    "nullif",
    "coalesce",
    "cast",
    "convert",
    "count",
    "length",
    "char_length",
    "json_extract",
    "json_depth",
    "json_keys",
    "json_value",
    "xmltype",
    "receive_message",
    "request",
    "get_host_address",
    "get_host_name",
    "sqlite_version",
    "pg_read_file",
    "name_const",
    "floor",
    "rand",
    "instr",
    "locate",
    "md5",
    "sha1",
    "now",
    "sysdate",
    "current_database",
    "string_agg",
    "openrowset",
    "opendatasource",
    "make_set",
    "exp",
    "elt",
    "if",
    "iif",
    "row",
    "gtid_subset",
    "polygon",
    "multipoint",
    "linestring",
    "st_latfromgeohash",
    "to_char",
    "to_number",
    "utl_inaddr",
    "ctxsys",
    "db_name",
    "object_id",
    "has_dbaccess",
    "is_srvrolemember",
    "quotename",
    "lo_import",
    "pg_ls_dir",
    "query_to_xml",
    "xmlagg",
    "xp_cmdshell",
    "sp_executesql",
    "sp_oacreate",
    "dbms_xmlgen",
    "bin",
    "conv",
    "oct",
    "lpad",
    "rpad",
    "replace",
    "left",
    "right",
    "reverse",
    "trim",
    "lower",
    "upper",
    "waitfor",
    "typeof",
    "unicode",
    "soundex",
    "exists",
    // Generic builtins shared by the major dialects (MySQL, PostgreSQL, MSSQL, Oracle, SQLite).
    "abs",
    "ceil",
    "ceiling",
    "round",
    "pow",
    "power",
    "sqrt",
    "sin",
    "cos",
    "tan",
    "atan",
    "log",
    "ln",
    "log10",
    "pi",
    "random",
    "sign",
    "greatest",
    "least",
    "max",
    "min",
    "sum",
    "avg",
    "date",
    "day",
    "month",
    "year",
    "hour",
    "minute",
    "second",
    "quarter",
    "time",
    "timestamp",
    "curdate",
    "curtime",
    "date_add",
    "date_sub",
    "datediff",
    "format",
    "len",
    "ucase",
    "lcase",
    "ltrim",
    "rtrim",
    "repeat",
    "space",
    "field",
    "find_in_set",
    "export_set",
    "position",
    "strcmp",
    "compress",
    "uncompress",
    "encode",
    "decode",
    "aes_encrypt",
    "aes_decrypt",
    "des_encrypt",
    "sha2",
    "password",
    "old_password",
    "crc32",
    "uuid",
    "last_insert_id",
    "row_count",
    "found_rows",
    "connection_id",
    "values",
    "default",
    "insert",
    "local",
    "nvl",
    "overlay",
    "unistr",
    "starts_with",
    "lo_get",
    "lo_export",
    "pg_read_binary_file",
    "pg_stat_file",
    "json_search",
    "json_array",
    "json_object",
    "json_build_object",
    "jsonb_pretty",
    "json_valid",
    "json_type",
    "json",
    "printf",
    "zeroblob",
    "load_extension",
    "current_setting",
    "inet_server_addr",
    "version_number",
    "dbms_pipe",
    "utl_http",
    "sys_context",
    "schema_name",
    "table_name",
    "column_name",
    "object_name",
    "suser_name",
    "user_name",
    "host_name",
    "is_member",
    "fn_varbintohexstr",
    "analyse",
    "div",
];

/// Type names a PostgreSQL `::type` cast or a `CAST(... AS type)` names.
pub(crate) const SQL_TYPES: &[&str] = &[
    "int",
    "int2",
    "int4",
    "int8",
    "integer",
    "bigint",
    "smallint",
    "tinyint",
    "numeric",
    "decimal",
    "real",
    "float",
    "float4",
    "float8",
    "double",
    "money",
    "text",
    "varchar",
    "char",
    "nchar",
    "nvarchar",
    "bpchar",
    "bool",
    "boolean",
    "json",
    "jsonb",
    "xml",
    "bytea",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "interval",
    "regclass",
    "regproc",
    "oid",
    "uuid",
    "inet",
    "cidr",
    "signed",
    "unsigned",
    "binary",
    "tsvector",
    "tsquery",
];

static FUNCTION_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| FUNCTIONS.iter().copied().collect());
static KEYWORD_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| KEYWORDS.iter().copied().collect());

pub(crate) fn is_function(word: &str) -> bool {
    FUNCTION_SET.contains(word)
}

/// Most tokens produced (bounds the work on long values).
const MAX_TOKENS: usize = 512;

/// Tokenizes `input`.
/// Tokenizes `input`; `lower` is `input` ASCII-lowercased (the tokens' text points into it).
pub(crate) fn tokenize<'a>(input: &str, lower: &'a str) -> Vec<Token<'a>> {
    debug_assert_eq!(input.len(), lower.len());
    let bytes = input.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    let mut i = 0;
    let mut in_exec_comment = false;
    while i < bytes.len() && tokens.len() < MAX_TOKENS {
        let b = bytes[i];
        let start = i;
        let kind;
        match b {
            b if b.is_ascii_whitespace() || b == 0x0b => {
                i += 1;
                continue;
            }
            b'\'' | b'"' => {
                let (end, closed) = string_end(bytes, i);
                i = end;
                kind = Kind::Str { closed };
            }
            b'`' => {
                i = bytes[i + 1..]
                    .iter()
                    .position(|&c| c == b'`')
                    .map_or(bytes.len(), |p| i + p + 2);
                kind = Kind::Word;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = line_end(bytes, i);
                kind = Kind::Comment;
            }
            b'#' if bytes.get(i + 1) == Some(&b'>') => {
                // PostgreSQL `#>` / `#>>` JSON path extraction.
                i += 2;
                if bytes.get(i) == Some(&b'>') {
                    i += 1;
                }
                kind = Kind::Op;
            }
            b'#' => {
                i = line_end(bytes, i);
                kind = Kind::Comment;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                if bytes.get(i + 2) == Some(&b'!') {
                    // MySQL executable comment: its body is code.
                    i += 3;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    in_exec_comment = true;
                    continue;
                }
                i = find_from(bytes, i + 2, b"*/").map_or(bytes.len(), |p| p + 2);
                kind = Kind::Comment;
            }
            b'*' if in_exec_comment && bytes.get(i + 1) == Some(&b'/') => {
                in_exec_comment = false;
                i += 2;
                continue;
            }
            b'0'..=b'9' => {
                i = number_end(bytes, i);
                kind = Kind::Num;
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = number_end(bytes, i + 1);
                kind = Kind::Num;
            }
            b'@' if matches!(bytes.get(i + 1), Some(b'>' | b'?'))
                || (bytes.get(i + 1) == Some(&b'@')
                    && !bytes
                        .get(i + 2)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')) =>
            {
                // PostgreSQL containment / JSON path / text search operators.
                i += 2;
                kind = Kind::Cmp;
            }
            b'@' => {
                i += 1;
                if bytes.get(i) == Some(&b'@') {
                    i += 1;
                }
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.' | b'$'))
                {
                    i += 1;
                }
                kind = Kind::Var;
            }
            b if b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b >= 0x80 => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || matches!(bytes[i], b'_' | b'$')
                        || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                let word = &lower[start..i];
                let next = next_significant(bytes, i);
                let kind = if next == Some(b'(') && is_function(word) {
                    Kind::Func
                } else {
                    match word {
                        "and" | "or" | "xor" => Kind::Logic,
                        "like" | "rlike" | "ilike" | "regexp" | "is" | "notnull" | "isnull"
                        | "glob" => Kind::Cmp,
                        "div" | "mod" => Kind::Op,
                        w if KEYWORD_SET.contains(w) => Kind::Keyword,
                        _ => Kind::Word,
                    }
                };
                tokens.push(Token {
                    kind,
                    text: word,
                    start,
                    end: i,
                });
                continue;
            }
            b'(' => {
                i += 1;
                kind = Kind::LParen;
            }
            b')' => {
                i += 1;
                kind = Kind::RParen;
            }
            b',' => {
                i += 1;
                kind = Kind::Comma;
            }
            b';' => {
                i += 1;
                kind = Kind::Semi;
            }
            b'.' => {
                i += 1;
                kind = Kind::Dot;
            }
            b'|' if bytes.get(i + 1) == Some(&b'|') => {
                i += 2;
                kind = Kind::Logic;
            }
            b'&' if bytes.get(i + 1) == Some(&b'&') => {
                i += 2;
                kind = Kind::Logic;
            }
            b'<' if bytes.get(i + 1) == Some(&b'@') => {
                i += 2;
                kind = Kind::Cmp;
            }
            b'-' if bytes.get(i + 1) == Some(&b'>') => {
                // `->` / `->>` JSON extraction.
                i += 2;
                if bytes.get(i) == Some(&b'>') {
                    i += 1;
                }
                kind = Kind::Op;
            }
            b'?' if {
                // `?`, `?|`, `?&` JSON key tests, when an operand follows.
                let mut j = i + 1;
                if matches!(bytes.get(j), Some(b'|' | b'&')) {
                    j += 1;
                }
                matches!(next_significant(bytes, j), Some(b'\'' | b'"'))
                    || bytes[j..]
                        .trim_ascii_start()
                        .get(..5)
                        .is_some_and(|w| w.eq_ignore_ascii_case(b"array"))
            } =>
            {
                i += 1;
                if matches!(bytes.get(i), Some(b'|' | b'&')) {
                    i += 1;
                }
                kind = Kind::Cmp;
            }
            b'=' | b'<' | b'>' | b'!' => {
                i += 1;
                while i < bytes.len() && matches!(bytes[i], b'=' | b'<' | b'>') && i - start < 3 {
                    i += 1;
                }
                kind = if &input[start..i] == "!" {
                    Kind::Op
                } else {
                    Kind::Cmp
                };
            }
            b':' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                kind = Kind::Cmp;
            }
            b':' if bytes.get(i + 1) == Some(&b':') => {
                i += 2;
                kind = Kind::Op;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'|' | b'&' | b'~' => {
                i += 1;
                kind = Kind::Op;
            }
            _ => {
                i += input[i..].chars().next().map_or(1, char::len_utf8);
                kind = Kind::Other;
            }
        }
        tokens.push(Token {
            kind,
            text: &lower[start..i],
            start,
            end: i,
        });
    }
    tokens
}

/// The end of a string starting at `start` (a quote), honouring doubled quotes and backslash
/// escapes; whether it was closed.
fn string_end(bytes: &[u8], start: usize) -> (usize, bool) {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return (i + 1, true);
        }
        i += 1;
    }
    (bytes.len(), false)
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| from + p)
}

fn find_from(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

fn number_end(bytes: &[u8], mut i: usize) -> usize {
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) {
        i += 2;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    if i < bytes.len()
        && matches!(bytes[i], b'e' | b'E')
        && bytes
            .get(i + 1)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+')
    {
        i += 2;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
    }
    i
}

/// The next byte that is not whitespace or inside a `/* */` comment.
fn next_significant(bytes: &[u8], mut i: usize) -> Option<u8> {
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) == Some(&b'/') && bytes.get(i + 1) == Some(&b'*') {
            i = find_from(bytes, i + 2, b"*/").map_or(bytes.len(), |p| p + 2);
            continue;
        }
        return bytes.get(i).copied();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Kind> {
        tokenize(s, &s.to_ascii_lowercase())
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn tokenizes_fragments() {
        assert_eq!(
            kinds("1' or '1'='1"),
            vec![
                Kind::Num,
                Kind::Str { closed: true },
                Kind::Num,
                Kind::Str { closed: true },
                Kind::Num
            ]
        );
        assert_eq!(
            kinds("sleep (5)--"),
            vec![
                Kind::Func,
                Kind::LParen,
                Kind::Num,
                Kind::RParen,
                Kind::Comment
            ]
        );
        assert_eq!(
            kinds("/*!50000union*/ select"),
            vec![Kind::Keyword, Kind::Keyword]
        );
        assert_eq!(
            kinds("@@version||x"),
            vec![Kind::Var, Kind::Logic, Kind::Word]
        );
    }
}
