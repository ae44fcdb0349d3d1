//! The multi-worker runtime: work spreads over threads, timers and I/O keep running while
//! every worker is busy, panics surface from `block_on`, and a runtime can be re-entered.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netpoll_hosted::{yield_now, Runtime};

fn two_workers() -> Runtime {
    Runtime::builder().workers(2).build().unwrap()
}

#[test]
fn tasks_run_on_several_workers() {
    let mut rt = two_workers();
    assert_eq!(rt.workers(), 2);
    let threads = Arc::new(Mutex::new(HashSet::new()));
    rt.block_on(async {
        let mut joins = Vec::new();
        for _ in 0..64 {
            let threads = threads.clone();
            joins.push(netpoll_hosted::spawn(async move {
                // Enough work per task that one worker cannot drain the queue alone.
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
                threads.lock().unwrap().insert(std::thread::current().id());
            }));
        }
        for j in joins {
            j.await;
        }
    });
    assert_eq!(threads.lock().unwrap().len(), 2, "both workers ran tasks");
}

#[test]
fn timers_fire_while_every_worker_is_busy() {
    // Timers must be serviced while all workers run CPU-bound (but
    // yielding) tasks.
    let mut rt = two_workers();
    let late = rt.block_on(async {
        let stop = Instant::now() + Duration::from_millis(400);
        let busy: Vec<_> = (0..4)
            .map(|_| {
                netpoll_hosted::spawn(async move {
                    while Instant::now() < stop {
                        for _ in 0..1000 {
                            std::hint::spin_loop();
                        }
                        yield_now().await;
                    }
                })
            })
            .collect();
        let start = Instant::now();
        netpoll_hosted::sleep(Duration::from_millis(20)).await;
        let late = start.elapsed();
        for b in busy {
            b.await;
        }
        late
    });
    assert!(late >= Duration::from_millis(20), "woke early: {late:?}");
    assert!(late < Duration::from_millis(200), "timer starved: {late:?}");
}

#[test]
fn a_panicking_task_on_a_worker_panics_block_on() {
    let mut rt = two_workers();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let j = netpoll_hosted::spawn(async {
                panic!("boom from a task");
            });
            j.await;
        })
    }));
    let payload = r.expect_err("the task's panic must reach block_on");
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("boom from a task"), "payload: {msg:?}");
}

#[test]
fn block_on_can_run_again_on_the_same_runtime() {
    let mut rt = two_workers();
    for round in 0..3 {
        let v = rt.block_on(async move {
            let joins: Vec<_> = (0..16)
                .map(|i| netpoll_hosted::spawn(async move { i * 2 }))
                .collect();
            let mut sum = 0;
            for j in joins {
                sum += j.await;
            }
            sum + round
        });
        assert_eq!(v, 240 + round);
    }
}

