//! Per-destination circuit breaker (reference §4.6).
//!
//! Each destination counts consecutive failed establishments (a dial whose every attempt
//! failed); any success resets the count. At `host_down_threshold` the destination is down
//! for `host_down_cooldown`: dials fail at once. After the cooldown one dial is let
//! through as a probe, while the others keep failing fast; the probe's success closes the
//! breaker, its failure opens it for another cooldown. A threshold of 0 disables all this.
//!
//! The table is per worker process (each worker learns on its own), behind a mutex that
//! is never held across an await. Times are `tokio::time::Instant`, so tests can use
//! paused time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
struct State {
    failures: u32,
    down_until: Option<Instant>,
    probing: bool,
}

/// The breaker table of one worker.
#[derive(Debug)]
pub struct Health {
    threshold: u32,
    cooldown: Duration,
    table: Mutex<HashMap<String, State>>,
}

/// Permission to dial, returned by [`Health::admit`]. Report the outcome with
/// [`Admission::success`] or [`Admission::failure`]; dropping it without an outcome (the
/// client went away mid-dial) just frees the probe slot.
#[derive(Debug)]
pub struct Admission {
    health: Arc<Health>,
    destination: String,
    probe: bool,
    reported: bool,
}

impl Health {
    pub fn new(threshold: u32, cooldown: Duration) -> Health {
        Health {
            threshold,
            cooldown: cooldown.min(crate::pipe::MAX_TIMER),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, State>> {
        // A panic while holding this lock cannot leave a State inconsistent (every
        // update is a plain field store), so a poisoned lock is still usable.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// May `destination` be dialed now? `None` means it is down: fail at once.
    pub fn admit(self: &Arc<Self>, destination: &str) -> Option<Admission> {
        let mut admission = Admission {
            health: self.clone(),
            destination: destination.to_string(),
            probe: false,
            reported: false,
        };
        if self.threshold == 0 {
            return Some(admission);
        }
        let now = Instant::now();
        let mut table = self.lock();
        let Some(state) = table.get_mut(destination) else {
            return Some(admission);
        };
        match state.down_until {
            None => Some(admission),
            Some(until) if now < until => None,
            Some(_) if state.probing => None,
            Some(_) => {
                state.probing = true;
                admission.probe = true;
                tracing::debug!(destination, "cooldown over, probing destination");
                Some(admission)
            }
        }
    }

    /// True when `destination` is currently marked down (for status and logs).
    pub fn is_down(&self, destination: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .get(destination)
            .and_then(|s| s.down_until)
            .is_some_and(|until| now < until)
    }

    fn record(&self, destination: &str, probe: bool, ok: bool) {
        if self.threshold == 0 {
            return;
        }
        let mut table = self.lock();
        if ok {
            if let Some(state) = table.remove(destination) {
                if state.down_until.is_some() {
                    tracing::info!(destination, "destination is up again");
                }
            }
            return;
        }
        let state = table.entry(destination.to_string()).or_default();
        if probe {
            state.probing = false;
        }
        state.failures = state.failures.saturating_add(1);
        if state.failures >= self.threshold {
            let was_down = state.down_until.is_some();
            state.down_until = Some(Instant::now() + self.cooldown);
            if !was_down {
                tracing::warn!(
                    destination,
                    failures = state.failures,
                    cooldown_secs = self.cooldown.as_secs_f64(),
                    "destination marked down"
                );
            }
        }
    }
}

impl Admission {
    pub fn success(mut self) {
        self.reported = true;
        self.health.record(&self.destination, self.probe, true);
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.health.record(&self.destination, self.probe, false);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            let mut table = self.health.lock();
            if let Some(state) = table.get_mut(&self.destination) {
                state.probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_fails_fast_and_probe_closes() {
        let h = Arc::new(Health::new(3, Duration::from_secs(30)));
        for _ in 0..2 {
            h.admit("b").expect("admitted").failure();
        }
        assert!(!h.is_down("b"));
        h.admit("b").expect("admitted").failure();
        assert!(h.is_down("b"));
        assert!(h.admit("b").is_none(), "down: fail fast");
        assert!(h.admit("other").is_some(), "per destination");

        tokio::time::advance(Duration::from_secs(31)).await;
        let probe = h.admit("b").expect("probe after cooldown");
        assert!(h.admit("b").is_none(), "one probe at a time");
        probe.success();
        assert!(!h.is_down("b"));
        // Closed and reset: it takes the whole threshold again to open.
        for _ in 0..2 {
            h.admit("b").expect("admitted").failure();
        }
        assert!(h.admit("b").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_dropped_probe_frees_slot() {
        let h = Arc::new(Health::new(1, Duration::from_secs(10)));
        h.admit("b").expect("admitted").failure();
        assert!(h.admit("b").is_none());
        tokio::time::advance(Duration::from_secs(11)).await;
        h.admit("b").expect("probe").failure();
        assert!(h.admit("b").is_none(), "failed probe: down again");
        tokio::time::advance(Duration::from_secs(11)).await;
        drop(h.admit("b").expect("probe"));
        assert!(h.admit("b").is_some(), "abandoned probe frees the slot");
    }

    #[tokio::test]
    async fn success_resets_the_count() {
        let h = Arc::new(Health::new(2, Duration::from_secs(10)));
        h.admit("b").expect("admitted").failure();
        h.admit("b").expect("admitted").success();
        h.admit("b").expect("admitted").failure();
        assert!(!h.is_down("b"));
    }

    #[tokio::test]
    async fn threshold_zero_disables() {
        let h = Arc::new(Health::new(0, Duration::from_secs(10)));
        for _ in 0..100 {
            h.admit("b").expect("admitted").failure();
        }
        assert!(h.admit("b").is_some());
        assert!(!h.is_down("b"));
    }
}
