//! Poll-based I/O on [`TcpStream`], and the async I/O traits other crates are written against.
//!
//! `poll_read`, `poll_write` and the readiness polls are the `read`/`write` loops cut at each
//! wait: every poll takes the direction's lock (fdMutex), checks the pollDesc (a closed or
//! expired connection fails before any I/O), tries the backend, and on `WouldBlock` parks the
//! task's waker on the pollDesc and returns `Pending`. So a deadline that fires while a
//! `poll_read` is pending wakes it, and the next poll fails with the timeout error; `close`
//! wakes it with the closed error, exactly as a pending `read` future.
//!
//! The lock is held only during a poll, not across `Pending`: a `poll_read` behind a `read`
//! future waits for it as a second `read` would, but a `read` that starts while a
//! `poll_read` is parked takes the wake-up over (as in tokio, only the last task to wait in a
//! direction is woken). One task per direction, which the traits' `&mut self`/`Pin<&mut
//! Self>` receivers make the usual case, never notices.
//!
//! Trait impls, each behind a feature of this crate (netpoll-hosted forwards them):
//! `futures-io` (`futures_io::AsyncRead`/`AsyncWrite`), `tokio` (`tokio::io::AsyncRead`/
//! `AsyncWrite`; only the traits, no tokio runtime) and `embedded-io-async`
//! (`embedded_io_async::Read`/`Write`, `no_std`). Each is implemented for `TcpStream` and for
//! `&TcpStream`, since netpoll's I/O takes `&self`: one task can read through one `&TcpStream`
//! while another writes through another.

use core::future::{poll_fn, Future};
use core::task::{Context, Poll};
use netpoll_core::sync::Ordering;

use super::{budget_spent, must_wait_for_edge, read_once, reset_budget, wait_error, TcpStream};
use crate::error::{Error, ErrorKind, Op, TryError};
use crate::fd::Fd;
use netpoll_core::backend::SocketBackend;
use netpoll_core::Direction;

/// The direction's lock (and a reference) for the rest of one poll.
struct Held<'a, B: SocketBackend> {
    fd: &'a Fd<B>,
    dir: Direction,
}

impl<B: SocketBackend> Drop for Held<'_, B> {
    fn drop(&mut self) {
        self.fd.unlock(self.dir);
    }
}

/// Takes the lock of `dir` for one poll, or queues the task's waker behind the holder. The
/// queued reference is given back at once: the waker stays queued, and the holder's unlock or
/// a close wakes the task to poll again (Go: `rwlock` parks on `rsema`/`wsema`).
fn poll_lock<'a, B: SocketBackend>(
    fd: &'a Fd<B>,
    dir: Direction,
    op: Op,
    cx: &mut Context<'_>,
) -> Poll<Result<Held<'a, B>, Error>> {
    let mut holds_ref = false;
    match fd.poll_lock(dir, &mut holds_ref, cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(Held { fd, dir })),
        Poll::Ready(Err(k)) => Poll::Ready(Err(Error::new(op, k))),
        Poll::Pending => {
            fd.drop_queued(&mut holds_ref);
            Poll::Pending
        }
    }
}

