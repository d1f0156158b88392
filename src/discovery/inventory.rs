//! Inventory files: a JSON or TOML list of servers, validated like the config.
//!
//! JSON: `[{"name":"web1","address":"10.0.0.1:80"}, …]` or `{"servers":[…]}`.
//! TOML: `[[servers]]` tables. Keys per server: `name`, `address` (IP:PORT),
//! optional `weight` (1..=256), `backup`, `maxconn`, `exclude` (leave the server
//! out, seed 003's `exclude_from_loadbalancer`), `drain` (shorthand for
//! `state = "drain"`) and `state` (`ready` / `drain` / `maint`).
//!
//! Every problem is collected with file:line:col; a file with any problem yields
//! no server list at all, so a half-edited file never changes the backend.
// Outside bytes are parsed here: no panicking shortcut on them outside tests (an index
// that is proven in range says so with an `#[allow]` and its reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::error::Locator;
use crate::config::types::{AdminState, ServerConfig};
use crate::config::ConfigError;

/// Which syntax an inventory is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.json` files.
    Json,
    /// `.toml` files.
    Toml,
    /// Any other extension: JSON is tried first, then TOML.
    Guess,
}

impl Format {
    /// The format a path's extension names.
    pub fn of_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            Some(e) if e.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::Guess,
        }
    }
}

/// A value and the byte offset in the file where it was written.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    at: usize,
}

/// One server entry as written, before validation (common to both syntaxes).
#[derive(Debug, Default)]
struct Entry {
    at: usize,
    name: Option<At<String>>,
    address: Option<At<String>>,
    weight: Option<At<i64>>,
    maxconn: Option<At<i64>>,
    backup: Option<At<bool>>,
    exclude: Option<At<bool>>,
    drain: Option<At<bool>>,
    state: Option<At<String>>,
}

const KEYS: &str = "name, address, weight, backup, maxconn, exclude, drain, state";

/// Parse and validate inventory text. `file` labels error positions.
/// Returns the servers to put in the backend (excluded entries left out), or
/// every problem found.
pub fn parse(
    text: &str,
    file: &str,
    format: Format,
) -> Result<Vec<ServerConfig>, Vec<ConfigError>> {
    let loc = Locator::new(file, text);
    let entries = match format {
        Format::Json => parse_json(text, &loc)?,
        Format::Toml => parse_toml(text, &loc)?,
        Format::Guess => match parse_json(text, &loc) {
            Ok(e) => e,
            Err(json_errors) => match parse_toml(text, &loc) {
                Ok(e) => e,
                Err(_) if looks_like_json(text) => return Err(json_errors),
                Err(toml_errors) => return Err(toml_errors),
            },
        },
    };
    validate(entries, &loc)
}

fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start().chars().next(), Some('[') | Some('{'))
}

