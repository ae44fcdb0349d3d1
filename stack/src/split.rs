//! Read and write halves of a [`TcpStream`], for code written against tokio's
//! `TcpStream::split` / `into_split`.
//!
//! netpoll does not need them: every operation takes `&self` and runs under the direction's
//! own lock (Go's fdMutex), so one task may read through `&stream` while another writes
//! through `&stream` or a clone (`TcpStream` is `Clone`, an `Arc` inside, like Go's
//! `*net.TCPConn` shared between goroutines). The halves only narrow that handle to one
//! direction's operations:
//!
//! * [`TcpStream::split`] borrows: [`ReadHalf`] and [`WriteHalf`], both `Copy`, for two
//!   futures in one task (`join!`-style code).
//! * [`TcpStream::into_split`] owns: [`OwnedReadHalf`] and [`OwnedWriteHalf`], each `'static`,
//!   for two spawned tasks. Dropping the write half shuts the write direction down (the peer
//!   reads EOF), as tokio's does; [`OwnedWriteHalf::forget`] skips that.
//!   [`OwnedReadHalf::reunite`] puts the stream back together.
//!
//! ```
//! use netpoll_stack::split::{OwnedReadHalf, OwnedWriteHalf};
//! use netpoll_stack::{SocketBackend, TcpStream};
//!
//! /// Forwards bytes both ways between two connections, one task per direction.
//! async fn proxy<B: SocketBackend>(client: TcpStream<B>, server: TcpStream<B>) {
//!     let handle = client.handle().clone();
//!     let (client_read, client_write) = client.into_split();
//!     let (server_read, server_write) = server.into_split();
//!     let upstream = handle.spawn(copy(client_read, server_write));
//!     copy(server_read, client_write).await;
//!     upstream.await;
//! }
//!
//! async fn copy<B: SocketBackend>(from: OwnedReadHalf<B>, to: OwnedWriteHalf<B>) {
//!     let mut buf = [0u8; 4096];
//!     while let Ok(n @ 1..) = from.read(&mut buf).await {
//!         if to.write_all(&buf[..n]).await.is_err() {
//!             break;
//!         }
//!     }
//!     // Dropping `to` passes the end of stream on (a FIN).
//! }
//! ```

use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::net::SocketAddr;

use crate::error::Error;
use crate::tcp::{Readable, TcpStream};
use netpoll_core::backend::SocketBackend;
use netpoll_core::Instant;

impl<B: SocketBackend> TcpStream<B> {
    /// Borrowed read and write halves of this stream (tokio: `TcpStream::split`). Both are
    /// `Copy`; `&self` alone already allows a read and a write at once, so this is for code
    /// that wants the types to say which direction each side uses.
    pub fn split(&self) -> (ReadHalf<'_, B>, WriteHalf<'_, B>) {
        (ReadHalf { stream: self }, WriteHalf { stream: self })
    }

    /// Owned read and write halves, each movable into its own task (tokio:
    /// `TcpStream::into_split`). Dropping the [`OwnedWriteHalf`] shuts the write direction
    /// down; the socket closes when both halves (and every clone of the stream) are gone.
    pub fn into_split(self) -> (OwnedReadHalf<B>, OwnedWriteHalf<B>) {
        let read = OwnedReadHalf {
            stream: self.clone(),
        };
        let write = OwnedWriteHalf {
            stream: self,
            shutdown_on_drop: true,
        };
        (read, write)
    }
}

/// The read side of a borrowed [`TcpStream::split`].
pub struct ReadHalf<'a, B: SocketBackend> {
    stream: &'a TcpStream<B>,
}

/// The write side of a borrowed [`TcpStream::split`].
pub struct WriteHalf<'a, B: SocketBackend> {
    stream: &'a TcpStream<B>,
}

/// The read side of [`TcpStream::into_split`].
pub struct OwnedReadHalf<B: SocketBackend> {
    stream: TcpStream<B>,
}

/// The write side of [`TcpStream::into_split`]. Dropping it shuts the write direction down
/// (the peer reads EOF) unless [`forget`](Self::forget) was called.
pub struct OwnedWriteHalf<B: SocketBackend> {
    stream: TcpStream<B>,
    shutdown_on_drop: bool,
}

// Not derived: a derive would require `B: Clone + Copy`, which backends need not be.
impl<B: SocketBackend> Clone for ReadHalf<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: SocketBackend> Copy for ReadHalf<'_, B> {}
impl<B: SocketBackend> Clone for WriteHalf<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: SocketBackend> Copy for WriteHalf<'_, B> {}

