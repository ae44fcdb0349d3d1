//! `netpoll-bench`: a closed-loop load generator for TCP echo servers on loopback.
//!
//! It loads only servers on this machine: loopback addresses, or, with `--allow-netns`, private
//! addresses seen from inside a named network namespace other than the initial one (the TAP
//! and veth links `hosted/bench/tap.py` builds in namespaces it creates).
//!
//! C connections each keep `--pipeline` messages of `--size` bytes in flight: a message is
//! issued, the echo of all its bytes completes it, and the completion issues the next one. The
//! run lasts `--duration` seconds (or until `--max-msgs` messages were issued) and then drains
//! what is in flight. Every echoed byte is compared with what was sent (each connection sends a
//! different stretch of a pseudo-random pattern, so lost, duplicated, reordered or crossed bytes
//! all show up); a mismatch is reported and makes the exit status nonzero.
//!
//! `--once` is the memory scenario: open C connections, hold them idle until the server has
//! accepted them all, then have each echo one message.
//!
//! With `--server-pid`, the server's CPU time (utime + stime from `/proc/PID/stat`) over the
//! measured window and its resident memory (`VmRSS`) are reported too.
//!
//! Output: one JSON line on stdout per run. A few client threads, each with its own
//! edge-triggered epoll instance over non-blocking sockets (the FFI is in `sys.rs`), so 10,000
//! connections cost 10,000 descriptors, not 10,000 threads; latencies go into an HDR
//! histogram (`hdrhistogram`), options through `lexopt`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

#[allow(dead_code)] // Shared by the benchmark programs; not every one uses every item.
#[path = "../bench_support/mod.rs"]
mod bench_support;
mod sys;

use bench_support::{check_netns, check_target};
use sys::Epoll;

const USAGE: &str = "\
netpoll-bench: closed-loop load generator for TCP echo servers (loopback only, or private
addresses inside a benchmark's own network namespace with --allow-netns).

USAGE:
    netpoll-bench [OPTIONS]

OPTIONS:
    --addr ADDR          Echo server to load (loopback only) [default: 127.0.0.1:9009]
    --allow-netns        Also allow private addresses (10/8, 172.16/12, 192.168/16, 169.254/16,
                         fc00::/7, fe80::/10), only when this process runs in a named network
                         namespace (`ip netns add`) other than pid 1's, via `ip netns exec`
    --conns N            Connections [default: 1]
    --size BYTES         Message size [default: 128]
    --pipeline N         Messages in flight per connection [default: 1]
    --duration SECS      Time to keep issuing messages (fractions allowed) [default: 3]
    --warmup SECS        Leading time not measured (latency, rate, server CPU) [default: 0]
    --max-msgs N         Stop issuing after N messages in total (0: no cap) [default: 0]
    --threads N          Client threads, each with its own epoll [default: 1]
    --once               Memory mode: hold the connections idle until the server has accepted
                         them all, then each echoes one message
    --server-pid PID     Also report the server's CPU time and RSS (from /proc/PID)
    --label TEXT         Copied into the JSON line (e.g. the server's name)
    --drain-timeout SECS Time allowed for in-flight echoes after the run [default: 10]
    -h, --help           Print this help

OUTPUT:
    One JSON line on stdout: rate, latency percentiles (p50/p90/p99/p99.9/max, microseconds),
    errors and mismatches, and with --server-pid the server's CPU per message and RSS.
    Exit status 1 if any byte mismatched or any connection failed.

EXAMPLE:
    netpoll echo --listen 127.0.0.1:9009 --quiet &
    netpoll-bench --addr 127.0.0.1:9009 --conns 50 --duration 3
";

/// Length of the byte pattern the connections send: a prime, so no two connections (offset
/// by a multiple of a smaller prime) send the same bytes and no shift hides in a period.
const PATTERN_LEN: usize = 131_071;
/// Bytes read per `read` call.
const READ_BUF: usize = 64 * 1024;
/// Events per `epoll_wait`.
const EVENT_BATCH: usize = 256;

#[derive(Debug, Clone)]
struct Options {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    pipeline: usize,
    duration: Duration,
    warmup: Duration,
    max_msgs: u64,
    threads: usize,
    once: bool,
    server_pid: Option<u32>,
    label: String,
    drain_timeout: Duration,
}

/// Resolves `--addr` and checks that it may be loaded (`bench_support::check_target`).
fn resolve(v: &str, netns: Option<Result<(), String>>) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = v
        .to_socket_addrs()
        .map_err(|e| format!("--addr {v:?}: not an address ({e}); try 127.0.0.1:9009"))?
        .collect();
    let Some(&first) = addrs.first() else {
        return Err(format!("--addr {v:?}: resolves to no address"));
    };
    check_target(v, &addrs, netns)?;
    Ok(first)
}

