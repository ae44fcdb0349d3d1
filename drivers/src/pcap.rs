//! Packet capture (feature `std`): every frame a host sends or receives, in a pcap file that
//! Wireshark or `tcpdump -r` read.
//!
//! [`capture`] wraps any smoltcp device in smoltcp's `PcapWriter` with a [`PcapFile`] sink, in
//! both directions. Nothing else changes: take the device's waiter (`TapDevice::waiter`,
//! a wire's waiter) before wrapping; it waits on the device's descriptor or queues, which the
//! wrapper leaves alone, so readiness and wake-ups work as without capture.
//!
//! ```no_run
//! # #[cfg(feature = "tap")] {
//! use netpoll_core::Scheduler;
//! use netpoll_drivers::{capture, Config, Host, MonotonicClock, PcapFile, SmolBackend,
//!     SmolSource, TapDevice};
//!
//! let device = TapDevice::open("tap0").unwrap();
//! let waiter = device.waiter();
//! let pcap = PcapFile::create("tap0.pcap").unwrap();
//! let clock = MonotonicClock::new();
//! let host = Host::new(capture(device, pcap.clone()), Config::default(), clock.clone()).unwrap();
//! let source = SmolSource::new(waiter).with_host(host.clone());
//! let scheduler = Scheduler::new(source, clock);
//! let backend = SmolBackend::new(host, scheduler.handle().clone());
//! // ... run the application on `scheduler` with `backend`, then:
//! pcap.flush().unwrap();
//! # let _ = backend;
//! # }
//! ```

use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::sync::Arc;
use core::fmt;
use core::time::Duration;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use smoltcp::phy::{Device, PcapLinkType, PcapMode, PcapSink, PcapWriter};

/// A device whose every frame, received or sent, is also written to a [`PcapFile`].
pub type Captured<D> = PcapWriter<D, PcapFile>;

/// Wraps `device` so that every frame it receives or transmits is written to `file` (the
/// file's header is written now, with the device's medium as link type).
pub fn capture<D: Device>(device: D, file: PcapFile) -> Captured<D> {
    PcapWriter::new(device, file, PcapMode::Both)
}

/// How long written frames may sit in the buffer before the next frame flushes them, so a
/// capture of a live server can be read while it runs.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A pcap file (libpcap format, microsecond timestamps) being written; cloning gives another
/// handle to the same file, so the application keeps one to [`flush`](PcapFile::flush) it
/// while the device owns the other.
///
/// Records carry the wall-clock time they were captured at (not the host's clock, which may be
/// simulated or start at zero). Writes are buffered and flushed at least once a second while
/// frames flow, and by [`flush`](PcapFile::flush): call it before the program exits. A write
/// error stops the capture (the network keeps running) and is reported by `flush`.
#[derive(Clone)]
pub struct PcapFile {
    shared: Arc<Mutex<Output>>,
}

struct Output {
    writer: Box<dyn Write + Send>,
    /// The first write error; nothing is written after it.
    error: Option<io::Error>,
    last_flush: SystemTime,
    frames: u64,
}

impl fmt::Debug for PcapFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PcapFile")
            .field("frames", &self.frames())
            .finish_non_exhaustive()
    }
}

impl PcapFile {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> io::Result<PcapFile> {
        Ok(PcapFile::new(BufWriter::with_capacity(
            64 * 1024,
            File::create(path)?,
        )))
    }