/// The cooperative budget of a poll: when spent, the task is woken and yields once.
fn poll_budget<B: SocketBackend>(fd: &Fd<B>, dir: Direction, cx: &mut Context<'_>) -> Poll<()> {
    if budget_spent(fd, dir) {
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    Poll::Ready(())
}

/// One poll of the pollDesc wait in `dir`, under its lock: `Ready(Ok)` means "retry".
fn poll_edge<B: SocketBackend>(
    fd: &Fd<B>,
    dir: Direction,
    op: Op,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    reset_budget(fd, dir);
    fd.backend
        .handle()
        .io()
        .poll_wait(&fd.pd, dir, cx)
        .map_err(wait_error(op))
}

/// One write attempt under the write lock; records for `writable` whether the send buffer
/// was full. Zero bytes accepted for a non-empty `buf` is a broken pipe.
pub(super) fn write_once<B: SocketBackend>(fd: &Fd<B>, buf: &[u8]) -> Result<usize, TryError> {
    let written = match fd.backend.try_write(&fd.socket, buf) {
        Ok(0) => Err(TryError::Failed(ErrorKind::BrokenPipe)),
        other => other,
    };
    // Relaxed: see `Fd::write_blocked`.
    let blocked = matches!(written, Err(TryError::WouldBlock));
    fd.write_blocked.store(blocked, Ordering::Relaxed);
    written
}

impl<B: SocketBackend> TcpStream<B> {
    /// Polls for data: `Ready(Ok(n))` as [`read`](Self::read) returns (`Ok(0)`: end of
    /// stream, or an empty `buf`), `Pending` with the task's waker parked until data, end of
    /// stream, an error, a read deadline or `close` comes. A fired read deadline fails it with
    /// [`Error::is_timeout`], a close with [`Error::is_closed`]. tokio: `TcpStream::poll_read`
    /// of its `AsyncRead`.
    ///
    /// Each poll takes the read lock only for its attempt: a `poll_read` behind a pending
    /// `read` waits for it, but a `read` that starts while a `poll_read` is parked takes the
    /// wake-up over (as in tokio, only the last task to wait in a direction is woken). One
    /// reading task per stream never notices.
    ///
    /// ```
    /// use core::future::poll_fn;
    /// use netpoll_stack::{Error, SocketBackend, TcpStream};
    ///
    /// async fn read_some<B: SocketBackend>(s: &TcpStream<B>) -> Result<Vec<u8>, Error> {
    ///     let mut buf = [0u8; 512];
    ///     let n = poll_fn(|cx| s.poll_read(cx, &mut buf)).await?;
    ///     Ok(buf[..n].to_vec())
    /// }
    /// ```
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, Error>> {
        let fd = &*self.fd;
        let dir = Direction::Read;
        core::task::ready!(poll_budget(fd, dir, cx));
        let _held = core::task::ready!(poll_lock(fd, dir, Op::Read, cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut wait_first = must_wait_for_edge(fd)?;
        loop {
            if wait_first {
                core::task::ready!(poll_edge(fd, dir, Op::Read, cx))?;
            }
            match read_once(fd, buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(TryError::WouldBlock) => wait_first = true,
                Err(TryError::Failed(k)) => return Poll::Ready(Err(Error::new(Op::Read, k))),
            }
        }
    }

    /// Polls for room to write: `Ready(Ok(n))` once the socket took `n > 0` bytes of `buf`
    /// (as [`write`](Self::write); `Ok(0)` only for an empty `buf`), `Pending` with the task's
    /// waker parked until the send buffer has room, a write deadline fires or `close` comes.
    /// Fails as `write` would on a closed connection or an expired write deadline.
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Error>> {
        let fd = &*self.fd;
        let dir = Direction::Write;
        core::task::ready!(poll_budget(fd, dir, cx));
        let _held = core::task::ready!(poll_lock(fd, dir, Op::Write, cx))?;
        fd.pd.prepare(dir).map_err(wait_error(Op::Write))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match write_once(fd, buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(TryError::WouldBlock) => {
                    core::task::ready!(poll_edge(fd, dir, Op::Write, cx))?;
                }
                Err(TryError::Failed(k)) => return Poll::Ready(Err(Error::new(Op::Write, k))),
            }
        }
    }

    /// Flushing: netpoll keeps no write buffer (every `write` hands its bytes to the socket),
    /// so this is ready at once; it fails only on a closed connection.
    pub fn poll_flush(&self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(
            self.fd
                .incref()
                .map(drop)
                .map_err(|k| Error::new(Op::Write, k)),
        )
    }

    /// Shuts down the write half ([`shutdown_write`](Self::shutdown_write)): the peer reads
    /// end of stream. Ready at once. What the traits' `poll_shutdown`/`poll_close` do; the
    /// socket itself is released by [`close`](Self::close) or dropping the last clone.
    pub fn poll_shutdown(&self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(self.shutdown_write())
    }

    /// Polls until a read can make progress, as [`readable`](Self::readable) without holding
    /// the read lock across `Pending`: then [`try_read`](Self::try_read). Fails on a closed
    /// connection or an expired read deadline; a wake-up is a hint.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let fd = &*self.fd;
        let dir = Direction::Read;
        core::task::ready!(poll_budget(fd, dir, cx));
        let _held = core::task::ready!(poll_lock(fd, dir, Op::Read, cx))?;
        if must_wait_for_edge(fd)? {
            core::task::ready!(poll_edge(fd, dir, Op::Read, cx))?;
            // The edge is consumed: the next read must try, not wait for another.
            // Relaxed: see `Fd::read_drained`.
            fd.read_drained.store(false, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }

    /// Polls until a write can make progress: ready at once unless the last
    /// [`try_write`](Self::try_write) or `poll_write` found the send buffer full, then when
    /// the socket reports room. Fails on a closed connection or an expired write deadline; a
    /// wake-up is a hint (the `try_write` that follows may still say `WouldBlock`).
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let fd = &*self.fd;
        let dir = Direction::Write;
        let _held = core::task::ready!(poll_lock(fd, dir, Op::Write, cx))?;
        // Unlike `prepare`, keep a latched readiness: it may be the edge we would wait for.
        fd.pd.check_err(dir).map_err(wait_error(Op::Write))?;
        // Relaxed: see `Fd::write_blocked`.
        if fd.write_blocked.load(Ordering::Relaxed) {
            core::task::ready!(poll_edge(fd, dir, Op::Write, cx))?;
            fd.write_blocked.store(false, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }

    /// Waits until a write can make progress ([`poll_write_ready`](Self::poll_write_ready)
    /// as a future): with [`try_write`](Self::try_write), a writer that holds no future
    /// across its waits. tokio: `TcpStream::writable`.
    ///
    /// ```
    /// use netpoll_stack::{Error, SocketBackend, TcpStream};
    ///
    /// async fn send_all<B: SocketBackend>(s: &TcpStream<B>, mut data: &[u8]) -> Result<(), Error> {
    ///     while !data.is_empty() {
    ///         s.writable().await?;
    ///         match s.try_write(data) {
    ///             Ok(n) => data = &data[n..],
    ///             Err(e) if e.is_would_block() => continue,
    ///             Err(e) => return Err(e),
    ///         }
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn writable(&self) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        poll_fn(move |cx| self.poll_write_ready(cx))
    }
}

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
impl Error {
    /// The netpoll error of an `std::io::Error`, as operation `op`: the original error when
    /// `e` wraps one (every `From<Error> for std::io::Error` does, so a round trip loses
    /// nothing, the operation included), else `e`'s kind mapped back (`TimedOut` is a
    /// timeout, `WouldBlock` a would-block, kinds netpoll has no name for are `Unsupported`).
    ///
    /// ```
    /// use netpoll_stack::{Error, ErrorKind, Op};
    ///
    /// let timeout = Error::new(Op::Read, ErrorKind::TimedOut);
    /// let io: std::io::Error = timeout.into();
    /// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    /// assert_eq!(Error::from_io(Op::Write, &io), timeout);
    ///
    /// let other = std::io::Error::from(std::io::ErrorKind::TimedOut);
    /// assert!(Error::from_io(Op::Write, &other).is_timeout());
    /// ```
    pub fn from_io(op: Op, e: &std::io::Error) -> Error {
        if let Some(original) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            return *original;
        }
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::TimedOut => ErrorKind::TimedOut,
            K::ConnectionReset => ErrorKind::ConnectionReset,
            K::ConnectionRefused => ErrorKind::ConnectionRefused,
            K::ConnectionAborted => ErrorKind::ConnectionAborted,
            K::BrokenPipe | K::WriteZero => ErrorKind::BrokenPipe,
            K::NotConnected => ErrorKind::NotConnected,
            K::AddrInUse => ErrorKind::AddrInUse,
            K::AddrNotAvailable => ErrorKind::AddrNotAvailable,
            K::HostUnreachable => ErrorKind::HostUnreachable,
            K::NetworkUnreachable => ErrorKind::NetworkUnreachable,
            K::InvalidInput => ErrorKind::InvalidInput,
            K::OutOfMemory => ErrorKind::OutOfResources,
            K::WouldBlock => ErrorKind::WouldBlock,
            _ => ErrorKind::Unsupported,
        };
        Error::new(op, kind)
    }
}

#[cfg(feature = "futures-io")]
mod futures_io_impls {
    use super::std::io;
    use core::pin::Pin;
    use core::task::{Context, Poll};

    use super::TcpStream;
    use netpoll_core::backend::SocketBackend;

    macro_rules! futures_io_for {
        ($ty:ty) => {
            /// Reads with [`TcpStream::poll_read`]; errors convert to `std::io::Error`
            /// (a deadline is `TimedOut`).
            impl<B: SocketBackend> futures_io::AsyncRead for $ty {
                fn poll_read(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                    buf: &mut [u8],
                ) -> Poll<io::Result<usize>> {
                    TcpStream::poll_read(&self, cx, buf).map_err(Into::into)
                }
            }

            /// Writes with [`TcpStream::poll_write`]; `poll_close` shuts down the write half.
            impl<B: SocketBackend> futures_io::AsyncWrite for $ty {
                fn poll_write(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                    buf: &[u8],
                ) -> Poll<io::Result<usize>> {
                    TcpStream::poll_write(&self, cx, buf).map_err(Into::into)
                }

                fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                    TcpStream::poll_flush(&self, cx).map_err(Into::into)
                }

                fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                    TcpStream::poll_shutdown(&self, cx).map_err(Into::into)
                }
            }
        };
    }

    futures_io_for!(TcpStream<B>);
    futures_io_for!(&TcpStream<B>);
}

