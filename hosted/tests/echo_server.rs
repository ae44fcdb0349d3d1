//! The `netpoll echo` binary, exercised as a user would: a separate process, ordinary kernel
//! clients on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: SocketAddr,
    /// The server's stderr lines.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `netpoll echo` on an ephemeral port and reads the address it prints.
    fn start() -> Server {
        Server::start_with(&["--quiet"], None)
    }

    /// Starts `netpoll echo --listen 127.0.0.1:0 EXTRA...`, with at most `nofile` open files.
    fn start_with(extra: &[&str], nofile: Option<u32>) -> Server {
        let exe = env!("CARGO_BIN_EXE_netpoll");
        let mut cmd = match nofile {
            // `ulimit -n` sets the hard limit too, so the server cannot raise it again.
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), exe]);
                c
            }
            None => Command::new(exe),
        };
        let mut child = cmd
            .args(["echo", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("NETPOLL_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netpoll echo");
        // Keep draining so the server's log lines never hit a closed pipe.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        // The address, as scripts read it: the one line on stdout.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim_end()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected stdout line {line:?}"))
            .parse()
            .unwrap();
        Server { child, addr, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Sends SIGINT and expects a clean exit; returns the server's stderr lines.
    fn stop(mut self) -> Vec<String> {
        // SAFETY: sends SIGINT to the child we spawned, by its PID.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(r, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "netpoll echo exited with {status}");
                // The reader thread sees EOF right after the exit.
                std::thread::sleep(Duration::from_millis(100));
                return self.log();
            }
            assert!(
                Instant::now() < deadline,
                "netpoll echo did not exit on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deterministic pseudo-random payload (xorshift), so failures reproduce.
fn payload(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn echoes_one_mebibyte_byte_for_byte_and_exits_on_sigint() {
    let server = Server::start();
    let data = payload(1 << 20, 0x9E37_79B9_7F4A_7C15);
    let conn = server.connect();
    let mut reader = conn.try_clone().unwrap();
    let expected = data.len();
    let rx = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(expected);
        reader.read_to_end(&mut got).unwrap();
        got
    });
    let mut w = conn;
    w.write_all(&data).unwrap();
    w.shutdown(Shutdown::Write).unwrap();
    let got = rx.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed payload differs");
    server.stop();
}

/// Sets SO_LINGER 0 on `c` and drops it: the kernel sends RST.
fn reset(c: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd and a live `linger` of the right size.
    let r = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    drop(c);
}

#[test]
fn survives_a_client_that_resets_mid_stream() {
    let server = Server::start();
    for i in 0..20 {
        let c = server.connect();
        (&c).write_all(&payload(64 * 1024, i + 1)).unwrap();
        reset(c);
    }
    // Still serving.
    let mut c = server.connect();
    c.write_all(b"still alive").unwrap();
    let mut buf = [0u8; 11];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still alive");
    server.stop();
}

#[test]
fn serves_two_thousand_concurrent_connections() {
    // The clients need ~2,000 descriptors in this process too.
    netpoll_hosted::raise_fd_limit().unwrap();
    let server = Server::start();
    let conns: Vec<TcpStream> = (0..2000).map(|_| server.connect()).collect();
    for (i, c) in conns.iter().enumerate() {
        let mut c = c;
        c.write_all(format!("ping {i:05}").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter().enumerate() {
        let mut c = c;
        let mut buf = [0u8; 10];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(buf, *format!("ping {i:05}").as_bytes(), "connection {i}");
    }
    drop(conns);
    server.stop();
}

/// Resets are normal for a server: counted and summed up at exit, not logged one by one
/// (without `--quiet`, which would hide them anyway).
#[test]
fn peer_resets_are_counted_not_logged() {
    let server = Server::start_with(&[], None);
    for i in 0..50 {
        let c = server.connect();
        (&c).write_all(&payload(64 * 1024, i + 1)).unwrap();
        reset(c);
    }
    let mut c = server.connect();
    c.write_all(b"ok").unwrap();
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).unwrap();
    drop(c);
    let log = server.stop();
    let summary = log
        .iter()
        .find(|l| l.contains("connection(s),"))
        .unwrap_or_else(|| panic!("no summary in {log:#?}"));
    assert!(
        summary.starts_with("netpoll echo: served 51 connection(s), "),
        "{summary}"
    );
    let resets: u64 = summary
        .rsplit(", ")
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!((1..=50).contains(&resets), "{summary}");
    // Listening, shutting down, the summary.
    assert!(log.len() <= 3, "one line per reset? {log:#?}");
}

/// Out of descriptors, the accept loop backs off and logs about once a second (it used to log
/// every 10 ms), then serves again once descriptors are free.
#[test]
fn emfile_is_rate_limited_and_the_server_recovers() {
    let server = Server::start_with(&["--workers", "1", "--quiet"], Some(20));
    // More connections than the server has descriptors: the kernel completes them all, the
    // server cannot accept the rest.
    let clients: Vec<TcpStream> = (0..40).map(|_| server.connect()).collect();
    std::thread::sleep(Duration::from_millis(2500));
    let log = server.log();
    let accept_lines: Vec<_> = log.iter().filter(|l| l.contains("retrying in")).collect();
    assert!(
        (2..=4).contains(&accept_lines.len()),
        "about one line a second: {log:#?}"
    );
    assert!(
        accept_lines[1].contains("more since the last report"),
        "{accept_lines:#?}"
    );
    // Free the server's descriptors: it accepts again within its longest back-off.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = server.connect();
        c.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        c.write_all(b"back").unwrap();
        let mut buf = [0u8; 4];
        if c.read_exact(&mut buf).is_ok() {
            assert_eq!(&buf, b"back");
            break;
        }
        assert!(Instant::now() < deadline, "the server did not recover");
    }
    server.stop();
}
