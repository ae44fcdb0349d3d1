//! The echo server of `netpoll echo`, written once over any [`SocketBackend`] so that the
//! command (kernel sockets or smoltcp over TAP) and the UEFI guest (smoltcp over virtio-net)
//! run the same loop.
//!
//! * One task per connection. It waits in [`TcpStream::poll_read_ready`], reads what is
//!   there into a buffer of [`EchoOptions::buf_size`] bytes and writes it back; only a reply
//!   the socket cannot take at once waits for room, in a boxed future, so an idle connection
//!   holds no buffer (its task is 32 bytes).
//! * End of stream (the peer's FIN, a half-close) ends the connection once everything read
//!   was written back: the server closes, so the peer receives all its bytes, then EOF.
//! * A reset or broken pipe from the peer is counted ([`EchoStats::resets`]) and logged at
//!   debug level (normal for a server); other connection errors are counted and logged as
//!   warnings. No connection error stops the server.
//! * At most [`EchoOptions::max_connections`] connections are served at once; one more is
//!   reset at once, with a warning (at most one a second), so memory stays bounded.
//! * A failed `accept` (out of descriptors or buffers) backs off, 5 ms doubling to 500 ms,
//!   logs an error (at most one a second) and keeps serving (as Go's `net/http`).
//!
//! Log lines go to the `log` facade, under [`EchoOptions::log_target`]: whatever logger the
//! program installed (`env_logger` in the command, the UEFI console in the guest), or nowhere.
//!
//! ```
//! use netpoll_stack::echo::{EchoOptions, EchoServer};
//! use netpoll_stack::{SocketBackend, TcpListener};
//!
//! async fn run<B: SocketBackend>(backend: &B) {
//!     let listener = TcpListener::bind(backend, "127.0.0.1:9009".parse().unwrap()).unwrap();
//!     let server = EchoServer::new(EchoOptions::default());
//!     // Returns once the listener is closed.
//!     server.serve(&listener).await;
//!     let stats = server.stats();
//!     let _ = (stats.accepted, stats.resets);
//! }
//! ```

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use netpoll_core::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use netpoll_core::{Handle, Instant};

use crate::error::{Error, ErrorKind};
use crate::tcp::{TcpListener, TcpStream};
use netpoll_core::backend::SocketBackend;

/// Reads of up to this many bytes use a buffer on the stack of the call that echoes them
/// (no allocation per message, and an idle connection holds none); larger `buf_size`s are
/// lent from the server's spare buffers for one message at a time.
const STACK_BUF: usize = 4096;
/// Spare large buffers kept beyond those in use; more are freed.
const SPARE_BUFS: usize = 64;
/// The stack buffer for the default `buf_size` (128), so that small messages do not clear
/// 4 KiB each.
const SMALL_BUF: usize = 256;

/// First and longest pause of the accept loop after a failed accept (Go's `net/http` uses
/// 5 ms doubling to 1 s). Out of descriptors, retrying at once only spins; a short cap still
/// resumes soon after descriptors are freed.
pub const ACCEPT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(5), Duration::from_millis(500));

/// How the echo server behaves.
#[derive(Debug, Clone, Copy)]
pub struct EchoOptions {
    /// Most bytes read (and echoed) per message. Default 128.
    pub buf_size: usize,
    /// Most connections served at once; past it a new connection is reset. Default: no limit
    /// (`usize::MAX`); set it where memory is fixed (a guest without swap).
    pub max_connections: usize,
    /// Keep a list of open connections, so that [`EchoServer::take_open`] can close them at
    /// shutdown (a userspace stack's sockets are not closed by any kernel when the program
    /// ends). Costs one list entry per connection.
    pub track_connections: bool,
    /// The `log` target of the server's lines, which log filters name. Default: this module
    /// (`netpoll_stack::echo`); `netpoll echo` uses its own (`netpoll::echo`).
    pub log_target: &'static str,
}

