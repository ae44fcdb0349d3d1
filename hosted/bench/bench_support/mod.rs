//! What the TAP benchmark's examples share (`raw_benchmark`, `tap_sink`, `bulk_client`): the
//! byte pattern of the bulk streams, the sink's trailer, small argument helpers, and the
//! network-namespace check of the client.
//!
//! Not an example itself (Cargo discovers `examples/*.rs` and `examples/*/main.rs` only); each
//! example includes it with `mod bench_support;` and uses what it needs.

use std::str::FromStr;
use std::time::Duration;

use netpoll_drivers::smoltcp::wire::IpCidr;

/// Period of the bulk byte pattern: a prime, so a lost, duplicated or shifted stretch of a
/// stream never lines up with the pattern again by accident.
pub const PATTERN_LEN: usize = 65_521;

/// The sink's answer once it has read the sender's FIN: `OK <bytes received>\n`.
pub const TRAILER_PREFIX: &str = "OK ";

/// The bulk stream pattern, stored twice: `&p[off..off + len]` is the stream's bytes at offset
/// `off` (mod [`PATTERN_LEN`]) for any `len <= PATTERN_LEN`.
pub fn pattern() -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    let mut p = Vec::with_capacity(2 * PATTERN_LEN);
    for _ in 0..PATTERN_LEN {
        // xorshift32
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p.push((x >> 24) as u8);
    }
    p.extend_from_within(..);
    p
}

/// Copies the stream's bytes at `offset` into `out` (any length).
pub fn fill(pattern: &[u8], offset: u64, out: &mut [u8]) {
    let mut off = (offset % PATTERN_LEN as u64) as usize;
    for chunk in out.chunks_mut(PATTERN_LEN) {
        chunk.copy_from_slice(&pattern[off..off + chunk.len()]);
        off = (off + chunk.len()) % PATTERN_LEN;
    }
}

/// Compares `data` with the stream's bytes at `offset`; the index of the first difference.
pub fn mismatch(pattern: &[u8], offset: u64, data: &[u8]) -> Option<usize> {
    let mut off = (offset % PATTERN_LEN as u64) as usize;
    let mut done = 0;
    for chunk in data.chunks(PATTERN_LEN) {
        let want = &pattern[off..off + chunk.len()];
        if want != chunk {
            let at = want
                .iter()
                .zip(chunk)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Some(done + at);
        }
        done += chunk.len();
        off = (off + chunk.len()) % PATTERN_LEN;
    }
    None
}

/// Parses a number of seconds (fractions allowed, 0 to one day).
pub fn parse_secs(name: &str, v: &str) -> Result<Duration, String> {
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("{name} {v:?}: not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{name} {v:?}: out of range (0 to 86400 seconds)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a non-negative integer option.
pub fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{name} {v:?}: not a non-negative integer"))
}

fn ns_id(path: &str) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows the /proc link (or a /run/netns bind mount) to the namespace inode.
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The `--allow-netns` check (the same as `netpoll-bench`'s): this process runs in a named
/// network namespace (`ip netns add NAME` bind mounts it at `/run/netns/NAME`) that is not pid
/// 1's (checked when `/proc/1/ns/net` can be read). Fails closed: our own namespace unreadable
/// or not found under `/run/netns` is a refusal.
pub fn check_netns() -> Result<(), String> {
    let own = ns_id("/proc/self/ns/net")
        .map_err(|e| format!("--allow-netns cannot read /proc/self/ns/net ({e})"))?;
    if ns_id("/proc/1/ns/net").ok() == Some(own) {
        return Err(
            "--allow-netns refuses: this process runs in the initial network namespace \
                    (pid 1's); run it with `ip netns exec`"
                .into(),
        );
    }
    let named = std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.flatten()
                .any(|e| ns_id(&e.path().to_string_lossy()).ok() == Some(own))
        })
        .unwrap_or(false);
    if !named {
        return Err(
            "--allow-netns refuses: this process does not run in a named network \
                    namespace (`ip netns add NAME`, then `ip netns exec NAME ...`)"
                .into(),
        );
    }
    Ok(())
}

/// What a benchmark server does with each connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Read and verify the bulk pattern; answer the trailer after the client's FIN.
    Sink,
    /// Write the bulk pattern until the client goes away.
    Source,
    /// Write back what was read.
    Echo,
}

/// The options both benchmark servers (`raw_benchmark`, `tap_sink`) take.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// TAP interface.
    pub tap: String,
    /// smoltcp's address on the link.
    pub cidr: IpCidr,
    /// TCP port served.
    pub port: u16,
    /// What to do with each connection.
    pub mode: Mode,
    /// Bytes per read (sink, echo) or write (source).
    pub buf: usize,
    /// Listening sockets kept in the accept pool.
    pub backlog: u32,
    /// Exit after this long (zero: never).
    pub exit_after: Duration,
}

impl ServerOptions {
    /// The defaults shared by both servers; `mode` and `buf` differ per server.
    pub fn defaults(mode: Mode, buf: usize) -> Self {
        ServerOptions {
            tap: "nptap0".into(),
            cidr: IpCidr::from_str("10.7.0.2/24").expect("a valid default address"),
            port: 9009,
            mode,
            buf,
            backlog: 128,
            exit_after: Duration::ZERO,
        }
    }

    /// Parses `args` over these defaults; `Ok(None)` means `--help` was asked for.
    pub fn parse(mut self, args: &[String]) -> Result<Option<Self>, String> {
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--tap" => self.tap = value("--tap")?,
                "--addr" => {
                    let v = value("--addr")?;
                    self.cidr = IpCidr::from_str(&v).map_err(|()| {
                        format!("--addr {v:?}: not an address with a prefix length")
                    })?;
                }
                "--port" => self.port = parse_num("--port", &value("--port")?)?,
                "--mode" => {
                    self.mode = match value("--mode")?.as_str() {
                        "sink" => Mode::Sink,
                        "source" => Mode::Source,
                        "echo" => Mode::Echo,
                        other => return Err(format!("--mode {other:?}: sink, source or echo")),
                    }
                }
                "--buf" => self.buf = parse_num("--buf", &value("--buf")?)?,
                "--backlog" => self.backlog = parse_num("--backlog", &value("--backlog")?)?,
                "--exit-after" => {
                    self.exit_after = parse_secs("--exit-after", &value("--exit-after")?)?
                }
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if self.port == 0 || self.buf == 0 || self.buf > 16 << 20 || self.backlog == 0 {
            return Err(
                "--port and --backlog must be at least 1 and --buf between 1 and 16 MiB".into(),
            );
        }
        Ok(Some(self))
    }
}
