//! A virtio-net NIC as a smoltcp `Device` (feature `virtio`, `no_std`): what a guest without
//! an operating system (the UEFI echo server in `drivers/uefi-echo`) runs netpoll on.
//!
//! The virtqueues are `virtio-drivers`' [`VirtIONet`]; this module adds the smoltcp side
//! ([`VirtioNet`]), a probe that tells a waiter whether a frame is waiting
//! ([`VirtioIngress`]), and, on x86_64, the PCI probe that finds the NIC through the legacy
//! configuration ports 0xCF8/0xCFC ([`open_pci`]).
//!
//! The device is polled: the guest's readiness source drives smoltcp, and its waiter checks
//! [`VirtioIngress::frame_waiting`] between sleeps. The device still raises its interrupt
//! line when it uses a buffer, so a waiter may sleep until that interrupt
//! ([`VirtioIngress::ack_interrupt`]) rather than a timer tick; a guest that does not leaves
//! the line masked at its interrupt controller.
//!
//! What the guest provides is memory: a [`Hal`] whose `dma_alloc` returns memory the device
//! can reach and whose `share` gives a buffer's physical address (identity-mapped under UEFI).
//!
//! Transmission waits for the device to take each frame (`VirtIONet::send`), which under
//! QEMU is the time to copy it to the TAP device; a frame the device fails to take is counted
//! ([`VirtioStats::tx_errors`]) and lost, and TCP retransmits it.

#[cfg(target_arch = "x86_64")]
mod pci;
#[cfg(target_arch = "x86_64")]
mod sys;

use alloc::sync::Arc;
use core::fmt;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::EthernetAddress;
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::Transport;

#[cfg(target_arch = "x86_64")]
pub use pci::{open_pci, PortConfigAccess};
/// The `virtio-drivers` crate this module is built on, for its [`Hal`] trait and transports.
pub use virtio_drivers;
pub use virtio_drivers::transport::pci::PciTransport;
pub use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// Descriptors per virtqueue: 128 receive buffers of [`RX_BUFFER_LEN`] bytes stay posted.
pub const QUEUE_SIZE: usize = 128;
/// Bytes per receive buffer: a 1514-byte Ethernet frame plus the virtio-net header.
pub const RX_BUFFER_LEN: usize = 2048;
/// The largest Ethernet frame sent or received (MTU 1500 plus the 14-byte header).
const MAX_FRAME: usize = 1514;

/// Why the NIC could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VirtioError {
    /// No virtio network device answered on the PCI buses.
    NotFound,
    /// The PCI function is a virtio device but its transport could not be set up.
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    /// The device refused initialisation (feature negotiation, queue setup, DMA memory).
    Device(virtio_drivers::Error),
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioError::NotFound => f.write_str(
                "no virtio-net device on the PCI buses (QEMU: -device virtio-net-pci,netdev=...)",
            ),
            VirtioError::Transport(e) => write!(f, "virtio-net PCI transport: {e}"),
            VirtioError::Device(e) => write!(f, "virtio-net device: {e}"),
        }
    }
}

impl core::error::Error for VirtioError {}

/// Frame counters of a [`VirtioNet`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioStats {
    /// Frames received.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Frames the device failed to take (lost; TCP retransmits).
    pub tx_errors: u64,
    /// Receive buffers that could not be posted again (the receive queue shrank by one).
    pub rx_errors: u64,
}

struct Nic<H: Hal, T: Transport> {
    net: VirtIONet<H, T, QUEUE_SIZE>,
    stats: VirtioStats,
}

/// A virtio-net device as a smoltcp Ethernet [`Device`].
pub struct VirtioNet<H: Hal, T: Transport> {
    nic: Arc<spin::Mutex<Nic<H, T>>>,
    mac: EthernetAddress,
}

