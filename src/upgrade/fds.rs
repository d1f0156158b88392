//! Listening sockets across an upgrade: the ones this process serves (so it
//! can hand them over) and the ones it inherited (so it takes them instead of
//! binding), plus the SCM_RIGHTS message that carries them.
//!
//! The registry holds no descriptor of its own for live listeners: it records
//! the descriptor number and the socket's identity (device, inode), and checks
//! both again before sending, so a listener closed by a reload is never kept
//! open (and a reused descriptor number is never sent by mistake).
//!
//! The message is built with nix's `sendmsg`/`recvmsg` over a std
//! `UnixStream` (a socketpair): nix is already in the dependency tree and
//! wraps the control-message encoding; the framing on top is 8 bytes.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most descriptors one hand-over carries (Linux's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 250;

/// Largest state document accepted from a parent (servers, health).
const MAX_STATE: usize = 64 << 20;

struct Live {
    addr: SocketAddr,
    fd: RawFd,
    id: (u64, u64),
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
static INHERITED: Mutex<Vec<(SocketAddr, TcpListener)>> = Mutex::new(Vec::new());

fn identity(fd: RawFd) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer or fails; it does not
    // touch the descriptor's state.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstat returned 0, so the buffer is initialised.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// Record a listener this process serves on `addr` (the configured address,
/// port 0 included, which is how the next process will ask for it).
pub fn register(addr: SocketAddr, listener: &TcpListener) {
    let fd = listener.as_raw_fd();
    let Some(id) = identity(fd) else { return };
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|l| l.id != id);
        live.push(Live { addr, fd, id });
    }
}

/// Forget a listener that is about to close.
pub fn unregister(fd: RawFd) {
    let Some(id) = identity(fd) else { return };
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|l| l.id != id);
    }
}

/// The listeners to hand over: (configured address, duplicate descriptor),
/// only those still open as the same socket.
pub fn live() -> Vec<(SocketAddr, OwnedFd)> {
    let Ok(mut live) = LIVE.lock() else {
        return Vec::new();
    };
    live.retain(|l| identity(l.fd) == Some(l.id));
    live.iter()
        .filter_map(|l| {
            // SAFETY: the descriptor is open (fstat just succeeded on it) and
            // is only borrowed long enough to duplicate it.
            let b = unsafe { BorrowedFd::borrow_raw(l.fd) };
            b.try_clone_to_owned().ok().map(|fd| (l.addr, fd))
        })
        .collect()
}

/// Keep inherited listeners until `bind` asks for their addresses.
pub fn set_inherited(listeners: Vec<(SocketAddr, TcpListener)>) {
    if let Ok(mut g) = INHERITED.lock() {
        *g = listeners;
    }
}

/// The inherited listener for `addr`, if the previous process passed one.
pub fn take_inherited(addr: SocketAddr) -> Option<TcpListener> {
    let mut g = INHERITED.lock().ok()?;
    let i = g.iter().position(|(a, _)| *a == addr)?;
    Some(g.swap_remove(i).1)
}

/// Close the inherited listeners no frontend asked for (the new
/// configuration dropped them); returns their addresses.
pub fn drop_unclaimed() -> Vec<SocketAddr> {
    match INHERITED.lock() {
        Ok(mut g) => g.drain(..).map(|(a, _)| a).collect(),
        Err(_) => Vec::new(),
    }
}

/// Send `fds` and `state` on `sock`: one message of 8 bytes (state length,
/// descriptor count, little-endian u32s) carrying the descriptors, then the
/// state bytes.
pub fn send(sock: &mut UnixStream, fds: &[OwnedFd], state: &[u8]) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::other(format!(
            "{} listening sockets; one hand-over carries at most {MAX_FDS}",
            fds.len()
        )));
    }
    let len = u32::try_from(state.len()).map_err(std::io::Error::other)?;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&header)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    if sent != header.len() {
        return Err(std::io::Error::other("short hand-over header"));
    }
    sock.write_all(state)?;
    sock.flush()
}

/// Receive what [`send`] sent: the descriptors (close-on-exec) and the state.
pub fn recv(sock: &mut UnixStream) -> std::io::Result<(Vec<OwnedFd>, Vec<u8>)> {
    let mut header = [0u8; 8];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, fds) = {
        let mut iov = [IoSliceMut::new(&mut header)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(list) = c {
                for fd in list {
                    // SAFETY: the kernel just installed these descriptors in
                    // this process for us; nothing else owns them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds)
    };
    if got != header.len() {
        return Err(std::io::Error::other(format!(
            "hand-over header of {got} bytes (expected 8)"
        )));
    }
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(&header[..4]);
    let len = u32::from_le_bytes(len4) as usize;
    let mut n4 = [0u8; 4];
    n4.copy_from_slice(&header[4..]);
    let expected = u32::from_le_bytes(n4) as usize;
    if expected != fds.len() {
        return Err(std::io::Error::other(format!(
            "hand-over announced {expected} sockets, {} arrived",
            fds.len()
        )));
    }
    if len > MAX_STATE {
        return Err(std::io::Error::other("hand-over state too large"));
    }
    let mut state = vec![0u8; len];
    sock.read_exact(&mut state)?;
    Ok((fds, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_state_cross_a_socketpair() {
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        let l1 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let l2 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addrs = [l1.local_addr().expect("a"), l2.local_addr().expect("a")];
        let fds: Vec<OwnedFd> = [&l1, &l2]
            .iter()
            .map(|l| OwnedFd::from(l.try_clone().expect("dup")))
            .collect();
        send(&mut a, &fds, b"{\"x\":1}").expect("send");
        let (got, state) = recv(&mut b).expect("recv");
        assert_eq!(state, b"{\"x\":1}");
        assert_eq!(got.len(), 2);
        for (fd, want) in got.into_iter().zip(addrs) {
            let l = TcpListener::from(fd);
            assert_eq!(l.local_addr().expect("addr"), want);
        }
    }

    #[test]
    fn registry_forgets_closed_listeners() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        register(addr, &l);
        let id = identity(l.as_raw_fd());
        assert!(live().iter().any(|(_, fd)| identity(fd.as_raw_fd()) == id));
        unregister(l.as_raw_fd());
        assert!(!live().iter().any(|(_, fd)| identity(fd.as_raw_fd()) == id));
    }
}
