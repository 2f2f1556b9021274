//! systemd readiness, status line and watchdog (`Type=notify`). Every call is a no-op
//! when `NOTIFY_SOCKET` is unset.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of `WatchdogSec=`, if enabled for us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
