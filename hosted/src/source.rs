//! The epoll readiness source and the eventfd notifier (Go: `runtime/netpoll_epoll.go`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netpoll_core::{Events, Key, Notifier, Readiness, ReadinessSource};

use crate::sys::epoll::{Epoll, EMPTY_EVENT};
use crate::sys::eventfd::EventFd;

/// The epoll user data of the eventfd. Generation 0 is never live (see [`Key::new`]), so this
/// token can never collide with a socket's key; it is compared at full width.
const WAKE_TOKEN: u64 = Key::new(u32::MAX, 0).to_u64();

/// Events per `epoll_wait` (Go uses 128).
const EVENT_BATCH: usize = 128;

/// Counters of the syscalls the poller made; cheap enough to keep always on.
#[derive(Debug, Default)]
pub struct PollStats {
    /// `epoll_wait` calls.
    pub epoll_waits: AtomicU64,
    /// `epoll_wait` calls that could block.
    pub blocking_waits: AtomicU64,
    /// Writes to the eventfd (notifications that were not coalesced away).
    pub wakeup_writes: AtomicU64,
}

/// The eventfd-backed [`Notifier`]. Go: `netpollBreak` with `netpollWakeSig`.
#[derive(Debug)]
pub struct EventFdNotifier {
    eventfd: EventFd,
    /// Go: `netpollWakeSig`: a wake-up is in flight; further notifies coalesce into it.
    pending: AtomicBool,
    stats: Arc<PollStats>,
}

impl Notifier for EventFdNotifier {
    fn notify(&self) {
        // AcqRel: pairs with the Release store in `EpollSource::poll` after draining, so a
        // notify after a drain always writes again.
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        // Relaxed: statistics only.
        self.stats.wakeup_writes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.eventfd.write() {
            // The eventfd is ours and open; failure here means the process is out of luck. A
            // missed wake-up is bounded by the next timer or I/O event; report, do not crash.
            eprintln!("netpoll: eventfd write failed: {e}");
            self.pending.store(false, Ordering::Release);
        }
    }
}

/// The state shared by the source (which polls) and the backend (which registers sockets).
#[derive(Debug)]
pub(crate) struct Poller {
    pub(crate) epoll: Epoll,
    pub(crate) notifier: Arc<EventFdNotifier>,
    pub(crate) stats: Arc<PollStats>,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        let epoll = Epoll::new()?;
        let stats = Arc::new(PollStats::default());
        let notifier = Arc::new(EventFdNotifier {
            eventfd: EventFd::new()?,
            pending: AtomicBool::new(false),
            stats: stats.clone(),
        });
        // Level-triggered on purpose (no EPOLLET): an undrained wake-up keeps the next blocking
        // wait from sleeping, so a notify is never lost (Go: the eventfd is registered EPOLLIN).
        epoll.add(
            notifier.eventfd.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKE_TOKEN,
        )?;
        Ok(Arc::new(Poller {
            epoll,
            notifier,
            stats,
        }))
    }

    /// Go: `netpollopen`: both directions, edge-triggered, for the socket's whole life.
    pub(crate) fn register(&self, fd: RawFd, key: Key) -> io::Result<()> {
        let events = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        self.epoll.add(fd, events as u32, key.to_u64())
    }

    /// Go: `netpollclose`.
    pub(crate) fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.epoll.delete(fd)
    }
}

/// The epoll [`ReadinessSource`].
#[derive(Debug)]
pub struct EpollSource {
    poller: Arc<Poller>,
}

impl EpollSource {
    pub(crate) fn new(poller: Arc<Poller>) -> Self {
        EpollSource { poller }
    }

    /// Syscall counters.
    pub fn stats(&self) -> &PollStats {
        &self.poller.stats
    }
}

/// Maps epoll flags to readiness (Go: the mode mapping in `netpoll`): hang-up and error wake
/// both directions; an event that is exactly `EPOLLERR` is an error-only event.
fn readiness(flags: u32) -> Readiness {
    let flags = flags as i32;
    if flags == libc::EPOLLERR {
        return Readiness::ERROR;
    }
    let mut r = Readiness::EMPTY;
    if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
        r |= Readiness::READABLE;
    }
    // Not for a bare EPOLLHUP: a socket registered before connect(2) reports EPOLLOUT|EPOLLHUP
    // (it is TCP_CLOSE), and latching READ_CLOSED for that would make `readable` return at once
    // for the life of the connection. A real end of the read side carries EPOLLRDHUP (we
    // register for it) or EPOLLERR.
    if flags & (libc::EPOLLRDHUP | libc::EPOLLERR) != 0 {
        r |= Readiness::READ_CLOSED;
    }
    if flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
        r |= Readiness::WRITABLE;
    }
    r
}

