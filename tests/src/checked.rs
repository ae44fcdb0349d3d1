//! A backend decorator that checks the socket lifecycle the stack promises every backend
//! (`netpoll_stack::backend` docs; `docs/semantics.md#close-sequence` and checklist #48):
//!
//! * `register` at most once, before any `deregister`;
//! * `deregister` (if registered) **before** `close` (Go: `pd.close()` before `CloseFunc`);
//! * `close` exactly once, and no operation on a socket after its `close`.
//!
//! [`crate::run_case`] wraps every harness's backends in [`Checked`], so every case of every
//! backend checks these rules for free. A violation inside `close`/`deregister` (which may run
//! from a `Drop`) is recorded, not panicked, and reported when the case ends.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use netpoll_core::{Handle, Key};
use netpoll_stack::backend::Shutdown;
use netpoll_stack::{ErrorKind, SocketBackend, TryError};

#[derive(Debug, Default)]
struct Life {
    listener: bool,
    registered: bool,
    deregistered: bool,
    closed: bool,
}

/// The record of every socket created through the [`Checked`] backends of one case.
#[derive(Debug, Default)]
pub struct Ledger {
    next: AtomicU64,
    sockets: Mutex<HashMap<u64, Life>>,
    violations: Mutex<Vec<String>>,
}

impl Ledger {
    /// A fresh ledger, to share between the backends of one case.
    pub fn new() -> Arc<Self> {
        Arc::new(Ledger::default())
    }

    /// The lifecycle violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many sockets were created and how many of those are closed.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        (s.len(), s.values().filter(|l| l.closed).count())
    }

    fn create(&self, listener: bool) -> u64 {
        // Relaxed: a unique id is all we need.
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Life {
                    listener,
                    ..Life::default()
                },
            );
        id
    }

    fn violation(&self, msg: String) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
    }

    /// Runs `f` on the socket's record; records `f`'s complaint, if any.
    fn with(&self, id: u64, op: &str, f: impl FnOnce(&mut Life) -> Option<&'static str>) {
        let complaint = {
            let mut s = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            match s.get_mut(&id) {
                Some(life) => f(life).map(|c| {
                    let kind = if life.listener { "listener" } else { "stream" };
                    format!("socket #{id} ({kind}): {op}: {c}")
                }),
                None => Some(format!("socket #{id}: {op}: unknown socket")),
            }
        };
        if let Some(c) = complaint {
            self.violation(c);
        }
    }

    /// An I/O or query operation: must not follow `close`.
    fn use_(&self, id: u64, op: &str) {
        self.with(id, op, |l| l.closed.then_some("used after close"));
    }
}

/// A socket of a [`Checked`] backend.
pub struct CheckedSocket<S> {
    id: u64,
    inner: S,
}

impl<S> fmt::Debug for CheckedSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckedSocket(#{})", self.id)
    }
}

/// `B`, with every socket's lifecycle checked against a shared [`Ledger`].
pub struct Checked<B> {
    inner: B,
    ledger: Arc<Ledger>,
}

impl<B: Clone> Clone for Checked<B> {
    fn clone(&self) -> Self {
        Checked {
            inner: self.inner.clone(),
            ledger: self.ledger.clone(),
        }
    }
}

impl<B> fmt::Debug for Checked<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checked")
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

impl<B: SocketBackend> Checked<B> {
    /// Wraps `inner`, recording into `ledger`.
    pub fn new(inner: B, ledger: Arc<Ledger>) -> Self {
        Checked { inner, ledger }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The ledger this backend records into.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }
}

impl<B: SocketBackend> SocketBackend for Checked<B> {
    type Socket = CheckedSocket<B::Socket>;

    fn handle(&self) -> &Handle {
        self.inner.handle()
    }

    fn listen(&self, addr: SocketAddr, backlog: u32) -> Result<Self::Socket, ErrorKind> {
        let inner = self.inner.listen(addr, backlog)?;
        Ok(CheckedSocket {
            id: self.ledger.create(true),
            inner,
        })
    }

    fn stream(&self, remote: SocketAddr) -> Result<Self::Socket, ErrorKind> {
        let inner = self.inner.stream(remote)?;
        Ok(CheckedSocket {
            id: self.ledger.create(false),
            inner,
        })
    }

    fn register(&self, socket: &Self::Socket, key: Key) -> Result<(), ErrorKind> {
        self.ledger.with(socket.id, "register", |l| {
            if l.closed {
                Some("registered after close")
            } else if l.registered {
                Some("registered twice")
            } else {
                l.registered = true;
                None
            }
        });
        self.inner.register(&socket.inner, key)
    }

    fn deregister(&self, socket: &Self::Socket) {
        self.ledger.with(socket.id, "deregister", |l| {
            if l.closed {
                Some("deregistered after close")
            } else if !l.registered {
                Some("deregistered but never registered")
            } else if l.deregistered {
                Some("deregistered twice")
            } else {
                l.deregistered = true;
                None
            }
        });
        self.inner.deregister(&socket.inner);
    }

