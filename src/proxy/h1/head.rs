//! Parsing request and response heads (httparse) into byte ranges of the read
//! buffer, and deciding what the relay may do with them. Nothing here
//! allocates per request beyond the reused index vectors.

use std::ops::Range;

/// Most header fields a head may carry here; more and the request goes to the
/// general (hyper) path, which applies the configured limit.
pub const MAX_FIELDS: usize = 100;

/// One header field: name and value as ranges of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Range<usize>,
    pub value: Range<usize>,
    /// What the relay does with it.
    pub kind: Kind,
}

/// Header fields the relay treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Hop-by-hop: `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`.
    Hop,
    Expect,
    XForwardedFor,
    /// `X-Forwarded-Proto` and `-Host`: replaced by the proxy's own.
    XForwardedOwn,
    XRequestId,
}

fn kind(name: &[u8]) -> Kind {
    // Cheap length gate first: most fields are none of these.
    match name.len() {
        4 if name.eq_ignore_ascii_case(b"host") => Kind::Host,
        14 if name.eq_ignore_ascii_case(b"content-length") => Kind::ContentLength,
        17 if name.eq_ignore_ascii_case(b"transfer-encoding") => Kind::TransferEncoding,
        10 if name.eq_ignore_ascii_case(b"connection") => Kind::Connection,
        10 if name.eq_ignore_ascii_case(b"keep-alive") => Kind::Hop,
        16 if name.eq_ignore_ascii_case(b"proxy-connection") => Kind::Hop,
        2 if name.eq_ignore_ascii_case(b"te") => Kind::Hop,
        7 if name.eq_ignore_ascii_case(b"trailer") => Kind::Hop,
        7 if name.eq_ignore_ascii_case(b"upgrade") => Kind::Hop,
        6 if name.eq_ignore_ascii_case(b"expect") => Kind::Expect,
        15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => Kind::XForwardedFor,
        17 if name.eq_ignore_ascii_case(b"x-forwarded-proto") => Kind::XForwardedOwn,
        16 if name.eq_ignore_ascii_case(b"x-forwarded-host") => Kind::XForwardedOwn,
        12 if name.eq_ignore_ascii_case(b"x-request-id") => Kind::XRequestId,
        _ => Kind::Other,
    }
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// The head is complete: this many bytes long.
    Complete(usize),
    /// Not something the relay handles (malformed, too many fields, an odd
    /// form): the general path decides, with the same bytes.
    Unsupported,
}

/// A request head the relay can forward as is.
#[derive(Debug, Default)]
pub struct ReqHead {
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub fields: Vec<Field>,
    pub content_length: u64,
    /// The client asked to close after this exchange.
    pub close: bool,
    pub host: Option<Range<usize>>,
}

impl ReqHead {
    /// Parse the head at the start of `buf`. Only plain HTTP/1.1 requests in
    /// origin form with no body or a single `Content-Length` body, without
    /// `Transfer-Encoding`, `Expect`, `Upgrade` or connection-specific
    /// fields listed in `Connection`, are `Complete`; anything else is left to
    /// the general path so its rules (and error answers) apply unchanged.
    pub fn parse(&mut self, buf: &[u8], max_fields: usize) -> Parsed {
        let mut raw = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let n = max_fields.clamp(1, MAX_FIELDS);
        // `n` is clamped to the array's length.
        let fields = raw.get_mut(..n).unwrap_or_default();
        let len = match req.parse_with_uninit_headers(buf, fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Unsupported,
        };
        if req.version != Some(1) {
            return Parsed::Unsupported;
        }
        let (Some(method), Some(path)) = (req.method, req.path) else {
            return Parsed::Unsupported;
        };
        // A fragment, a non-ASCII byte or a byte the hyper path's URI parser
        // refuses: that path decides (and answers 400), so both agree.
        if !path.starts_with('/') || !target_ok(path.as_bytes()) {
            return Parsed::Unsupported;
        }
        self.method = range_of(buf, method.as_bytes());
        self.target = range_of(buf, path.as_bytes());
        if self.fields.capacity() == 0 {
            self.fields = super::take_fields();
        }
        self.fields.clear();
        self.content_length = 0;
        self.close = false;
        self.host = None;
        let mut saw_length = false;
        for h in req.headers.iter() {
            let k = kind(h.name.as_bytes());
            match k {
                Kind::TransferEncoding | Kind::Expect | Kind::Hop => return Parsed::Unsupported,
                Kind::ContentLength => {
                    if saw_length {
                        return Parsed::Unsupported;
                    }
                    saw_length = true;
                    match parse_length(h.value) {
                        Some(n) => self.content_length = n,
                        None => return Parsed::Unsupported,
                    }
                }
                Kind::Connection => match connection_tokens(h.value) {
                    Some(close) => self.close |= close,
                    None => return Parsed::Unsupported,
                },
                Kind::Host => {
                    if self.host.is_some() {
                        return Parsed::Unsupported;
                    }
                    self.host = Some(range_of(buf, h.value));
                }
                _ => {}
            }
            self.fields.push(Field {
                name: range_of(buf, h.name.as_bytes()),
                value: range_of(buf, h.value),
                kind: k,
            });
        }
        if self.host.is_none() {
            return Parsed::Unsupported;
        }
        Parsed::Complete(len)
    }
}

