//! The benchmark baseline: the same echo server as `netpoll echo`, on tokio.
//!
//! One task per connection reads into a 128-byte buffer (`--buf` to change it) and writes back
//! what it read, closing on end of stream; TCP_NODELAY on every accepted connection.
//! `--flavor current` runs tokio's current-thread runtime, `--flavor multi` its multi-thread
//! runtime (`--workers`, default: one per core).
//!
//! ```sh
//! cargo run --release -p netpoll-hosted --example tokio_echo -- --flavor current --listen 127.0.0.1:9010
//! ```
//!
//! Once bound it prints `listening <ip:port>` on stdout (its only output there), as
//! `netpoll echo` does, so the benchmark scripts can start it on port 0; its configuration goes
//! to stderr. SIGINT or SIGTERM ends it (default disposition).

#[allow(dead_code)] // Shared by the benchmark programs; not every one uses every item.
mod bench_support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "\
tokio_echo: the tokio baseline echo server of netpoll's benchmarks.

USAGE:
    tokio_echo [OPTIONS]

OPTIONS:
    --listen ADDR      Address to listen on [default: 127.0.0.1:9010]
    --flavor NAME      `current` (current-thread runtime) or `multi` (multi-thread) [default: current]
    --workers N        Worker threads of the multi-thread runtime [default: one per core]
    --buf BYTES        Read buffer per connection [default: 128]
    --quiet            Do not log per-connection errors
    -h, --help         Print this help
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Current,
    Multi,
}

#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    flavor: Flavor,
    workers: Option<usize>,
    buf: usize,
    quiet: bool,
}

fn parse(mut p: lexopt::Parser) -> Result<Option<Options>, String> {
    use bench_support::{next, num, text, unexpected};
    use lexopt::Arg::{Long, Short};
    let mut o = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 9010)),
        flavor: Flavor::Current,
        workers: None,
        buf: 128,
        quiet: false,
    };
    while let Some(arg) = next(&mut p)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("listen") => {
                let v = text(&mut p, "--listen")?;
                o.listen = v
                    .parse()
                    .map_err(|e| format!("--listen {v:?}: not an address ({e})"))?;
            }
            Long("flavor") => {
                o.flavor = match text(&mut p, "--flavor")?.as_str() {
                    "current" | "current_thread" | "current-thread" => Flavor::Current,
                    "multi" | "multi_thread" | "multi-thread" => Flavor::Multi,
                    other => return Err(format!("--flavor {other:?}: use `current` or `multi`")),
                }
            }
            Long("workers") => {
                let n: usize = num(&mut p, "--workers")?;
                if n == 0 {
                    return Err("--workers must be at least 1".into());
                }
                o.workers = Some(n);
            }
            Long("buf") => {
                o.buf = num(&mut p, "--buf")?;
                if o.buf == 0 {
                    return Err("--buf must be at least 1".into());
                }
            }
            Long("quiet") => o.quiet = true,
            other => return Err(unexpected(other)),
        }
    }
    Ok(Some(o))
}

async fn echo_conn<B: AsMut<[u8]>>(mut conn: TcpStream, mut buf: B, quiet: bool) {
    let buf = buf.as_mut();
    loop {
        match conn.read(buf).await {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = conn.write_all(&buf[..n]).await {
                    if !quiet {
                        let _ = writeln!(std::io::stderr(), "tokio echo: {e}");
                    }
                    break;
                }
            }
            Err(e) => {
                if !quiet {
                    let _ = writeln!(std::io::stderr(), "tokio echo: {e}");
                }
                break;
            }
        }
    }
}

async fn serve(opts: &Options) -> std::io::Result<()> {
    let listener = TcpListener::bind(opts.listen).await?;
    let flavor = match opts.flavor {
        Flavor::Current => "current_thread".to_string(),
        Flavor::Multi => format!(
            "multi_thread, {} workers",
            opts.workers
                .map_or("default".to_string(), |n| n.to_string())
        ),
    };
    let addr = listener.local_addr()?;
    bench_support::announce_listening(addr);
    let _ = writeln!(
        std::io::stderr(),
        "tokio echo: listening on {addr} (flavor {flavor}, buffer {} bytes)",
        opts.buf
    );
    let (buf, quiet) = (opts.buf, opts.quiet);
    loop {
        match listener.accept().await {
            Ok((conn, _peer)) => {
                let _ = conn.set_nodelay(true);
                // The default 128-byte buffer lives inside the task, as in `netpoll echo`.
                if buf == 128 {
                    tokio::spawn(echo_conn(conn, [0u8; 128], quiet));
                } else {
                    tokio::spawn(echo_conn(conn, vec![0u8; buf], quiet));
                }
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "tokio echo: accept: {e}; retrying in 10ms"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn main() -> ExitCode {
    let opts = match parse(lexopt::Parser::from_env()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tokio echo: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = netpoll_hosted::raise_fd_limit() {
        let _ = writeln!(
            std::io::stderr(),
            "tokio echo: could not raise the open-file limit: {e}"
        );
    }
    let mut builder = match opts.flavor {
        Flavor::Current => tokio::runtime::Builder::new_current_thread(),
        Flavor::Multi => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = opts.workers {
                b.worker_threads(n);
            }
            b
        }
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tokio echo: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(&opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tokio echo: {}: {e}", opts.listen);
            ExitCode::FAILURE
        }
    }
}
