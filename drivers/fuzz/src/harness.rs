//! Random and mutated frames against a smoltcp host: host A listens, host B holds a few
//! established connections to it with data in flight, and every frame of the input is pushed
//! into A's receive queue. Shared by the fuzz target (`drivers/fuzz`) and the seeded test
//! `drivers/tests/random_frames.rs`, which includes this file with `#[path]`.
//!
//! An input is a list of records, each one frame: `op`, a 2-byte length `n` (little endian,
//! at most 2047), then `n` bytes (fewer at the end of the input).
//!
//! * `op & 7` picks what the bytes are: 0 a whole Ethernet frame; 1 an IP packet behind a
//!   valid Ethernet header; 2 a TCP segment behind valid Ethernet and IPv4 headers from B;
//!   3 to 7 a frame B really sent (3 the SYN that opened a connection, 4 a data segment of
//!   a live connection, 5 its pure ACK, 6 B's ARP request, 7 that ACK turned into an RST),
//!   then edited by the bytes (see [`mutate`]).
//! * `op & 8` fixes up the checksums afterwards.
//! * `op >> 4` is how many milliseconds of simulated time run after the frame; 0 queues the
//!   next frame behind it first.
//!
//! After the frames, [`Harness::check`] asserts that the host is still sound: every
//! connection no frame could have reached still echoes byte for byte, and a fresh connection
//! gets through. Everything runs in simulated time, each wait bounded, so a wait that never
//! ends is reported rather than hung on.

use core::future::{poll_fn, Future};
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;
use std::format;
use std::string::String;
use std::sync::{Arc, Mutex};
use std::vec;
use std::vec::Vec;

use netpoll_core::{Handle, JoinHandle};
use netpoll_drivers::smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket,
};
use netpoll_drivers::{Side, SmolBackend, WireDevice, WireNet, WIRE_ADDR_A, WIRE_ADDR_B};
use netpoll_stack::{TcpListener, TcpStream};

type B = SmolBackend<WireDevice>;

/// The listener's port on A.
const PORT: u16 = 7;
const BACKLOG: u32 = 4;
/// Established connections from B.
const CONNS: usize = 3;
/// Bytes each connection writes before the frames, echoed back during them.
const IN_FLIGHT: usize = 300;
/// Frames per input; the rest is ignored.
pub const MAX_FRAMES: usize = 64;
/// Upper bound of every wait in the check: far beyond any retransmission backoff the frames
/// can cause (smoltcp's RTO is capped at 10 s).
const WAIT: Duration = Duration::from_secs(60);
const ETH: usize = 14;
/// The MACs `WireNet` gives A and B.
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Stops when `limit` of simulated time has passed: `None` then.
async fn within<F: Future>(h: &Handle, limit: Duration, f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut sleep = pin!(h.sleep(limit));
    poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

async fn read_exact(s: &TcpStream<B>, n: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut out[got..]).await {
            Ok(0) => return Err(format!("EOF after {got} of {n} bytes")),
            Ok(k) => got += k,
            Err(e) => return Err(format!("read: {e} after {got} of {n} bytes")),
        }
    }
    Ok(out)
}

/// What A's side of the test keeps: accepted streams (to abort at teardown) and their tasks.
#[derive(Default)]
struct Server {
    streams: Vec<TcpStream<B>>,
    tasks: Vec<JoinHandle<()>>,
    /// An accept that failed although nobody closed the listener.
    accept_error: Option<String>,
}

type Shared = Arc<Mutex<Server>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Server> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accepts until the listener is closed; echoes every connection.
async fn serve(h: Handle, listener: TcpListener<B>, server: Shared) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let task = h.spawn(echo(conn.clone()));
                let mut s = lock(&server);
                s.streams.push(conn);
                s.tasks.push(task);
            }
            Err(e) => {
                if !e.is_closed() {
                    lock(&server).accept_error = Some(format!("accept: {e}"));
                }
                return;
            }
        }
    }
}

async fn echo(conn: TcpStream<B>) {
    let mut buf = [0u8; 2048];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = conn.close().await;
}

struct Live {
    stream: TcpStream<B>,
    port: u16,
    /// Some frame could have reached this connection: it may be reset or desynchronised, so
    /// only liveness (every call returns) is checked.
    targeted: bool,
}

