//! A light look at a frame's TCP header, without smoltcp's full parse: the demux, the SYN gate,
//! early retransmission and the wire's statistics need only the addresses, ports, flags and
//! sequence numbers.

use smoltcp::phy::Medium;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet,
    Ipv6Packet, TcpPacket,
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

/// A TCP segment found in a frame: its addresses, the segment, and on an Ethernet device the
/// frame's (source, destination) MACs.
pub(crate) struct Segment<'f> {
    pub(crate) src: IpAddress,
    pub(crate) dst: IpAddress,
    pub(crate) tcp: TcpPacket<&'f [u8]>,
    pub(crate) macs: Option<(EthernetAddress, EthernetAddress)>,
    /// The IPv4 header checksum holds (always true for IPv6, which has none).
    pub(crate) ip_checksum_ok: bool,
}

/// Parses `frame` far enough to find a TCP segment. `None` for anything else (ARP, UDP,
/// fragments, IPv6 extension headers, malformed frames: smoltcp then decides for itself).
pub(crate) fn tcp_segment(frame: &[u8], medium: Medium) -> Option<Segment<'_>> {
    let (macs, ip) = match medium {
        Medium::Ethernet => {
            let eth = EthernetFrame::new_checked(frame).ok()?;
            match eth.ethertype() {
                EthernetProtocol::Ipv4 | EthernetProtocol::Ipv6 => {
                    (Some((eth.src_addr(), eth.dst_addr())), eth.payload())
                }
                _ => return None,
            }
        }
        Medium::Ip => (None, frame),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let (src, dst, payload, ip_checksum_ok) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::Tcp || p.more_frags() || p.frag_offset() != 0 {
                return None;
            }
            (
                IpAddress::Ipv4(p.src_addr()),
                IpAddress::Ipv4(p.dst_addr()),
                p.payload(),
                p.verify_checksum(),
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
                true,
            )
        }
        _ => return None,
    };
    Some(Segment {
        src,
        dst,
        tcp: TcpPacket::new_checked(payload).ok()?,
        macs,
        ip_checksum_ok,
    })
}

impl Segment<'_> {
    /// The addresses, ports and flags.
    pub(crate) fn info(&self) -> TcpInfo {
        let tcp = &self.tcp;
        TcpInfo {
            src: self.src,
            dst: self.dst,
            src_port: tcp.src_port(),
            dst_port: tcp.dst_port(),
            syn: tcp.syn(),
            ack: tcp.ack(),
            rst: tcp.rst(),
        }
    }

    /// The IPv4 header checksum (if any) and the TCP checksum hold.
    pub(crate) fn checksums_ok(&self) -> bool {
        self.ip_checksum_ok && tcp_checksum_ok(&self.src, &self.dst, self.tcp.as_ref())
    }
}

/// Whether TCP segment `segment` (header and payload, as on the wire) carries a valid
/// checksum for addresses `src` → `dst` (RFC 793, RFC 8200 for IPv6).
///
/// The same sum smoltcp's `TcpPacket::verify_checksum` computes, eight bytes per addition
/// instead of two: it is a pass over every received byte, a fifth of an AF_XDP server's
/// time with smoltcp's version.
pub(crate) fn tcp_checksum_ok(src: &IpAddress, dst: &IpAddress, segment: &[u8]) -> bool {
    let mut pseudo = [0u8; 40];
    let pseudo = match (src, dst) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
            let Ok(len) = u16::try_from(segment.len()) else {
                return false;
            };
            pseudo[..4].copy_from_slice(&s.octets());
            pseudo[4..8].copy_from_slice(&d.octets());
            pseudo[9] = 6;
            pseudo[10..12].copy_from_slice(&len.to_be_bytes());
            &pseudo[..12]
        }
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            let Ok(len) = u32::try_from(segment.len()) else {
                return false;
            };
            pseudo[..16].copy_from_slice(&s.octets());
            pseudo[16..32].copy_from_slice(&d.octets());
            pseudo[32..36].copy_from_slice(&len.to_be_bytes());
            pseudo[39] = 6;
            &pseudo[..40]
        }
        #[allow(unreachable_patterns)]
        _ => return false,
    };
    fold(ones_sum(segment, ones_sum(pseudo, 0))) == 0xffff
}

/// Adds `data` to the one's-complement sum `acc`, in 64-bit native-endian words. The
/// internet checksum does not depend on byte order (RFC 1071, 2.B) as long as every part
/// starts at an even offset, which the pseudo-header and the segment do.
fn ones_sum(data: &[u8], mut acc: u64) -> u64 {
    let mut add = |word: u64| {
        let (sum, carry) = acc.overflowing_add(word);
        acc = sum + u64::from(carry);
    };
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        add(u64::from_ne_bytes(b));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        // An odd last byte is padded with a zero after it, as RFC 793 says.
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        add(u64::from_ne_bytes(b));
    }
    acc
}

