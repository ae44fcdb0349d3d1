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
    /// A named OS call on a device failed: `call` is what was done ("TUNSETIFF",
    /// "opening /dev/net/tun"), `interface` the interface it was done on (empty if none).
    Os {
        /// What failed.
        call: &'static str,
        /// The interface name, or "".
        interface: &'static str,
        /// The errno.
        errno: i32,
    },
    /// The TAP interface was deleted under the open device (by `ip link del`, or with its
    /// network namespace); nothing can be sent or received any more.
    DeviceGone {
        /// The interface name.
        interface: &'static str,
    },
    /// The configuration cannot work with this device: a multicast MAC, a medium smoltcp was
    /// not built for, more addresses or routes than smoltcp has room for.
    InvalidConfig(&'static str),
}

/// `call` of the error opening the TUN/TAP clone device.
pub(crate) const OPEN_TUN: &str = "opening /dev/net/tun";

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;

/// glibc's text for the errnos a device, eventfd or `poll` can report (Linux numbering), so
/// that messages read the same with or without `std`. Others print as "os error N".
fn errno_text(errno: i32) -> Option<&'static str> {
    Some(match errno {
        1 => "Operation not permitted",
        2 => "No such file or directory",
        4 => "Interrupted system call",
        5 => "Input/output error",
        6 => "No such device or address",
        9 => "Bad file descriptor",
        11 => "Resource temporarily unavailable",
        12 => "Cannot allocate memory",
        13 => "Permission denied",
        14 => "Bad address",
        16 => "Device or resource busy",
        17 => "File exists",
        19 => "No such device",
        22 => "Invalid argument",
        23 => "Too many open files in system",
        24 => "Too many open files",
        25 => "Inappropriate ioctl for device",
        28 => "No space left on device",
        32 => "Broken pipe",
        36 => "File name too long",
        38 => "Function not implemented",
        77 => "File descriptor in bad state",
        90 => "Message too long",
        95 => "Operation not supported",
        98 => "Address already in use",
        99 => "Cannot assign requested address",
        100 => "Network is down",
        101 => "Network is unreachable",
        105 => "No buffer space available",
        110 => "Connection timed out",
        111 => "Connection refused",
        113 => "No route to host",
        _ => return None,
    })
}

/// "Invalid argument (os error 22)", as `std::io::Error` prints it.
struct Errno(i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match errno_text(self.0) {
            Some(text) => write!(f, "{text} (os error {})", self.0),
            None => write!(f, "os error {}", self.0),
        }
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DriverError::Deadlock => f.write_str("deadlock: the scheduler would block forever"),
            DriverError::Io(errno) => Errno(errno).fmt(f),
            DriverError::Os {
                call,
                interface,
                errno,
            } => {
                f.write_str(call)?;
                if !interface.is_empty() {
                    write!(f, " {interface}")?;
                }
                write!(f, ": {}", Errno(errno))?;
                // What the user can do about the usual failures.
                match errno {
                    EPERM => f.write_str("; needs CAP_NET_ADMIN (run as root or grant it)"),
                    EACCES if call == OPEN_TUN => {
                        f.write_str("; needs read-write access to /dev/net/tun (root)")
                    }
                    ENOENT if call == OPEN_TUN => {
                        f.write_str("; the tun module is not loaded (modprobe tun)")
                    }
                    _ => Ok(()),
                }
            }
            DriverError::DeviceGone { interface } => write!(
                f,
                "TAP interface {interface} is gone (deleted, or its network namespace was)"
            ),
            DriverError::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
        }
    }
}

impl core::error::Error for DriverError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn errnos_read_as_std_prints_them() {
        for errno in 0..200 {
            if errno_text(errno).is_some() {
                assert_eq!(
                    DriverError::Io(errno).to_string(),
                    std::io::Error::from_raw_os_error(errno).to_string()
                );
            }
        }
        assert_eq!(
            DriverError::Io(22).to_string(),
            "Invalid argument (os error 22)"
        );
        assert_eq!(DriverError::Io(4095).to_string(), "os error 4095");
    }

    #[test]
    fn device_errors_say_what_failed() {
        let e = DriverError::Os {
            call: "TUNSETIFF",
            interface: "nptap0",
            errno: EPERM,
        };
        assert_eq!(
            e.to_string(),
            "TUNSETIFF nptap0: Operation not permitted (os error 1); needs CAP_NET_ADMIN \
             (run as root or grant it)"
        );
        let e = DriverError::Os {
            call: OPEN_TUN,
            interface: "",
            errno: ENOENT,
        };
        assert_eq!(
            e.to_string(),
            "opening /dev/net/tun: No such file or directory (os error 2); the tun module is \
             not loaded (modprobe tun)"
        );
        let e = DriverError::Os {
            call: OPEN_TUN,
            interface: "",
            errno: EACCES,
        };
        assert!(
            e.to_string().contains("read-write access to /dev/net/tun"),
            "{e}"
        );
        let e = DriverError::Os {
            call: "SIOCGIFMTU",
            interface: "nptap0",
            errno: 19,
        };
        assert_eq!(
            e.to_string(),
            "SIOCGIFMTU nptap0: No such device (os error 19)"
        );
        let e = DriverError::DeviceGone {
            interface: "nptap0",
        };
        assert!(
            e.to_string().starts_with("TAP interface nptap0 is gone"),
            "{e}"
        );
    }
}
