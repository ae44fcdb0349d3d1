//! One socket plus its pollDesc and its operation lock. Go: `internal/poll.FD` with `fdMutex`.
//!
//! Reads (and accepts) hold the read lock, writes (and connects) the write lock, for the whole
//! operation including the time parked in the core. So at most one task per direction ever
//! waits on the pollDesc (`docs/semantics.md#one-waiter-per-direction`), while one task may
//! read as another writes. Other operations
//! take a plain reference. `close` marks the fd closed, releases every task queued on the
//! locks, evicts the pollDesc, and completes only after the last reference is gone and the
//! socket has really been released (Go: `increfAndClose`, `evict`, `csema`).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::task::Context;
use core::task::{Poll, Waker};
use netpoll_core::sync::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use netpoll_core::{Direction, PollDesc};

use crate::error::ErrorKind;
use netpoll_core::backend::SocketBackend;

// Bits of `Fd::state` (Go: `fdMutex.state`).
/// Go: `mutexClosed`.
const CLOSED: u64 = 1 << 0;
/// Go: `mutexRLock`, `mutexWLock`: bit `LOCKED << dir`.
const LOCKED: u64 = 1 << 1;
/// Send a reset on release.
const ABORT: u64 = 1 << 3;
/// `destroy` has run: the socket is released (Go: `destroy` done, `csema` released).
const DESTROYED: u64 = 1 << 4;
/// Some task may be in the waiter queues: whoever unlocks or closes must look there. Set only
/// under the queue lock, cleared only under it when the lock queues are empty.
const QUEUED: u64 = 1 << 5;
/// One reference (Go: `mutexRef`); the count takes the bits above.
const REF: u64 = 1 << 8;
const REF_MASK: u64 = !(REF - 1);

const fn lock_bit(dir: Direction) -> u64 {
    LOCKED << dir as usize
}

/// Tasks waiting on an fd: queued on a lock (Go: `rsema`, `wsema`) or in `close` (Go: `csema`).
#[derive(Debug, Default)]
struct FdWaiters {
    queued: [Vec<Waker>; 2],
    closers: Vec<Waker>,
}

fn push_waker(list: &mut Vec<Waker>, w: &Waker) {
    if !list.iter().any(|q| q.will_wake(w)) {
        list.push(w.clone());
    }
}

pub(crate) struct Fd<B: SocketBackend> {
    pub(crate) backend: B,
    pub(crate) pd: Arc<PollDesc>,
    pub(crate) socket: B::Socket,
    /// The last read drained the receive queue ([`SocketBackend::try_read_drained`]): the next
    /// read waits for an edge first. Written by the read-lock holder, whose lock orders its
    /// users (hence Relaxed), and by `shutdown_read` under a plain reference: a racing read may
    /// then store `true` after it, which is harmless only because every backend raises a read
    /// edge on `shutdown(Read)` (the kernel's RDHUP, the drivers' raised READABLE).
    pub(crate) read_drained: AtomicBool,
    /// The last non-blocking write (`try_write`, `poll_write`) found the send buffer full, so
    /// `writable` waits for the next write edge. Cleared by any write that moves bytes and by
    /// that edge. Relaxed, as `read_drained`: written under the write lock.
    pub(crate) write_blocked: AtomicBool,
    /// Operations per direction that completed without waiting since the last wait or yield:
    /// the cooperative budget ([`crate::tcp::COOP_BUDGET`]). Relaxed: a scheduling hint.
    pub(crate) streak: [AtomicU8; 2],
    /// Go's fdMutex in one word: the flags above plus the reference count. Taking and
    /// giving back a lock is one compare-and-swap when nobody waits.
    state: AtomicU64,
    /// The waiters. Allocated on first contention: most sockets never have any, and an idle
    /// connection must stay small (`BENCHMARKS.md`, "s4: memory per idle connection").
    waiters: spin::Mutex<Option<Box<FdWaiters>>>,
}

/// A held reference (and lock, if `dir` is set). Releases on drop; the last release after a
/// close destroys the socket.
pub(crate) struct FdGuard<'a, B: SocketBackend> {
    fd: &'a Fd<B>,
    dir: Option<Direction>,
}

impl<B: SocketBackend> Fd<B> {
    /// Opens a pollDesc for `socket` and registers it (Go: `FD.Init` → `pd.Init`).
    /// On failure the socket is closed.
    pub(crate) fn new(backend: &B, socket: B::Socket) -> Result<Arc<Self>, ErrorKind> {
        let handle = backend.handle().io();
        let pd = handle.open();
        if let Err(e) = backend.register(&socket, pd.key()) {
            handle.evict(&pd);
            handle.free(&pd);
            backend.close(&socket, false);
            return Err(e);
        }
        // Data already queued raises an edge on registration with some backends: then there
        // is nothing to read until an edge comes.
        let drained = backend.edge_on_register(&socket);
        Ok(Arc::new(Fd {
            backend: backend.clone(),
            pd,
            socket,
            read_drained: AtomicBool::new(drained),
            write_blocked: AtomicBool::new(false),
            streak: [AtomicU8::new(0), AtomicU8::new(0)],
            state: AtomicU64::new(0),
            waiters: spin::Mutex::new(None),
        }))
    }

