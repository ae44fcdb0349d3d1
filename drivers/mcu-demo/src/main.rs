//! netpoll on a Cortex-M4: netpoll-core's scheduler and netpoll-drivers' smoltcp backend, two
//! hosts (client 10.0.0.2, server 10.0.0.1) on the in-memory wire, in a 192 KiB heap.
//!
//! The server listens and echoes; four clients each send a seeded byte stream and check the
//! echo byte for byte. Everything runs in simulated time (`SimClock`, the wire's simulated
//! waiter), so no timer peripheral is needed. The result line and the exit status go out
//! through semihosting: 0 when every byte came back, 1 otherwise (or on a panic).
//!
//! `hosted/scripts/mcu-demo.sh` builds it and runs it under `qemu-system-arm -machine
//! mps2-an386`; `docs/porting.md` (Microcontrollers) says what a real port adds.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod sys;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::SocketAddr;

use cortex_m_semihosting::{debug, hprintln};
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{Config, WireDevice, WireNet, WIRE_ADDR_A, WIRE_ADDR_B};
use netpoll_stack::{TcpListener, TcpStream};

type Backend = netpoll_drivers::SmolBackend<WireDevice>;

const PORT: u16 = 7;
const CONNECTIONS: u64 = 4;
/// Bytes each client sends and reads back: a few times the small socket buffers.
const BYTES_PER_CONNECTION: usize = 8 * 1024;
/// Bytes moved per read or write; the tasks hold these buffers on the heap.
const CHUNK: usize = 256;

/// xorshift64* stream: the bytes a client sends, generated again to check the echo.
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

/// Echoes one connection until the client's FIN.
async fn echo(conn: TcpStream<Backend>) -> Result<(), String> {
    let mut buf = [0u8; CHUNK];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => conn
                .write_all(&buf[..n])
                .await
                .map_err(|e| format!("server write: {e}"))?,
            Err(e) => return Err(format!("server read: {e}")),
        }
    }
    conn.close().await.map_err(|e| format!("server close: {e}"))
}

/// Sends the pattern of `seed` and checks its echo; the bytes checked.
async fn client(backend: Backend, addr: SocketAddr, seed: u64) -> Result<usize, String> {
    let conn = TcpStream::connect(&backend, addr)
        .await
        .map_err(|e| format!("connection {seed}: connect: {e}"))?;
    let (mut out, mut expect) = (Pattern::new(seed), Pattern::new(seed));
    let (mut sent, mut checked) = (0, 0);
    let (mut chunk, mut want, mut got) = ([0u8; CHUNK], [0u8; CHUNK], [0u8; CHUNK]);
    while checked < BYTES_PER_CONNECTION {
        // At most one chunk unechoed: neither window fills with data nobody reads.
        if sent < BYTES_PER_CONNECTION && sent - checked < CHUNK {
            let n = CHUNK.min(BYTES_PER_CONNECTION - sent);
            out.fill(&mut chunk[..n]);
            conn.write_all(&chunk[..n])
                .await
                .map_err(|e| format!("connection {seed}: write: {e}"))?;
            sent += n;
        }
        let n = conn
            .read(&mut got)
            .await
            .map_err(|e| format!("connection {seed}: read: {e}"))?;
        if n == 0 {
            return Err(format!("connection {seed}: EOF after {checked} bytes"));
        }
        expect.fill(&mut want[..n]);
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            return Err(format!(
                "connection {seed}: byte {} is {:#04x}, sent {:#04x}",
                checked + i,
                got[i],
                want[i]
            ));
        }
        checked += n;
    }
    conn.shutdown_write()
        .map_err(|e| format!("connection {seed}: shutdown: {e}"))?;
    match conn.read(&mut got).await {
        Ok(0) => {}
        Ok(n) => return Err(format!("connection {seed}: {n} bytes past the echo")),
        Err(e) => return Err(format!("connection {seed}: read EOF: {e}")),
    }
    conn.close()
        .await
        .map_err(|e| format!("connection {seed}: close: {e}"))?;
    Ok(checked)
}

/// The echo run: the bytes checked.
fn run() -> Result<usize, String> {
    let host = |addr: core::net::Ipv4Addr, mac: u8, seed: u64| Config {
        addresses: alloc::vec![IpCidr::new(addr.into(), 24)],
        mac: EthernetAddress([0x02, 0, 0, 0, 0, mac]),
        random_seed: seed,
        ..Config::small()
    };
    let mut net = WireNet::builder()
        .config_a(host(WIRE_ADDR_A, 1, 0x6d63_7561))
        .config_b(host(WIRE_ADDR_B, 2, 0x6d63_7562))
        .build()
        .map_err(|e| format!("wire net: {e}"))?;
    let (server_backend, client_backend) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(PORT);
    let handle = net.scheduler.handle().clone();
    let checked = net.scheduler.block_on(async move {
        let listener =
            TcpListener::bind(&server_backend, addr).map_err(|e| format!("listen: {e}"))?;
        let server_handle = handle.clone();
        let server = handle.spawn(async move {
            let mut echoes = Vec::new();
            for _ in 0..CONNECTIONS {
                let (conn, _) = listener
                    .accept()
                    .await
                    .map_err(|e| format!("accept: {e}"))?;
                echoes.push(server_handle.spawn(echo(conn)));
            }
            for e in echoes {
                e.await?;
            }
            listener
                .close()
                .await
                .map_err(|e| format!("listener close: {e}"))
        });
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|seed| handle.spawn(client(client_backend.clone(), addr, seed)))
            .collect();
        let mut checked = 0;
        for c in clients {
            checked += c.await?;
        }
        server.await?;
        Ok::<usize, String>(checked)
    })?;
    let expected = CONNECTIONS as usize * BYTES_PER_CONNECTION;
    if checked != expected {
        return Err(format!("{checked} bytes echoed, {expected} sent"));
    }
    Ok(checked)
}

fn main() -> ! {
    let outcome = run();
    let (stack, ram) = sys::stack_peak();
    let heap = format!(
        "heap peak {} of {} B, {} B still in use; stack peak {stack} of {ram} B free RAM",
        sys::HEAP.peak(),
        sys::HEAP_SIZE,
        sys::HEAP.used()
    );
    match outcome {
        Ok(bytes) => {
            // Positional arguments: `hprintln!` appends a newline with `concat!`, which drops
            // inline captures.
            hprintln!(
                "netpoll-mcu-demo: ok: {} TCP echo connections, {} B checked byte for byte; {}",
                CONNECTIONS,
                bytes,
                heap
            );
            debug::exit(debug::EXIT_SUCCESS);
        }
        Err(e) => {
            hprintln!("netpoll-mcu-demo: FAILED: {}; {}", e, heap);
            debug::exit(debug::EXIT_FAILURE);
        }
    }
    // Semihosting exit returns only when no debugger or emulator answers it.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("netpoll-mcu-demo: FAILED: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
