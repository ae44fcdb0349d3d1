//! The engine's `log` events, captured by a logger of the test's own: a connection's listen,
//! connect, accept and close show up at debug with their 4-tuple, and bulk data adds no
//! record at debug or above (nothing is logged per frame there).

use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use netpoll_drivers::WireNet;
use netpoll_stack::{TcpListener, TcpStream};

/// Every record at or above the level set with `log::set_max_level`.
struct Capture {
    records: Mutex<Vec<(Level, String)>>,
}

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        if record.target().starts_with("netpoll_drivers") {
            let line = record.args().to_string();
            self.records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((record.level(), line));
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture {
    records: Mutex::new(Vec::new()),
};

/// Bytes the client sends; far more than one frame's worth.
const BULK: usize = 256 * 1024;

#[test]
fn connection_events_are_logged_once_each_with_their_4_tuple() {
    log::set_logger(&CAPTURE).expect("the only logger of this test binary");
    log::set_max_level(LevelFilter::Trace);

    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(7);
    let handle = net.scheduler.handle().clone();
    let client_addr = net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, addr).expect("listen");
        let server = handle.spawn(async move {
            let (conn, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 16 * 1024];
            let mut got = 0;
            loop {
                match conn.read(&mut buf).await.expect("read") {
                    0 => break,
                    n => got += n,
                }
            }
            conn.close().await.expect("server close");
            listener.close().await.expect("listener close");
            got
        });
        let conn = TcpStream::connect(&b, addr).await.expect("connect");
        let client_addr = conn.local_addr().expect("client address");
        conn.write_all(&vec![7u8; BULK]).await.expect("write");
        conn.shutdown_write().expect("shutdown");
        assert_eq!(server.await, BULK, "the server read everything");
        let mut buf = [0u8; 1];
        assert_eq!(conn.read(&mut buf).await.expect("read the end"), 0);
        conn.close().await.expect("client close");
        client_addr
    });

    let records = CAPTURE
        .records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let debug: Vec<&str> = records
        .iter()
        .filter(|(level, _)| *level == Level::Debug)
        .map(|(_, line)| line.as_str())
        .collect();
    let expect_once = |line: String| {
        let n = debug.iter().filter(|l| **l == line).count();
        assert_eq!(n, 1, "{line:?} logged {n} times; debug records: {debug:#?}");
    };
    let (server, client) = (addr, client_addr);
    expect_once(format!("listen {server} (accept pool of 128)"));
    expect_once(format!("connect {client} -> {server}"));
    expect_once(format!("connected {client} -> {server}"));
    expect_once(format!("accept {server} -> {client}"));
    expect_once(format!("closed by the peer (FIN) {server} -> {client}"));
    expect_once(format!("close {server} -> {client}"));
    expect_once(format!("close listener {server}"));
    expect_once(format!("closed by the peer (FIN) {client} -> {server}"));
    expect_once(format!("close {client} -> {server}"));
    // 256 KiB is about 180 full frames: none of them may add a record at debug or above.
    let loud = records.iter().filter(|(l, _)| *l <= Level::Debug).count();
    assert_eq!(loud, 9, "records at debug or above: {records:#?}");
}
