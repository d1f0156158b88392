//! VRRP decoding never panics, and whatever decodes re-encodes to a packet that decodes
//! to the same advert.
#![no_main]

use std::net::Ipv4Addr;

use fulcrum::vrrp::packet::{
    decode_ip_packet, decode_vrrp, encode_ip_packet, AuthExpect, DecodeExpect, VRRP_MCAST_V4,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks what the receiving instance expects; the rest is the packet.
    let Some((&sel, packet)) = data.split_first() else {
        return;
    };
    let expect = DecodeExpect {
        version: match sel & 3 {
            0 => None,
            1 => Some(2),
            _ => Some(3),
        },
        vrid: (sel & 4 != 0).then_some(51),
        auth: match (sel >> 3) & 3 {
            0 => AuthExpect::Ignore,
            1 => AuthExpect::NoAuth,
            _ => AuthExpect::Password(*b"s3cret\0\0"),
        },
        v2_interval_cs: (sel & 0x20 != 0).then_some(100),
    };
    if let Ok(r) = decode_ip_packet(packet, &expect) {
        if let Ok(again) = encode_ip_packet(&r.advert, r.src, r.dst, 1) {
            match decode_ip_packet(&again, &DecodeExpect::default()) {
                Ok(back) => assert_eq!(back.advert, r.advert),
                Err(e) => panic!("re-encoded advert does not decode: {e}"),
            }
        }
    }
    let _ = decode_vrrp(packet, Ipv4Addr::new(10, 0, 0, 1), VRRP_MCAST_V4, &expect);
});
