//! The command line: help texts and option parsing (lexopt).

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use lexopt::{Arg, Parser, ValueExt};
use netpoll_drivers::Config;
use netpoll_stack::DEFAULT_BACKLOG;

pub const HELP: &str = "\
netpoll: Go's network poller semantics, rebuilt in Rust.

Usage: netpoll <COMMAND> [OPTIONS]

Commands:
  echo    Run a TCP echo server (`netpoll echo --help` lists its options)
  help    Print this help, or a command's (`netpoll help echo`)

Options:
  -h, --help       Print this help
  -V, --version    Print the version

Environment:
  NETPOLL_LOG      What to log to stderr, in env_logger's syntax: a level (`debug`), or
                   per-module levels (`netpoll_drivers=trace,warn`) [default: warn]
  NETPOLL_SCHEDTRACE=MS
                   Print one scheduler line per MS milliseconds to stderr (workers, tasks,
                   run queues, steals, parks, pollDescs, timers), like Go's
                   GODEBUG=schedtrace [default: off]

Exit status: 0 on success (also after Ctrl-C or SIGTERM), 1 when the server fails,
2 on a usage error.
";

pub const ECHO_HELP: &str = "\
Run a TCP echo server: accept in a loop, one task per connection that reads into a buffer
and writes back what it read, closing on end of stream.

Usage: netpoll echo [OPTIONS]

Once listening, prints one line `listening IP:PORT` to stdout (the bound address, so
`--listen 127.0.0.1:0` tells the port picked); logs and summaries go to stderr.

Options:
  --listen ADDR     Address to listen on: IP:PORT, [IPv6]:PORT or HOST:PORT (resolved; the
                    first address the backend can listen on is used)
                    [default: 127.0.0.1:9009; with --backend tap or xdp, the --addr IP,
                    port 9009]
  --backend NAME    I/O engine [default: epoll]:
                      epoll  the kernel TCP stack, readiness from epoll
                      tap    smoltcp (userspace TCP/IP) over a TAP device; needs
                             CAP_NET_ADMIN. See README (TAP walkthrough)
                      xdp    smoltcp over an AF_XDP socket on queue 0 of --iface
                             (kernel bypass: the interface's frames skip the kernel's
                             IP stack); needs root. See hosted/scripts/xdp-echo.sh
  --backlog N       Listen backlog, 1 to 65535 [default: 128]; with the tap backend the
                    accept pool: N smoltcp sockets with both buffers allocated up front
                    (at most 1 GiB in all)
  --buf BYTES       Per-connection read buffer size, 1 to 16777216 [default: 128]
  --udp             Also echo UDP on the same address and port: each datagram is sent back
                    to its sender (a datagram longer than 64 KiB is dropped and logged)
  --quiet           Log errors only (not each connection's errors)
  --verbose         Log at debug level: each connection accepted and closed, each reset by
                    its peer (otherwise only counted in the summary at exit)
  -h, --help        Print this help

Epoll backend options:
  --workers N       Worker threads, 1 to 1024 [default: number of CPUs]

Xdp backend options:
  --iface NAME      Interface whose queue 0 the AF_XDP socket takes (required); an XDP
                    program redirects its frames to smoltcp while the server runs.
                    Zero-copy if the driver has it, else copy mode (veth); the mode is
                    printed at startup. On veth, turn the peer's offloads off
                    (ethtool -K PEER tx off gso off tso off)

Tap backend options:
  --tap NAME        TAP interface to create or attach to [default: nptap0]

Tap and xdp backend options (smoltcp):
  --addr CIDR       smoltcp's own address on the link [default: 10.7.0.2/24];
                    --listen must use this address or 0.0.0.0
  --gateway IP      smoltcp's default IPv4 route [default: none]
  --rx-buf BYTES    smoltcp's receive buffer per TCP socket, 1024 to 16777216
                    [default: 8192]
  --tx-buf BYTES    smoltcp's send buffer per TCP socket, 1024 to 16777216
                    [default: 4096]
  --mtu BYTES       The link's IP MTU, 576 to 65521, also set on the interface (TAP: up
                    to 65521; AF_XDP: at most 3826, on veth about 3500, and the veth
                    peer needs the same MTU) [default: 1500, the interface left as is]
  --pcap FILE       Write every frame smoltcp receives or sends to FILE (pcap format, for
                    Wireshark or tcpdump -r); flushed at least once a second and at exit

