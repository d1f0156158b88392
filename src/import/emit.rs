//! The imported configuration as a small model, and its TOML text.
//!
//! The text is written by hand rather than through `toml::to_string` so that every key can
//! carry a comment naming the source line it came from (`# haproxy.cfg:42 server web1 …`);
//! values are quoted by the `toml` crate so any string is valid TOML.

use std::fmt::Write;

/// A value with the source lines it came from (`file:line text`), written as comments.
#[derive(Debug, Clone, Default)]
pub struct Src(pub Vec<String>);

impl Src {
    /// One source line.
    pub fn one(s: String) -> Src {
        Src(vec![s])
    }
}

/// One key = value line of a table, with its source comments.
#[derive(Debug, Clone)]
pub struct Kv {
    /// Key (bare or quoted as needed).
    pub key: String,
    /// Value, already TOML text.
    pub value: String,
    /// Where it came from.
    pub src: Src,
}

/// One `[section]` of the output.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Dotted header, e.g. `frontends."www"`.
    pub header: String,
    /// Comments above the header.
    pub src: Src,
    /// Keys in order.
    pub kvs: Vec<Kv>,
    /// Arrays of inline tables (routes, servers), each element with its comments.
    pub arrays: Vec<(String, Vec<(String, Src)>)>,
    /// Written commented out (e.g. a TLS frontend whose certificate is not there yet).
    pub disabled: bool,
}

impl Table {
    /// New table with a header.
    pub fn new(header: String, src: Src) -> Table {
        Table {
            header,
            src,
            ..Table::default()
        }
    }

    /// Set `key = value` (value already TOML text). A key set again — a directive repeated
    /// in one section, such as two `nbthread` lines — keeps its place and takes the last
    /// value, as HAProxy does; the comments name every line it came from.
    pub fn raw(&mut self, key: &str, value: String, src: Src) {
        if let Some(kv) = self.kvs.iter_mut().find(|kv| kv.key == key) {
            kv.value = value;
            kv.src.0.extend(src.0);
            if let Some(last) = kv.src.0.last_mut() {
                last.push_str(" (repeated: this last one wins)");
            }
            return;
        }
        self.kvs.push(Kv {
            key: key.to_string(),
            value,
            src,
        });
    }

    /// Add `key = "string"`.
    pub fn str(&mut self, key: &str, value: &str, src: Src) {
        self.raw(key, q(value), src);
    }

    /// Append one element (inline table text) to the array `key`.
    pub fn push(&mut self, key: &str, elem: String, src: Src) {
        if let Some((_, v)) = self.arrays.iter_mut().find(|(k, _)| k == key) {
            v.push((elem, src));
        } else {
            self.arrays.push((key.to_string(), vec![(elem, src)]));
        }
    }

    /// Whether a key was set.
    pub fn has(&self, key: &str) -> bool {
        self.kvs.iter().any(|k| k.key == key) || self.arrays.iter().any(|(k, _)| k == key)
    }
}

/// A TOML string literal.
pub fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key, quoted unless it is bare-safe.
pub fn key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_string()
    } else {
        q(s)
    }
}

/// An inline table from `(key, TOML value)` pairs.
pub fn inline(pairs: &[(&str, String)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {v}", key(k)))
        .collect();
    format!("{{ {} }}", body.join(", "))
}

fn comment_lines(out: &mut String, src: &Src, indent: &str, prefix: &str) {
    for s in &src.0 {
        for line in s.lines() {
            let _ = writeln!(out, "{prefix}{indent}# {}", comment_text(line));
        }
    }
}

/// `line` as the text of a TOML comment. Comments echo the source lines, and TOML allows
/// no control character in a comment but tab (HAProxy reads a stray `\x05` or a lone CR
/// as part of a word): those are written as `\u{5}`, the rest as it is.
pub fn comment_text(line: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c != '\t' && (c < ' ' || c == '\u{7f}');
    if !line.contains(bad) {
        return line.into();
    }
    line.chars()
        .map(|c| {
            if bad(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// The whole file: a header comment, then the tables in order.
pub fn render(header: &[String], tables: &[Table]) -> String {
    let mut out = String::new();
    for h in header {
        for line in h.split('\n') {
            let _ = writeln!(out, "# {}", comment_text(line));
        }
    }
    for t in tables {
        let p = if t.disabled { "# " } else { "" };
        out.push('\n');
        comment_lines(&mut out, &t.src, "", "");
        let _ = writeln!(out, "{p}[{}]", t.header);
        for kv in &t.kvs {
            comment_lines(&mut out, &kv.src, "", p);
            let _ = writeln!(out, "{p}{} = {}", key(&kv.key), kv.value);
        }
        for (k, elems) in &t.arrays {
            let _ = writeln!(out, "{p}{} = [", key(k));
            for (e, src) in elems {
                comment_lines(&mut out, src, "  ", p);
                let _ = writeln!(out, "{p}  {e},");
            }
            let _ = writeln!(out, "{p}]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_takes_the_last_value_once() {
        let mut t = Table::new("global".into(), Src::default());
        t.raw("threads", "2".into(), Src::one("h.cfg:2 nbthread 2".into()));
        t.raw("threads", "4".into(), Src::one("h.cfg:3 nbthread 4".into()));
        let text = render(&[], &[t]);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["global"]["threads"].as_integer(), Some(4));
        assert_eq!(text.matches("threads =").count(), 1);
        assert!(text.contains("h.cfg:2 nbthread 2"), "{text}");
        assert!(text.contains("h.cfg:3 nbthread 4 (repeated"), "{text}");
    }

    #[test]
    fn control_characters_in_source_comments_are_escaped() {
        let mut t = Table::new("b".into(), Src::one("h.cfg:1 backend\rb".into()));
        t.raw(
            "x",
            "1".into(),
            Src::one("h.cfg:2 server w4 10.0.0.2:80 check\u{5}# req\u{7f}\tend".into()),
        );
        let text = render(&["from h.cfg\u{1b}".into()], &[t]);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["b"]["x"].as_integer(), Some(1));
        assert!(text.contains("check\\u{5}# req\\u{7f}\tend"), "{text}");
        assert!(text.contains("backend\\u{d}b"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
