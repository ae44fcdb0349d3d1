//! What the benchmark programs of `hosted/bench/` share: option parsing on `lexopt`, the
//! `listening <ip:port>` line the scripts read from a server's stdout, which addresses a client
//! may load (loopback, or private ones inside a benchmark's own network namespace), the bulk
//! byte pattern and the sink's trailer, and the options of the two TAP bulk servers.
//!
//! Not a target itself: each program includes it with `mod bench_support;` (or `#[path]`) and
//! uses what it needs.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use netpoll_drivers::smoltcp::wire::IpCidr;

// ---------------------------------------------------------------------------------------------
// Option parsing.

/// The next argument, or `None` at the end; a parse error becomes a message.
pub fn next(p: &mut lexopt::Parser) -> Result<Option<lexopt::Arg<'_>>, String> {
    p.next().map_err(|e| e.to_string())
}

/// The message for an argument no program option matches.
pub fn unexpected(arg: lexopt::Arg<'_>) -> String {
    arg.unexpected().to_string()
}

/// The value of option `name` as text.
pub fn text(p: &mut lexopt::Parser, name: &str) -> Result<String, String> {
    let v: OsString = p.value().map_err(|_| format!("{name} needs a value"))?;
    v.into_string()
        .map_err(|v| format!("{name} {v:?}: not valid UTF-8"))
}

/// The value of option `name` as a non-negative integer.
pub fn num<T: FromStr>(p: &mut lexopt::Parser, name: &str) -> Result<T, String> {
    let v = text(p, name)?;
    v.parse()
        .map_err(|_| format!("{name} {v:?}: not a non-negative integer"))
}

