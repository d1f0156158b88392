//! VRRP advertisements on the wire: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798), IPv4 only.
//!
//! The layout matches what keepalived sends (see the captured frames in the tests):
//!
//! ```text
//! v2: ver/type | VRID | prio | count | auth type | adver_int (s) | checksum | addrs.. | auth data (8)
//! v3: ver/type | VRID | prio | count | rsvd(4) + max adver int (12, cs)  | checksum | addrs..
//! ```
//!
//! The v2 checksum covers the VRRP message only; the v3 checksum also covers the IPv4
//! pseudo-header (source, destination, zero, protocol 112, VRRP length).
//!
//! Everything here reads untrusted bytes, so nothing indexes or slices unchecked: a
//! malformed packet becomes a [`DropReason`], never a panic.
// Outside bytes are parsed here: no panicking shortcut on them outside tests (an index
// that is proven in range says so with an `#[allow]` and its reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group VRRP adverts are sent to (224.0.0.18).
pub const VRRP_MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// TTL every advert is sent with and must arrive with (RFC 3768 §7.1, RFC 5798 §7.1).
pub const VRRP_TTL: u8 = 255;
/// TOS keepalived sets on its adverts (DSCP CS6, "network control").
pub const VRRP_TOS: u8 = 0xc0;

/// VRRP packet type of an advertisement, the only type defined.
const TYPE_ADVERT: u8 = 1;
/// Fixed part of a VRRP message before the address list.
const FIXED_LEN: usize = 8;
/// Length of the v2 authentication data trailer (present whatever the auth type).
const V2_AUTH_LEN: usize = 8;
/// Smallest IPv4 header.
const IPV4_MIN_HDR: usize = 20;
/// Largest v3 Max Adver Int, a 12-bit field.
const V3_MAX_INTERVAL_CS: u16 = 0x0fff;

/// One VRRP advertisement, independent of its encoding version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// VRRP version: 2 (RFC 3768) or 3 (RFC 5798).
    pub version: u8,
    /// Virtual router id, 1..=255 (0 is accepted on the wire but never configured).
    pub vrid: u8,
    /// Sender priority: 255 = address owner, 0 = master is leaving.
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2 carries whole seconds, so a multiple of 100).
    pub advert_interval_cs: u16,
    /// Virtual IPv4 addresses the sender protects.
    pub addresses: Vec<Ipv4Addr>,
    /// v2 simple-text password (auth type 1), zero padded; `None` = auth type 0. Always `None` for v3.
    pub auth: Option<[u8; 8]>,
}

/// A decoded advert together with the IP facts the state machine and logs need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// IP source: the sender's primary address, used for tie-breaks and "last master".
    pub src: Ipv4Addr,
    /// IP destination: 224.0.0.18, or our address for unicast peers.
    pub dst: Ipv4Addr,
    /// The advertisement itself.
    pub advert: Advert,
}

/// What the v2 authentication check expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthExpect {
    /// Accept any supported auth type and data (for fuzzing and diagnostics).
    #[default]
    Ignore,
    /// Require auth type 0.
    NoAuth,
    /// Require auth type 1 (simple password) with exactly these 8 bytes.
    Password([u8; 8]),
}

/// Local configuration an incoming advert is checked against; `None` means "any".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeExpect {
    /// Only this VRRP version is accepted.
    pub version: Option<u8>,
    /// Only this VRID is accepted (others belong to other virtual routers on the link).
    pub vrid: Option<u8>,
    /// v2 authentication; ignored for v3, which has none.
    pub auth: AuthExpect,
    /// v2 only: the configured interval; RFC 3768 §7.1 drops adverts whose interval differs.
    pub v2_interval_cs: Option<u16>,
}

/// Why an advert could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Only versions 2 and 3 exist.
    #[error("unsupported VRRP version {0} (expected 2 or 3)")]
    BadVersion(u8),
    /// The count field is one byte.
    #[error("{0} virtual addresses do not fit in one advert (at most 255)")]
    TooManyAddresses(usize),
    /// v2: 1..=255 whole seconds; v3: 1..=4095 centiseconds.
    #[error("advert interval {interval_cs} cs cannot be encoded in VRRPv{version}")]
    BadInterval {
        /// Version being encoded.
        version: u8,
        /// Interval that was asked for.
        interval_cs: u16,
    },
    /// VRRPv3 removed authentication.
    #[error("VRRPv3 has no authentication; remove the password")]
    AuthInV3,
}