impl Default for EchoOptions {
    fn default() -> Self {
        EchoOptions {
            buf_size: 128,
            max_connections: usize::MAX,
            track_connections: false,
            log_target: module_path!(),
        }
    }
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// Connections accepted (including those refused for the limit).
    pub accepted: u64,
    /// Connections that ended with a reset or broken pipe from the peer.
    pub resets: u64,
    /// Connections that ended with any other error.
    pub errors: u64,
    /// Connections reset at once because [`EchoOptions::max_connections`] were open.
    pub refused: u64,
    /// `accept` calls that failed (and were retried after a pause).
    pub accept_errors: u64,
    /// Connections being served now.
    pub active: usize,
}

/// At most one log line per `interval` for a repeating event; the next line printed says how
/// many were left out.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// The event happened at `now`: `Some(n)` if a line may be logged (`n` left out since
    /// the last one), `None` if this one is left out.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(core::mem::take(&mut self.suppressed))
    }
}

/// " (N more since the last report)", or nothing.
struct LeftOut(u64);

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more since the last report)"),
        }
    }
}

/// State shared by the accept loop and every connection task.
struct Shared<B: SocketBackend> {
    options: EchoOptions,
    accepted: AtomicU64,
    resets: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    active: AtomicUsize,
    /// The server is closing every connection: the errors that causes are its own doing.
    shutting_down: AtomicBool,
    /// Open connections (with `track_connections`), and the length at which the list is next
    /// pruned of closed ones.
    open: spin::Mutex<(Vec<TcpStream<B>>, usize)>,
    /// Buffers of `buf_size` bytes not lent out (only when `buf_size` > [`STACK_BUF`]).
    spare: spin::Mutex<Vec<Box<[u8]>>>,
}

impl<B: SocketBackend> Shared<B> {
    /// A buffer of `buf_size` bytes for one message.
    fn lend(&self) -> Box<[u8]> {
        let spare = self.spare.lock().pop();
        spare.unwrap_or_else(|| vec![0u8; self.options.buf_size].into_boxed_slice())
    }

    /// Takes back a buffer from [`Shared::lend`].
    fn give_back(&self, buf: Box<[u8]>) {
        let mut spare = self.spare.lock();
        if spare.len() < SPARE_BUFS {
            spare.push(buf);
        }
    }
}

/// An echo server: counters, options, and (optionally) the open connections. Cloning gives
/// another handle to the same server.
pub struct EchoServer<B: SocketBackend> {
    shared: Arc<Shared<B>>,
}

impl<B: SocketBackend> Clone for EchoServer<B> {
    fn clone(&self) -> Self {
        EchoServer {
            shared: self.shared.clone(),
        }
    }
}

impl<B: SocketBackend> fmt::Debug for EchoServer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoServer")
            .field("options", &self.shared.options)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Whether the connection was closed (by its task, or by shutdown).
pub fn is_closed<B: SocketBackend>(conn: &TcpStream<B>) -> bool {
    matches!(conn.peer_addr(), Err(e) if e.kind() == ErrorKind::Closed)
}

impl<B: SocketBackend> EchoServer<B> {
    /// A server with `options` (a `buf_size` or `max_connections` of 0 is taken as 1).
    pub fn new(mut options: EchoOptions) -> Self {
        options.buf_size = options.buf_size.max(1);
        options.max_connections = options.max_connections.max(1);
        EchoServer {
            shared: Arc::new(Shared {
                options,
                accepted: AtomicU64::new(0),
                resets: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                accept_errors: AtomicU64::new(0),
                active: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                open: spin::Mutex::new((Vec::new(), 64)),
                spare: spin::Mutex::new(Vec::new()),
            }),
        }
    }

    /// The options the server runs with.
    pub fn options(&self) -> &EchoOptions {
        &self.shared.options
    }