    /// Takes a reference (Go: `incref`): fails once closed.
    pub(crate) fn incref(&self) -> Result<FdGuard<'_, B>, ErrorKind> {
        // Acquire: pairs with the Release half of `release`, as taking a lock does.
        self.state
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |s| {
                (s & CLOSED == 0).then_some(s + REF)
            })
            .map_err(|_| ErrorKind::Closed)?;
        Ok(FdGuard {
            fd: self,
            dir: None,
        })
    }

    /// Takes the lock of `dir` plus a reference if it is free now: `WouldBlock` if another
    /// task holds it, `Closed` once closed. For the non-blocking `try_*` operations.
    pub(crate) fn try_lock(&self, dir: Direction) -> Result<FdGuard<'_, B>, ErrorKind> {
        let bit = lock_bit(dir);
        // Acquire: pairs with the Release of the previous holder's `release`.
        self.state
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |s| {
                (s & (CLOSED | bit) == 0).then_some((s | bit) + REF)
            })
            .map_err(|s| {
                if s & CLOSED != 0 {
                    ErrorKind::Closed
                } else {
                    ErrorKind::WouldBlock
                }
            })?;
        Ok(FdGuard {
            fd: self,
            dir: Some(dir),
        })
    }

    /// Takes the lock of `dir` plus a reference (Go: `rwlock`), queueing behind the current
    /// holder. A queued task holds its reference while it waits, as in Go, so `close` waits
    /// for it too. Fails with `Closed` if the fd is or becomes closed while queued.
    pub(crate) fn lock(&self, dir: Direction) -> Lock<'_, B> {
        Lock {
            fd: self,
            dir,
            holds_ref: false,
        }
    }

    /// Go: `FD.Close`. Closes for every holder of this fd; completes once the socket is released.
    pub(crate) async fn close(&self, abort: bool) -> Result<(), ErrorKind> {
        self.start_close(abort)?;
        poll_fn(|cx| {
            // Acquire: pairs with the Release `fetch_or(DESTROYED)` in `release`.
            if self.state.load(Ordering::Acquire) & DESTROYED != 0 {
                return Poll::Ready(());
            }
            let mut w = self.waiters.lock();
            // Re-checked under the lock the destroyer takes after setting DESTROYED, so its
            // wake-up cannot miss us.
            if self.state.load(Ordering::Acquire) & DESTROYED != 0 {
                return Poll::Ready(());
            }
            push_waker(&mut w.get_or_insert_default().closers, cx.waker());
            Poll::Pending
        })
        .await;
        Ok(())
    }

    /// The part of `close` before waiting for the release (a plain function, so the close
    /// future keeps none of its locals).
    fn start_close(&self, abort: bool) -> Result<(), ErrorKind> {
        let flags = CLOSED | if abort { ABORT } else { 0 };
        // AcqRel: as `incref` (Acquire), and publishes CLOSED to the lock fast paths.
        let old = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |s| {
                (s & CLOSED == 0).then_some((s | flags) + REF)
            })
            .map_err(|_| ErrorKind::Closed)?;
        // Go: increfAndClose releases every queued waiter; they see `closed`.
        if old & QUEUED != 0 {
            self.wake_queued(None);
        }
        // Go: `pd.evict()`: parked reader and writer wake with `Closing`.
        self.backend.handle().io().evict(&self.pd);
        // Our reference: the last one out (maybe this) destroys the socket.
        self.release(None);
        Ok(())
    }

    /// Go: `FD.destroy`: deregister and free the pollDesc before releasing the socket.
    fn destroy(&self, abort: bool) {
        self.backend.deregister(&self.socket);
        self.backend.handle().io().free(&self.pd);
        self.backend.close(&self.socket, abort);
    }

    /// Wakes the tasks queued on the lock of `dir` (or on both locks), and clears `QUEUED`
    /// if no lock waiter is left.
    fn wake_queued(&self, dir: Option<Direction>) {
        let woken = {
            let mut guard = self.waiters.lock();
            let Some(w) = guard.as_mut() else {
                return;
            };
            let woken = match dir {
                Some(d) => core::mem::take(&mut w.queued[d as usize]),
                None => {
                    let [mut r, wr] = core::mem::take(&mut w.queued);
                    r.extend(wr);
                    r
                }
            };
            if w.queued.iter().all(Vec::is_empty) {
                // Relaxed: set and cleared only under the waiters lock, which orders both.
                self.state.fetch_and(!QUEUED, Ordering::Relaxed);
            }
            woken
        };
        for w in woken {
            w.wake();
        }
    }
}