    /// Captures into `writer` (buffer it if it is a file or a socket).
    pub fn new(writer: impl Write + Send + 'static) -> PcapFile {
        PcapFile {
            shared: Arc::new(Mutex::new(Output {
                writer: Box::new(writer),
                error: None,
                last_flush: SystemTime::now(),
                frames: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Output> {
        // A panic while writing leaves at worst a truncated record; keep capturing.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.lock().frames
    }

    /// Writes out what is buffered. Fails with the first write error of the capture, if any.
    pub fn flush(&self) -> io::Result<()> {
        let mut out = self.lock();
        if let Some(e) = &out.error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        out.last_flush = SystemTime::now();
        out.writer.flush()
    }
}

impl Output {
    /// Writes `bytes` unless an earlier write failed; records the first failure.
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            if let Err(e) = self.writer.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }
}

impl PcapSink for PcapFile {
    fn write(&mut self, data: &[u8]) {
        self.lock().put(data);
    }

    fn flush(&mut self) {
        // `PcapFile::flush` reports the error; the sink interface has no way to.
        let _ = PcapFile::flush(self);
    }

    fn global_header(&mut self, link_type: PcapLinkType) {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
        header[4..6].copy_from_slice(&2u16.to_ne_bytes());
        header[6..8].copy_from_slice(&4u16.to_ne_bytes());
        // Bytes 8..16: time zone and accuracy, both zero.
        header[16..20].copy_from_slice(&self.max_packet_size().to_ne_bytes());
        header[20..24].copy_from_slice(&u32::from(link_type).to_ne_bytes());
        self.lock().put(&header);
    }

    /// One record: the wall-clock time, then the frame (truncated to the snap length; frames
    /// are at most an MTU, far below it). Flushed at most once a second.
    fn packet(&mut self, _stack_time: smoltcp::time::Instant, packet: &[u8]) {
        let now = SystemTime::now();
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let snap = self.max_packet_size() as usize;
        let captured = &packet[..packet.len().min(snap)];
        let mut header = [0u8; 16];
        // The classic format's 32-bit seconds (good until 2106).
        header[0..4].copy_from_slice(&(since_epoch.as_secs() as u32).to_ne_bytes());
        header[4..8].copy_from_slice(&since_epoch.subsec_micros().to_ne_bytes());
        header[8..12].copy_from_slice(&(captured.len() as u32).to_ne_bytes());
        let original = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        header[12..16].copy_from_slice(&original.to_ne_bytes());
        let mut out = self.lock();
        out.put(&header);
        out.put(captured);
        out.frames += 1;
        let due = now
            .duration_since(out.last_flush)
            .is_ok_and(|d| d >= FLUSH_INTERVAL);
        if due && out.error.is_none() {
            out.last_flush = now;
            if let Err(e) = out.writer.flush() {
                out.error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Host, SimClock, SmolBackend, SmolSource, Watch, Wire, WireConfig, WireWaiter};
    use crate::{Side, WIRE_ADDR_A, WIRE_ADDR_B};
    use alloc::vec::Vec;
    use netpoll_core::Scheduler;
    use netpoll_stack::{TcpListener, TcpStream};
    use smoltcp::wire::{EthernetAddress, IpCidr};

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A TCP segment read back from a capture.
    #[derive(Debug, Clone, Copy)]
    struct Segment {
        src: u16,
        dst: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: usize,
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;

    /// The TCP segments of a pcap file of Ethernet frames, checking every record on the way.
    fn tcp_segments(file: &[u8]) -> Vec<Segment> {
        assert!(file.len() >= 24, "no global header");
        assert_eq!(&file[0..4], &0xa1b2_c3d4u32.to_ne_bytes(), "magic");
        let u16_at = |b: &[u8], at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        assert_eq!((u16_at(file, 4), u16_at(file, 6)), (2, 4), "version");
        assert_eq!(u32_at(file, 20), 1, "link type Ethernet");
        let mut segments = Vec::new();
        let mut at = 24;
        while at < file.len() {
            let (captured, original) = (u32_at(file, at + 8), u32_at(file, at + 12));
            assert_eq!(captured, original, "frame truncated");
            let frame = &file[at + 16..at + 16 + captured as usize];
            at += 16 + captured as usize;
            // IPv4 over Ethernet, TCP.
            if frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 6 {
                continue;
            }
            let ip = &frame[14..];
            let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let tcp = &ip[usize::from(ip[0] & 0x0f) * 4..ip_len];
            let be16 = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
            let be32 = |at: usize| u32::from_be_bytes(tcp[at..at + 4].try_into().unwrap());
            segments.push(Segment {
                src: be16(0),
                dst: be16(2),
                flags: tcp[13],
                seq: be32(4),
                ack: be32(8),
                payload: tcp.len() - usize::from(tcp[12] >> 4) * 4,
            });
        }
        assert_eq!(at, file.len(), "a record runs past the end of the file");
        segments
    }

    /// The indices of the SYN, SYN-ACK and ACK of the handshake towards `port`.
    fn handshake(segments: &[Segment], port: u16) -> [usize; 3] {
        let syn = segments
            .iter()
            .position(|s| s.dst == port && s.flags & (SYN | ACK) == SYN)
            .expect("SYN");
        let (client, client_isn) = (segments[syn].src, segments[syn].seq);
        let syn_ack = segments
            .iter()
            .position(|s| {
                (s.src, s.dst) == (port, client)
                    && s.flags & (SYN | ACK) == SYN | ACK
                    && s.ack == client_isn.wrapping_add(1)
            })
            .expect("SYN-ACK");
        let server_isn = segments[syn_ack].seq;
        let ack = segments
            .iter()
            .position(|s| {
                (s.src, s.dst) == (client, port)
                    && s.flags & (SYN | ACK) == ACK
                    && s.ack == server_isn.wrapping_add(1)
            })
            .expect("ACK");
        [syn, syn_ack, ack]
    }

    /// Both hosts of a wire capture the whole exchange: the handshake in order, the data both
    /// ways, every record well formed.
    #[test]
    fn a_captured_wire_records_the_handshake_and_the_data() {
        let clock = SimClock::new();
        let wire = Wire::new(WireConfig::default());
        let (file_a, file_b) = (Shared::default(), Shared::default());
        let (pcap_a, pcap_b) = (PcapFile::new(file_a.clone()), PcapFile::new(file_b.clone()));
        let config = |ip, mac| {
            crate::Config::with_address(IpCidr::new(ip, 24), EthernetAddress([2, 0, 0, 0, 0, mac]))
        };
        let host_a = Host::new(
            capture(wire.device(Side::A), pcap_a.clone()),
            config(WIRE_ADDR_A.into(), 1),
            clock.clone(),
        )
        .unwrap();
        let host_b = Host::new(
            capture(wire.device(Side::B), pcap_b.clone()),
            config(WIRE_ADDR_B.into(), 2),
            clock.clone(),
        )
        .unwrap();
        let source = SmolSource::new(WireWaiter::simulated(&wire, clock.clone(), Watch::Both))
            .with_host(host_a.clone())
            .with_host(host_b.clone());
        let mut scheduler = Scheduler::new(source, clock);
        let handle = scheduler.handle().clone();
        let a = SmolBackend::new(host_a, handle.clone());
        let b = SmolBackend::new(host_b, handle.clone());
        let addr = core::net::SocketAddr::new(WIRE_ADDR_A.into(), 7);
        let echoed = scheduler.block_on(async move {
            let listener = TcpListener::bind(&a, addr).unwrap();
            let server = handle.spawn(async move {
                let (conn, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 16];
                let n = conn.read(&mut buf).await.unwrap();
                conn.write_all(&buf[..n]).await.unwrap();
                conn.close().await.unwrap();
            });
            let conn = TcpStream::connect(&b, addr).await.unwrap();
            conn.write_all(b"captured").await.unwrap();
            let mut buf = [0u8; 16];
            let n = conn.read(&mut buf).await.unwrap();
            server.await;
            conn.close().await.unwrap();
            buf[..n].to_vec()
        });
        assert_eq!(echoed, b"captured");
        pcap_a.flush().unwrap();
        pcap_b.flush().unwrap();
        for (name, file, pcap) in [("A", &file_a, &pcap_a), ("B", &file_b, &pcap_b)] {
            let bytes = file.0.lock().unwrap().clone();
            let segments = tcp_segments(&bytes);
            let [syn, syn_ack, ack] = handshake(&segments, 7);
            assert!(syn < syn_ack && syn_ack < ack, "host {name}: {segments:?}");
            // The message, then its echo.
            let to_server = segments.iter().position(|s| s.dst == 7 && s.payload == 8);
            let to_client = segments.iter().position(|s| s.src == 7 && s.payload == 8);
            assert!(
                matches!((to_server, to_client), (Some(c), Some(s)) if ack <= c && c < s),
                "host {name}: {segments:?}"
            );
            assert!(pcap.frames() >= segments.len() as u64, "host {name}");
        }
    }

    /// A failing writer stops the capture, not the host, and `flush` reports it.
    #[test]
    fn a_write_error_is_reported_by_flush() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut pcap = PcapFile::new(Full);
        pcap.global_header(PcapLinkType::Ethernet);
        pcap.packet(smoltcp::time::Instant::ZERO, &[0u8; 60]);
        let e = PcapFile::flush(&pcap).expect_err("the write error");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    }
}
