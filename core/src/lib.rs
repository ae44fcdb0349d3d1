//! netpoll-core: Go's network poller as a `no_std` library.
//!
//! This crate owns the parts of Go's runtime that decide *when* a task runs: the per-socket
//! poll descriptor state machine ([`poll_desc`]), the readiness-source contract every backend
//! implements ([`source`]), and a task scheduler whose idle loop blocks in that source
//! ([`sched`]). It has no OS code and reads no clock: time comes in through [`time::Clock`],
//! I/O readiness through [`source::ReadinessSource`]. It builds for `x86_64-unknown-none`,
//! `aarch64-unknown-none` and 32-bit microcontrollers (`thumbv7em-none-eabihf`,
//! `riscv32imac-unknown-none-elf`). Where the target has no 64-bit atomics, the final binary
//! must link a `critical-section` implementation (on a single-core Cortex-M, `cortex-m`'s
//! `critical-section-single-core` feature): see [`sync`] and `docs/porting.md`.
//!
//! It does not do I/O. Sockets, their syscalls or their userspace stack live in backends
//! (`netpoll-hosted`, `netpoll-drivers`), which implement the [`backend::SocketBackend`]
//! contract defined here; the user API that runs Go's `internal/poll` loops over them lives in
//! `netpoll-stack`.
//!
//! # Glossary (Rust name → Go name)
//!
//! | Rust | Go |
//! |---|---|
//! | [`PollDesc`] | `pollDesc` |
//! | [`PollCache`] | `pollCache` |
//! | [`Key`] (slot, generation) | `taggedPointerPack(pd, fdseq)` |
//! | `PollDesc` semaphores `sem[Read]`, `sem[Write]` | `rg`, `wg` |
//! | `NIL` / `READY` / `WAIT` / `PARKED` | `pdNil` / `pdReady` / `pdWait` / `*g` |
//! | [`PollDesc::poll_wait`] | `poll_runtime_pollWait` + `netpollblock` + `netpollblockcommit` |
//! | [`PollDesc::ready`] | `netpollready` → `netpollunblock(ioready=true)` |
//! | [`PollDesc::prepare`] | `poll_runtime_pollReset` |
//! | [`PollDesc::check_err`] | `netpollcheckerr` |
//! | [`PollDesc::evict`] | `poll_runtime_pollUnblock` |
//! | [`PollDesc::set_deadline`] | `poll_runtime_pollSetDeadline` |
//! | [`PollDesc::deadline_fired`] | `netpolldeadlineimpl` |
//! | [`PollError`] | `pollErrClosing` / `pollErrTimeout` / `pollErrNotPollable` |
//! | [`WaiterCount`] | `netpollWaiters` |
//! | [`ReadinessSource::poll`] | `netpoll(delay)` |
//! | [`Notifier`] | `netpollBreak` |
//! | [`Scheduler`] | `findRunnable` + `sysmon`'s poll |
//! | [`Handle`] (spawn, sleep) / [`IoHandle`] (pollDescs, readiness) | `go`, `time.Sleep` / `poll_runtime_*`, `netpollready` |
//! | [`ReadinessWait`] | `netpollblock` |
//! | [`Metrics`] | the counters of `GODEBUG=schedtrace` |
//!
//! [`PollDesc`]: poll_desc::PollDesc
//! [`PollCache`]: poll_desc::PollCache
//! [`PollDesc::poll_wait`]: poll_desc::PollDesc::poll_wait
//! [`PollDesc::ready`]: poll_desc::PollDesc::ready
//! [`PollDesc::prepare`]: poll_desc::PollDesc::prepare
//! [`PollDesc::check_err`]: poll_desc::PollDesc::check_err
//! [`PollDesc::evict`]: poll_desc::PollDesc::evict
//! [`PollDesc::set_deadline`]: poll_desc::PollDesc::set_deadline
//! [`PollDesc::deadline_fired`]: poll_desc::PollDesc::deadline_fired
//! [`PollError`]: poll_desc::PollError
//! [`WaiterCount`]: poll_desc::WaiterCount
//! [`Key`]: source::Key
//! [`ReadinessSource::poll`]: source::ReadinessSource::poll
//! [`Notifier`]: source::Notifier
//! [`Scheduler`]: sched::Scheduler
//! [`Handle`]: sched::Handle
//! [`IoHandle`]: sched::IoHandle
//! [`ReadinessWait`]: sched::ReadinessWait
//! [`Metrics`]: sched::Metrics
#![no_std]
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

extern crate alloc;

pub mod backend;
pub mod poll_desc;
pub mod sched;
pub mod source;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;

pub use backend::{ErrorKind, Shutdown, SocketBackend, TryError};
pub use poll_desc::{PollCache, PollDesc, PollError};
pub use sched::{yield_now, Elapsed, Handle, IoHandle, JoinHandle, Metrics, Scheduler};
pub use source::{Direction, Events, Key, Notifier, Readiness, ReadinessSource};
pub use time::{Clock, Instant};
