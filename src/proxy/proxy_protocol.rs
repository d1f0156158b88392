//! The PROXY protocol (HAProxy's `proxy-protocol.txt`), versions 1 and 2: the header a
//! load balancer puts in front of a TCP stream to say who the real client was.
//!
//! ```text
//! v1: "PROXY TCP4 <src ip> <dst ip> <src port> <dst port>\r\n"   (or TCP6, or "PROXY UNKNOWN...\r\n"),
//!     at most 107 bytes with the CRLF
//! v2: \r\n\r\n\0\r\nQUIT\n | ver(4)=2 cmd(4) | family(4) transport(4) | len (u16 BE) | len bytes:
//!     addresses (INET: 4+4+2+2, INET6: 16+16+2+2, UNIX: 108+108), then TLVs (type, u16 BE length, value)
//! ```
//!
//! The codec is sans-IO: [`parse`] looks at a buffer and says "here is a header and its
//! length", "need more bytes", "not a PROXY header" or "a broken one". [`read_header`] is
//! the thin async wrapper a listener uses; it never reads past the header, so the payload
//! that follows stays in the stream for the real protocol.
//!
//! These bytes come from the network: nothing here indexes unchecked, and nothing
//! allocates more than the header's own (bounded) length.
// Outside bytes are parsed here: no panicking shortcut on them outside tests (an index
// that is proven in range says so with an `#[allow]` and its reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Length of the fixed part of a v2 header (signature, version/command, family, length).
pub const V2_FIXED_LEN: usize = 16;
/// Longest v1 header the spec allows, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// The fixed start of every v1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The shortest v1 header ("PROXY UNKNOWN\r\n"); also the shortest header of either version.
const V1_MIN_LEN: usize = 15;
/// Address block lengths in v2 by family.
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;
/// v2 command nibbles.
const V2_CMD_LOCAL: u8 = 0x0;
const V2_CMD_PROXY: u8 = 0x1;

/// Addresses carried by a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyAddrs {
    /// A proxied TCP connection: `src` is the real client, `dst` the address it connected to.
    Tcp {
        /// The original client.
        src: SocketAddr,
        /// The address the client connected to (on the sending proxy).
        dst: SocketAddr,
    },
    /// No usable addresses (v1 `UNKNOWN`, v2 `LOCAL`, or a v2 family other than TCP over
    /// IPv4/IPv6): the receiver uses the real peer address, as the spec requires.
    Unknown,
}

/// One decoded PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Protocol version: 1 (text) or 2 (binary).
    pub version: u8,
    /// The addresses, or [`ProxyAddrs::Unknown`].
    pub addrs: ProxyAddrs,
    /// v2 type-length-value extensions in wire order, values kept raw (empty for v1).
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

impl ProxyHeader {
    /// The real client address, when the header carries one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.addrs {
            ProxyAddrs::Tcp { src, .. } => Some(src),
            ProxyAddrs::Unknown => None,
        }
    }
}

/// Why [`parse`] did not return a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The buffer is a valid prefix of a header: read more bytes and try again.
    #[error("incomplete PROXY header")]
    Incomplete,
    /// The bytes do not start like a PROXY header at all (for instance a plain HTTP request).
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// The bytes start like a PROXY header but break its rules.
    #[error("invalid PROXY header: {0}")]
    Invalid(&'static str),
}

/// Why [`read_header`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The whole header did not arrive within the timeout.
    #[error("timed out reading the PROXY header")]
    Timeout,
    /// The peer closed the connection before the header was complete.
    #[error("connection closed before the PROXY header was complete")]
    Eof,
    /// Reading the stream failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes were not a valid PROXY header ([`ParseError::NotProxy`] or [`ParseError::Invalid`]).
    #[error(transparent)]
    Parse(ParseError),
}

/// Parses a header at the start of `buf`; on success returns the header and how many bytes
/// it used (the rest of `buf` is payload).
///
/// [`ParseError::Incomplete`] means `buf` is a valid prefix of a header; callers read more,
/// bounded by [`V1_MAX_LEN`] for v1 and `V2_FIXED_LEN + 65535` for v2 (this function
/// reports an overlong v1 line as invalid by itself).
pub fn parse(buf: &[u8]) -> Result<(ProxyHeader, usize), ParseError> {
    match buf.first() {
        None => Err(ParseError::Incomplete),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ParseError::NotProxy),
    }
}

