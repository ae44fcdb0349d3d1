//! A light look at a frame's TCP header, without smoltcp's full parse: the SYN gate and the
//! wire's statistics need only the addresses, ports and flags.

use smoltcp::phy::Medium;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
};

/// The parts of a TCP segment the gate and the statistics look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpInfo {
    pub(crate) src: IpAddress,
    pub(crate) dst: IpAddress,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) syn: bool,
    pub(crate) ack: bool,
    pub(crate) rst: bool,
}

impl TcpInfo {
    /// A connection request: SYN without ACK.
    pub(crate) fn is_connect(&self) -> bool {
        self.syn && !self.ack && !self.rst
    }
}

/// Parses `frame` far enough to find a TCP header. `None` for anything else (ARP, UDP,
/// fragments, IPv6 extension headers, malformed frames: smoltcp then decides for itself).
pub(crate) fn tcp_info(frame: &[u8], medium: Medium) -> Option<TcpInfo> {
    let ip = match medium {
        Medium::Ethernet => {
            let eth = EthernetFrame::new_checked(frame).ok()?;
            match eth.ethertype() {
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => eth.payload(),
                _ => return None,
            }
        }
        Medium::Ip => frame,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let (src, dst, payload) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::Tcp || p.more_frags() || p.frag_offset() != 0 {
                return None;
            }
            (
                IpAddress::Ipv4(p.src_addr()),
                IpAddress::Ipv4(p.dst_addr()),
                p.payload(),
            )
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::Tcp {
                return None;
            }
            (
                IpAddress::Ipv6(p.src_addr()),
                IpAddress::Ipv6(p.dst_addr()),
                p.payload(),
            )
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(payload).ok()?;
    Some(TcpInfo {
        src,
        dst,
        src_port: tcp.src_port(),
        dst_port: tcp.dst_port(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        rst: tcp.rst(),
    })
}
