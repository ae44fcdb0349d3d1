//! `netpoll echo`: the echo server, on either backend.

use std::future::{poll_fn, Future};
use std::io::Write;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use netpoll_core::sched::RunError;
use netpoll_core::{Clock, Handle, Scheduler};
use netpoll_drivers::smoltcp::phy::Device;
use netpoll_drivers::smoltcp::wire::{EthernetAddress, IpCidr};
use netpoll_drivers::{
    capture, Config, Host, MonotonicClock, PcapFile, SmolBackend, SmolSource, TapDevice, TapWaiter,
    Wait, XdpDevice,
};
use netpoll_hosted::{signal, Runtime};
use netpoll_stack::echo::{self as shared, EchoOptions as ServerOptions, EchoServer};
use netpoll_stack::{
    DatagramBackend, ErrorKind, SocketBackend, TcpListener, UdpSocket, DEFAULT_BACKLOG,
};

use crate::cli::{Backend, EchoOptions};

/// Writes one of the server's summary lines to stderr (startup, shutdown, totals): printed
/// whatever the log filter, as the server's deliberate output. A closed stderr must not take
/// the server down (`eprintln!` panics).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Runs `a` and `b` together; returns when either finishes.
async fn race<A: Future<Output = ()>, B: Future<Output = ()>>(a: A, b: B) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// What the tap backend adds to the echo server: its host's socket count and link state.
struct TapExtras {
    /// smoltcp sockets alive (`Host::stats().sockets`).
    sockets: Box<dyn Fn() -> usize + Send + Sync>,
    /// The TAP device's link state (`None`: a device without one, AF_XDP).
    link: Option<TapWaiter>,
    name: String,
}

/// How long shutdown lets clients answer our FIN before it resets the connections left, and
/// how long it then keeps smoltcp running for those frames to leave.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

/// Logs the TAP link going down and coming back (the device notices when a frame is refused,
/// or flows again).
async fn watch_link(handle: Handle, tap: &TapExtras) {
    let Some(link) = &tap.link else {
        return std::future::pending().await;
    };
    let (mut up, mut downs) = (true, 0);
    loop {
        handle.sleep(Duration::from_millis(250)).await;
        let (now_up, now_downs) = (link.link_up(), link.link_downs());
        if now_downs != downs {
            log::warn!(
                "TAP {}: link down; frames are lost until it is back (TCP retransmits them)",
                tap.name
            );
        }
        if now_up && (!up || now_downs != downs) {
            // A warning too, so whoever saw the one above by default sees it end.
            log::warn!("TAP {}: link up, frames flow again", tap.name);
        }
        (up, downs) = (now_up, now_downs);
    }
}

