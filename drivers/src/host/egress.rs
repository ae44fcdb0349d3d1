//! Egress and timers: each socket is filed in a timer queue under the instant smoltcp next
//! wants it polled (data to send, a retransmission, a delayed ACK, TIME-WAIT's end). A drive
//! pass polls only the sockets that are due, so a pass costs O(active sockets), not O(all).

use smoltcp::iface::{Interface, PollResult};
use smoltcp::phy::{Device, DeviceCapabilities, PacketMeta};
use smoltcp::socket::tcp::State;

use super::ingress::OneFrame;
use super::{Inner, Sock};

/// How long a socket that asked to be polled but sent nothing waits before the next look.
const SPIN_DEFER_MICROS: i64 = 5_000;

/// What an egress pass found.
pub(super) struct EgressPass {
    /// A socket used its whole budget: more is waiting, do not block.
    pub(super) more: bool,
    /// The device refused a frame (a full TAP queue): due sockets wait for room.
    pub(super) device_full: bool,
}

impl<D: Device> Inner<D> {
    /// Re-files socket `index` after anything may have changed it: its 4-tuple in the demux
    /// map and its next poll instant in the timer queue.
    pub(super) fn sync(&mut self, index: u32, ts: smoltcp::time::Instant) {
        self.sync_tuple(index);
        self.sync_due(index, ts);
    }

    /// Re-files socket `index`'s 4-tuple now (the next frame of the batch may need the demux
    /// entry), and its timer at the end of the pass: a batch of frames for one connection
    /// re-files its timer once, not once per frame.
    pub(super) fn sync_later(&mut self, index: u32) {
        self.sync_tuple(index);
        if let Some((_, sock)) = self.socks.at_mut(index) {
            if !sock.refile_pending {
                sock.refile_pending = true;
                self.touched.push(index);
            }
        }
    }

    /// Files socket `index` in the demux map under its current 4-tuple.
    fn sync_tuple(&mut self, index: u32) {
        let Inner { socks, router, .. } = self;
        let Some((_, sock)) = socks.at_mut(index) else {
            return;
        };
        let s = sock.tcp();
        let tuple = match (s.local_endpoint(), s.remote_endpoint()) {
            (Some(local), Some(remote)) => Some(super::ingress::Tuple { local, remote }),
            _ => None,
        };
        if tuple != sock.tuple {
            if let Some(old) = sock.tuple.take() {
                if router.demux.get(&old) == Some(&index) {
                    router.demux.remove(&old);
                }
            }
            if let Some(new) = tuple {
                // Never steal another socket's entry: the route gave this socket its tuple,
                // and connects use ports nobody else holds.
                let owner = *router.demux.entry(new).or_insert(index);
                if owner == index {
                    sock.tuple = Some(new);
                }
            }
        }
    }