    /// The counters now.
    pub fn stats(&self) -> EchoStats {
        let s = &*self.shared;
        // Relaxed: statistics; nothing is published through them.
        EchoStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            resets: s.resets.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            accept_errors: s.accept_errors.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed),
        }
    }

    /// From now on, connection errors are neither logged nor counted: the caller is closing
    /// the connections itself.
    pub fn begin_shutdown(&self) {
        // Relaxed: a flag that only silences logging.
        self.shared.shutting_down.store(true, Ordering::Relaxed);
    }

    /// The connections not closed yet, leaving the list empty (empty unless
    /// [`EchoOptions::track_connections`]).
    pub fn take_open(&self) -> Vec<TcpStream<B>> {
        let mut conns = core::mem::take(&mut self.shared.open.lock().0);
        conns.retain(|c| !is_closed(c));
        conns
    }

    /// Accepts connections and spawns a task echoing each, until the listener is closed.
    pub async fn serve(&self, listener: &TcpListener<B>) {
        let handle = listener.handle().clone();
        let s = &*self.shared;
        let mut backoff = Duration::ZERO;
        let mut accept_limit = RateLimit::new(Duration::from_secs(1));
        let mut refuse_limit = RateLimit::new(Duration::from_secs(1));
        loop {
            match listener.accept().await {
                Ok((conn, peer)) => {
                    log::debug!(target: s.options.log_target, "accepted a connection from {peer}");
                    backoff = Duration::ZERO;
                    // Relaxed: statistics, and a bound checked by this loop alone (the tasks
                    // only decrement it).
                    s.accepted.fetch_add(1, Ordering::Relaxed);
                    if s.active.load(Ordering::Relaxed) >= s.options.max_connections {
                        s.refused.fetch_add(1, Ordering::Relaxed);
                        if let Some(left_out) = refuse_limit.allow(handle.now()) {
                            log::warn!(
                                target: s.options.log_target,
                                "{} connections open (the limit): refusing {peer} with a \
                                 reset{}",
                                s.options.max_connections,
                                LeftOut(left_out)
                            );
                        }
                        let _ = conn.abort().await;
                        continue;
                    }
                    handle.spawn(self.connection(conn));
                }
                Err(e) if e.kind() == ErrorKind::Closed => return,
                Err(e) => {
                    s.accept_errors.fetch_add(1, Ordering::Relaxed);
                    backoff = (backoff * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
                    if let Some(left_out) = accept_limit.allow(handle.now()) {
                        // An error, not a warning: the server cannot take new clients meanwhile.
                        log::error!(
                            target: s.options.log_target,
                            "accept: {e}; retrying in {backoff:?}{}",
                            LeftOut(left_out)
                        );
                    }
                    handle.sleep(backoff).await;
                }
            }
        }
    }

    /// The task that echoes `conn` until it ends, then closes it, counted among the active
    /// connections from now on (the accept loop spawns one per connection; a program that
    /// accepts by itself can spawn it too). Its future is what an idle connection costs
    /// besides its socket: a few words.
    pub fn connection(&self, conn: TcpStream<B>) -> impl Future<Output = ()> + Send + 'static {
        // Relaxed: see `serve`.
        self.shared.active.fetch_add(1, Ordering::Relaxed);
        if self.shared.options.track_connections {
            self.track(conn.clone());
        }
        echo_conn(self.shared.clone(), conn)
    }

    fn track(&self, conn: TcpStream<B>) {
        let mut guard = self.shared.open.lock();
        let (conns, prune_at) = &mut *guard;
        if conns.len() >= *prune_at {
            conns.retain(|c| !is_closed(c));
            *prune_at = (conns.len() * 2).max(64);
        }
        conns.push(conn);
    }
}

/// Ends every connection of `server` that is still open, for a program about to stop: a FIN
/// to each (clients read EOF), then a reset for those still open after `grace`. Returns
/// (connections closed, of which reset). Needs [`EchoOptions::track_connections`].
pub async fn close_all<B: SocketBackend>(
    server: &EchoServer<B>,
    handle: &Handle,
    grace: Duration,
) -> (usize, usize) {
    server.begin_shutdown();
    let conns = server.take_open();
    for c in &conns {
        let _ = c.shutdown_write();
    }
    // Clients that close on EOF end their connection's task.
    wait_until(handle, grace, || conns.iter().all(is_closed)).await;
    let mut reset = 0;
    for c in &conns {
        if !is_closed(c) && c.abort().await.is_ok() {
            reset += 1;
        }
    }
    (conns.len(), reset)
}

