//! A user's stream: the sticky view of its connection that the backend's error mapping reads.

use core::net::SocketAddr;

use netpoll_core::Key;
use smoltcp::socket::tcp::{self, State};

/// A stream's view of its connection, kept sticky across smoltcp state changes.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) key: Option<Key>,
    /// A read (or accept) returned `WouldBlock` and no edge was reported since.
    pub(crate) armed_read: bool,
    /// A write (or connect) returned `WouldBlock` and no edge was reported since.
    pub(crate) armed_write: bool,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
    /// An ephemeral port this stream holds until its smoltcp socket is gone.
    pub(crate) port: Option<u16>,
    pub(crate) connecting: bool,
    /// The connection reached ESTABLISHED (or later) at some point.
    pub(crate) established: bool,
    /// The peer's FIN arrived: reads end with `Ok(0)` after the data.
    pub(crate) fin: bool,
    /// The connection was reset (or timed out) after it was established.
    pub(crate) reset: bool,
    /// The connect failed: RST in SYN-SENT.
    pub(crate) refused: bool,
    pub(crate) shut_read: bool,
    pub(crate) shut_write: bool,
}

impl Stream {
    /// Folds the socket's current state into the sticky flags.
    pub(crate) fn observe(&mut self, s: &tcp::Socket<'_>) {
        match s.state() {
            State::Established | State::FinWait1 | State::FinWait2 => self.established = true,
            State::CloseWait | State::Closing | State::LastAck | State::TimeWait => {
                self.established = true;
                self.fin = true;
            }
            State::Closed => {
                // The first sight of an abnormal close decides what it was.
                if !self.fin && !self.reset && !self.refused {
                    if self.established {
                        self.reset = true;
                    } else if self.connecting {
                        self.refused = true;
                    }
                }
            }
            State::Listen | State::SynSent | State::SynReceived => {}
        }
        if self.local.is_none() {
            self.local = s.local_endpoint().map(SocketAddr::from);
        }
        if self.peer.is_none() {
            self.peer = s.remote_endpoint().map(SocketAddr::from);
        }
    }

    /// Whether `try_read` would do anything but `WouldBlock` (it must agree with `try_read`).
    pub(crate) fn read_ready(&self, s: &tcp::Socket<'_>) -> bool {
        self.shut_read
            || s.can_recv()
            || !matches!(
                s.state(),
                State::Established
                    | State::FinWait1
                    | State::FinWait2
                    | State::SynSent
                    | State::SynReceived
            )
    }

    /// Whether `try_write` would do anything but `WouldBlock` (it must agree with `try_write`).
    pub(crate) fn write_ready(&self, s: &tcp::Socket<'_>) -> bool {
        self.shut_write
            || s.can_send()
            || !matches!(
                s.state(),
                State::Established | State::CloseWait | State::SynSent | State::SynReceived
            )
    }
}

/// Keep-alive interval that re-sends a lost FIN (see [`fin_probe`]).
const FIN_PROBE: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(1000);

/// Works around a smoltcp 0.14 stall: when the only unacknowledged segment is our FIN and three
/// duplicate ACKs arrive (the FIN was lost while the peer still acked earlier data), the fast
/// retransmit path finds no data to resend, puts the retransmit timer to idle, and nothing ever
/// re-sends the FIN: the connection hangs in FIN-WAIT-1 / LAST-ACK / CLOSING until a timeout
/// aborts it. Any later dispatch does send it (the pending fast retransmit carries the FIN), so
/// while our FIN is outstanding the socket gets a keep-alive timer, which is only armed when
/// the retransmit timer is idle, i.e. exactly in the stalled case; it is removed once the FIN
/// is acknowledged.
pub(crate) fn fin_probe(s: &mut tcp::Socket<'_>) {
    match s.state() {
        State::FinWait1 | State::Closing | State::LastAck => {
            if s.keep_alive().is_none() {
                s.set_keep_alive(Some(FIN_PROBE));
            }
        }
        _ => {
            if s.keep_alive().is_some() {
                s.set_keep_alive(None);
            }
        }
    }
}
