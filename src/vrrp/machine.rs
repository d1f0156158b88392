//! The VRRP state machine of RFC 5798 §6.4 (and RFC 3768 §6.4 for v2), sans-IO.
//!
//! An [`Instance`] owns no socket and no clock. The caller feeds it [`Event`]s with the
//! current time (a [`Duration`] since any fixed epoch of a monotonic clock, e.g.
//! `Instant::duration_since(start)`), executes the returned [`Action`]s in order, and calls
//! again with [`Event::Timer`] at [`Instance::next_deadline`]. Tests drive it with simulated
//! time, so every timer rule below is checked without sleeping.
//!
//! Beyond the RFC, it behaves like keepalived where keepalived is the reference:
//! - `preempt = false` (heartbeat's `auto_failback off`): a backup never takes over from a
//!   live master, whatever the priorities; a master still yields to a higher one.
//! - `preempt_delay`: a backup that could preempt first tolerates the lower master that long.
//! - A master hearing a lower-priority master answers at once, so a split brain heals in one
//!   round trip instead of one advert interval.
//! - Leaving master state for a fault sends a priority-0 advert, like shutdown does.
//! - Gratuitous ARPs go out on becoming master and again after `garp_master_delay`.

use std::net::Ipv4Addr;
use std::time::Duration;

/// Protocol state of one virtual router instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or shut down.
    Initialize,
    /// Watching the master; takes over when it goes silent.
    Backup,
    /// Owns the virtual addresses and advertises.
    Master,
    /// A tracked condition failed; neither advertises nor takes over.
    Fault,
}

impl State {
    /// Lowercase name for logs, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configuration of one instance, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// VRRP version, 2 or 3; selects the timer rules (v3 learns the master's interval).
    pub version: u8,
    /// Virtual router id (the caller filters adverts of other VRIDs before they get here).
    pub vrid: u8,
    /// Configured priority, 1..=255; 255 marks the address owner.
    pub priority: u8,
    /// Our advert interval in centiseconds (v2: a multiple of 100).
    pub advert_interval_cs: u16,
    /// Our primary address, the source of our adverts: breaks ties between equal priorities.
    pub primary_ip: Ipv4Addr,
    /// Whether a higher-priority backup takes over from a live lower-priority master.
    pub preempt: bool,
    /// How long a backup that could preempt keeps tolerating a lower-priority master.
    pub preempt_delay: Duration,
    /// Delay before the second burst of gratuitous ARPs after becoming master (0 = no second burst).
    pub garp_master_delay: Duration,
    /// Gratuitous ARPs per burst (0 = none).
    pub garp_master_repeat: u32,
}

impl Params {
    /// keepalived's defaults for everything but the identity: v2, 1 s adverts, preempt on,
    /// no preempt delay, 5 gratuitous ARPs now and 5 more after 5 s.
    pub fn new(vrid: u8, priority: u8, primary_ip: Ipv4Addr) -> Self {
        Params {
            version: 2,
            vrid,
            priority,
            advert_interval_cs: 100,
            primary_ip,
            preempt: true,
            preempt_delay: Duration::ZERO,
            garp_master_delay: Duration::from_secs(5),
            garp_master_repeat: 5,
        }
    }
}

/// Something that happened to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Leave Initialize: become Backup, or Master at once for the address owner.
    Startup,
    /// A deadline from [`Instance::next_deadline`] passed (early or spurious calls are harmless).
    Timer,
    /// A valid advert for our VRID arrived (already checked by [`super::packet`]).
    Advert {
        /// IP source of the advert: the sender's primary address.
        from: Ipv4Addr,
        /// Sender priority; 0 means the master is leaving.
        priority: u8,
        /// Sender's advert interval in centiseconds.
        interval_cs: u16,
    },
    /// Stop: a master sends a priority-0 advert and releases the addresses.
    Shutdown,
    /// New effective priority (configured priority adjusted by tracking); clamped to 1..=255.
    SetPriority(u8),
    /// A tracked condition failed (`true`) or recovered (`false`).
    Fault(bool),
}

/// What the caller must do, in the order returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send one advert with this priority (interval, VRID and addresses come from the config).
    SendAdvert {
        /// Priority to advertise; 0 when leaving master state.
        priority: u8,
    },
    /// Add the virtual addresses to the interface.
    AddVips,
    /// Remove the virtual addresses from the interface.
    RemoveVips,
    /// Send this many gratuitous ARPs for every virtual address.
    SendGarp {
        /// Number of gratuitous ARPs per address.
        count: u32,
    },
    /// The state changed (for logs, metrics, notify scripts).
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
    },
}

/// A snapshot of the instance for the admin API and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Current state.
    pub state: State,
    /// When the current state was entered (the caller's clock).
    pub since: Duration,
    /// Effective priority.
    pub priority: u8,
    /// Interval the master-down timer is based on (v3: learned from the master).
    pub master_adver_interval_cs: u16,
    /// Adverts handed to [`Instance::handle`].
    pub adverts_received: u64,
    /// [`Action::SendAdvert`] actions returned.
    pub adverts_sent: u64,
    /// Priority-0 adverts received (a master leaving).
    pub priority_zero_received: u64,
    /// Times this instance became master.
    pub became_master: u64,
    /// The master we last knew of: the last accepted advert's source, or our own address.
    pub last_master: Option<Ipv4Addr>,
}