/// `Incomplete` if `buf` is a prefix of `expected`, `NotProxy` if it differs from it.
fn check_prefix(buf: &[u8], expected: &[u8]) -> Result<(), ParseError> {
    let n = buf.len().min(expected.len());
    if buf.get(..n) != expected.get(..n) {
        return Err(ParseError::NotProxy);
    }
    if n < expected.len() {
        return Err(ParseError::Incomplete);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Version 1
// ---------------------------------------------------------------------------------------

fn parse_v1(buf: &[u8]) -> Result<(ProxyHeader, usize), ParseError> {
    check_prefix(buf, V1_PREFIX)?;
    let window = buf.get(..buf.len().min(V1_MAX_LEN)).unwrap_or(buf);
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        // No line end yet: say "invalid" as early as possible so a caller does not wait
        // for 107 bytes of garbage, otherwise ask for more.
        check_v1_partial(window)?;
        if buf.len() >= V1_MAX_LEN {
            return Err(ParseError::Invalid("v1 line longer than 107 bytes"));
        }
        return Err(ParseError::Incomplete);
    };
    let line_end = lf
        .checked_sub(1)
        .filter(|&cr| window.get(cr) == Some(&b'\r'));
    let Some(cr) = line_end else {
        return Err(ParseError::Invalid("v1 line must end with CRLF"));
    };
    let line = window
        .get(V1_PREFIX.len()..cr)
        .ok_or(ParseError::Invalid("v1 line too short"))?;
    if line.contains(&b'\r') {
        // Also refused before the LF arrives (`check_v1_partial`); keep both in agreement.
        return Err(ParseError::Invalid("v1 line must end with CRLF"));
    }
    let addrs = parse_v1_line(line)?;
    let header = ProxyHeader {
        version: 1,
        addrs,
        tlvs: Vec::new(),
    };
    Ok((header, lf + 1))
}

/// Rejects a v1 line that has no LF yet but can no longer become valid.
fn check_v1_partial(window: &[u8]) -> Result<(), ParseError> {
    let rest = window.get(V1_PREFIX.len()..).unwrap_or_default();
    // A CR anywhere but at the very end cannot be followed by the LF it needs.
    if let Some(cr) = rest.iter().position(|&b| b == b'\r') {
        if cr + 1 != rest.len() {
            return Err(ParseError::Invalid("v1 line must end with CRLF"));
        }
    }
    let proto_len = rest.len().min(7);
    let proto = rest.get(..proto_len).unwrap_or_default();
    if b"UNKNOWN".starts_with(proto) {
        return Ok(()); // anything may follow UNKNOWN up to the CRLF
    }
    let tcp = b"TCP4 ".starts_with(proto.get(..proto_len.min(5)).unwrap_or_default())
        || b"TCP6 ".starts_with(proto.get(..proto_len.min(5)).unwrap_or_default());
    if !tcp {
        return Err(ParseError::Invalid(
            "v1 protocol must be TCP4, TCP6 or UNKNOWN",
        ));
    }
    let fields = rest.get(5..).unwrap_or_default();
    let allowed = |b: &u8| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b' ' | b'\r');
    if !fields.iter().all(allowed) {
        return Err(ParseError::Invalid("v1 unexpected character"));
    }
    Ok(())
}

/// Parses what follows "PROXY " up to (not including) the CRLF.
fn parse_v1_line(line: &[u8]) -> Result<ProxyAddrs, ParseError> {
    if let Some(after) = line.strip_prefix(b"UNKNOWN") {
        // The spec says to ignore whatever follows UNKNOWN; it must still be a separate word.
        if after.is_empty() || after.first() == Some(&b' ') {
            return Ok(ProxyAddrs::Unknown);
        }
        return Err(ParseError::Invalid(
            "v1 protocol must be TCP4, TCP6 or UNKNOWN",
        ));
    }
    let (v6, fields) = if let Some(f) = line.strip_prefix(b"TCP4 ") {
        (false, f)
    } else if let Some(f) = line.strip_prefix(b"TCP6 ") {
        (true, f)
    } else {
        return Err(ParseError::Invalid(
            "v1 protocol must be TCP4, TCP6 or UNKNOWN",
        ));
    };
    let text = std::str::from_utf8(fields).map_err(|_| ParseError::Invalid("v1 non-ASCII"))?;
    let mut parts = text.split(' ');
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ParseError::Invalid(
            "v1 needs exactly: src dst sport dport, single spaces",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, ParseError> {
        if v6 {
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ParseError::Invalid("v1 bad IPv6 address"))
        } else {
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ParseError::Invalid("v1 bad IPv4 address"))
        }
    };
    Ok(ProxyAddrs::Tcp {
        src: SocketAddr::new(ip(src)?, parse_port(sport)?),
        dst: SocketAddr::new(ip(dst)?, parse_port(dport)?),
    })
}

