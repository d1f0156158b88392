//! Sans-IO rise/fall counter with HAProxy semantics.
//!
//! A server that is down goes up after `rise` consecutive successful checks;
//! a server that is up goes down after `fall` consecutive failed checks. A
//! result that agrees with the current state resets the opposite streak.

/// Rise/fall hysteresis for one server's active health checks.
///
/// Pure state: feed it check outcomes with [`RiseFall::observe`] and act on
/// the flips it reports. No clocks, no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with `up` (successes while down,
    /// failures while up). Always below the threshold of the current state.
    streak: u32,
}

impl RiseFall {
    /// A counter starting in the given state with no pending streak.
    ///
    /// `rise` and `fall` of 0 are treated as 1 (one result flips the state),
    /// so a misconfigured value can never freeze a server in one state.
    pub fn new(rise: u32, fall: u32, initially_up: bool) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            up: initially_up,
            streak: 0,
        }
    }

    /// Feed one check result; returns `Some(new_state_is_up)` when the state flips.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            // The result confirms the current state: any pending transition is cancelled.
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = if self.up { self.fall } else { self.rise };
        if self.streak >= threshold {
            self.up = !self.up;
            self.streak = 0;
            Some(self.up)
        } else {
            None
        }
    }

    /// Put the counter into `up` with no pending streak, whatever came before.
    ///
    /// Used for HAProxy's "the first successful check marks a server up" rule.
    /// Returns `Some(up)` when this changed the state.
    pub fn force(&mut self, up: bool) -> Option<bool> {
        let changed = self.up != up;
        self.up = up;
        self.streak = 0;
        changed.then_some(up)
    }

    /// Current state as decided by the counter.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// True while between states (some successes while down, or some failures
    /// while up): the checker uses `fast_interval` then.
    pub fn in_transition(&self) -> bool {
        self.streak > 0
    }

    /// Consecutive results seen that disagree with the current state.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Consecutive successes needed to go up (at least 1).
    pub fn rise(&self) -> u32 {
        self.rise
    }

    /// Consecutive failures needed to go down (at least 1).
    pub fn fall(&self) -> u32 {
        self.fall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed a sequence and collect every flip with the index it happened at.
    fn run(rf: &mut RiseFall, seq: &[bool]) -> Vec<(usize, bool)> {
        seq.iter()
            .enumerate()
            .filter_map(|(i, &ok)| rf.observe(ok).map(|up| (i, up)))
            .collect()
    }

    #[test]
    fn starts_in_given_state_without_transition() {
        for up in [false, true] {
            let rf = RiseFall::new(2, 3, up);
            assert_eq!(rf.is_up(), up);
            assert!(!rf.in_transition());
            assert_eq!(rf.streak(), 0);
        }
    }

    #[test]
    fn down_goes_up_after_exactly_rise_successes() {
        for rise in 1..=5 {
            let mut rf = RiseFall::new(rise, 3, false);
            for i in 1..rise {
                assert_eq!(rf.observe(true), None, "rise={rise} i={i}");
                assert!(rf.in_transition());
                assert!(!rf.is_up());
                assert_eq!(rf.streak(), i);
            }
            assert_eq!(rf.observe(true), Some(true), "rise={rise}");
            assert!(rf.is_up());
            assert!(!rf.in_transition());
        }
    }

    #[test]
    fn up_goes_down_after_exactly_fall_failures() {
        for fall in 1..=5 {
            let mut rf = RiseFall::new(2, fall, true);
            for i in 1..fall {
                assert_eq!(rf.observe(false), None, "fall={fall} i={i}");
                assert!(rf.in_transition());
                assert!(rf.is_up());
                assert_eq!(rf.streak(), i);
            }
            assert_eq!(rf.observe(false), Some(false), "fall={fall}");
            assert!(!rf.is_up());
            assert!(!rf.in_transition());
        }
    }

    #[test]
    fn confirming_results_never_flip_or_enter_transition() {
        let mut up = RiseFall::new(2, 2, true);
        let mut down = RiseFall::new(2, 2, false);
        for _ in 0..100 {
            assert_eq!(up.observe(true), None);
            assert_eq!(down.observe(false), None);
            assert!(!up.in_transition() && !down.in_transition());
        }
        assert!(up.is_up());
        assert!(!down.is_up());
    }

    #[test]
    fn interrupted_rise_starts_over() {
        let mut rf = RiseFall::new(3, 2, false);
        assert_eq!(run(&mut rf, &[true, true, false]), vec![]);
        assert!(!rf.in_transition(), "a failure while down cancels the rise");
        assert_eq!(run(&mut rf, &[true, true]), vec![]);
        assert_eq!(rf.observe(true), Some(true));
    }

    #[test]
    fn interrupted_fall_starts_over() {
        let mut rf = RiseFall::new(2, 3, true);
        assert_eq!(run(&mut rf, &[false, false, true]), vec![]);
        assert!(!rf.in_transition(), "a success while up cancels the fall");
        assert_eq!(run(&mut rf, &[false, false]), vec![]);
        assert_eq!(rf.observe(false), Some(false));
    }

    #[test]
    fn full_cycle_reports_each_flip_once() {
        let mut rf = RiseFall::new(2, 3, false);
        let seq = [
            true, true, // up at 1
            false, false, false, // down at 4
            false, true, false, true, true, // up at 9
            true, false, true, false, false, false, // down at 15
        ];
        assert_eq!(
            run(&mut rf, &seq),
            vec![(1, true), (4, false), (9, true), (15, false)]
        );
    }

    #[test]
    fn zero_thresholds_behave_as_one() {
        let mut rf = RiseFall::new(0, 0, false);
        assert_eq!((rf.rise(), rf.fall()), (1, 1));
        assert_eq!(rf.observe(true), Some(true));
        assert_eq!(rf.observe(false), Some(false));
        assert!(!rf.in_transition());
    }

    #[test]
    fn rise_and_fall_one_flip_on_every_disagreeing_result() {
        let mut rf = RiseFall::new(1, 1, true);
        let seq = [false, false, true, true, false];
        assert_eq!(run(&mut rf, &seq), vec![(0, false), (2, true), (4, false)]);
    }

    #[test]
    fn force_sets_state_and_clears_streak() {
        let mut rf = RiseFall::new(3, 3, false);
        rf.observe(true);
        assert!(rf.in_transition());
        assert_eq!(rf.force(true), Some(true));
        assert!(rf.is_up() && !rf.in_transition());
        assert_eq!(rf.force(true), None);
        rf.observe(false);
        assert_eq!(rf.force(true), None);
        assert!(!rf.in_transition());
        assert_eq!(rf.force(false), Some(false));
    }

    /// Exhaustive check against a reference model: every sequence of up to 10
    /// results, for every rise/fall in 1..=4 and both starting states.
    #[test]
    fn matches_reference_model_exhaustively() {
        for rise in 1..=4u32 {
            for fall in 1..=4u32 {
                for start in [false, true] {
                    for len in 0..=10usize {
                        for bits in 0..(1u32 << len) {
                            let seq: Vec<bool> = (0..len).map(|i| bits >> i & 1 == 1).collect();
                            check_against_model(rise, fall, start, &seq);
                        }
                    }
                }
            }
        }
    }

    fn check_against_model(rise: u32, fall: u32, start: bool, seq: &[bool]) {
        let mut rf = RiseFall::new(rise, fall, start);
        let mut up = start;
        for (i, &ok) in seq.iter().enumerate() {
            // Model: the state is decided by the trailing run of equal results.
            let run_len = seq[..=i].iter().rev().take_while(|&&r| r == ok).count() as u32;
            let flips = ok != up && run_len >= if up { fall } else { rise };
            let got = rf.observe(ok);
            if flips {
                up = ok;
                assert_eq!(
                    got,
                    Some(ok),
                    "rise={rise} fall={fall} start={start} seq={seq:?} i={i}"
                );
            } else {
                assert_eq!(
                    got, None,
                    "rise={rise} fall={fall} start={start} seq={seq:?} i={i}"
                );
            }
            assert_eq!(rf.is_up(), up);
        }
    }
}
