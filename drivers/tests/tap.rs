//! smoltcp over a real TAP device, with the kernel's TCP stack as the peer.
//!
//! Each test creates its own network namespace, re-runs itself inside it (`ip netns exec`),
//! and deletes the namespace afterwards; no traffic leaves the namespace. The TAP interface
//! `nptap0` gets 10.7.0.1/24 on the kernel side; smoltcp is 10.7.0.2. Without the privileges to
//! create a namespace (not root, no `ip`, no `/dev/net/tun`) the tests skip with a message.
#![cfg(feature = "tap")]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as KListener, TcpStream as KStream};
use std::time::Duration;

use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
use netpoll_drivers::{netns, Config, TapDevice, TapNet};
use netpoll_stack::{TcpListener, TcpStream};

const TAP: &str = "nptap0";
const SMOL: &str = "10.7.0.2";
const KERNEL: &str = "10.7.0.1";

/// Runs `body` in a namespace of its own (see `netpoll_drivers::netns`).
fn in_netns(test: &str, body: impl FnOnce()) {
    netns::in_netns(test, "netpoll-drv", body)
}

/// `ip ARGS` succeeded.
fn ip(args: &[&str]) -> bool {
    netns::ip(args).is_ok()
}

/// Opens the TAP device, gives the kernel side its address, brings links up, builds smoltcp.
fn tap_net() -> TapNet {
    let device = TapDevice::open_with_mtu(TAP, 1500).expect("open the TAP device");
    assert!(ip(&["link", "set", "lo", "up"]));
    assert!(ip(&["addr", "add", &format!("{KERNEL}/24"), "dev", TAP]));
    assert!(ip(&["link", "set", TAP, "up"]));
    let config = Config::with_address(
        IpCidr::new(Ipv4Address::new(10, 7, 0, 2).into(), 24),
        EthernetAddress([0x02, 0, 0, 0x07, 0, 0x02]),
    );
    TapNet::with_device(device, config).expect("build the smoltcp host")
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Keeps the scheduler (and so smoltcp) running until a kernel-side thread is done, at most
/// 30 s.
async fn until_finished<T>(handle: &netpoll_core::Handle, thread: &std::thread::JoinHandle<T>) {
    for _ in 0..3000 {
        if thread.is_finished() {
            return;
        }
        handle.sleep(Duration::from_millis(10)).await;
    }
    panic!("the kernel side did not finish within 30 s");
}

#[test]
fn kernel_client_to_smoltcp_server() {
    in_netns("kernel_client_to_smoltcp_server", || {
        const LEN: usize = 8 << 20;
        let mut net = tap_net();
        let backend = net.backend.clone();
        let handle = net.scheduler.handle().clone();
        let addr: SocketAddr = format!("{SMOL}:7000").parse().unwrap();
        let data = pattern(LEN, 1);
        let expect = data.clone();
        let client = std::thread::spawn(move || {
            let mut s = KStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut r = s.try_clone().unwrap();
            let reader = std::thread::spawn(move || {
                let mut got = Vec::with_capacity(LEN);
                r.read_to_end(&mut got).expect("kernel read");
                got
            });
            s.write_all(&data).expect("kernel write");
            s.shutdown(Shutdown::Write).unwrap();
            reader.join().unwrap()
        });
        let client_ref = &client;
        net.scheduler.block_on(async move {
            let listener = TcpListener::bind(&backend, addr).unwrap();
            let (conn, peer) = listener.accept().await.expect("accept");
            assert_eq!(peer.ip().to_string(), KERNEL);
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            loop {
                let n = conn.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                total += n;
                conn.write_all(&buf[..n]).await.expect("write");
            }
            assert_eq!(total, LEN);
            conn.close().await.unwrap();
            listener.close().await.unwrap();
            // A userspace stack sends only while it is driven: keep the scheduler running
            // until the kernel has everything (the tail of the echo and our FIN).
            until_finished(&handle, client_ref).await;
        });
        let got = client.join().expect("kernel client");
        assert!(got == expect, "8 MiB echoed byte for byte");
    });
}

#[test]
fn smoltcp_client_to_kernel_server() {
    in_netns("smoltcp_client_to_kernel_server", || {
        const LEN: usize = 8 << 20;
        let mut net = tap_net();
        let backend = net.backend.clone();
        let listener = KListener::bind(format!("{KERNEL}:7001")).expect("kernel listen");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("kernel accept");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::with_capacity(LEN);
            s.read_to_end(&mut got).expect("kernel read");
            s.write_all(&got[..1024]).unwrap();
            got
        });
        let data = pattern(LEN, 2);
        let expect = data.clone();
        let addr: SocketAddr = format!("{KERNEL}:7001").parse().unwrap();
        let back = net.scheduler.block_on(async move {
            let conn = TcpStream::connect(&backend, addr).await.expect("connect");
            conn.write_all(&data).await.expect("write");
            conn.shutdown_write().unwrap();
            let mut back = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                back.extend_from_slice(&buf[..n]);
            }
            conn.close().await.unwrap();
            back
        });
        let got = server.join().expect("kernel server");
        assert!(got == expect, "8 MiB received byte for byte");
        assert_eq!(back, expect[..1024]);
    });
}

