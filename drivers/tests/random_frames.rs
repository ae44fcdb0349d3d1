//! Seeded random and mutated frames against a smoltcp host with a listener and live
//! connections (the fuzz target's harness, `drivers/fuzz/src/harness.rs`, on the stable
//! toolchain): no panic, no wait that never ends, untouched connections still echo, and a
//! fresh connection gets through after every input.

#[path = "../fuzz/src/harness.rs"]
mod harness;

use harness::Harness;

/// xorshift64*: seeded inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One input of `frames` records: mostly mutations of captured segments (small edits, so
/// that many still parse), some raw bytes.
fn input(rng: &mut Rng, frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..frames {
        let op = rng.byte();
        let len = match op & 7 {
            0..=2 => rng.below(80) as usize,
            _ => 1 + rng.below(24) as usize,
        };
        out.push(op);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend((0..len).map(|_| rng.byte()));
    }
    out
}

/// Runs `input` on a fresh setup, failing the test if it takes more than a minute of real
/// time (a loop that never advances simulated time).
fn run(input: Vec<u8>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        Harness::new().run_input(&input);
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => worker.join().expect("harness thread"),
        // The harness panicked: rethrow its message.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().expect_err("harness failed"))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("harness hung (real time)"),
    }
}

/// 120 inputs of up to 40 frames each (about 2400 frames), from a fixed seed.
#[test]
fn seeded_random_frames() {
    let mut rng = Rng(0x6e65_7470_6f6c_6c21);
    for _ in 0..120 {
        let frames = 1 + rng.below(40) as usize;
        run(input(&mut rng, frames));
    }
}

/// The fuzz target's seed corpus, each input on its own.
#[test]
fn seed_corpus() {
    for seed in harness::seeds() {
        run(seed);
    }
}

/// Pure noise: random bytes parsed as records.
#[test]
fn random_bytes_as_records() {
    let mut rng = Rng(7);
    for _ in 0..40 {
        let len = rng.below(600) as usize;
        run((0..len).map(|_| rng.byte()).collect());
    }
}

/// Found by this harness: a second `block_on` on the same single-worker scheduler never
/// blocked in its source (the first left the scheduler's stop flag set), so simulated time
/// never advanced and a sleep never ended: the thread spun.
#[test]
fn second_block_on_still_advances_simulated_time() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut net = netpoll_drivers::WireNet::new();
        let h = net.scheduler.handle().clone();
        net.scheduler.block_on(async {});
        net.scheduler
            .block_on(async move { h.sleep(std::time::Duration::from_millis(1)).await });
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok(),
        "the second block_on never returned"
    );
}

/// Found by this harness: SYNs from an on-link address nobody answers for (the SYN-ACK
/// waits for ARP forever) must not hold the listener's pool sockets in SYN-RECEIVED for good,
/// or once `backlog` such SYNs arrived every later connection request is dropped at the
/// backlog gate and `connect` never completes.
#[test]
fn spoofed_syns_do_not_hold_the_backlog_forever() {
    use core::time::Duration;
    use netpoll_drivers::smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};
    use netpoll_drivers::{Side, WireNet};
    use netpoll_stack::{TcpListener, TcpStream};

    let mut net = WireNet::new();
    let (a, b) = (net.a.clone(), net.b.clone());
    let addr = net.addr_a(7);
    let wire = net.wire.clone();
    let h = net.scheduler.handle().clone();
    let got = net.scheduler.block_on(async move {
        let listener = TcpListener::bind_with_backlog(&a, addr, 2).unwrap();
        // One real connection, to capture a SYN to copy.
        wire.capture(usize::MAX);
        let first = TcpStream::connect(&b, addr).await.unwrap();
        let (_conn, _) = listener.accept().await.unwrap();
        wire.capture(0);
        // B's first IPv4 frame (after ARP) is its SYN.
        let (_, syn) = wire
            .take_captured()
            .into_iter()
            .find(|(side, f)| *side == Side::A && f.get(12..14) == Some(&[8, 0]))
            .expect("the SYN");
        for port in [1000u16, 1001] {
            let mut f = syn.clone();
            let mut eth = EthernetFrame::new_checked(&mut f[..]).unwrap();
            let mut ip = Ipv4Packet::new_checked(eth.payload_mut()).unwrap();
            ip.set_src_addr([10, 0, 0, 7].into());
            ip.fill_checksum();
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let mut tcp = TcpPacket::new_checked(ip.payload_mut()).unwrap();
            tcp.set_src_port(port);
            tcp.fill_checksum(&src.into(), &dst.into());
            assert!(wire.inject(Side::A, f));
        }
        h.sleep(Duration::from_millis(10)).await;
        drop(first);
        let deadline = h.now() + Duration::from_secs(300);
        TcpStream::connect_deadline(&b, addr, Some(deadline))
            .await
            .map(|_| ())
    });
    assert!(got.is_ok(), "connect after spoofed SYNs: {got:?}");
}
