//! State machine tests on simulated time: a tiny network of instances, no sockets, no sleeps.

use super::*;

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn secs(x: u64) -> Duration {
    Duration::from_secs(x)
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, last)
}

/// Node `last` with priority `prio`, keepalived defaults otherwise (v2, 1 s).
fn node(last: u8, prio: u8) -> Params {
    Params::new(51, prio, ip(last))
}

fn v3(mut p: Params, interval_cs: u16) -> Params {
    p.version = 3;
    p.advert_interval_cs = interval_cs;
    p
}

/// One simulated host.
struct Host {
    inst: Instance,
    up: bool,
}

/// A broadcast segment of hosts with per-delivery latency and an optional partition.
struct Sim {
    now: Duration,
    hosts: Vec<Host>,
    /// (deliver at, to, event), delivered in time order.
    queue: Vec<(Duration, usize, Event)>,
    /// Transitions seen: (time, host, from, to).
    changes: Vec<(Duration, usize, State, State)>,
    /// Adverts sent: (time, host, priority).
    sent: Vec<(Duration, usize, u8)>,
    /// Gratuitous ARP bursts: (time, host, count).
    garps: Vec<(Duration, usize, u32)>,
    /// No adverts cross while true.
    partitioned: bool,
    rng: fastrand::Rng,
    max_delay_ms: u64,
    /// Fails the test the moment two masters coexist.
    assert_single_master: bool,
    /// Events handled so far; bounded so an advert storm fails fast instead of hanging.
    handled: u32,
}

impl Sim {
    fn new(params: Vec<Params>) -> Self {
        let hosts = params
            .into_iter()
            .map(|p| Host {
                inst: Instance::new(p, Duration::ZERO),
                up: false,
            })
            .collect();
        Sim {
            now: Duration::ZERO,
            hosts,
            queue: Vec::new(),
            changes: Vec::new(),
            sent: Vec::new(),
            garps: Vec::new(),
            partitioned: false,
            rng: fastrand::Rng::with_seed(1),
            max_delay_ms: 0,
            assert_single_master: false,
            handled: 0,
        }
    }

    fn start(&mut self, i: usize) {
        self.hosts[i].up = true;
        self.apply(i, Event::Startup);
    }

    fn start_all(&mut self) {
        for i in 0..self.hosts.len() {
            self.start(i);
        }
    }

    /// Power loss: no priority-0 advert, nothing delivered any more.
    fn crash(&mut self, i: usize) {
        self.hosts[i].up = false;
        self.queue.retain(|(_, to, _)| *to != i);
    }

    /// Boots a crashed host with a fresh instance.
    fn reboot(&mut self, i: usize) {
        let params = self.hosts[i].inst.params().clone();
        self.hosts[i].inst = Instance::new(params, self.now);
        self.start(i);
    }

    fn apply(&mut self, i: usize, event: Event) {
        self.handled += 1;
        assert!(
            self.handled < 200_000,
            "runaway event loop at {:?}",
            self.now
        );
        let now = self.now;
        let actions = self.hosts[i].inst.handle(now, event);
        let me = self.hosts[i].inst.params().clone();
        for action in actions {
            match action {
                Action::SendAdvert { priority } => {
                    self.sent.push((now, i, priority));
                    if self.partitioned {
                        continue;
                    }
                    for to in 0..self.hosts.len() {
                        if to != i && self.hosts[to].up {
                            let delay = ms(self.rng.u64(0..=self.max_delay_ms));
                            let ev = Event::Advert {
                                from: me.primary_ip,
                                priority,
                                interval_cs: me.advert_interval_cs,
                            };
                            self.queue.push((now + delay, to, ev));
                        }
                    }
                }
                Action::SendGarp { count } => self.garps.push((now, i, count)),
                Action::StateChanged { from, to } => self.changes.push((now, i, from, to)),
                Action::AddVips | Action::RemoveVips => {}
            }
        }
        if self.assert_single_master {
            assert!(
                self.masters().len() <= 1,
                "two masters at {:?}: {:?}",
                self.now,
                self.masters()
            );
        }
    }