/// A decimal port 0..=65535, digits only, no sign, no leading zero (except "0" itself).
fn parse_port(s: &str) -> Result<u16, ParseError> {
    let bad = ParseError::Invalid("v1 bad port");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(ParseError::Invalid("v1 port with leading zero"));
    }
    s.parse::<u16>().map_err(|_| bad)
}

// ---------------------------------------------------------------------------------------
// Version 2
// ---------------------------------------------------------------------------------------

fn parse_v2(buf: &[u8]) -> Result<(ProxyHeader, usize), ParseError> {
    // Check each fixed byte as soon as it arrives, so garbage is refused early.
    check_prefix(buf, &V2_SIGNATURE)?;
    let ver_cmd = *buf.get(12).ok_or(ParseError::Incomplete)?;
    if ver_cmd >> 4 != 2 {
        return Err(ParseError::Invalid("v2 version must be 2"));
    }
    let command = ver_cmd & 0x0f;
    if command != V2_CMD_LOCAL && command != V2_CMD_PROXY {
        return Err(ParseError::Invalid("v2 command must be LOCAL or PROXY"));
    }
    let fam = *buf.get(13).ok_or(ParseError::Incomplete)?;
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if family > 3 || transport > 2 {
        return Err(ParseError::Invalid(
            "v2 unknown address family or transport",
        ));
    }
    let len_bytes: [u8; 2] = buf
        .get(14..16)
        .and_then(|s| s.try_into().ok())
        .ok_or(ParseError::Incomplete)?;
    let len = usize::from(u16::from_be_bytes(len_bytes));
    let total = V2_FIXED_LEN + len;
    let block = buf.get(V2_FIXED_LEN..total).ok_or(ParseError::Incomplete)?;

    let unknown = |tlvs| ProxyHeader {
        version: 2,
        addrs: ProxyAddrs::Unknown,
        tlvs,
    };
    if command == V2_CMD_LOCAL {
        // Health checks from the proxy itself: the whole block is discarded (spec §2.2).
        return Ok((unknown(Vec::new()), total));
    }
    let addr_len = match family {
        1 => V2_INET_LEN,
        2 => V2_INET6_LEN,
        3 => V2_UNIX_LEN,
        // AF_UNSPEC: the receiver ignores the block entirely.
        _ => return Ok((unknown(Vec::new()), total)),
    };
    let (addr_block, tlv_block) = block.split_at_checked(addr_len).ok_or(ParseError::Invalid(
        "v2 length shorter than the address block",
    ))?;
    let tlvs = parse_tlvs(tlv_block)?;
    let addrs = match (family, transport) {
        (1, 1) => tcp_addrs::<4>(addr_block)?,
        (2, 1) => tcp_addrs::<16>(addr_block)?,
        // UDP and UNIX sockets carry nothing a TCP listener can use.
        _ => ProxyAddrs::Unknown,
    };
    let header = ProxyHeader {
        version: 2,
        addrs,
        tlvs,
    };
    Ok((header, total))
}

/// Reads `src addr (N bytes) | dst addr (N bytes) | src port | dst port` from a v2 address block.
fn tcp_addrs<const N: usize>(block: &[u8]) -> Result<ProxyAddrs, ParseError>
where
    IpAddr: From<[u8; N]>,
{
    let short = ParseError::Invalid("v2 address block too short");
    let (src, rest) = block.split_first_chunk::<N>().ok_or(short)?;
    let (dst, rest) = rest.split_first_chunk::<N>().ok_or(short)?;
    let (&[s0, s1, d0, d1], _) = rest.split_first_chunk::<4>().ok_or(short)?;
    Ok(ProxyAddrs::Tcp {
        src: SocketAddr::new(IpAddr::from(*src), u16::from_be_bytes([s0, s1])),
        dst: SocketAddr::new(IpAddr::from(*dst), u16::from_be_bytes([d0, d1])),
    })
}