/// 64 simultaneous kernel connects to a smoltcp listener with backlog 16, served by an
/// ordinary accept loop: all succeed (SYNs past the backlog are dropped and retransmitted by
/// the kernel, never reset) and all echo.
#[test]
fn kernel_burst_beyond_backlog_all_succeed() {
    in_netns("kernel_burst_beyond_backlog_all_succeed", || {
        kernel_burst(64, 16, 7002)
    });
}

/// 256 simultaneous kernel connects to a smoltcp listener with backlog 128.
#[test]
fn kernel_burst_256_against_backlog_128() {
    in_netns("kernel_burst_256_against_backlog_128", || {
        kernel_burst(256, 128, 7003)
    });
}

/// `n` kernel clients connect at once to a listener with `backlog`, each echoes 100 bytes.
fn kernel_burst(n: usize, backlog: u32, port: u16) {
    {
        let mut net = tap_net();
        let backend = net.backend.clone();
        let host = net.host.clone();
        let handle = net.scheduler.handle().clone();
        let addr: SocketAddr = format!("{SMOL}:{port}").parse().unwrap();
        let listener = TcpListener::bind_with_backlog(&backend, addr, backlog).unwrap();
        let clients: Vec<_> = (0..n)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut s = KStream::connect_timeout(&addr, Duration::from_secs(20))
                        .unwrap_or_else(|e| panic!("client {i}: connect: {e}"));
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let msg = [i as u8; 100];
                    s.write_all(&msg).unwrap();
                    let mut got = [0u8; 100];
                    s.read_exact(&mut got)
                        .unwrap_or_else(|e| panic!("client {i}: read: {e}"));
                    assert_eq!(got, msg);
                })
            })
            .collect();
        let driver = handle.clone();
        let clients_ref = &clients;
        net.scheduler.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (conn, _) = listener.accept().await.expect("accept");
                tasks.push(handle.spawn(async move {
                    let mut buf = [0u8; 100];
                    let mut got = 0;
                    while got < 100 {
                        let n = conn.read(&mut buf[got..]).await.expect("read");
                        assert!(n > 0, "early EOF");
                        got += n;
                    }
                    conn.write_all(&buf).await.expect("write");
                    conn.close().await.unwrap();
                }));
            }
            for t in tasks {
                t.await;
            }
            for c in clients_ref {
                until_finished(&driver, c).await;
            }
        });
        for c in clients {
            c.join().expect("client");
        }
        let stats = host.stats();
        eprintln!("burst of {n} against backlog {backlog}: {stats:?}");
    }
}

