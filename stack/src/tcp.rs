//! TCP listeners and streams with Go's semantics (Go: `net.TCPListener`, `net.TCPConn`, and
//! the loops of `internal/poll/fd_unix.go`, written once here for every backend).
//!
//! Every blocking operation is: take the direction's lock, `prepare` the pollDesc (a closed
//! or expired descriptor fails before any I/O, `docs/semantics.md#past-deadline`), try the
//! backend, and on `WouldBlock` wait on the pollDesc and retry. A wake-up is only a hint to
//! retry (`docs/semantics.md#spurious-wake-ups`). "#N" in this file is an item of the
//! conformance checklist in `docs/semantics.md`.
//!
//! # Future sizes
//!
//! The futures of these operations live inside the callers' tasks, so their size is memory
//! per connection. The hot ones are written as a plain `fn` returning an `async move` block
//! rather than as an `async fn`, which keeps a second copy of its arguments in the future
//! (rust-lang/rust#62958); helpers awaited inside them are plain functions returning the core's
//! `ReadinessWait`, not nested `async fn`s; [`Readable`], what an idle connection waits in, is written
//! by hand. `hosted/tests/footprint.rs` holds the budgets.

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};
use netpoll_core::sync::Ordering;

use netpoll_core::sched::ReadinessWait;
use netpoll_core::{Direction, Handle, Instant, PollError};

use crate::error::{Error, ErrorKind, Op, TryError};
use crate::fd::Fd;
use netpoll_core::backend::{Shutdown, SocketBackend};

// Poll-based I/O and the async I/O trait impls: a child module, so it runs the same private
// steps (`read_once`, `must_wait_for_edge`, the budget) as the futures here.
#[path = "poll_io.rs"]
mod poll_io;

/// Go's default listen backlog when the OS value is unknown (`maxListenerBacklog`).
pub const DEFAULT_BACKLOG: u32 = 128;

/// How many operations in one direction of one connection may complete in a row without
/// waiting before the task yields once to the scheduler (tokio's coop budget is 128 too).
/// Without it, a task reading a connection that always has data would never let other tasks,
/// timers or I/O run on its worker.
pub const COOP_BUDGET: u32 = 128;
const _: () = assert!(COOP_BUDGET <= u8::MAX as u32, "the streak counters are u8");

/// Counts one operation against the cooperative budget; true when it is spent and the task
/// should yield once (`yield_now`). A plain function, not an `async fn`, so the operation
/// futures stay small (each nested future is stored inline in its caller's).
fn budget_spent<B: SocketBackend>(fd: &Fd<B>, dir: Direction) -> bool {
    // Relaxed load + store, not an RMW: a scheduling hint on the per-operation path, where a
    // count lost to a racing task in the same direction does not matter.
    let streak = &fd.streak[dir as usize];
    let n = streak.load(Ordering::Relaxed) + 1;
    let spent = u32::from(n) >= COOP_BUDGET;
    streak.store(if spent { 0 } else { n }, Ordering::Relaxed);
    spent
}

/// Before a pollDesc wait: the task is about to give up its worker anyway, so it gets a fresh
/// cooperative budget afterwards.
fn reset_budget<B: SocketBackend>(fd: &Fd<B>, dir: Direction) {
    fd.streak[dir as usize].store(0, Ordering::Relaxed);
}

/// The pollDesc wait after `WouldBlock`; map its error with [`wait_error`].
fn wait<B: SocketBackend>(fd: &Fd<B>, dir: Direction) -> ReadinessWait<'_> {
    reset_budget(fd, dir);
    fd.backend.handle().io().wait(&fd.pd, dir)
}

/// One read attempt under the read lock. Records for the next read whether it must wait for
/// an edge first ([`Fd::read_drained`]), as every read path (`read`, `try_read`) must.
fn read_once<B: SocketBackend>(fd: &Fd<B>, buf: &mut [u8]) -> Result<usize, TryError> {
    let read = fd.backend.try_read_drained(&fd.socket, buf);
    let drained = match read {
        // EOF (0) is never "drained": the next read must return 0 again without waiting for
        // an edge that never comes.
        Ok((n, drained)) => drained && n > 0,
        // Proven empty: the next data raises an edge, so `readable` waits for it instead of
        // returning at once (which would spin with `try_read`).
        Err(TryError::WouldBlock) => true,
        // The error may have been the last edge (a reset): the next read must try (and
        // report it again), not wait.
        Err(TryError::Failed(_)) => false,
    };
    // Relaxed: see `Fd::read_drained`.
    fd.read_drained.store(drained, Ordering::Relaxed);
    read.map(|(n, _)| n)
}

