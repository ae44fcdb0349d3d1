//! Guards the per-connection memory that BENCHMARKS.md's s4 benchmark measures (bytes of user-space
//! memory per idle connection): the sizes of the objects every connection owns and of the
//! futures an idle connection's task holds. A change that grows one past its budget fails
//! here, long before anyone reruns the benchmark; raise a budget only knowingly, and re-measure
//! s4 (`python3 hosted/bench/run.py --scenarios s4`).

use std::mem::size_of_val;

use netpoll_core::PollDesc;
use netpoll_hosted::{KernelBackend, KernelSocket, Runtime};
use netpoll_stack::{TcpListener, TcpStream};

#[test]
fn per_connection_objects_stay_within_budget() {
    // One per socket, in the pollDesc cache. Deadlines live out of line until first used;
    // 72 bytes is what fits, with its `Arc` header, in a 96-byte malloc chunk.
    assert!(
        size_of::<PollDesc>() <= 72,
        "PollDesc is {} bytes",
        size_of::<PollDesc>()
    );
    // Held by every socket's fd.
    assert!(size_of::<KernelBackend>() <= 8);
    assert!(size_of::<KernelSocket>() <= 12);
}

#[test]
fn operation_futures_stay_within_budget() {
    let mut rt = Runtime::builder().workers(1).build().expect("runtime");
    let backend = rt.backend().clone();
    rt.block_on(async move {
        let listener = TcpListener::bind(&backend, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let conn = TcpStream::connect(&backend, addr).await.unwrap();
        let mut buf = [0u8; 4];
        // What an idle connection's task holds (`readable`), and what it holds while busy.
        let sizes = [
            ("readable", size_of_val(&conn.readable()), 16),
            ("read", size_of_val(&conn.read(&mut buf)), 80),
            ("write_all", size_of_val(&conn.write_all(&[1; 4])), 88),
            ("write", size_of_val(&conn.write(&[1; 4])), 88),
            ("close", size_of_val(&conn.close()), 40),
        ];
        for (op, size, budget) in sizes {
            assert!(
                size <= budget,
                "the {op} future is {size} bytes (budget {budget})"
            );
        }
        conn.close().await.unwrap();
        listener.close().await.unwrap();
    });
}
