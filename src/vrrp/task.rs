//! One tokio task per VRRP instance: feeds [`Instance`] with timers, received adverts and
//! tracking verdicts, and carries out its [`Action`]s on the real network.
//!
//! Graceful stop goes beyond keepalived: a master sends priority 0 but keeps its virtual IPs
//! (and so keeps serving) until it sees the new master's advert, or three advert intervals
//! pass, and only then removes them. keepalived removes them at once, which loses about one
//! Skew_Time of traffic.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{InstanceConfig, VirtualIp};
use super::garp::GarpSender;
use super::hooks::Notifier;
use super::machine::{Action, Event, Instance, State};
use super::net::{VrrpSocket, RECV_BUF};
use super::packet::{decode_ip_packet, encode_ip_packet, DropReason, Received, VRRP_MCAST_V4};
use super::track::{self, HealthProbe, Verdict};
use super::vip::Netlink;

/// After the new master's advert, how long a leaving master keeps its VIPs so packets
/// already on their way still find them (capped by one advert interval).
const HANDOVER_LINGER: Duration = Duration::from_millis(100);

/// What the admin API and `fulcrum ctl vrrp` show for one instance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Instance name from the config.
    pub name: String,
    /// Interface it runs on.
    pub interface: String,
    /// Virtual router id.
    pub vrid: u8,
    /// VRRP version.
    pub version: u8,
    /// Current protocol state.
    #[serde(serialize_with = "ser_state")]
    pub state: State,
    /// Address of the current master as last known (ours when we are master).
    pub master: Option<Ipv4Addr>,
    /// Our advert source address.
    pub primary_ip: Ipv4Addr,
    /// Configured priority.
    pub configured_priority: u8,
    /// Effective priority after tracking.
    pub priority: u8,
    /// The virtual IPs, as configured.
    pub virtual_ips: Vec<String>,
    /// Whether the virtual IPs are on the interface now.
    pub vips_held: bool,
    /// Valid adverts for our VRID received.
    pub rx: u64,
    /// Adverts sent (one per destination).
    pub tx: u64,
    /// Dropped packets by reason ([`DropReason::label`], plus `unknown_peer`).
    pub invalid: BTreeMap<String, u64>,
    /// Times this node became master.
    pub became_master: u64,
    /// Failing tracked conditions.
    pub tracking: Vec<String>,
}

fn ser_state<S: serde::Serializer>(s: &State, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// A shared, cheaply cloned view of one instance's status.
pub type SharedStatus = Arc<Mutex<InstanceStatus>>;

/// A running instance.
#[derive(Debug)]
pub struct InstanceHandle {
    status: SharedStatus,
    stop: Option<oneshot::Sender<()>>,
    updates: mpsc::UnboundedSender<InstanceConfig>,
    join: JoinHandle<()>,
}

/// True when `new` can be applied to an instance running `old` in place:
/// the same interface, VRID and version, and the same advert source and
/// multicast/unicast choice (the socket it opened). Everything else —
/// priority, virtual IPs, tracking, advert interval, preempt, peers,
/// password, ARP settings, hooks — changes on the running instance.
pub fn updatable(old: &InstanceConfig, new: &InstanceConfig) -> bool {
    old.interface == new.interface
        && old.vrid == new.vrid
        && old.version == new.version
        && old.unicast_src == new.unicast_src
        && old.unicast_peers.is_empty() == new.unicast_peers.is_empty()
}

impl InstanceHandle {
    /// The instance's status, shared with its task.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Apply new settings to the running instance (see [`updatable`], which
    /// the caller checked): it keeps its state. False when the task is gone.
    pub fn update(&self, cfg: InstanceConfig) -> bool {
        self.updates.send(cfg).is_ok()
    }

    /// Graceful stop: hand the VIPs over (see the module docs) and wait for the task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.join).await;
    }
}