    /// Runs the event loop up to and including time `until`.
    fn run_until(&mut self, until: Duration) {
        for _ in 0..200_000 {
            let timers = self
                .hosts
                .iter()
                .filter(|h| h.up)
                .filter_map(|h| h.inst.next_deadline());
            let next = timers.chain(self.queue.iter().map(|q| q.0)).min();
            match next {
                Some(t) if t <= until => self.now = self.now.max(t),
                _ => {
                    self.now = until;
                    return;
                }
            }
            // Deliveries first (in time order), then timers, at this instant.
            self.queue.sort_by_key(|q| q.0);
            while self.queue.first().is_some_and(|q| q.0 <= self.now) {
                let (_, to, ev) = self.queue.remove(0);
                if self.hosts[to].up {
                    self.apply(to, ev);
                }
            }
            for i in 0..self.hosts.len() {
                if self.hosts[i].up
                    && self.hosts[i]
                        .inst
                        .next_deadline()
                        .is_some_and(|t| t <= self.now)
                {
                    self.apply(i, Event::Timer);
                }
            }
        }
        panic!("simulation did not reach {until:?}");
    }

    fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn state(&self, i: usize) -> State {
        self.hosts[i].inst.state()
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| self.hosts[i].up && self.state(i) == State::Master)
            .collect()
    }

    /// When host `i` last became master.
    fn became_master_at(&self, i: usize) -> Option<Duration> {
        self.changes
            .iter()
            .rev()
            .find(|c| c.1 == i && c.3 == State::Master)
            .map(|c| c.0)
    }

    fn last_sent_by(&self, i: usize) -> Duration {
        self.sent
            .iter()
            .rev()
            .find(|s| s.1 == i)
            .map(|s| s.0)
            .unwrap()
    }
}

/// A (101, .11) and B (100, .12), elected: A master.
fn elected_pair(a: Params, b: Params) -> Sim {
    let mut sim = Sim::new(vec![a, b]);
    sim.start_all();
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![0]);
    sim
}

#[test]
fn timers_per_version() {
    let mut v2 = Instance::new(node(11, 100), Duration::ZERO);
    assert_eq!(v2.skew_time(), Duration::from_micros(609_375)); // 156/256 s
    assert_eq!(v2.master_down_interval(), Duration::from_micros(3_609_375));
    let slow_v2 = Instance::new(
        Params {
            advert_interval_cs: 300,
            ..node(11, 100)
        },
        Duration::ZERO,
    );
    assert_eq!(
        slow_v2.skew_time(),
        Duration::from_micros(609_375),
        "v2 skew ignores the interval"
    );
    assert_eq!(
        slow_v2.master_down_interval(),
        Duration::from_micros(9_609_375)
    );

    let mut fast_v3 = Instance::new(v3(node(11, 100), 10), Duration::ZERO);
    assert_eq!(fast_v3.skew_time(), Duration::from_micros(60_937)); // 156 * 100 ms / 256
    assert_eq!(
        fast_v3.master_down_interval(),
        Duration::from_micros(360_937)
    );

    // v3 backups learn the master's interval; v2 ones keep their own.
    let now = secs(1);
    fast_v3.handle(Duration::ZERO, Event::Startup);
    fast_v3.handle(
        now,
        Event::Advert {
            from: ip(12),
            priority: 200,
            interval_cs: 20,
        },
    );
    assert_eq!(fast_v3.status().master_adver_interval_cs, 20);
    let mdi = ms(600) + Duration::from_micros(156 * 200_000 / 256);
    assert_eq!(fast_v3.master_down_interval(), mdi);
    assert_eq!(fast_v3.next_deadline(), Some(now + mdi));
    v2.handle(Duration::ZERO, Event::Startup);
    v2.handle(
        now,
        Event::Advert {
            from: ip(12),
            priority: 200,
            interval_cs: 20,
        },
    );
    assert_eq!(v2.status().master_adver_interval_cs, 100);
    assert_eq!(
        v2.next_deadline(),
        Some(now + Duration::from_micros(3_609_375))
    );
}

#[test]
fn address_owner_goes_straight_to_master() {
    let mut owner = Instance::new(node(11, 255), Duration::ZERO);
    assert_eq!(owner.state(), State::Initialize);
    assert_eq!(owner.next_deadline(), None);
    let actions = owner.handle(Duration::ZERO, Event::Startup);
    assert_eq!(
        actions,
        vec![
            Action::AddVips,
            Action::SendAdvert { priority: 255 },
            Action::SendGarp { count: 5 },
            Action::StateChanged {
                from: State::Initialize,
                to: State::Master
            },
        ]
    );
    assert_eq!(owner.next_deadline(), Some(secs(1)));
}