/// Polls `done` every 10 ms until it holds or `limit` passed; returns whether it held.
pub async fn wait_until(handle: &Handle, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = handle.now() + limit;
    while !done() {
        if handle.now() >= deadline {
            return false;
        }
        handle.sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Decrements the active count when a connection's task ends, however it ends.
struct Active<B: SocketBackend>(Arc<Shared<B>>);

impl<B: SocketBackend> Drop for Active<B> {
    fn drop(&mut self) {
        // Relaxed: see `serve`.
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts and logs a connection's error, naming its peer if the socket still knows it (after
/// a reset it may not): a reset by the peer at debug level (it is normal for a server, and
/// counted), anything else as a warning. The address is looked up here rather than kept in
/// every connection's task.
fn report<B: SocketBackend>(s: &Shared<B>, conn: &TcpStream<B>, e: Error) {
    // Relaxed: statistics and a flag that only silences logging.
    if s.shutting_down.load(Ordering::Relaxed) {
        return;
    }
    let level = if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) {
        s.resets.fetch_add(1, Ordering::Relaxed);
        log::Level::Debug
    } else {
        s.errors.fetch_add(1, Ordering::Relaxed);
        log::Level::Warn
    };
    let target = s.options.log_target;
    if !log::log_enabled!(target: target, level) {
        return;
    }
    match conn.peer_addr() {
        Ok(peer) => log::log!(target: target, level, "connection from {peer}: {e}"),
        Err(_) => log::log!(target: target, level, "connection: {e}"),
    }
}

/// Logs the end of a connection (debug level), outside `echo_conn` so that its task stays
/// small.
fn log_closed<B: SocketBackend>(target: &str, conn: &TcpStream<B>) {
    if !log::log_enabled!(target: target, log::Level::Debug) {
        return;
    }
    match conn.peer_addr() {
        Ok(peer) => log::debug!(target: target, "connection from {peer} closed"),
        // After a reset the socket may no longer know its peer.
        Err(_) => log::debug!(target: target, "connection closed"),
    }
}

/// The task that echoes one connection until it ends, then closes it.
///
/// Written by hand rather than as an `async` block: while idle it holds the stream, the
/// server and an empty slot (32 bytes). It waits with [`TcpStream::poll_read_ready`], which
/// keeps no state across `Pending`, so no wait future is stored; an `async` block awaiting
/// `readable` stores that future and its own state tag besides, one word more for every idle
/// connection. Only a reply the socket cannot take at once, or the final close, waits in a
/// boxed future in `pending`.
struct EchoConn<B: SocketBackend> {
    conn: TcpStream<B>,
    active: Active<B>,
    pending: Option<Pending>,
}

/// What a connection waits for besides readability: the rest of a reply, or its close.
type Pending = Pin<Box<dyn Future<Output = Result<Next, Error>> + Send>>;

/// What a connection does once its pending future is done.
enum Next {
    /// Waits for the next message.
    Read,
    /// Nothing: it is closed.
    Finished,
}

fn echo_conn<B: SocketBackend>(shared: Arc<Shared<B>>, conn: TcpStream<B>) -> EchoConn<B> {
    EchoConn {
        conn,
        active: Active(shared),
        pending: None,
    }
}

impl<B: SocketBackend> EchoConn<B> {
    /// Logs the end of the connection and starts closing it.
    fn finish(&mut self) -> Pending {
        log_closed(self.active.0.options.log_target, &self.conn);
        let conn = self.conn.clone();
        Box::pin(async move {
            let _ = conn.close().await;
            Ok(Next::Finished)
        })
    }
}

impl<B: SocketBackend> Future for EchoConn<B> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Woken (or first polled) while not writing: the wake-up is most likely the readiness
        // this task parked for, so read at once; asking `poll_read_ready` first would take
        // the read lock once more per message. A spurious wake-up reads nothing and parks.
        let mut read_first = true;
        loop {
            if let Some(pending) = &mut this.pending {
                let next = core::task::ready!(pending.as_mut().poll(cx));
                this.pending = None;
                match next {
                    Ok(Next::Read) => {}
                    Ok(Next::Finished) => return Poll::Ready(()),
                    Err(e) => {
                        report(&this.active.0, &this.conn, e);
                        this.pending = Some(this.finish());
                        continue;
                    }
                }
            }
            let echoed = if core::mem::take(&mut read_first) {
                echo_now(&this.conn, &this.active.0)
            } else {
                core::task::ready!(this.conn.poll_read_ready(cx))
                    .and_then(|()| echo_now(&this.conn, &this.active.0))
            };
            match echoed {
                Ok(Echo::Done) => continue,
                Ok(Echo::Rest(rest)) => this.pending = Some(rest),
                Ok(Echo::End) => this.pending = Some(this.finish()),
                Err(e) => {
                    report(&this.active.0, &this.conn, e);
                    this.pending = Some(this.finish());
                }
            }
        }
    }
}

/// What `echo_now` did.
enum Echo {
    /// Echoed everything read (or nothing was there after all: the wake-up was a hint).
    Done,
    /// The peer closed its side.
    End,
    /// The socket took only part of the reply: the rest must wait for room.
    Rest(Pending),
}

/// Reads what is there and writes it back, without waiting. A plain function: the buffer
/// lives only in this call (or in the boxed rest).
fn echo_now<B: SocketBackend>(conn: &TcpStream<B>, shared: &Arc<Shared<B>>) -> Result<Echo, Error> {
    let buf_size = shared.options.buf_size;
    if buf_size <= SMALL_BUF {
        return echo_on_stack::<B, SMALL_BUF>(conn, buf_size);
    }
    if buf_size <= STACK_BUF {
        return echo_on_stack::<B, STACK_BUF>(conn, buf_size);
    }
    let mut buf = shared.lend();
    let echo = match echo_step(conn, &mut buf) {
        Ok(Step::Partial { sent, read }) => {
            let (conn, shared) = (conn.clone(), shared.clone());
            return Ok(Echo::Rest(Box::pin(async move {
                // The rest keeps the buffer rather than copying out of it.
                let written = conn.write_all(&buf[sent..read]).await;
                shared.give_back(buf);
                written.map(|()| Next::Read)
            })));
        }
        Ok(Step::Done) => Ok(Echo::Done),
        Ok(Step::End) => Ok(Echo::End),
        Err(e) => Err(e),
    };
    shared.give_back(buf);
    echo
}

/// [`echo_now`] with a buffer of `N` bytes on the stack, of which `buf_size` are used.
fn echo_on_stack<B: SocketBackend, const N: usize>(
    conn: &TcpStream<B>,
    buf_size: usize,
) -> Result<Echo, Error> {
    let mut buf = [0u8; N];
    match echo_step(conn, &mut buf[..buf_size])? {
        Step::Done => Ok(Echo::Done),
        Step::End => Ok(Echo::End),
        Step::Partial { sent, read } => {
            let (conn, rest) = (conn.clone(), buf[sent..read].to_vec());
            Ok(Echo::Rest(Box::pin(async move {
                conn.write_all(&rest).await.map(|()| Next::Read)
            })))
        }
    }
}

/// What one read and one write did.
enum Step {
    /// Echoed everything read, or nothing was there.
    Done,
    /// End of stream.
    End,
    /// Read `read` bytes, of which the socket took the first `sent`.
    Partial { sent: usize, read: usize },
}

/// One read into `buf` and one write of what it read.
fn echo_step<B: SocketBackend>(conn: &TcpStream<B>, buf: &mut [u8]) -> Result<Step, Error> {
    let read = match conn.try_read(buf) {
        Ok(0) => return Ok(Step::End),
        Ok(n) => n,
        // A hint, or another task reads this connection too.
        Err(e) if e.is_would_block() => return Ok(Step::Done),
        Err(e) => return Err(e),
    };
    let sent = match conn.try_write(&buf[..read]) {
        Ok(sent) => sent,
        Err(e) if e.is_would_block() => 0,
        Err(e) => return Err(e),
    };
    if sent == read {
        Ok(Step::Done)
    } else {
        Ok(Step::Partial { sent, read })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_one_line_per_interval_and_counts_the_rest() {
        let mut limit = RateLimit::new(Duration::from_secs(1));
        let t = |ms: u64| Instant::from_nanos(ms * 1_000_000);
        assert_eq!(limit.allow(t(0)), Some(0));
        // 100 failures a second, as a 10 ms retry loop makes.
        let logged: Vec<_> = (1..300).filter_map(|i| limit.allow(t(i * 10))).collect();
        assert_eq!(
            logged,
            [99, 99],
            "one line a second, each counting the lines left out"
        );
        assert_eq!(limit.allow(t(5000)), Some(99));
        assert_eq!(limit.allow(t(5001)), None);
    }
}