/// Frames B sent, the raw material of mutations: kept current while the frames run, so that
/// a replayed or edited segment carries the connection's present sequence numbers.
#[derive(Default)]
struct Templates {
    /// The first connection request B sent.
    syn: Option<Vec<u8>>,
    /// Per connection, B's latest segment with data.
    data: Vec<Option<Vec<u8>>>,
    /// Per connection, a pure ACK made from B's latest segment: at B's next sequence number.
    ack: Vec<Option<Vec<u8>>>,
    /// B's first ARP request.
    arp: Option<Vec<u8>>,
}

/// One setup: the two hosts, a listener on A with its echo server, and [`CONNS`] connections
/// from B with [`IN_FLIGHT`] bytes each on their way.
pub struct Harness {
    net: WireNet,
    listener: TcpListener<B>,
    server_task: Option<JoinHandle<()>>,
    server: Shared,
    live: Vec<Live>,
    templates: Templates,
    mac_a: [u8; 6],
    mac_b: [u8; 6],
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    /// Builds the setup (deterministic: the same every time).
    pub fn new() -> Harness {
        let mut net = WireNet::builder()
            .configure(|c| {
                // Small buffers: cheap to build, and windows the frames can fill.
                c.rx_buffer = 4096;
                c.tx_buffer = 4096;
            })
            .build()
            .expect("wire net");
        let (a, b) = (net.a.clone(), net.b.clone());
        let h = net.scheduler.handle().clone();
        let addr = SocketAddr::new(IpAddr::V4(WIRE_ADDR_A), PORT);
        net.wire.capture(usize::MAX);
        let server: Shared = Arc::default();
        let srv = server.clone();
        let (listener, server_task, live) = run(&mut net, async move {
            let listener = TcpListener::bind_with_backlog(&a, addr, BACKLOG).expect("listen");
            let task = h.spawn(serve(h.clone(), listener.clone(), srv));
            let mut live = Vec::new();
            for i in 0..CONNS {
                let c = TcpStream::connect(&b, addr).await.expect("connect");
                let msg = [0x40 + i as u8; 64];
                c.write_all(&msg).await.expect("write");
                assert_eq!(read_exact(&c, 64).await.expect("echo"), msg);
                let port = c.local_addr().expect("local address").port();
                live.push(Live {
                    stream: c,
                    port,
                    targeted: false,
                });
            }
            (listener, task, live)
        });
        let mut templates = Templates::default();
        templates.learn(net.wire.take_captured(), &live);
        assert!(
            templates.syn.is_some() && templates.arp.is_some(),
            "setup: no SYN or no ARP request captured"
        );
        let mut harness = Harness {
            net,
            listener,
            server_task: Some(server_task),
            server,
            live,
            templates,
            mac_a: MAC_A,
            mac_b: MAC_B,
        };
        // Data in flight: queued now, sent by B while the frames arrive at A.
        let streams: Vec<_> = harness.live.iter().map(|l| l.stream.clone()).collect();
        run(&mut harness.net, async move {
            for (i, s) in streams.iter().enumerate() {
                s.write_all(&[i as u8; IN_FLIGHT]).await.expect("write");
            }
        });
        harness
    }

    /// Injects the frames of `input`, then checks the host ([`Harness::check`]).
    pub fn run_input(mut self, input: &[u8]) {
        for frame in Frames::new(input) {
            let captured = self.net.wire.take_captured();
            self.templates.learn(captured, &self.live);
            let bytes = self.build(&frame);
            self.note_targets(&bytes);
            self.net.wire.inject(Side::A, bytes);
            if frame.run_ms > 0 {
                self.advance(Duration::from_millis(frame.run_ms));
            }
        }
        self.check();
    }

    fn advance(&mut self, d: Duration) {
        let h = self.net.scheduler.handle().clone();
        run(&mut self.net, async move { h.sleep(d).await });
    }

    /// Marks the live connections a frame could reach: its TCP checksum holds (smoltcp drops
    /// it otherwise) and it carries the connection's addresses and ports. Looser than smoltcp
    /// (which also checks the MAC and the IP checksum), so never too few.
    fn note_targets(&mut self, frame: &[u8]) {
        let Some((src, src_port, dst_port)) = tcp_tuple(frame) else {
            return;
        };
        for l in &mut self.live {
            if src == WIRE_ADDR_B && src_port == l.port && dst_port == PORT {
                l.targeted = true;
            }
        }
    }