fn parse_args(mut p: lexopt::Parser) -> Result<Option<Options>, String> {
    use bench_support::{next, num, secs, text, unexpected};
    use lexopt::Arg::{Long, Short};
    let mut o = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 9009)),
        conns: 1,
        size: 128,
        pipeline: 1,
        duration: Duration::from_secs(3),
        warmup: Duration::ZERO,
        max_msgs: 0,
        threads: 1,
        once: false,
        server_pid: None,
        label: String::new(),
        drain_timeout: Duration::from_secs(10),
    };
    let mut addr = None;
    let mut allow_netns = false;
    while let Some(arg) = next(&mut p)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("addr") => addr = Some(text(&mut p, "--addr")?),
            Long("allow-netns") => allow_netns = true,
            Long("conns") => o.conns = num(&mut p, "--conns")?,
            Long("size") => o.size = num(&mut p, "--size")?,
            Long("pipeline") => o.pipeline = num(&mut p, "--pipeline")?,
            Long("duration") => o.duration = secs(&mut p, "--duration")?,
            Long("warmup") => o.warmup = secs(&mut p, "--warmup")?,
            Long("max-msgs") => o.max_msgs = num(&mut p, "--max-msgs")?,
            Long("threads") => o.threads = num(&mut p, "--threads")?,
            Long("once") => o.once = true,
            Long("server-pid") => o.server_pid = Some(num(&mut p, "--server-pid")?),
            Long("label") => o.label = text(&mut p, "--label")?,
            Long("drain-timeout") => o.drain_timeout = secs(&mut p, "--drain-timeout")?,
            other => return Err(unexpected(other)),
        }
    }
    if let Some(v) = addr {
        o.addr = resolve(&v, allow_netns.then(check_netns))?;
    }
    if o.conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    if o.size == 0 || o.size > PATTERN_LEN {
        return Err(format!("--size must be between 1 and {PATTERN_LEN} bytes"));
    }
    if o.pipeline == 0 || o.pipeline.saturating_mul(o.size) > 64 << 20 {
        return Err("--pipeline must be at least 1, with pipeline x size at most 64 MiB".into());
    }
    if o.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    o.threads = o.threads.min(o.conns);
    if !o.once && o.warmup >= o.duration {
        return Err("--warmup must be shorter than --duration".into());
    }
    Ok(Some(o))
}

// ---------------------------------------------------------------------------------------------
// Latencies: an HDR histogram of nanoseconds (3 significant digits) plus the exact maximum.

#[derive(Debug, Clone)]
struct Latencies {
    hist: Histogram<u64>,
    max_ns: u64,
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            // 1 ns to an hour; a longer latency is recorded as an hour (the max stays exact).
            hist: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("valid bounds and precision"),
            max_ns: 0,
        }
    }

    fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The value at quantile `q` (0..=1), in nanoseconds; never above the exact maximum.
    fn quantile(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q).min(self.max_ns)
    }
}

// ---------------------------------------------------------------------------------------------
// The byte pattern: PATTERN_LEN pseudo-random bytes, stored twice so any window of up to
// PATTERN_LEN bytes starting anywhere in the first copy is one contiguous slice.

fn pattern() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut p = Vec::with_capacity(2 * PATTERN_LEN);
    for _ in 0..PATTERN_LEN {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        p.push((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8);
    }
    p.extend_from_within(..);
    p
}

// ---------------------------------------------------------------------------------------------
// /proc readers for the server process.

/// utime + stime of `pid` (all its threads, dead ones included), in nanoseconds.
fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000_000 / sys::clock_ticks_per_sec())
}