/// Bad input is an error, never a panic (no device is created: the name is rejected first).
#[test]
fn invalid_interface_name_is_an_error() {
    let e = TapDevice::open("a-name-far-too-long-for-ifnamsiz").expect_err("too long");
    assert!(
        matches!(e, netpoll_drivers::DriverError::InvalidConfig(_)),
        "{e:?}"
    );
    let e = TapDevice::open_with_mtu("nul\0name", 1500).expect_err("NUL");
    assert!(
        matches!(e, netpoll_drivers::DriverError::InvalidConfig(_)),
        "{e:?}"
    );
}

/// A frame the kernel refuses because the interface is down is lost, not an error: the
/// scheduler keeps running, the connect times out by its own deadline, and the device records
/// the state.
#[test]
fn link_down_loses_frames_without_failing() {
    in_netns("link_down_loses_frames_without_failing", || {
        // Not brought up.
        let device = TapDevice::open_with_mtu(TAP, 1500).expect("open the TAP device");
        assert!(device.link_up(), "up until a frame is refused");
        let config = Config::with_address(
            IpCidr::new(Ipv4Address::new(10, 7, 0, 2).into(), 24),
            EthernetAddress([0x02, 0, 0, 0x07, 0, 0x02]),
        );
        let mut net = TapNet::with_device(device, config).unwrap();
        let link = net.link();
        let backend = net.backend.clone();
        let deadline = net.scheduler.handle().now() + Duration::from_secs(1);
        let addr: SocketAddr = format!("{KERNEL}:9").parse().unwrap();
        let r = net.scheduler.try_block_on(async move {
            TcpStream::connect_deadline(&backend, addr, Some(deadline))
                .await
                .map(drop)
        });
        let e = r
            .expect("the scheduler keeps running")
            .expect_err("nothing answers");
        assert!(e.is_timeout(), "{e}");
        assert!(!link.link_up());
        assert_eq!(link.link_downs(), 1, "one transition, however many frames");
    });
}

/// A link flap shorter than the sockets' timeouts: a connection echoes, the link goes down
/// for a second while smoltcp sends (the kernel refuses those frames), comes back, and the
/// same connection delivers what was sent meanwhile and echoes again.
#[test]
fn connection_survives_a_link_flap() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    in_netns("connection_survives_a_link_flap", || {
        let mut net = tap_net();
        let link = net.link();
        let backend = net.backend.clone();
        let handle = net.scheduler.handle().clone();
        let addr: SocketAddr = format!("{SMOL}:7004").parse().unwrap();
        let listener = TcpListener::bind(&backend, addr).unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let client_down = down.clone();
        let client = std::thread::spawn(move || {
            let mut s = KStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = [0u8; 6];
            s.write_all(b"before").unwrap();
            s.read_exact(&mut got).expect("echo before the flap");
            assert_eq!(&got, b"before");
            assert!(ip(&["link", "set", TAP, "down"]));
            client_down.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_secs(1));
            assert!(ip(&["link", "set", TAP, "up"]));
            s.read_exact(&mut got)
                .expect("what smoltcp sent while the link was down");
            assert_eq!(&got, b"during");
            s.write_all(b"after!").unwrap();
            s.read_exact(&mut got).expect("echo after the flap");
            assert_eq!(&got, b"after!");
        });
        let client_ref = &client;
        let server_link = net.link();
        let r = net.scheduler.try_block_on(async move {
            let (conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 6];
            let n = conn.read(&mut buf).await.expect("read before");
            conn.write_all(&buf[..n]).await.expect("echo before");
            for _ in 0..500 {
                if down.load(Ordering::Acquire) {
                    break;
                }
                handle.sleep(Duration::from_millis(10)).await;
            }
            assert!(
                down.load(Ordering::Acquire),
                "the client took the link down"
            );
            conn.write_all(b"during").await.expect("a write while down");
            handle.sleep(Duration::from_millis(200)).await;
            assert!(
                !server_link.link_up(),
                "the refused frame marked the link down"
            );
            let mut got = 0;
            while got < 6 {
                let n = conn.read(&mut buf[got..]).await.expect("read after");
                assert!(n > 0, "early EOF");
                got += n;
            }
            conn.write_all(&buf).await.expect("echo after");
            until_finished(&handle, client_ref).await;
            conn.close().await.unwrap();
            listener.close().await.unwrap();
        });
        r.expect("a link flap is not a scheduler error");
        client.join().expect("the client saw every echo");
        assert!(link.link_up(), "frames flow again");
        assert_eq!(link.link_downs(), 1);
    });
}