fn validate(entries: Vec<Entry>, loc: &Locator<'_>) -> Result<Vec<ServerConfig>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut names = HashSet::new();
    let mut servers = Vec::new();
    for e in entries {
        let excluded = e.exclude.as_ref().is_some_and(|x| x.value);
        let name = match &e.name {
            None => {
                errors.push(loc.error(e.at, "server has no `name`", None));
                None
            }
            Some(n) if !valid_name(&n.value) => {
                errors.push(loc.error(
                    n.at,
                    format!("bad server name `{}`", n.value),
                    Some("names use letters, digits, '-', '_' and '.' (at most 64)".into()),
                ));
                None
            }
            Some(n) => {
                // Excluded entries count too: two entries for one box is a typo either way.
                if !names.insert(n.value.clone()) {
                    errors.push(loc.error(
                        n.at,
                        format!("server `{}` appears twice", n.value),
                        Some("server names are unique within an inventory".into()),
                    ));
                }
                Some(n.value.clone())
            }
        };
        let address = match &e.address {
            None => {
                errors.push(loc.error(e.at, "server has no `address`", None));
                None
            }
            Some(a) => match a.value.parse::<SocketAddr>() {
                Ok(addr) => match crate::config::rules::server_address_problem(addr) {
                    None => Some(addr),
                    Some(why) => {
                        errors.push(loc.error(
                            a.at,
                            format!("bad server address `{addr}`: {why}"),
                            Some("write the unicast IP:PORT the server listens on".into()),
                        ));
                        None
                    }
                },
                Err(_) => {
                    errors.push(loc.error(
                        a.at,
                        format!("bad server address `{}`", a.value),
                        Some("write IP:PORT, e.g. \"192.168.50.11:80\"".into()),
                    ));
                    None
                }
            },
        };
        let weight = match &e.weight {
            None => 1,
            Some(w) if (1..=256).contains(&w.value) => w.value as u32,
            Some(w) => {
                errors.push(
                    loc.error(
                        w.at,
                        format!("`weight` = {} is out of range", w.value),
                        Some(
                            "use 1..=256; to stop traffic set `drain = true` or `exclude = true`"
                                .into(),
                        ),
                    ),
                );
                1
            }
        };
        let maxconn = match &e.maxconn {
            None => None,
            Some(m) if (1..=1_000_000).contains(&m.value) => Some(m.value as u32),
            Some(m) => {
                errors.push(loc.error(
                    m.at,
                    format!("`maxconn` = {} is out of range", m.value),
                    Some("use a value from 1 to 1000000".into()),
                ));
                None
            }
        };
        let mut admin = match &e.state {
            None => AdminState::Ready,
            Some(s) => match s.value.as_str() {
                "ready" => AdminState::Ready,
                "drain" => AdminState::Drain,
                "maint" => AdminState::Maint,
                other => {
                    errors.push(loc.error(
                        s.at,
                        format!("unknown server state `{other}`"),
                        Some("use \"ready\", \"drain\" or \"maint\"".into()),
                    ));
                    AdminState::Ready
                }
            },
        };
        if e.drain.as_ref().is_some_and(|d| d.value) && admin == AdminState::Ready {
            admin = AdminState::Drain;
        }
        if let (Some(name), Some(address), false) = (name, address, excluded) {
            servers.push(ServerConfig {
                name,
                address,
                weight,
                backup: e.backup.as_ref().is_some_and(|b| b.value),
                maxconn,
                admin,
            });
        }
    }
    if errors.is_empty() {
        Ok(servers)
    } else {
        Err(errors)
    }
}

/// The config's rule for server names, so discovered names are as valid as configured ones.
pub(crate) use crate::config::rules::valid_name;

// ---- TOML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    servers: Vec<toml::Spanned<TomlEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlEntry {
    name: Option<toml::Spanned<String>>,
    address: Option<toml::Spanned<String>>,
    weight: Option<toml::Spanned<i64>>,
    maxconn: Option<toml::Spanned<i64>>,
    backup: Option<toml::Spanned<bool>>,
    exclude: Option<toml::Spanned<bool>>,
    drain: Option<toml::Spanned<bool>>,
    state: Option<toml::Spanned<String>>,
}

fn at<T>(s: Option<toml::Spanned<T>>) -> Option<At<T>> {
    s.map(|s| {
        let at = s.span().start;
        At {
            value: s.into_inner(),
            at,
        }
    })
}

fn parse_toml(text: &str, loc: &Locator<'_>) -> Result<Vec<Entry>, Vec<ConfigError>> {
    let file: TomlFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let hint = e
            .message()
            .contains("unknown field")
            .then(|| format!("an inventory has `[[servers]]` tables with the keys {KEYS}"));
        vec![loc.error(offset, e.message().trim().to_string(), hint)]
    })?;
    Ok(file
        .servers
        .into_iter()
        .map(|s| {
            let entry_at = s.span().start;
            let t = s.into_inner();
            Entry {
                at: entry_at,
                name: at(t.name),
                address: at(t.address),
                weight: at(t.weight),
                maxconn: at(t.maxconn),
                backup: at(t.backup),
                exclude: at(t.exclude),
                drain: at(t.drain),
                state: at(t.state),
            }
        })
        .collect())
}

// ---- JSON ----
// serde_json has no spans, but a borrowed `RawValue` is a slice of the input,
// so its offset in the file is the distance between the two pointers.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile<'a> {
    #[serde(borrow)]
    servers: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEntry<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    address: Option<&'a RawValue>,
    #[serde(borrow)]
    weight: Option<&'a RawValue>,
    #[serde(borrow)]
    maxconn: Option<&'a RawValue>,
    #[serde(borrow)]
    backup: Option<&'a RawValue>,
    #[serde(borrow)]
    exclude: Option<&'a RawValue>,
    #[serde(borrow)]
    drain: Option<&'a RawValue>,
    #[serde(borrow)]
    state: Option<&'a RawValue>,
}

fn offset_in(text: &str, part: &str) -> usize {
    (part.as_ptr() as usize)
        .saturating_sub(text.as_ptr() as usize)
        .min(text.len())
}