/// Everything the loop owns.
struct Runner {
    cfg: InstanceConfig,
    machine: Instance,
    epoch: Instant,
    ifindex: u32,
    primary: Ipv4Addr,
    sock: VrrpSocket,
    garp: Option<GarpSender>,
    netlink: Netlink,
    notifier: Notifier,
    status: SharedStatus,
    ident: u16,
    tx: u64,
    rx: u64,
    invalid: BTreeMap<String, u64>,
    vips_held: bool,
    /// When VIPs handed to a new master are released (see [`HANDOVER_LINGER`]).
    release_at: Option<Instant>,
    tracking: Vec<String>,
    /// For a tracker restarted by [`Runner::reconfigure`].
    probe: Option<HealthProbe>,
}

/// Looks up the interface, cleans up VIPs a crashed earlier run left behind, opens the
/// sockets and starts the instance's task.
pub async fn start(cfg: InstanceConfig, probe: Option<HealthProbe>) -> io::Result<InstanceHandle> {
    let ctx = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("vrrp instance `{}`: {what}: {e}", cfg.name),
        )
    };
    let netlink = Netlink::connect().map_err(|e| ctx("cannot open netlink", e))?;
    let link = netlink
        .link(&cfg.interface)
        .await
        .map_err(|e| ctx("cannot read the interface", e))?
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "vrrp instance `{}`: interface `{}` does not exist",
                    cfg.name, cfg.interface
                ),
            )
        })?;
    let ours = |a: &Ipv4Addr| cfg.virtual_ips.iter().any(|v| v.address == *a);
    let addresses = netlink
        .ipv4_addresses(link.index)
        .await
        .map_err(|e| ctx("cannot list addresses", e))?;
    let primary = match cfg.unicast_src {
        Some(a) => a,
        None => addresses
            .iter()
            .map(|v| v.address)
            .find(|a| !ours(a))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "vrrp instance `{}`: interface `{}` has no IPv4 address of its own to send adverts from",
                        cfg.name, cfg.interface
                    ),
                )
            })?,
    };
    // Start-up hygiene: VIPs on the interface now were left by a run that died as master.
    for vip in &cfg.virtual_ips {
        match netlink.del(link.index, *vip).await {
            Ok(true) => {
                tracing::warn!(instance = %cfg.name, %vip, "removed a virtual IP left on the interface by an earlier run")
            }
            Ok(false) => {}
            Err(e) => return Err(ctx("cannot remove a stale virtual IP", e)),
        }
    }
    let sock = VrrpSocket::open(
        &cfg.interface,
        link.index,
        primary,
        cfg.unicast_peers.is_empty(),
    )
    .map_err(|e| ctx("cannot open the VRRP socket (needs root or CAP_NET_RAW)", e))?;
    let garp = match GarpSender::open(link.index, link.mac) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(instance = %cfg.name, error = %e, "cannot open the gratuitous ARP socket; none will be sent");
            None
        }
    };
    let track_rx = track::spawn(
        &cfg.name,
        cfg.priority,
        &cfg.track,
        probe.clone(),
        netlink.clone(),
    );
    let epoch = Instant::now();
    let machine = Instance::new(cfg.params(primary), Duration::ZERO);
    let status = Arc::new(Mutex::new(InstanceStatus {
        name: cfg.name.clone(),
        interface: cfg.interface.clone(),
        vrid: cfg.vrid,
        version: cfg.version,
        state: State::Initialize,
        master: None,
        primary_ip: primary,
        configured_priority: cfg.priority,
        priority: cfg.priority,
        virtual_ips: cfg.virtual_ips.iter().map(VirtualIp::to_string).collect(),
        vips_held: false,
        rx: 0,
        tx: 0,
        invalid: BTreeMap::new(),
        became_master: 0,
        tracking: Vec::new(),
    }));
    tracing::info!(
        instance = %cfg.name, interface = %cfg.interface, vrid = cfg.vrid, version = cfg.version,
        priority = cfg.priority, src = %primary, "vrrp instance starting"
    );
    let notifier = Notifier::start(&cfg.name, cfg.vrid, &cfg.notify);
    let runner = Runner {
        cfg,
        machine,
        epoch,
        ifindex: link.index,
        primary,
        sock,
        garp,
        netlink,
        notifier,
        status: status.clone(),
        ident: 0,
        tx: 0,
        rx: 0,
        invalid: BTreeMap::new(),
        vips_held: false,
        release_at: None,
        tracking: Vec::new(),
        probe,
    };
    let (stop, stop_rx) = oneshot::channel();
    let (updates, updates_rx) = mpsc::unbounded_channel();
    let join = tokio::spawn(runner.run(track_rx, stop_rx, updates_rx));
    Ok(InstanceHandle {
        status,
        stop: Some(stop),
        updates,
        join,
    })
}

