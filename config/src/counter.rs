//! The live-connection counter of one listener, shared by all of its workers.
//!
//! A memfd of [`SLOTS`] `u32`s, mapped shared by the supervisor and by every worker of
//! the listener. Each worker owns one slot (given in its `Hello`) and counts its own
//! live connections there; the listener's total is the sum. A worker that dies cannot
//! decrement its slot, so the supervisor zeroes the slot before reusing it. Admission
//! increments first and sums after, so concurrent accepts in two workers can refuse a
//! connection too many but never admit one over `max_connections`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use crate::sys::SharedSlots;

/// Slots per listener: workers of the running generation plus those still draining.
pub const SLOTS: usize = 1024;

pub struct Counter {
    map: SharedSlots,
}

impl Counter {
    /// Creates a zeroed counter and the memfd that shares it.
    pub fn create(name: &str) -> io::Result<(Counter, OwnedFd)> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let cname = format!("postern-conns-{name}");
        let fd = memfd_create(cname.as_str(), MFdFlags::MFD_CLOEXEC)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        nix::unistd::ftruncate(&fd, (SLOTS * 4) as i64)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        let counter = Counter::open(fd.as_fd())?;
        Ok((counter, fd))
    }

    /// Maps a counter received from the supervisor.
    pub fn open(fd: impl AsFd) -> io::Result<Counter> {
        Ok(Counter {
            map: SharedSlots::map(fd.as_fd(), SLOTS)?,
        })
    }

    /// Live connections of the whole listener.
    pub fn total(&self) -> u64 {
        self.map
            .slots()
            .iter()
            .map(|s| u64::from(s.load(Ordering::Relaxed)))
            .sum()
    }

    /// Live connections counted in `slot`.
    pub fn get(&self, slot: usize) -> u32 {
        self.map
            .slots()
            .get(slot)
            .map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Counts a new connection in `slot` if the listener stays within `max`; returns
    /// whether it was admitted (and counted).
    pub fn try_admit(&self, slot: usize, max: u32) -> bool {
        let Some(own) = self.map.slots().get(slot) else {
            return false;
        };
        own.fetch_add(1, Ordering::AcqRel);
        if self.total() > u64::from(max) {
            own.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Uncounts a connection admitted by [`Counter::try_admit`].
    pub fn release(&self, slot: usize) {
        if let Some(own) = self.map.slots().get(slot) {
            own.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Forgets a dead worker's connections (the supervisor, before reusing `slot`).
    pub fn reset(&self, slot: usize) {
        if let Some(own) = self.map.slots().get(slot) {
            own.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_share_counts_and_enforce_the_limit() {
        let (sup, fd) = Counter::create("t").expect("create");
        let worker = Counter::open(&fd).expect("open");
        assert!(worker.try_admit(3, 2));
        assert!(worker.try_admit(4, 2));
        assert!(!worker.try_admit(3, 2), "third connection must be refused");
        assert_eq!(sup.total(), 2);
        worker.release(4);
        assert_eq!(sup.get(4), 0);
        sup.reset(3);
        assert_eq!(worker.total(), 0);
    }
}
