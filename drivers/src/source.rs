//! [`SmolSource`]: the `ReadinessSource` that drives smoltcp hosts (Go: `netpoll`).
//!
//! `poll(timeout)`:
//!
//! 1. drive every host once: at most `ingress_budget` frames in, then egress for the sockets
//!    whose timers are due (at most `egress_budget` segments each), then the edges of the
//!    sockets smoltcp woke;
//! 2. return if that found edges, if a budget ran out (more work is waiting), or if the caller
//!    asked not to block;
//! 3. otherwise wait on the device for `min(timeout, smoltcp's poll_delay)`, so retransmits,
//!    delayed ACKs and TIME-WAIT never stall while every task is parked;
//! 4. drive every host again and return.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use netpoll_core::{Events, Key, Notifier, Readiness, ReadinessSource};
use smoltcp::phy::Device;

use crate::error::DriverError;
use crate::host::Host;
use crate::wait::{Wait, WaitNotifier};

/// The readiness source of one or more smoltcp hosts that share one way of waiting (one TAP
/// device, or both ends of an in-memory wire).
pub struct SmolSource<D: Device, W: Wait> {
    hosts: Vec<Host<D>>,
    waiter: Arc<W>,
}

impl<D: Device, W: Wait> fmt::Debug for SmolSource<D, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolSource")
            .field("hosts", &self.hosts.len())
            .finish_non_exhaustive()
    }
}

impl<D: Device, W: Wait> SmolSource<D, W> {
    /// A source that blocks with `waiter` and drives no host yet.
    pub fn new(waiter: W) -> Self {
        SmolSource {
            hosts: Vec::new(),
            waiter: Arc::new(waiter),
        }
    }

    /// Adds a host to drive.
    pub fn with_host(mut self, host: Host<D>) -> Self {
        self.hosts.push(host);
        self
    }

    /// Adds a host to drive.
    pub fn add_host(&mut self, host: Host<D>) {
        self.hosts.push(host);
    }

    /// The waiter.
    pub fn waiter(&self) -> &W {
        &self.waiter
    }

    /// One non-blocking pass over every host. Returns (more work waiting, smoltcp's delay).
    fn drive_all(&self, events: &mut dyn Events) -> (bool, Option<Duration>) {
        let mut more = false;
        let mut delay: Option<Duration> = None;
        for host in &self.hosts {
            let d = host.drive(events);
            more |= d.more;
            delay = match (delay, d.delay) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        (more, delay)
    }
}

/// Counts what a drive pass reported.
struct Counting<'a> {
    inner: &'a mut dyn Events,
    n: usize,
}

impl Events for Counting<'_> {
    fn push_event(&mut self, key: Key, readiness: Readiness) {
        self.n += 1;
        self.inner.push_event(key, readiness);
    }
}

impl<D, W> ReadinessSource for SmolSource<D, W>
where
    D: Device,
    W: Wait,
{
    type Error = DriverError;

    fn poll(&self, timeout: Option<Duration>, events: &mut dyn Events) -> Result<(), DriverError> {
        self.waiter.check()?;
        let mut counting = Counting {
            inner: events,
            n: 0,
        };
        let (more, delay) = self.drive_all(&mut counting);
        self.waiter.flush();
        if counting.n > 0 || more || timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        let wait = match (timeout, delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.waiter.wait(wait)?;
        self.drive_all(&mut counting);
        self.waiter.flush();
        Ok(())
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        Arc::new(WaitNotifier(self.waiter.clone()))
    }
}
