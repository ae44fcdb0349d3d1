//! `netpoll echo --backend tap` as a process, with kernel clients over a real TAP device.
//!
//! Each test creates its own network namespace (`netpoll_drivers::netns`), re-runs itself in
//! it, starts the server there and deletes the namespace afterwards; no traffic leaves it.
//! Needs root: outside CI the tests skip with a message, with `CI=true` they fail instead.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netpoll_drivers::netns;

const TAP: &str = "nptap0";
const SMOL: &str = "10.7.0.2";
const KERNEL: &str = "10.7.0.1";

fn in_netns(test: &str, body: impl FnOnce()) {
    netns::in_netns(test, "npA-cli", body)
}

fn ip(args: &[&str]) {
    netns::ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// The server process and its log lines.
struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Server {
    /// Starts the server on the TAP device (without `--listen`: it listens on its `--addr`,
    /// port 9009), gives the kernel side its address and brings the link up.
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netpoll"))
            .args(["echo", "--backend", "tap", "--tap", TAP, "--addr"])
            .arg(format!("{SMOL}/24"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netpoll echo");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // The address line on stdout comes once the listener is bound.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let server = Server {
            child,
            log,
            addr: format!("{SMOL}:9009").parse().unwrap(),
        };
        assert_eq!(
            line,
            format!("listening {}\n", server.addr),
            "{:#?}",
            server.log()
        );
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", &format!("{KERNEL}/24"), "dev", TAP]);
        ip(&["link", "set", TAP, "up"]);
        server
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a log line contains `text`, at most `limit`.
    fn wait_for_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().iter().any(|l| l.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the server's log: {:#?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: sends a signal to the child we spawned, by its PID.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0);
    }

    /// Waits for the exit, at most `limit`; returns its status code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "netpoll echo did not exit: {:#?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, msg);
}

/// SIGTERM with 200 connected clients: every client sees EOF or a reset within 2 s (the
/// userspace stack's sockets die with the process otherwise, and clients hang), and the
/// server exits 0.
#[test]
fn sigterm_ends_every_connection() {
    in_netns("sigterm_ends_every_connection", || {
        let mut server = Server::start(&[]);
        let mut clients: Vec<TcpStream> = (0..200)
            .map(|i| {
                let mut c = server.connect();
                echo(&mut c, format!("hello {i:03}").as_bytes());
                c
            })
            .collect();
        let t0 = Instant::now();
        server.signal(libc::SIGTERM);
        let limit = Duration::from_secs(2);
        for (i, c) in clients.iter_mut().enumerate() {
            let left = limit
                .saturating_sub(t0.elapsed())
                .max(Duration::from_millis(1));
            c.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 16];
            match c.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!(
                    "client {i}: {other:?} after {:?}, not EOF or a reset",
                    t0.elapsed()
                ),
            }
        }
        assert!(t0.elapsed() <= limit + Duration::from_millis(100));
        assert_eq!(server.wait(Duration::from_secs(5)), Some(0));
        let log = server.log();
        eprintln!("the server's log: {log:#?}");
        assert!(
            log.iter()
                .any(|l| l.contains("closed 200 open connection(s)")),
            "{log:#?}"
        );
    });
}

/// A link flap during a transfer: the server keeps running (it used to exit with a panic on
/// the first frame refused while the interface was down), logs the flap, and the same
/// connection delivers every byte.
#[test]
fn server_survives_a_link_flap() {
    in_netns("server_survives_a_link_flap", || {
        const LEN: usize = 4 << 20;
        let mut server = Server::start(&["--buf", "65536"]);
        let mut c = server.connect();
        echo(&mut c, b"before");
        let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
        let mut reader = c.try_clone().unwrap();
        let got = Arc::new(Mutex::new(0usize));
        let progress = got.clone();
        let rx = std::thread::spawn(move || {
            let mut all = Vec::with_capacity(LEN);
            let mut buf = vec![0u8; 65536];
            while all.len() < LEN {
                let n = reader.read(&mut buf).expect("read the echo");
                assert!(n > 0, "EOF after {} bytes", all.len());
                all.extend_from_slice(&buf[..n]);
                *progress.lock().unwrap() = all.len();
            }
            all
        });
        let data_tx = data.clone();
        let mut writer = c.try_clone().unwrap();
        let tx = std::thread::spawn(move || writer.write_all(&data_tx).expect("write"));
        // Down while the echo streams back: smoltcp's frames are refused meanwhile.
        let deadline = Instant::now() + Duration::from_secs(20);
        while *got.lock().unwrap() < 256 * 1024 {
            assert!(Instant::now() < deadline, "no echo");
            std::thread::sleep(Duration::from_millis(1));
        }
        ip(&["link", "set", TAP, "down"]);
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the server exited on a link flap: {:#?}",
            server.log()
        );
        ip(&["link", "set", TAP, "up"]);
        tx.join().expect("writer");
        let all = rx.join().expect("reader");
        assert!(all == data, "echoed byte for byte across the flap");
        echo(&mut c, b"after");
        server.wait_for_log("link down", Duration::from_secs(2));
        server.wait_for_log("link up", Duration::from_secs(2));
        server.signal(libc::SIGTERM);
        assert_eq!(server.wait(Duration::from_secs(5)), Some(0));
    });
}

/// A TCP segment read back from a pcap file.
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