#[test]
fn two_nodes_elect_the_higher_priority_after_its_mdi() {
    let sim = elected_pair(node(11, 101), node(12, 100));
    let mdi_a = sim.hosts[0].inst.master_down_interval();
    assert_eq!(
        sim.became_master_at(0),
        Some(mdi_a),
        "A wins when its shorter timer fires"
    );
    assert_eq!(sim.state(1), State::Backup);
    assert_eq!(sim.became_master_at(1), None);
    let b = sim.hosts[1].inst.status();
    assert_eq!(b.last_master, Some(ip(11)));
    assert!(b.adverts_received >= 6);
    let a = sim.hosts[0].inst.status();
    assert_eq!(a.became_master, 1);
    assert_eq!(a.last_master, Some(ip(11)));
    assert_eq!(
        a.adverts_sent as usize,
        sim.sent.iter().filter(|s| s.1 == 0).count()
    );
}

#[test]
fn crash_of_master_backup_takes_over_after_mdi() {
    let mut sim = elected_pair(node(11, 101), node(12, 100));
    sim.crash(0);
    let last = sim.last_sent_by(0);
    sim.run_for(secs(10));
    let mdi_b = sim.hosts[1].inst.master_down_interval();
    assert_eq!(sim.became_master_at(1), Some(last + mdi_b));
    assert_eq!(sim.masters(), vec![1]);
}

#[test]
fn graceful_shutdown_hands_over_after_skew_time() {
    let mut sim = elected_pair(node(11, 101), node(12, 100));
    let at = sim.now + ms(500);
    sim.run_until(at);
    sim.apply(0, Event::Shutdown);
    assert_eq!(
        sim.sent.last(),
        Some(&(at, 0, 0)),
        "priority-0 advert on shutdown"
    );
    assert_eq!(sim.state(0), State::Initialize);
    sim.run_for(secs(5));
    assert_eq!(
        sim.became_master_at(1),
        Some(at + sim.hosts[1].inst.skew_time())
    );
    assert_eq!(sim.hosts[1].inst.status().priority_zero_received, 1);
}

#[test]
fn backup_hearing_priority_zero_waits_only_skew_time() {
    let mut b = Instance::new(node(12, 100), Duration::ZERO);
    b.handle(Duration::ZERO, Event::Startup);
    b.handle(
        secs(1),
        Event::Advert {
            from: ip(11),
            priority: 0,
            interval_cs: 100,
        },
    );
    assert_eq!(b.next_deadline(), Some(secs(1) + b.skew_time()));
}

#[test]
fn master_hearing_priority_zero_advertises_at_once() {
    let mut a = Instance::new(node(11, 255), Duration::ZERO);
    a.handle(Duration::ZERO, Event::Startup);
    let actions = a.handle(
        ms(300),
        Event::Advert {
            from: ip(12),
            priority: 0,
            interval_cs: 100,
        },
    );
    assert_eq!(actions, vec![Action::SendAdvert { priority: 255 }]);
    assert_eq!(a.next_deadline(), Some(ms(1300)));
    assert_eq!(a.state(), State::Master);
}

/// A crashes, B takes over, A comes back at t=30 s.
fn old_master_returns(a: Params, b: Params) -> Sim {
    let mut sim = elected_pair(a, b);
    sim.crash(0);
    sim.run_until(secs(30));
    assert_eq!(sim.masters(), vec![1]);
    sim.reboot(0);
    sim
}

#[test]
fn returning_master_preempts_when_preempt_is_on() {
    let mut sim = old_master_returns(node(11, 101), node(12, 100));
    sim.run_for(secs(10));
    let mdi_a = sim.hosts[0].inst.master_down_interval();
    assert_eq!(
        sim.became_master_at(0),
        Some(secs(30) + mdi_a),
        "lower adverts are ignored until MDI"
    );
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.state(1), State::Backup);
}

#[test]
fn returning_master_waits_when_preempt_is_off() {
    let a = Params {
        preempt: false,
        ..node(11, 101)
    };
    let mut sim = old_master_returns(a, node(12, 100));
    sim.run_for(secs(120));
    assert_eq!(
        sim.masters(),
        vec![1],
        "auto_failback off: the live master keeps the VIP"
    );
    assert_eq!(sim.state(0), State::Backup);
    assert_eq!(sim.hosts[0].inst.status().last_master, Some(ip(12)));
}

