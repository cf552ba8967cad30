//! Config errors. Each problem says where it is and how to fix it.

use std::fmt;

/// A place in a config file. Lines and columns count from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file as the operator named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One thing wrong with a config, with its place and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where the problem is.
    pub location: Location,
    /// The dotted path of the offending key, e.g. `servers.notes.tools`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if !self.path.is_empty() {
            write!(f, "`{}`: ", self.path)?;
        }
        write!(f, "{}\n  fix: {}", self.message, self.fix)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config `{file}`: {reason}")]
    Read {
        /// The file as named.
        file: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file was read but is invalid; every problem found is listed.
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigProblem>),
}

fn render(problems: &[ConfigProblem]) -> String {
    let mut out = format!("invalid config ({} problem(s))", problems.len());
    for p in problems {
        out.push('\n');
        out.push_str(&p.to_string());
    }
    out
}

impl ConfigError {
    /// The individual problems, empty for read errors.
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(p) => p,
        }
    }
}
