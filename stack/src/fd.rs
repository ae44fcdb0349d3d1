//! One socket plus its pollDesc and its operation lock. Go: `internal/poll.FD` with `fdMutex`.
//!
//! Reads (and accepts) hold the read lock, writes (and connects) the write lock, for the whole
//! operation including the time parked in the core. So at most one task per direction ever
//! waits on the pollDesc (Go I5), while one task may read as another writes. Other operations
//! take a plain reference. `close` marks the fd closed, releases every task queued on the
//! locks, evicts the pollDesc, and completes only after the last reference is gone and the
//! socket has really been released (Go: `increfAndClose`, `evict`, `csema`).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU8};
use core::task::Context;
use core::task::{Poll, Waker};

use netpoll_core::{Direction, PollDesc};

use crate::error::ErrorKind;
use netpoll_core::backend::SocketBackend;

#[derive(Debug, Default)]
struct FdState {
    /// Go: `mutexClosed`.
    closed: bool,
    /// The socket has been released (Go: `destroy` ran).
    destroyed: bool,
    /// Send a reset on release.
    abort: bool,
    /// Go: `mutexRLock`, `mutexWLock`: bit `1 << dir` (one byte, so that the state fits 16).
    locked: u8,
    /// Go: the reference count (`mutexRef`).
    refs: u32,
    /// Tasks queued on the locks or in `close`. Allocated on first contention: most sockets
    /// never have any, and an idle connection must stay small (issue 4's s4 budget).
    waiters: Option<Box<FdWaiters>>,
}

#[derive(Debug, Default)]
struct FdWaiters {
    /// Tasks queued on each lock (Go: `rsema`, `wsema`).
    queued: [Vec<Waker>; 2],
    /// Tasks in `close` waiting for the release (Go: `csema`).
    closers: Vec<Waker>,
}

impl FdState {
    fn waiters(&mut self) -> &mut FdWaiters {
        self.waiters.get_or_insert_default()
    }

    /// Takes the tasks queued on the lock of `dir` (or on both locks).
    fn take_queued(&mut self, dir: Option<Direction>) -> Vec<Waker> {
        let Some(w) = &mut self.waiters else {
            return Vec::new();
        };
        match dir {
            Some(d) => core::mem::take(&mut w.queued[d as usize]),
            None => {
                let [mut r, w] = core::mem::take(&mut w.queued);
                r.extend(w);
                r
            }
        }
    }
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
    /// The last read drained the receive queue ([`SocketBackend::try_read_drained`]).
    /// Touched only by the read-lock holder; Relaxed suffices because the lock orders its users.
    pub(crate) read_drained: AtomicBool,
    /// Operations per direction that completed without waiting since the last wait or yield:
    /// the cooperative budget ([`crate::tcp::COOP_BUDGET`]). Relaxed: a scheduling hint.
    pub(crate) streak: [AtomicU8; 2],
    state: spin::Mutex<FdState>,
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
        let handle = backend.handle();
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
            streak: [AtomicU8::new(0), AtomicU8::new(0)],
            state: spin::Mutex::new(FdState::default()),
        }))
    }

    /// Takes a reference (Go: `incref`): fails once closed.
    pub(crate) fn incref(&self) -> Result<FdGuard<'_, B>, ErrorKind> {
        let mut s = self.state.lock();
        if s.closed {
            return Err(ErrorKind::Closed);
        }
        s.refs += 1;
        Ok(FdGuard {
            fd: self,
            dir: None,
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
        let released = {
            let mut s = self.state.lock();
            if s.closed {
                return Err(ErrorKind::Closed);
            }
            s.closed = true;
            s.abort = abort;
            s.refs += 1;
            s.take_queued(None)
        };
        // Go: increfAndClose releases every queued waiter; they see `closed`.
        for w in released {
            w.wake();
        }
        // Go: `pd.evict()`: parked reader and writer wake with `Closing`.
        self.backend.handle().evict(&self.pd);
        drop(FdGuard {
            fd: self,
            dir: None,
        });
        poll_fn(|cx| {
            let mut s = self.state.lock();
            if s.destroyed {
                Poll::Ready(())
            } else {
                push_waker(&mut s.waiters().closers, cx.waker());
                Poll::Pending
            }
        })
        .await;
        Ok(())
    }

    /// Go: `FD.destroy`: deregister and free the pollDesc before releasing the socket.
    fn destroy(&self, abort: bool) {
        self.backend.deregister(&self.socket);
        self.backend.handle().free(&self.pd);
        self.backend.close(&self.socket, abort);
    }
}

impl<B: SocketBackend> Fd<B> {
    /// Drops a reference (and the lock of `dir`, if given); the last reference after a close
    /// destroys the socket and wakes the closers (Go: `rwunlock`/`decref` → `destroy`).
    fn release(&self, dir: Option<Direction>) {
        let (queued, closers, destroy) = {
            let mut s = self.state.lock();
            let queued = match dir {
                Some(d) => {
                    s.locked &= !(1 << d as usize);
                    s.take_queued(Some(d))
                }
                None => Vec::new(),
            };
            s.refs -= 1;
            let destroy = s.closed && s.refs == 0 && !s.destroyed;
            let mut closers = Vec::new();
            if destroy {
                s.destroyed = true;
                if let Some(w) = &mut s.waiters {
                    closers = core::mem::take(&mut w.closers);
                }
            }
            (queued, closers, destroy.then_some(s.abort))
        };
        for w in queued {
            w.wake();
        }
        if let Some(abort) = destroy {
            self.destroy(abort);
        }
        for w in closers {
            w.wake();
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
        let i = dir as usize;
        let mut s = self.state.lock();
        if s.closed {
            drop(s);
            self.drop_queued(holds_ref);
            return Poll::Ready(Err(ErrorKind::Closed));
        }
        if s.locked & (1 << i) == 0 {
            s.locked |= 1 << i;
            if !core::mem::take(holds_ref) {
                s.refs += 1;
            }
            return Poll::Ready(Ok(()));
        }
        if !*holds_ref {
            s.refs += 1;
            *holds_ref = true;
        }
        push_waker(&mut s.waiters().queued[i], cx.waker());
        Poll::Pending
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
        let s = self.state.get_mut();
        if s.destroyed {
            return;
        }
        if !s.closed {
            self.backend.handle().evict(&self.pd);
        }
        let abort = s.abort;
        self.destroy(abort);
    }
}
