//! The driver's own error type: what a [`SmolSource`](crate::SmolSource) poll or a device
//! constructor reports (house style 17: backends use their own small enum, reached only through
//! `ReadinessSource::Error`).

use core::fmt;

/// Why a smoltcp host, device or readiness source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// A simulated-time wait with no timeout, no pending frame and no notification: nothing
    /// could ever wake the scheduler (Go: "all goroutines are asleep").
    Deadlock,
    /// An OS call failed with this errno (TAP device, eventfd, `poll`).
    Io(i32),
    /// The network interface is down: the kernel refuses the TAP device's frames (`EIO`);
    /// bring it up (`ip link set NAME up`).
    LinkDown,
    /// The configuration cannot work with this device: a multicast MAC, a medium smoltcp was
    /// not built for, more addresses or routes than smoltcp has room for.
    InvalidConfig(&'static str),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Deadlock => f.write_str("deadlock: the scheduler would block forever"),
            DriverError::Io(errno) => write!(f, "os error {errno}"),
            DriverError::LinkDown => f.write_str("network interface is down"),
            DriverError::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
        }
    }
}

impl core::error::Error for DriverError {}
