//! Waiting for Ctrl-C (SIGINT) or SIGTERM as a future.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::sys::signal as sys;

struct State {
    /// How many termination signals arrived.
    count: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| State {
        count: AtomicU64::new(0),
        wakers: Mutex::new(Vec::new()),
    })
}

/// Routes SIGINT and SIGTERM to [`termination`] futures instead of killing the process.
///
/// Call it first thing in `main`, before any thread starts: it blocks both signals in the
/// calling thread (threads spawned later inherit that) and starts one thread that `sigwait`s
/// for them.
pub fn install_termination_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    sys::block_term_signals()?;
    std::thread::Builder::new()
        .name("netpoll-signal".into())
        .spawn(|| loop {
            match sys::wait_term_signal() {
                Ok(_) => {
                    let s = state();
                    // Release: pairs with the Acquire load in `Termination::poll`.
                    s.count.fetch_add(1, Ordering::Release);
                    let wakers =
                        std::mem::take(&mut *s.wakers.lock().unwrap_or_else(|e| e.into_inner()));
                    for w in wakers {
                        w.wake();
                    }
                }
                Err(e) => {
                    // Termination futures never complete after this: say why.
                    log::error!("sigwait failed, SIGINT and SIGTERM are no longer seen: {e}");
                    return;
                }
            }
        })?;
    let _ = INSTALLED.set(());
    Ok(())
}

/// Completes at the next SIGINT or SIGTERM after it was created.
/// Requires [`install_termination_handler`].
pub fn termination() -> Termination {
    Termination {
        // Acquire: see `install_termination_handler`.
        seen: state().count.load(Ordering::Acquire),
    }
}

/// The future of [`termination`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Termination {
    seen: u64,
}

impl Future for Termination {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let s = state();
        let mut wakers = s.wakers.lock().unwrap_or_else(|e| e.into_inner());
        // Acquire: pairs with the Release increment in the signal thread; checked under the
        // waker lock so a signal cannot slip between the check and the registration.
        if s.count.load(Ordering::Acquire) > self.seen {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