/// `VmRSS` of `pid`, in KiB.
fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn proc_fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

// ---------------------------------------------------------------------------------------------
// One connection of the closed loop.

struct Conn {
    stream: TcpStream,
    id: usize,
    /// Where this connection's bytes start in the pattern.
    base: usize,
    /// Bytes issued (messages issued x size), written, and received-and-verified.
    issued: u64,
    written: u64,
    received: u64,
    /// Issue times of the messages in flight, oldest first.
    in_flight: VecDeque<Instant>,
    failed: bool,
}

/// What one client thread measured.
struct ThreadReport {
    hist: Latencies,
    measured_msgs: u64,
    total_msgs: u64,
    mismatches: u64,
    errors: Vec<String>,
    error_count: u64,
    last_completion: Option<Instant>,
    conns: Vec<Conn>,
}

struct Shared {
    opts: Options,
    pattern: Vec<u8>,
    /// Messages issued by all threads (for --max-msgs).
    issued_msgs: AtomicU64,
    /// The run's start, set by the main thread before the start barrier.
    start: OnceLock<Instant>,
    started: Barrier,
}

const MAX_ERRORS_KEPT: usize = 5;

struct Worker<'a> {
    shared: &'a Shared,
    report: ThreadReport,
    buf: Vec<u8>,
    in_flight_total: u64,
    /// False once the deadline passed, the message cap was hit, or (`--once`) at start.
    issuing: bool,
    deadline: Instant,
    measure_start: Instant,
}

impl<'a> Worker<'a> {
    fn error(&mut self, msg: String) {
        self.report.error_count += 1;
        if self.report.errors.len() < MAX_ERRORS_KEPT {
            self.report.errors.push(msg);
        }
    }

    /// Issues one more message on connection `i`, unless the run stopped issuing.
    fn issue(&mut self, i: usize, now: Instant) -> bool {
        if !self.issuing {
            return false;
        }
        if now >= self.deadline {
            self.issuing = false;
            return false;
        }
        let cap = self.shared.opts.max_msgs;
        // Relaxed: a counter; no other memory depends on it.
        if cap != 0 && self.shared.issued_msgs.fetch_add(1, Ordering::Relaxed) >= cap {
            self.issuing = false;
            return false;
        }
        let c = &mut self.report.conns[i];
        c.issued += self.shared.opts.size as u64;
        c.in_flight.push_back(now);
        self.in_flight_total += 1;
        true
    }

    /// Closes connection `i` after a failure; its messages in flight are abandoned.
    fn fail(&mut self, i: usize, msg: String) {
        let c = &mut self.report.conns[i];
        if c.failed {
            return;
        }
        c.failed = true;
        let lost = c.in_flight.len() as u64;
        c.in_flight.clear();
        let _ = c.stream.shutdown(Shutdown::Both);
        self.in_flight_total -= lost;
        self.error(msg);
    }

