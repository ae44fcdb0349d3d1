//! Finding the virtio-net NIC on x86_64 PCI through the legacy configuration mechanism
//! (ports 0xCF8/0xCFC), which every PC chipset QEMU emulates (i440FX, Q35) answers.

use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::Hal;

pub use super::sys::PortConfigAccess;
use super::{VirtioError, VirtioNet};

/// The CONFIG_ADDRESS value (port 0xCF8) selecting `register` (its 32-bit word) of `df`.
pub(super) fn config_address(df: DeviceFunction, register: u8) -> u32 {
    0x8000_0000
        | u32::from(df.bus) << 16
        | u32::from(df.device & 0x1f) << 11
        | u32::from(df.function & 0x7) << 8
        | u32::from(register & 0xfc)
}

/// The first virtio network function on `root`'s buses, bus 0 first.
fn find_net(root: &PciRoot<PortConfigAccess>) -> Option<DeviceFunction> {
    (0..=255u8).find_map(|bus| {
        root.enumerate_bus(bus).find_map(|(df, info)| {
            (virtio_device_type(&info) == Some(DeviceType::Network)).then_some(df)
        })
    })
}

/// Finds the first virtio-net PCI function, enables its memory decoding and bus mastering,
/// and initialises it. Returns the device and where it was found.
///
/// The function's BARs must have been assigned (UEFI firmware does so). A firmware driver
/// still bound to the function should be disconnected first (UEFI: `DisconnectController`),
/// since the device is reset here and its queues replaced.
pub fn open_pci<H: Hal>() -> Result<(VirtioNet<H, PciTransport>, DeviceFunction), VirtioError> {
    let mut root = PciRoot::new(PortConfigAccess::new());
    let df = find_net(&root).ok_or(VirtioError::NotFound)?;
    // A firmware driver that let go of the device may have turned its decoding off.
    let (_, command) = root.get_status_command(df);
    root.set_command(
        df,
        command | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER,
    );
    let transport = PciTransport::new::<H, _>(&mut root, df).map_err(VirtioError::Transport)?;
    Ok((VirtioNet::new(transport)?, df))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_address_packs_bus_device_function_register() {
        let df = DeviceFunction {
            bus: 1,
            device: 3,
            function: 2,
        };
        assert_eq!(config_address(df, 0x10), 0x8001_1a10);
        // The low two bits of the register select bytes of the word: always cleared.
        assert_eq!(config_address(df, 0x13), 0x8001_1a10);
    }
}