/// The read operations, forwarded to the stream: one definition for both read halves.
macro_rules! read_methods {
    () => {
        /// Reads what is available, waiting until something is (see [`TcpStream::read`]).
        pub fn read<'b>(
            &'b self,
            buf: &'b mut [u8],
        ) -> impl Future<Output = Result<usize, Error>> + Send + 'b {
            self.stream.read(buf)
        }

        /// Waits until a read can make progress (see [`TcpStream::readable`]).
        pub fn readable(&self) -> Readable<'_, B> {
            self.stream.readable()
        }

        /// Reads what is there now, without waiting (see [`TcpStream::try_read`]).
        pub fn try_read(&self, buf: &mut [u8]) -> Result<usize, Error> {
            self.stream.try_read(buf)
        }

        /// Sets the read deadline (see [`TcpStream::set_read_deadline`]).
        pub fn set_read_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
            self.stream.set_read_deadline(deadline)
        }

        /// The local address.
        pub fn local_addr(&self) -> Result<SocketAddr, Error> {
            self.stream.local_addr()
        }

        /// The peer's address.
        pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
            self.stream.peer_addr()
        }
    };
}

/// The write operations, forwarded to the stream: one definition for both write halves.
macro_rules! write_methods {
    () => {
        /// Writes some of `buf`, waiting until at least one byte is accepted (see
        /// [`TcpStream::write`]).
        pub fn write<'b>(
            &'b self,
            buf: &'b [u8],
        ) -> impl Future<Output = Result<usize, Error>> + Send + 'b {
            self.stream.write(buf)
        }

        /// Writes all of `buf` (see [`TcpStream::write_all`]).
        pub fn write_all<'b>(
            &'b self,
            buf: &'b [u8],
        ) -> impl Future<Output = Result<(), Error>> + Send + 'b {
            self.stream.write_all(buf)
        }

        /// Writes what the socket accepts now, without waiting (see
        /// [`TcpStream::try_write`]).
        pub fn try_write(&self, buf: &[u8]) -> Result<usize, Error> {
            self.stream.try_write(buf)
        }

        /// Shuts the write direction down: the peer reads EOF (Go: `CloseWrite`). Named as on
        /// the stream, so that with the `tokio` feature `AsyncWriteExt::shutdown` stays
        /// reachable as `half.shutdown().await`.
        pub fn shutdown_write(&self) -> Result<(), Error> {
            self.stream.shutdown_write()
        }

        /// Sets the write deadline (see [`TcpStream::set_write_deadline`]).
        pub fn set_write_deadline(&self, deadline: Option<Instant>) -> Result<(), Error> {
            self.stream.set_write_deadline(deadline)
        }

        /// The local address.
        pub fn local_addr(&self) -> Result<SocketAddr, Error> {
            self.stream.local_addr()
        }

        /// The peer's address.
        pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
            self.stream.peer_addr()
        }
    };
}

impl<'a, B: SocketBackend> ReadHalf<'a, B> {
    read_methods!();

    /// The whole stream this half was split from.
    pub fn stream(&self) -> &'a TcpStream<B> {
        self.stream
    }
}

impl<'a, B: SocketBackend> WriteHalf<'a, B> {
    write_methods!();

    /// The whole stream this half was split from.
    pub fn stream(&self) -> &'a TcpStream<B> {
        self.stream
    }
}

impl<B: SocketBackend> OwnedReadHalf<B> {
    read_methods!();

    /// Puts the stream back together from its two halves (tokio: `OwnedReadHalf::reunite`).
    /// Halves of different streams are an error that hands both back.
    pub fn reunite(self, write: OwnedWriteHalf<B>) -> Result<TcpStream<B>, ReuniteError<B>> {
        if Arc::ptr_eq(&self.stream.fd, &write.stream.fd) {
            Ok(write.forget())
        } else {
            Err(ReuniteError(self, write))
        }
    }
}

impl<B: SocketBackend> OwnedWriteHalf<B> {
    write_methods!();

    /// Gives back the stream without shutting the write direction down (tokio's `forget`
    /// drops the half; this returns the handle, which may simply be dropped).
    pub fn forget(mut self) -> TcpStream<B> {
        self.shutdown_on_drop = false;
        self.stream.clone()
    }
}

impl<B: SocketBackend> Drop for OwnedWriteHalf<B> {
    fn drop(&mut self) {
        if self.shutdown_on_drop {
            // Best effort, as tokio's: the socket may already be closed or reset, and a drop
            // has nobody to report that to.
            let _ = self.stream.shutdown_write();
        }
    }
}

/// [`OwnedReadHalf::reunite`] was given halves of two different streams; both come back.
pub struct ReuniteError<B: SocketBackend>(pub OwnedReadHalf<B>, pub OwnedWriteHalf<B>);

