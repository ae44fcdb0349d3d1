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
    /// Starts the server on the TAP device, gives the kernel side its address and brings the
    /// link up.
    fn start(extra: &[&str]) -> Server {
        let listen = format!("{SMOL}:9009");
        let mut child = Command::new(env!("CARGO_BIN_EXE_netpoll"))
            .args(["echo", "--backend", "tap", "--tap", TAP, "--addr"])
            .arg(format!("{SMOL}/24"))
            .args(["--listen", &listen])
            .args(extra)
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
        let server = Server {
            child,
            log,
            addr: listen.parse().unwrap(),
        };
        server.wait_for_log("listening on", Duration::from_secs(10));
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