/// Binds the first of `addrs` the backend can listen on; the error names every failure.
fn bind_first<B: SocketBackend>(
    backend: &B,
    addrs: &[SocketAddr],
    backlog: u32,
) -> Result<TcpListener<B>, String> {
    let mut failures = Vec::new();
    for &addr in addrs {
        match TcpListener::bind_with_backlog(backend, addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(e) => {
                log::debug!("cannot listen on {addr}: {e}");
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    Err(format!("cannot listen on {}", failures.join("; ")))
}

/// Prints the bound address to stdout as the one machine-readable line of `netpoll echo`
/// (`listening IP:PORT`), flushed at once so a script reading it can connect right away.
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader took its line and left) must not stop the server.
    let _ = writeln!(out, "listening {addr}").and_then(|()| out.flush());
}

/// Listens, serves until SIGINT/SIGTERM, then closes the listener (and, on smoltcp, every
/// connection).
async fn echo_server<B: DatagramBackend>(
    backend: B,
    opts: &EchoOptions,
    engine: &str,
    tap: Option<TapExtras>,
) -> Result<(), String> {
    let backlog = opts.backlog.unwrap_or(DEFAULT_BACKLOG);
    let listener = bind_first(&backend, &opts.listen, backlog)?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let handle = listener.handle().clone();
    // `--udp`: the same address and port, bound before the address is announced.
    let udp = match opts.udp {
        true => {
            let socket = UdpSocket::bind(&backend, addr)
                .map_err(|e| format!("cannot bind UDP on {addr}: {e}"))?;
            handle.spawn(udp_echo(socket.clone()));
            Some(socket)
        }
        false => None,
    };
    let also = if udp.is_some() { ", UDP too" } else { "" };
    say!("netpoll echo: listening on {addr} (backend {engine}{also})");
    announce(addr);
    // The kernel closes its sockets when the process exits; smoltcp's need us.
    let server = EchoServer::new(ServerOptions {
        buf_size: opts.buf,
        track_connections: tap.is_some(),
        // The command's own target, which `NETPOLL_LOG` directives name.
        log_target: module_path!(),
        ..Default::default()
    });
    let serving = server.serve(&listener);
    match &tap {
        Some(t) => {
            race(
                race(serving, watch_link(handle.clone(), t)),
                signal::termination(),
            )
            .await
        }
        None => race(serving, signal::termination()).await,
    }
    say!("netpoll echo: shutting down");
    server.begin_shutdown();
    let _ = listener.close().await;
    if let Some(udp) = &udp {
        // Ends `udp_echo`: its blocked read fails with the closed error.
        let _ = udp.close().await;
    }
    if let Some(tap) = &tap {
        let (n, reset) = shared::close_all(&server, &handle, SHUTDOWN_GRACE).await;
        // Keeps the scheduler (so smoltcp) running until the last frames have left.
        let drained = shared::wait_until(&handle, SHUTDOWN_DRAIN, || (tap.sockets)() == 0).await;
        say!(
            "netpoll echo: closed {n} open connection(s) ({reset} reset after \
             {SHUTDOWN_GRACE:?}); {}",
            if drained {
                "all smoltcp sockets are done".to_string()
            } else {
                format!("{} smoltcp socket(s) still finishing", (tap.sockets)())
            }
        );
    }
    let stats = server.stats();
    say!(
        "netpoll echo: served {} connection(s), {} reset by the peer",
        stats.accepted,
        stats.resets
    );
    Ok(())
}

/// `--udp`: sends every datagram back to its sender until the socket is closed. A datagram
/// longer than the buffer (64 KiB, more than any UDP payload over IPv4) is logged and
/// dropped rather than echoed cut.
async fn udp_echo<B: DatagramBackend>(socket: UdpSocket<B>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.read_from(&mut buf).await {
            Ok((n, from)) => {
                if let Err(e) = socket.write_to(&buf[..n], from).await {
                    log::warn!("udp: echo to {from}: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::MessageTruncated => {
                log::warn!("udp: {e}: datagram dropped");
            }
            Err(e) if e.is_closed() => return,
            Err(e) => {
                log::error!("udp: {e}: no more UDP echo");
                return;
            }
        }
    }
}

/// Runs `netpoll echo` until SIGINT or SIGTERM.
pub fn run(opts: EchoOptions) -> Result<(), String> {
    signal::install_termination_handler().map_err(|e| format!("signal setup: {e}"))?;
    if let Err(e) = netpoll_hosted::raise_fd_limit() {
        log::warn!("could not raise the open-file limit: {e}");
    }
    match opts.backend {
        Backend::Epoll => {
            let mut builder = Runtime::builder();
            if let Some(n) = opts.workers {
                builder = builder.workers(n);
            }
            let mut rt = builder.build().map_err(|e| format!("runtime: {e}"))?;
            let backend = rt.backend().clone();
            let engine = format!("epoll, {} workers", rt.workers());
            rt.try_block_on(echo_server(backend, &opts, &engine, None))
                .map_err(|e| format!("epoll failed: {e}"))?
        }
        Backend::Tap => run_tap(&opts),
        Backend::Xdp => run_xdp(&opts),
    }
}

/// The smoltcp configuration the options of the tap and xdp backends ask for.
fn smoltcp_config(opts: &EchoOptions) -> Config {
    let (ip, prefix) = opts.addr;
    let mut config = Config::with_address(
        IpCidr::new(ip.into(), prefix),
        // A locally administered unicast MAC.
        EthernetAddress([0x02, 0x6e, 0x70, 0x00, 0x00, 0x01]),
    );
    config.gateway_v4 = opts.gateway;
    if let Some(n) = opts.rx_buf {
        config.rx_buffer = n;
    }
    if let Some(n) = opts.tx_buf {
        config.tx_buffer = n;
    }
    if let Some(mtu) = opts.mtu {
        config.mtu = mtu;
    }
    if let Some(n) = opts.backlog {
        config.max_backlog = config.max_backlog.max(n);
    }
    config
}

/// `--pcap`'s file, created.
fn pcap_file(opts: &EchoOptions) -> Result<Option<(&std::path::Path, PcapFile)>, String> {
    Ok(match &opts.pcap {
        Some(path) => Some((
            path.as_path(),
            PcapFile::create(path).map_err(|e| format!("--pcap {}: {e}", path.display()))?,
        )),
        None => None,
    })
}

/// Writes out `--pcap`'s capture (however the server ended).
fn finish_pcap(pcap: Option<(&std::path::Path, PcapFile)>) -> Result<(), String> {
    if let Some((path, file)) = pcap {
        file.flush()
            .map_err(|e| format!("--pcap {}: {e}", path.display()))?;
        say!(
            "netpoll echo: wrote {} frame(s) to {}",
            file.frames(),
            path.display()
        );
    }
    Ok(())
}

/// The xdp backend: opens the AF_XDP socket on `--iface` (loading and attaching the XDP
/// program), runs the server, and writes out the capture however the server ended.
fn run_xdp(opts: &EchoOptions) -> Result<(), String> {
    let config = smoltcp_config(opts);
    let (ip, prefix) = opts.addr;
    let iface = opts.iface.as_deref().unwrap_or_default();
    let pcap = pcap_file(opts)?;
    let device = match opts.mtu {
        Some(mtu) => XdpDevice::open_setting_mtu(iface, mtu),
        None => XdpDevice::open_with_mtu(iface, config.mtu),
    }
    .map_err(|e| format!("xdp backend: {e}"))?;
    let hook = if device.generic_hook() {
        "generic"
    } else {
        "driver"
    };
    let engine = format!(
        "xdp, AF_XDP on {iface} queue 0, {} mode, {hook} XDP hook",
        device.mode()
    );
    say!(
        "netpoll echo: smoltcp on AF_XDP {iface} queue 0 ({} mode, {hook} XDP hook) as {ip}/{prefix}",
        device.mode()
    );
    // The waiter sleeps on the socket; a capture wrapped around the device keeps it.
    let waiter = device.waiter();
    let served = match &pcap {
        Some((_, file)) => serve_tap(
            capture(device, file.clone()),
            waiter,
            None,
            config,
            opts,
            &engine,
        ),
        None => serve_tap(device, waiter, None, config, opts, &engine),
    };
    finish_pcap(pcap)?;
    served
}

/// The tap backend: opens the TAP device (and the capture file), runs the server, and writes
/// out the capture however the server ended.
fn run_tap(opts: &EchoOptions) -> Result<(), String> {
    let (ip, prefix) = opts.addr;
    let config = smoltcp_config(opts);
    let pcap = match &opts.pcap {
        Some(path) => Some((
            path,
            PcapFile::create(path).map_err(|e| format!("--pcap {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let device = match opts.mtu {
        Some(mtu) => TapDevice::open_setting_mtu(&opts.tap, mtu),
        None => TapDevice::open_with_mtu(&opts.tap, config.mtu),
    }
    .map_err(|e| format!("tap backend: {e}"))?;
    say!(
        "netpoll echo: smoltcp on TAP {} as {ip}/{prefix}; give the kernel side an address in \
         that subnet and bring the link up",
        opts.tap
    );
    // The waiter sleeps on the TAP descriptor; a capture wrapped around the device keeps it.
    let (waiter, link) = (device.waiter(), device.waiter());
    let served = match &pcap {
        Some((_, file)) => serve_tap(
            capture(device, file.clone()),
            waiter,
            Some(link),
            config,
            opts,
            "tap",
        ),
        None => serve_tap(device, waiter, Some(link), config, opts, "tap"),
    };
    if let Some((path, file)) = pcap {
        file.flush()
            .map_err(|e| format!("--pcap {}: {e}", path.display()))?;
        say!(
            "netpoll echo: wrote {} frame(s) to {}",
            file.frames(),
            path.display()
        );
    }
    served
}

/// Runs the echo server on smoltcp over `device` (the TAP or AF_XDP device, or it wrapped in
/// a capture), waiting on the device's `waiter`; `link` reports a TAP device's link state.
/// `engine` names the backend in messages.
fn serve_tap<D, W>(
    device: D,
    waiter: W,
    link: Option<TapWaiter>,
    config: Config,
    opts: &EchoOptions,
    engine: &str,
) -> Result<(), String>
where
    D: Device + Send + 'static,
    W: Wait,
{
    let backend_name = engine.split(',').next().unwrap_or(engine);
    let clock: Arc<dyn Clock> = MonotonicClock::new();
    let host = Host::new(device, config, clock.clone())
        .map_err(|e| format!("{backend_name} backend: {e}"))?;
    let source = SmolSource::new(waiter).with_host(host.clone());
    let mut scheduler = Scheduler::new(source, clock);
    let backend = SmolBackend::new(host.clone(), scheduler.handle().clone());
    let tap = TapExtras {
        sockets: Box::new(move || host.stats().sockets),
        link,
        name: opts.tap.clone(),
    };
    match scheduler.try_block_on(echo_server(backend, opts, engine, Some(tap))) {
        Ok(r) => r,
        Err(RunError::Source(e)) => Err(format!("{backend_name} backend stopped: {e}")),
        Err(e) => Err(format!("{backend_name} backend stopped: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netpoll_stack::TcpStream;

    /// What an idle connection of `netpoll echo` holds is this future (plus the task's own
    /// words): the budget behind the s4 figure in BENCHMARKS.md (under 300 bytes per idle
    /// connection).
    #[test]
    fn an_idle_connection_task_stays_small() {
        let mut rt = Runtime::builder().workers(1).build().expect("runtime");
        let backend = rt.backend().clone();
        rt.block_on(async move {
            let listener = TcpListener::bind(&backend, "127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let conn = TcpStream::connect(&backend, addr).await.unwrap();
            let server = EchoServer::new(ServerOptions::default());
            let size = std::mem::size_of_val(&server.connection(conn));
            assert!(size <= 32, "the echo task's future is {size} bytes");
            listener.close().await.unwrap();
        });
    }
}