impl<B: SocketBackend> fmt::Display for ReuniteError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves that are not from the same socket")
    }
}

impl<B: SocketBackend> core::error::Error for ReuniteError<B> {}

macro_rules! debug_as_stream {
    ($($ty:ty => $name:literal),* $(,)?) => {$(
        impl<B: SocketBackend> fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple($name).field(&self.stream).finish()
            }
        }
    )*};
}

debug_as_stream! {
    ReadHalf<'_, B> => "ReadHalf",
    WriteHalf<'_, B> => "WriteHalf",
    OwnedReadHalf<B> => "OwnedReadHalf",
    OwnedWriteHalf<B> => "OwnedWriteHalf",
}

impl<B: SocketBackend> fmt::Debug for ReuniteError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReuniteError")
            .field(&self.0)
            .field(&self.1)
            .finish()
    }
}

/// The async I/O traits on the halves, as on the stream (see `tcp/poll_io.rs`): reads on the
/// read halves, writes on the write halves, so `tokio::io::copy(&mut read, &mut write)` and
/// futures' `AsyncReadExt`/`AsyncWriteExt` work on split streams.
#[cfg(any(feature = "tokio", feature = "futures-io"))]
mod io_traits {
    extern crate std;

    use core::pin::Pin;
    use core::task::{Context, Poll};
    use std::io;

    use super::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, WriteHalf};
    use netpoll_core::backend::SocketBackend;

    #[cfg(feature = "tokio")]
    macro_rules! tokio_read_for {
        ($($ty:ty),*) => {$(
            /// Reads with [`TcpStream::poll_read`](crate::TcpStream::poll_read).
            impl<B: SocketBackend> tokio::io::AsyncRead for $ty {
                fn poll_read(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                    buf: &mut tokio::io::ReadBuf<'_>,
                ) -> Poll<io::Result<()>> {
                    let n = core::task::ready!(self.stream.poll_read(cx, buf.initialize_unfilled()))?;
                    buf.advance(n);
                    Poll::Ready(Ok(()))
                }
            }
        )*};
    }

    #[cfg(feature = "tokio")]
    macro_rules! tokio_write_for {
        ($($ty:ty),*) => {$(
            /// Writes with [`TcpStream::poll_write`](crate::TcpStream::poll_write);
            /// `poll_shutdown` shuts the write direction down.
            impl<B: SocketBackend> tokio::io::AsyncWrite for $ty {
                fn poll_write(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                    buf: &[u8],
                ) -> Poll<io::Result<usize>> {
                    self.stream.poll_write(cx, buf).map_err(Into::into)
                }

                fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                    self.stream.poll_flush(cx).map_err(Into::into)
                }

                fn poll_shutdown(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                ) -> Poll<io::Result<()>> {
                    self.stream.poll_shutdown(cx).map_err(Into::into)
                }
            }
        )*};
    }

    #[cfg(feature = "tokio")]
    tokio_read_for!(OwnedReadHalf<B>, ReadHalf<'_, B>);
    #[cfg(feature = "tokio")]
    tokio_write_for!(OwnedWriteHalf<B>, WriteHalf<'_, B>);

    #[cfg(feature = "futures-io")]
    macro_rules! futures_read_for {
        ($($ty:ty),*) => {$(
            /// Reads with [`TcpStream::poll_read`](crate::TcpStream::poll_read).
            impl<B: SocketBackend> futures_io::AsyncRead for $ty {
                fn poll_read(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                    buf: &mut [u8],
                ) -> Poll<io::Result<usize>> {
                    self.stream.poll_read(cx, buf).map_err(Into::into)
                }
            }
        )*};
    }

    #[cfg(feature = "futures-io")]
    macro_rules! futures_write_for {
        ($($ty:ty),*) => {$(
            /// Writes with [`TcpStream::poll_write`](crate::TcpStream::poll_write);
            /// `poll_close` shuts the write direction down.
            impl<B: SocketBackend> futures_io::AsyncWrite for $ty {
                fn poll_write(
                    self: Pin<&mut Self>,
                    cx: &mut Context<'_>,
                    buf: &[u8],
                ) -> Poll<io::Result<usize>> {
                    self.stream.poll_write(cx, buf).map_err(Into::into)
                }

                fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                    self.stream.poll_flush(cx).map_err(Into::into)
                }

                fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                    self.stream.poll_shutdown(cx).map_err(Into::into)
                }
            }
        )*};
    }

    #[cfg(feature = "futures-io")]
    futures_read_for!(OwnedReadHalf<B>, ReadHalf<'_, B>);
    #[cfg(feature = "futures-io")]
    futures_write_for!(OwnedWriteHalf<B>, WriteHalf<'_, B>);
}