/// Open errors say which call failed and on which interface.
#[test]
fn open_errors_name_the_failed_call() {
    in_netns("open_errors_name_the_failed_call", || {
        // A TUN device of the same name exists: TUNSETIFF with IFF_TAP fails (EINVAL).
        assert!(ip(&["tuntap", "add", "nptun0", "mode", "tun"]));
        let e = TapDevice::open("nptun0").expect_err("a TUN device is not a TAP device");
        assert_eq!(
            e.to_string(),
            "TUNSETIFF nptun0: Invalid argument (os error 22)",
            "{e:?}"
        );
    });
}

/// Set in the child of `eperm_names_the_missing_capability`, which runs without
/// CAP_NET_ADMIN.
const NO_CAP: &str = "NETPOLL_TEST_NO_CAP_NET_ADMIN";

/// Creating a TAP interface without CAP_NET_ADMIN fails with EPERM, and the message names the
/// capability. The test re-runs itself with the capability dropped (`setpriv`); nothing is
/// created, so no namespace is needed.
#[test]
fn eperm_names_the_missing_capability() {
    const TEST: &str = "eperm_names_the_missing_capability";
    if std::env::var_os(NO_CAP).is_some() {
        let e = TapDevice::open("npeperm0").expect_err("no CAP_NET_ADMIN");
        let text = e.to_string();
        assert!(
            text.starts_with("TUNSETIFF npeperm0: Operation not permitted (os error 1)")
                && text.contains("needs CAP_NET_ADMIN"),
            "{text}"
        );
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return netns::skip(TEST, "no /dev/net/tun");
    }
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(NO_CAP, "1")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return netns::skip(TEST, &format!("cannot run setpriv: {e}")),
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && text.contains("setpriv:") {
        // Not root: setpriv itself may refuse.
        return netns::skip(TEST, text.trim());
    }
    assert!(out.status.success(), "{text}");
    assert!(text.contains("test result: ok. 1 passed"), "{text}");
}

/// A waiter that also watches another descriptor sleeps until that descriptor is readable,
/// then returns promptly; without input there it still sleeps for its whole timeout.
#[test]
fn waiter_also_watches_an_extra_fd() {
    use netpoll_drivers::Wait;
    use std::time::Instant;

    in_netns("waiter_also_watches_an_extra_fd", || {
        let device = TapDevice::open_with_mtu(TAP, 1500).expect("open the TAP device");
        // Down: no frame from the kernel can end a wait.
        let (mut reader, mut writer) = std::io::pipe().expect("pipe");
        let watched = reader.try_clone().expect("dup the pipe's read end");
        let waiter = device.waiter().also_watch(watched.into());
        assert!(format!("{waiter:?}").contains("also_watches: true"));

        // Nothing readable: the whole timeout passes.
        let t0 = Instant::now();
        waiter.wait(Some(Duration::from_millis(100))).unwrap();
        let slept = t0.elapsed();
        assert!(slept >= Duration::from_millis(90), "woke after {slept:?}");

        // Readable from another thread: a wait without timeout ends.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.write_all(b"x").unwrap();
            writer
        });
        let t0 = Instant::now();
        waiter.wait(None).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        let _writer = t.join().unwrap();

        // The waiter consumes nothing: still readable, the next wait returns at once...
        let t0 = Instant::now();
        waiter.wait(Some(Duration::from_secs(10))).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        // ...until the owner drains it.
        let mut byte = [0u8; 1];
        reader.read_exact(&mut byte).unwrap();
        let t0 = Instant::now();
        waiter.wait(Some(Duration::from_millis(100))).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(90));
    });
}
