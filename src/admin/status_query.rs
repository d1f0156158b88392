//! The query of `GET /api/v1/status`: a compact form, filters and pages, so
//! the read side stays cheap with thousands of servers.
//!
//! Without parameters the document is the full one (every server with its
//! counters and check history), as it always was. Parameters:
//! `compact=true` (servers with name, address, source, admin, health,
//! usable, weight, active and total only; backends without discovery
//! details), `history=false` (no `check_history`; the per-server call keeps
//! it), `backend=a,b`, `state=down` (also `up`, `ready`, `drain`, `maint`,
//! `usable`, `unusable`, `ejected`; a comma list matches any),
//! `search=text` (backend or server name or address contains it),
//! `limit=N&offset=M` (a page of the matching servers, in backend order;
//! the answer's `page` gives `next_offset`). Other parameters are ignored;
//! a bad value of these is a 400.

use crate::config::types::AdminState;
use crate::runtime::ServerState;

/// One state filter term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    Up,
    Down,
    Ready,
    Drain,
    Maint,
    Usable,
    Unusable,
    Ejected,
}

impl StateFilter {
    fn parse(s: &str) -> Option<StateFilter> {
        Some(match s {
            "up" => StateFilter::Up,
            "down" => StateFilter::Down,
            "ready" => StateFilter::Ready,
            "drain" => StateFilter::Drain,
            "maint" => StateFilter::Maint,
            "usable" => StateFilter::Usable,
            "unusable" => StateFilter::Unusable,
            "ejected" => StateFilter::Ejected,
            _ => return None,
        })
    }

    fn matches(self, s: &ServerState) -> bool {
        match self {
            StateFilter::Up => s.is_up(),
            StateFilter::Down => !s.is_up(),
            StateFilter::Ready => s.admin() == AdminState::Ready,
            StateFilter::Drain => s.admin() == AdminState::Drain,
            StateFilter::Maint => s.admin() == AdminState::Maint,
            StateFilter::Usable => s.is_usable(),
            StateFilter::Unusable => !s.is_usable(),
            StateFilter::Ejected => s.is_ejected(),
        }
    }
}

/// Largest page a client may ask for.
pub const MAX_LIMIT: usize = 100_000;

/// The parsed query of a status call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusQuery {
    pub compact: bool,
    pub history: bool,
    pub backends: Vec<String>,
    pub states: Vec<StateFilter>,
    pub search: Option<String>,
    pub limit: Option<usize>,
    pub offset: usize,
}

fn flag(v: &str) -> Option<bool> {
    match v {
        "" | "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// Decode `%XX` and `+` in a query value (names are ASCII; bad escapes stay as they are).
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(c) => {
                        out.push(c);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl StatusQuery {
    /// The full document, as without a query.
    pub fn full() -> StatusQuery {
        StatusQuery {
            history: true,
            ..StatusQuery::default()
        }
    }

    /// Parse a query string; `Err` names the bad parameter (for a 400).
    pub fn parse(query: &str) -> Result<StatusQuery, String> {
        let mut q = StatusQuery::full();
        let mut history = None;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = unescape(v);
            let bad = || format!("bad value `{v}` for `{k}`");
            match k {
                "compact" => q.compact = flag(&v).ok_or_else(bad)?,
                "history" => history = Some(flag(&v).ok_or_else(bad)?),
                "backend" => q
                    .backends
                    .extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string)),
                "state" => {
                    for s in v.split(',').filter(|s| !s.is_empty()) {
                        q.states.push(StateFilter::parse(s).ok_or_else(|| {
                            format!("unknown state `{s}`: use up, down, ready, drain, maint, usable, unusable or ejected")
                        })?);
                    }
                }
                "search" => q.search = Some(v.to_ascii_lowercase()).filter(|s| !s.is_empty()),
                "limit" => {
                    let n: usize = v.parse().map_err(|_| bad())?;
                    if n == 0 || n > MAX_LIMIT {
                        return Err(format!("limit {n} out of range; use 1..={MAX_LIMIT}"));
                    }
                    q.limit = Some(n);
                }
                "offset" => q.offset = v.parse().map_err(|_| bad())?,
                // Ignored, as every parameter was before these existed
                // (cache busters and the like keep working).
                _ => {}
            }
        }
        q.history = history.unwrap_or(!q.compact);
        Ok(q)
    }

    /// True when the query selects servers (a backend without a matching
    /// server is then left out).
    pub fn selects_servers(&self) -> bool {
        !self.states.is_empty() || self.search.is_some() || self.limit.is_some() || self.offset > 0
    }

    /// Is backend `name` asked for?
    pub fn wants_backend(&self, name: &str) -> bool {
        self.backends.is_empty() || self.backends.iter().any(|b| b == name)
    }

    /// Does server `s` of backend `backend` match the state and search filters?
    pub fn wants_server(&self, backend: &str, s: &ServerState) -> bool {
        let state_ok = self.states.is_empty() || self.states.iter().any(|f| f.matches(s));
        state_ok
            && self.search.as_deref().is_none_or(|q| {
                backend.to_ascii_lowercase().contains(q)
                    || s.name().to_ascii_lowercase().contains(q)
                    || s.address().to_string().contains(q)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(StatusQuery::parse("").unwrap(), StatusQuery::full());
        let q = StatusQuery::parse(
            "compact=true&backend=web,api&state=down&limit=10&offset=20&search=Web%2D1",
        )
        .unwrap();
        assert!(q.compact && !q.history);
        assert_eq!(q.backends, ["web", "api"]);
        assert_eq!(q.states, [StateFilter::Down]);
        assert_eq!((q.limit, q.offset), (Some(10), 20));
        assert_eq!(q.search.as_deref(), Some("web-1"));
        assert!(StatusQuery::parse("compact&history=true").unwrap().history);
        assert!(!StatusQuery::parse("history=false").unwrap().history);
        assert!(StatusQuery::parse("state=sideways").is_err());
        assert!(StatusQuery::parse("limit=0").is_err());
        assert!(StatusQuery::parse("limit=x").is_err());
        assert_eq!(StatusQuery::parse("_=123").unwrap(), StatusQuery::full());
        assert_eq!(unescape("a%zz%4"), "a%zz%4");
    }
}
