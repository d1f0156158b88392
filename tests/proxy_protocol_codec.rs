//! Property tests of the PROXY protocol codec: seeded random mutations of valid headers
//! must never panic, never claim more bytes than given, and agree with the async reader.
//! Deterministic (fixed seeds), bounded, no network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use fulcrum::proxy::proxy_protocol::{
    encode_v1, encode_v2, parse, read_header, ParseError, ProxyAddrs, V1_MAX_LEN, V2_FIXED_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASES: usize = 50_000;

fn random_addr(rng: &mut fastrand::Rng, v6: bool) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(rng.u128(..)))
    } else {
        IpAddr::V4(Ipv4Addr::from(rng.u32(..)))
    };
    SocketAddr::new(ip, rng.u16(..))
}

/// A valid header to start mutating from: v1 or v2, either family, sometimes with TLVs.
fn seed_header(rng: &mut fastrand::Rng) -> Vec<u8> {
    let v6 = rng.bool();
    let (src, dst) = (random_addr(rng, v6), random_addr(rng, v6));
    match rng.u8(..6) {
        0 => b"PROXY UNKNOWN\r\n".to_vec(),
        1 | 2 => encode_v1(src, dst),
        3 | 4 => encode_v2(src, dst),
        _ => {
            // v2 with a few TLVs; fix the length field up afterwards.
            let mut h = encode_v2(src, dst);
            for _ in 0..rng.usize(1..4) {
                let len = rng.usize(..8);
                h.push(rng.u8(..));
                h.extend_from_slice(&(len as u16).to_be_bytes());
                h.extend((0..len).map(|_| rng.u8(..)));
            }
            let body = (h.len() - V2_FIXED_LEN) as u16;
            h.splice(14..16, body.to_be_bytes());
            h
        }
    }
}

/// Applies one to four random edits.
fn mutate(rng: &mut fastrand::Rng, buf: &mut Vec<u8>) {
    const INTERESTING: &[u8] = b" \r\n\0:.0123456789PROXYTCP46UNKNOWN\xff\x21\x11\x20";
    for _ in 0..rng.usize(1..5) {
        let at = rng.usize(..=buf.len());
        match rng.u8(..7) {
            0 if at < buf.len() => buf[at] = rng.u8(..),
            1 if at < buf.len() => buf[at] = INTERESTING[rng.usize(..INTERESTING.len())],
            2 if at < buf.len() => {
                buf.remove(at);
            }
            3 => buf.insert(at, INTERESTING[rng.usize(..INTERESTING.len())]),
            4 => buf.truncate(at),
            5 if buf.len() >= 16 && buf.first() == Some(&b'\r') => {
                // Lie about the v2 length.
                let len = rng.u16(..);
                buf.splice(14..16, len.to_be_bytes());
            }
            _ => buf.extend((0..rng.usize(..4)).map(|_| rng.u8(..))),
        }
    }
}

/// The invariants every parse result must satisfy.
fn check(buf: &[u8]) {
    match parse(buf) {
        Ok((header, used)) => {
            assert!(
                used > 0 && used <= buf.len(),
                "used {used} of {}",
                buf.len()
            );
            assert!(matches!(header.version, 1 | 2));
            if header.version == 1 {
                assert!(used <= V1_MAX_LEN);
                assert!(header.tlvs.is_empty());
            } else {
                assert!(used <= V2_FIXED_LEN + usize::from(u16::MAX));
            }
            // The header alone parses the same; trailing payload never matters.
            assert_eq!(parse(&buf[..used]), Ok((header.clone(), used)));
            let mut longer = buf[..used].to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(&longer), Ok((header.clone(), used)));
            // Strict prefixes of an accepted header are all "need more bytes".
            for cut in [0, used / 2, used - 1] {
                assert_eq!(
                    parse(&buf[..cut]),
                    Err(ParseError::Incomplete),
                    "prefix {cut}"
                );
            }
        }
        Err(ParseError::Incomplete) => {
            let bound = if buf.first() == Some(&b'P') {
                V1_MAX_LEN
            } else {
                V2_FIXED_LEN + usize::from(u16::MAX)
            };
            assert!(buf.len() < bound, "incomplete at {} bytes", buf.len());
        }
        Err(ParseError::NotProxy | ParseError::Invalid(_)) => {}
    }
}

#[test]
fn random_mutations_never_panic_or_overconsume() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0005);
    let (mut ok, mut incomplete, mut rejected) = (0, 0, 0);
    for _ in 0..CASES {
        let mut buf = seed_header(&mut rng);
        mutate(&mut rng, &mut buf);
        check(&buf);
        match parse(&buf) {
            Ok(_) => ok += 1,
            Err(ParseError::Incomplete) => incomplete += 1,
            Err(_) => rejected += 1,
        }
    }
    // The mutator must exercise all three outcomes, or the loop proves little.
    assert!(
        ok > 1000 && incomplete > 1000 && rejected > 1000,
        "{ok} {incomplete} {rejected}"
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0xb17e5);
    for _ in 0..CASES {
        let len = rng.usize(..200);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Half the time, start like a header so the parser gets past its first byte.
        match rng.u8(..3) {
            0 => buf.splice(0..0, b"PROXY ".iter().copied()).for_each(drop),
            1 => buf
                .splice(0..0, b"\r\n\r\n\0\r\nQUIT\n".iter().copied())
                .for_each(drop),
            _ => {}
        }
        check(&buf);
    }
}

#[test]
fn random_round_trips() {
    let mut rng = fastrand::Rng::with_seed(42);
    for _ in 0..10_000 {
        let v6 = rng.bool();
        let (src, dst) = (random_addr(&mut rng, v6), random_addr(&mut rng, v6));
        for bytes in [encode_v1(src, dst), encode_v2(src, dst)] {
            let (h, used) = parse(&bytes).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(h.addrs, ProxyAddrs::Tcp { src, dst });
        }
    }
}

/// Whatever `parse` accepts, `read_header` accepts too, reading exactly `used` bytes;
/// whatever `parse` rejects, `read_header` rejects.
#[tokio::test]
async fn reader_agrees_with_parse() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2_000 {
        let mut buf = seed_header(&mut rng);
        if rng.bool() {
            mutate(&mut rng, &mut buf);
        }
        let (mut client, mut server) = tokio::io::duplex(1 << 17);
        client.write_all(&buf).await.unwrap();
        drop(client);
        let read = read_header(&mut server, Duration::from_secs(5)).await;
        match parse(&buf) {
            Ok((header, used)) => {
                assert_eq!(read.unwrap(), header);
                let mut rest = Vec::new();
                server.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, &buf[used..]);
            }
            Err(ParseError::Incomplete) => assert!(read.is_err()),
            Err(_) => assert!(read.is_err()),
        }
    }
}
