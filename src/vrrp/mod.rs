//! Built-in VRRP, wire-compatible with keepalived: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798)
//! over IPv4.
//!
//! The module is split so the protocol can be tested without a network:
//! - [`packet`] encodes and decodes advertisements; every malformed input becomes a
//!   [`DropReason`] (a log message and a counter label), never a panic.
//! - [`machine`] is the sans-IO state machine: it takes `(now, Event)` and returns
//!   [`Action`]s (send an advert, add or remove the virtual IPs, send gratuitous ARPs).
//!
//! The I/O around them — the raw socket, netlink for the virtual IPs, gratuitous ARP
//! frames, config wiring — lives in a separate layer that only executes actions.

#![warn(missing_docs)]

pub mod config;
pub mod machine;
pub mod packet;

pub use machine::{Action, Event, Instance, Params, State, Status};
pub use packet::{
    decode_ip_packet, decode_vrrp, encode, encode_ip_packet, Advert, AuthExpect, DecodeExpect,
    DropReason, EncodeError, Received,
};