/// The value of option `name` as a number of seconds (fractions allowed, 0 to one day).
pub fn secs(p: &mut lexopt::Parser, name: &str) -> Result<Duration, String> {
    let v = text(p, name)?;
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("{name} {v:?}: not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{name} {v:?}: out of range (0 to 86400 seconds)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

// ---------------------------------------------------------------------------------------------
// The server's address for the scripts.

/// Prints `listening <ip:port>` on stdout, flushed: the one line a benchmark server writes there
/// (`hosted/bench/benchlib.py` reads it to learn where the server listens).
pub fn announce_listening(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// Which servers a client may load.

/// True for 10/8, 172.16/12, 192.168/16, 169.254/16, fc00::/7 (unique local), fe80::/10 (link
/// local), and loopback (IPv4-mapped loopback included).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_private() || a.is_link_local() || a.is_loopback(),
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            is_loopback(ip) || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// True for 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Checks that a client may load `addrs` (what `--addr` resolved to). Loopback addresses are
/// always allowed. `netns` is the `--allow-netns` check, already made: `Some(Ok(()))` when this
/// process runs in a non-initial named network namespace, which also allows private
/// addresses; `Some(Err(why))` when it does not (or cannot tell); `None` without the flag.
pub fn check_target(
    given: &str,
    addrs: &[SocketAddr],
    netns: Option<Result<(), String>>,
) -> Result<(), String> {
    let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) else {
        return Ok(());
    };
    match netns {
        None => Err(format!(
            "--addr {given:?}: {bad} is not a loopback address; only servers on this machine \
             are loaded (127.0.0.0/8 or ::1), never a remote host (inside a benchmark's own \
             network namespace, --allow-netns also allows private addresses)"
        )),
        Some(Err(why)) => Err(format!(
            "--addr {given:?}: {bad} is not a loopback address and {why}"
        )),
        Some(Ok(())) => match addrs.iter().find(|a| !is_private(a.ip())) {
            Some(bad) => Err(format!(
                "--addr {given:?}: {bad} is not a private address; --allow-netns allows only \
                 private addresses (and loopback)"
            )),
            None => Ok(()),
        },
    }
}

/// A namespace file's identity: (device, inode) of the nsfs inode it names.
pub type NsId = (u64, u64);

fn ns_id(path: &str) -> std::io::Result<NsId> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows the /proc link (or a /run/netns bind mount) to the namespace inode.
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The `--allow-netns` check: this process must run in a network namespace that was made for
/// the purpose, not in the initial one. It must be a named namespace (`ip netns add NAME` bind
/// mounts it at `/run/netns/NAME`), and it must differ from pid 1's (`/proc/1/ns/net`, when
/// that can be read: pid 1 is the init of our pid namespace; `ip netns exec` moves only the
/// network namespace). Fails closed: our own namespace unreadable, or not found under
/// `/run/netns`, is a refusal.
pub fn check_netns() -> Result<(), String> {
    let own = ns_id("/proc/self/ns/net")
        .map_err(|e| format!("--allow-netns cannot read /proc/self/ns/net ({e})"))?;
    let mut named = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for entry in dir.flatten() {
            if let Ok(id) = ns_id(&entry.path().to_string_lossy()) {
                named.push(id);
            }
        }
    }
    // Unreadable in some sandboxes (pid 1 with more privileges than root here): the named
    // namespace check then decides alone.
    let init = ns_id("/proc/1/ns/net").ok();
    netns_allowed(own, &named, init)
}

/// The decision of [`check_netns`], given our namespace, the named ones and pid 1's.
pub fn netns_allowed(own: NsId, named: &[NsId], init: Option<NsId>) -> Result<(), String> {
    if init == Some(own) {
        return Err(
            "--allow-netns refuses: this process runs in the initial network namespace \
             (pid 1's); run it with `ip netns exec` in a namespace made for the benchmark"
                .into(),
        );
    }
    if !named.contains(&own) {
        return Err(
            "--allow-netns refuses: this process does not run in a named network \
             namespace (`ip netns add NAME`, then `ip netns exec NAME ...`)"
                .into(),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bulk streams of the TAP benchmark (raw_benchmark, tap_sink, bulk_client).

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

/// The options both TAP benchmark servers (`raw_benchmark`, `tap_sink`) take.
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

    /// Takes the long option `name` (without its dashes) and its value if it is one of the
    /// shared options; an error names any other option.
    pub fn take(&mut self, p: &mut lexopt::Parser, name: &str) -> Result<(), String> {
        match name {
            "tap" => self.tap = text(p, "--tap")?,
            "addr" => {
                let v = text(p, "--addr")?;
                self.cidr = IpCidr::from_str(&v)
                    .map_err(|()| format!("--addr {v:?}: not an address with a prefix length"))?;
            }
            "port" => self.port = num(p, "--port")?,
            "mode" => {
                self.mode = match text(p, "--mode")?.as_str() {
                    "sink" => Mode::Sink,
                    "source" => Mode::Source,
                    "echo" => Mode::Echo,
                    other => return Err(format!("--mode {other:?}: sink, source or echo")),
                }
            }
            "buf" => self.buf = num(p, "--buf")?,
            "backlog" => self.backlog = num(p, "--backlog")?,
            "exit-after" => self.exit_after = secs(p, "--exit-after")?,
            other => return Err(format!("invalid option '--{other}'")),
        }
        Ok(())
    }

    /// Checks the values once every option was taken.
    pub fn check(self) -> Result<Self, String> {
        if self.port == 0 || self.buf == 0 || self.buf > 16 << 20 || self.backlog == 0 {
            return Err(
                "--port and --backlog must be at least 1 and --buf between 1 and 16 MiB".into(),
            );
        }
        Ok(self)
    }

    /// Where the server listens.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.cidr.address().into(), self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(args: &[&str]) -> lexopt::Parser {
        lexopt::Parser::from_args(args.iter().copied())
    }

    #[test]
    fn option_values_parse_or_explain() {
        let mut p = parser(&["--conns", "12", "--duration", "0.5", "--size", "x"]);
        assert!(matches!(next(&mut p), Ok(Some(lexopt::Arg::Long("conns")))));
        assert_eq!(num::<usize>(&mut p, "--conns"), Ok(12));
        next(&mut p).unwrap();
        assert_eq!(secs(&mut p, "--duration"), Ok(Duration::from_millis(500)));
        next(&mut p).unwrap();
        let e = num::<usize>(&mut p, "--size").unwrap_err();
        assert!(e.contains("not a non-negative integer"), "{e}");
        let mut p = parser(&["--warmup", "-3"]);
        next(&mut p).unwrap();
        assert!(secs(&mut p, "--warmup").is_err());
        let mut p = parser(&["--label"]);
        next(&mut p).unwrap();
        assert_eq!(text(&mut p, "--label"), Err("--label needs a value".into()));
    }

    #[test]
    fn only_loopback_without_a_namespace() {
        let one = |s: &str| [s.parse::<SocketAddr>().unwrap()];
        for ok in [
            "127.0.0.1:9",
            "127.8.9.10:9",
            "[::1]:9",
            "[::ffff:127.0.0.1]:9",
        ] {
            assert!(check_target(ok, &one(ok), None).is_ok(), "{ok}");
        }
        let e = check_target("x", &one("10.0.0.1:9"), None).unwrap_err();
        assert!(e.contains("not a loopback address"), "{e}");
        assert!(check_target("x", &one("[2001:db8::1]:9"), None).is_err());
        assert!(check_target("x", &one("0.0.0.0:9"), None).is_err());
    }

    #[test]
    fn allow_netns_widens_to_private_addresses_only_inside_a_namespace() {
        let one = |s: &str| [s.parse::<SocketAddr>().unwrap()];
        let e = check_target("x", &one("10.7.0.2:9"), Some(Err("why".into()))).unwrap_err();
        assert!(e.contains("why"), "{e}");
        assert!(check_target("x", &one("127.0.0.1:9"), Some(Err("why".into()))).is_ok());
        for ok in [
            "10.7.0.2:9",
            "172.16.0.1:9",
            "192.168.1.1:9",
            "169.254.1.1:9",
            "[fd00::2]:9",
            "[fe80::1]:9",
            "127.0.0.1:9",
        ] {
            assert!(check_target(ok, &one(ok), Some(Ok(()))).is_ok(), "{ok}");
        }
        for bad in ["8.8.8.8:53", "[2001:db8::1]:9", "0.0.0.0:9", "172.32.0.1:9"] {
            let e = check_target(bad, &one(bad), Some(Ok(()))).unwrap_err();
            assert!(e.contains("not a private address"), "{bad}: {e}");
        }
        // The namespace check itself: named, and not pid 1's.
        let (init, ours) = ((4, 4026531840), (4, 4026532301));
        assert!(netns_allowed(ours, &[ours], Some(init)).is_ok());
        assert!(
            netns_allowed(ours, &[ours], None).is_ok(),
            "pid 1 unreadable"
        );
        assert!(netns_allowed(ours, &[], Some(init)).is_err(), "not named");
        assert!(
            netns_allowed(init, &[init], Some(init)).is_err(),
            "the initial one"
        );
    }

    #[test]
    fn bulk_pattern_round_trips_and_finds_the_first_difference() {
        let p = pattern();
        assert_eq!(p[..PATTERN_LEN], p[PATTERN_LEN..]);
        let mut out = vec![0u8; 3 * PATTERN_LEN / 2];
        fill(&p, 12_345, &mut out);
        assert_eq!(mismatch(&p, 12_345, &out), None);
        out[70_000] ^= 1;
        assert_eq!(mismatch(&p, 12_345, &out), Some(70_000));
    }
}