/// Whether an origin-form target (it starts with `/`) holds only bytes the `http`
/// crate's URI parser (hyper's) takes as they are, with no fragment and no byte above
/// 0x7F: its rules (`http::uri::PathAndQuery`, WHATWG path and query states), so
/// a target the relay forwards is one the hyper path would forward too
/// (tests/relay_hyper.rs compares the two).
fn target_ok(target: &[u8]) -> bool {
    /// `http`'s longest URI.
    const MAX_LEN: usize = (u16::MAX - 1) as usize;
    if target.len() > MAX_LEN {
        return false;
    }
    let mut query = false;
    target.iter().all(|&b| match b {
        b'?' if !query => {
            query = true;
            true
        }
        // Path: what needs no percent-encoding, and `"`, `{`, `}` (taken as sent).
        0x21
        | 0x24..=0x3B
        | 0x3D
        | 0x40..=0x5F
        | 0x61..=0x7A
        | 0x7C
        | 0x7E
        | b'"'
        | b'{'
        | b'}'
            if !query =>
        {
            true
        }
        // Query.
        0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E if query => true,
        _ => false,
    })
}

/// When the request line at the start of `buf` ends in `HTTP/1.x` with x > 1,
/// make it `HTTP/1.1` (RFC 9110 §2.5: a recipient treats a later minor
/// version as the highest it implements); true when it did.
pub fn lower_minor_version(buf: &mut [u8]) -> bool {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line_end = if end > 0 && buf.get(end - 1) == Some(&b'\r') {
        end - 1
    } else {
        end
    };
    let Some(line) = buf.get_mut(..line_end) else {
        return false;
    };
    match line {
        [.., b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor]
            if (b'2'..=b'9').contains(minor) =>
        {
            *minor = b'1';
            true
        }
        _ => false,
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// A response head.
#[derive(Debug)]
pub struct RespHead {
    pub status: u16,
    /// Status code and reason as sent (`200 OK`).
    pub status_line: Range<usize>,
    pub fields: Vec<Field>,
    pub framing: Framing,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
    /// Field names listed in `Connection` (dropped when forwarding).
    listed: Vec<Range<usize>>,
}

impl Default for RespHead {
    fn default() -> Self {
        RespHead {
            status: 0,
            status_line: 0..0,
            fields: Vec::new(),
            framing: Framing::None,
            keep_alive: false,
            listed: Vec::new(),
        }
    }
}

/// Why a response head is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("malformed response head: {0}")]
    Malformed(httparse::Error),
    #[error("conflicting or invalid Content-Length")]
    Length,
}

impl RespHead {
    /// Parse a response head at the start of `buf`; `head_request` tells that
    /// the request was HEAD (no body whatever the fields say).
    pub fn parse(&mut self, buf: &[u8], head_request: bool) -> Result<Option<usize>, RespError> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut raw);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(RespError::Malformed(e)),
        };
        let code = resp.code.unwrap_or(0);
        self.status = code;
        // httparse has checked "HTTP/1.x NNN"; the code starts at byte 9.
        let line_end = at(buf, 0..len)
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(len);
        let line_end = if line_end > 0 && buf.get(line_end - 1) == Some(&b'\r') {
            line_end - 1
        } else {
            line_end
        };
        self.status_line = 9.min(line_end)..line_end;
        if self.fields.capacity() == 0 {
            self.fields = super::take_fields();
        }
        self.fields.clear();
        self.listed.clear();
        let mut keep_alive = resp.version == Some(1);
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut te = false;
        for h in resp.headers.iter() {
            let k = kind(h.name.as_bytes());
            match k {
                Kind::ContentLength => match (parse_length(h.value), length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => return Err(RespError::Length),
                },
                Kind::TransferEncoding => {
                    te = true;
                    // Chunked must be the final coding for the body to be chunked.
                    chunked = last_token(h.value).eq_ignore_ascii_case(b"chunked");
                }
                Kind::Connection => {
                    for t in h.value.split(|&b| b == b',') {
                        let t = trim(t);
                        if t.eq_ignore_ascii_case(b"close") {
                            keep_alive = false;
                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                            keep_alive |= resp.version == Some(0);
                        } else if !t.is_empty() && !protected(t) {
                            self.listed.push(range_of(buf, t));
                        }
                    }
                }
                _ => {}
            }
            self.fields.push(Field {
                name: range_of(buf, h.name.as_bytes()),
                value: range_of(buf, h.value),
                kind: k,
            });
        }
        self.framing = if head_request || code < 200 || code == 204 || code == 304 {
            Framing::None
        } else if te {
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match length {
                Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
        // A close-delimited body ends the connection; with both TE and a
        // length, the length is ignored (RFC 9112 §6.3) and the connection
        // cannot be trusted for another message.
        self.keep_alive = keep_alive && self.framing != Framing::Close && !(te && length.is_some());
        Ok(Some(len))
    }

    /// True when `field` is forwarded to the client.
    pub fn forwards(&self, buf: &[u8], field: &Field) -> bool {
        match field.kind {
            Kind::Connection | Kind::Hop => false,
            Kind::TransferEncoding => self.framing == Framing::Chunked,
            Kind::ContentLength => matches!(self.framing, Framing::Length(_) | Framing::None),
            _ => !self
                .listed
                .iter()
                .any(|l| at(buf, l.clone()).eq_ignore_ascii_case(at(buf, field.name.clone()))),
        }
    }
}