#[cfg(feature = "tokio")]
mod tokio_impls {
    use super::std::io;
    use core::pin::Pin;
    use core::task::{Context, Poll};
    use tokio::io::ReadBuf;

    use super::TcpStream;
    use netpoll_core::backend::SocketBackend;

    /// [`TcpStream::poll_read`] into the unfilled part of a `ReadBuf`.
    fn poll_read_buf<B: SocketBackend>(
        stream: &TcpStream<B>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Zeroes the uninitialized tail once; `ReadBuf` remembers it is initialized.
        let n = core::task::ready!(stream.poll_read(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }

    macro_rules! tokio_io_for {
        ($ty:ty) => {
            /// Reads with [`TcpStream::poll_read`]; errors convert to `std::io::Error`
            /// (a deadline is `TimedOut`).
            impl<B: SocketBackend> tokio::io::AsyncRead for $ty {
                fn poll_read(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                    buf: &mut ReadBuf<'_>,
                ) -> Poll<io::Result<()>> {
                    poll_read_buf(&self, cx, buf)
                }
            }

            /// Writes with [`TcpStream::poll_write`]; `poll_shutdown` shuts down the write
            /// half.
            impl<B: SocketBackend> tokio::io::AsyncWrite for $ty {
                fn poll_write(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                    buf: &[u8],
                ) -> Poll<io::Result<usize>> {
                    TcpStream::poll_write(&self, cx, buf).map_err(Into::into)
                }

                fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                    TcpStream::poll_flush(&self, cx).map_err(Into::into)
                }

                fn poll_shutdown(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                ) -> Poll<io::Result<()>> {
                    TcpStream::poll_shutdown(&self, cx).map_err(Into::into)
                }
            }
        };
    }

    tokio_io_for!(TcpStream<B>);
    tokio_io_for!(&TcpStream<B>);
}

#[cfg(feature = "embedded-io-async")]
mod embedded_io_impls {
    use super::TcpStream;
    use crate::error::{Error, ErrorKind};
    use netpoll_core::backend::SocketBackend;