Options of one backend given with the other are an error. NETPOLL_LOG (see `netpoll --help`)
overrides --quiet and --verbose.

Ctrl-C (SIGINT) or SIGTERM stops the server cleanly: the listener is closed; with the tap
backend every open connection is closed (FIN; a reset for those still open after 300 ms) and
smoltcp is kept running until those frames left (at most about a second, since no kernel
closes smoltcp's sockets for us); the process exits with status 0.

Examples:
  netpoll echo --listen localhost:9009 &
  printf 'hello\\n' | nc -q1 127.0.0.1 9009
  netpoll echo --listen 127.0.0.1:0 | head -1      # listening 127.0.0.1:41235
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this text to stdout.
    Help(&'static str),
    Version,
    Echo(EchoOptions),
}

/// A usage error: the message, and which help the hint points to.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    /// The command that prints the relevant help.
    pub hint: &'static str,
    /// A help text to print in full instead of the hint (no command at all).
    pub usage: Option<&'static str>,
}

impl UsageError {
    fn top(message: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
            hint: "netpoll --help",
            usage: None,
        }
    }

    fn echo(message: impl Into<String>) -> Self {
        UsageError {
            message: message.into(),
            hint: "netpoll echo --help",
            usage: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Epoll,
    Tap,
    Xdp,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
            Backend::Tap => "tap",
            Backend::Xdp => "xdp",
        }
    }
}

/// The backends an engine option applies to, as an error message names them.
fn backends_of(option: &str) -> &'static str {
    match option {
        "--workers" => "epoll",
        "--tap" => "tap",
        "--iface" => "xdp",
        // The smoltcp options.
        _ => "tap or xdp",
    }
}

#[derive(Debug)]
pub struct EchoOptions {
    /// Where to listen, in the order to try: the addresses `--listen` resolved to.
    pub listen: Vec<SocketAddr>,
    pub buf: usize,
    pub workers: Option<usize>,
    /// Also serve UDP echo on the bound address (`--udp`).
    pub udp: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub backend: Backend,
    pub tap: String,
    /// The AF_XDP backend's interface (`--iface`).
    pub iface: Option<String>,
    pub addr: (Ipv4Addr, u8),
    pub gateway: Option<Ipv4Addr>,
    pub rx_buf: Option<usize>,
    pub tx_buf: Option<usize>,
    pub backlog: Option<u32>,
    pub pcap: Option<PathBuf>,
    /// `--mtu`: the link's IP MTU, set on the interface too.
    pub mtu: Option<usize>,
}

/// The port `--listen` defaults to.
const DEFAULT_PORT: u16 = 9009;

/// The most memory the tap backend's accept pool may preallocate (`--backlog` times both
/// buffers).
const MAX_POOL_BYTES: usize = 1 << 30;

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut parser = Parser::from_args(args);
    let first = parser.next().map_err(|e| UsageError::top(e.to_string()))?;
    let command = match first {
        None => {
            return Err(UsageError {
                usage: Some(HELP),
                ..UsageError::top("no command given")
            })
        }
        Some(Arg::Short('h') | Arg::Long("help")) => Command::Help(HELP),
        Some(Arg::Short('V') | Arg::Long("version")) => Command::Version,
        Some(Arg::Value(v)) if v == "echo" => {
            return Ok(parse_echo(&mut parser)?.map_or(Command::Help(ECHO_HELP), Command::Echo))
        }
        Some(Arg::Value(v)) if v == "help" => {
            return match parser.next().map_err(|e| UsageError::top(e.to_string()))? {
                None => Ok(Command::Help(HELP)),
                Some(Arg::Value(v)) if v == "echo" => Ok(Command::Help(ECHO_HELP)),
                Some(other) => Err(UsageError::top(format!(
                    "help: no help on {}",
                    lexopt_name(&other)
                ))),
            }
        }
        Some(Arg::Value(v)) => {
            return Err(UsageError::top(format!(
                "unknown command {:?} (known: echo, help)",
                v.to_string_lossy()
            )))
        }
        Some(other) => return Err(UsageError::top(other.unexpected().to_string())),
    };
    // `--help` and `--version` take nothing after them.
    match parser.next().map_err(|e| UsageError::top(e.to_string()))? {
        None => Ok(command),
        Some(extra) => Err(UsageError::top(extra.unexpected().to_string())),
    }
}