/// Parses the TLV area; a TLV that overruns the block (or a truncated TLV header) is invalid.
fn parse_tlvs(mut rest: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, ParseError> {
    let mut tlvs = Vec::new();
    while !rest.is_empty() {
        let (&[kind, l0, l1], after) = rest
            .split_first_chunk::<3>()
            .ok_or(ParseError::Invalid("v2 truncated TLV header"))?;
        let (value, after) = after
            .split_at_checked(usize::from(u16::from_be_bytes([l0, l1])))
            .ok_or(ParseError::Invalid("v2 TLV overruns the header"))?;
        tlvs.push((kind, value.to_vec()));
        rest = after;
    }
    Ok(tlvs)
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Encodes a v1 header: `PROXY TCP4 a b p q\r\n` or `TCP6`; mixed address families
/// cannot be written in v1 and become `PROXY UNKNOWN\r\n`.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
        (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
        _ => return b"PROXY UNKNOWN\r\n".to_vec(),
    };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// Encodes a v2 header with the PROXY command over STREAM: AF_INET when both addresses are
/// IPv4, otherwise AF_INET6 (an IPv4 address of a mixed pair is written IPv4-mapped, as
/// HAProxy does). No TLVs.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED_LEN + V2_INET6_LEN);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x20 | V2_CMD_PROXY);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&(V2_INET_LEN as u16).to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&(V2_INET6_LEN as u16).to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

// ---------------------------------------------------------------------------------------
// Reading from a stream
// ---------------------------------------------------------------------------------------

/// Reads one header from `r`, bounded by `timeout` for the whole header.
///
/// Reads exactly the header's bytes and not one more (no peeking, no buffering): the
/// payload that follows stays in `r`. A stream that does not start with a PROXY header is
/// an error ([`ParseError::NotProxy`]); such a connection should be closed.
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<ProxyHeader, ReadError> {
    tokio::time::timeout(timeout, read_header_inner(r))
        .await
        .map_err(|_| ReadError::Timeout)?
}

async fn read_header_inner<R: AsyncRead + Unpin>(r: &mut R) -> Result<ProxyHeader, ReadError> {
    let mut buf = Vec::with_capacity(V1_MAX_LEN);
    loop {
        match parse(&buf) {
            Ok((header, used)) if used == buf.len() => return Ok(header),
            // `next_read_len` never reads past a header end; this is a guard, not a path.
            Ok(_) => return Err(ReadError::Parse(ParseError::Invalid("read past header"))),
            Err(ParseError::Incomplete) => {}
            Err(e) => return Err(ReadError::Parse(e)),
        }
        let want = next_read_len(&buf);
        let start = buf.len();
        buf.resize(start + want, 0);
        let chunk = buf.get_mut(start..).unwrap_or_default();
        let n = r.read(chunk).await?;
        if n == 0 {
            return Err(ReadError::Eof);
        }
        buf.truncate(start + n);
    }
}

/// How many bytes can be read next without reading past the end of a header whose first
/// `buf.len()` bytes we have (and `parse` said `Incomplete`). Always at least 1.
fn next_read_len(buf: &[u8]) -> usize {
    if buf.len() < V1_MIN_LEN {
        // No header of either version is shorter than this.
        return V1_MIN_LEN - buf.len();
    }
    if buf.first() == Some(&b'\r') {
        // v2: the fixed part, then exactly the declared length.
        return match buf.get(14..16) {
            Some(&[a, b]) => (V2_FIXED_LEN + usize::from(u16::from_be_bytes([a, b])))
                .saturating_sub(buf.len())
                .max(1),
            _ => V2_FIXED_LEN.saturating_sub(buf.len()).max(1),
        };
    }
    // v1: the line ends with CRLF; unless we already hold the CR, at least two more bytes.
    if buf.last() == Some(&b'\r') {
        1
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tcp(src: &str, dst: &str) -> ProxyAddrs {
        ProxyAddrs::Tcp {
            src: sa(src),
            dst: sa(dst),
        }
    }

    fn ok(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf) {
            Ok(r) => r,
            Err(e) => panic!("{:?} → {e:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn invalid(buf: &[u8]) {
        assert!(
            matches!(parse(buf), Err(ParseError::Invalid(_))),
            "{:?} → {:?}",
            String::from_utf8_lossy(buf),
            parse(buf)
        );
    }

    /// Every strict prefix of a valid header is `Incomplete`.
    fn prefixes_incomplete(full: &[u8]) {
        for n in 0..full.len() {
            assert_eq!(
                parse(&full[..n]).unwrap_err(),
                ParseError::Incomplete,
                "prefix {n} of {:?}",
                String::from_utf8_lossy(full)
            );
        }
    }

    /// A v2 header with the given command/version byte, family byte and block.
    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(fam);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    const V4_BLOCK: [u8; 12] = [192, 0, 2, 1, 10, 0, 0, 1, 0x30, 0x39, 0, 80];

    #[test]
    fn v1_tcp4() {
        let line = b"PROXY TCP4 192.0.2.1 10.0.0.1 12345 80\r\nGET / HTTP/1.1\r\n";
        let (h, n) = ok(line);
        assert_eq!(n, 40);
        assert_eq!(h.version, 1);
        assert_eq!(h.addrs, tcp("192.0.2.1:12345", "10.0.0.1:80"));
        assert_eq!(h.source(), Some(sa("192.0.2.1:12345")));
        assert!(h.tlvs.is_empty());
        prefixes_incomplete(&line[..n]);
    }

    #[test]
    fn v1_tcp6_and_extremes() {
        let line = b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
        let (h, n) = ok(line);
        assert_eq!(n, line.len());
        assert_eq!(h.addrs, tcp("[2001:db8::1]:0", "[::1]:65535"));
        prefixes_incomplete(line);
        let longest = format!("PROXY TCP6 {0} {0} 65535 65535\r\n", ["ffff"; 8].join(":"));
        assert_eq!(longest.len(), 104);
        ok(longest.as_bytes());
    }

    #[test]
    fn v1_unknown() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
            b"PROXY UNKNOWN anything at all\r\n",
        ] {
            let (h, n) = ok(line);
            assert_eq!(
                (h.addrs, n, h.source()),
                (ProxyAddrs::Unknown, line.len(), None)
            );
            prefixes_incomplete(line);
        }
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4  192.0.2.1 10.0.0.1 1 2\r\n"[..], // double space
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2 \r\n",      // trailing space
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1\r\n",         // missing port
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2 3\r\n",     // extra field
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\n",         // bare LF
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\rX\r\n",    // stray CR
            b"PROXY TCP4 192.0.2.256 10.0.0.1 1 2\r\n",     // octet out of range
            b"PROXY TCP4 192.0.2.01 10.0.0.1 1 2\r\n",      // leading zero octet
            b"PROXY TCP4 ::1 ::1 1 2\r\n",                  // v6 under TCP4
            b"PROXY TCP6 192.0.2.1 10.0.0.1 1 2\r\n",       // v4 under TCP6
            b"PROXY TCP6 ::g ::1 1 2\r\n",                  // bad hex
            b"PROXY TCP4 192.0.2.1 10.0.0.1 65536 2\r\n",   // port range
            b"PROXY TCP4 192.0.2.1 10.0.0.1 080 2\r\n",     // leading zero port
            b"PROXY TCP4 192.0.2.1 10.0.0.1 +80 2\r\n",     // sign
            b"PROXY TCP4 192.0.2.1 10.0.0.1  2\r\n",        // empty port
            b"PROXY TCP5 192.0.2.1 10.0.0.1 1 2\r\n",       // protocol
            b"PROXY tcp4 192.0.2.1 10.0.0.1 1 2\r\n",       // case
            b"PROXY UNKNOWNX\r\n",                          // UNKNOWN glued to a word
            b"PROXY UNKNOWN a\rb\r\n",                      // CR inside the line
            b"PROXY \r\n",                                  // empty
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\xff\r\n",      // junk byte
        ] {
            invalid(bad);
        }
        // No CRLF within 107 bytes.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN, b'x');
        invalid(&long);
        // A CRLF just past 107 bytes does not help.
        long.extend_from_slice(b"\r\n");
        invalid(&long);
        // …but one ending exactly at byte 107 is fine.
        long.truncate(V1_MAX_LEN - 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(ok(&long).1, V1_MAX_LEN);
    }

    #[test]
    fn v1_garbage_refused_before_the_line_ends() {
        // Without waiting for a CRLF (or 107 bytes).
        for bad in [
            &b"PROXY HTTP"[..],
            b"PROXY TCP4 1.2.3.4 x",
            b"PROXY TCP4 1.2.3.4\r ",
            b"PROXY TCP6 ::1 \n",
        ] {
            invalid(bad);
        }
    }

    #[test]
    fn not_proxy() {
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"G",
            b"PROXZ",
            b"POST",
            b"\r\n\r\n\0\r\nQUIX\n",
            b"\r\nGET",
            b"\x16\x03\x01", // TLS ClientHello
        ] {
            assert_eq!(parse(buf).unwrap_err(), ParseError::NotProxy, "{buf:?}");
        }
    }

    #[test]
    fn v2_ipv4() {
        let mut buf = v2(0x21, 0x11, &V4_BLOCK);
        let (h, n) = ok(&buf);
        assert_eq!((h.version, n), (2, 28));
        assert_eq!(h.addrs, tcp("192.0.2.1:12345", "10.0.0.1:80"));
        prefixes_incomplete(&buf);
        buf.extend_from_slice(b"payload");
        assert_eq!(ok(&buf).1, 28);
    }

    #[test]
    fn v2_ipv6_with_tlvs() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&[0x01, 0xbb, 0x00, 0x50]);
        block.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']); // ALPN
        block.extend_from_slice(&[0x04, 0x00, 0x00]); // NOOP, empty
        let buf = v2(0x21, 0x21, &block);
        let (h, n) = ok(&buf);
        assert_eq!(n, buf.len());
        assert_eq!(h.addrs, tcp("[2001:db8::1]:443", "[2001:db8::2]:80"));
        assert_eq!(h.tlvs, vec![(1, b"h2".to_vec()), (4, vec![])]);
        prefixes_incomplete(&buf);
    }

    #[test]
    fn v2_local_unspec_unix_udp_are_unknown() {
        let unix_block = [0u8; V2_UNIX_LEN];
        for (ver_cmd, fam, block) in [
            (0x20, 0x11, &V4_BLOCK[..]),   // LOCAL, even with addresses
            (0x20, 0x00, &[][..]),         // LOCAL, UNSPEC
            (0x20, 0x00, &[1, 2, 3][..]),  // LOCAL with junk: discarded
            (0x21, 0x00, &[9, 9][..]),     // PROXY, UNSPEC: block ignored
            (0x21, 0x31, &unix_block[..]), // UNIX stream
            (0x21, 0x12, &V4_BLOCK[..]),   // UDP over IPv4
        ] {
            let buf = v2(ver_cmd, fam, block);
            let (h, n) = ok(&buf);
            assert_eq!(
                (h.addrs, n),
                (ProxyAddrs::Unknown, buf.len()),
                "{ver_cmd:x} {fam:x}"
            );
        }
    }

    #[test]
    fn v2_malformed() {
        invalid(&v2(0x11, 0x11, &V4_BLOCK)); // version 1 in a v2 header
        invalid(&v2(0x31, 0x11, &V4_BLOCK)); // version 3
        invalid(&v2(0x22, 0x11, &V4_BLOCK)); // command 2
        invalid(&v2(0x21, 0x41, &V4_BLOCK)); // family 4
        invalid(&v2(0x21, 0x13, &V4_BLOCK)); // transport 3
        invalid(&v2(0x21, 0x11, &V4_BLOCK[..11])); // length below the INET block
        invalid(&v2(0x21, 0x21, &[0; 35])); // below the INET6 block
        invalid(&v2(0x21, 0x31, &[0; 100])); // below the UNIX block
        let mut block = V4_BLOCK.to_vec();
        block.extend_from_slice(&[0x01, 0x00, 0x05, b'h']); // TLV overruns
        invalid(&v2(0x21, 0x11, &block));
        let mut block = V4_BLOCK.to_vec();
        block.extend_from_slice(&[0x01, 0x00]); // truncated TLV header
        invalid(&v2(0x21, 0x11, &block));
        // Bad fixed bytes are refused as soon as they arrive.
        assert!(matches!(
            parse(&v2(0x11, 0x11, &V4_BLOCK)[..13]),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse(&v2(0x21, 0xff, &V4_BLOCK)[..14]),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn v2_longest_header() {
        let mut block = V4_BLOCK.to_vec();
        let value_len = usize::from(u16::MAX) - V2_INET_LEN - 3;
        block.extend_from_slice(&[0xe0]);
        block.extend_from_slice(&(value_len as u16).to_be_bytes());
        block.resize(usize::from(u16::MAX), 7);
        let buf = v2(0x21, 0x11, &block);
        let (h, n) = ok(&buf);
        assert_eq!(n, V2_FIXED_LEN + 65535);
        assert_eq!(h.tlvs.first().map(|t| t.1.len()), Some(value_len));
    }

    #[test]
    fn round_trips() {
        let pairs = [
            ("192.0.2.1:12345", "10.0.0.1:80"),
            ("0.0.0.0:0", "255.255.255.255:65535"),
            ("[2001:db8::1]:443", "[::1]:8080"),
            ("[::ffff:1.2.3.4]:1", "[fe80::1]:2"),
        ];
        for (s, d) in pairs {
            for (version, bytes) in [(1, encode_v1(sa(s), sa(d))), (2, encode_v2(sa(s), sa(d)))] {
                let (h, n) = ok(&bytes);
                assert_eq!((h.version, n), (version, bytes.len()));
                assert_eq!(h.addrs, tcp(s, d), "v{version} {s} {d}");
            }
        }
        assert_eq!(
            encode_v1(sa("192.0.2.1:1"), sa("10.0.0.1:2")),
            b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\r\n"
        );
    }

    #[test]
    fn mixed_families() {
        let (s, d) = (sa("192.0.2.1:1"), sa("[2001:db8::2]:2"));
        assert_eq!(encode_v1(s, d), b"PROXY UNKNOWN\r\n");
        let (h, _) = ok(&encode_v2(s, d));
        assert_eq!(h.addrs, tcp("[::ffff:192.0.2.1]:1", "[2001:db8::2]:2"));
    }

    #[tokio::test]
    async fn read_header_leaves_payload_unread() {
        let cases = [
            encode_v1(sa("192.0.2.1:1"), sa("10.0.0.1:2")),
            encode_v1(sa("[::1]:1"), sa("[::2]:2")),
            b"PROXY UNKNOWN\r\n".to_vec(),
            encode_v2(sa("192.0.2.1:1"), sa("10.0.0.1:2")),
            encode_v2(sa("[::1]:1"), sa("[::2]:2")),
            v2(0x20, 0x00, &[]),
        ];
        for header in cases {
            let (mut client, mut server) = tokio::io::duplex(4096);
            let mut sent = header.clone();
            sent.extend_from_slice(b"\r\nGET / HTTP/1.1\r\n\r\n");
            tokio::io::AsyncWriteExt::write_all(&mut client, &sent)
                .await
                .unwrap();
            drop(client);
            let h = read_header(&mut server, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(h, parse(&header).unwrap().0);
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"\r\nGET / HTTP/1.1\r\n\r\n");
        }
    }

    #[tokio::test]
    async fn read_header_byte_by_byte() {
        // A sender that dribbles one byte at a time still yields the header exactly.
        let header = encode_v1(sa("[2001:db8::1]:443"), sa("[2001:db8::2]:80"));
        let (mut client, mut server) = tokio::io::duplex(1);
        let mut sent = header.clone();
        sent.extend_from_slice(b"PAYLOAD");
        let writer =
            tokio::spawn(
                async move { tokio::io::AsyncWriteExt::write_all(&mut client, &sent).await },
            );
        let h = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(h.source(), Some(sa("[2001:db8::1]:443")));
        let mut rest = [0u8; 7];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"PAYLOAD");
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn read_header_errors() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let e = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ReadError::Parse(ParseError::NotProxy)), "{e:?}");

        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 1.2")
            .await
            .unwrap();
        drop(client);
        let e = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ReadError::Eof), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn read_header_times_out() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 1.2")
            .await
            .unwrap();
        let e = read_header(&mut server, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(e, ReadError::Timeout), "{e:?}");
        drop(client);
    }
}
