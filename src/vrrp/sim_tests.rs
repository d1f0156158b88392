//! Seeded random simulation: a few nodes on a lossless segment with random latency, random
//! crashes, reboots, graceful shutdowns and priority changes. After every disturbance the
//! group must converge to exactly one master, the highest priority alive, and stay there.

use super::*;

/// How long the group gets to settle after a disturbance (several MDIs).
const SETTLE: Duration = Duration::from_secs(12);
/// How long a converged group is watched for a second master.
const WATCH: Duration = Duration::from_secs(8);

fn up_hosts(sim: &Sim) -> Vec<usize> {
    (0..sim.hosts.len()).filter(|&i| sim.hosts[i].up).collect()
}

/// One random disturbance.
fn disturb(sim: &mut Sim, rng: &mut fastrand::Rng) {
    let i = rng.usize(..sim.hosts.len());
    match (sim.hosts[i].up, rng.u8(..4)) {
        (false, _) => sim.reboot(i),
        (true, 0) => sim.crash(i),
        (true, 1) => {
            sim.apply(i, Event::Shutdown);
            sim.hosts[i].up = false;
        }
        (true, _) => {
            let p = rng.u8(90..=110);
            sim.apply(i, Event::SetPriority(p));
        }
    }
}

fn run_seed(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let version = if seed.is_multiple_of(2) { 2 } else { 3 };
    let interval_cs = if version == 2 { 100 } else { 50 };
    // Four nodes, priorities drawn from a narrow range so ties happen.
    let params = (0..4)
        .map(|n| {
            let p = Params::new(51, rng.u8(98..=102), ip(11 + n));
            Params {
                version,
                advert_interval_cs: interval_cs,
                ..p
            }
        })
        .collect();
    let mut sim = Sim::new(params);
    sim.rng = fastrand::Rng::with_seed(seed ^ 0xdead_beef);
    sim.max_delay_ms = 40;
    sim.start_all();
    for round in 0..25 {
        if round > 0 {
            disturb(&mut sim, &mut rng);
        }
        sim.assert_single_master = false;
        sim.run_for(SETTLE);
        let up = up_hosts(&sim);
        let masters = sim.masters();
        if up.is_empty() {
            assert!(masters.is_empty());
            continue;
        }
        assert_eq!(
            masters.len(),
            1,
            "seed {seed} round {round}: masters {masters:?} among {up:?}"
        );
        let best = up
            .iter()
            .map(|&i| sim.hosts[i].inst.status().priority)
            .max();
        let master = masters[0];
        assert_eq!(
            Some(sim.hosts[master].inst.status().priority),
            best,
            "seed {seed} round {round}"
        );
        for &i in &up {
            let want = Some(sim.hosts[master].inst.params().primary_ip);
            assert_eq!(
                sim.hosts[i].inst.status().last_master,
                want,
                "seed {seed} round {round} host {i}"
            );
        }
        sim.assert_single_master = true;
        sim.run_for(WATCH);
        assert_eq!(
            sim.masters(),
            masters,
            "seed {seed} round {round}: master changed while calm"
        );
    }
}

#[test]
fn random_failures_converge_to_one_master() {
    for seed in 0..16 {
        run_seed(seed);
    }
}
