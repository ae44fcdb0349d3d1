//! The `netpoll` command line as a user and a script see it: exit statuses, where help and
//! errors go, the one machine-readable stdout line, and the log filter.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn netpoll(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netpoll"))
        .args(args)
        .env_remove("NETPOLL_LOG")
        .output()
        .expect("run netpoll")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn no_arguments_print_the_usage_to_stderr_and_exit_2() {
    let out = netpoll(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("netpoll: no command given\n"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: netpoll <COMMAND>"), "{stderr}");
}

#[test]
fn help_goes_to_stdout_and_exits_0() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = netpoll(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage: netpoll <COMMAND>"), "{stdout}");
        assert!(stdout.contains("NETPOLL_LOG"), "{stdout}");
    }
}

#[test]
fn echo_help_lists_the_echo_options() {
    for args in [
        &["echo", "--help"][..],
        &["echo", "-h"],
        &["help", "echo"],
        &["echo", "--backend", "tap", "--help"],
    ] {
        let out = netpoll(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage: netpoll echo [OPTIONS]"), "{stdout}");
        for option in [
            "--listen ADDR",
            "--backend NAME",
            "--workers N",
            "--pcap FILE",
        ] {
            assert!(stdout.contains(option), "{option} in {stdout}");
        }
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = netpoll(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("netpoll {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(text(&netpoll(&["-V"]).stdout), text(&out.stdout));
}

/// Every usage error: one line saying what is wrong, one pointing to the right help, exit 2,
/// nothing on stdout.
#[test]
fn usage_errors_are_one_line_and_a_hint_with_status_2() {
    let echo_hint = "Try 'netpoll echo --help' for more information.";
    let top_hint = "Try 'netpoll --help' for more information.";
    for (args, error, hint) in [
        (
            &["echo", "--bogus"][..],
            "invalid option '--bogus'",
            echo_hint,
        ),
        (
            &["echo", "--backlog", "0"],
            "--backlog \"0\": expected from 1 to 65535",
            echo_hint,
        ),
        (
            &["echo", "--backlog=lots"],
            "--backlog \"lots\": expected from 1 to 65535",
            echo_hint,
        ),
        (
            &["echo", "--listen"],
            "missing argument for option '--listen'",
            echo_hint,
        ),
        (
            &["echo", "--listen", "localhost"],
            "--listen \"localhost\": expected IP:PORT, [IPv6]:PORT or HOST:PORT, such as \
             127.0.0.1:9009",
            echo_hint,
        ),
        (
            &["echo", "--backend", "dpdk"],
            "--backend \"dpdk\": unknown backend (known: epoll, tap, xdp)",
            echo_hint,
        ),
        (
            &["echo", "--tap", "nptap9", "--rx-buf", "4096"],
            "option --tap applies only to --backend tap; option --rx-buf applies only to \
             --backend tap or xdp",
            echo_hint,
        ),
        (
            &["echo", "--pcap", "x.pcap"],
            "option --pcap applies only to --backend tap or xdp",
            echo_hint,
        ),
        (
            &["echo", "--backend", "xdp", "--addr", "10.6.0.2/24"],
            "--backend xdp needs --iface NAME (the interface whose queue 0 it takes)",
            echo_hint,
        ),
        (
            &["echo", "--iface", "veth1"],
            "option --iface applies only to --backend xdp",
            echo_hint,
        ),
        (
            &["serve"],
            "unknown command \"serve\" (known: echo, help)",
            top_hint,
        ),
        (&["--bogus"], "invalid option '--bogus'", top_hint),
    ] {
        let out = netpoll(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert_eq!(
            text(&out.stderr),
            format!("netpoll: {error}\n{hint}\n"),
            "{args:?}"
        );
    }
}

/// A running `netpoll echo`: its stdout, and its stderr lines collected by a thread.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Server {
    /// Starts `netpoll echo ARGS` with `NETPOLL_LOG` set to `log` (or unset) and reads the
    /// address line from its stdout.
    fn start(args: &[&str], log: Option<&str>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netpoll"));
        cmd.arg("echo")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match log {
            Some(filter) => cmd.env("NETPOLL_LOG", filter),
            None => cmd.env_remove("NETPOLL_LOG"),
        };
        let mut child = cmd.spawn().expect("start netpoll echo");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .strip_suffix('\n')
            .and_then(|l| l.strip_prefix("listening "))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "first stdout line {line:?}, stderr {:#?}",
                    lines.lock().unwrap()
                )
            });
        Server {
            child,
            stdout,
            stderr: lines,
            addr,
        }
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `text`, at most 10 s.
    fn wait_for_stderr(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr().iter().any(|l| l.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} on stderr: {:#?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGINT; returns what it printed on stdout after the address line.
    fn stop(mut self) -> String {
        // SAFETY: sends SIGINT to the child we spawned, by its PID.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(r, 0);
        let mut rest = String::new();
        // Returns at the server's exit, when its stdout closes.
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "netpoll echo exited with {status}");
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echo_once(addr: SocketAddr, msg: &[u8]) {
    let mut c = TcpStream::connect(addr).expect("connect to the printed address");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// `--listen 127.0.0.1:0`: the one stdout line names the port the kernel picked, a client
/// reaches the server there, and nothing else ever goes to stdout.
#[test]
fn the_stdout_line_is_the_bound_address_and_the_only_one() {
    let server = Server::start(&["--listen", "127.0.0.1:0"], Some("debug"));
    assert_eq!(server.addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(server.addr.port(), 0);
    echo_once(server.addr, b"hello");
    // Debug logging, a connection and a shutdown later: still nothing more on stdout.
    server.wait_for_stderr("closed");
    assert_eq!(server.stop(), "");
}

/// `--opt=value` and `--opt value` mean the same; `--listen` takes host names.
#[test]
fn option_values_with_equals_and_host_names() {
    for args in [
        &["--listen=127.0.0.1:0", "--buf=64"][..],
        &["--listen", "127.0.0.1:0", "--buf", "64"],
        &["--listen", "localhost:0"],
    ] {
        let server = Server::start(args, None);
        assert!(server.addr.ip().is_loopback(), "{args:?}: {}", server.addr);
        echo_once(server.addr, b"equals");
        server.stop();
    }
}

/// Silent by default apart from the summary lines; `NETPOLL_LOG=debug` or `--verbose` show
/// each connection accepted and closed.
#[test]
fn netpoll_log_and_verbose_show_connection_events() {
    let quiet = Server::start(&["--listen", "127.0.0.1:0"], None);
    echo_once(quiet.addr, b"quiet");
    std::thread::sleep(Duration::from_millis(200));
    let stderr = quiet.stderr();
    quiet.stop();
    assert!(
        stderr
            .iter()
            .all(|l| l.starts_with("netpoll echo: listening on ")),
        "only the startup line by default: {stderr:#?}"
    );

    for (args, log) in [
        (&["--listen", "127.0.0.1:0"][..], Some("debug")),
        (&["--listen", "127.0.0.1:0", "--verbose"], None),
        // A module directive: the echo server's own events, nothing else at debug.
        (&["--listen", "127.0.0.1:0"], Some("netpoll::echo=debug")),
    ] {
        let server = Server::start(args, log);
        echo_once(server.addr, b"loud");
        server.wait_for_stderr("accepted a connection from 127.0.0.1:");
        server.wait_for_stderr("closed");
        server.stop();
    }
}

/// `--udp`: a kernel UDP client's datagrams come back from the printed address, and TCP echo
/// still works on the same port.
#[test]
fn udp_echo_sends_each_datagram_back() {
    let server = Server::start(&["--listen", "127.0.0.1:0", "--udp"], None);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for msg in [&b"hello udp"[..], &[7u8; 1400], b""] {
        client.send_to(msg, server.addr).unwrap();
        let (n, from) = client.recv_from(&mut buf).expect("the echoed datagram");
        assert_eq!((&buf[..n], from), (msg, server.addr));
    }
    echo_once(server.addr, b"tcp too");
    assert_eq!(server.stop(), "");
}