impl Runner {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn run(
        mut self,
        mut track_rx: Option<watch::Receiver<Verdict>>,
        mut stop: oneshot::Receiver<()>,
        mut updates: mpsc::UnboundedReceiver<InstanceConfig>,
    ) {
        if let Some(rx) = &track_rx {
            let v = rx.borrow().clone();
            self.apply_verdict(v).await;
        }
        self.event(Event::Startup).await;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let deadline = self.machine.next_deadline().map(|d| self.epoch + d);
            tokio::select! {
                _ = sleep_until_opt(deadline) => self.event(Event::Timer).await,
                _ = sleep_until_opt(self.release_at) => {
                    self.release_at = None;
                    self.remove_vips().await;
                    self.publish();
                }
                r = self.sock.recv(&mut buf) => match r {
                    Ok(n) => {
                        if let Some(ev) = self.on_packet(buf.get(..n).unwrap_or_default()) {
                            self.event(ev).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(instance = %self.cfg.name, error = %e, "receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                changed = changed_opt(&mut track_rx) => {
                    match changed {
                        Some(v) => self.apply_verdict(v).await,
                        None => track_rx = None,
                    }
                }
                Some(cfg) = updates.recv() => self.reconfigure(cfg, &mut track_rx).await,
                _ = &mut stop => break,
            }
        }
        self.handover(&mut buf).await;
    }

    /// A reload changed the instance's settings but not its identity (see
    /// [`updatable`]): apply them without leaving the current state. Virtual
    /// IPs held are added and removed one by one (new ones announced with
    /// gratuitous ARPs); a new priority or tracking goes through the
    /// machine's priority event, as a tracking change would.
    async fn reconfigure(
        &mut self,
        cfg: InstanceConfig,
        track_rx: &mut Option<watch::Receiver<Verdict>>,
    ) {
        let old = std::mem::replace(&mut self.cfg, cfg);
        let (added, removed): (Vec<VirtualIp>, Vec<VirtualIp>) = (
            self.cfg
                .virtual_ips
                .iter()
                .filter(|v| !old.virtual_ips.contains(v))
                .copied()
                .collect(),
            old.virtual_ips
                .iter()
                .filter(|v| !self.cfg.virtual_ips.contains(v))
                .copied()
                .collect(),
        );
        if self.vips_held {
            for vip in &removed {
                if let Err(e) = self.netlink.del(self.ifindex, *vip).await {
                    tracing::error!(instance = %self.cfg.name, %vip, error = %e, "cannot remove virtual IP");
                }
            }
            for vip in &added {
                if let Err(e) = self.netlink.add(self.ifindex, *vip).await {
                    tracing::error!(instance = %self.cfg.name, %vip, error = %e, "cannot add virtual IP");
                }
            }
            if let Some(g) = &self.garp {
                for vip in &added {
                    for _ in 0..self.cfg.garp_master_repeat {
                        if g.send(vip.address).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        if old.notify != self.cfg.notify {
            self.notifier = Notifier::start(&self.cfg.name, self.cfg.vrid, &self.cfg.notify);
        }
        self.machine.reconfigure(self.cfg.params(self.primary));
        if old.track != self.cfg.track || old.priority != self.cfg.priority {
            // The old tracker's tasks end once its receiver is dropped here.
            *track_rx = track::spawn(
                &self.cfg.name,
                self.cfg.priority,
                &self.cfg.track,
                self.probe.clone(),
                self.netlink.clone(),
            );
            let verdict = match track_rx {
                Some(rx) => rx.borrow_and_update().clone(),
                None => Verdict {
                    priority: self.cfg.priority,
                    fault: false,
                    failing: Vec::new(),
                },
            };
            self.apply_verdict(verdict).await;
        }
        if let Ok(mut s) = self.status.lock() {
            s.configured_priority = self.cfg.priority;
            s.virtual_ips = self
                .cfg
                .virtual_ips
                .iter()
                .map(VirtualIp::to_string)
                .collect();
        }
        tracing::info!(
            instance = %self.cfg.name, state = %self.machine.state(), priority = self.cfg.priority,
            vips_added = added.len(), vips_removed = removed.len(),
            "vrrp: instance updated in place"
        );
        self.publish();
    }

    /// Feeds one event to the machine and carries out what it asks.
    async fn event(&mut self, ev: Event) {
        // A master yielding to a better one keeps its VIPs a moment, so packets already on
        // their way (sent before the new master's gratuitous ARP landed) still find them.
        let yielding = self.machine.state() == State::Master
            && matches!(ev, Event::Advert { priority, .. } if priority > 0);
        let actions = self.machine.handle(self.now(), ev);
        for a in actions {
            if yielding && a == Action::RemoveVips {
                let linger = HANDOVER_LINGER.min(self.cfg.advert_interval());
                self.release_at = Some(Instant::now() + linger);
            } else {
                self.act(a).await;
            }
        }
        self.publish();
    }

    async fn apply_verdict(&mut self, v: Verdict) {
        self.tracking = v.failing.clone();
        if v.priority != self.machine.status().priority {
            self.event(Event::SetPriority(v.priority)).await;
        }
        let in_fault = self.machine.state() == State::Fault;
        if v.fault != in_fault {
            self.event(Event::Fault(v.fault)).await;
        }
        self.publish();
    }

    /// Decodes a received packet; returns the event for a valid advert of ours.
    fn on_packet(&mut self, pkt: &[u8]) -> Option<Event> {
        let r = match self.decode(pkt) {
            Ok(r) => r,
            Err(None) => return None,
            Err(Some(label)) => {
                *self.invalid.entry(label.to_string()).or_insert(0) += 1;
                self.publish();
                return None;
            }
        };
        if r.src == self.primary {
            return None;
        }
        self.rx += 1;
        Some(Event::Advert {
            from: r.src,
            priority: r.advert.priority,
            interval_cs: r.advert.advert_interval_cs,
        })
    }

    /// `Err(None)`: not for us (another VRID), ignored like keepalived does;
    /// `Err(Some(label))`: invalid, counted.
    fn decode(&self, pkt: &[u8]) -> Result<Received, Option<&'static str>> {
        match decode_ip_packet(pkt, &self.cfg.decode_expect()) {
            Ok(r) => {
                if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&r.src) {
                    tracing::debug!(instance = %self.cfg.name, src = %r.src, "advert from an address not in unicast_peers");
                    return Err(Some("unknown_peer"));
                }
                Ok(r)
            }
            Err(DropReason::WrongVrid(_)) => Err(None),
            Err(reason) => {
                tracing::debug!(instance = %self.cfg.name, %reason, "dropped a VRRP packet");
                Err(Some(reason.label()))
            }
        }
    }

    async fn act(&mut self, a: Action) {
        match a {
            Action::SendAdvert { priority } => self.send_advert(priority),
            Action::AddVips => {
                self.release_at = None;
                for vip in self.cfg.virtual_ips.clone() {
                    if let Err(e) = self.netlink.add(self.ifindex, vip).await {
                        tracing::error!(instance = %self.cfg.name, error = %e, "cannot add virtual IP");
                    }
                }
                self.vips_held = true;
            }
            Action::RemoveVips => self.remove_vips().await,
            Action::SendGarp { count } => self.send_garp(count),
            Action::StateChanged { from, to } => {
                let priority = self.machine.status().priority;
                tracing::info!(instance = %self.cfg.name, vrid = self.cfg.vrid, %from, %to, priority, "vrrp state changed");
                self.notifier.notify(to, priority);
            }
        }
    }

    async fn remove_vips(&mut self) {
        self.release_at = None;
        for vip in self.cfg.virtual_ips.clone() {
            if let Err(e) = self.netlink.del(self.ifindex, vip).await {
                tracing::error!(instance = %self.cfg.name, error = %e, "cannot remove virtual IP");
            }
        }
        self.vips_held = false;
    }

    fn send_advert(&mut self, priority: u8) {
        let advert = self.cfg.advert(priority);
        let dsts: Vec<Ipv4Addr> = if self.cfg.unicast_peers.is_empty() {
            vec![VRRP_MCAST_V4]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dsts {
            self.ident = self.ident.wrapping_add(1);
            match encode_ip_packet(&advert, self.primary, dst, self.ident) {
                Ok(pkt) => match self.sock.send(&pkt, dst) {
                    Ok(()) => self.tx += 1,
                    Err(e) => {
                        tracing::warn!(instance = %self.cfg.name, %dst, error = %e, "cannot send advert")
                    }
                },
                Err(e) => {
                    tracing::error!(instance = %self.cfg.name, error = %e, "cannot encode advert")
                }
            }
        }
    }

    fn send_garp(&self, count: u32) {
        let Some(g) = &self.garp else { return };
        for vip in &self.cfg.virtual_ips {
            for _ in 0..count {
                if let Err(e) = g.send(vip.address) {
                    tracing::warn!(instance = %self.cfg.name, vip = %vip.address, error = %e, "cannot send gratuitous ARP");
                    break;
                }
            }
        }
    }

    /// Graceful stop. A master keeps its VIPs until another router's advert shows it has
    /// taken over (or three advert intervals pass), repeating its priority-0 advert meanwhile.
    async fn handover(&mut self, buf: &mut [u8]) {
        if self.machine.state() != State::Master {
            self.event(Event::Shutdown).await;
            if self.release_at.take().is_some() {
                self.remove_vips().await;
                self.publish();
            }
            return;
        }
        let started = Instant::now();
        let actions = self.machine.handle(self.now(), Event::Shutdown);
        for a in actions {
            if a != Action::RemoveVips {
                self.act(a).await;
            }
        }
        self.publish();
        let interval = self.cfg.advert_interval();
        let bound = started + interval * 3;
        let mut resend = started + interval;
        let mut taken_over = None;
        while Instant::now() < bound {
            tokio::select! {
                _ = tokio::time::sleep_until(resend.min(bound)) => {
                    if Instant::now() >= resend {
                        self.send_advert(0);
                        resend += interval;
                    }
                }
                r = self.sock.recv(buf) => {
                    let Ok(n) = r else { continue };
                    if let Ok(rcv) = self.decode(buf.get(..n).unwrap_or_default()) {
                        if rcv.src != self.primary && rcv.advert.priority > 0 {
                            taken_over = Some(rcv.src);
                            break;
                        }
                    }
                }
            }
        }
        match taken_over {
            Some(new_master) => {
                tokio::time::sleep(HANDOVER_LINGER.min(interval)).await;
                tracing::info!(instance = %self.cfg.name, %new_master, after = ?started.elapsed(), "new master took over; releasing virtual IPs");
            }
            None => {
                tracing::warn!(instance = %self.cfg.name, "no new master within 3 advert intervals; releasing virtual IPs")
            }
        }
        self.remove_vips().await;
        self.publish();
    }

    /// Copies the current facts to the shared status.
    fn publish(&self) {
        let m = self.machine.status();
        if let Ok(mut s) = self.status.lock() {
            s.state = m.state;
            s.master = m.last_master;
            s.priority = m.priority;
            s.vips_held = self.vips_held;
            s.rx = self.rx;
            s.tx = self.tx;
            s.invalid.clone_from(&self.invalid);
            s.became_master = m.became_master;
            s.tracking.clone_from(&self.tracking);
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The next verdict, `None` when the tracker is gone; pending forever without a tracker.
async fn changed_opt(rx: &mut Option<watch::Receiver<Verdict>>) -> Option<Verdict> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}