    /// Writes what connection `i` has issued and not yet written.
    fn flush(&mut self, i: usize) {
        let pattern = &self.shared.pattern;
        let c = &mut self.report.conns[i];
        while !c.failed && c.written < c.issued {
            let off = (c.base + (c.written % PATTERN_LEN as u64) as usize) % PATTERN_LEN;
            let len = ((c.issued - c.written) as usize).min(PATTERN_LEN);
            match (&c.stream).write(&pattern[off..off + len]) {
                Ok(0) => {
                    let id = c.id;
                    self.fail(i, format!("conn {id}: write returned 0"));
                    return;
                }
                Ok(n) => c.written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let id = c.id;
                    self.fail(i, format!("conn {id}: write: {e}"));
                    return;
                }
            }
        }
    }

    /// Reads, verifies and completes what connection `i` has received.
    fn on_readable(&mut self, i: usize) {
        let size = self.shared.opts.size as u64;
        loop {
            let c = &mut self.report.conns[i];
            if c.failed {
                return;
            }
            let n = match (&c.stream).read(&mut self.buf) {
                Ok(0) => {
                    let (id, pending) = (c.id, c.issued - c.received);
                    self.fail(
                        i,
                        format!(
                            "conn {id}: server closed the connection ({pending} bytes not echoed)"
                        ),
                    );
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let id = c.id;
                    self.fail(i, format!("conn {id}: read: {e}"));
                    return;
                }
            };
            let now = Instant::now();
            if c.received + n as u64 > c.issued {
                let (id, extra) = (c.id, c.received + n as u64 - c.issued);
                self.report.mismatches += 1;
                self.fail(
                    i,
                    format!("conn {id}: received {extra} bytes more than were sent"),
                );
                return;
            }
            let off = (c.base + (c.received % PATTERN_LEN as u64) as usize) % PATTERN_LEN;
            let expected = &self.shared.pattern[off..off + n];
            if expected != &self.buf[..n] {
                let at = expected
                    .iter()
                    .zip(&self.buf[..n])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                let (id, offset) = (c.id, c.received + at as u64);
                let (want, got) = (expected[at], self.buf[at]);
                self.report.mismatches += 1;
                self.fail(
                    i,
                    format!(
                        "conn {id}: echoed byte mismatch at stream offset {offset}: \
                         expected {want:#04x}, got {got:#04x}"
                    ),
                );
                return;
            }
            c.received += n as u64;
            // Complete every message whose last byte arrived.
            let mut completed = 0;
            let done_msgs = c.received / size;
            let issued_msgs = c.issued / size;
            while (c.in_flight.len() as u64) > issued_msgs - done_msgs {
                let Some(t0) = c.in_flight.pop_front() else {
                    break;
                };
                completed += 1;
                self.report.total_msgs += 1;
                if t0 >= self.measure_start {
                    let ns = u64::try_from(now.duration_since(t0).as_nanos()).unwrap_or(u64::MAX);
                    self.report.hist.record(ns);
                    self.report.measured_msgs += 1;
                }
            }
            if completed > 0 {
                self.in_flight_total -= completed;
                self.report.last_completion = Some(now);
                let mut reissued = false;
                for _ in 0..completed {
                    if !self.issue(i, now) {
                        break;
                    }
                    reissued = true;
                }
                if reissued {
                    self.flush(i);
                }
            }
            // A short read drained the socket: edge triggering reports the next data.
            if n < self.buf.len() {
                return;
            }
        }
    }

    fn run(&mut self, epoll: &Epoll) {
        let shared = self.shared;
        let opts = &shared.opts;
        let pipeline = if opts.once { 1 } else { opts.pipeline };
        if self.report.conns.is_empty() {
            return;
        }
        for i in 0..self.report.conns.len() {
            let now = Instant::now();
            for _ in 0..pipeline {
                self.issue(i, now);
            }
            self.flush(i);
        }
        if opts.once {
            self.issuing = false;
        }
        let drain_deadline = self.deadline + opts.drain_timeout;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENT_BATCH];
        loop {
            let now = Instant::now();
            if self.issuing && now >= self.deadline {
                self.issuing = false;
            }
            if !self.issuing && self.in_flight_total == 0 {
                return;
            }
            let until = if self.issuing {
                self.deadline
            } else if now >= drain_deadline {
                let lost = self.in_flight_total;
                self.error(format!(
                    "{lost} messages not echoed within the drain timeout ({:?})",
                    opts.drain_timeout
                ));
                self.report.error_count += lost - 1;
                return;
            } else {
                drain_deadline
            };
            // Round up so a wait never ends just short of the deadline and spins.
            let ms = until
                .saturating_duration_since(now)
                .as_micros()
                .div_ceil(1000);
            let n = match epoll.wait(&mut events, i32::try_from(ms).unwrap_or(i32::MAX)) {
                Ok(n) => n,
                Err(e) => {
                    self.error(format!("epoll_wait: {e}"));
                    return;
                }
            };
            for ev in &events[..n] {
                let (flags, i) = (ev.events, ev.u64 as usize);
                let readable =
                    (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                if flags & readable != 0 {
                    self.on_readable(i);
                }
                if flags & (libc::EPOLLOUT | libc::EPOLLERR) as u32 != 0 {
                    self.flush(i);
                }
            }
        }
    }
}

/// Connections opened before the client checks that the server accepted them: half of the
/// usual listen backlog (Go's and netpoll's 128), so a slow accept loop never overflows the
/// accept queue (an overflow drops the SYN and stalls the connect for the 1 s SYN timeout).
const CONNECT_BATCH: usize = 64;