    /// The frame a record describes.
    fn build(&self, r: &Record<'_>) -> Vec<u8> {
        let conn = r.bytes.first().map_or(0, |&b| b as usize % CONNS);
        let mut f = match r.op & 7 {
            0 => return r.bytes.to_vec(),
            1 => {
                let mut f = self.eth_header();
                f.extend_from_slice(r.bytes);
                return f;
            }
            2 => {
                let mut f = self.eth_header();
                f.extend_from_slice(&ipv4_header(r.bytes.len()));
                f.extend_from_slice(r.bytes);
                fix_checksums(&mut f, r.op & 8 != 0, r.op & 8 != 0);
                return f;
            }
            kind => match self.templates.get(kind, conn) {
                Some(t) => t.clone(),
                None => return r.bytes.to_vec(),
            },
        };
        if r.op & 7 == 7 {
            // RST|ACK at the sequence number B had: a reset that looks valid.
            let flags = tcp_offset(&f).unwrap_or(0) + 13;
            put(&mut f, flags, &[0x14]);
        }
        let (fix_ip, fix_tcp) = mutate(&mut f, r.bytes.get(1..).unwrap_or(&[]), &self.live);
        if r.op & 8 != 0 {
            fix_checksums(&mut f, fix_ip, fix_tcp);
        }
        f
    }

    fn eth_header(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(ETH + 20 + 60);
        f.extend_from_slice(&self.mac_a);
        f.extend_from_slice(&self.mac_b);
        f.extend_from_slice(&[0x08, 0x00]);
        f
    }

    /// The invariants, after the frames: no wait hangs, untouched connections echo byte for
    /// byte, touched ones still answer every call, a fresh connection echoes, the accept loop
    /// never failed. Panics with what broke.
    pub fn check(mut self) {
        self.net.wire.capture(0);
        // B's own ARP request, again: a forged ARP frame may have pointed A's neighbour cache
        // for B elsewhere (that is ARP working as designed, not a fault in the host).
        if let Some(arp) = self.templates.arp.clone() {
            self.net.wire.inject(Side::A, arp);
        }
        let h = self.net.scheduler.handle().clone();
        let live: Vec<(usize, TcpStream<B>, bool)> = self
            .live
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.stream.clone(), l.targeted))
            .collect();
        let b = self.net.b.clone();
        let failures = run(&mut self.net, async move {
            let mut failures = Vec::new();
            for (i, s, targeted) in live {
                let msg = [0x80 + i as u8; 100];
                let mut expect = vec![i as u8; IN_FLIGHT];
                expect.extend_from_slice(&msg);
                if targeted {
                    // Any outcome, as long as each call returns (deadlines are the bound).
                    let _ = s.set_deadline(Some(h.now() + Duration::from_secs(5)));
                    let got = within(&h, WAIT, async {
                        let _ = s.write_all(&msg).await;
                        let _ = read_exact(&s, expect.len()).await;
                    })
                    .await;
                    if got.is_none() {
                        failures.push(format!(
                            "connection {i} (targeted): a call ignored its deadline"
                        ));
                    }
                    continue;
                }
                let got = within(&h, WAIT, async {
                    s.write_all(&msg).await.map_err(|e| format!("write: {e}"))?;
                    read_exact(&s, expect.len()).await
                })
                .await;
                match got {
                    None => failures.push(format!("connection {i}: no echo within {WAIT:?}")),
                    Some(Err(e)) => failures.push(format!("connection {i}: {e}")),
                    Some(Ok(v)) if v != expect => {
                        failures.push(format!("connection {i}: echo differs"))
                    }
                    Some(Ok(_)) => {}
                }
            }
            let addr = SocketAddr::new(IpAddr::V4(WIRE_ADDR_A), PORT);
            // A frame may have taken the next ephemeral port's tuple: a few tries, each on a
            // new port.
            let mut last = String::new();
            let mut ok = false;
            for _ in 0..3 {
                let got = within(&h, WAIT, async {
                    let c = TcpStream::connect(&b, addr)
                        .await
                        .map_err(|e| format!("connect: {e}"))?;
                    c.write_all(b"fresh")
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                    let v = read_exact(&c, 5).await?;
                    let _ = c.abort().await;
                    if v == b"fresh" {
                        Ok(())
                    } else {
                        Err(String::from("echo differs"))
                    }
                })
                .await;
                match got {
                    Some(Ok(())) => {
                        ok = true;
                        break;
                    }
                    Some(Err(e)) => last = e,
                    None => last = format!("no echo within {WAIT:?}"),
                }
            }
            if !ok {
                failures.push(format!("fresh connection: {last}"));
            }
            failures
        });
        let accept_error = lock(&self.server).accept_error.take();
        self.teardown();
        let mut failures = failures;
        failures.extend(accept_error);
        assert!(
            failures.is_empty(),
            "host unsound after the frames: {failures:?}"
        );
    }

    /// Ends every task, so nothing outlives the input (a parked task would keep the
    /// scheduler, and both hosts, alive).
    fn teardown(&mut self) {
        let listener = self.listener.clone();
        let server_task = self.server_task.take();
        let server = self.server.clone();
        let live: Vec<_> = self.live.drain(..).map(|l| l.stream).collect();
        let h = self.net.scheduler.handle().clone();
        let done = run(&mut self.net, async move {
            let _ = listener.close().await;
            for s in &live {
                let _ = s.abort().await;
            }
            let (streams, tasks) = {
                let mut s = lock(&server);
                (
                    core::mem::take(&mut s.streams),
                    core::mem::take(&mut s.tasks),
                )
            };
            for s in &streams {
                let _ = s.abort().await;
            }
            within(&h, WAIT, async {
                if let Some(t) = server_task {
                    t.await;
                }
                for t in tasks {
                    t.await;
                }
            })
            .await
            .is_some()
        });
        assert!(done, "a task outlived close and abort of every socket");
    }
}

