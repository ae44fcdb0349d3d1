//! The cases, one file per section of the conformance checklist in `docs/semantics.md`:
//! [`mod@read`] (A), [`mod@write`] (B), [`accept`] (C),
//! [`deadline`] (D), [`close`] (E); and [`readable`] (R, netpoll's buffer-free wait, ids
//! from 61 on).
//!
//! Every case is `pub async fn <id>_<what><B: SocketBackend>(env: Env<B>)`; the id is the
//! checklist number (`a01` is item 1, `e48` item 48). [`crate::conformance_suite!`] lists them
//! all. Items 9, 39 (in part) and 50 are core properties (\[C\]) tested against the core's fake
//! readiness source; 49 is UDP-only, in [`udp`] (U) with the other UDP cases, which
//! [`crate::udp_suite!`] lists. From F, #60's userspace equivalent (a refused connect)
//! is here too (`accept::c60_…`).

use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::task::Poll;

pub mod accept;
pub mod close;
pub mod deadline;
pub mod read;
pub mod readable;
pub mod udp;
pub mod write;

/// Polls `fut` exactly once from the current task. Lets a case interleave two operations
/// deterministically (park a read, then change its deadline before it runs again).
pub(crate) async fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = Some(fut);
    poll_fn(|cx| Poll::Ready(fut.take().expect("polled once").poll(cx))).await
}
