//! The multi-worker runtime: work spreads over threads, timers and I/O keep running while
//! every worker is busy, panics surface from `block_on`, and a runtime can be re-entered.

use std::collections::HashSet;
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
    // Spec §7 #10/#11: timers must be serviced while all workers run CPU-bound (but
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