/// Why a received packet was dropped. `Display` is the log message; [`DropReason::label`] is
/// a stable, low-cardinality counter label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Shorter than its headers or than the length the IP header claims.
    #[error("truncated packet")]
    Truncated,
    /// The IP version nibble is not 4.
    #[error("not an IPv4 packet (IP version {0})")]
    NotIpv4(u8),
    /// IHL below 5 words or beyond the total length.
    #[error("bad IPv4 header length ({0} words)")]
    BadIhl(u8),
    /// IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    /// A fragment (the kernel reassembles, so this is never a whole advert).
    #[error("IPv4 fragment")]
    Fragmented,
    /// IP protocol is not 112.
    #[error("not VRRP (IP protocol {0})")]
    NotVrrp(u8),
    /// TTL is not 255: the packet crossed a router (RFC 3768 §7.1, RFC 5798 §7.1).
    #[error("TTL {0} is not 255; advert was routed")]
    BadTtl(u8),
    /// VRRP version is neither 2 nor 3.
    #[error("unsupported VRRP version {0}")]
    BadVersion(u8),
    /// A valid VRRP version, but not the one this instance is configured for.
    #[error("VRRP version {0} does not match the configured version")]
    WrongVersion(u8),
    /// VRRP type is not 1 (advertisement).
    #[error("VRRP type {0} is not an advertisement")]
    BadType(u8),
    /// VRRP checksum does not verify.
    #[error("bad VRRP checksum")]
    BadChecksum,
    /// The address count does not match the message length.
    #[error("address count {count} does not match VRRP length {len}")]
    AddressCountMismatch {
        /// Count field of the packet.
        count: u8,
        /// VRRP message length from the IP header.
        len: usize,
    },
    /// Advert for another virtual router on the same link.
    #[error("advert for VRID {0}, not ours")]
    WrongVrid(u8),
    /// v2 auth type we do not implement (2 = IP AH, removed by RFC 3768).
    #[error("unsupported VRRPv2 auth type {0}")]
    BadAuthType(u8),
    /// v2 auth type or password differ from the configuration.
    #[error("VRRPv2 authentication mismatch")]
    AuthMismatch,
    /// Interval 0 would make the master-down timer fire at once.
    #[error("advert interval 0 is invalid")]
    ZeroInterval,
    /// v2 interval differs from ours (RFC 3768 §7.1 requires equality).
    #[error("VRRPv2 advert interval {0} cs differs from the configured interval")]
    IntervalMismatch(u16),
}

impl DropReason {
    /// Stable snake_case label for metrics (`vrrp_dropped_total{reason=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::NotIpv4(_) => "not_ipv4",
            DropReason::BadIhl(_) => "bad_ihl",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::Fragmented => "fragmented",
            DropReason::NotVrrp(_) => "not_vrrp",
            DropReason::BadTtl(_) => "bad_ttl",
            DropReason::BadVersion(_) => "bad_version",
            DropReason::WrongVersion(_) => "wrong_version",
            DropReason::BadType(_) => "bad_type",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::AddressCountMismatch { .. } => "address_count_mismatch",
            DropReason::WrongVrid(_) => "wrong_vrid",
            DropReason::BadAuthType(_) => "bad_auth_type",
            DropReason::AuthMismatch => "auth_mismatch",
            DropReason::ZeroInterval => "zero_interval",
            DropReason::IntervalMismatch(_) => "interval_mismatch",
        }
    }
}