#[test]
fn preempt_delay_postpones_takeover() {
    let a = Params {
        preempt_delay: secs(10),
        ..node(11, 101)
    };
    let mut sim = old_master_returns(a, node(12, 100));
    sim.run_until(secs(40));
    assert_eq!(sim.masters(), vec![1], "still tolerating the lower master");
    sim.run_until(secs(60));
    assert_eq!(sim.masters(), vec![0]);
    let took = sim.became_master_at(0).unwrap();
    let mdi = sim.hosts[0].inst.master_down_interval();
    // The delay starts at B's first advert (within 1 s), then A lets its timer run out.
    assert!(
        took >= secs(40) && took <= secs(41) + mdi + secs(1),
        "took over at {took:?}"
    );
}

#[test]
fn equal_priorities_break_the_tie_by_higher_ip() {
    let mut sim = Sim::new(vec![node(11, 100), node(12, 100)]);
    sim.start_all();
    sim.run_for(secs(10));
    assert_eq!(sim.masters(), vec![1], ".12 beats .11");
    // Without preemption on equal priority: a late higher IP does not take over.
    let mut sim = Sim::new(vec![node(11, 100), node(12, 100)]);
    sim.start(0);
    sim.run_for(secs(10));
    sim.start(1);
    sim.assert_single_master = true;
    sim.run_for(secs(30));
    assert_eq!(sim.masters(), vec![0]);
}

#[test]
fn split_brain_heals_within_one_interval() {
    for (pa, pb, winner) in [(101, 100, 0), (100, 101, 1), (100, 100, 1)] {
        let mut sim = Sim::new(vec![node(11, pa), node(12, pb)]);
        sim.partitioned = true;
        sim.start_all();
        sim.run_for(secs(10));
        assert_eq!(sim.masters(), vec![0, 1]);
        sim.partitioned = false;
        let healed = sim.now;
        sim.run_for(secs(1) + ms(1));
        assert_eq!(sim.masters(), vec![winner], "prios {pa}/{pb}");
        let loser = 1 - winner;
        let stepped = sim
            .changes
            .iter()
            .find(|c| c.1 == loser && c.2 == State::Master)
            .unwrap()
            .0;
        assert!(stepped <= healed + secs(1));
        sim.assert_single_master = true;
        sim.run_for(secs(30));
    }
}

#[test]
fn tracking_priority_drop_fails_over_only_with_preempt() {
    for preempt in [true, false] {
        let mut sim = elected_pair(
            node(11, 101),
            Params {
                preempt,
                ..node(12, 100)
            },
        );
        let at = sim.now;
        sim.apply(0, Event::SetPriority(90));
        assert_eq!(
            sim.sent.last(),
            Some(&(at, 0, 90)),
            "new priority advertised at once"
        );
        sim.run_for(secs(10));
        if preempt {
            assert_eq!(sim.masters(), vec![1]);
            let took = sim.became_master_at(1).unwrap();
            assert!(took <= at + sim.hosts[1].inst.master_down_interval());
            assert_eq!(sim.state(0), State::Backup);
        } else {
            assert_eq!(sim.masters(), vec![0]);
        }
        // Tracking recovers: A preempts back (A preempts by default).
        sim.apply(0, Event::SetPriority(101));
        sim.run_for(secs(10));
        assert_eq!(sim.masters(), vec![0]);
    }
}

#[test]
fn gratuitous_arp_now_and_after_garp_master_delay() {
    let mut sim = Sim::new(vec![node(11, 255)]);
    sim.start_all();
    sim.run_for(secs(30));
    assert_eq!(sim.garps, vec![(Duration::ZERO, 0, 5), (secs(5), 0, 5)]);

    let quiet = Params {
        garp_master_delay: Duration::ZERO,
        garp_master_repeat: 2,
        ..node(11, 255)
    };
    let mut sim = Sim::new(vec![quiet]);
    sim.start_all();
    sim.run_for(secs(30));
    assert_eq!(sim.garps, vec![(Duration::ZERO, 0, 2)]);

    // A master that steps down before the delay skips the second burst.
    let mut sim = Sim::new(vec![node(11, 100)]);
    sim.start_all();
    sim.run_for(secs(4));
    let master_at = sim.became_master_at(0).unwrap();
    sim.apply(
        0,
        Event::Advert {
            from: ip(12),
            priority: 200,
            interval_cs: 100,
        },
    );
    sim.crash(0);
    assert_eq!(sim.garps, vec![(master_at, 0, 5)]);
    assert_eq!(
        sim.hosts[0].inst.next_deadline().map(|d| d > sim.now),
        Some(true)
    );
}