    fn try_accept(&self, listener: &Self::Socket) -> Result<(Self::Socket, SocketAddr), TryError> {
        self.ledger.use_(listener.id, "try_accept");
        let (inner, peer) = self.inner.try_accept(&listener.inner)?;
        Ok((
            CheckedSocket {
                id: self.ledger.create(false),
                inner,
            },
            peer,
        ))
    }

    fn start_connect(&self, socket: &Self::Socket, addr: SocketAddr) -> Result<(), TryError> {
        self.ledger.use_(socket.id, "start_connect");
        self.inner.start_connect(&socket.inner, addr)
    }

    fn finish_connect(&self, socket: &Self::Socket) -> Result<(), TryError> {
        self.ledger.use_(socket.id, "finish_connect");
        self.inner.finish_connect(&socket.inner)
    }

    fn try_read(&self, socket: &Self::Socket, buf: &mut [u8]) -> Result<usize, TryError> {
        self.ledger.use_(socket.id, "try_read");
        if buf.is_empty() {
            self.ledger.violation(format!(
                "socket #{}: try_read with an empty buffer (the stack answers those itself)",
                socket.id
            ));
        }
        self.inner.try_read(&socket.inner, buf)
    }

    fn try_read_drained(
        &self,
        socket: &Self::Socket,
        buf: &mut [u8],
    ) -> Result<(usize, bool), TryError> {
        self.ledger.use_(socket.id, "try_read_drained");
        if buf.is_empty() {
            self.ledger.violation(format!(
                "socket #{}: try_read_drained with an empty buffer (the stack answers those itself)",
                socket.id
            ));
        }
        self.inner.try_read_drained(&socket.inner, buf)
    }

    fn edge_on_register(&self, socket: &Self::Socket) -> bool {
        self.ledger.use_(socket.id, "edge_on_register");
        self.inner.edge_on_register(&socket.inner)
    }

    fn try_write(&self, socket: &Self::Socket, buf: &[u8]) -> Result<usize, TryError> {
        self.ledger.use_(socket.id, "try_write");
        if buf.is_empty() {
            self.ledger.violation(format!(
                "socket #{}: try_write with an empty buffer (the stack answers those itself)",
                socket.id
            ));
        }
        self.inner.try_write(&socket.inner, buf)
    }

    fn shutdown(&self, socket: &Self::Socket, how: Shutdown) -> Result<(), ErrorKind> {
        self.ledger.use_(socket.id, "shutdown");
        self.inner.shutdown(&socket.inner, how)
    }

    fn local_addr(&self, socket: &Self::Socket) -> Result<SocketAddr, ErrorKind> {
        self.ledger.use_(socket.id, "local_addr");
        self.inner.local_addr(&socket.inner)
    }

    fn peer_addr(&self, socket: &Self::Socket) -> Result<SocketAddr, ErrorKind> {
        self.ledger.use_(socket.id, "peer_addr");
        self.inner.peer_addr(&socket.inner)
    }

    fn set_nodelay(&self, socket: &Self::Socket, nodelay: bool) -> Result<(), ErrorKind> {
        self.ledger.use_(socket.id, "set_nodelay");
        self.inner.set_nodelay(&socket.inner, nodelay)
    }

    fn nodelay(&self, socket: &Self::Socket) -> Result<bool, ErrorKind> {
        self.ledger.use_(socket.id, "nodelay");
        self.inner.nodelay(&socket.inner)
    }

    fn close(&self, socket: &Self::Socket, abort: bool) {
        let mut first = false;
        self.ledger.with(socket.id, "close", |l| {
            if l.closed {
                return Some("closed twice (resources must be released exactly once)");
            }
            l.closed = true;
            first = true;
            (l.registered && !l.deregistered)
                .then_some("closed while still registered (deregister must come first)")
        });
        // A second close is recorded but not forwarded: on the kernel it could close an
        // unrelated descriptor that reused the number.
        if first {
            self.inner.close(&socket.inner, abort);
        }
    }
}

impl<B: netpoll_stack::DatagramBackend> netpoll_stack::DatagramBackend for Checked<B> {
    fn bind_datagram(&self, addr: SocketAddr) -> Result<Self::Socket, ErrorKind> {
        let inner = self.inner.bind_datagram(addr)?;
        Ok(CheckedSocket {
            id: self.ledger.create(false),
            inner,
        })
    }

    fn connect_datagram(&self, socket: &Self::Socket, addr: SocketAddr) -> Result<(), ErrorKind> {
        self.ledger.use_(socket.id, "connect_datagram");
        self.inner.connect_datagram(&socket.inner, addr)
    }

    fn try_recv_from(
        &self,
        socket: &Self::Socket,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), TryError> {
        self.ledger.use_(socket.id, "try_recv_from");
        self.inner.try_recv_from(&socket.inner, buf)
    }

    fn try_send_to(
        &self,
        socket: &Self::Socket,
        buf: &[u8],
        to: Option<SocketAddr>,
    ) -> Result<usize, TryError> {
        self.ledger.use_(socket.id, "try_send_to");
        self.inner.try_send_to(&socket.inner, buf, to)
    }
}