/// Runs `f` on the net's scheduler; a scheduler error (a simulated deadlock) is a failure.
fn run<F: Future>(net: &mut WireNet, f: F) -> F::Output {
    match net.scheduler.try_block_on(f) {
        Ok(v) => v,
        Err(e) => panic!("scheduler stopped: {e}"),
    }
}

/// One record of an input.
#[derive(Debug)]
struct Record<'a> {
    op: u8,
    bytes: &'a [u8],
    run_ms: u64,
}

struct Frames<'a> {
    rest: &'a [u8],
    n: usize,
}

impl<'a> Frames<'a> {
    fn new(input: &'a [u8]) -> Self {
        Frames { rest: input, n: 0 }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.n >= MAX_FRAMES {
            return None;
        }
        let (&op, rest) = self.rest.split_first()?;
        let len = match rest {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi]) & 0x7ff),
            _ => 0,
        };
        let rest = rest.get(2..).unwrap_or(&[]);
        let (bytes, rest) = rest.split_at(len.min(rest.len()));
        self.rest = rest;
        self.n += 1;
        Some(Record {
            op,
            bytes,
            run_ms: u64::from(op >> 4),
        })
    }
}

/// Reads mutation arguments; zeros past the end.
struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Edits a captured frame: each step is a kind byte and its arguments. Returns whether the
/// IPv4 and the TCP checksum are to be fixed (when the record asks for fixing at all).
fn mutate(f: &mut Vec<u8>, bytes: &[u8], live: &[Live]) -> (bool, bool) {
    let mut args = Args(bytes);
    let (mut fix_ip, mut fix_tcp) = (true, true);
    while !args.is_empty() {
        let tcp = tcp_offset(f).unwrap_or(ETH + 20);
        match args.u8() % 16 {
            0 => {
                // Flags, NS included.
                let (flags, ns) = (args.u8(), args.u8() & 1);
                put(f, tcp + 13, &[flags]);
                if let Some(b) = f.get_mut(tcp + 12) {
                    *b = (*b & 0xfe) | ns;
                }
            }
            1 => add_u32(f, tcp + 4, i32::from(args.u16() as i16) as u32),
            2 => add_u32(f, tcp + 4, args.u32()),
            3 => add_u32(f, tcp + 8, i32::from(args.u16() as i16) as u32),
            4 => add_u32(f, tcp + 8, args.u32()),
            5 => put(f, tcp + 14, &args.u16().to_be_bytes()),
            6 => {
                // Data offset, any value.
                let v = args.u8() & 0xf0;
                if let Some(b) = f.get_mut(tcp + 12) {
                    *b = (*b & 0x0f) | v;
                }
            }
            7 => {
                // Options after the existing ones, up to 40 bytes in all.
                let n = usize::from(args.u8() % 41);
                let opts: Vec<u8> = (0..n).map(|_| args.u8()).collect();
                insert_options(f, tcp, &opts);
            }
            8 => {
                // Payload of a new length, filled with one byte.
                let (n, fill) = (usize::from(args.u16() % 1461), args.u8());
                set_payload(f, tcp, n, fill);
            }
            9 => {
                let n = usize::from(args.u16());
                f.truncate(n % f.len().max(1));
            }
            10 => {
                let (i, v) = (usize::from(args.u8() % 20), args.u8());
                put(f, ETH + i, &[v]);
            }
            11 => {
                let (i, v) = (usize::from(args.u8() % 20), args.u8());
                put(f, tcp + i, &[v]);
            }
            12 => {
                let (i, v) = (usize::from(args.u8() % 14), args.u8());
                put(f, i, &[v]);
            }
            13 => {
                // Another connection's source port (or the listener's, or any).
                let k = args.u8();
                let port = match live.get(usize::from(k) % (CONNS + 2)) {
                    Some(l) => l.port,
                    None if k % 2 == 0 => PORT,
                    None => args.u16(),
                };
                put(f, tcp, &port.to_be_bytes());
            }
            14 => fix_tcp = false,
            _ => fix_ip = false,
        }
    }
    (fix_ip, fix_tcp)
}

