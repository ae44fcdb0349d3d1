//! The cooperative budget: a task whose reads always succeed still lets other tasks run.
//!
//! The backend here is a test double that is always ready (reads and writes always succeed,
//! as on a connection whose peer never stops sending), so without the budget the reading
//! task would never return to the scheduler until it finished.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use netpoll_core::testing::{ManualClock, ManualSource};
use netpoll_core::{Handle, Key, Scheduler};
use netpoll_stack::{ErrorKind, Shutdown, SocketBackend, TcpStream, TryError};

/// A backend whose sockets always have data and buffer space.
#[derive(Clone)]
struct AlwaysReady {
    handle: Handle,
}

impl SocketBackend for AlwaysReady {
    type Socket = ();

    fn handle(&self) -> &Handle {
        &self.handle
    }
    fn listen(&self, _: SocketAddr, _: u32) -> Result<(), ErrorKind> {
        Err(ErrorKind::Unsupported)
    }
    fn stream(&self, _: SocketAddr) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn register(&self, _: &(), _: Key) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn deregister(&self, _: &()) {}
    fn try_accept(&self, _: &()) -> Result<((), SocketAddr), TryError> {
        Err(TryError::Failed(ErrorKind::Unsupported))
    }
    fn start_connect(&self, _: &(), _: SocketAddr) -> Result<(), TryError> {
        Ok(())
    }
    fn finish_connect(&self, _: &()) -> Result<(), TryError> {
        Ok(())
    }
    fn try_read(&self, _: &(), buf: &mut [u8]) -> Result<usize, TryError> {
        buf.fill(7);
        Ok(buf.len())
    }
    fn try_write(&self, _: &(), buf: &[u8]) -> Result<usize, TryError> {
        Ok(buf.len())
    }
    fn shutdown(&self, _: &(), _: Shutdown) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn local_addr(&self, _: &()) -> Result<SocketAddr, ErrorKind> {
        Ok(SocketAddr::from(([10, 0, 0, 1], 1)))
    }
    fn peer_addr(&self, _: &()) -> Result<SocketAddr, ErrorKind> {
        Ok(SocketAddr::from(([10, 0, 0, 2], 2)))
    }
    fn set_nodelay(&self, _: &(), _: bool) -> Result<(), ErrorKind> {
        Ok(())
    }
    fn nodelay(&self, _: &()) -> Result<bool, ErrorKind> {
        Ok(true)
    }
    fn close(&self, _: &(), _: bool) {}
}

#[test]
fn a_reader_that_never_waits_still_yields_to_other_tasks() {
    let clock = ManualClock::new();
    let mut sched = Scheduler::new(ManualSource::new(clock.clone()), clock);
    let backend = AlwaysReady {
        handle: sched.handle().clone(),
    };
    let reads = Arc::new(AtomicUsize::new(0));
    let seen_by_other = Arc::new(AtomicUsize::new(usize::MAX));
    let h = sched.handle().clone();
    let (r, s) = (reads.clone(), seen_by_other.clone());
    sched.block_on(async move {
        let conn = TcpStream::connect(&backend, SocketAddr::from(([10, 0, 0, 2], 2)))
            .await
            .unwrap();
        let reader = h.spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..1280 {
                assert_eq!(conn.read(&mut buf).await.unwrap(), 64);
                r.fetch_add(1, Ordering::Relaxed);
            }
            for _ in 0..1280 {
                conn.write_all(&buf).await.unwrap();
            }
        });
        let other = h.spawn(async move {
            s.store(r_count(&reads), Ordering::Relaxed);
        });
        other.await;
        reader.await;
    });
    let seen = seen_by_other.load(Ordering::Relaxed);
    // The other task was spawned while the reader was queued: it must run within one budget
    // of reads, not after all 1,280 of them.
    assert!(seen <= 128, "the other task ran only after {seen} reads");
}

fn r_count(reads: &AtomicUsize) -> usize {
    reads.load(Ordering::Relaxed)
}