impl ReadinessSource for EpollSource {
    type Error = io::Error;

    /// Go: `netpoll(delay)`.
    fn poll(&self, timeout: Option<Duration>, events: &mut dyn Events) -> io::Result<()> {
        let mut buf = [EMPTY_EVENT; EVENT_BATCH];
        let blocking = timeout != Some(Duration::ZERO);
        let stats = &self.poller.stats;
        // Relaxed: statistics only.
        stats.epoll_waits.fetch_add(1, Ordering::Relaxed);
        if blocking {
            stats.blocking_waits.fetch_add(1, Ordering::Relaxed);
        }
        let n = loop {
            match self.poller.epoll.wait(&mut buf, timeout) {
                Ok(n) => break n,
                // Go: on EINTR a timed wait returns empty so the caller recomputes its sleep.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if timeout.is_some_and(|t| !t.is_zero()) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        };
        for ev in &buf[..n] {
            let (flags, token) = (ev.events, ev.u64);
            if flags == 0 {
                continue;
            }
            if token == WAKE_TOKEN {
                // Only a blocking poll consumes the wake-up (Go: "netpollBreak could be picked
                // up by a nonblocking poll. Only read the 8-byte integer if blocking.").
                if blocking {
                    self.poller.notifier.eventfd.drain();
                    // Release: pairs with the AcqRel swap in `notify`.
                    self.poller.notifier.pending.store(false, Ordering::Release);
                }
                if flags != libc::EPOLLIN as u32 {
                    // Go throws here; a diagnostic is sturdier across kernels.
                    eprintln!("netpoll: eventfd ready for unexpected events {flags:#x}");
                }
                continue;
            }
            let r = readiness(flags);
            if !r.is_empty() {
                events.push_event(Key::from_u64(token), r);
            }
        }
        Ok(())
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        self.poller.notifier.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_token_never_collides_with_live_keys() {
        let k = Key::from_u64(WAKE_TOKEN);
        assert_eq!(k.generation(), 0);
    }

    #[test]
    fn mode_mapping_follows_go() {
        let f = |x: i32| readiness(x as u32);
        assert_eq!(f(libc::EPOLLIN), Readiness::READABLE);
        assert_eq!(f(libc::EPOLLRDHUP), Readiness::READ_CLOSED);
        assert!(f(libc::EPOLLIN | libc::EPOLLRDHUP).is_read_closed());
        assert!(!f(libc::EPOLLIN | libc::EPOLLOUT).is_read_closed());
        assert_eq!(f(libc::EPOLLOUT), Readiness::WRITABLE);
        // An unconnected socket reports OUT|HUP: both directions wake (Go's mode 'r'+'w'),
        // but the read side is not latched closed.
        assert_eq!(f(libc::EPOLLHUP), Readiness::BOTH);
        assert!(!f(libc::EPOLLOUT | libc::EPOLLHUP).is_read_closed());
        assert!(f(libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP).is_read_closed());
        assert_eq!(
            f(libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLERR),
            Readiness::BOTH | Readiness::READ_CLOSED
        );
        assert!(f(libc::EPOLLERR).is_error());
        assert!(!f(libc::EPOLLERR | libc::EPOLLIN).is_error());
    }

    #[test]
    fn notify_breaks_blocking_poll_and_coalesces() {
        let poller = Poller::new().unwrap();
        let source = EpollSource::new(poller.clone());
        let notifier = source.notifier();
        let mut events: Vec<(Key, Readiness)> = Vec::new();
        // Repeated notifies before anyone polls coalesce into one eventfd write.
        for _ in 0..10 {
            notifier.notify();
        }
        assert_eq!(poller.stats.wakeup_writes.load(Ordering::Relaxed), 1);
        // A non-blocking poll does not consume it...
        source.poll(Some(Duration::ZERO), &mut events).unwrap();
        // ...so the next blocking poll returns at once instead of sleeping 10 s.
        let start = std::time::Instant::now();
        source
            .poll(Some(Duration::from_secs(10)), &mut events)
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(events.is_empty());
        // Consumed: a new notify writes again, from another thread, breaking a blocked poll.
        let n2 = notifier.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            n2.notify();
        });
        let start = std::time::Instant::now();
        source.poll(None, &mut events).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
        assert_eq!(poller.stats.wakeup_writes.load(Ordering::Relaxed), 2);
    }
}