/// A failed pollDesc wait as an error of `op`.
fn wait_error(op: Op) -> impl Fn(PollError) -> Error {
    move |e| Error::new(op, e.into())
}

/// Under the read lock: checks the pollDesc before a read (closed or expired fail before any
/// I/O, `docs/semantics.md#past-deadline`) and tells whether the last read drained the
/// socket, so that the caller must wait for the next edge first: a read now could only say `WouldBlock`.
fn must_wait_for_edge<B: SocketBackend>(fd: &Fd<B>) -> Result<bool, Error> {
    let err = wait_error(Op::Read);
    // Not once the peer's FIN or a reset was reported: that end is already queued and raises
    // no further edge.
    if fd.read_drained.load(Ordering::Relaxed) && !fd.pd.read_closed() {
        // Unlike `prepare`, keep a latched readiness: it is that edge.
        fd.pd.check_err(Direction::Read).map_err(err)?;
        Ok(true)
    } else {
        fd.pd.prepare(Direction::Read).map_err(err)?;
        Ok(false)
    }
}

/// Runs a non-I/O socket call under a reference (Go: `incref`), so a closed socket reports
/// closed; both failures are reported for `op`.
fn with_ref<B: SocketBackend, T>(
    fd: &Fd<B>,
    op: Op,
    f: impl FnOnce(&B, &B::Socket) -> Result<T, ErrorKind>,
) -> Result<T, Error> {
    let _ref = fd.incref().map_err(|k| Error::new(op, k))?;
    f(&fd.backend, &fd.socket).map_err(|k| Error::new(op, k))
}

fn set_deadline<B: SocketBackend>(
    fd: &Fd<B>,
    dirs: &[Direction],
    deadline: Option<Instant>,
) -> Result<(), Error> {
    // Go: `incref` first, so a closed fd reports closed (#46).
    with_ref(fd, Op::Set, |b, _| {
        b.handle().io().set_deadline(&fd.pd, dirs, deadline);
        Ok(())
    })
}

/// A listening TCP socket. Go: `net.TCPListener`.
///
/// Clones share the socket: closing one closes all (as Go's `*TCPListener` shared between
/// goroutines). The socket is released when `close` completes or the last clone drops.
pub struct TcpListener<B: SocketBackend> {
    pub(crate) fd: Arc<Fd<B>>,
}

impl<B: SocketBackend> Clone for TcpListener<B> {
    fn clone(&self) -> Self {
        TcpListener {
            fd: self.fd.clone(),
        }
    }
}

impl<B: SocketBackend> fmt::Debug for TcpListener<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("key", &self.fd.pd.key())
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl<B: SocketBackend> TcpListener<B> {
    /// Listens on `addr` with the default backlog ([`DEFAULT_BACKLOG`]).
    pub fn bind(backend: &B, addr: SocketAddr) -> Result<Self, Error> {
        Self::bind_with_backlog(backend, addr, DEFAULT_BACKLOG)
    }

    /// Listens on `addr` with an accept queue of `backlog` connections.
    pub fn bind_with_backlog(backend: &B, addr: SocketAddr, backlog: u32) -> Result<Self, Error> {
        let err = |k| Error::new(Op::Listen, k);
        let socket = backend.listen(addr, backlog.max(1)).map_err(err)?;
        let fd = Fd::new(backend, socket).map_err(err)?;
        Ok(TcpListener { fd })
    }

    /// Waits for a connection. Go: `poll.FD.Accept`.
    ///
    /// Connections aborted before they were accepted are skipped silently (Go #6163).
    pub async fn accept(&self) -> Result<(TcpStream<B>, SocketAddr), Error> {
        let err = |k| Error::new(Op::Accept, k);
        let fd = &*self.fd;
        // A connection flood must not keep the accept loop from yielding either.
        if budget_spent(fd, Direction::Read) {
            netpoll_core::yield_now().await;
        }
        let _lock = fd.lock(Direction::Read).await.map_err(err)?;
        fd.pd.prepare(Direction::Read).map_err(|e| err(e.into()))?;
        loop {
            match fd.backend.try_accept(&fd.socket) {
                Ok((socket, peer)) => {
                    let stream = Fd::new(&fd.backend, socket).map_err(err)?;
                    return Ok((TcpStream { fd: stream }, peer));
                }
                Err(TryError::WouldBlock) => wait(fd, Direction::Read)
                    .await
                    .map_err(wait_error(Op::Accept))?,
                Err(TryError::Failed(ErrorKind::ConnectionAborted)) => continue,
                Err(TryError::Failed(k)) => return Err(err(k)),
            }
        }
    }

    /// The bound address (with the real port if bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        with_ref(&self.fd, Op::Get, |b, s| b.local_addr(s))
    }

    /// Sets the deadline for `accept` (`None`: no deadline). Go: `TCPListener.SetDeadline`.
    pub fn set_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
        set_deadline(&self.fd, &Direction::BOTH, deadline)
    }

    /// Closes the listener, waking a pending `accept` with a closed error, and releases the
    /// port before it returns. A second close fails with a closed error.
    pub async fn close(&self) -> Result<(), Error> {
        self.fd
            .close(false)
            .await
            .map_err(|k| Error::new(Op::Close, k))
    }

    /// The scheduler this listener is polled by.
    pub fn handle(&self) -> &Handle {
        self.fd.backend.handle()
    }
}