/// Readying tasks from the poller's own thread must not write the eventfd: a notification is
/// only for a poller that is really blocked (Go: `netpollBreak` only when someone polls).
#[test]
fn echo_traffic_does_not_break_the_poller() {
    for workers in [1, 2] {
        let mut rt = Runtime::builder().workers(workers).build().unwrap();
        let msgs = rt.block_on(async {
            let backend = netpoll_hosted::backend();
            let ln = netpoll_hosted::TcpListener::bind(&backend, "127.0.0.1:0".parse().unwrap())
                .unwrap();
            let addr = ln.local_addr().unwrap();
            netpoll_hosted::spawn(async move {
                while let Ok((c, _)) = ln.accept().await {
                    netpoll_hosted::spawn(async move {
                        let mut buf = [0u8; 128];
                        while let Ok(n @ 1..) = c.read(&mut buf).await {
                            if c.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            let clients: Vec<_> = (0..10)
                .map(|_| {
                    let backend = backend.clone();
                    netpoll_hosted::spawn(async move {
                        let c = netpoll_hosted::TcpStream::connect(&backend, addr)
                            .await
                            .unwrap();
                        let mut buf = [0u8; 128];
                        for _ in 0..1000 {
                            c.write_all(&[7u8; 128]).await.unwrap();
                            let mut got = 0;
                            while got < 128 {
                                got += c.read(&mut buf[got..]).await.unwrap();
                            }
                        }
                        1000
                    })
                })
                .collect();
            let mut msgs = 0u64;
            for c in clients {
                msgs += c.await;
            }
            msgs
        });
        let writes = rt
            .poll_stats()
            .wakeup_writes
            .load(std::sync::atomic::Ordering::Relaxed);
        let waits = rt
            .poll_stats()
            .epoll_waits
            .load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("workers {workers}: {msgs} msgs, {waits} epoll_waits, {writes} eventfd writes");
        assert!(
            writes * 20 < msgs,
            "workers {workers}: {writes} eventfd writes for {msgs} messages"
        );
    }
}

/// The kernel backend reads one spare byte to learn whether a read that filled the buffer
/// drained the socket; that byte must come out first, in order, before EOF or a reset.
#[test]
fn exact_fill_reads_keep_every_byte_then_eof_or_reset() {
    for abort in [false, true] {
        let mut rt = Runtime::builder().workers(1).build().unwrap();
        rt.block_on(async move {
            let backend = netpoll_hosted::backend();
            let ln = netpoll_hosted::TcpListener::bind(&backend, "127.0.0.1:0".parse().unwrap())
                .unwrap();
            let addr = ln.local_addr().unwrap();
            let client = netpoll_hosted::TcpStream::connect(&backend, addr)
                .await
                .unwrap();
            let (server, _) = ln.accept().await.unwrap();
            let data: Vec<u8> = (0..=255u8).cycle().take(16 * 3 + 5).collect();
            client.write_all(&data).await.unwrap();
            if abort {
                // Let the data arrive before the reset.
                netpoll_hosted::sleep(Duration::from_millis(20)).await;
                client.abort().await.unwrap();
            } else {
                client.close().await.unwrap();
            }
            netpoll_hosted::sleep(Duration::from_millis(20)).await;
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            let end = loop {
                match server.read(&mut buf).await {
                    Ok(0) => break "eof",
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        assert_eq!(e.kind(), netpoll_hosted::ErrorKind::ConnectionReset);
                        break "reset";
                    }
                }
                assert!(got.len() <= data.len(), "bytes invented");
            };
            if abort {
                // CAUTION: Linux discards unread data when a reset arrives, so only a prefix may
                // be delivered; what is delivered is in order, and the end is a reset, not EOF.
                assert_eq!(end, "reset");
                assert_eq!(got[..], data[..got.len()]);
            } else {
                assert_eq!(end, "eof");
                assert_eq!(got, data);
                // EOF is sticky.
                assert_eq!(server.read(&mut buf).await.unwrap(), 0);
            }
        });
    }
}

/// A `Write` sink the test can read while the trace thread writes to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

/// `Builder::schedtrace` prints one Go-style `SCHED` line per interval, with every field, and
/// stops when the runtime is dropped.
#[test]
fn schedtrace_prints_a_line_per_interval_until_the_runtime_drops() {
    let sink = Captured::default();
    let mut rt = Runtime::builder()
        .workers(2)
        .schedtrace(Duration::from_millis(10))
        .schedtrace_to(sink.clone())
        .build()
        .unwrap();
    let watched = sink.clone();
    rt.block_on(async move {
        // A task alive until three lines are out, so they all count it.
        let watcher = netpoll_hosted::spawn(async move {
            let start = Instant::now();
            while watched.lines().len() < 3 && start.elapsed() < Duration::from_secs(10) {
                netpoll_hosted::sleep(Duration::from_millis(5)).await;
            }
        });
        watcher.await;
    });
    let lines = sink.lines();
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        let (time, fields) = line.split_once(": ").expect("SCHED <t>ms: <fields>");
        assert!(time.starts_with("SCHED ") && time.ends_with("ms"), "{line}");
        let names: Vec<_> = fields
            .split(' ')
            .filter_map(|f| f.split_once('=').map(|(name, _)| name))
            .collect();
        assert_eq!(
            names,
            [
                "workers", "idle", "tasks", "spawned", "runq", "inject", "steals", "parks", "pds",
                "timers", "waits", "events"
            ],
            "{line}"
        );
        assert!(fields.starts_with("workers=2 "), "{line}");
    }
    // The watcher task was alive while the first three lines were printed.
    for line in &lines[..3] {
        assert!(line.contains(" tasks=1 spawned=1 "), "{line}");
    }
    drop(rt);
    let after_drop = sink.lines().len();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        sink.lines().len(),
        after_drop,
        "the trace stopped with the runtime"
    );
}

/// `Runtime::metrics` forwards the scheduler's counters.
#[test]
fn runtime_metrics_count_tasks_and_timers() {
    let mut rt = two_workers();
    let m = rt.metrics();
    assert_eq!((m.workers, m.local_queue_depths.len()), (2, 2));
    assert_eq!((m.tasks_spawned, m.tasks_alive), (0, 0));
    let timers_while_sleeping = rt.block_on(async {
        let joins: Vec<_> = (0..16)
            .map(|_| netpoll_hosted::spawn(async { yield_now().await }))
            .collect();
        for j in joins {
            j.await;
        }
        // Poll a sleep once, so that its timer is in the heap, then read the metrics.
        let mut sleep = std::pin::pin!(netpoll_hosted::sleep(Duration::from_millis(20)));
        std::future::poll_fn(|cx| {
            assert!(sleep.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        let timers = netpoll_hosted::handle().metrics().timers_pending;
        sleep.await;
        timers
    });
    assert_eq!(timers_while_sleeping, 1);
    let m = rt.metrics();
    assert_eq!((m.tasks_spawned, m.tasks_alive), (16, 0), "{m:?}");
    assert_eq!(m.timers_pending, 0, "{m:?}");
    assert!(m.polls >= 16 * 2, "each task yields once: {m:?}");
    assert!(m.readiness_waits >= 1, "the sleeps blocked in epoll: {m:?}");
}
