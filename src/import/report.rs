//! What the import did with every source directive: translated, approximated, or not
//! translated and why. The report is printed after the import and drives `--strict`.

use std::collections::BTreeMap;
use std::fmt;

/// Where a directive came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// File label as given on the command line.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What happened to one directive. Ordered from worst to best, so several uses of one
/// line (a `defaults` line applied to many proxies) keep the best outcome.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// fulcrum cannot do this (yet).
    Unsupported(String),
    /// fulcrum has no equivalent concept; the directive has no effect.
    NoEquivalent(String),
    /// Translated, but fulcrum behaves slightly differently; the text says how.
    Approximated(String),
    /// Not translated and not needed: process management or logging that fulcrum (or the
    /// service manager running it) handles its own way; no effect on what is proxied where.
    Irrelevant(String),
    /// Not written because fulcrum's default does the same.
    Default(String),
    /// Written to the output.
    Translated,
}

impl Outcome {
    /// True when the directive's effect is lost or changed (what `--strict` refuses).
    pub fn is_dropped(&self) -> bool {
        matches!(
            self,
            Outcome::Unsupported(_) | Outcome::NoEquivalent(_) | Outcome::Approximated(_)
        )
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Source position.
    pub loc: Loc,
    /// The directive as written (trimmed, shortened).
    pub text: String,
    /// What became of it.
    pub outcome: Outcome,
}

/// Every directive seen, keyed by position.
#[derive(Debug, Default, Clone)]
pub struct Report {
    entries: BTreeMap<Loc, Entry>,
    /// Notes that are not about one line (e.g. the hostname policy used).
    pub notes: Vec<String>,
}

impl Report {
    /// Record `outcome` for the directive at `loc`; a better outcome for the same line wins.
    pub fn add(&mut self, loc: &Loc, text: &str, outcome: Outcome) {
        let text = shorten(text);
        match self.entries.get_mut(loc) {
            Some(e) if e.outcome >= outcome => {}
            Some(e) => e.outcome = outcome,
            None => {
                self.entries.insert(
                    loc.clone(),
                    Entry {
                        loc: loc.clone(),
                        text,
                        outcome,
                    },
                );
            }
        }
    }

    /// Shorthand for a translated directive.
    pub fn ok(&mut self, loc: &Loc, text: &str) {
        self.add(loc, text, Outcome::Translated);
    }

    /// Every entry in source order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The outcome recorded for a line, if any.
    pub fn outcome_at(&self, file: &str, line: usize) -> Option<&Outcome> {
        self.entries
            .get(&Loc {
                file: file.to_string(),
                line,
            })
            .map(|e| &e.outcome)
    }

    /// How many directives lost or changed their effect.
    pub fn dropped(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.outcome.is_dropped())
            .count()
    }

    /// How many were translated (or covered by a default).
    pub fn translated(&self) -> usize {
        self.entries.len() - self.dropped()
    }
}

fn shorten(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 100 {
        let mut s: String = t.chars().take(97).collect();
        s.push_str("...");
        s
    } else {
        t.to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut groups: [(&str, Vec<&Entry>); 6] = [
            ("translated", Vec::new()),
            ("left to fulcrum's default (same behaviour)", Vec::new()),
            (
                "ignored: process management or logging, no effect on traffic",
                Vec::new(),
            ),
            ("approximated (behaviour differs slightly)", Vec::new()),
            ("not translated: no equivalent in fulcrum", Vec::new()),
            ("not translated: unsupported", Vec::new()),
        ];
        for e in self.entries.values() {
            let i = match e.outcome {
                Outcome::Translated => 0,
                Outcome::Default(_) => 1,
                Outcome::Irrelevant(_) => 2,
                Outcome::Approximated(_) => 3,
                Outcome::NoEquivalent(_) => 4,
                Outcome::Unsupported(_) => 5,
            };
            if let Some(g) = groups.get_mut(i) {
                g.1.push(e);
            }
        }
        for (title, list) in &groups {
            if list.is_empty() {
                continue;
            }
            writeln!(f, "{title} ({}):", list.len())?;
            for e in list {
                match &e.outcome {
                    Outcome::Translated => writeln!(f, "  {}  {}", e.loc, e.text)?,
                    Outcome::Default(why)
                    | Outcome::Irrelevant(why)
                    | Outcome::Approximated(why)
                    | Outcome::NoEquivalent(why)
                    | Outcome::Unsupported(why) => {
                        writeln!(f, "  {}  {}\n      {why}", e.loc, e.text)?
                    }
                }
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        write!(
            f,
            "summary: {} directive(s) translated or covered by defaults, {} not translated or approximated",
            self.translated(),
            self.dropped()
        )
    }
}
