//! Differential property test: fulcrum's two HTTP/1.1 server paths — the hand-written
//! relay (`proxy::h1`) and hyper (the general path, forced for a whole process with
//! `FULCRUM_RELAY=off`) — must agree on what a request is.
//!
//! proptest generates requests, valid and ambiguous: Content-Length and
//! Transfer-Encoding combinations and spellings, chunk sizes, extensions and trailers,
//! header forms (no space, trailing space, space before the colon, obs-fold, bad names,
//! obs-text, duplicated or missing Host), bare LF line ends, odd versions, methods and
//! targets, and a pipelined second request (so a smuggled one would show). Each goes raw
//! to a fulcrum served by the relay and to one served by hyper, each in front of its own
//! recording origin (`common::origin`), and the verdict must be the same: the statuses
//! the client got (or a close), and the bytes the origin received (normalised: field
//! order and case, forwarding fields, body framing).
//!
//! The seed is fixed, so CI runs the same 512 cases each time (a few seconds);
//! `RELAY_HYPER_RANDOM=1` draws a new seed to explore, `RELAY_HYPER_CASES=N` runs N.
//! Known, accepted differences are listed in [`known_difference`], each with its reason.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::origin::{client_with, normalise, proxy_config, Origin};
use common::{free_addr, relay_env, Lb};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// One fulcrum and its origin.
struct Side {
    origin: Origin,
    listen: SocketAddr,
    _lb: Lb,
}

fn side(relay: bool) -> Side {
    let origin = Origin::start();
    let listen = free_addr();
    let toml = proxy_config(listen, origin.addr);
    let env = relay_env(relay);
    let lb = Lb::start_env(&toml, listen, env);
    Side {
        origin,
        listen,
        _lb: lb,
    }
}

/// What one path made of one request.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    verdict: String,
    /// Each upstream connection's request, normalised.
    origin: Vec<String>,
}

fn outcome(side: &Side, bytes: &[u8]) -> Outcome {
    let _ = side.origin.take();
    // A verdict comes with the proxy's close (every generated exchange ends with
    // `Connection: close` or an error); the waits only bound a request left hanging.
    let verdict = client_with(
        side.listen,
        bytes,
        Duration::from_secs(3),
        Duration::from_millis(500),
    );
    // A connection that got no byte carried no request; one that got part of a request
    // the proxy then gave up on (a bad chunk after `Expect: 100-continue` was answered)
    // carried none either: whether its first bytes were written before the error is
    // timing, on either path.
    let origin = side
        .origin
        .take()
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| normalise(r))
        .filter(|r| !r.ends_with(" (incomplete)"))
        .collect();
    Outcome { verdict, origin }
}

// ---------------------------------------------------------------------------
// The generated requests.

/// A generated request: its parts, kept apart so a failure shrinks to the part that
/// matters, and the bytes they make.
#[derive(Clone)]
struct Req {
    method: &'static str,
    target: &'static str,
    version: &'static str,
    /// Line end of the head's lines: CRLF, or bare LF.
    eol: &'static str,
    host: &'static str,
    fields: Vec<&'static str>,
    framing: Framing,
    payload: Vec<u8>,
    chunk: ChunkForm,
    pipelined: bool,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.bytes()))
    }
}