/// Opens `opts.conns` connections (blocking connects from this thread, then non-blocking).
/// With the server's pid, every [`CONNECT_BATCH`] connections waits until the server holds a
/// descriptor for each (it accepted them).
fn connect_all(opts: &Options, fds_before: Option<(u32, usize)>) -> Result<Vec<TcpStream>, String> {
    let mut streams = Vec::with_capacity(opts.conns);
    let mut pace = fds_before;
    for id in 0..opts.conns {
        if id > 0 && id % CONNECT_BATCH == 0 {
            if let Some((pid, before)) = pace {
                // Best effort: if the server's descriptor count does not follow (it was still
                // closing earlier connections, say), stop pacing rather than stall.
                if !wait_for_fds(pid, before + id, Duration::from_secs(1)) {
                    pace = None;
                }
            }
        }
        let stream = TcpStream::connect_timeout(&opts.addr, Duration::from_secs(10))
            .map_err(|e| format!("conn {id}: connect {}: {e}", opts.addr))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_nonblocking(true))
            .map_err(|e| format!("conn {id}: socket options: {e}"))?;
        streams.push(stream);
    }
    Ok(streams)
}

/// Registers this thread's connections, waits for the start, then runs the closed loop.
fn client_thread(shared: Arc<Shared>, streams: Vec<(usize, TcpStream)>) -> ThreadReport {
    let opts = &shared.opts;
    let mut report = ThreadReport {
        hist: Latencies::new(),
        measured_msgs: 0,
        total_msgs: 0,
        mismatches: 0,
        errors: Vec::new(),
        error_count: 0,
        last_completion: None,
        conns: Vec::with_capacity(streams.len()),
    };
    let setup = (|| -> Result<Epoll, String> {
        let epoll = Epoll::new().map_err(|e| format!("epoll_create1: {e}"))?;
        for (id, stream) in streams {
            let token = report.conns.len() as u64;
            epoll
                .add(stream.as_fd(), token)
                .map_err(|e| format!("conn {id}: epoll_ctl: {e}"))?;
            report.conns.push(Conn {
                stream,
                id,
                // 7919 is prime and smaller than PATTERN_LEN: distinct ids, distinct offsets.
                base: (id * 7919) % PATTERN_LEN,
                issued: 0,
                written: 0,
                received: 0,
                in_flight: VecDeque::with_capacity(opts.pipeline),
                failed: false,
            });
        }
        Ok(epoll)
    })();
    shared.started.wait();
    let epoll = match setup {
        Ok(e) => e,
        Err(msg) => {
            report.error_count += 1;
            report.errors.push(msg);
            return report;
        }
    };
    let start = *shared
        .start
        .get()
        .expect("start is set before the start barrier");
    let mut worker = Worker {
        shared: &shared,
        report,
        buf: vec![0; READ_BUF],
        in_flight_total: 0,
        issuing: true,
        deadline: start + opts.duration,
        measure_start: start + opts.warmup,
    };
    worker.run(&epoll);
    worker.report
}

// ---------------------------------------------------------------------------------------------
// JSON output (flat numbers and strings; no dependency needed).

struct Json(String);

impl Json {
    fn new() -> Self {
        Json(String::from("{"))
    }
    fn key(&mut self, k: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{k}\":");
    }
    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.0.push('"');
        for ch in v.chars() {
            match ch {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }
    fn int(&mut self, k: &str, v: u64) {
        self.key(k);
        let _ = write!(self.0, "{v}");
    }
    fn num(&mut self, k: &str, v: f64) {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.0, "{}", (v * 1000.0).round() / 1000.0);
        } else {
            self.0.push_str("null");
        }
    }
    fn opt_int(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => self.int(k, v),
            None => {
                self.key(k);
                self.0.push_str("null");
            }
        }
    }
    fn opt_num(&mut self, k: &str, v: Option<f64>) {
        self.num(k, v.unwrap_or(f64::NAN));
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.0.push_str(if v { "true" } else { "false" });
    }
    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Waits until `pid` holds at least `want` descriptors (the server accepted everyone).
