//! Gratuitous ARP: tells the link (switches, neighbours' ARP caches) that a virtual IP now
//! lives behind this interface's MAC address.
//!
//! The frame is the one keepalived sends (see the captured frame in the tests): a broadcast
//! ARP *request* whose sender and target protocol addresses are both the virtual IP, with the
//! interface's own MAC as sender hardware address and broadcast as target hardware address.
//! It goes out through an `AF_PACKET` socket bound to the interface, so no routing is involved.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Ethernet type of ARP.
const ETH_P_ARP: u16 = 0x0806;
/// Ethernet broadcast address.
const BROADCAST: [u8; 6] = [0xff; 6];
/// Length of a gratuitous ARP frame on the wire (no padding: the NIC pads if it must).
pub const GARP_FRAME_LEN: usize = 42;

/// Builds a gratuitous ARP request frame for `ip` announced from `mac`.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut f = [0u8; GARP_FRAME_LEN];
    let ip = ip.octets();
    let parts: [&[u8]; 11] = [
        &BROADCAST,               // ethernet destination
        &mac,                     // ethernet source
        &ETH_P_ARP.to_be_bytes(), // ethertype
        &[0x00, 0x01],            // hardware type: ethernet
        &[0x08, 0x00],            // protocol type: IPv4
        &[6, 4],                  // hardware and protocol address lengths
        &[0x00, 0x01],            // operation: request
        &mac,                     // sender hardware address
        &ip,                      // sender protocol address
        &BROADCAST,               // target hardware address
        &ip,                      // target protocol address
    ];
    let mut at = 0;
    for p in parts {
        if let Some(dst) = f.get_mut(at..at + p.len()) {
            dst.copy_from_slice(p);
        }
        at += p.len();
    }
    f
}

/// An `AF_PACKET` socket bound to one interface, for sending gratuitous ARPs.
#[derive(Debug)]
pub struct GarpSender {
    fd: OwnedFd,
    ifindex: i32,
    mac: [u8; 6],
}

impl GarpSender {
    /// Opens the socket on interface `ifindex` whose MAC address is `mac` (needs CAP_NET_RAW).
    pub fn open(ifindex: u32, mac: [u8; 6]) -> io::Result<Self> {
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index too large")
        })?;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                // Protocol 0: we only send, so the socket receives nothing.
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(GarpSender { fd, ifindex, mac })
    }

    /// Sends one gratuitous ARP for `ip`.
    pub fn send(&self, ip: Ipv4Addr) -> io::Result<()> {
        let frame = garp_frame(self.mac, ip);
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        for (d, s) in addr.sll_addr.iter_mut().zip(BROADCAST) {
            *d = s;
        }
        // SAFETY: `frame` and `addr` outlive the call; lengths are their true sizes.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keepalived 2.2.7's gratuitous ARP for 10.99.0.50 from 7e:43:62:ec:3a:de.
    const KEEPALIVED_GARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7e, 0x43, 0x62, 0xec, 0x3a, 0xde, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x7e, 0x43, 0x62, 0xec, 0x3a, 0xde, 0x0a, 0x63,
        0x00, 0x32, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x63, 0x00, 0x32,
    ];

    #[test]
    fn frame_matches_keepalived_byte_for_byte() {
        let mac = [0x7e, 0x43, 0x62, 0xec, 0x3a, 0xde];
        assert_eq!(
            garp_frame(mac, Ipv4Addr::new(10, 99, 0, 50)),
            KEEPALIVED_GARP
        );
    }
}