    /// Files socket `index` in the timer queue under the instant smoltcp next wants it polled.
    fn sync_due(&mut self, index: u32, ts: smoltcp::time::Instant) {
        let Inner {
            iface,
            socks,
            timers,
            config,
            ..
        } = self;
        let Some((_, sock)) = socks.at_mut(index) else {
            return;
        };
        sock.refile_pending = false;
        let due = iface
            .poll_delay(ts, &sock.set)
            .map(|d| ts.total_micros().saturating_add(d.total_micros() as i64));
        let due = match (due, replay_due(sock, config.early_retransmit)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if due != sock.due {
            if let Some(old) = sock.due {
                timers.remove(&(old, index));
            }
            if let Some(new) = due {
                timers.insert((new, index));
            }
            sock.due = due;
        }
    }

    /// Re-files every socket an operation touched.
    pub(super) fn sync_touched(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let ts = self.pass_ts;
        let mut touched = core::mem::take(&mut self.touched);
        for &index in &touched {
            self.sync(index, ts);
        }
        touched.clear();
        self.touched = touched;
    }

    /// Polls every due socket: at most `egress_budget` segments each.
    pub(super) fn egress(&mut self, ts: smoltcp::time::Instant) -> EgressPass {
        let now = ts.total_micros();
        let mut due = core::mem::take(&mut self.due_scratch);
        while let Some(&(t, index)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some((_, sock)) = self.socks.at_mut(index) {
                sock.due = None;
            }
            due.push(index);
        }
        let mut pass = EgressPass {
            more: false,
            device_full: false,
        };
        let budget = self.config.egress_budget.max(1);
        for &index in &due {
            if pass.device_full {
                // Stays due; the next pass (woken by room on the device) sends it.
                self.sync(index, ts);
                continue;
            }
            let sent = {
                let Inner {
                    iface,
                    device,
                    socks,
                    config,
                    caps,
                    stats,
                    ..
                } = self;
                let Some((_, sock)) = socks.at_mut(index) else {
                    continue;
                };
                if replay_due(sock, config.early_retransmit).is_some_and(|t| t <= now) {
                    replay_peer_ack(iface, device, caps, sock, ts);
                    stats.early_retransmits += 1;
                }
                let mut dev = Refusing {
                    device,
                    refused: false,
                };
                let mut sent = 0;
                while sent < budget
                    && iface.poll_egress(ts, &mut dev, &mut sock.set)
                        == PollResult::SocketStateChanged
                {
                    sent += 1;
                }
                pass.device_full |= dev.refused;
                sent
            };
            pass.more |= sent == budget;
            self.sync(index, ts);
            if let Some((_, sock)) = self.socks.at_mut(index) {
                if sent > 0 {
                    sock.synack_blocked = false;
                } else if !pass.device_full
                    && sock.tcp().state() == State::SynReceived
                    && sock.due.is_some_and(|t| t > now)
                {
                    // A half-open socket that owes its SYN-ACK and cannot send it: its peer's
                    // address does not resolve (see `ingress::Router::route`).
                    sock.synack_blocked = true;
                }
            }
            if sent == 0 && !pass.device_full {
                self.maybe_stalled(index, now);
                self.defer_if_spinning(index, now);
            }
        }
        due.clear();
        self.due_scratch = due;
        pass
    }

    /// A due socket that sent nothing although it has a segment owed may be waiting for its
    /// neighbor's link-layer address; smoltcp then files it a second out. Retry it as soon as
    /// an ARP or NDP frame arrives instead.
    fn maybe_stalled(&mut self, index: u32, now: i64) {
        let Some((_, sock)) = self.socks.at_mut(index) else {
            return;
        };
        if sock.stalled || sock.due.is_none_or(|t| t <= now) {
            return;
        }
        let s = sock.tcp();
        let owes = s.send_queue() > 0 || matches!(s.state(), State::SynSent | State::SynReceived);
        if owes {
            sock.stalled = true;
            self.stalled.push(index);
        }
    }

    /// smoltcp's `poll_at` can say "now" while its dispatch sends nothing (a congestion window
    /// that is full until an ACK arrives). Re-polling such a socket at once would spin; the ACK
    /// that unblocks it re-files it anyway (ingress syncs its socket), so look again only a
    /// little later, which also bounds how late a retransmission timer it hides can fire.
    fn defer_if_spinning(&mut self, index: u32, now: i64) {
        let Some((_, sock)) = self.socks.at_mut(index) else {
            return;
        };
        if let Some(due) = sock.due.filter(|&t| t <= now) {
            let later = now + SPIN_DEFER_MICROS;
            self.timers.remove(&(due, index));
            self.timers.insert((later, index));
            sock.due = Some(later);
        }
    }

    /// Re-files every stalled socket (an ARP or NDP frame arrived). One that is due now goes
    /// to the next egress pass; one whose neighbor is still unknown stays stalled.
    pub(super) fn retry_stalled(&mut self, ts: smoltcp::time::Instant) {
        if self.stalled.is_empty() {
            return;
        }
        let list = core::mem::take(&mut self.stalled);
        for &index in &list {
            if let Some((_, sock)) = self.socks.at_mut(index) {
                sock.stalled = false;
            }
            self.sync(index, ts);
        }
    }

    /// The next instant any socket wants to be polled, in microseconds.
    pub(super) fn next_due(&self) -> Option<i64> {
        self.timers.first().map(|&(t, _)| t)
    }
}

/// The host's device for egress, recording whether it refused a frame.
struct Refusing<'d, D> {
    device: &'d mut D,
    refused: bool,
}

impl<'d, D: Device> Device for Refusing<'d, D> {
    type RxToken<'a>
        = D::RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Egress only: ingress takes frames through the route.
        None
    }

    fn transmit(&mut self, timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        let token = self.device.transmit(timestamp);
        self.refused |= token.is_none();
        token
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

/// When the socket's next early retransmission is due, if it has data in flight.
fn replay_due(sock: &Sock, base: Option<core::time::Duration>) -> Option<i64> {
    let base = i64::try_from(base?.as_micros()).unwrap_or(i64::MAX);
    let peer = sock.peer_ack.as_ref()?;
    let s = sock.tcp();
    let synchronized = matches!(
        s.state(),
        State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck
    );
    if !synchronized || s.send_queue() == 0 {
        return None;
    }
    peer.due(base)
}

/// Hands smoltcp the peer's last ACK three times, so that it fast-retransmits the first
/// unacknowledged segment (see `host/probe.rs`).
fn replay_peer_ack<D: Device>(
    iface: &mut Interface,
    device: &mut D,
    caps: &DeviceCapabilities,
    sock: &mut Sock,
    ts: smoltcp::time::Instant,
) {
    let s = sock
        .set
        .get::<smoltcp::socket::tcp::Socket<'static>>(sock.handle);
    // Sent but unacknowledged is at most what is queued and what the peer's window allows.
    let in_flight = s.send_queue().min(usize::from(u16::MAX)) as u32;
    let (Some(tuple), Some(peer)) = (sock.tuple, sock.peer_ack.as_mut()) else {
        return;
    };
    peer.replayed(ts.total_micros(), in_flight.min(peer.window_bytes()));
    let Some(duplicate) = peer.forge(&tuple, caps.medium) else {
        return;
    };
    for frame in [&duplicate, &duplicate, &duplicate] {
        // Any answer smoltcp gives leaves through the device, as for a real frame.
        let Some(tx) = device.transmit(ts) else {
            return;
        };
        let mut one = OneFrame {
            frame: Some(frame),
            meta: PacketMeta::default(),
            tx: Some(tx),
            caps,
        };
        let _ = iface.poll_ingress_single(ts, &mut one, &mut sock.set);
    }
}