    /// Maps onto embedded-io's kinds: a local close is `NotConnected` (as for
    /// `std::io::Error`), a deadline `TimedOut`; kinds embedded-io has no name for are `Other`.
    impl embedded_io::Error for Error {
        fn kind(&self) -> embedded_io::ErrorKind {
            use embedded_io::ErrorKind as K;
            match Error::kind(self) {
                ErrorKind::Closed | ErrorKind::NotConnected => K::NotConnected,
                ErrorKind::TimedOut => K::TimedOut,
                ErrorKind::ConnectionReset => K::ConnectionReset,
                ErrorKind::ConnectionRefused => K::ConnectionRefused,
                ErrorKind::ConnectionAborted => K::ConnectionAborted,
                ErrorKind::BrokenPipe => K::BrokenPipe,
                ErrorKind::AddrInUse => K::AddrInUse,
                ErrorKind::AddrNotAvailable => K::AddrNotAvailable,
                ErrorKind::InvalidInput => K::InvalidInput,
                ErrorKind::OutOfResources => K::OutOfMemory,
                ErrorKind::Unsupported => K::Unsupported,
                _ => K::Other,
            }
        }
    }

    macro_rules! embedded_io_for {
        ($ty:ty) => {
            /// netpoll's [`Error`]: the failed operation and why.
            impl<B: SocketBackend> embedded_io_async::ErrorType for $ty {
                type Error = Error;
            }

            /// [`TcpStream::read`]: waits for data; `Ok(0)` is end of stream.
            impl<B: SocketBackend> embedded_io_async::Read for $ty {
                async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
                    TcpStream::read(self, buf).await
                }
            }

            /// [`TcpStream::write`] and [`TcpStream::write_all`]; `flush` has nothing to do
            /// (netpoll keeps no write buffer) beyond reporting a closed connection.
            impl<B: SocketBackend> embedded_io_async::Write for $ty {
                async fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
                    TcpStream::write(self, buf).await
                }

                async fn write_all(&mut self, buf: &[u8]) -> Result<(), Error> {
                    TcpStream::write_all(self, buf).await
                }

                async fn flush(&mut self) -> Result<(), Error> {
                    core::future::poll_fn(|cx| TcpStream::poll_flush(self, cx)).await
                }
            }
        };
    }

    embedded_io_for!(TcpStream<B>);
    embedded_io_for!(&TcpStream<B>);
}
