//! Readiness edges: smoltcp's wakers mark sockets dirty; after each frame and each egress pass
//! the host looks only at the dirty sockets and reports the edges their waiters armed for.
//! The crate docs explain why this replaces a rescan of every socket.

use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use netpoll_core::sync::{AtomicBool, Ordering};

use netpoll_core::{Events, Readiness};
use smoltcp::phy::Device;
use smoltcp::socket::tcp::State;

use super::stream::fin_probe;
use super::{Inner, Role};

/// The dirty list smoltcp's wakers feed.
#[derive(Default)]
pub(super) struct Dirty {
    pub(super) list: spin::Mutex<Vec<u32>>,
}

/// The waker of one smoltcp socket: marks it dirty.
pub(super) struct SockWake {
    pub(super) index: u32,
    /// Already on the dirty list (de-duplicates the rx and tx wakes of one change).
    pub(super) queued: AtomicBool,
    pub(super) dirty: Arc<Dirty>,
}

impl Wake for SockWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Relaxed: smoltcp only wakes from inside a socket or interface call, and every such
        // call runs under the host lock, as does the `store(false)` in `process_one`: the lock
        // orders them.
        if !self.queued.swap(true, Ordering::Relaxed) {
            self.dirty.list.lock().push(self.index);
        }
    }
}

impl<D: Device> Inner<D> {
    /// Whether smoltcp woke a socket since the last [`Inner::process_dirty`].
    pub(super) fn has_dirty(&self) -> bool {
        !self.dirty.list.lock().is_empty()
    }

    /// Processes every socket smoltcp woke since the last call.
    pub(super) fn process_dirty(&mut self, events: &mut dyn Events) {
        let mut list = core::mem::take(&mut self.dirty_scratch);
        core::mem::swap(&mut list, &mut *self.dirty.list.lock());
        let now = self.pass_ts.total_micros();
        for &index in &list {
            self.process_one(index, events, now);
            self.sync_later(index);
        }
        list.clear();
        self.dirty_scratch = list;
        self.reap_pending();
    }

    fn process_one(&mut self, index: u32, events: &mut dyn Events, now: i64) {
        let Inner {
            socks,
            router,
            stats,
            ..
        } = self;
        // A stale index (the socket was removed after it was woken) is skipped.
        let Some((_, sock)) = socks.at_mut(index) else {
            return;
        };
        // Relaxed: under the host lock, like every wake (see `SockWake::wake_by_ref`).
        sock.wake.queued.store(false, Ordering::Relaxed);
        let tuple = sock.tuple;
        let (role, s, waker) = sock.parts();
        // smoltcp's registrations are one-shot: re-arm both (no clone if still registered).
        s.register_recv_waker(waker);
        s.register_send_waker(waker);
        match role {
            Role::Stream(st) => {
                st.observe(s);
                if st.shut_write {
                    fin_probe(s);
                }
                let Some(key) = st.key else {
                    return;
                };
                let mut ev = Readiness::EMPTY;
                if st.armed_read && st.read_ready(s) {
                    st.armed_read = false;
                    ev |= Readiness::READABLE;
                }
                if st.armed_write && st.write_ready(s) {
                    st.armed_write = false;
                    ev |= Readiness::WRITABLE;
                }
                if !ev.is_empty() {
                    events.push_event(key, ev);
                }
            }
            Role::Pooled {
                listener,
                queued,
                half_open_since,
            } => {
                let Some(l) = router.listeners.get_mut(*listener) else {
                    return;
                };
                match s.state() {
                    State::Listen | State::SynReceived => {}
                    State::Closed | State::TimeWait => {
                        // Reset, timed out (a half-open connection whose peer never answered
                        // the SYN-ACKs) or gone before accept: recycle silently (Go #6163).
                        if *queued {
                            *queued = false;
                            l.ready.retain(|&i| i != index);
                        }
                        *half_open_since = None;
                        stats.aborted_before_accept += 1;
                        if let Some(t) = tuple {
                            log::trace!(
                                "{} -> {} reset or timed out before accept",
                                t.local,
                                t.remote
                            );
                        }
                        s.abort();
                        // Cannot fail: the socket is closed and the port is non-zero.
                        let _ = s.listen(l.endpoint);
                        s.set_timeout(Some(l.half_open_timeout));
                    }
                    _ => {
                        if !*queued {
                            *queued = true;
                            if let Some(since) = half_open_since.take() {
                                l.record_handshake(now - since);
                            }
                            // Established: the half-open limit no longer applies.
                            s.set_timeout(None);
                            l.ready.push_back(index);
                            if l.armed {
                                if let Some(key) = l.key {
                                    l.armed = false;
                                    events.push_event(key, Readiness::READABLE);
                                }
                            }
                        }
                    }
                }
            }
            Role::Orphan { .. } => {
                if s.can_recv() {
                    // Data for a socket nobody can read any more: reset the sender, as Linux
                    // does for an orphaned socket, instead of letting it fill our window and
                    // then block forever.
                    s.abort();
                }
                fin_probe(s);
                if s.state() == State::Closed && s.remote_endpoint().is_none() {
                    router.reap.push(index);
                }
            }
        }
    }
}
