//! A SQL tokenizer tolerant of fragments: a request value is usually the middle of a statement,
//! so unterminated strings and comments are normal input, not errors.

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
pub(crate) struct Token {
    pub kind: Kind,
    /// Lowercased text for words, keywords and functions; the operator for operators.
    pub text: String,
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
];

pub(crate) fn is_function(word: &str) -> bool {
    FUNCTIONS.contains(&word)
}

/// Most tokens produced (bounds the work on long values).
const MAX_TOKENS: usize = 512;

/// Tokenizes `input`.
pub(crate) fn tokenize(input: &str) -> Vec<Token> {
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
                let word = input[start..i].to_ascii_lowercase();
                let next = next_significant(bytes, i);
                let kind = if next == Some(b'(') && is_function(&word) {
                    Kind::Func
                } else {
                    match word.as_str() {
                        "and" | "or" | "xor" => Kind::Logic,
                        "like" | "rlike" | "ilike" | "regexp" | "is" | "notnull" | "isnull"
                        | "glob" => Kind::Cmp,
                        "div" | "mod" => Kind::Op,
                        w if KEYWORDS.contains(&w) => Kind::Keyword,
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
            text: input[start..i].to_ascii_lowercase(),
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
        tokenize(s).into_iter().map(|t| t.kind).collect()
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