/// `Connection` tokens a request may carry on the relay: `close` (true) and
/// `keep-alive` (false). Anything else names hop-by-hop fields or asks for
/// an upgrade: `None`.
fn connection_tokens(v: &[u8]) -> Option<bool> {
    let mut close = false;
    for t in v.split(|&b| b == b',') {
        let t = trim(t);
        if t.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !(t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive")) {
            return None;
        }
    }
    Some(close)
}

/// Fields a `Connection` list cannot make the proxy drop (see headers.rs).
fn protected(name: &[u8]) -> bool {
    matches!(
        kind(name),
        Kind::Host
            | Kind::ContentLength
            | Kind::XForwardedFor
            | Kind::XForwardedOwn
            | Kind::XRequestId
    )
}

/// A Content-Length value: digits only.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

fn last_token(v: &[u8]) -> &[u8] {
    trim(v.rsplit(|&b| b == b',').next().unwrap_or(v))
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The range `part` occupies in `buf` (`part` is a subslice of it).
/// The part of `buf` at `r` (a range the parser took from `buf`; empty if it were not).
pub(crate) fn at(buf: &[u8], r: Range<usize>) -> &[u8] {
    buf.get(r).unwrap_or_default()
}

fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> (ReqHead, Parsed) {
        let mut h = ReqHead::default();
        let p = h.parse(s.as_bytes(), 100);
        (h, p)
    }

    #[test]
    fn plain_get_is_complete() {
        let s = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nNEXT";
        let (h, p) = req(s);
        assert_eq!(p, Parsed::Complete(s.len() - 4));
        assert_eq!(&s[h.method.clone()], "GET");
        assert_eq!(&s[h.target.clone()], "/a?b=1");
        assert_eq!(&s[h.host.clone().unwrap()], "x");
        assert_eq!(h.fields.len(), 2);
        assert!(!h.close);
    }

    #[test]
    fn targets_hyper_refuses_are_left_to_hyper() {
        // Each of these `http::Uri` refuses (hyper answers 400); found by tests/relay_hyper.rs.
        for t in ["/a`b", "/a<b", "/a>b", "/a b", "/?a\"b", "/?a<b", "/a#f"] {
            let s = format!("GET {t} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(req(&s).1, Parsed::Unsupported, "{t:?}");
            assert!(
                http::uri::PathAndQuery::try_from(t).is_err() || t.contains('#'),
                "{t:?} is refused by http too"
            );
        }
        // …and these it takes, so the relay forwards them.
        for t in [
            "/a\"b",
            "/a{b}",
            "/a|b",
            "/a^b",
            "/a\\b",
            "/?a`b^c|d{e}",
            "/%2e/?x=1&y=@",
        ] {
            let s = format!("GET {t} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert!(matches!(req(&s).1, Parsed::Complete(_)), "{t:?}");
            assert!(http::uri::PathAndQuery::try_from(t).is_ok(), "{t:?}");
        }
    }

    #[test]
    fn partial_then_complete() {
        assert_eq!(req("GET / HTTP/1.1\r\nHost: x\r\n").1, Parsed::Partial);
    }

    #[test]
    fn body_length_and_close() {
        let (h, p) =
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: close\r\n\r\n");
        assert!(matches!(p, Parsed::Complete(_)));
        assert_eq!(h.content_length, 12);
        assert!(h.close);
    }

    #[test]
    fn odd_requests_go_to_the_general_path() {
        for s in [
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, x-secret\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nKeep-Alive: 5\r\n\r\n",
            "G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(req(s).1, Parsed::Unsupported, "{s:?}");
        }
    }

    #[test]
    fn too_many_fields_is_unsupported() {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..5 {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        let mut h = ReqHead::default();
        assert_eq!(h.parse(s.as_bytes(), 3), Parsed::Unsupported);
        assert!(matches!(h.parse(s.as_bytes(), 10), Parsed::Complete(_)));
    }

    fn resp(s: &str, head: bool) -> RespHead {
        let mut r = RespHead::default();
        r.parse(s.as_bytes(), head).unwrap().unwrap();
        r
    }

    #[test]
    fn response_framing() {
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false);
        assert_eq!(r.framing, Framing::Length(5));
        assert!(r.keep_alive);
        let r = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!(r.framing, Framing::Close);
        assert!(!r.keep_alive);
        let r = resp("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(r.framing, Framing::Close);
        assert!(!r.keep_alive);
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
        assert_eq!(r.framing, Framing::None);
        let r = resp("HTTP/1.1 304 Not Modified\r\n\r\n", false);
        assert_eq!(r.framing, Framing::None);
        assert!(r.keep_alive);
        let r = resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!r.keep_alive);
        let r = resp(
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            false,
        );
        assert!(r.keep_alive);
        let r = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(r.framing, Framing::Chunked);
        assert!(!r.keep_alive, "CL with TE: do not reuse the connection");
    }

    #[test]
    fn response_length_conflicts_are_errors() {
        let mut r = RespHead::default();
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(r.parse(s.as_bytes(), false), Err(RespError::Length));
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n";
        assert_eq!(r.parse(s.as_bytes(), false), Err(RespError::Length));
    }

    #[test]
    fn response_connection_listed_fields_are_dropped() {
        let s = "HTTP/1.1 200 OK\r\nConnection: x-private, close\r\nX-Private: 1\r\nHost-Id: 2\r\nContent-Length: 0\r\n\r\n";
        let r = resp(s, false);
        let kept: Vec<&str> = r
            .fields
            .iter()
            .filter(|f| r.forwards(s.as_bytes(), f))
            .map(|f| &s[f.name.clone()])
            .collect();
        assert_eq!(kept, ["Host-Id", "Content-Length"]);
        assert!(!r.keep_alive);
        assert_eq!(&s[r.status_line.clone()], "200 OK");
    }
}