fn wait_for_fds(pid: u32, want: usize, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        match proc_fd_count(pid) {
            Some(n) if n >= want => return true,
            None => return false,
            Some(_) if Instant::now() >= until => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn run(opts: Options) -> (String, bool) {
    // Best effort: without it, large --conns runs fail at connect with a clear error.
    let _ = netpoll_hosted::raise_fd_limit();
    let pid = opts.server_pid;
    let rss_before = pid.and_then(proc_rss_kib);
    let fds_before = pid.and_then(proc_fd_count);
    let connect_start = Instant::now();
    let connected = connect_all(&opts, pid.zip(fds_before));
    let connect_s = connect_start.elapsed().as_secs_f64();
    let mut setup_errors = Vec::new();
    let streams = connected.unwrap_or_else(|e| {
        setup_errors.push(e);
        Vec::new()
    });
    let threads = if streams.is_empty() { 0 } else { opts.threads };
    let shared = Arc::new(Shared {
        pattern: pattern(),
        issued_msgs: AtomicU64::new(0),
        start: OnceLock::new(),
        started: Barrier::new(threads + 1),
        opts: opts.clone(),
    });
    let mut shares: Vec<Vec<(usize, TcpStream)>> = (0..threads).map(|_| Vec::new()).collect();
    for (id, stream) in streams.into_iter().enumerate() {
        shares[id % threads].push((id, stream));
    }
    let handles: Vec<_> = shares
        .into_iter()
        .enumerate()
        .map(|(t, share)| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || client_thread(shared, share))
                .expect("spawn a client thread")
        })
        .collect();
    let mut rss_idle = None;
    if opts.once && setup_errors.is_empty() {
        if let (Some(pid), Some(before)) = (pid, fds_before) {
            if !wait_for_fds(pid, before + opts.conns, Duration::from_secs(30)) {
                setup_errors.push(format!(
                    "the server (pid {pid}) did not accept all {} connections within 30 s",
                    opts.conns
                ));
            }
            rss_idle = proc_rss_kib(pid);
        }
    }
    let start = Instant::now();
    shared
        .start
        .set(start)
        .expect("the start is set exactly once");
    let cpu_measure_start = if opts.warmup.is_zero() {
        pid.and_then(proc_cpu_ns)
    } else {
        None
    };
    shared.started.wait();
    let cpu0 = if opts.warmup.is_zero() {
        cpu_measure_start
    } else {
        std::thread::sleep(opts.warmup);
        pid.and_then(proc_cpu_ns)
    };
    let reports: Vec<ThreadReport> = handles
        .into_iter()
        .map(|h| h.join().expect("a client thread panicked"))
        .collect();
    let cpu1 = pid.and_then(proc_cpu_ns);
    let rss_after = pid.and_then(proc_rss_kib);

    let mut hist = Latencies::new();
    let (mut msgs, mut total_msgs, mut mismatches, mut error_count) = (0, 0, 0, 0);
    let mut errors = setup_errors.clone();
    error_count += setup_errors.len() as u64;
    let mut last = None::<Instant>;
    let mut conns = Vec::new();
    for r in reports {
        hist.merge(&r.hist);
        msgs += r.measured_msgs;
        total_msgs += r.total_msgs;
        mismatches += r.mismatches;
        error_count += r.error_count;
        errors.extend(r.errors);
        last = last.max(r.last_completion);
        conns.extend(r.conns);
    }
    // Close gracefully (FIN) after the server's memory was read.
    for c in &conns {
        let _ = c.stream.shutdown(Shutdown::Write);
    }
    drop(conns);

    let measure_start = start + opts.warmup;
    let window = last
        .map(|l| l.saturating_duration_since(measure_start).as_secs_f64())
        .unwrap_or(0.0);
    let size = opts.size as u64;
    let rate = if window > 0.0 {
        msgs as f64 / window
    } else {
        0.0
    };
    let ok = error_count == 0 && mismatches == 0;

    let mut j = Json::new();
    j.str("label", &opts.label);
    j.str("addr", &opts.addr.to_string());
    j.str("mode", if opts.once { "once" } else { "closed-loop" });
    j.int("conns", opts.conns as u64);
    j.int("size", size);
    j.int("pipeline", if opts.once { 1 } else { opts.pipeline as u64 });
    j.int("threads", opts.threads as u64);
    j.num("connect_s", connect_s);
    j.num("duration_s", window);
    j.int("msgs", msgs);
    j.int("msgs_total", total_msgs);
    j.int("bytes", msgs * size);
    j.num("msgs_per_s", rate);
    j.num("mb_per_s", rate * size as f64 / 1e6);
    let us = |ns: u64| ns as f64 / 1000.0;
    j.num("p50_us", us(hist.quantile(0.50)));
    j.num("p90_us", us(hist.quantile(0.90)));
    j.num("p99_us", us(hist.quantile(0.99)));
    j.num("p999_us", us(hist.quantile(0.999)));
    j.num("max_us", us(hist.max_ns));
    j.num("mean_us", hist.hist.mean() / 1000.0);
    j.int("mismatches", mismatches);
    j.int("errors", error_count);
    j.bool("ok", ok);
    j.opt_int("server_pid", pid.map(u64::from));
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    j.opt_num("server_cpu_s", cpu.map(|c| c as f64 / 1e9));
    j.opt_num(
        "server_cpu_us_per_msg",
        cpu.filter(|_| msgs > 0)
            .map(|c| c as f64 / 1000.0 / msgs as f64),
    );
    j.opt_int("server_rss_before_kib", rss_before);
    j.opt_int("server_rss_idle_kib", rss_idle);
    j.opt_int("server_rss_after_kib", rss_after);
    let per_conn = match (rss_before, rss_after) {
        (Some(a), Some(b)) if opts.once => Some((b as f64 - a as f64) * 1024.0 / opts.conns as f64),
        _ => None,
    };
    j.opt_num("server_rss_bytes_per_conn", per_conn);
    j.str("error", errors.first().map(String::as_str).unwrap_or(""));
    for e in &errors {
        let _ = writeln!(io::stderr(), "netpoll-bench: {e}");
    }
    if error_count > errors.len() as u64 {
        let _ = writeln!(
            io::stderr(),
            "netpoll-bench: ... and {} more errors",
            error_count - errors.len() as u64
        );
    }
    (j.finish(), ok)
}

