//! netpoll-stack: the user API, with Go's `net` semantics, written once for every backend.
//!
//! [`TcpListener`] and [`TcpStream`] run Go's `internal/poll` loops (try, wait on the pollDesc
//! after `WouldBlock`, retry) over any [`SocketBackend`]: kernel sockets with epoll in
//! `netpoll-hosted`, smoltcp in `netpoll-drivers`. Deadlines, close-while-blocked, zero-length
//! reads, aborted-connection skipping and the error shapes live here, so they behave the same
//! on every backend.
//!
//! This crate does no I/O and reads no clock; it is `no_std` + `alloc`.
//!
//! ```
//! use netpoll_stack::{Error, SocketBackend, TcpListener};
//!
//! /// An echo server on any backend: kernel sockets or smoltcp.
//! async fn serve<B: SocketBackend>(backend: &B) -> Result<(), Error> {
//!     let listener = TcpListener::bind(backend, "127.0.0.1:9009".parse().unwrap())?;
//!     loop {
//!         let (conn, _peer) = listener.accept().await?;
//!         backend.handle().spawn(async move {
//!             let mut buf = [0u8; 128];
//!             while let Ok(n @ 1..) = conn.read(&mut buf).await {
//!                 if conn.write_all(&buf[..n]).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!     }
//! }
//! ```
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod echo;
pub mod error;
mod fd;
mod raw;
pub mod split;
pub mod tcp;
pub mod udp;

pub use error::{Error, ErrorKind, Op, TryError};
pub use netpoll_core::backend::{self, DatagramBackend, Shutdown, SocketBackend};
pub use netpoll_core::{Handle, Instant};
pub use tcp::{Readable, TcpListener, TcpStream, COOP_BUDGET, DEFAULT_BACKLOG};
pub use udp::UdpSocket;
