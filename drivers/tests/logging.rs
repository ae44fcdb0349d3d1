//! The engine's `log` events, captured by a logger of the test's own: a connection's listen,
//! connect, accept and close show up at debug with their 4-tuple, bulk data adds no record at
//! debug or above (nothing is logged per frame there), and a SYN flood against a full accept
//! pool warns about once a second, not once per SYN.

use std::cell::RefCell;
use std::sync::Once;
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use netpoll_drivers::smoltcp::wire::Ipv4Address;
use netpoll_drivers::{Side, WireNet};
use netpoll_stack::{TcpListener, TcpStream};

mod support;

use support::spoofed_syn;

/// Keeps each thread's records of this crate: every test runs its scheduler on its own thread,
/// so tests running in parallel do not see each other's connections.
struct Capture;

thread_local! {
    static RECORDS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        if record.target().starts_with("netpoll_drivers") {
            let line = record.args().to_string();
            RECORDS.with(|r| r.borrow_mut().push((record.level(), line)));
        }
    }

    fn flush(&self) {}
}

/// Installs the capturing logger once per test binary, at every level.
fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("the only logger of this test binary");
        log::set_max_level(LevelFilter::Trace);
    });
}

/// This thread's records so far.
fn records() -> Vec<(Level, String)> {
    RECORDS.with(|r| r.borrow().clone())
}

/// Bytes the client sends; far more than one frame's worth.
const BULK: usize = 256 * 1024;

#[test]
fn connection_events_are_logged_once_each_with_their_4_tuple() {
    capture();

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

    let records = records();
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

/// 3,000 SYNs from on-link addresses that never answer, spread over 3 s, against a pool of 16:
/// the pool stays full the whole time, so every SYN evicts a half-open connection or is
/// dropped, yet the listener warns about once a second, with counts that add up.
#[test]
fn a_syn_flood_warns_once_a_second_not_per_syn() {
    capture();
    let mut net = WireNet::new();
    let a = net.a.clone();
    let host_a = a.host().clone();
    let addr = net.addr_a(80);
    let wire = net.wire.clone();
    let h = net.scheduler.handle().clone();
    net.scheduler.block_on(async move {
        let listener = TcpListener::bind_with_backlog(&a, addr, 16).expect("listen");
        for batch in 0..30u16 {
            for i in 0..100u16 {
                let n = batch * 100 + i;
                let src = Ipv4Address::new(10, 0, 0, 100 + (n % 100) as u8);
                wire.inject(Side::A, spoofed_syn(src, 10_000 + n, 80, i32::from(n)));
            }
            h.sleep(Duration::from_millis(100)).await;
        }
        listener.close().await.expect("close");
    });
    let stats = host_a.stats();
    let pressured = stats.half_open_evicted + stats.syns_dropped;
    assert!(pressured > 2_900, "the pool was full throughout: {stats:?}");
    let warnings: Vec<String> = records()
        .into_iter()
        .filter(|(level, line)| *level == Level::Warn && line.contains("accept pool of 16 full"))
        .map(|(_, line)| line)
        .collect();
    assert!(
        (2..=4).contains(&warnings.len()),
        "about one warning a second over 3 s: {warnings:#?}"
    );
    // "...: E half-open connections evicted, D SYNs dropped since the last warning"
    let counted: u64 = warnings
        .iter()
        .map(|w| {
            let numbers: Vec<u64> = w
                .split(' ')
                .filter_map(|word| word.trim_end_matches(',').parse().ok())
                .collect();
            numbers[numbers.len() - 2] + numbers[numbers.len() - 1]
        })
        .sum();
    assert!(
        counted >= warnings.len() as u64 && counted <= pressured,
        "warnings counted {counted} of {pressured}: {warnings:#?}"
    );
}