/// A TCP connection. Go: `net.TCPConn`.
///
/// All methods take `&self`: one task may read while another writes, and concurrent reads (or
/// writes) queue behind each other rather than fail (Go's fdMutex). Clones share the
/// connection; `close` from any clone wakes every blocked operation with a closed error.
///
/// Besides the futures, the stream has poll-based I/O ([`poll_read`](Self::poll_read),
/// [`poll_write`](Self::poll_write), [`writable`](Self::writable)) with the same deadlines,
/// close and locking, and implements the async I/O traits of other crates, for `TcpStream`
/// and `&TcpStream`, behind this crate's features: `futures-io` (`futures_io::AsyncRead`/
/// `AsyncWrite`), `tokio` (`tokio::io::AsyncRead`/`AsyncWrite`, no tokio runtime) and
/// `embedded-io-async` (`embedded_io_async::Read`/`Write`). The inherent `read`, `write_all`
/// and `close` shadow the traits' extension methods of the same names: call those as
/// `AsyncWriteExt::close(&mut stream)`.
pub struct TcpStream<B: SocketBackend> {
    pub(crate) fd: Arc<Fd<B>>,
}

impl<B: SocketBackend> Clone for TcpStream<B> {
    fn clone(&self) -> Self {
        TcpStream {
            fd: self.fd.clone(),
        }
    }
}

impl<B: SocketBackend> fmt::Debug for TcpStream<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("key", &self.fd.pd.key())
            .field("local_addr", &self.local_addr().ok())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

impl<B: SocketBackend> TcpStream<B> {
    /// Connects to `addr`. Go: `net.Dial("tcp", addr)`.
    pub async fn connect(backend: &B, addr: SocketAddr) -> Result<Self, Error> {
        Self::connect_deadline(backend, addr, None).await
    }

    /// Connects to `addr`, giving up with a timeout error at `deadline`. Go: `DialTimeout`;
    /// the deadline rides on the write direction, as in Go's `netFD.connect`
    /// (`docs/semantics.md#connect-deadline`).
    pub async fn connect_deadline(
        backend: &B,
        addr: SocketAddr,
        deadline: Option<Instant>,
    ) -> Result<Self, Error> {
        let err = |k| Error::new(Op::Connect, k);
        let socket = backend.stream(addr).map_err(err)?;
        let fd = Fd::new(backend, socket).map_err(err)?;
        let stream = TcpStream { fd };
        // On any failure below, dropping `stream` closes the socket.
        let fd = &*stream.fd;
        if deadline.is_some() {
            backend
                .handle()
                .io()
                .set_deadline(&fd.pd, &[Direction::Write], deadline);
        }
        {
            let _lock = fd.lock(Direction::Write).await.map_err(err)?;
            fd.pd.prepare(Direction::Write).map_err(|e| err(e.into()))?;
            match backend.start_connect(&fd.socket, addr) {
                Ok(()) => {}
                Err(TryError::WouldBlock) => loop {
                    wait(fd, Direction::Write)
                        .await
                        .map_err(wait_error(Op::Connect))?;
                    // A wake-up is a hint: confirm (Go #14548, #19289).
                    match backend.finish_connect(&fd.socket) {
                        Ok(()) => break,
                        Err(TryError::WouldBlock) => continue,
                        Err(TryError::Failed(k)) => return Err(err(k)),
                    }
                },
                Err(TryError::Failed(k)) => return Err(err(k)),
            }
        }
        if deadline.is_some() {
            backend
                .handle()
                .io()
                .set_deadline(&fd.pd, &[Direction::Write], None);
        }
        Ok(stream)
    }