/// RFC 1071 Internet checksum over `parts` as if concatenated (each part of even length
/// except possibly the last, which is what every caller here passes).
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for pair in &mut chunks {
            if let [hi, lo] = *pair {
                sum += u32::from(u16::from_be_bytes([hi, lo]));
            }
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
        // Fold early so the sum cannot overflow on huge inputs.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checksum of a VRRP message whose checksum field holds zero (or, to verify, its value:
/// then a correct message yields 0).
fn vrrp_checksum(version: u8, msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    if version == 3 {
        let len = u16::try_from(msg.len()).unwrap_or(u16::MAX).to_be_bytes();
        let pseudo_tail = [0, IPPROTO_VRRP, len[0], len[1]];
        internet_checksum(&[&src.octets(), &dst.octets(), &pseudo_tail, msg])
    } else {
        internet_checksum(&[msg])
    }
}

/// Encodes the VRRP message (no IP header) `src` would send to `dst`.
pub fn encode(adv: &Advert, src: Ipv4Addr, dst: Ipv4Addr) -> Result<Vec<u8>, EncodeError> {
    let count = u8::try_from(adv.addresses.len())
        .map_err(|_| EncodeError::TooManyAddresses(adv.addresses.len()))?;
    let bad_interval = EncodeError::BadInterval {
        version: adv.version,
        interval_cs: adv.advert_interval_cs,
    };
    let (b4, b5) = match adv.version {
        2 => {
            let secs = adv.advert_interval_cs / 100;
            if !adv.advert_interval_cs.is_multiple_of(100) || !(1..=255).contains(&secs) {
                return Err(bad_interval);
            }
            (u8::from(adv.auth.is_some()), secs as u8)
        }
        3 => {
            if adv.auth.is_some() {
                return Err(EncodeError::AuthInV3);
            }
            if !(1..=V3_MAX_INTERVAL_CS).contains(&adv.advert_interval_cs) {
                return Err(bad_interval);
            }
            let [hi, lo] = adv.advert_interval_cs.to_be_bytes();
            (hi, lo)
        }
        v => return Err(EncodeError::BadVersion(v)),
    };
    let mut msg = Vec::with_capacity(FIXED_LEN + 4 * adv.addresses.len() + V2_AUTH_LEN);
    msg.extend_from_slice(&[
        (adv.version << 4) | TYPE_ADVERT,
        adv.vrid,
        adv.priority,
        count,
        b4,
        b5,
        0,
        0,
    ]);
    for addr in &adv.addresses {
        msg.extend_from_slice(&addr.octets());
    }
    if adv.version == 2 {
        msg.extend_from_slice(&adv.auth.unwrap_or([0; 8]));
    }
    let sum = vrrp_checksum(adv.version, &msg, src, dst).to_be_bytes();
    if let Some(field) = msg.get_mut(6..8) {
        field.copy_from_slice(&sum);
    }
    Ok(msg)
}

/// Encodes a whole IPv4 packet the way keepalived does with `IP_HDRINCL`: IHL 5, TOS 0xc0,
/// no fragmentation flags, TTL 255, protocol 112, header checksum filled in.
pub fn encode_ip_packet(
    adv: &Advert,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
) -> Result<Vec<u8>, EncodeError> {
    let msg = encode(adv, src, dst)?;
    // At most 8 + 255*4 + 8 bytes of VRRP, so the total always fits.
    let total = u16::try_from(IPV4_MIN_HDR + msg.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    let id = ident.to_be_bytes();
    let mut pkt = Vec::with_capacity(IPV4_MIN_HDR + msg.len());
    pkt.extend_from_slice(&[
        0x45,
        VRRP_TOS,
        total[0],
        total[1],
        id[0],
        id[1],
        0,
        0,
        VRRP_TTL,
        IPPROTO_VRRP,
        0,
        0,
    ]);
    pkt.extend_from_slice(&src.octets());
    pkt.extend_from_slice(&dst.octets());
    let sum = internet_checksum(&[&pkt]).to_be_bytes();
    if let Some(field) = pkt.get_mut(10..12) {
        field.copy_from_slice(&sum);
    }
    pkt.extend_from_slice(&msg);
    Ok(pkt)
}

/// Reads one byte, or reports truncation.
fn byte(buf: &[u8], at: usize) -> Result<u8, DropReason> {
    buf.get(at).copied().ok_or(DropReason::Truncated)
}

/// Decodes a full IPv4 packet as read from a raw socket (`IPPROTO_VRRP`). Bytes after the IP
/// total length are ignored (veth frames are not padded, ethernet frames may be).
pub fn decode_ip_packet(ip_packet: &[u8], expect: &DecodeExpect) -> Result<Received, DropReason> {
    let ver_ihl = byte(ip_packet, 0)?;
    if ver_ihl >> 4 != 4 {
        return Err(DropReason::NotIpv4(ver_ihl >> 4));
    }
    let ihl_words = ver_ihl & 0x0f;
    let hdr_len = usize::from(ihl_words) * 4;
    let header: &[u8; IPV4_MIN_HDR] = ip_packet.first_chunk().ok_or(DropReason::Truncated)?;
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if hdr_len < IPV4_MIN_HDR || hdr_len > total_len {
        return Err(DropReason::BadIhl(ihl_words));
    }
    let packet = ip_packet.get(..total_len).ok_or(DropReason::Truncated)?;
    if internet_checksum(&[packet.get(..hdr_len).ok_or(DropReason::Truncated)?]) != 0 {
        return Err(DropReason::BadIpChecksum);
    }
    // More-fragments flag or a non-zero offset.
    if u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0 {
        return Err(DropReason::Fragmented);
    }
    if header[9] != IPPROTO_VRRP {
        return Err(DropReason::NotVrrp(header[9]));
    }
    if header[8] != VRRP_TTL {
        return Err(DropReason::BadTtl(header[8]));
    }
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let payload = packet.get(hdr_len..).ok_or(DropReason::Truncated)?;
    let advert = decode_vrrp(payload, src, dst, expect)?;
    Ok(Received { src, dst, advert })
}

/// Decodes and validates a VRRP message (no IP header); `src`/`dst` feed the v3 checksum.
/// The whole of `payload` must be the message: its length is checked against the count.
pub fn decode_vrrp(
    payload: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    expect: &DecodeExpect,
) -> Result<Advert, DropReason> {
    let fixed: &[u8; FIXED_LEN] = payload.first_chunk().ok_or(DropReason::Truncated)?;
    let version = fixed[0] >> 4;
    let kind = fixed[0] & 0x0f;
    if version != 2 && version != 3 {
        return Err(DropReason::BadVersion(version));
    }
    if expect.version.is_some_and(|want| want != version) {
        return Err(DropReason::WrongVersion(version));
    }
    if kind != TYPE_ADVERT {
        return Err(DropReason::BadType(kind));
    }
    let (vrid, priority, count) = (fixed[1], fixed[2], fixed[3]);
    let trailer = if version == 2 { V2_AUTH_LEN } else { 0 };
    if payload.len() != FIXED_LEN + 4 * usize::from(count) + trailer {
        return Err(DropReason::AddressCountMismatch {
            count,
            len: payload.len(),
        });
    }
    if vrrp_checksum(version, payload, src, dst) != 0 {
        return Err(DropReason::BadChecksum);
    }
    if expect.vrid.is_some_and(|want| want != vrid) {
        return Err(DropReason::WrongVrid(vrid));
    }
    let addr_bytes = payload
        .get(FIXED_LEN..FIXED_LEN + 4 * usize::from(count))
        .ok_or(DropReason::Truncated)?;
    let addresses = addr_bytes
        .chunks_exact(4)
        .filter_map(|a| <[u8; 4]>::try_from(a).ok().map(Ipv4Addr::from))
        .collect();
    let (advert_interval_cs, auth) = if version == 2 {
        let auth_data: [u8; V2_AUTH_LEN] = *payload.last_chunk().ok_or(DropReason::Truncated)?;
        let auth = match fixed[4] {
            0 => None,
            1 => Some(auth_data),
            other => return Err(DropReason::BadAuthType(other)),
        };
        let ok = match expect.auth {
            AuthExpect::Ignore => true,
            AuthExpect::NoAuth => auth.is_none(),
            AuthExpect::Password(pw) => auth == Some(pw),
        };
        if !ok {
            return Err(DropReason::AuthMismatch);
        }
        (u16::from(fixed[5]) * 100, auth)
    } else {
        (
            u16::from_be_bytes([fixed[4], fixed[5]]) & V3_MAX_INTERVAL_CS,
            None,
        )
    };
    if advert_interval_cs == 0 {
        return Err(DropReason::ZeroInterval);
    }
    if version == 2
        && expect
            .v2_interval_cs
            .is_some_and(|want| want != advert_interval_cs)
    {
        return Err(DropReason::IntervalMismatch(advert_interval_cs));
    }
    Ok(Advert {
        version,
        vrid,
        priority,
        advert_interval_cs,
        addresses,
        auth,
    })
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