fn main() -> ExitCode {
    match parse_args(lexopt::Parser::from_env()) {
        Ok(None) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "netpoll-bench: {e}\nrun `netpoll-bench --help` for usage"
            );
            ExitCode::from(2)
        }
        Ok(Some(opts)) => {
            let (line, ok) = run(opts);
            println!("{line}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_stay_within_a_tenth_of_a_percent_and_under_the_max() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for v in 1..=1000u64 {
            if v % 2 == 0 {
                a.record(v * 1000)
            } else {
                b.record(v * 1000)
            }
        }
        a.merge(&b);
        let p50 = a.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.001, "{p50}");
        assert_eq!(a.quantile(1.0), 1_000_000);
        assert_eq!(a.max_ns, 1_000_000);
    }

    #[test]
    fn addresses_resolve_and_only_loopback_is_loaded_by_default() {
        assert_eq!(
            resolve("127.0.0.1:9", None),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert!(resolve("10.0.0.1:9", None).is_err());
        assert!(resolve("10.7.0.2:9", Some(Ok(()))).is_ok());
        assert!(resolve("not an address", None).is_err());
    }

    #[test]
    fn options_are_checked() {
        let parse = |a: &[&str]| parse_args(lexopt::Parser::from_args(a.iter().copied()));
        let o = parse(&[
            "--conns",
            "50",
            "--size",
            "16384",
            "--duration",
            "1",
            "--warmup",
            "0.5",
        ])
        .unwrap()
        .unwrap();
        assert_eq!((o.conns, o.size, o.threads), (50, 16384, 1));
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--conns", "0"]).is_err());
        assert!(parse(&["--warmup", "3", "--duration", "3"]).is_err());
        assert!(parse(&["--bogus"]).unwrap_err().contains("bogus"));
        assert!(parse(&["--addr", "8.8.8.8:53"]).is_err());
    }

    #[test]
    fn pattern_windows_are_contiguous() {
        let p = pattern();
        assert_eq!(p.len(), 2 * PATTERN_LEN);
        assert_eq!(p[..PATTERN_LEN], p[PATTERN_LEN..]);
    }
}
