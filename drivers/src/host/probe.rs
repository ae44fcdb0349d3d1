//! Early retransmission: smoltcp 0.14 waits at least 1 s (doubling per timeout) before it
//! resends a lost segment unless three duplicate ACKs arrive first, and it has no tail-loss
//! probe. On a lossy path that turns every lost retransmission into seconds of silence. The
//! host cannot change smoltcp's timer, but it can give smoltcp the signal it already acts on:
//! when a connection has data in flight and its peer's ACK has not advanced for
//! [`Config::early_retransmit`](crate::Config::early_retransmit) (doubling while nothing
//! improves, up to smoltcp's own 1 s), the host replays the peer's last ACK three times. smoltcp
//! counts them as duplicate ACKs and fast-retransmits the first unacknowledged segment, without
//! backing off its own timer. The replayed ACK is the peer's own (same sequence, acknowledgment
//! and window), so it says nothing the peer did not say.

use smoltcp::phy::{ChecksumCapabilities, Medium};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::ingress::Tuple;
use crate::frame::Segment;

/// The newest valid segment from a connection's peer, reduced to what a replayed ACK needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerAck {
    /// Ethernet (source, destination) of the peer's frames, on an Ethernet device.
    eth: Option<(EthernetAddress, EthernetAddress)>,
    /// The peer's next sequence number (its segment's sequence plus its length).
    seq_next: u32,
    /// The peer's acknowledgment number.
    ack: u32,
    /// The peer's raw advertised window.
    window: u16,
    /// When `ack` last advanced, or the last replay (microseconds).
    pub(super) since: i64,
    /// Replays since `ack` last advanced.
    pub(super) replays: u8,
    /// After a replay: the sequence number up to which data was in flight. An ACK that
    /// advances but stays below it is partial (another segment of that flight was lost too):
    /// the next replay is due at once, as NewReno retransmits on a partial ACK (RFC 6582).
    recover_until: Option<u32>,
}

/// Most replays without progress: past this, smoltcp's own timer takes over.
const MAX_REPLAYS: u8 = 6;

impl PeerAck {
    /// Records `seg`, a checksum-valid segment routed to this connection.
    pub(super) fn observe(slot: &mut Option<PeerAck>, seg: &Segment<'_>, now: i64) {
        let Some(seen) = ack_fields(seg) else {
            return;
        };
        // Wrapping comparison: a reordered older segment must not look like progress.
        let delta = slot.map(|p| seen.ack.wrapping_sub(p.ack) as i32);
        if delta.is_some_and(|d| d < 0) {
            return;
        }
        let (since, replays, recover_until) = match *slot {
            Some(p) if delta == Some(0) => (p.since, p.replays, p.recover_until),
            Some(PeerAck {
                recover_until: Some(until),
                ..
            }) if (until.wrapping_sub(seen.ack) as i32) > 0 => (i64::MIN, 0, Some(until)),
            _ => (now, 0, None),
        };
        *slot = Some(PeerAck {
            since,
            replays,
            recover_until,
            ..seen
        });
    }

    /// When the next replay is due, if the connection has data in flight.
    pub(super) fn due(&self, base: i64) -> Option<i64> {
        if self.replays >= MAX_REPLAYS {
            return None;
        }
        if self.since == i64::MIN {
            // A partial ACK during recovery.
            return Some(i64::MIN);
        }
        let wait = base.saturating_mul(1 << self.replays).min(1_000_000);
        Some(self.since.saturating_add(wait))
    }

    /// The peer's advertised window in bytes, without its scale (a lower bound).
    pub(super) fn window_bytes(&self) -> u32 {
        u32::from(self.window)
    }

    /// Notes a replay made now, with `in_flight` bytes (at most) unacknowledged.
    pub(super) fn replayed(&mut self, now: i64, in_flight: u32) {
        self.replays = self.replays.saturating_add(1);
        self.since = now;
        self.recover_until = Some(self.ack.wrapping_add(in_flight));
    }

    /// The peer's last ACK again, as a frame for `tuple` (local = us).
    pub(super) fn forge(&self, tuple: &Tuple, medium: Medium) -> Option<alloc::vec::Vec<u8>> {
        let tcp = TcpRepr {
            src_port: tuple.remote.port,
            dst_port: tuple.local.port,
            control: TcpControl::None,
            seq_number: TcpSeqNumber(self.seq_next as i32),
            ack_number: Some(TcpSeqNumber(self.ack as i32)),
            window_len: self.window,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let caps = ChecksumCapabilities::default();
        let (src, dst) = (tuple.remote.addr, tuple.local.addr);
        let (ip_len, ethertype) = match (src, dst) {
            (IpAddress::Ipv4(_), IpAddress::Ipv4(_)) => (20, EthernetProtocol::Ipv4),
            (IpAddress::Ipv6(_), IpAddress::Ipv6(_)) => (40, EthernetProtocol::Ipv6),
            _ => return None,
        };
        let eth_len = if medium == Medium::Ethernet { 14 } else { 0 };
        let mut buf = alloc::vec![0u8; eth_len + ip_len + tcp.buffer_len()];
        let ip_buf = if medium == Medium::Ethernet {
            let (eth_src, eth_dst) = self.eth?;
            let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
            EthernetRepr {
                src_addr: eth_src,
                dst_addr: eth_dst,
                ethertype,
            }
            .emit(&mut f);
            &mut buf[14..]
        } else {
            &mut buf[..]
        };
        let tcp_buf = match (src, dst) {
            (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
                let mut p = Ipv4Packet::new_unchecked(&mut *ip_buf);
                Ipv4Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: IpProtocol::Tcp,
                    payload_len: tcp.buffer_len(),
                    hop_limit: 64,
                }
                .emit(&mut p, &caps);
                &mut ip_buf[20..]
            }
            (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
                let mut p = Ipv6Packet::new_unchecked(&mut *ip_buf);
                Ipv6Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: IpProtocol::Tcp,
                    payload_len: tcp.buffer_len(),
                    hop_limit: 64,
                }
                .emit(&mut p);
                &mut ip_buf[40..]
            }
            _ => return None,
        };
        let mut t = TcpPacket::new_unchecked(tcp_buf);
        tcp.emit(&mut t, &src, &dst, &caps);
        Some(buf)
    }
}

/// The fields of a TCP segment that a replay needs, if it carries an ACK (and no SYN or RST).
fn ack_fields(seg: &Segment<'_>) -> Option<PeerAck> {
    let t = &seg.tcp;
    if !t.ack() || t.rst() || t.syn() {
        return None;
    }
    let len = t.payload().len() as u32 + u32::from(t.fin());
    Some(PeerAck {
        eth: seg.macs,
        seq_next: (t.seq_number().0 as u32).wrapping_add(len),
        ack: t.ack_number().0 as u32,
        window: t.window_len(),
        since: 0,
        replays: 0,
        recover_until: None,
    })
}