/// How the body is framed.
#[derive(Clone, Copy, Debug)]
enum Framing {
    None,
    /// `Content-Length: N`, N the payload's length, spelled as the form says.
    Length(&'static str),
    /// `Content-Length` shorter than the body: the rest follows as the next bytes.
    ShortLength,
    /// Two `Content-Length` fields, equal or not.
    TwoLengths(bool),
    /// A chunked body, with this `Transfer-Encoding` field (or fields).
    Chunked(&'static str),
    /// A chunked body with both `Transfer-Encoding: chunked` and a Content-Length of
    /// the chunked bytes (`true`) or of the payload (`false`).
    ChunkedAndLength(bool),
    /// `Transfer-Encoding` that does not end in chunked, payload as is.
    OtherCoding(&'static str),
}

/// How chunk lines are written.
#[derive(Clone, Debug)]
struct ChunkForm {
    /// Split the payload into chunks of at most this many bytes.
    size: usize,
    /// Chunk size spelling: lower or upper hex, or with leading zeros.
    spelling: u8,
    /// Chunk extension after the size.
    ext: &'static str,
    /// Line end of the chunk lines.
    eol: &'static str,
    /// A trailer field after the last chunk.
    trailer: Option<&'static str>,
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let e = self.eol;
        let mut head = format!("{} {} {}{e}", self.method, self.target, self.version);
        if !self.host.is_empty() {
            head.push_str(&self.host.replace('\n', e));
            head.push_str(e);
        }
        for f in &self.fields {
            head.push_str(&f.replace('\n', e));
            head.push_str(e);
        }
        let len = self.payload.len();
        let mut body = self.payload.clone();
        match self.framing {
            Framing::None => body.clear(),
            Framing::Length(form) => {
                head.push_str(&form.replace('N', &len.to_string()).replace('\n', e));
                head.push_str(e);
            }
            Framing::ShortLength => {
                head.push_str(&format!("Content-Length: {}{e}", len / 2));
            }
            Framing::TwoLengths(same) => {
                let other = if same { len } else { len + 1 };
                head.push_str(&format!(
                    "Content-Length: {len}{e}Content-Length: {other}{e}"
                ));
            }
            Framing::Chunked(te) => {
                head.push_str(&te.replace('\n', e));
                head.push_str(e);
                body = self.chunked();
            }
            Framing::ChunkedAndLength(of_chunks) => {
                body = self.chunked();
                let n = if of_chunks { body.len() } else { len };
                head.push_str(&format!(
                    "Transfer-Encoding: chunked{e}Content-Length: {n}{e}"
                ));
            }
            Framing::OtherCoding(te) => {
                head.push_str(te);
                head.push_str(e);
            }
        }
        if !self.pipelined {
            head.push_str(&format!("Connection: close{e}"));
        }
        head.push_str(e);
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        if self.pipelined {
            out.extend_from_slice(
                format!("GET /second HTTP/1.1{e}Host: h{e}Connection: close{e}{e}").as_bytes(),
            );
        }
        out
    }

    fn chunked(&self) -> Vec<u8> {
        let c = &self.chunk;
        let size = |n: usize| match c.spelling {
            0 => format!("{n:x}"),
            1 => format!("{n:X}"),
            _ => format!("00{n:x}"),
        };
        let mut out = Vec::new();
        for piece in self.payload.chunks(c.size.max(1)) {
            out.extend_from_slice(format!("{}{}{}", size(piece.len()), c.ext, c.eol).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(c.eol.as_bytes());
        }
        out.extend_from_slice(format!("{}{}{}", size(0), c.ext, c.eol).as_bytes());
        if let Some(t) = c.trailer {
            out.extend_from_slice(format!("{t}{}", c.eol).as_bytes());
        }
        out.extend_from_slice(c.eol.as_bytes());
        out
    }
}

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(items)
}

/// Mostly the common case, so most requests reach the origin on both paths.
fn weighted(common: &'static str, odd: &'static [&'static str]) -> BoxedStrategy<&'static str> {
    prop_oneof![3 => Just(common), 1 => pick(odd)].boxed()
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        2 => Just(Framing::None),
        3 => Just(Framing::Length("Content-Length: N")),
        2 => pick(&[
            "Content-Length:N",
            "Content-Length: N ",
            "Content-Length: +N",
            "Content-Length: 0N",
            "Content-Length: N, N",
            "Content-Length: N,N",
            "content-length: N",
            "Content-Length : N",
            "Content-Length: N\n X-Folded: 1",
            "Content-Length: -N",
            "Content-Length: 0xN",
            "Content-Length: N.0",
        ])
        .prop_map(Framing::Length),
        1 => Just(Framing::ShortLength),
        1 => any::<bool>().prop_map(Framing::TwoLengths),
        3 => Just(Framing::Chunked("Transfer-Encoding: chunked")),
        2 => pick(&[
            "Transfer-Encoding: Chunked",
            "Transfer-Encoding:chunked",
            "Transfer-Encoding: chunked ",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: identity, chunked",
            "Transfer-Encoding: chunked\nTransfer-Encoding: chunked",
            "Transfer-Encoding: gzip\nTransfer-Encoding: chunked",
            "Transfer-Encoding : chunked",
            "Transfer-Encoding: \"chunked\"",
            "Transfer-Encoding: xchunked",
            "Transfer-Encoding: chunked;q=1",
        ])
        .prop_map(Framing::Chunked),
        1 => any::<bool>().prop_map(Framing::ChunkedAndLength),
        1 => pick(&[
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: identity",
            "Transfer-Encoding: chunked, gzip",
            "Transfer-Encoding:",
        ])
        .prop_map(Framing::OtherCoding),
    ]
}

fn chunk_form() -> impl Strategy<Value = ChunkForm> {
    (
        1usize..12,
        0u8..3,
        weighted(
            "",
            &[
                ";a=b",
                ";a",
                " ;a=b",
                ";a=\"q s\"",
                ";a=b;c",
                "; a = b",
                ";",
                ";a=\"unterminated",
            ],
        ),
        weighted("\r\n", &["\n"]),
        proptest::option::weighted(0.25, pick(&["X-T: 1", "Content-Length: 99", "X-T:"])),
    )
        .prop_map(|(size, spelling, ext, eol, trailer)| ChunkForm {
            size,
            spelling,
            ext,
            eol,
            trailer,
        })
}

fn request() -> impl Strategy<Value = Req> {
    let method = weighted(
        "POST",
        &[
            "GET", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "G{T", "HEAD",
        ],
    );
    let target = weighted(
        "/",
        &[
            "/a/b?x=1&y=2",
            "/a%20b",
            "/a|b",
            "/a{b}",
            "/a\"b",
            "/a\\b",
            "/a^b",
            "/a`b",
            "/a<b>",
            "/#frag",
            "/a#frag",
            "*",
            "http://h/abs",
            "//double",
            "/a/../b",
            "/\u{e9}",
            "/a b",
            "",
        ],
    );
    let version = weighted(
        "HTTP/1.1",
        &[
            "HTTP/1.0",
            "HTTP/1.2",
            "HTTP/2.0",
            "HTTP/0.9",
            "http/1.1",
            "HTTP/1.1 ",
            "HTTP/11",
        ],
    );
    let eol = weighted("\r\n", &["\n"]);
    let host = weighted(
        "Host: h",
        &[
            "Host: h:8080",
            "",
            "Host: h\nHost: h",
            "Host: h\nHost: g",
            "Host:",
            "Host: a b",
            "host: h",
            "Host: [::1]:80",
            "Host: h@evil",
            "Host:h",
            "Host : h",
            " Host: h",
        ],
    );
    let field = pick(&[
        "X-A: 1",
        "X-A:1",
        "X-A: 1 ",
        "X-A:  spaced  value  ",
        "X-Empty:",
        "X-A: 1\n X-fold",
        "X-A: 1\n\tX-fold",
        "X-A : 1",
        "X@A: 1",
        "X-A: caf\u{e9}",
        "X-A: a\u{7f}b",
        "Connection: keep-alive",
        "Connection: X-A",
        "Connection: close, X-A",
        "Keep-Alive: timeout=5",
        "Expect: 100-continue",
        "Expect: nonsense",
        "Upgrade: websocket",
        "X-Forwarded-For: 192.0.2.1",
        "TE: trailers",
        "Trailer: X-T",
        "Cookie: a=b",
        "Proxy-Connection: keep-alive",
        "X-Request-Id: abc",
        "NoColon",
        ": no-name",
    ]);
    let fields = proptest::collection::vec(field, 0..4);
    let payload = proptest::collection::vec(
        proptest::sample::select(b"abcdefghij0123456789".as_slice()),
        0..24,
    );
    (
        (method, target, version, eol, host),
        (
            fields,
            framing(),
            payload,
            chunk_form(),
            proptest::bool::weighted(0.3),
        ),
    )
        .prop_map(
            |(
                (method, target, version, eol, host),
                (fields, framing, payload, chunk, pipelined),
            )| {
                Req {
                    method,
                    target,
                    version,
                    eol,
                    host,
                    fields,
                    framing,
                    payload,
                    chunk,
                    pipelined,
                }
            },
        )
}

/// Where the two paths are known to differ, why; such a case is not compared (each is
/// counted and printed). Each is reported in NOTES-issue-18.md.
fn known_difference(req: &Req, _relay: &Outcome, hyper: &Outcome) -> Option<&'static str> {
    // The relay reads a later HTTP/1.x as 1.1 (RFC 9110 §2.5: a recipient treats a
    // later minor version as the highest it implements) before it parses the head;
    // hyper's parser (httparse) knows only 1.0 and 1.1 and answers 400. A frontend the
    // relay does not serve (header rules, TLS to servers, …, or FULCRUM_RELAY=off) so
    // refuses what a relay-served one forwards. Fixing it means rewriting every request
    // line on the hyper path (an I/O wrapper in proxy/serve.rs), not done here.
    if req.version == "HTTP/1.2" && hyper.verdict.starts_with("400") {
        return Some("HTTP/1.2: relay reads it as 1.1, hyper answers 400");
    }
    None
}

#[test]
fn relay_and_hyper_agree_on_generated_requests() {
    let relay = side(true);
    let hyper = side(false);
    let cases = std::env::var("RELAY_HYPER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let config = Config {
        cases,
        // Failures are kept as explicit cases in this file, not in files a test run writes.
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner = if std::env::var_os("RELAY_HYPER_RANDOM").is_some() {
        TestRunner::new(config)
    } else {
        TestRunner::new_with_rng(
            config,
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        )
    };
    // Counted over every run, shrinking included.
    let compared = std::cell::Cell::new(0usize);
    let forwarded = std::cell::Cell::new(0usize);
    let known = std::cell::RefCell::new(std::collections::BTreeMap::<&str, usize>::new());
    let result = runner.run(&request(), |req| {
        let bytes = req.bytes();
        let (r, h) = std::thread::scope(|s| {
            let r = s.spawn(|| outcome(&relay, &bytes));
            let h = s.spawn(|| outcome(&hyper, &bytes));
            (r.join(), h.join())
        });
        let (Ok(r), Ok(h)) = (r, h) else {
            return Err(TestCaseError::fail("a client thread panicked"));
        };
        if let Some(why) = known_difference(&req, &r, &h) {
            *known.borrow_mut().entry(why).or_default() += 1;
            return Ok(());
        }
        compared.set(compared.get() + 1);
        forwarded.set(forwarded.get() + usize::from(!r.origin.is_empty()));
        prop_assert_eq!(&r, &h, "relay (left) and hyper (right) differ");
        Ok(())
    });
    let (compared, forwarded) = (compared.get(), forwarded.get());
    println!(
        "{compared} requests compared ({forwarded} reached the origin), known differences: {:?}",
        known.borrow()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    // The generator must produce requests both paths forward, not only refusals.
    assert!(
        forwarded * 10 >= compared,
        "only {forwarded} of {compared} generated requests reached the origin"
    );
}