/// How an argument reads in an error message.
fn lexopt_name(arg: &Arg<'_>) -> String {
    match arg {
        Arg::Short(c) => format!("'-{c}'"),
        Arg::Long(l) => format!("'--{l}'"),
        Arg::Value(v) => format!("{:?}", v.to_string_lossy()),
    }
}

/// `v` as a number in `range`, or an error naming the option and the range.
fn parse_in<T>(
    name: &str,
    v: &str,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
        format!(
            "{name} {v:?}: expected {unit}from {} to {}",
            range.start(),
            range.end()
        )
    })
}

fn parse_cidr(v: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("--addr {v:?}: expected an IPv4 CIDR such as 10.7.0.2/24");
    let (ip, len) = v.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().ok().filter(|&l| l <= 32).ok_or_else(bad)?;
    Ok((ip, len))
}

/// The addresses `--listen v` names: a literal address as is, a host name resolved (the
/// system's order, which `/etc/gai.conf` sets).
fn resolve_listen(v: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = v.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    if v.rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!(
            "--listen {v:?}: expected IP:PORT, [IPv6]:PORT or HOST:PORT, such as 127.0.0.1:9009"
        ));
    }
    let addrs: Vec<SocketAddr> = v
        .to_socket_addrs()
        .map_err(|e| format!("--listen {v:?}: cannot resolve the host name ({e})"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("--listen {v:?}: the host name has no address"));
    }
    Ok(addrs)
}

/// The tap backend serves IPv4 only, on its own address or the unspecified one: those of the
/// resolved addresses first, the others after (their bind fails with a clear error).
fn order_for_tap(addrs: &mut [SocketAddr], own: Ipv4Addr) {
    addrs.sort_by_key(|a| match a.ip() {
        std::net::IpAddr::V4(ip) if ip == own || ip.is_unspecified() => 0,
        std::net::IpAddr::V4(_) => 1,
        std::net::IpAddr::V6(_) => 2,
    });
}

/// The next option's value as a string.
fn string_value(parser: &mut Parser) -> Result<String, UsageError> {
    parser
        .value()
        .and_then(|v| v.string())
        .map_err(|e| UsageError::echo(e.to_string()))
}