    /// Reads what is available, waiting until something is. `Ok(0)` is end of stream (the
    /// peer's FIN); a peer's reset is [`ErrorKind::ConnectionReset`]. An empty `buf` returns
    /// `Ok(0)` at once on an open connection (Go #15735). Go: `poll.FD.Read`.
    #[allow(clippy::manual_async_fn)] // See the module docs, "Future sizes".
    pub fn read<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = Result<usize, Error>> + Send + 'a {
        async move {
            let err = |k| Error::new(Op::Read, k);
            let fd = &*self.fd;
            if budget_spent(fd, Direction::Read) {
                netpoll_core::yield_now().await;
            }
            let _lock = fd.lock(Direction::Read).await.map_err(err)?;
            if buf.is_empty() {
                return Ok(0);
            }
            if must_wait_for_edge(fd)? {
                wait(fd, Direction::Read)
                    .await
                    .map_err(wait_error(Op::Read))?;
            }
            loop {
                match read_once(fd, buf) {
                    Ok(n) => return Ok(n),
                    Err(TryError::WouldBlock) => {
                        wait(fd, Direction::Read)
                            .await
                            .map_err(wait_error(Op::Read))?;
                    }
                    Err(TryError::Failed(k)) => return Err(err(k)),
                }
            }
        }
    }

    /// Waits until a read can make progress (data, end of stream or an error may be there)
    /// without holding a read buffer, so an idle connection needs none: take a buffer after
    /// this returns, then [`read`](Self::read). Fails as `read` would on a closed connection
    /// or an expired read deadline. A wake-up is a hint: the `read` that follows may still
    /// wait, never fail, because of it. Go has no equivalent (a goroutine parks inside
    /// `Read`); tokio: `TcpStream::readable`.
    pub fn readable(&self) -> Readable<'_, B> {
        Readable {
            fd: &self.fd,
            step: ReadableStep::Start,
        }
    }

    /// Reads what is there now, without waiting: `Ok(n)` as [`read`](Self::read) would
    /// return, or an error with [`Error::is_would_block`] when a read would have to wait
    /// (nothing buffered, or another task holds the read side). A closed connection or an
    /// expired read deadline fails as in `read`. With [`readable`](Self::readable), a server
    /// can wait without a buffer and read without a future. Go has no equivalent (its reads
    /// always wait); tokio: `TcpStream::try_read`.
    pub fn try_read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let err = |k| Error::new(Op::Read, k);
        let fd = &*self.fd;
        let _lock = fd.try_lock(Direction::Read).map_err(err)?;
        if buf.is_empty() {
            return Ok(0);
        }
        // Drained: only an edge that came meanwhile (latched by the pollDesc, not consumed by
        // a `readable`) says there is something to read; take it, or it would not block.
        if must_wait_for_edge(fd)? && !fd.pd.take_ready(Direction::Read) {
            return Err(err(ErrorKind::WouldBlock));
        }
        read_once(fd, buf).map_err(|e| match e {
            TryError::WouldBlock => err(ErrorKind::WouldBlock),
            TryError::Failed(k) => err(k),
        })
    }

    /// Writes what the socket accepts now, without waiting: `Ok(n)` with `n` possibly less
    /// than `buf.len()`, or an error with [`Error::is_would_block`] when nothing can be
    /// written now (the send buffer is full, or another task holds the write side). A closed
    /// connection or an expired write deadline fails as in `write`; an empty `buf` still
    /// reports those. Go has no equivalent; tokio: `TcpStream::try_write`.
    pub fn try_write(&self, buf: &[u8]) -> Result<usize, Error> {
        let err = |k| Error::new(Op::Write, k);
        let fd = &*self.fd;
        let _lock = fd.try_lock(Direction::Write).map_err(err)?;
        fd.pd
            .prepare(Direction::Write)
            .map_err(wait_error(Op::Write))?;
        if buf.is_empty() {
            return Ok(0);
        }
        poll_io::write_once(fd, buf).map_err(|e| match e {
            TryError::WouldBlock => err(ErrorKind::WouldBlock),
            TryError::Failed(k) => err(k),
        })
    }

    /// Writes some of `buf`, waiting until at least one byte is accepted; returns how many.
    /// An empty `buf` returns `Ok(0)` but still reports a closed or expired connection.
    pub fn write<'a>(
        &'a self,
        buf: &'a [u8],
    ) -> impl Future<Output = Result<usize, Error>> + Send + 'a {
        self.write_inner(buf, false, |n| n)
    }

    /// Writes all of `buf`, waiting for buffer space as needed. Go: `poll.FD.Write`.
    ///
    /// On failure, [`Error::transferred`] tells how many bytes the stack had accepted (they
    /// stay sent, `docs/semantics.md#timeout-does-not-poison`).
    pub fn write_all<'a>(
        &'a self,
        buf: &'a [u8],
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        self.write_inner(buf, true, |_| ())
    }

    /// The loop of `write` and `write_all`. `done` shapes the result here rather than in a
    /// wrapping `async fn`, which would store this future inside a second one.
    #[allow(clippy::manual_async_fn)] // See the module docs, "Future sizes".
    fn write_inner<'a, T: 'a>(
        &'a self,
        buf: &'a [u8],
        all: bool,
        done: impl FnOnce(usize) -> T + Send + 'a,
    ) -> impl Future<Output = Result<T, Error>> + Send + 'a {
        async move {
            let err = |k| Error::new(Op::Write, k);
            let fd = &*self.fd;
            if budget_spent(fd, Direction::Write) {
                netpoll_core::yield_now().await;
            }
            let _lock = fd.lock(Direction::Write).await.map_err(err)?;
            fd.pd.prepare(Direction::Write).map_err(|e| err(e.into()))?;
            let mut sent = 0;
            while sent < buf.len() {
                match fd.backend.try_write(&fd.socket, &buf[sent..]) {
                    Ok(0) => return Err(err(ErrorKind::BrokenPipe).with_transferred(sent)),
                    Ok(n) => {
                        sent += n;
                        // Relaxed: see `Fd::write_blocked`.
                        fd.write_blocked.store(false, Ordering::Relaxed);
                        if !all {
                            break;
                        }
                    }
                    Err(TryError::WouldBlock) => wait(fd, Direction::Write)
                        .await
                        .map_err(wait_error(Op::Write))
                        .map_err(|e| e.with_transferred(sent))?,
                    Err(TryError::Failed(k)) => return Err(err(k).with_transferred(sent)),
                }
            }
            Ok(done(sent))
        }
    }

    /// Shuts down the write half: the peer reads EOF, our later writes fail. Go: `CloseWrite`.
    pub fn shutdown_write(&self) -> Result<(), Error> {
        self.shutdown(Shutdown::Write)
    }

    /// Shuts down the read half: later reads return `Ok(0)` at once, and a blocked read wakes.
    /// Go: `CloseRead`.
    pub fn shutdown_read(&self) -> Result<(), Error> {
        self.shutdown(Shutdown::Read)
    }

    fn shutdown(&self, how: Shutdown) -> Result<(), Error> {
        with_ref(&self.fd, Op::Shutdown, |b, s| {
            if how == Shutdown::Read {
                // Reads end now; never wait for an edge first (Relaxed: see `Fd::read_drained`).
                self.fd.read_drained.store(false, Ordering::Relaxed);
            }
            b.shutdown(s, how)
        })
    }

    /// Sets the read deadline (`None`: none). A deadline at or before now expires at once;
    /// expiry is sticky until the next call. Go: `SetReadDeadline`.
    pub fn set_read_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
        set_deadline(&self.fd, &[Direction::Read], deadline)
    }

    /// Sets the write deadline. Go: `SetWriteDeadline`.
    pub fn set_write_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
        set_deadline(&self.fd, &[Direction::Write], deadline)
    }

    /// Sets both deadlines. Go: `SetDeadline`.
    pub fn set_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
        set_deadline(&self.fd, &Direction::BOTH, deadline)
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        with_ref(&self.fd, Op::Get, |b, s| b.local_addr(s))
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        with_ref(&self.fd, Op::Get, |b, s| b.peer_addr(s))
    }

    /// Turns `TCP_NODELAY` on or off (on by default, as in Go).
    pub fn set_nodelay(&self, nodelay: bool) -> Result<(), Error> {
        with_ref(&self.fd, Op::Set, |b, s| b.set_nodelay(s, nodelay))
    }

    /// Whether `TCP_NODELAY` is on.
    pub fn nodelay(&self) -> Result<bool, Error> {
        with_ref(&self.fd, Op::Get, |b, s| b.nodelay(s))
    }

    /// Closes the connection (FIN), waking blocked operations with a closed error; completes
    /// once they returned and the socket is released. A second close fails with a closed error.
    pub async fn close(&self) -> Result<(), Error> {
        self.fd
            .close(false)
            .await
            .map_err(|k| Error::new(Op::Close, k))
    }

    /// Closes the connection with a reset instead of a FIN (Go: `SetLinger(0)` + `Close`); the
    /// peer's reads fail with [`ErrorKind::ConnectionReset`].
    pub async fn abort(&self) -> Result<(), Error> {
        self.fd
            .close(true)
            .await
            .map_err(|k| Error::new(Op::Close, k))
    }

    /// The scheduler this stream is polled by.
    pub fn handle(&self) -> &Handle {
        self.fd.backend.handle()
    }
}

