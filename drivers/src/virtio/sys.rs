//! x86 port I/O for the PCI configuration ports: the only `unsafe` code of the virtio
//! device.
#![allow(unsafe_code)]

use core::arch::asm;

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

use super::pci::config_address;

/// CONFIG_ADDRESS: selects bus, device, function and register.
const CONFIG_ADDRESS: u16 = 0xcf8;
/// CONFIG_DATA: the selected 32-bit register.
const CONFIG_DATA: u16 = 0xcfc;

fn outl(port: u16, value: u32) {
    // SAFETY: writing a PCI configuration port touches no memory of this program (a device's
    // registers may change, which is the point). The program runs in ring 0 (UEFI, a kernel),
    // where `out` is allowed.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value,
             options(nomem, nostack, preserves_flags))
    }
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: reading CONFIG_DATA reads the selected configuration register; it touches no
    // memory. Ring 0, as in `outl`.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port,
             options(nomem, nostack, preserves_flags))
    }
    value
}

/// PCI configuration space through ports 0xCF8 (address) and 0xCFC (data), the mechanism
/// every PC chipset QEMU emulates (i440FX, Q35) answers: bus 0-255, device 0-31, function
/// 0-7, registers 0-255 in 32-bit words. A function that does not exist reads as all ones.
#[derive(Debug)]
pub struct PortConfigAccess {
    _private: (),
}

impl PortConfigAccess {
    /// The configuration mechanism of the machine. Each access writes the address port and
    /// then reads or writes the data port; nothing else may use the two ports meanwhile, which
    /// holds for a program that runs on one CPU and calls no firmware in between (UEFI boot
    /// services run firmware drivers only from the caller's own calls and timer callbacks, and
    /// firmware PCI drivers bound to other devices use the root bridge, which takes the same
    /// ports only from those).
    pub fn new() -> Self {
        PortConfigAccess { _private: () }
    }
}

impl Default for PortConfigAccess {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigurationAccess for PortConfigAccess {
    fn read_word(&self, device_function: DeviceFunction, register_offset: u8) -> u32 {
        outl(
            CONFIG_ADDRESS,
            config_address(device_function, register_offset),
        );
        inl(CONFIG_DATA)
    }

    fn write_word(&mut self, device_function: DeviceFunction, register_offset: u8, data: u32) {
        outl(
            CONFIG_ADDRESS,
            config_address(device_function, register_offset),
        );
        outl(CONFIG_DATA, data);
    }

    /// Another handle on the same two ports (they are the machine's, not this value's); see
    /// [`PortConfigAccess::new`] for why interleaved use does not happen.
    unsafe fn unsafe_clone(&self) -> Self {
        PortConfigAccess::new()
    }
}
