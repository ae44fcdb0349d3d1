//! A user's stream: the sticky view of its connection that the backend's error mapping reads.

use core::fmt;
use core::net::SocketAddr;

use netpoll_core::Key;
use smoltcp::socket::tcp::{self, State};

/// A stream's view of its connection, kept sticky across smoltcp state changes.
#[derive(Debug, Default)]
pub(super) struct Stream {
    pub(super) key: Option<Key>,
    /// A read (or accept) returned `WouldBlock` and no edge was reported since.
    pub(super) armed_read: bool,
    /// A write (or connect) returned `WouldBlock` and no edge was reported since.
    pub(super) armed_write: bool,
    pub(super) local: Option<SocketAddr>,
    pub(super) peer: Option<SocketAddr>,
    /// An ephemeral port this stream holds until its smoltcp socket is gone.
    pub(super) port: Option<u16>,
    pub(super) connecting: bool,
    /// The connection reached ESTABLISHED (or later) at some point.
    pub(super) established: bool,
    /// The peer's FIN arrived: reads end with `Ok(0)` after the data.
    pub(super) fin: bool,
    /// The connection was reset (or timed out) after it was established.
    pub(super) reset: bool,
    /// The connect failed: RST in SYN-SENT.
    pub(super) refused: bool,
    pub(super) shut_read: bool,
    pub(super) shut_write: bool,
}

impl Stream {
    /// Folds the socket's current state into the sticky flags, logging each first sight of
    /// connected, closed by the peer, reset and refused (connection events, at debug).
    pub(super) fn observe(&mut self, s: &tcp::Socket<'_>) {
        let before = (self.established, self.fin, self.reset, self.refused);
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
        if before != (self.established, self.fin, self.reset, self.refused) {
            self.log_transition(before);
        }
    }

    /// Logs what changed since `before` (established, fin, reset, refused).
    fn log_transition(&self, (established, fin, reset, refused): (bool, bool, bool, bool)) {
        let tuple = self.tuple();
        if self.established && !established && self.connecting {
            log::debug!("connected {tuple}");
        }
        if self.fin && !fin {
            log::debug!("closed by the peer (FIN) {tuple}");
        }
        if self.reset && !reset {
            log::debug!("reset {tuple}");
        }
        if self.refused && !refused {
            log::debug!("connection refused {tuple}");
        }
    }

    /// The connection's 4-tuple for log messages: `local -> peer`.
    pub(super) fn tuple(&self) -> LogTuple {
        LogTuple {
            local: self.local,
            peer: self.peer,
        }
    }

    /// Whether `try_read` would do anything but `WouldBlock` (it must agree with `try_read`).
    pub(super) fn read_ready(&self, s: &tcp::Socket<'_>) -> bool {
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
    pub(super) fn write_ready(&self, s: &tcp::Socket<'_>) -> bool {
        self.shut_write
            || s.can_send()
            || !matches!(
                s.state(),
                State::Established | State::CloseWait | State::SynSent | State::SynReceived
            )
    }
}

/// A connection's 4-tuple as log messages print it: `local -> peer`, `?` for an end not
/// known yet.
pub(super) struct LogTuple {
    pub(super) local: Option<SocketAddr>,
    pub(super) peer: Option<SocketAddr>,
}

impl fmt::Display for LogTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            Some(a) => write!(f, "{a}")?,
            None => f.write_str("?")?,
        }
        f.write_str(" -> ")?;
        match self.peer {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("?"),
        }
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
pub(super) fn fin_probe(s: &mut tcp::Socket<'_>) {
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