/// Parses `netpoll echo`'s options (after `echo`); `None` for `--help`.
fn parse_echo(parser: &mut Parser) -> Result<Option<EchoOptions>, UsageError> {
    let mut opts = EchoOptions {
        listen: Vec::new(),
        buf: 128,
        workers: None,
        udp: false,
        quiet: false,
        verbose: false,
        backend: Backend::Epoll,
        tap: "nptap0".into(),
        iface: None,
        addr: (Ipv4Addr::new(10, 7, 0, 2), 24),
        gateway: None,
        rx_buf: None,
        tx_buf: None,
        backlog: None,
        pcap: None,
        mtu: None,
    };
    let mut listen: Option<String> = None;
    // Options given that only one backend reads, to reject them with the other.
    let mut tap_only = Vec::new();
    let mut epoll_only = Vec::new();
    let mut xdp_only = Vec::new();
    let err = UsageError::echo;
    while let Some(arg) = parser.next().map_err(|e| err(e.to_string()))? {
        match arg {
            // Anything after `--help` is ignored, as most tools do.
            Arg::Short('h') | Arg::Long("help") => return Ok(None),
            Arg::Long("listen") => listen = Some(string_value(parser)?),
            Arg::Long("backend") => {
                opts.backend = match string_value(parser)?.as_str() {
                    "epoll" => Backend::Epoll,
                    "tap" => Backend::Tap,
                    "xdp" => Backend::Xdp,
                    other => {
                        return Err(err(format!(
                            "--backend {other:?}: unknown backend (known: epoll, tap, xdp)"
                        )))
                    }
                }
            }
            Arg::Long("tap") => {
                opts.tap = string_value(parser)?;
                tap_only.push("--tap");
            }
            Arg::Long("iface") => {
                let v = string_value(parser)?;
                if v.is_empty() {
                    return Err(err("--iface: expected an interface name".into()));
                }
                opts.iface = Some(v);
                xdp_only.push("--iface");
            }
            Arg::Long("addr") => {
                opts.addr = parse_cidr(&string_value(parser)?).map_err(err)?;
                tap_only.push("--addr");
            }
            Arg::Long("gateway") => {
                let v = string_value(parser)?;
                opts.gateway = Some(
                    v.parse()
                        .map_err(|_| err(format!("--gateway {v:?}: expected an IPv4 address")))?,
                );
                tap_only.push("--gateway");
            }
            Arg::Long(name @ ("rx-buf" | "tx-buf")) => {
                let option = if name == "rx-buf" {
                    "--rx-buf"
                } else {
                    "--tx-buf"
                };
                let v = string_value(parser)?;
                let n = parse_in(option, &v, 1024..=16 << 20, "a size in bytes ").map_err(err)?;
                if option == "--rx-buf" {
                    opts.rx_buf = Some(n);
                } else {
                    opts.tx_buf = Some(n);
                }
                tap_only.push(option);
            }
            Arg::Long("mtu") => {
                let v = string_value(parser)?;
                opts.mtu = Some(parse_in("--mtu", &v, 576..=65521, "an IP MTU ").map_err(err)?);
                tap_only.push("--mtu");
            }
            Arg::Long("pcap") => {
                let v = parser.value().map_err(|e| err(e.to_string()))?;
                if v.is_empty() {
                    return Err(err("--pcap: expected a file name".into()));
                }
                opts.pcap = Some(v.into());
                tap_only.push("--pcap");
            }
            Arg::Long("backlog") => {
                let v = string_value(parser)?;
                opts.backlog = Some(parse_in("--backlog", &v, 1..=65535, "").map_err(err)?);
            }
            Arg::Long("buf") => {
                let v = string_value(parser)?;
                opts.buf = parse_in("--buf", &v, 1..=16 << 20, "a size in bytes ").map_err(err)?;
            }
            Arg::Long("workers") => {
                let v = string_value(parser)?;
                opts.workers = Some(parse_in("--workers", &v, 1..=1024, "").map_err(err)?);
                epoll_only.push("--workers");
            }
            Arg::Long("udp") => opts.udp = true,
            Arg::Long("quiet") => opts.quiet = true,
            Arg::Long("verbose") => opts.verbose = true,
            Arg::Value(v) => {
                return Err(err(format!(
                    "unexpected argument {:?} (echo takes options only)",
                    v.to_string_lossy()
                )))
            }
            other => return Err(err(other.unexpected().to_string())),
        }
    }
    if opts.quiet && opts.verbose {
        return Err(err("--quiet and --verbose exclude each other".into()));
    }
    // Options of another backend, grouped by the backends they apply to, in order given.
    let mut wrong: Vec<(&str, Vec<&str>)> = Vec::new();
    for option in tap_only.into_iter().chain(epoll_only).chain(xdp_only) {
        let applies = backends_of(option);
        if applies.split(" or ").any(|b| b == opts.backend.name()) {
            continue;
        }
        match wrong.iter_mut().find(|(a, _)| *a == applies) {
            Some((_, options)) => options.push(option),
            None => wrong.push((applies, vec![option])),
        }
    }
    if !wrong.is_empty() {
        let clauses: Vec<String> = wrong
            .iter()
            .map(|(applies, options)| {
                let (s, verb) = if options.len() == 1 {
                    ("", "applies")
                } else {
                    ("s", "apply")
                };
                format!(
                    "option{s} {} {verb} only to --backend {applies}",
                    options.join(", ")
                )
            })
            .collect();
        return Err(err(clauses.join("; ")));
    }
    if opts.backend == Backend::Xdp && opts.iface.is_none() {
        return Err(err(
            "--backend xdp needs --iface NAME (the interface whose queue 0 it takes)".into(),
        ));
    }
    opts.listen = match (&listen, opts.backend) {
        (Some(v), _) => resolve_listen(v).map_err(err)?,
        (None, Backend::Epoll) => vec![SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT))],
        (None, Backend::Tap | Backend::Xdp) => {
            vec![SocketAddr::from((opts.addr.0, DEFAULT_PORT))]
        }
    };
    if opts.backend != Backend::Epoll {
        order_for_tap(&mut opts.listen, opts.addr.0);
        let backlog = opts.backlog.unwrap_or(DEFAULT_BACKLOG) as usize;
        let defaults = Config::default();
        let per_socket =
            opts.rx_buf.unwrap_or(defaults.rx_buffer) + opts.tx_buf.unwrap_or(defaults.tx_buffer);
        if backlog * per_socket > MAX_POOL_BYTES {
            return Err(err(format!(
                "--backlog {backlog} with {per_socket} bytes of buffers per socket would \
                 preallocate {} MiB for the accept pool (at most {} MiB): lower --backlog, \
                 --rx-buf or --tx-buf",
                (backlog * per_socket) >> 20,
                MAX_POOL_BYTES >> 20
            )));
        }
    }
    Ok(Some(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(list: &[&str]) -> Result<EchoOptions, UsageError> {
        let mut args = vec!["echo"];
        args.extend_from_slice(list);
        match parse(args)? {
            Command::Echo(opts) => Ok(opts),
            other => panic!("{list:?} parsed as {other:?}"),
        }
    }

    fn echo_err(list: &[&str]) -> String {
        echo(list).expect_err("rejected").message
    }

    #[test]
    fn engine_options_are_parsed_and_checked() {
        let o = echo(&[
            "--backend",
            "tap",
            "--rx-buf",
            "4096",
            "--tx-buf=8192",
            "--backlog",
            "512",
            "--pcap",
            "out.pcap",
        ])
        .unwrap();
        assert_eq!(
            (o.rx_buf, o.tx_buf, o.backlog),
            (Some(4096), Some(8192), Some(512))
        );
        assert_eq!(o.pcap, Some(PathBuf::from("out.pcap")));
        let o = echo(&["--backlog=1024", "--verbose"]).unwrap();
        assert_eq!(
            (o.backend, o.backlog, o.verbose),
            (Backend::Epoll, Some(1024), true)
        );

        for (list, want) in [
            (
                &["--backend", "tap", "--rx-buf", "100"][..],
                "--rx-buf \"100\": expected a size in bytes from 1024 to 16777216",
            ),
            (
                &["--backend", "tap", "--tx-buf", "lots"][..],
                "--tx-buf \"lots\": expected a size in bytes from 1024 to 16777216",
            ),
            (
                &["--backlog", "0"][..],
                "--backlog \"0\": expected from 1 to 65535",
            ),
            (
                &["--backlog=65536"][..],
                "--backlog \"65536\": expected from 1 to 65535",
            ),
            (
                &["--quiet", "--verbose"][..],
                "--quiet and --verbose exclude each other",
            ),
            (
                &["--backlog"][..],
                "missing argument for option '--backlog'",
            ),
            (&["--bogus"][..], "invalid option '--bogus'"),
            (
                &["--quiet=yes"][..],
                "unexpected argument for option '--quiet': \"yes\"",
            ),
            (
                &["stray"][..],
                "unexpected argument \"stray\" (echo takes options only)",
            ),
        ] {
            assert_eq!(echo_err(list), want, "{list:?}");
        }
        // 65535 pool sockets of 128 KiB each would be 8 GiB.
        let e = echo_err(&[
            "--backend",
            "tap",
            "--backlog",
            "65535",
            "--rx-buf",
            "65536",
            "--tx-buf",
            "65536",
        ]);
        assert!(
            e.starts_with("--backlog 65535 with 131072 bytes of buffers per socket"),
            "{e}"
        );
    }

    #[test]
    fn options_of_the_other_backend_are_rejected() {
        assert_eq!(
            echo_err(&["--tap", "nptap1"]),
            "option --tap applies only to --backend tap"
        );
        assert_eq!(
            echo_err(&[
                "--addr",
                "10.0.0.2/24",
                "--gateway",
                "10.0.0.1",
                "--rx-buf",
                "4096",
                "--tx-buf",
                "4096",
                "--pcap",
                "x.pcap",
                "--mtu",
                "9000",
                "--backend",
                "epoll",
            ]),
            "options --addr, --gateway, --rx-buf, --tx-buf, --pcap, --mtu apply only to --backend \
             tap or xdp"
        );
        assert_eq!(
            echo_err(&[
                "--backend",
                "xdp",
                "--iface",
                "eth1",
                "--tap",
                "t0",
                "--workers",
                "2"
            ]),
            "option --tap applies only to --backend tap; option --workers applies only to \
             --backend epoll"
        );
        assert_eq!(
            echo_err(&["--iface", "eth1"]),
            "option --iface applies only to --backend xdp"
        );
        assert_eq!(
            echo_err(&["--backend", "xdp"]),
            "--backend xdp needs --iface NAME (the interface whose queue 0 it takes)"
        );
        let o = echo(&[
            "--backend",
            "xdp",
            "--iface",
            "veth1",
            "--addr",
            "10.6.0.2/24",
        ])
        .unwrap();
        assert_eq!(
            (
                o.backend,
                o.iface.as_deref(),
                o.listen[0].to_string().as_str()
            ),
            (Backend::Xdp, Some("veth1"), "10.6.0.2:9009")
        );
        assert_eq!(
            echo_err(&["--backend", "tap", "--workers", "2"]),
            "option --workers applies only to --backend epoll"
        );
        // Order does not matter: the backend may come last.
        assert!(echo(&["--tap", "nptap1", "--backend", "tap"]).is_ok());
    }

    #[test]
    fn listen_defaults_to_the_backends_address_and_resolves_names() {
        let v4 = |a: [u8; 4], port| SocketAddr::from((a, port));
        assert_eq!(echo(&[]).unwrap().listen, [v4([127, 0, 0, 1], 9009)]);
        assert_eq!(
            echo(&["--backend", "tap", "--addr", "10.9.0.5/24"])
                .unwrap()
                .listen,
            [v4([10, 9, 0, 5], 9009)]
        );
        assert_eq!(
            echo(&["--listen=[::1]:7"]).unwrap().listen,
            ["[::1]:7".parse::<SocketAddr>().unwrap()]
        );
        let local = echo(&["--listen", "localhost:9010"]).unwrap().listen;
        assert!(
            !local.is_empty()
                && local
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 9010),
            "{local:?}"
        );
        // The tap backend tries its own address first.
        let mut addrs = vec![
            "[::]:9".parse().unwrap(),
            v4([10, 0, 0, 9], 9),
            v4([10, 7, 0, 2], 9),
        ];
        order_for_tap(&mut addrs, Ipv4Addr::new(10, 7, 0, 2));
        assert_eq!(addrs[0], v4([10, 7, 0, 2], 9));
        for bad in [
            "localhost",
            "9009",
            ":9009",
            "localhost:http",
            "10.0.0.1:99999",
        ] {
            let e = echo_err(&["--listen", bad]);
            assert!(e.starts_with(&format!("--listen {bad:?}: expected")), "{e}");
        }
    }

    #[test]
    fn top_level_commands() {
        assert!(matches!(parse(["--help"]), Ok(Command::Help(HELP))));
        assert!(matches!(parse(["-h"]), Ok(Command::Help(HELP))));
        assert!(matches!(parse(["help"]), Ok(Command::Help(HELP))));
        assert!(matches!(
            parse(["help", "echo"]),
            Ok(Command::Help(ECHO_HELP))
        ));
        assert!(matches!(parse(["-V"]), Ok(Command::Version)));
        assert!(matches!(parse(["--version"]), Ok(Command::Version)));
        let no_args: [&str; 0] = [];
        assert_eq!(parse(no_args).unwrap_err().usage, Some(HELP));
        assert_eq!(
            parse(["serve"]).unwrap_err().message,
            "unknown command \"serve\" (known: echo, help)"
        );
        assert_eq!(
            parse(["--version", "x"]).unwrap_err().message,
            "unexpected argument \"x\""
        );
    }
}
