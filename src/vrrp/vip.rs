//! Interface facts and virtual IP addresses over rtnetlink (the kernel API `ip addr` uses).

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::Handle;

use super::config::VirtualIp;

/// What fulcrum needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Kernel interface index.
    pub index: u32,
    /// Hardware address (all zero for interfaces without one).
    pub mac: [u8; 6],
    /// Administratively up and with carrier (`IFF_UP` and `IFF_RUNNING`).
    pub up: bool,
}

/// A route-netlink connection owned by one VRRP instance.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

fn nl_err(context: &str, e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let inner = m.to_io();
            io::Error::new(inner.kind(), format!("{context}: {inner}"))
        }
        other => io::Error::other(format!("{context}: {other}")),
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

impl Netlink {
    /// Opens a connection; its driver runs as a tokio task until the handle is dropped.
    pub fn connect() -> io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Looks an interface up by name; `Ok(None)` when it does not exist.
    pub async fn link(&self, name: &str) -> io::Result<Option<LinkInfo>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = match links.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            // ENODEV: no such interface.
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(nl_err("cannot read the interface", e)),
        };
        let mut mac = [0u8; 6];
        for attr in &msg.attributes {
            if let LinkAttribute::Address(bytes) = attr {
                for (d, s) in mac.iter_mut().zip(bytes) {
                    *d = *s;
                }
            }
        }
        let flags = msg.header.flags;
        Ok(Some(LinkInfo {
            index: msg.header.index,
            mac,
            up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
        }))
    }

    /// IPv4 addresses on interface `index` with their prefix lengths, primary ones first.
    pub async fn ipv4_addresses(&self, index: u32) -> io::Result<Vec<VirtualIp>> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut primary = Vec::new();
        let mut secondary = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| nl_err("cannot list addresses", e))?
        {
            if let Some(address) = local_v4(&msg) {
                let v = VirtualIp {
                    address,
                    prefix_len: msg.header.prefix_len,
                };
                if msg.header.flags.contains(AddressHeaderFlags::Secondary) {
                    secondary.push(v);
                } else {
                    primary.push(v);
                }
            }
        }
        primary.extend(secondary);
        Ok(primary)
    }

    /// Adds `vip` to interface `index`; an address already there is not an error.
    pub async fn add(&self, index: u32, vip: VirtualIp) -> io::Result<()> {
        let req = self
            .handle
            .address()
            .add(index, IpAddr::V4(vip.address), vip.prefix_len);
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl_err(&format!("cannot add {vip}"), e)),
        }
    }

    /// Removes `vip` from interface `index`; an address already gone is not an error.
    /// Returns whether it was there.
    pub async fn del(&self, index: u32, vip: VirtualIp) -> io::Result<bool> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(vip.address))
            .execute();
        let mut found = false;
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| nl_err("cannot list addresses", e))?
        {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => found = true,
                Err(e) if errno_of(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(e) => return Err(nl_err(&format!("cannot remove {vip}"), e)),
            }
        }
        Ok(found)
    }
}

/// The IPv4 local address of an address message (`IFA_LOCAL`, else `IFA_ADDRESS`).
fn local_v4(msg: &AddressMessage) -> Option<Ipv4Addr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => return Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    address
}
