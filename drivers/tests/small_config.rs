//! `Config::small` on the in-memory wire: a listener and four echo connections, client and
//! server hosts in this one process, measured with a counting global allocator against the
//! 192 KiB heap of the Cortex-M4 demo (`drivers/mcu-demo`). The same run with
//! `Config::default()` is measured too, so the figure is shown to come from the allocator.
//!
//! This file holds a single test: the allocator counts the whole process, and a second test
//! running on another thread would add its allocations to the peak.

mod sys;

use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, WireDevice, WireNet, WIRE_ADDR_A, WIRE_ADDR_B};
use netpoll_stack::{TcpListener, TcpStream};

#[global_allocator]
static HEAP: sys::CountingAlloc = sys::CountingAlloc::new();

type B = netpoll_drivers::SmolBackend<WireDevice>;

/// The heap of the Cortex-M4 demo.
const HEAP_CAP: usize = 192 * 1024;
const CONNECTIONS: u64 = 4;
/// Bytes each client sends and reads back: several times the small buffers.
const BYTES_PER_CONNECTION: usize = 12 * 1024;
/// Bytes moved per read or write. The task futures hold these buffers, on the heap.
const CHUNK: usize = 256;

/// xorshift64* stream: byte `i` of connection `seed`, generated again to verify instead of
/// keeping a copy (a copy would count against the heap being measured).
struct Pattern(u64);

impl Pattern {
    fn new(seed: u64) -> Self {
        Pattern(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            *b = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}

async fn echo(conn: TcpStream<B>) {
    let mut buf = [0u8; CHUNK];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => conn.write_all(&buf[..n]).await.expect("server write"),
            Err(e) => panic!("server read: {e}"),
        }
    }
    conn.close().await.expect("server close");
}

/// Sends the pattern of `seed` while reading the echo back; returns the bytes verified.
async fn client(b: B, addr: core::net::SocketAddr, seed: u64) -> usize {
    let conn = TcpStream::connect(&b, addr).await.expect("connect");
    let (mut out, mut expect) = (Pattern::new(seed), Pattern::new(seed));
    let (mut sent, mut verified) = (0, 0);
    let (mut chunk, mut want, mut got) = ([0u8; CHUNK], [0u8; CHUNK], [0u8; CHUNK]);
    while verified < BYTES_PER_CONNECTION {
        // Keep at most one chunk unechoed, so that neither side's window can fill with data
        // the other is not reading (both run on this one scheduler).
        if sent < BYTES_PER_CONNECTION && sent - verified < CHUNK {
            let n = CHUNK.min(BYTES_PER_CONNECTION - sent);
            out.fill(&mut chunk[..n]);
            conn.write_all(&chunk[..n]).await.expect("client write");
            sent += n;
        }
        let n = conn.read(&mut got).await.expect("client read");
        assert!(n > 0, "connection {seed}: EOF after {verified} bytes");
        expect.fill(&mut want[..n]);
        assert_eq!(
            got[..n],
            want[..n],
            "connection {seed}: bytes {verified}.. differ"
        );
        verified += n;
    }
    conn.shutdown_write().expect("shutdown");
    assert_eq!(
        conn.read(&mut got).await.expect("read EOF"),
        0,
        "EOF after the echo"
    );
    conn.close().await.expect("client close");
    verified
}

/// Runs the listener and the echo connections over two hosts built from `base`; returns the
/// heap peak above what was live before the hosts were built.
fn measure(base: Config) -> usize {
    let before = HEAP.live();
    HEAP.reset_peak();
    let host = |addr, mac| Config {
        addresses: vec![IpCidr::new(addr, 24)],
        mac: EthernetAddress([0x02, 0, 0, 0, 0, mac]),
        ..base.clone()
    };
    let mut net = WireNet::builder()
        .config_a(host(WIRE_ADDR_A.into(), 1))
        .config_b(Config {
            random_seed: base.random_seed ^ 0xb,
            ..host(WIRE_ADDR_B.into(), 2)
        })
        .build()
        .expect("wire net");
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(7);
    let handle = net.scheduler.handle().clone();
    let verified = net.scheduler.block_on(async move {
        let listener = TcpListener::bind(&a, addr).expect("listen");
        let server_handle = handle.clone();
        let server = handle.spawn(async move {
            let mut echoes = Vec::new();
            for _ in 0..CONNECTIONS {
                let (conn, _) = listener.accept().await.expect("accept");
                echoes.push(server_handle.spawn(echo(conn)));
            }
            for e in echoes {
                e.await;
            }
            listener.close().await.expect("listener close");
        });
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|seed| handle.spawn(client(b.clone(), addr, seed)))
            .collect();
        let mut verified = 0;
        for c in clients {
            verified += c.await;
        }
        server.await;
        verified
    });
    assert_eq!(verified, CONNECTIONS as usize * BYTES_PER_CONNECTION);
    let peak = HEAP.peak() - before;
    drop(net);
    peak
}

#[test]
fn small_config_runs_a_listener_and_four_echoes_in_192_kib() {
    let small = measure(Config::small());
    let default = measure(Config::default());
    println!(
        "heap peak, listener + {CONNECTIONS} echo connections of {BYTES_PER_CONNECTION} B \
         (both hosts): Config::small {small} B, Config::default {default} B"
    );
    assert!(
        small <= HEAP_CAP,
        "Config::small peaked at {small} B, over the {HEAP_CAP} B heap"
    );
    assert!(
        small < default,
        "Config::small ({small} B) should need less than Config::default ({default} B)"
    );
}
