//! Frames the engine tests forge.

use netpoll_drivers::smoltcp::phy::ChecksumCapabilities;
use netpoll_drivers::smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Address,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

/// A SYN from `src:src_port` to host A's `port`, as a spoofing sender would forge it.
pub fn spoofed_syn(src: Ipv4Address, src_port: u16, port: u16, isn: i32) -> Vec<u8> {
    let dst = Ipv4Address::new(10, 0, 0, 1);
    let tcp = TcpRepr {
        src_port,
        dst_port: port,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(isn),
        ack_number: None,
        window_len: 64240,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([0x02, 0xee, 0, 0, (src_port >> 8) as u8, src_port as u8]),
        dst_addr: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut f = EthernetFrame::new_unchecked(&mut buf);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &caps);
    let mut t = TcpPacket::new_unchecked(p.payload_mut());
    tcp.emit(&mut t, &src.into(), &dst.into(), &caps);
    buf
}