/// Folds a 64-bit one's-complement sum to 16 bits.
fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The addresses, ports and flags of the TCP segment in `frame` (see [`tcp_segment`]).
pub(crate) fn tcp_info(frame: &[u8], medium: Medium) -> Option<TcpInfo> {
    tcp_segment(frame, medium).map(|seg| seg.info())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber,
    };

    fn syn_frame(control: TcpControl, ack: Option<TcpSeqNumber>) -> std::vec::Vec<u8> {
        let src = Ipv4Address::new(10, 0, 0, 2);
        let dst = Ipv4Address::new(10, 0, 0, 1);
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control,
            seq_number: TcpSeqNumber(1),
            ack_number: ack,
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
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
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = std::vec![0u8; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut f = EthernetFrame::new_unchecked(&mut buf);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &caps);
        let mut t = TcpPacket::new_unchecked(p.payload_mut());
        tcp.emit(&mut t, &src.into(), &dst.into(), &caps);
        buf
    }

    /// The fast checksum agrees with smoltcp's on every length (odd and even), both IP
    /// versions, valid and corrupted segments.
    #[test]
    fn tcp_checksum_matches_smoltcps() {
        use smoltcp::wire::{Ipv4Address, Ipv6Address};
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let v4 = (
            IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2)),
            IpAddress::Ipv4(Ipv4Address::new(192, 168, 7, 201)),
        );
        let v6 = (
            IpAddress::Ipv6(Ipv6Address::new(0xfd00, 1, 2, 3, 4, 5, 6, 7)),
            IpAddress::Ipv6(Ipv6Address::new(0xfe80, 0, 0, 0, 0xffff, 0xab, 0, 1)),
        );
        let (mut valid, mut corrupted) = (0, 0);
        for len in (20..200).chain([1480, 1481, 8948, 65_000]) {
            for (src, dst) in [v4, v6] {
                let mut seg: std::vec::Vec<u8> = (0..len).map(|_| next() as u8).collect();
                seg[12] = 0x50; // data offset 5: a plain 20-byte header
                let mut p = TcpPacket::new_unchecked(&mut seg[..]);
                p.fill_checksum(&src, &dst);
                assert!(tcp_checksum_ok(&src, &dst, &seg), "len {len}");
                assert!(TcpPacket::new_unchecked(&seg[..]).verify_checksum(&src, &dst));
                valid += 1;
                let at = (next() as usize) % len;
                seg[at] ^= 1 << (next() % 8);
                let ours = tcp_checksum_ok(&src, &dst, &seg);
                let smoltcps = TcpPacket::new_unchecked(&seg[..]).verify_checksum(&src, &dst);
                assert_eq!(ours, smoltcps, "len {len}, flipped byte {at}");
                assert!(!ours, "a one-bit change must fail");
                corrupted += 1;
                // Swapped addresses: the pseudo-header counts.
                seg[at] ^= 0xff;
                assert_eq!(
                    tcp_checksum_ok(&dst, &src, &seg),
                    TcpPacket::new_unchecked(&seg[..]).verify_checksum(&dst, &src)
                );
            }
        }
        assert!(valid > 300 && corrupted > 300);
    }

    #[test]
    fn recognises_connection_requests() {
        let syn = tcp_info(&syn_frame(TcpControl::Syn, None), Medium::Ethernet).unwrap();
        assert!(syn.is_connect());
        assert_eq!((syn.src_port, syn.dst_port), (40000, 80));
        assert_eq!(syn.dst, IpAddress::v4(10, 0, 0, 1));
        let synack = tcp_info(
            &syn_frame(TcpControl::Syn, Some(TcpSeqNumber(5))),
            Medium::Ethernet,
        )
        .unwrap();
        assert!(!synack.is_connect());
        let rst = tcp_info(&syn_frame(TcpControl::Rst, None), Medium::Ethernet).unwrap();
        assert!(rst.rst && !rst.is_connect());
    }

    #[test]
    fn ignores_what_is_not_tcp_or_is_malformed() {
        let frame = syn_frame(TcpControl::Syn, None);
        assert_eq!(tcp_info(&frame[..20], Medium::Ethernet), None, "truncated");
        assert_eq!(tcp_info(&[], Medium::Ethernet), None);
        assert_eq!(tcp_info(&[0x60; 10], Medium::Ip), None);
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(tcp_info(&arp, Medium::Ethernet), None);
        // The IP packet alone parses on an IP-medium device.
        assert!(tcp_info(&frame[14..], Medium::Ip).unwrap().is_connect());
    }
}
