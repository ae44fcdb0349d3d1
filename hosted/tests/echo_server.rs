//! The `netpoll echo` binary, exercised as a user would: a separate process, ordinary kernel
//! clients on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `netpoll echo` on an ephemeral port and reads the address it logs.
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netpoll"))
            .args(["echo", "--listen", "127.0.0.1:0", "--quiet"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netpoll echo");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        // Keep draining so the server's later log lines never hit a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let addr = line
            .trim()
            .strip_prefix("netpoll echo: listening on ")
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first log line {line:?}"))
            .parse()
            .unwrap();
        Server { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Sends SIGINT and expects a clean exit.
    fn stop(mut self) {
        // SAFETY: sends SIGINT to the child we spawned, by its PID.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(r, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "netpoll echo exited with {status}");
                return;
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

#[test]
fn survives_a_client_that_resets_mid_stream() {
    let server = Server::start();
    for i in 0..20 {
        let c = server.connect();
        (&c).write_all(&payload(64 * 1024, i + 1)).unwrap();
        // SO_LINGER 0 + close sends RST while the server still has data to echo.
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