#[test]
fn fault_releases_and_recovers() {
    let mut a = Instance::new(node(11, 101), Duration::ZERO);
    a.handle(Duration::ZERO, Event::Startup);
    a.handle(secs(5), Event::Timer);
    assert_eq!(a.state(), State::Master);
    let actions = a.handle(secs(6), Event::Fault(true));
    assert_eq!(
        actions,
        vec![
            Action::SendAdvert { priority: 0 },
            Action::RemoveVips,
            Action::StateChanged {
                from: State::Master,
                to: State::Fault
            },
        ]
    );
    assert_eq!(a.next_deadline(), None);
    assert!(a
        .handle(
            secs(7),
            Event::Advert {
                from: ip(12),
                priority: 0,
                interval_cs: 100
            }
        )
        .is_empty());
    assert!(a.handle(secs(7), Event::Timer).is_empty());
    let actions = a.handle(secs(8), Event::Fault(false));
    assert_eq!(
        actions,
        vec![Action::StateChanged {
            from: State::Fault,
            to: State::Backup
        }]
    );
    assert_eq!(a.status().since, secs(8));

    // A fault reported before startup keeps the instance out of the election.
    let mut b = Instance::new(node(12, 255), Duration::ZERO);
    b.handle(Duration::ZERO, Event::Fault(true));
    b.handle(Duration::ZERO, Event::Startup);
    assert_eq!(b.state(), State::Fault);
    b.handle(secs(1), Event::Fault(false));
    assert_eq!(
        b.state(),
        State::Master,
        "owner goes straight to master on recovery"
    );
}

#[test]
fn ignored_inputs_do_nothing() {
    let mut a = Instance::new(node(11, 100), Duration::ZERO);
    // Before startup: no reaction to anything.
    assert!(a.handle(secs(1), Event::Timer).is_empty());
    assert!(a
        .handle(
            secs(1),
            Event::Advert {
                from: ip(12),
                priority: 200,
                interval_cs: 100
            }
        )
        .is_empty());
    assert!(a.handle(secs(1), Event::Shutdown).is_empty());
    a.handle(secs(1), Event::Startup);
    assert!(
        a.handle(secs(1), Event::Startup).is_empty(),
        "startup twice"
    );
    // Our own looped-back advert is not counted and changes nothing.
    let before = a.next_deadline();
    assert!(a
        .handle(
            secs(2),
            Event::Advert {
                from: ip(11),
                priority: 200,
                interval_cs: 100
            }
        )
        .is_empty());
    assert_eq!(
        (a.next_deadline(), a.status().adverts_received),
        (before, 1)
    );
    // Priority 0 is not an effective priority.
    a.handle(secs(2), Event::SetPriority(0));
    assert_eq!(a.status().priority, 1);
    assert_eq!(State::Master.to_string(), "master");
}

#[path = "sim_tests.rs"]
mod sim;

#[test]
fn reconfigured_master_keeps_its_state_and_adverts_at_the_new_interval() {
    let mut sim = elected_pair(v3(node(11, 101), 100), v3(node(12, 100), 100));
    let became = sim.hosts[0].inst.status().became_master;
    // A reload: a shorter advert interval and a priority still above B's.
    let changed = Params {
        priority: 120,
        ..v3(node(11, 101), 20)
    };
    sim.hosts[0].inst.reconfigure(changed);
    sim.apply(0, Event::SetPriority(120));
    sim.run_for(secs(5));
    assert_eq!(sim.masters(), vec![0], "still master");
    assert_eq!(sim.hosts[0].inst.status().became_master, became, "no flap");
    let from = sim.now - secs(2);
    let sent: Vec<_> = sim
        .sent
        .iter()
        .filter(|s| s.1 == 0 && s.0 >= from)
        .collect();
    assert!(
        sent.len() >= 9,
        "adverts every 200 ms from the next one on: {} in 2 s",
        sent.len()
    );
    assert!(sent.iter().all(|s| s.2 == 120), "new priority advertised");
    // A priority below B's loses the election (B preempts), as tracking would.
    sim.hosts[0].inst.reconfigure(Params {
        priority: 50,
        ..v3(node(11, 101), 20)
    });
    sim.apply(0, Event::SetPriority(50));
    sim.run_for(secs(5));
    assert_eq!(sim.masters(), vec![1]);
    assert_eq!(sim.state(0), State::Backup);
}