/// The TCP segments of a pcap file of Ethernet frames (classic format, either byte order),
/// checking every record on the way.
fn tcp_segments(file: &[u8]) -> Vec<Segment> {
    assert!(
        file.len() >= 24,
        "no pcap global header: {} bytes",
        file.len()
    );
    let magic = [0xa1, 0xb2, 0xc3, 0xd4];
    let big_endian = match [file[0], file[1], file[2], file[3]] {
        m if m == magic => true,
        [a, b, c, d] if [d, c, b, a] == magic => false,
        m => panic!("not a pcap file: magic {m:02x?}"),
    };
    let u16_at = |at: usize| {
        let b = [file[at], file[at + 1]];
        if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |at: usize| {
        let b = file[at..at + 4].try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    assert_eq!((u16_at(4), u16_at(6)), (2, 4), "pcap version");
    assert_eq!(u32_at(20), 1, "link type Ethernet");
    let mut segments = Vec::new();
    let mut at = 24;
    while at < file.len() {
        assert!(at + 16 <= file.len(), "a record header runs past the end");
        let (captured, original) = (u32_at(at + 8) as usize, u32_at(at + 12) as usize);
        assert_eq!(captured, original, "frame truncated");
        let frame = &file[at + 16..at + 16 + captured];
        at += 16 + captured;
        // IPv4 over Ethernet, TCP; ARP and the kernel's IPv6 chatter are skipped.
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

/// `--pcap`: the capture of the userspace path holds the kernel client's handshake with
/// smoltcp (SYN, SYN-ACK, ACK, in that order), the message both ways, and is complete after
/// a SIGTERM (written out at exit).
#[test]
fn pcap_captures_the_handshake_and_the_echo() {
    in_netns("pcap_captures_the_handshake_and_the_echo", || {
        let path = std::env::temp_dir().join(format!("netpoll-tap-{}.pcap", std::process::id()));
        let mut server = Server::start(&["--pcap", path.to_str().expect("a UTF-8 temp dir")]);
        let mut c = server.connect();
        let client = c.local_addr().unwrap().port();
        echo(&mut c, b"captured");
        drop(c);
        server.signal(libc::SIGTERM);
        assert_eq!(server.wait(Duration::from_secs(5)), Some(0));
        let file = std::fs::read(&path).expect("the capture file");
        let _ = std::fs::remove_file(&path);
        let segments = tcp_segments(&file);
        let conn: Vec<Segment> = segments
            .into_iter()
            .filter(|s| (s.src, s.dst) == (client, 9009) || (s.src, s.dst) == (9009, client))
            .collect();
        let syn = conn
            .iter()
            .position(|s| s.dst == 9009 && s.flags & (SYN | ACK) == SYN)
            .unwrap_or_else(|| panic!("no SYN in {conn:#?}"));
        let syn_ack = conn
            .iter()
            .position(|s| {
                s.src == 9009
                    && s.flags & (SYN | ACK) == SYN | ACK
                    && s.ack == conn[syn].seq.wrapping_add(1)
            })
            .unwrap_or_else(|| panic!("no SYN-ACK in {conn:#?}"));
        let ack = conn
            .iter()
            .position(|s| {
                s.dst == 9009
                    && s.flags & (SYN | ACK) == ACK
                    && s.ack == conn[syn_ack].seq.wrapping_add(1)
            })
            .unwrap_or_else(|| panic!("no ACK of the SYN-ACK in {conn:#?}"));
        assert!(syn < syn_ack && syn_ack < ack, "{conn:#?}");
        let request = conn.iter().position(|s| s.dst == 9009 && s.payload == 8);
        let reply = conn.iter().position(|s| s.src == 9009 && s.payload == 8);
        assert!(
            matches!((request, reply), (Some(q), Some(r)) if ack <= q && q < r),
            "the message and its echo: {conn:#?}"
        );
        let log = server.log();
        assert!(
            log.iter()
                .any(|l| l.starts_with("netpoll echo: wrote ") && l.contains(" frame(s) to ")),
            "{log:#?}"
        );
    });
}

/// `--mtu 9000` sets the TAP interface's MTU, and both sides then send 9000-byte frames:
/// segments of more than 8,000 bytes each way, and 256 KiB echoed intact.
#[test]
fn mtu_option_gives_jumbo_segments_both_ways() {
    in_netns("mtu_option_gives_jumbo_segments_both_ways", || {
        let path =
            std::env::temp_dir().join(format!("netpoll-tap-mtu-{}.pcap", std::process::id()));
        let mut server = Server::start(&[
            "--mtu",
            "9000",
            "--buf",
            "65536",
            // The kernel sends at most half the largest window it saw per segment.
            "--rx-buf",
            "65536",
            "--tx-buf",
            "65536",
            "--pcap",
            path.to_str().expect("a UTF-8 temp dir"),
        ]);
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{TAP}/mtu")).unwrap();
        assert_eq!(mtu.trim(), "9000");
        let mut c = server.connect();
        let payload: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        let mut writer = c.try_clone().unwrap();
        let sent = payload.clone();
        let sender = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut got = vec![0u8; payload.len()];
        c.read_exact(&mut got).expect("echo");
        sender.join().unwrap();
        assert!(got == payload, "the echo differs");
        drop(c);
        server.signal(libc::SIGTERM);
        assert_eq!(server.wait(Duration::from_secs(5)), Some(0));
        let file = std::fs::read(&path).expect("the capture file");
        let _ = std::fs::remove_file(&path);
        let segments = tcp_segments(&file);
        let largest = |from_server: bool| {
            segments
                .iter()
                .filter(|s| (s.src == 9009) == from_server)
                .map(|s| s.payload)
                .max()
                .unwrap_or(0)
        };
        assert!(largest(false) > 8000, "client segments: {}", largest(false));
        assert!(largest(true) > 8000, "server segments: {}", largest(true));
    });
}