impl<B: SocketBackend> Fd<B> {
    /// Drops a reference (and the lock of `dir`, if given); the last reference after a close
    /// destroys the socket and wakes the closers (Go: `rwunlock`/`decref` → `destroy`).
    fn release(&self, dir: Option<Direction>) {
        let unlock = dir.map_or(0, lock_bit);
        // AcqRel: Release hands the lock's critical section to the next taker (its Acquire
        // CAS); Acquire makes the destroyer see every other holder's work.
        let old = self.state.fetch_sub(REF | unlock, Ordering::AcqRel);
        debug_assert!(old & REF_MASK != 0, "fd: reference count underflow");
        debug_assert!(old & unlock == unlock, "fd: unlocking a lock not held");
        if dir.is_some() && old & QUEUED != 0 {
            self.wake_queued(dir);
        }
        // The reference that brings a closed fd to zero destroys it: only one can, since a
        // closed fd takes no new references.
        if old & CLOSED != 0 && (old & REF_MASK) == REF {
            self.destroy(old & ABORT != 0);
            // Release: publishes the release of the socket to `close`'s Acquire loads.
            self.state.fetch_or(DESTROYED, Ordering::Release);
            let closers = self
                .waiters
                .lock()
                .as_mut()
                .map(|w| core::mem::take(&mut w.closers));
            for w in closers.into_iter().flatten() {
                w.wake();
            }
        }
    }
}

impl<B: SocketBackend> Drop for FdGuard<'_, B> {
    fn drop(&mut self) {
        self.fd.release(self.dir);
    }
}

/// The future of [`Fd::lock`].
pub(crate) struct Lock<'a, B: SocketBackend> {
    fd: &'a Fd<B>,
    dir: Direction,
    /// Queued with a reference taken (Go: the waiter's `mutexRef`).
    holds_ref: bool,
}

impl<'a, B: SocketBackend> Future for Lock<'a, B> {
    type Output = Result<FdGuard<'a, B>, ErrorKind>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (fd, dir) = (self.fd, self.dir);
        fd.poll_lock(dir, &mut self.holds_ref, cx)
            .map_ok(|()| FdGuard { fd, dir: Some(dir) })
    }
}

impl<B: SocketBackend> Fd<B> {
    /// The body of [`Lock`], for hand-written futures: tries to take the lock of `dir` plus a
    /// reference. `Ready(Ok)`: the caller holds both; give them back with
    /// [`Fd::unlock`]. `Pending`: queued, holding a reference while `*holds_ref` (give it back
    /// with [`Fd::drop_queued`] if the caller stops polling). `Ready(Err)`: closed; any queued
    /// reference was given back.
    pub(crate) fn poll_lock(
        &self,
        dir: Direction,
        holds_ref: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ErrorKind>> {
        let bit = lock_bit(dir);
        let mut queue = None;
        loop {
            // Relaxed: the CAS below is the synchronising access.
            let s = self.state.load(Ordering::Relaxed);
            if s & CLOSED != 0 {
                drop(queue);
                self.drop_queued(holds_ref);
                return Poll::Ready(Err(ErrorKind::Closed));
            }
            let new = if s & bit == 0 {
                // Free: take it, with a reference unless we hold one from queueing.
                (s | bit) + if *holds_ref { 0 } else { REF }
            } else if queue.is_none() {
                // Held: queue under the waiters lock (then look again), so that the holder's
                // unlock, which takes that lock when it sees QUEUED, finds our waker.
                queue = Some(self.waiters.lock());
                continue;
            } else {
                (s | QUEUED) + if *holds_ref { 0 } else { REF }
            };
            // Acquire on success: pairs with the Release of the previous holder's `release`.
            if self
                .state
                .compare_exchange_weak(s, new, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if s & bit == 0 {
                *holds_ref = false;
                return Poll::Ready(Ok(()));
            }
            *holds_ref = true;
            let mut queue = queue.expect("queueing holds the waiters lock");
            push_waker(
                &mut queue.get_or_insert_default().queued[dir as usize],
                cx.waker(),
            );
            return Poll::Pending;
        }
    }

    /// Gives back the reference of a queued [`Fd::poll_lock`] that is no longer polled.
    pub(crate) fn drop_queued(&self, holds_ref: &mut bool) {
        if core::mem::take(holds_ref) {
            self.release(None);
        }
    }

    /// Gives back a lock (and its reference) taken by [`Fd::poll_lock`].
    pub(crate) fn unlock(&self, dir: Direction) {
        self.release(Some(dir));
    }
}

impl<B: SocketBackend> Drop for Lock<'_, B> {
    fn drop(&mut self) {
        self.fd.drop_queued(&mut self.holds_ref);
    }
}

impl<B: SocketBackend> Drop for Fd<B> {
    /// The last handle went away without `close`: close now. No operation can be in flight,
    /// since each borrows the fd.
    fn drop(&mut self) {
        let s = *self.state.get_mut();
        if s & DESTROYED != 0 {
            return;
        }
        if s & CLOSED == 0 {
            self.backend.handle().io().evict(&self.pd);
        }
        self.destroy(s & ABORT != 0);
    }
}
