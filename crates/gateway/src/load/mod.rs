//! Reading a configuration file and reporting its problems as `file:line:column: reason`.

use std::fmt;
use std::path::Path;

use serde_saphyr::Spanned;

use crate::config::Config;

mod structure;

/// Largest configuration file accepted; a bigger one is a mistake, not a config.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(u64, u64)>,
    pub message: String,
}

impl Problem {
    pub fn at<T>(spanned: &Spanned<T>, message: impl Into<String>) -> Self {
        let line = spanned.referenced.line();
        let column = spanned.referenced.column();
        Problem {
            position: (line > 0).then_some((line, column)),
            message: message.into(),
        }
    }

    pub fn general(message: impl Into<String>) -> Self {
        Problem {
            position: None,
            message: message.into(),
        }
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn single(file: &str, problem: Problem) -> Self {
        ConfigError {
            file: file.to_owned(),
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match problem.position {
                Some((line, column)) => {
                    write!(f, "{}:{line}:{column}: {}", self.file, problem.message)?
                }
                None => write!(f, "{}: {}", self.file, problem.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses a configuration file (syntax, types and unknown keys; the semantic checks
/// happen when it is compiled).
pub fn read_config(path: &Path) -> Result<(Config, String), ConfigError> {
    let file = path.display().to_string();
    let unreadable = |e: std::io::Error| {
        ConfigError::single(
            &file,
            Problem::general(format!("cannot read the file: {e}")),
        )
    };
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(ConfigError::single(
            &file,
            Problem::general(format!(
                "the file is {size} bytes; the limit is {MAX_CONFIG_BYTES}"
            )),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let config = parse_config_reporting_all(&text).map_err(|problems| ConfigError {
        file: file.clone(),
        problems,
    })?;
    Ok((config, text))
}

/// Parses configuration text; on failure, every structural problem the schema finds as well
/// as the parser's own first error, so one round of `apiguard validate` lists them all.
pub fn parse_config_reporting_all(text: &str) -> Result<Config, Vec<Problem>> {
    let first = match parse_config(text) {
        Ok(config) => return Ok(config),
        Err(problem) => problem,
    };
    let mut problems = structure::schema_problems(text);
    // The parser's error is kept unless the schema already said the same thing: it may name
    // what the schema cannot see (a malformed duration, an unknown enum variant).
    let already_said = problems.iter().any(|p| {
        (p.position.is_some() && p.position == first.position)
            || first.message.starts_with(&p.message)
            || first
                .message
                .split(',')
                .next()
                .is_some_and(|head| !head.is_empty() && p.message.starts_with(head))
    });
    if !already_said {
        problems.push(first);
        problems.sort_by_key(|p| p.position);
    }
    Err(problems)
}

/// Parses configuration text.
pub fn parse_config(text: &str) -> Result<Config, Problem> {
    serde_saphyr::from_str::<Config>(text).map_err(|e| {
        let position = e
            .location()
            .map(|l| (l.line(), l.column()))
            .filter(|(line, _)| *line > 0);
        Problem {
            position,
            message: one_line(&e),
        }
    })
}

/// serde-saphyr renders errors with a source snippet over several lines; a config error is
/// reported as one line per problem, after its position.
fn one_line(error: &serde_saphyr::Error) -> String {
    let rendered = error.to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or("invalid configuration")
        .trim();
    // The rendered form may start with its own "line N column M:" prefix; the position is
    // already printed in front of the message.
    strip_position_prefix(first.trim_start_matches("error: ")).to_owned()
}

fn strip_position_prefix(message: &str) -> &str {
    let lower = message.to_ascii_lowercase();
    if lower.starts_with("line ")
        && let Some(colon) = message.find(": ")
    {
        return &message[colon + 2..];
    }
    message
}