fn put(f: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(d) = f.get_mut(at..at + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}

fn add_u32(f: &mut [u8], at: usize, delta: u32) {
    if let Some(d) = f.get_mut(at..at + 4) {
        let v = u32::from_be_bytes([d[0], d[1], d[2], d[3]]).wrapping_add(delta);
        d.copy_from_slice(&v.to_be_bytes());
    }
}

/// Where the TCP header starts, from the IPv4 header length.
fn tcp_offset(f: &[u8]) -> Option<usize> {
    let ihl = usize::from(*f.get(ETH)? & 0x0f) * 4;
    (ihl >= 20).then_some(ETH + ihl)
}

/// The TCP header length from the data offset.
fn tcp_header_len(f: &[u8], tcp: usize) -> Option<usize> {
    Some(usize::from(*f.get(tcp + 12)? >> 4) * 4)
}

fn insert_options(f: &mut Vec<u8>, tcp: usize, opts: &[u8]) {
    let Some(hl) = tcp_header_len(f, tcp) else {
        return;
    };
    let padded = opts.len().div_ceil(4) * 4;
    if hl < 20 || hl + padded > 60 || tcp + hl > f.len() {
        return;
    }
    let mut add = opts.to_vec();
    add.resize(padded, 0);
    let at = tcp + hl;
    f.splice(at..at, add);
    let doff = ((hl + padded) / 4) as u8;
    f[tcp + 12] = (f[tcp + 12] & 0x0f) | (doff << 4);
    set_total_len(f);
}

fn set_payload(f: &mut Vec<u8>, tcp: usize, n: usize, fill: u8) {
    let Some(hl) = tcp_header_len(f, tcp) else {
        return;
    };
    if tcp + hl > f.len() {
        return;
    }
    f.truncate(tcp + hl);
    f.resize(tcp + hl + n, fill);
    set_total_len(f);
}

/// Makes the IPv4 total length cover the rest of the frame.
fn set_total_len(f: &mut [u8]) {
    let len = f.len().saturating_sub(ETH).min(usize::from(u16::MAX)) as u16;
    put(f, ETH + 2, &len.to_be_bytes());
}

/// A minimal IPv4 header from B to A for a TCP payload of `len` bytes (checksum left zero).
fn ipv4_header(len: usize) -> [u8; 20] {
    let total = (20 + len).min(usize::from(u16::MAX)) as u16;
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = 64;
    h[9] = 6;
    h[12..16].copy_from_slice(&WIRE_ADDR_B.octets());
    h[16..20].copy_from_slice(&WIRE_ADDR_A.octets());
    h
}

/// Recomputes the IPv4 header checksum and the TCP checksum, where the headers parse.
fn fix_checksums(f: &mut [u8], ip: bool, tcp: bool) {
    let Ok(mut eth) = EthernetFrame::new_checked(&mut *f) else {
        return;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return;
    }
    let Ok(mut p) = Ipv4Packet::new_checked(eth.payload_mut()) else {
        return;
    };
    if ip {
        p.fill_checksum();
    }
    if !tcp || p.next_header() != IpProtocol::Tcp {
        return;
    }
    let (src, dst) = (p.src_addr(), p.dst_addr());
    if let Ok(mut t) = TcpPacket::new_checked(p.payload_mut()) {
        t.fill_checksum(&src.into(), &dst.into());
    }
}

/// Source address and ports of a TCP segment whose TCP checksum holds.
fn tcp_tuple(f: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let p = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if p.next_header() != IpProtocol::Tcp {
        return None;
    }
    let t = TcpPacket::new_checked(p.payload()).ok()?;
    if !t.verify_checksum(&p.src_addr().into(), &p.dst_addr().into()) {
        return None;
    }
    Some((p.src_addr(), t.src_port(), t.dst_port()))
}

impl Templates {
    /// Takes in what crossed the wire since the last call; only what B sent to A counts.
    fn learn(&mut self, captured: Vec<(Side, Vec<u8>)>, live: &[Live]) {
        self.data.resize(live.len(), None);
        self.ack.resize(live.len(), None);
        for (side, f) in captured {
            if side != Side::A {
                continue;
            }
            let Ok(eth) = EthernetFrame::new_checked(&f[..]) else {
                continue;
            };
            if eth.ethertype() == EthernetProtocol::Arp {
                if self.arp.is_none() {
                    self.arp = Some(f.clone());
                }
                continue;
            }
            let Ok(p) = Ipv4Packet::new_checked(eth.payload()) else {
                continue;
            };
            let Ok(tcp) = TcpPacket::new_checked(p.payload()) else {
                continue;
            };
            if tcp.dst_port() != PORT || tcp.rst() {
                continue;
            }
            if tcp.syn() && !tcp.ack() {
                if self.syn.is_none() {
                    self.syn = Some(f.clone());
                }
                continue;
            }
            let Some(i) = live.iter().position(|l| l.port == tcp.src_port()) else {
                continue;
            };
            let len = tcp.payload().len() + usize::from(tcp.fin());
            let Some(t) = tcp_offset(&f) else {
                continue;
            };
            let hl = tcp.header_len() as usize;
            let mut ack = f[..t + hl].to_vec();
            add_u32(&mut ack, t + 4, len as u32);
            put(&mut ack, t + 13, &[0x10]);
            set_total_len(&mut ack);
            fix_checksums(&mut ack, true, true);
            self.ack[i] = Some(ack);
            if !tcp.payload().is_empty() {
                self.data[i] = Some(f);
            }
        }
    }

    fn get(&self, kind: u8, conn: usize) -> Option<&Vec<u8>> {
        match kind {
            3 => self.syn.as_ref(),
            4 => self.data.get(conn)?.as_ref(),
            5 | 7 => self.ack.get(conn)?.as_ref(),
            _ => self.arp.as_ref(),
        }
    }
}

/// A few inputs that reach each kind of record: a start for the fuzzer's corpus.
pub fn seeds() -> Vec<Vec<u8>> {
    let records: &[(u8, &[u8])] = &[
        // A short garbage frame, then a truncated IPv4 header.
        (0x10, &[0xff; 20]),
        (0x11, &[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6]),
        // A bare TCP header with SYN to the listener, checksum fixed.
        (
            0x1a,
            &[
                0x9c, 0x40, 0, PORT as u8, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x10, 0, 0, 0, 0, 0,
            ],
        ),
        // The captured SYN, replayed; with a new source port (a second connection request).
        (0x1b, &[0]),
        (0x1b, &[0, 13, 4, 1, 0x30]),
        // A data segment of connection 1: replayed, shifted forward, with options.
        (0x1c, &[1]),
        (
            0x1c,
            &[
                1, 1, 0x10, 0x00, 7, 8, 1, 3, 3, 0, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0,
            ],
        ),
        // An ACK of connection 0 acknowledging too much; a window of zero.
        (0x1d, &[0, 3, 0x00, 0x40]),
        (0x1d, &[0, 5, 0, 0]),
        // A forged ARP reply, then the valid-looking RST of connection 2.
        (0x16, &[0, 12, 6, 0x66]),
        (0x1f, &[2]),
        // An RST just outside the window: must be ignored (or challenged).
        (0x1f, &[2, 1, 0x00, 0x80]),
    ];
    let rec = |op: u8, bytes: &[u8]| {
        let mut v = vec![op];
        v.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        v.extend_from_slice(bytes);
        v
    };
    let mut out: Vec<Vec<u8>> = records.iter().map(|&(op, b)| rec(op, b)).collect();
    // All of them queued back to back, then one run of the scheduler.
    let mut batched = Vec::new();
    for (i, &(op, b)) in records.iter().enumerate() {
        let op = if i + 1 == records.len() {
            op
        } else {
            op & 0x0f
        };
        batched.extend(rec(op, b));
    }
    out.push(batched);
    out
}