/// Offset of a serde_json error (1-based line/column within `part`, which starts at `base`).
fn json_error_offset(text: &str, base: usize, e: &serde_json::Error) -> usize {
    let part = text.get(base..).unwrap_or("");
    let mut offset = base;
    let mut line = 1;
    for (i, c) in part.char_indices() {
        if line == e.line() {
            offset = base + i;
            break;
        }
        if c == '\n' {
            line += 1;
        }
    }
    // Column is in bytes, 1-based; the error points at the character it choked on.
    let line_end = text
        .get(offset..)
        .and_then(|rest| rest.find('\n'))
        .map_or(text.len(), |n| offset + n);
    (offset + e.column().saturating_sub(1)).min(line_end)
}

fn parse_json(text: &str, loc: &Locator<'_>) -> Result<Vec<Entry>, Vec<ConfigError>> {
    let syntax = |base: usize, e: serde_json::Error, hint: Option<String>| {
        vec![loc.error(json_error_offset(text, base, &e), format!("{e}"), hint)]
    };
    let items: Vec<&RawValue> = if text.trim_start().starts_with('{') {
        let f: JsonFile<'_> = serde_json::from_str(text).map_err(|e| {
            syntax(
                0,
                e,
                Some("write a list of servers, or an object with a `servers` list".into()),
            )
        })?;
        f.servers
    } else {
        serde_json::from_str(text).map_err(|e| syntax(0, e, None))?
    };
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for raw in items {
        let base = offset_in(text, raw.get());
        let j: JsonEntry<'_> = match serde_json::from_str(raw.get()) {
            Ok(j) => j,
            Err(e) => {
                let hint = format!("each server is an object with the keys {KEYS}");
                errors.extend(syntax(base, e, Some(hint)));
                continue;
            }
        };
        let mut entry = Entry {
            at: base,
            ..Entry::default()
        };
        let string = |raw: Option<&RawValue>, key: &str, errors: &mut Vec<ConfigError>| {
            let raw = raw?;
            let at = offset_in(text, raw.get());
            match serde_json::from_str::<String>(raw.get()) {
                Ok(value) => Some(At { value, at }),
                Err(_) => {
                    errors.push(loc.error(at, format!("`{key}` must be a string"), None));
                    None
                }
            }
        };
        let int = |raw: Option<&RawValue>, key: &str, errors: &mut Vec<ConfigError>| {
            let raw = raw?;
            let at = offset_in(text, raw.get());
            match serde_json::from_str::<i64>(raw.get()) {
                Ok(value) => Some(At { value, at }),
                Err(_) => {
                    errors.push(loc.error(at, format!("`{key}` must be an integer"), None));
                    None
                }
            }
        };
        let boolean = |raw: Option<&RawValue>, key: &str, errors: &mut Vec<ConfigError>| {
            let raw = raw?;
            let at = offset_in(text, raw.get());
            match serde_json::from_str::<bool>(raw.get()) {
                Ok(value) => Some(At { value, at }),
                Err(_) => {
                    errors.push(loc.error(at, format!("`{key}` must be true or false"), None));
                    None
                }
            }
        };
        entry.name = string(j.name, "name", &mut errors);
        entry.address = string(j.address, "address", &mut errors);
        entry.state = string(j.state, "state", &mut errors);
        entry.weight = int(j.weight, "weight", &mut errors);
        entry.maxconn = int(j.maxconn, "maxconn", &mut errors);
        entry.backup = boolean(j.backup, "backup", &mut errors);
        entry.exclude = boolean(j.exclude, "exclude", &mut errors);
        entry.drain = boolean(j.drain, "drain", &mut errors);
        entries.push(entry);
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, f: Format) -> Vec<ServerConfig> {
        match parse(text, "inv", f) {
            Ok(v) => v,
            Err(e) => panic!("unexpected errors: {e:?}"),
        }
    }

    fn errs(text: &str, f: Format) -> Vec<String> {
        match parse(text, "inv", f) {
            Ok(v) => panic!("expected errors, got {v:?}"),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn json_list_and_object_forms() {
        let list = r#"[{"name":"web1","address":"10.0.0.1:80","weight":10,"backup":false,"exclude":false,"drain":false}]"#;
        let v = ok(list, Format::Json);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "web1");
        assert_eq!(v[0].address, "10.0.0.1:80".parse().unwrap());
        assert_eq!(v[0].weight, 10);
        assert_eq!(v[0].admin, AdminState::Ready);
        let obj = r#"{"servers":[{"name":"a","address":"[::1]:8080"}]}"#;
        let v = ok(obj, Format::Json);
        assert_eq!(v[0].weight, 1);
        assert_eq!(v[0].address, "[::1]:8080".parse().unwrap());
        assert!(ok("[]", Format::Json).is_empty());
    }

    #[test]
    fn exclude_drain_and_state() {
        let t = r#"[
            {"name":"a","address":"10.0.0.1:80","exclude":true},
            {"name":"b","address":"10.0.0.2:80","drain":true},
            {"name":"c","address":"10.0.0.3:80","state":"maint","backup":true},
            {"name":"d","address":"10.0.0.4:80","exclude":false,"maxconn":5}
        ]"#;
        let v = ok(t, Format::Json);
        let names: Vec<&str> = v.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "c", "d"]);
        assert_eq!(v[0].admin, AdminState::Drain);
        assert_eq!(v[1].admin, AdminState::Maint);
        assert!(v[1].backup);
        assert_eq!(v[2].maxconn, Some(5));
    }

    #[test]
    fn toml_servers_tables() {
        let t = "[[servers]]\nname = \"web1\"\naddress = \"10.0.0.1:80\"\nweight = 3\n\n[[servers]]\nname = \"web2\"\naddress = \"10.0.0.2:80\"\ndrain = true\n";
        let v = ok(t, Format::Toml);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].weight, 3);
        assert_eq!(v[1].admin, AdminState::Drain);
        assert!(ok("", Format::Toml).is_empty());
    }

    #[test]
    fn guess_tries_json_then_toml() {
        assert_eq!(
            ok(r#"[{"name":"a","address":"10.0.0.1:80"}]"#, Format::Guess).len(),
            1
        );
        assert_eq!(
            ok(
                "[[servers]]\nname = \"a\"\naddress = \"10.0.0.1:80\"\n",
                Format::Guess
            )
            .len(),
            1
        );
        // A broken JSON file reports the JSON error, not a confusing TOML one.
        let e = errs("[{\"name\": }]", Format::Guess);
        assert!(e[0].starts_with("inv:1:"), "{e:?}");
        assert!(e[0].contains("expected value"), "{e:?}");
    }

    #[test]
    fn json_errors_point_at_the_value() {
        let t = "[\n  {\"name\":\"web1\",\"address\":\"10.0.0.1:80\"},\n  {\"name\":\"web1\",\"address\":\"nope\",\"weight\":0}\n]";
        let e = errs(t, Format::Json);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("inv:3:11: error: server `web1` appears twice"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("inv:3:28: error: bad server address `nope`"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("inv:3:44: error: `weight` = 0 is out of range"),
            "{e:?}"
        );
    }

    #[test]
    fn json_syntax_and_unknown_keys() {
        let e = errs(
            "[\n {\"name\":\"a\",\n  \"adress\":\"10.0.0.1:80\"}\n]",
            Format::Json,
        );
        assert!(e[0].starts_with("inv:3:"), "{e:?}");
        assert!(e[0].contains("unknown field `adress`"), "{e:?}");
        let e = errs("[\n {\"name\": \"a\",,}\n]", Format::Json);
        assert!(e[0].starts_with("inv:2:"), "{e:?}");
        let e = errs(
            r#"[{"name":"a","address":"10.0.0.1:80","weight":"x"}]"#,
            Format::Json,
        );
        assert!(e[0].contains("`weight` must be an integer"), "{e:?}");
    }

    #[test]
    fn toml_errors_point_at_the_value() {
        let t = "[[servers]]\nname = \"a b\"\naddress = \"10.0.0.1\"\n";
        let e = errs(t, Format::Toml);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("inv:2:8: error: bad server name `a b`"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("inv:3:11: error: bad server address `10.0.0.1`"),
            "{e:?}"
        );
        let e = errs("[[servers]]\nname = \n", Format::Toml);
        assert!(e[0].starts_with("inv:2:"), "{e:?}");
        let e = errs("[[servers]]\nnmae = \"a\"\n", Format::Toml);
        assert!(e[0].contains("unknown field"), "{e:?}");
    }

    #[test]
    fn missing_keys_are_reported_at_the_entry() {
        let e = errs("[{\"name\":\"a\"}]", Format::Json);
        assert!(
            e[0].starts_with("inv:1:2: error: server has no `address`"),
            "{e:?}"
        );
    }
}
