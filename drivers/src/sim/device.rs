//! A host's port on the switch (a smoltcp `Device`) and the simulated-time waiter.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
use netpoll_core::sync::{AtomicBool, Ordering};

use netpoll_core::Clock;
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};

use super::switch::{SimSwitch, SwitchCore};
use crate::clock::SimClock;
use crate::error::DriverError;
use crate::wait::Wait;

/// One host's port on a [`SimSwitch`]: a smoltcp Ethernet device.
pub struct SimDevice {
    core: Arc<SwitchCore>,
    host: usize,
    mtu: usize,
    /// The frame being received.
    rx: Vec<u8>,
}

impl fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDevice")
            .field("host", &self.host)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl SimDevice {
    /// The port of host `host` on `switch`, with IP MTU `mtu`. [`SimNet`](crate::SimNet)
    /// makes one per host; a second device for the same host takes frames from the same queue
    /// (useful only to look at raw frames while no scheduler runs).
    ///
    /// # Panics
    ///
    /// If `host` is not a host of the switch.
    pub fn new(switch: &SimSwitch, host: usize, mtu: usize) -> SimDevice {
        assert!(
            host < switch.hosts(),
            "host {host} is not on the switch ({} hosts)",
            switch.hosts()
        );
        SimDevice {
            core: switch.core.clone(),
            host,
            mtu,
            rx: Vec::new(),
        }
    }

    /// The host number this port belongs to.
    pub fn host(&self) -> usize {
        self.host
    }
}

#[doc(hidden)]
#[derive(Debug)]
pub struct SimRx<'a> {
    frame: &'a [u8],
}

impl RxToken for SimRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

#[doc(hidden)]
pub struct SimTx<'a> {
    core: &'a SwitchCore,
    from: usize,
}

impl fmt::Debug for SimTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTx").field("from", &self.from).finish()
    }
}

impl TxToken for SimTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.core.send(self.from, frame);
        r
    }
}

impl Device for SimDevice {
    type RxToken<'a>
        = SimRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = SimTx<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // The switch's clock, not smoltcp's timestamp: the same clock, at full resolution.
        let now = self.core.now();
        self.rx = self.core.state.lock().receive(now, self.host)?;
        Some((
            SimRx { frame: &self.rx },
            SimTx {
                core: &self.core,
                from: self.host,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(SimTx {
            core: &self.core,
            from: self.host,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// How the scheduler of a [`SimNet`](crate::SimNet) waits: never on a real clock. An idle wait
/// advances the [`SimClock`] to the earlier of its timeout and the next frame's delivery time,
/// so every host sees that frame at exactly its delivery time and timers fire in simulated
/// time. A wait with no timeout and no frame in flight could never end: it fails with
/// [`DriverError::Deadlock`] (frames on a held link do not count; nothing releases them while
/// every task is parked).
///
/// Single-threaded: only the scheduler that owns the waiter may drive the switch.
pub struct SimWaiter {
    core: Arc<SwitchCore>,
    clock: Arc<SimClock>,
    notified: AtomicBool,
}

impl fmt::Debug for SimWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimWaiter").finish_non_exhaustive()
    }
}

impl SimWaiter {
    /// A waiter over every host of `switch`, advancing the switch's clock.
    pub fn new(switch: &SimSwitch) -> SimWaiter {
        SimWaiter {
            core: switch.core.clone(),
            clock: switch.core.clock.clone(),
            notified: AtomicBool::new(false),
        }
    }
}

impl Wait for SimWaiter {
    fn wait(&self, timeout: Option<Duration>) -> Result<(), DriverError> {
        // Acquire: pairs with the Release store in `wake`.
        if self.notified.swap(false, Ordering::Acquire) {
            return Ok(());
        }
        let now = self.clock.now().as_nanos();
        let next = self.core.state.lock().next_delivery();
        if next.is_some_and(|t| t <= now) || timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        let until =
            timeout.map(|t| now.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)));
        let target = match (until, next) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).ok_or(DriverError::Deadlock)?,
        };
        self.clock.advance(Duration::from_nanos(target - now));
        Ok(())
    }

    fn wake(&self) {
        // Release: pairs with the Acquire swap in `wait`.
        self.notified.store(true, Ordering::Release);
    }
}
