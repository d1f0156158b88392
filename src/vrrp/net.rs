//! The VRRP raw socket: IPv4, protocol 112, bound to one interface.
//!
//! Like keepalived, fulcrum builds the IP header itself (`IP_HDRINCL`, see
//! [`super::packet::encode_ip_packet`]) so the TTL is 255 and the TOS is 0xc0 whatever the
//! socket defaults are, and reads whole IP packets so [`super::packet::decode_ip_packet`]
//! can check the TTL and the lengths against the IP header. The socket joins 224.0.0.18 on
//! its interface only, and multicast loopback is off so we never hear ourselves.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{IPPROTO_VRRP, VRRP_MCAST_V4, VRRP_TTL};

/// Largest packet read: an IPv4 header with options plus the largest advert, rounded up.
pub const RECV_BUF: usize = 2048;

/// A raw VRRP socket on one interface, registered with tokio.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
}

impl VrrpSocket {
    /// Opens the socket on `interface` (index `ifindex`); joins 224.0.0.18 there when
    /// `multicast`. `src` is our address, used as the multicast interface address.
    /// Needs CAP_NET_RAW.
    pub fn open(interface: &str, ifindex: u32, src: Ipv4Addr, multicast: bool) -> io::Result<Self> {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        sock.bind_device(Some(interface.as_bytes()))?;
        sock.set_header_included_v4(true)?;
        sock.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
        sock.set_multicast_loop_v4(false)?;
        if multicast {
            sock.set_multicast_if_v4(&src)?;
            sock.join_multicast_v4_n(&VRRP_MCAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        sock.set_nonblocking(true)?;
        sock.set_cloexec(true)?;
        // SAFETY: the `Socket` owns its descriptor and returns the same one from `as_raw_fd`
        // until it is dropped together with the `AsyncFd`.
        let fd = unsafe { AsyncFd::register(sock) }?;
        Ok(VrrpSocket { fd })
    }

    /// Sends one whole IPv4 packet (header included) to `dst`. Never waits: a full send
    /// buffer is reported as an error, and the next advert interval tries again.
    pub fn send(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        self.fd.get_ref().send_to(packet, &to).map(|_| ())
    }

    /// Receives one whole IPv4 packet into `buf`; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| inner.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}