/// The future of [`TcpStream::readable`].
///
/// Written by hand rather than as an `async fn` because it is what every idle connection's
/// task holds: 16 bytes, where the `async fn` stored the lock, the guard and the wait side by
/// side (64).
#[must_use = "futures do nothing unless polled"]
pub struct Readable<'a, B: SocketBackend> {
    fd: &'a Fd<B>,
    step: ReadableStep,
}

#[derive(Debug, Clone, Copy)]
enum ReadableStep {
    /// First poll: counts against the cooperative budget (a loop of `readable` and `try_read`
    /// never waits while data keeps coming), and yields once when it is spent.
    Start,
    /// Taking the read lock; `holds_ref` once queued with a reference (see `Fd::poll_lock`).
    Lock {
        holds_ref: bool,
    },
    /// Holding the read lock, waiting for the next edge; `parked` after a `Pending` wait.
    Edge {
        parked: bool,
    },
    Done,
}

impl<B: SocketBackend> fmt::Debug for Readable<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readable")
            .field("key", &self.fd.pd.key())
            .field("step", &self.step)
            .finish()
    }
}

impl<B: SocketBackend> Future for Readable<'_, B> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let fd = this.fd;
        if let ReadableStep::Start = this.step {
            this.step = ReadableStep::Lock { holds_ref: false };
            if budget_spent(fd, Direction::Read) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if let ReadableStep::Lock { mut holds_ref } = this.step {
            let locked = fd.poll_lock(Direction::Read, &mut holds_ref, cx);
            this.step = ReadableStep::Lock { holds_ref };
            match locked {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(k)) => {
                    this.step = ReadableStep::Done;
                    return Poll::Ready(Err(Error::new(Op::Read, k)));
                }
                Poll::Ready(Ok(())) => {}
            }
            // We hold the read lock from here on.
            match must_wait_for_edge(fd) {
                Ok(true) => {
                    reset_budget(fd, Direction::Read);
                    this.step = ReadableStep::Edge { parked: false };
                }
                done => {
                    this.step = ReadableStep::Done;
                    fd.unlock(Direction::Read);
                    return Poll::Ready(done.map(|_| ()));
                }
            }
        }
        match this.step {
            ReadableStep::Edge { .. } => {
                let handle = fd.backend.handle().io();
                let Poll::Ready(waited) = handle.poll_wait(&fd.pd, Direction::Read, cx) else {
                    this.step = ReadableStep::Edge { parked: true };
                    return Poll::Pending;
                };
                this.step = ReadableStep::Done;
                if waited.is_ok() {
                    // The edge is consumed: the next read must try, not wait for another.
                    // Relaxed: see `Fd::read_drained`.
                    fd.read_drained.store(false, Ordering::Relaxed);
                }
                fd.unlock(Direction::Read);
                Poll::Ready(waited.map_err(wait_error(Op::Read)))
            }
            ReadableStep::Start | ReadableStep::Lock { .. } => {
                unreachable!("readable: first steps handled above")
            }
            ReadableStep::Done => panic!("`Readable` polled after completion"),
        }
    }
}

impl<B: SocketBackend> Drop for Readable<'_, B> {
    fn drop(&mut self) {
        match &mut self.step {
            ReadableStep::Lock { holds_ref } => self.fd.drop_queued(holds_ref),
            ReadableStep::Edge { parked } => {
                if *parked {
                    self.fd
                        .backend
                        .handle()
                        .io()
                        .cancel_wait(&self.fd.pd, Direction::Read);
                }
                self.fd.unlock(Direction::Read);
            }
            ReadableStep::Start | ReadableStep::Done => {}
        }
    }
}
