//! Tests for the VRRP codec, anchored on frames captured from keepalived 2.2.7.

use super::*;

/// Parses "45 c0 00 28 ..." into bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

// Ethernet frames captured from keepalived (VRID 51, master 10.99.0.11 prio 101, VIP 10.99.0.50).
// Ethernet header is 14 bytes; the IP packet follows. Frames on a veth are not padded.
const KA_V2_PRIO101: &str = "01 00 5e 00 00 12 7e 43 62 ec 3a de 08 00 45 c0
    00 28 00 01 00 00 ff 70 d0 24 0a 63 00 0b e0 00 00 12 21 33 65 01 00 01 6f 35 0a 63 00 32 00 00
    00 00 00 00 00 00";
const KA_V2_PRIO0: &str = "01 00 5e 00 00 12 7e 43 62 ec 3a de 08 00 45 c0
    00 28 00 03 00 00 ff 70 d0 22 0a 63 00 0b e0 00 00 12 21 33 00 01 00 01 d4 35 0a 63 00 32 00 00
    00 00 00 00 00 00";
const KA_V3_PRIO101: &str = "01 00 5e 00 00 12 7e 43 62 ec 3a de 08 00 45 c0
    00 20 00 01 00 00 ff 70 d0 2c 0a 63 00 0b e0 00 00 12 31 33 65 01 00 0a 74 2f 0a 63 00 32";
const KA_V3_PRIO0: &str = "01 00 5e 00 00 12 7e 43 62 ec 3a de 08 00 45 c0
    00 20 00 0b 00 00 ff 70 d0 22 0a 63 00 0b e0 00 00 12 31 33 00 01 00 0a d9 2f 0a 63 00 32";

const MASTER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 50);

/// The IP packet inside a captured Ethernet frame.
fn ip_of(frame: &str) -> Vec<u8> {
    hex(frame)[14..].to_vec()
}

fn strict(version: u8) -> DecodeExpect {
    DecodeExpect {
        version: Some(version),
        vrid: Some(51),
        auth: AuthExpect::NoAuth,
        v2_interval_cs: Some(100),
    }
}

/// Decodes a captured frame, checks every field, and re-encodes it to the same bytes.
fn check_capture(
    frame: &str,
    version: u8,
    priority: u8,
    interval_cs: u16,
    checksum: u16,
    ident: u16,
) {
    let ip = ip_of(frame);
    let rx = decode_ip_packet(&ip, &strict(version)).expect("captured frame decodes");
    assert_eq!(rx.src, MASTER);
    assert_eq!(rx.dst, VRRP_MCAST_V4);
    let want = Advert {
        version,
        vrid: 51,
        priority,
        advert_interval_cs: interval_cs,
        addresses: vec![VIP],
        auth: None,
    };
    assert_eq!(rx.advert, want);
    let payload = &ip[20..];
    assert_eq!(u16::from_be_bytes([payload[6], payload[7]]), checksum);
    assert_eq!(encode(&want, MASTER, VRRP_MCAST_V4).unwrap(), payload);
    assert_eq!(
        encode_ip_packet(&want, MASTER, VRRP_MCAST_V4, ident).unwrap(),
        ip
    );
}

#[test]
fn keepalived_v2_frames_decode_and_reencode_byte_for_byte() {
    check_capture(KA_V2_PRIO101, 2, 101, 100, 0x6f35, 1);
    check_capture(KA_V2_PRIO0, 2, 0, 100, 0xd435, 3);
}

#[test]
fn keepalived_v3_frames_decode_and_reencode_byte_for_byte() {
    check_capture(KA_V3_PRIO101, 3, 101, 10, 0x742f, 1);
    check_capture(KA_V3_PRIO0, 3, 0, 10, 0xd92f, 0x0b);
}

