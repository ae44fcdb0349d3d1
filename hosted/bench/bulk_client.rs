//! The kernel-side client of the bulk measurements of `hosted/bench/tap.py`: one TCP
//! connection that sends (`--mode send`) or receives (`--mode recv`) the bulk pattern for
//! `--duration` seconds and prints one JSON line with the throughput.
//!
//! * `send`: writes the pattern, then shuts down its write half and waits for the sink's
//!   `OK <bytes>\n`; the rate is the bytes the sink confirmed over the time until its answer,
//!   so nothing still sitting in a buffer is counted.
//! * `recv`: reads and verifies the pattern from a source for the duration, then closes.
//!
//! Like `netpoll-bench`, it connects to loopback addresses only, unless
//! `--allow-netns` is given and it runs inside a named network namespace other than the initial
//! one (`ip netns add` + `ip netns exec`), where it may also reach private addresses (a TAP or
//! veth link the benchmark made in that namespace).
//!
//! ```text
//! cargo run --release -p netpoll-hosted --example bulk_client -- \
//!     --allow-netns --addr 10.7.0.2:9009 --mode send --duration 3
//! ```

#[allow(dead_code)] // Shared by the benchmark programs; not every one uses every item.
mod bench_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench_support::{check_netns, check_target, mismatch, pattern, PATTERN_LEN, TRAILER_PREFIX};

const USAGE: &str = "\
bulk_client: one-connection bulk send or receive, JSON result (hosted/bench/tap.py)

OPTIONS:
    --addr ADDR         Server (loopback, or private with --allow-netns) [default: 127.0.0.1:9009]
    --mode MODE         send | recv [default: send]
    --duration SECS     How long to send or receive [default: 3]
    --buf BYTES         Bytes per read or write call [default: 65521]
    --allow-netns       Allow private addresses when running in a non-initial network namespace
    --timeout SECS      Limit for the connect, each blocked call and the sink's answer [default: 10]
    --label TEXT        Copied into the JSON line
";

struct Options {
    addr: SocketAddr,
    send: bool,
    duration: Duration,
    buf: usize,
    allow_netns: bool,
    timeout: Duration,
    label: String,
}

fn parse_args(mut p: lexopt::Parser) -> Result<Option<Options>, String> {
    use bench_support::{next, num, secs, text, unexpected};
    use lexopt::Arg::{Long, Short};
    let mut o = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 9009)),
        send: true,
        duration: Duration::from_secs(3),
        buf: PATTERN_LEN,
        allow_netns: false,
        timeout: Duration::from_secs(10),
        label: String::new(),
    };
    while let Some(arg) = next(&mut p)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("addr") => {
                let v = text(&mut p, "--addr")?;
                o.addr = v
                    .parse()
                    .map_err(|_| format!("--addr {v:?}: not an IP address and port"))?;
            }
            Long("mode") => {
                o.send = match text(&mut p, "--mode")?.as_str() {
                    "send" => true,
                    "recv" => false,
                    other => return Err(format!("--mode {other:?}: send or recv")),
                }
            }
            Long("duration") => o.duration = secs(&mut p, "--duration")?,
            Long("buf") => o.buf = num(&mut p, "--buf")?,
            Long("allow-netns") => o.allow_netns = true,
            Long("timeout") => o.timeout = secs(&mut p, "--timeout")?,
            Long("label") => o.label = text(&mut p, "--label")?,
            other => return Err(unexpected(other)),
        }
    }
    if o.buf == 0 || o.buf > PATTERN_LEN {
        return Err(format!("--buf must be between 1 and {PATTERN_LEN}"));
    }
    if o.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    let netns = o.allow_netns.then(check_netns);
    check_target(&o.addr.to_string(), &[o.addr], netns)?;
    Ok(Some(o))
}

/// The measured transfer: bytes, seconds.
fn send(o: &Options, conn: &mut TcpStream, pattern: &[u8]) -> Result<(u64, f64), String> {
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < o.duration {
        let off = (sent % PATTERN_LEN as u64) as usize;
        match conn.write(&pattern[off..off + o.buf]) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write after {sent} bytes: {e}")),
        }
    }
    conn.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    // The sink answers after it has read everything: bounded by --timeout per read.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if answer.len() + n <= 64 => answer.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err("the sink's answer is too long".into()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for the sink's answer: {e}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&answer);
    let got: Option<u64> = text
        .strip_prefix(TRAILER_PREFIX)
        .and_then(|t| t.trim_end().parse().ok());
    match got {
        Some(n) if n == sent => Ok((sent, secs)),
        Some(n) => Err(format!("sent {sent} bytes, the sink counted {n}")),
        None => Err(format!("unexpected answer from the sink: {text:?}")),
    }
}

fn recv(o: &Options, conn: &mut TcpStream, pattern: &[u8]) -> Result<(u64, f64), String> {
    let mut buf = vec![0u8; o.buf];
    let start = Instant::now();
    let mut got = 0u64;
    while start.elapsed() < o.duration {
        match conn.read(&mut buf) {
            Ok(0) => return Err(format!("the source closed after {got} bytes")),
            Ok(n) => {
                if let Some(at) = mismatch(pattern, got, &buf[..n]) {
                    return Err(format!(
                        "byte mismatch at stream offset {}",
                        got + at as u64
                    ));
                }
                got += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        }
    }
    Ok((got, start.elapsed().as_secs_f64()))
}

fn run(o: &Options) -> Result<(u64, f64), String> {
    let mut conn = TcpStream::connect_timeout(&o.addr, o.timeout)
        .map_err(|e| format!("connect {}: {e}", o.addr))?;
    conn.set_read_timeout(Some(o.timeout))
        .and_then(|()| conn.set_write_timeout(Some(o.timeout)))
        .map_err(|e| format!("socket options: {e}"))?;
    let pattern = pattern();
    if o.send {
        send(o, &mut conn, &pattern)
    } else {
        recv(o, &mut conn, &pattern)
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() -> ExitCode {
    let o = match parse_args(lexopt::Parser::from_env()) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bulk_client: {e}");
            return ExitCode::from(2);
        }
    };
    let result = run(&o);
    let (bytes, secs, error) = match &result {
        Ok((b, s)) => (*b, *s, String::new()),
        Err(e) => (0, 0.0, e.clone()),
    };
    let rate = if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        0.0
    };
    println!(
        "{{\"label\":{},\"addr\":\"{}\",\"mode\":\"{}\",\"bytes\":{bytes},\"duration_s\":{secs:.4},\
         \"mb_per_s\":{rate:.2},\"ok\":{},\"error\":{}}}",
        json_str(&o.label),
        o.addr,
        if o.send { "send" } else { "recv" },
        result.is_ok(),
        json_str(&error)
    );
    if let Err(e) = &result {
        eprintln!("bulk_client: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
