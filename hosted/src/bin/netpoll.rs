//! The `netpoll` command: an echo server on netpoll (Go's netpoller semantics in Rust).

use std::future::{poll_fn, Future};
use std::io::Write;
use std::net::SocketAddr;
use std::pin::pin;
use std::process::ExitCode;
use std::task::Poll;
use std::time::Duration;

use netpoll_hosted::{signal, ErrorKind, Runtime, TcpListener, TcpStream};

/// Logs a line to stderr; a closed stderr must not take the server down (eprintln panics).
macro_rules! log {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const USAGE: &str = "\
netpoll: Go's network poller semantics, rebuilt in Rust.

USAGE:
    netpoll echo [OPTIONS]
    netpoll --help | --version

COMMANDS:
    echo    Run a TCP echo server: accept in a loop, one task per connection that reads into
            a 128-byte buffer and writes back what it read, closing on end of stream.

ECHO OPTIONS:
    --listen ADDR     Address to listen on (IPv4 or [IPv6]:port) [default: 127.0.0.1:9009]
    --backend NAME    I/O engine: `epoll` (the kernel TCP stack) [default: epoll]
    --buf BYTES       Per-connection read buffer size [default: 128]
    --quiet           Do not log per-connection errors
    -h, --help        Print this help

Ctrl-C (SIGINT) or SIGTERM stops the server cleanly: the listener is closed, the process
exits with status 0.

EXAMPLE:
    netpoll echo --listen 127.0.0.1:9009 &
    printf 'hello\\n' | nc -q1 127.0.0.1 9009
";

#[derive(Debug)]
struct EchoOptions {
    listen: SocketAddr,
    buf: usize,
    quiet: bool,
}

fn parse_echo(args: &[String]) -> Result<Option<EchoOptions>, String> {
    let mut opts = EchoOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 9009)),
        buf: 128,
        quiet: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => {
                let v = value("--listen")?;
                opts.listen = v.parse().map_err(|e| {
                    format!("--listen {v:?}: not an address ({e}); try 127.0.0.1:9009")
                })?;
            }
            "--backend" => match value("--backend")?.as_str() {
                "epoll" => {}
                other => {
                    return Err(format!(
                        "--backend {other:?}: unknown backend (known: epoll)"
                    ))
                }
            },
            "--buf" => {
                let v = value("--buf")?;
                opts.buf = v
                    .parse()
                    .ok()
                    .filter(|&n| (1..=16 << 20).contains(&n))
                    .ok_or_else(|| {
                        format!("--buf {v:?}: expected a size from 1 to 16777216 bytes")
                    })?;
            }
            "--quiet" => opts.quiet = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(Some(opts))
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

async fn echo_conn(conn: TcpStream, peer: SocketAddr, buf_size: usize, quiet: bool) {
    // The default 128-byte buffer lives inside the task (no separate allocation per
    // connection); larger ones go on the heap.
    let mut inline = [0u8; 128];
    let mut heap = Vec::new();
    let buf = if buf_size <= inline.len() {
        &mut inline[..buf_size]
    } else {
        heap.resize(buf_size, 0);
        &mut heap[..]
    };
    loop {
        match conn.read(buf).await {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = conn.write_all(&buf[..n]).await {
                    if !quiet {
                        log!("netpoll echo: {peer}: {e}");
                    }
                    break;
                }
            }
            Err(e) => {
                if !quiet {
                    log!("netpoll echo: {peer}: {e}");
                }
                break;
            }
        }
    }
    let _ = conn.close().await;
}

async fn serve(listener: TcpListener, buf_size: usize, quiet: bool) {
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                netpoll_hosted::spawn(echo_conn(conn, peer, buf_size, quiet));
            }
            Err(e) if e.kind() == ErrorKind::Closed => return,
            Err(e) => {
                // Out of descriptors or buffers: back off and keep serving (as Go's net/http).
                log!("netpoll echo: accept: {e}; retrying in 10ms");
                netpoll_hosted::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn run_echo(opts: EchoOptions) -> Result<(), String> {
    signal::install_termination_handler().map_err(|e| format!("signal setup: {e}"))?;
    if let Err(e) = netpoll_hosted::raise_fd_limit() {
        log!("netpoll echo: could not raise the open-file limit: {e}");
    }
    let mut rt = Runtime::new().map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&netpoll_hosted::backend(), opts.listen)
            .map_err(|e| format!("{}: {e}", opts.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        log!("netpoll echo: listening on {addr} (backend epoll)");
        race(
            serve(listener.clone(), opts.buf, opts.quiet),
            signal::termination(),
        )
        .await;
        log!("netpoll echo: shutting down");
        let _ = listener.close().await;
        Ok(())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("netpoll {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("echo") => match parse_echo(&args[1..]) {
            Ok(Some(opts)) => run_echo(opts),
            Ok(None) => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Err(e) => Err(format!("{e}\nrun `netpoll --help` for usage")),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}\nrun `netpoll --help` for usage"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("netpoll: {e}");
            ExitCode::FAILURE
        }
    }
}