#[test]
fn checksum_known_answers() {
    // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, checksum is its complement.
    assert_eq!(
        internet_checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
        !0xddf2
    );
    // Splitting the input does not change the sum; an odd tail is padded with zero.
    assert_eq!(
        internet_checksum(&[&[0x00, 0x01], &[0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
        !0xddf2
    );
    assert_eq!(internet_checksum(&[&[0xab]]), !0xab00);
    assert_eq!(internet_checksum(&[]), 0xffff);
    // v2 covers the message only; v3 adds the pseudo-header (captured values).
    let v2 = hex("21 33 65 01 00 01 00 00 0a 63 00 32 00 00 00 00 00 00 00 00");
    assert_eq!(vrrp_checksum(2, &v2, MASTER, VRRP_MCAST_V4), 0x6f35);
    let v3 = hex("31 33 65 01 00 0a 00 00 0a 63 00 32");
    assert_eq!(vrrp_checksum(3, &v3, MASTER, VRRP_MCAST_V4), 0x742f);
    assert_eq!(
        internet_checksum(&[&v3]),
        0x5f2c,
        "v3 without pseudo-header differs"
    );
}

#[test]
fn trailing_bytes_beyond_ip_total_length_are_ignored() {
    let mut ip = ip_of(KA_V3_PRIO101);
    ip.extend_from_slice(&[0u8; 14]); // ethernet minimum-frame padding
    assert!(decode_ip_packet(&ip, &strict(3)).is_ok());
}

fn sample(version: u8) -> Advert {
    Advert {
        version,
        vrid: 7,
        priority: 200,
        advert_interval_cs: if version == 2 { 300 } else { 25 },
        addresses: vec![
            Ipv4Addr::new(192, 168, 50, 100),
            Ipv4Addr::new(192, 168, 50, 101),
        ],
        auth: None,
    }
}

#[test]
fn round_trip_v2_with_and_without_password() {
    let src = Ipv4Addr::new(192, 168, 50, 2);
    for auth in [None, Some(*b"secret\0\0")] {
        let adv = Advert { auth, ..sample(2) };
        let ip = encode_ip_packet(&adv, src, VRRP_MCAST_V4, 9).unwrap();
        let expect = DecodeExpect {
            auth: auth.map_or(AuthExpect::NoAuth, AuthExpect::Password),
            ..DecodeExpect::default()
        };
        let rx = decode_ip_packet(&ip, &expect).unwrap();
        assert_eq!(rx.advert, adv);
        assert_eq!(rx.src, src);
    }
}

#[test]
fn round_trip_v3_unicast_and_limits() {
    let src = Ipv4Addr::new(192, 168, 50, 2);
    let dst = Ipv4Addr::new(192, 168, 50, 3);
    for interval in [1, 100, V3_MAX_INTERVAL_CS] {
        let adv = Advert {
            advert_interval_cs: interval,
            ..sample(3)
        };
        let ip = encode_ip_packet(&adv, src, dst, 0).unwrap();
        assert_eq!(
            decode_ip_packet(&ip, &DecodeExpect::default())
                .unwrap()
                .advert,
            adv
        );
    }
    let many = Advert {
        addresses: vec![Ipv4Addr::LOCALHOST; 255],
        ..sample(3)
    };
    let ip = encode_ip_packet(&many, src, dst, 0).unwrap();
    assert_eq!(
        decode_ip_packet(&ip, &DecodeExpect::default())
            .unwrap()
            .advert,
        many
    );
    // The v3 checksum binds the packet to its addresses: another destination fails.
    let msg = encode(&sample(3), src, dst).unwrap();
    assert_eq!(
        decode_vrrp(&msg, src, VRRP_MCAST_V4, &DecodeExpect::default()),
        Err(DropReason::BadChecksum)
    );
}

#[test]
fn encode_rejects_what_the_wire_cannot_carry() {
    let (s, d) = (MASTER, VRRP_MCAST_V4);
    let err = |adv: Advert| encode(&adv, s, d).unwrap_err();
    assert_eq!(
        err(Advert {
            version: 4,
            ..sample(3)
        }),
        EncodeError::BadVersion(4)
    );
    assert_eq!(
        err(Advert {
            addresses: vec![VIP; 256],
            ..sample(3)
        }),
        EncodeError::TooManyAddresses(256)
    );
    for cs in [0, 150, 25600] {
        assert!(matches!(
            err(Advert {
                advert_interval_cs: cs,
                ..sample(2)
            }),
            EncodeError::BadInterval { .. }
        ));
    }
    for cs in [0, 4096] {
        assert!(matches!(
            err(Advert {
                advert_interval_cs: cs,
                ..sample(3)
            }),
            EncodeError::BadInterval { .. }
        ));
    }
    assert_eq!(
        err(Advert {
            auth: Some([1; 8]),
            ..sample(3)
        }),
        EncodeError::AuthInV3
    );
}

/// Recomputes the IP header checksum after a test edited the header.
fn fix_ip_checksum(ip: &mut [u8]) {
    ip[10] = 0;
    ip[11] = 0;
    let sum = internet_checksum(&[&ip[..20]]).to_be_bytes();
    ip[10..12].copy_from_slice(&sum);
}

/// Recomputes the VRRP checksum (v2 style, the message only) after a test edited it.
fn fix_v2_checksum(ip: &mut [u8]) {
    ip[26] = 0;
    ip[27] = 0;
    let sum = internet_checksum(&[&ip[20..]]).to_be_bytes();
    ip[26..28].copy_from_slice(&sum);
}

/// A captured v2 packet after `edit`, decoded with the strict expectations.
fn v2_after(edit: impl FnOnce(&mut Vec<u8>)) -> Result<Received, DropReason> {
    let mut ip = ip_of(KA_V2_PRIO101);
    edit(&mut ip);
    decode_ip_packet(&ip, &strict(2))
}

#[test]
fn every_drop_reason_has_a_crafted_packet() {
    use DropReason as D;
    let cases: Vec<(D, Result<Received, DropReason>)> = vec![
        (D::Truncated, v2_after(|ip| ip.truncate(39))),
        (D::Truncated, v2_after(|ip| ip.truncate(10))),
        (D::Truncated, decode_ip_packet(&[], &strict(2))),
        (D::NotIpv4(6), v2_after(|ip| ip[0] = 0x65)),
        (D::BadIhl(4), v2_after(|ip| ip[0] = 0x44)),
        (D::BadIhl(15), v2_after(|ip| ip[0] = 0x4f)),
        (D::BadIpChecksum, v2_after(|ip| ip[10] ^= 1)),
        (
            D::Fragmented,
            v2_after(|ip| {
                ip[6] = 0x20; // more fragments
                fix_ip_checksum(ip);
            }),
        ),
        (
            D::NotVrrp(17),
            v2_after(|ip| {
                ip[9] = 17;
                fix_ip_checksum(ip);
            }),
        ),
        (
            D::BadTtl(64),
            v2_after(|ip| {
                ip[8] = 64;
                fix_ip_checksum(ip);
            }),
        ),
        (
            D::BadVersion(1),
            v2_after(|ip| {
                ip[20] = 0x11;
                fix_v2_checksum(ip);
            }),
        ),
        (
            D::WrongVersion(3),
            decode_ip_packet(&ip_of(KA_V3_PRIO101), &strict(2)),
        ),
        (
            D::BadType(2),
            v2_after(|ip| {
                ip[20] = 0x22;
                fix_v2_checksum(ip);
            }),
        ),
        (D::BadChecksum, v2_after(|ip| ip[27] ^= 0x80)),
        (
            D::AddressCountMismatch { count: 2, len: 20 },
            v2_after(|ip| {
                ip[23] = 2;
                fix_v2_checksum(ip);
            }),
        ),
        (
            D::WrongVrid(52),
            v2_after(|ip| {
                ip[21] = 52;
                fix_v2_checksum(ip);
            }),
        ),
        (
            D::BadAuthType(2),
            v2_after(|ip| {
                ip[24] = 2;
                fix_v2_checksum(ip);
            }),
        ),
        (
            D::AuthMismatch,
            v2_after(|ip| {
                ip[24] = 1;
                ip[32] = b'x';
                fix_v2_checksum(ip);
            }),
        ),
        (
            D::ZeroInterval,
            v2_after(|ip| {
                ip[25] = 0;
                fix_v2_checksum(ip);
            }),
        ),
        (
            D::IntervalMismatch(300),
            v2_after(|ip| {
                ip[25] = 3;
                fix_v2_checksum(ip);
            }),
        ),
    ];
    let mut labels = std::collections::BTreeSet::new();
    for (want, got) in cases {
        assert_eq!(got, Err(want.clone()), "expected {want}");
        assert!(!want.to_string().is_empty());
        labels.insert(want.label());
    }
    assert_eq!(labels.len(), 17, "every variant is exercised: {labels:?}");
}

#[test]
fn password_checks() {
    let src = MASTER;
    let with_pw = Advert {
        auth: Some(*b"pw\0\0\0\0\0\0"),
        ..sample(2)
    };
    let msg = encode(&with_pw, src, VRRP_MCAST_V4).unwrap();
    let expect = |auth| DecodeExpect {
        auth,
        ..DecodeExpect::default()
    };
    let dec = |auth| decode_vrrp(&msg, src, VRRP_MCAST_V4, &expect(auth));
    assert!(dec(AuthExpect::Password(*b"pw\0\0\0\0\0\0")).is_ok());
    assert!(dec(AuthExpect::Ignore).is_ok());
    assert_eq!(
        dec(AuthExpect::Password(*b"other\0\0\0")),
        Err(DropReason::AuthMismatch)
    );
    assert_eq!(dec(AuthExpect::NoAuth), Err(DropReason::AuthMismatch));
    // A password is required but the sender has none.
    let ip = ip_of(KA_V2_PRIO101);
    let pw = DecodeExpect {
        auth: AuthExpect::Password([1; 8]),
        ..strict(2)
    };
    assert_eq!(decode_ip_packet(&ip, &pw), Err(DropReason::AuthMismatch));
}

#[test]
fn garbage_never_panics() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let seeds = [ip_of(KA_V2_PRIO101), ip_of(KA_V3_PRIO101)];
    for i in 0..20_000 {
        let mut buf = seeds[i % 2].clone();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..buf.len());
            buf[at] = rng.u8(..);
        }
        buf.truncate(rng.usize(..=buf.len() + 1));
        let _ = decode_ip_packet(&buf, &DecodeExpect::default());
        let _ = decode_vrrp(
            buf.get(20..).unwrap_or(&[]),
            MASTER,
            VRRP_MCAST_V4,
            &DecodeExpect::default(),
        );
        let random: Vec<u8> = (0..rng.usize(..64)).map(|_| rng.u8(..)).collect();
        let _ = decode_ip_packet(&random, &DecodeExpect::default());
    }
}
