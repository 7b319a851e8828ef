//! Configuration errors that point at the file, line, column and key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A configuration problem, located in its file.
///
/// Displayed as `FILE:LINE:COLUMN: KEY: MESSAGE`, followed by the offending line with a caret,
/// so an operator at a terminal sees at once what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line (0 when the problem has no place, e.g. an unreadable file).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// The key path, e.g. `bus[0].meter[2].baud` (empty when not about one key).
    pub key: String,
    /// What was expected and what was found.
    pub message: String,
    /// The source line, for the caret display.
    pub source_line: Option<String>,
}

impl ConfigError {
    /// An error about the whole file (cannot read it, and the like).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.into(),
            source_line: None,
        }
    }

    /// An error at byte `span` of `text`.
    pub fn at(
        file: &Path,
        text: &str,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column, source_line) = match span {
            Some(span) => locate(text, span.start),
            None => (0, 0, None),
        };
        Self {
            file: file.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            source_line,
        }
    }
}

/// Line, column (1-based, in characters) and the line's text for a byte offset.
fn locate(text: &str, offset: usize) -> (usize, usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text
        .get(line_start..offset)
        .map_or(1, |s| s.chars().count() + 1);
    let source_line = text
        .get(line_start..)
        .and_then(|rest| rest.lines().next())
        .map(str::to_owned);
    (line, column, source_line)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(src) = &self.source_line {
            let pad = " ".repeat(self.column.saturating_sub(1));
            write!(f, "\n  | {src}\n  | {pad}^")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Parses TOML text into `T`, turning any error into a located [`ConfigError`] with the key.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::at(file, text, e.span(), "", e.message()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = clean_path(&e.path().to_string());
        let inner = e.into_inner();
        ConfigError::at(file, text, inner.span(), key, inner.message())
    })
}

/// Drops the private segments `toml::Spanned` adds to serde paths, and the root `.`.
fn clean_path(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    path.split('.')
        .filter(|seg| !seg.starts_with("$__serde_spanned"))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_and_displays() {
        let text = "a = 1\nbaud = -5\n";
        let e = ConfigError::at(
            Path::new("x.toml"),
            text,
            Some(13..15),
            "bus[0].baud",
            "expected u32",
        );
        assert_eq!((e.line, e.column), (2, 8));
        assert_eq!(
            e.to_string(),
            "x.toml:2:8: bus[0].baud: expected u32\n  | baud = -5\n  |        ^"
        );
        assert_eq!(
            clean_path("bus[0].$__serde_spanned_private_value.meter[0].x"),
            "bus[0].meter[0].x"
        );
    }
}
