//! Configuration errors that point at the file, line and column, with a hint.

use std::fmt;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given by the user (or a label such as `<command line>`).
    pub file: String,
    /// 1-based line; 0 when the problem has no position (e.g. an unreadable file).
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    pub message: String,
    /// How to fix it, when we know.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.file, self.line, self.col, self.message
            )?;
        } else {
            write!(f, "{}: error: {}", self.file, self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in one configuration file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Turns byte offsets into 1-based line:column positions for one source text.
pub(crate) struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Locator { file, text }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end clamp to the end.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// An error at a byte offset.
    pub(crate) fn error(
        &self,
        offset: usize,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> ConfigError {
        let (line, col) = self.position(offset);
        ConfigError {
            file: self.file.to_string(),
            line,
            col,
            message: message.into(),
            hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_chars() {
        let l = Locator::new("f", "ab\ncdé f\n");
        assert_eq!(l.position(0), (1, 1));
        assert_eq!(l.position(3), (2, 1));
        // 'é' is two bytes; the space after it is the 4th character.
        assert_eq!(l.position(7), (2, 4));
        assert_eq!(l.position(1000), (3, 1));
    }

    #[test]
    fn display_has_file_line_col_and_hint() {
        let l = Locator::new("x.toml", "a\nb");
        let e = l.error(2, "bad thing", Some("do this".into()));
        assert_eq!(
            e.to_string(),
            "x.toml:2:1: error: bad thing\n  hint: do this"
        );
    }
}
