//! Start-up and liveness: how a series of probe outcomes becomes a health
//! state.
//!
//! A component starts STARTING. Inside the start-up grace, failures do not
//! count; the first success makes it HEALTHY. A grace that runs out without a
//! success makes it UNHEALTHY. Once HEALTHY, it takes `failure_threshold`
//! consecutive failures to become UNHEALTHY, and one success to recover.

use std::time::{Duration, Instant};

use reporunner_proto::agents::health::v1::HealthState;

#[derive(Clone, Debug)]
pub struct Tracker {
    started: Instant,
    grace: Duration,
    threshold: u32,
    state: HealthState,
    failures: u32,
}

impl Tracker {
    pub fn new(started: Instant, grace: Duration, threshold: u32) -> Self {
        Self {
            started,
            grace,
            threshold: threshold.max(1),
            state: HealthState::Starting,
            failures: 0,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Takes one outcome; answers the new state and whether it changed.
    pub fn observe(&mut self, up: bool, now: Instant) -> (HealthState, bool) {
        let before = self.state;
        if up {
            self.failures = 0;
            self.state = HealthState::Healthy;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.state = match self.state {
                HealthState::Starting | HealthState::Unspecified => {
                    if now.saturating_duration_since(self.started) < self.grace {
                        HealthState::Starting
                    } else {
                        HealthState::Unhealthy
                    }
                }
                HealthState::Healthy if self.failures < self.threshold => HealthState::Healthy,
                HealthState::Healthy | HealthState::Unhealthy => HealthState::Unhealthy,
            };
        }
        (self.state, self.state != before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_inside_the_grace_do_not_count() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0, Duration::from_secs(10), 3);
        assert_eq!(
            tracker.observe(false, t0 + Duration::from_secs(1)),
            (HealthState::Starting, false)
        );
        assert_eq!(
            tracker.observe(true, t0 + Duration::from_secs(2)),
            (HealthState::Healthy, true)
        );
    }

    #[test]
    fn a_grace_without_success_ends_unhealthy() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0, Duration::from_secs(5), 3);
        assert_eq!(
            tracker.observe(false, t0 + Duration::from_secs(6)),
            (HealthState::Unhealthy, true)
        );
        assert_eq!(
            tracker.observe(true, t0 + Duration::from_secs(7)),
            (HealthState::Healthy, true)
        );
    }

    #[test]
    fn liveness_needs_consecutive_failures() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0, Duration::ZERO, 3);
        tracker.observe(true, t0);
        assert_eq!(tracker.observe(false, t0).0, HealthState::Healthy);
        assert_eq!(tracker.observe(false, t0).0, HealthState::Healthy);
        tracker.observe(true, t0);
        assert_eq!(
            tracker.observe(false, t0).0,
            HealthState::Healthy,
            "a success resets the count"
        );
        assert_eq!(tracker.observe(false, t0).0, HealthState::Healthy);
        assert_eq!(tracker.observe(false, t0), (HealthState::Unhealthy, true));
    }
}