/// One VRRP virtual router instance. See the module docs.
#[derive(Debug, Clone)]
pub struct Instance {
    params: Params,
    state: State,
    since: Duration,
    priority: u8,
    fault: bool,
    master_adver_interval_cs: u16,
    adver_timer: Option<Duration>,
    master_down_timer: Option<Duration>,
    garp_timer: Option<Duration>,
    /// Backup only: when tolerating a lower-priority master ends (preempt_delay running).
    preempt_at: Option<Duration>,
    adverts_received: u64,
    adverts_sent: u64,
    priority_zero_received: u64,
    became_master: u64,
    last_master: Option<Ipv4Addr>,
}

/// Converts centiseconds to a duration.
fn cs(centis: u16) -> Duration {
    Duration::from_millis(u64::from(centis) * 10)
}

impl Instance {
    /// A new instance in Initialize state; nothing happens until [`Event::Startup`].
    pub fn new(params: Params, now: Duration) -> Self {
        let priority = params.priority.max(1);
        let interval = params.advert_interval_cs.max(1);
        Instance {
            params,
            state: State::Initialize,
            since: now,
            priority,
            fault: false,
            master_adver_interval_cs: interval,
            adver_timer: None,
            master_down_timer: None,
            garp_timer: None,
            preempt_at: None,
            adverts_received: 0,
            adverts_sent: 0,
            priority_zero_received: 0,
            became_master: 0,
            last_master: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration this instance runs with.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// New settings for a running instance (a reload that kept its interface,
    /// VRID and version): state, timers and counters stay as they are. A new
    /// advert interval takes effect from the next advert; a new configured
    /// priority through [`Event::SetPriority`], which the caller sends with
    /// tracking applied (a master stays master unless that loses it the
    /// election); `preempt` and the ARP settings from their next use.
    pub fn reconfigure(&mut self, params: Params) {
        // A backup (v3) keeps the interval it learned from the master.
        if self.state != State::Backup || params.version == 2 {
            self.master_adver_interval_cs = params.advert_interval_cs.max(1);
        }
        self.params = params;
    }

    /// Counters and state for the admin API.
    pub fn status(&self) -> Status {
        Status {
            state: self.state,
            since: self.since,
            priority: self.priority,
            master_adver_interval_cs: self.master_adver_interval_cs,
            adverts_received: self.adverts_received,
            adverts_sent: self.adverts_sent,
            priority_zero_received: self.priority_zero_received,
            became_master: self.became_master,
            last_master: self.last_master,
        }
    }

    /// When the caller must deliver [`Event::Timer`] next; `None` while no timer runs.
    pub fn next_deadline(&self) -> Option<Duration> {
        [self.adver_timer, self.master_down_timer, self.garp_timer]
            .into_iter()
            .flatten()
            .min()
    }

    /// Our advert interval.
    fn advert_interval(&self) -> Duration {
        cs(self.params.advert_interval_cs.max(1))
    }

    /// Skew_Time: lower priorities wait longer, so the best backup takes over first.
    /// v3: `((256 - prio) * Master_Adver_Interval) / 256`; v2: `(256 - prio) / 256` seconds.
    pub fn skew_time(&self) -> Duration {
        let base_us = if self.params.version == 3 {
            u64::from(self.master_adver_interval_cs) * 10_000
        } else {
            1_000_000
        };
        Duration::from_micros((256 - u64::from(self.priority)) * base_us / 256)
    }

    /// Master_Down_Interval: `3 * interval + Skew_Time`, where the interval is the master's
    /// (learned) one in v3 and our own in v2.
    pub fn master_down_interval(&self) -> Duration {
        let interval = if self.params.version == 3 {
            cs(self.master_adver_interval_cs)
        } else {
            self.advert_interval()
        };
        interval * 3 + self.skew_time()
    }

    /// Feeds one event at time `now`; returns the actions to perform, in order.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => {
                if self.state == State::Initialize {
                    self.start(now, &mut out);
                }
            }
            Event::Timer => self.on_timer(now, &mut out),
            Event::Advert {
                from,
                priority,
                interval_cs,
            } => self.on_advert(now, from, priority, interval_cs, &mut out),
            Event::Shutdown => {
                if self.state == State::Master {
                    self.send(0, &mut out);
                    out.push(Action::RemoveVips);
                }
                self.enter(now, State::Initialize, &mut out);
            }
            Event::SetPriority(p) => {
                let p = p.max(1);
                if p != self.priority {
                    self.priority = p;
                    if self.state == State::Master {
                        // Tell the backups now: with preempt they take over after one MDI.
                        self.send(p, &mut out);
                        self.adver_timer = Some(now.saturating_add(self.advert_interval()));
                    }
                }
            }
            Event::Fault(failed) => {
                self.fault = failed;
                match (failed, self.state) {
                    (true, State::Master) => {
                        self.send(0, &mut out);
                        out.push(Action::RemoveVips);
                        self.enter(now, State::Fault, &mut out);
                    }
                    (true, State::Backup) => self.enter(now, State::Fault, &mut out),
                    (false, State::Fault) => self.start(now, &mut out),
                    _ => {}
                }
            }
        }
        out
    }

    /// Leaves Initialize or Fault: to Fault if a fault is pending, Master for the owner, else Backup.
    fn start(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.fault {
            self.enter(now, State::Fault, out);
        } else if self.priority == 255 {
            self.become_master(now, out);
        } else {
            self.master_adver_interval_cs = self.params.advert_interval_cs.max(1);
            self.become_backup(now, out);
        }
    }

    fn on_timer(&mut self, now: Duration, out: &mut Vec<Action>) {
        let due = |t: Option<Duration>| t.is_some_and(|t| t <= now);
        match self.state {
            State::Backup if due(self.master_down_timer) => self.become_master(now, out),
            State::Master => {
                if due(self.adver_timer) {
                    self.send(self.priority, out);
                    self.adver_timer = Some(now.saturating_add(self.advert_interval()));
                }
                if due(self.garp_timer) {
                    self.garp_timer = None;
                    out.push(Action::SendGarp {
                        count: self.params.garp_master_repeat,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_advert(
        &mut self,
        now: Duration,
        from: Ipv4Addr,
        priority: u8,
        interval_cs: u16,
        out: &mut Vec<Action>,
    ) {
        if from == self.params.primary_ip {
            return; // our own advert looped back
        }
        self.adverts_received += 1;
        if priority == 0 {
            self.priority_zero_received += 1;
        }
        match self.state {
            State::Backup => {
                if priority == 0 {
                    // The master is leaving: the best backup takes over after its skew alone.
                    self.master_down_timer = Some(now.saturating_add(self.skew_time()));
                    return;
                }
                let lower = priority < self.priority;
                if lower && self.params.preempt && !self.tolerate_lower_master(now) {
                    return; // let the master-down timer run out, then preempt
                }
                if !lower {
                    self.preempt_at = None;
                }
                if self.params.version == 3 {
                    self.master_adver_interval_cs = interval_cs.max(1);
                }
                self.master_down_timer = Some(now.saturating_add(self.master_down_interval()));
                self.last_master = Some(from);
            }
            State::Master => {
                let theirs = (priority, u32::from(from));
                let ours = (self.priority, u32::from(self.params.primary_ip));
                if priority != 0 && theirs > ours {
                    if self.params.version == 3 {
                        self.master_adver_interval_cs = interval_cs.max(1);
                    }
                    self.last_master = Some(from);
                    out.push(Action::RemoveVips);
                    self.become_backup(now, out);
                } else {
                    // A master leaving, or a lower one (split brain): assert ourselves now.
                    self.send(self.priority, out);
                    self.adver_timer = Some(now.saturating_add(self.advert_interval()));
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    /// With `preempt_delay`, a backup keeps treating a lower-priority master as live until
    /// the delay, started by the first such advert, has passed.
    fn tolerate_lower_master(&mut self, now: Duration) -> bool {
        if self.params.preempt_delay.is_zero() {
            return false;
        }
        let until = *self
            .preempt_at
            .get_or_insert(now.saturating_add(self.params.preempt_delay));
        now < until
    }

    fn become_master(&mut self, now: Duration, out: &mut Vec<Action>) {
        out.push(Action::AddVips);
        self.send(self.priority, out);
        if self.params.garp_master_repeat > 0 {
            out.push(Action::SendGarp {
                count: self.params.garp_master_repeat,
            });
        }
        self.adver_timer = Some(now.saturating_add(self.advert_interval()));
        self.garp_timer = (self.params.garp_master_repeat > 0
            && !self.params.garp_master_delay.is_zero())
        .then(|| now.saturating_add(self.params.garp_master_delay));
        self.became_master += 1;
        self.last_master = Some(self.params.primary_ip);
        self.enter(now, State::Master, out);
    }

    fn become_backup(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.enter(now, State::Backup, out);
        self.master_down_timer = Some(now.saturating_add(self.master_down_interval()));
    }

    /// Switches state, clearing every timer (the caller of `enter` sets the new ones).
    fn enter(&mut self, now: Duration, to: State, out: &mut Vec<Action>) {
        if to != State::Master {
            self.adver_timer = None;
            self.garp_timer = None;
        }
        self.master_down_timer = None;
        self.preempt_at = None;
        if self.state != to {
            out.push(Action::StateChanged {
                from: self.state,
                to,
            });
            self.state = to;
            self.since = now;
        }
    }

    fn send(&mut self, priority: u8, out: &mut Vec<Action>) {
        self.adverts_sent += 1;
        out.push(Action::SendAdvert { priority });
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