impl<H: Hal, T: Transport> fmt::Debug for VirtioNet<H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioNet")
            .field("mac", &self.mac)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<H: Hal, T: Transport> VirtioNet<H, T> {
    /// Initialises the device behind `transport` (reset, feature negotiation, queues) and posts
    /// every receive buffer.
    pub fn new(transport: T) -> Result<Self, VirtioError> {
        let net = VirtIONet::<H, T, QUEUE_SIZE>::new(transport, RX_BUFFER_LEN)
            .map_err(VirtioError::Device)?;
        let mac = EthernetAddress(net.mac_address());
        Ok(VirtioNet {
            nic: Arc::new(spin::Mutex::new(Nic {
                net,
                stats: VirtioStats::default(),
            })),
            mac,
        })
    }

    /// The device's MAC address (give it to `Config::mac`).
    pub fn mac_address(&self) -> EthernetAddress {
        self.mac
    }

    /// The frame counters.
    pub fn stats(&self) -> VirtioStats {
        self.nic.lock().stats
    }

    /// A handle for the waiter: whether a received frame is waiting.
    pub fn ingress(&self) -> VirtioIngress<H, T> {
        VirtioIngress {
            nic: self.nic.clone(),
        }
    }
}

/// Tells whether the device has a received frame waiting, for a waiter that sleeps between
/// polls (`Wait::wait` must return early when one is).
pub struct VirtioIngress<H: Hal, T: Transport> {
    nic: Arc<spin::Mutex<Nic<H, T>>>,
}

impl<H: Hal, T: Transport> fmt::Debug for VirtioIngress<H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VirtioIngress")
    }
}

impl<H: Hal, T: Transport> Clone for VirtioIngress<H, T> {
    fn clone(&self) -> Self {
        VirtioIngress {
            nic: self.nic.clone(),
        }
    }
}

impl<H: Hal, T: Transport> VirtioIngress<H, T> {
    /// Whether a received frame is waiting in the receive queue.
    pub fn frame_waiting(&self) -> bool {
        self.nic.lock().net.can_recv()
    }

    /// The frame counters of the device.
    pub fn stats(&self) -> VirtioStats {
        self.nic.lock().stats
    }

    /// Acknowledges the device's interrupt by reading its ISR status, which lowers its
    /// level-triggered INTx line; returns whether one was raised. A guest that sleeps until
    /// the NIC's interrupt acknowledges before it re-enables the line, then checks
    /// [`VirtioIngress::frame_waiting`] once more.
    pub fn ack_interrupt(&self) -> bool {
        !self.nic.lock().net.ack_interrupt().is_empty()
    }
}

/// A received frame; its buffer goes back to the receive queue once smoltcp has read it.
pub struct VirtioRxToken<'a, H: Hal, T: Transport> {
    nic: &'a spin::Mutex<Nic<H, T>>,
    buf: RxBuffer,
}

/// Room to send one frame.
pub struct VirtioTxToken<'a, H: Hal, T: Transport> {
    nic: &'a spin::Mutex<Nic<H, T>>,
}

impl<H: Hal, T: Transport> fmt::Debug for VirtioRxToken<'_, H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioRxToken")
            .field("len", &self.buf.packet().len())
            .finish()
    }
}

impl<H: Hal, T: Transport> fmt::Debug for VirtioTxToken<'_, H, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VirtioTxToken")
    }
}

impl<H: Hal, T: Transport> phy::RxToken for VirtioRxToken<'_, H, T> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let result = f(self.buf.packet());
        let mut nic = self.nic.lock();
        if nic.net.recycle_rx_buffer(self.buf).is_err() {
            nic.stats.rx_errors += 1;
        }
        result
    }
}

impl<H: Hal, T: Transport> phy::TxToken for VirtioTxToken<'_, H, T> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut nic = self.nic.lock();
        let mut frame = nic.net.new_tx_buffer(len);
        let result = f(frame.packet_mut());
        match nic.net.send(frame) {
            Ok(()) => nic.stats.tx_frames += 1,
            Err(_) => nic.stats.tx_errors += 1,
        }
        result
    }
}

impl<H: Hal, T: Transport> Device for VirtioNet<H, T> {
    type RxToken<'a>
        = VirtioRxToken<'a, H, T>
    where
        Self: 'a;
    type TxToken<'a>
        = VirtioTxToken<'a, H, T>
    where
        Self: 'a;

    fn receive(&mut self, _now: SmolInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let buf = {
            let mut nic = self.nic.lock();
            // `NotReady`: nothing received. Any other error leaves the buffer with the device.
            let buf = nic.net.receive().ok()?;
            nic.stats.rx_frames += 1;
            buf
        };
        Some((
            VirtioRxToken {
                nic: &self.nic,
                buf,
            },
            VirtioTxToken { nic: &self.nic },
        ))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<Self::TxToken<'_>> {
        if self.nic.lock().net.can_send() {
            Some(VirtioTxToken { nic: &self.nic })
        } else {
            None
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}
