#!/usr/bin/env python3
"""netpoll's userspace paths (AF_XDP, TAP) against smoltcp alone and the kernel's TCP.

    sudo python3 hosted/bench/tap.py           # builds release, runs everything, updates BENCHMARKS.md

Five paths (servers), each a fresh process per measurement, loaded by a kernel TCP client:

    netpoll-xdp      netpoll on smoltcp over an AF_XDP socket (copy mode) on one end of a veth
                     pair, transmit offloads off on both ends: `netpoll echo --backend xdp`,
                     and hosted/bench/tap_sink.rs --backend xdp for one-way bulk
    netpoll-tap      netpoll on smoltcp on a TAP device: `netpoll echo --backend tap`, and
                     tap_sink.rs (--backend tap) for one-way bulk
    raw              smoltcp alone on the TAP device: hosted/bench/raw_benchmark.rs, the pattern
                     of smoltcp's examples/benchmark.rs (one poll loop, no netpoll)
    kernel-veth-off  netpoll on the kernel's TCP over a veth pair with offloads off on both ends
                     (as the AF_XDP pair): `netpoll echo --backend epoll --workers 1`, and
                     tap_sink.rs --backend epoll (netpoll's Runtime, 1 worker) for one-way bulk
    kernel-veth-on   the same over a veth pair with the kernel's default offloads (TSO, GSO,
                     GRO, checksum offload); `netpoll-veth` is accepted as its old name

and, only when --servers names it, netpoll-tap-mtu9000: netpoll-tap with `--mtu 9000` (and
the TAP's kernel side at MTU 9000; needs `netpoll echo --mtu`). Every smoltcp server has
64 KiB receive and send buffers per socket (raw_benchmark's, fixed; netpoll's passed as
--rx-buf/--tx-buf, since `netpoll echo` defaults to smoltcp's smaller ones).

Workloads (interleaved: every workload and server once per round, --rounds rounds, the server
order rotating from round to round):

    bulk     1 connection, bulk both ways: 64 KiB messages, 4 in flight, 64 KiB server buffer
             (netpoll-bench, every byte verified); Gbps echoed (one direction)
    rx       1 connection, client -> server sink; Gbps confirmed by the sink
    tx       1 connection, server source -> client; Gbps received and verified
    echo1    128-byte echo, 1 connection, ping-pong; msgs/s, p50/p99 latency
    echo16   128-byte echo, 16 connections; msgs/s, p50/p99 latency
    echo16-pool1  echo16 with a listen backlog of 1 instead of 128 (raw, netpoll-tap; for
             netpoll-tap the echo mode of tap_sink.rs): a diagnostic of what the accept pool's
             idle sockets cost

Per cell: the rate, server CPU, and for bulk/rx/tx the whole machine's busy cores (user,
nice, system, irq, softirq, steal from /proc/stat over the client's run, in cores) and busy
cores per Gbps; plus the ratios netpoll-xdp/netpoll-tap (bulk), netpoll-xdp/kernel-veth-off
(rx) and echo1 p50 of netpoll-xdp against both kernel paths, each with its target.

Topology, all inside two network namespaces this script creates and always deletes:

    namespace C (client, smoltcp servers)              namespace S (kernel servers)
    kernel TCP 10.7.0.1 --TAP nptap0-- smoltcp 10.7.0.2 (the TAP server process, in C)
    kernel TCP 10.6.0.1 on npxk ==veth== npxs: XDP -> AF_XDP -> smoltcp 10.6.0.2 (server in C)
    kernel TCP 10.8.0.1 --veth npvc/npvs, default offloads------------- kernel TCP 10.8.0.2
    kernel TCP 10.9.0.1 --veth npoc/npos, offloads off----------------- kernel TCP 10.9.0.2

The kernel paths need the second namespace: two addresses of one namespace talk over the
loopback device, never over the veth between them. The AF_XDP end npxs has no address (every
frame arriving there goes to the AF_XDP socket). As in hosted/scripts/xdp-echo.sh, offloads
are off on npxk and npxs (`ethtool -K DEV tx off rx off gso off tso off gro off`: smoltcp
rejects frames whose checksum was left to "hardware", and 64 KiB GSO frames), then the
receive ones (rx, gro) back on at the kernel end npxk. All are off on npoc and npos. The TAP
servers create the TAP device when they start (it goes away with them), so its kernel side
is configured for each run. Every server reports its address on stdout (`listening <ip:port>`)
once it listens.

Reports medians with the per-round spread [min-max], the ratios, server CPU, busy cores, and
writes (or replaces) the "## Userspace paths: ..." section of BENCHMARKS.md (--out; the
section of older runs, "## TAP: ...", is renamed in place, not duplicated), keeping the rest
of the file and the hand-written notes below the notes marker. Raw JSON lines go to
target/bench/tap-results.jsonl. The run time is estimated at the start.

Options: --rounds N (3), --duration SECS (3), --warmup SECS (0.5, echo workloads),
--workloads bulk,echo1, --attempts N (4) and --max-others PCT (20): a run during which the
rest of the machine used more than PCT% of a core is repeated, and left out of the medians if
it stays disturbed, --no-build, --pin auto|split|same|none (auto: server and client on a
core each, except echo1 where they share one: see pin_of), --profile (perf record of
netpoll-xdp, netpoll-tap and raw in extra runs, not in the tables), --note TEXT, --out PATH,
--servers netpoll-xdp,netpoll-tap,raw,kernel-veth-off,kernel-veth-on (which servers to run;
default all five), --ns-prefix NAME (the namespaces' names start with it; default
$TAPBENCH_NS_PREFIX or nptapbench, so that two runs on one machine are told apart by name).

Socket buffer comparison: --buffers RX/TX[,RX/TX...] (bytes, e.g. 65536/65536,8192/4096) runs
netpoll-tap once per pair, as servers named netpoll-tap@64K/64K..., passing --rx-buf/--tx-buf
to `netpoll echo` (bulk, echo) and to tap_sink (rx, tx, the diagnostic), interleaved like
any other servers. It writes (or replaces) the section "## Userspace engine: socket buffer
sizes vs bulk throughput" instead, with the ratios to the first pair; raw JSON lines to
target/bench/tap-buffers-results.jsonl.

    sudo python3 hosted/bench/tap.py --servers netpoll-tap --workloads bulk,rx,tx \
        --buffers 65536/65536,8192/4096,16384/16384,32768/8192

Needs root (namespaces, TAP, AF_XDP), iproute2, ethtool (for netpoll-xdp and
kernel-veth-off), python3. Only the standard library (and benchlib.py); every child has a
timeout; only processes this script started are signalled; only its own namespaces deleted.
Exit status 1 if any measurement failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchlib as bl
from benchlib import REPO, cell, die, fmt, log, med, sh

SERVERS = {
    "netpoll-xdp": "netpoll on smoltcp (AF_XDP copy mode, veth, tx offloads off)",
    "netpoll-tap": "netpoll on smoltcp (TAP)",
    "raw": "smoltcp alone (raw loop, TAP)",
    "kernel-veth-off": "netpoll on kernel TCP (veth, offloads off)",
    "kernel-veth-on": "netpoll on kernel TCP (veth, default offloads)",
}
ALL = list(SERVERS)
# Servers run only when --servers names them: netpoll-tap with a 9000-byte MTU on smoltcp and
# on the TAP's kernel side (needs `netpoll echo --mtu`).
OPTIONAL_SERVERS = {"netpoll-tap-mtu9000": "netpoll on smoltcp (TAP, MTU 9000)"}
# Old names still accepted by --servers.
ALIASES = {"netpoll-veth": "kernel-veth-on"}
# Which device each server runs on (what the topology must provide for it).
TAP_SERVERS = {"netpoll-tap", "raw"}
PROFILED = ["netpoll-xdp", "netpoll-tap", "raw"]
KERNEL_SERVERS = {"kernel-veth-off", "kernel-veth-on"}
ONE_WAY = ["rx", "tx"]
WORKLOADS = {
    "bulk": dict(title="bulk echo, 1 conn, 64 KiB messages ×4 in flight, 64 KiB server buffer",
                 kind="echo", conns=1, size=65536, pipeline=4, buf=65536, unit="Gbps",
                 key="gbps", servers=ALL),
    "rx": dict(title="bulk receive: client → server sink, 1 conn", kind="oneway", mode="send",
               server_mode="sink", unit="Gbps", key="gbps", servers=ALL),
    "tx": dict(title="bulk transmit: server source → client, 1 conn", kind="oneway",
               mode="recv", server_mode="source", unit="Gbps", key="gbps", servers=ALL),
    "echo1": dict(title="128 B echo, 1 conn (ping-pong)", kind="echo", conns=1, size=128,
                  pipeline=1, buf=128, unit="msgs/s", key="msgs_per_s", servers=ALL,
                  pin="same"),
    "echo16": dict(title="128 B echo, 16 conns", kind="echo", conns=16, size=128, pipeline=1,
                   buf=128, unit="msgs/s", key="msgs_per_s", servers=ALL),
    # Diagnostic: echo16 with one listening socket instead of 128, for both smoltcp servers
    # on TAP, to show what the accept pool's sockets cost each of them.
    "echo16-pool1": dict(title="128 B echo, 16 conns, accept pool of 1 socket (diagnostic)",
                         kind="echo", conns=16, size=128, pipeline=1, buf=128, backlog=1,
                         unit="msgs/s", key="msgs_per_s", servers=["raw", "netpoll-tap"],
                         optional_servers=False),
}

TAP, SMOL, TAP_KERNEL = "nptap0", "10.7.0.2", "10.7.0.1"
XDP_KERNEL_END, XDP_END, XDP_KERNEL_ADDR, XDP_SMOL = "npxk", "npxs", "10.6.0.1", "10.6.0.2"
# The two kernel paths: (client end, server end, client address, server address).
VETHS = {
    "kernel-veth-on": ("npvc", "npvs", "10.8.0.1", "10.8.0.2"),
    "kernel-veth-off": ("npoc", "npos", "10.9.0.1", "10.9.0.2"),
}
# What `ethtool -K` turns off on both ends of the AF_XDP pair and of kernel-veth-off.
OFFLOADS_OFF = ["tx", "off", "rx", "off", "gso", "off", "tso", "off", "gro", "off"]
PORT = 9009
# smoltcp's receive and send buffer per TCP socket on every smoltcp server: `netpoll echo` and
# tap_sink get it as --rx-buf/--tx-buf, raw_benchmark as --socket-buf. smoltcp cannot grow a
# window as the kernel's autotuning does (up to tcp_rmem's 6 MiB), and at 64 KiB one
# connection's throughput is bounded by window / round trip rather than by the path.
SMOL_SOCKET_BUF = 262144
# A server left behind by a crash of this script exits on its own after this long.
SERVER_LIFETIME_S = 120
# What a measurement costs beyond its load (server start and stop, TAP setup), for the
# estimate printed at the start.
OVERHEAD_S = 0.3

SECTION = "## Userspace paths: AF_XDP, TAP, smoltcp alone, kernel (offloads off/on)"
# The heading of this section before the AF_XDP and offloads-off paths were added: a report
# that has it gets it renamed, so the section is replaced rather than duplicated.
OLD_SECTIONS = ["## TAP: netpoll on smoltcp vs smoltcp alone and the kernel"]
BUFFERS_SECTION = "## Userspace engine: socket buffer sizes vs bulk throughput"
TAP_NOTES_MARKER = ("<!-- hand-written notes below this line, up to the next level-2 heading, "
                    "are kept by hosted/bench/tap.py -->")


def address_of(server: str) -> str:
    """The address the server listens on (the client connects to it)."""
    base = server.partition("@")[0]
    if base == "netpoll-xdp":
        return XDP_SMOL
    if base in VETHS:
        return VETHS[base][3]
    return SMOL


# ------------------------------------------------------------------------------------------
# Build and namespaces


def build(no_build: bool) -> dict[str, Path]:
    b = bl.build(["netpoll", "netpoll-bench"], ["raw_benchmark", "tap_sink", "bulk_client"],
                 no_build=no_build)
    return dict(netpoll=b["netpoll"], bench=b["netpoll-bench"], raw=b["raw_benchmark"],
                sink=b["tap_sink"], bulk=b["bulk_client"])


class Netns:
    """The two namespaces of the run and the veth pairs between and within them; delete()
    removes both namespaces (and so every link in them)."""

    def __init__(self, prefix: str = "nptapbench"):
        tag = f"{os.getpid()}-{int(time.time()) % 100000}"
        self.c, self.s = f"{prefix}-c-{tag}", f"{prefix}-s-{tag}"
        self.made: list[str] = []

    def create(self, servers: set[str]) -> None:
        """The namespaces, and the links `servers` need."""
        for ns in (self.c, self.s):
            bl.make_netns(ns)
            self.made.append(ns)
        for name, (end_c, end_s, addr_c, addr_s) in VETHS.items():
            if name not in servers:
                continue
            sh(["ip", "-n", self.c, "link", "add", end_c, "type", "veth", "peer", "name",
                end_s, "netns", self.s])
            if name == "kernel-veth-off":
                self.offloads_off(self.c, end_c)
                self.offloads_off(self.s, end_s)
            sh(["ip", "-n", self.c, "addr", "add", f"{addr_c}/24", "dev", end_c])
            sh(["ip", "-n", self.s, "addr", "add", f"{addr_s}/24", "dev", end_s])
            sh(["ip", "-n", self.c, "link", "set", end_c, "up"])
            sh(["ip", "-n", self.s, "link", "set", end_s, "up"])
        if "netpoll-xdp" in servers:
            # Both ends in C: the kernel's end gets the address, the AF_XDP end none.
            sh(["ip", "-n", self.c, "link", "add", XDP_KERNEL_END, "type", "veth", "peer",
                "name", XDP_END])
            for end in (XDP_KERNEL_END, XDP_END):
                sh(["ip", "netns", "exec", self.c, "sysctl", "-qw",
                    f"net.ipv6.conf.{end}.disable_ipv6=1"], check=False)
                self.offloads_off(self.c, end)
            sh(["ip", "-n", self.c, "addr", "add", f"{XDP_KERNEL_ADDR}/24", "dev",
                XDP_KERNEL_END])
            sh(["ip", "-n", self.c, "link", "set", XDP_KERNEL_END, "up"])
            sh(["ip", "-n", self.c, "link", "set", XDP_END, "up"])

    @staticmethod
    def offloads_off(ns: str, dev: str) -> None:
        """Turns the offloads off and checks that they are (ethtool fails when some feature
        cannot change, even if the others did)."""
        sh(["ip", "netns", "exec", ns, "ethtool", "-K", dev, *OFFLOADS_OFF], check=False)
        still = [f for f, on in offloads(ns, dev).items() if on]
        if still:
            raise RuntimeError(f"{dev}: offloads still on after ethtool -K: {', '.join(still)}")

    def steer(self, pin: str) -> None:
        """Receive packet steering: each side's kernel receive work on that side's core.

        On a veth pair or a TAP device the receiver's whole input path (the kernel client's TCP
        for what a server sends) otherwise runs inside the sender's system call, on the
        sender's core; two machines would each do their own. With `pin` split the client's
        kernel interfaces steer to the client's core and the kernel servers' to the server's;
        with `same` both to the shared core; with `none` steering is off."""
        client = {"split": "1", "same": "1"}.get(pin, "0")
        server = {"split": "2", "same": "1"}.get(pin, "0")
        ends = [(self.c, XDP_KERNEL_END, client), (self.c, TAP, client)]
        for end_c, end_s, _, _ in VETHS.values():
            ends += [(self.c, end_c, client), (self.s, end_s, server)]
        for ns, dev, mask in ends:
            path = f"/sys/class/net/{dev}/queues/rx-0/rps_cpus"
            sh(["ip", "netns", "exec", ns, "sh", "-c", f"[ ! -e {path} ] || echo {mask} > {path}"],
               check=False)

    def configure_tap(self, mtu: int | None = None) -> None:
        """Gives the kernel side of the (freshly created) TAP device its address."""
        bl.wait_for_link(self.c, TAP, 5)
        sh(["ip", "-n", self.c, "addr", "add", f"{TAP_KERNEL}/24", "dev", TAP])
        if mtu:
            sh(["ip", "-n", self.c, "link", "set", TAP, "mtu", str(mtu)])
        sh(["ip", "-n", self.c, "link", "set", TAP, "up"])

    def delete(self) -> None:
        for ns in reversed(self.made):
            bl.delete_netns(ns)
        self.made.clear()


# The offloads of interest and their names in `ethtool -k`.
OFFLOAD_FEATURES = {
    "tx-checksumming": "tx csum",
    "rx-checksumming": "rx csum",
    "tcp-segmentation-offload": "TSO",
    "generic-segmentation-offload": "GSO",
    "generic-receive-offload": "GRO",
}


def offloads(ns: str, dev: str) -> dict[str, bool]:
    """Which of OFFLOAD_FEATURES are on for `dev` (`ethtool -k`), by short name."""
    r = sh(["ip", "netns", "exec", ns, "ethtool", "-k", dev], check=False)
    state = {}
    for line in r.stdout.splitlines():
        name, _, value = line.strip().partition(":")
        if name in OFFLOAD_FEATURES:
            state[OFFLOAD_FEATURES[name]] = value.strip().startswith("on")
    return state


def offloads_text(ns: str, dev: str) -> str:
    state = offloads(ns, dev)
    if not state:
        return "offloads unknown"
    on = [k for k, v in state.items() if v]
    return "offloads " + (("on: " + ", ".join(on)) if on else "all off") + \
        (f" (off: {', '.join(k for k, v in state.items() if not v)})" if on and
         len(on) < len(state) else "")


# ------------------------------------------------------------------------------------------
# Servers


# ------------------------------------------------------------------------------------------
# Servers and clients


PIN_TEXT = {
    "split": "server on CPU 1, client on CPU 0",
    "same": "server and client on CPU 0",
    "none": "not pinned",
}


def pin_of(args, wl: dict) -> str:
    """--pin auto: split (a core each) for every workload but echo1, which shares one core.

    Ping-pong on two cores of a VM measures the wake-up latency of an idle vCPU (about 70 us
    per round trip here, for every server alike), not the servers; on one core it measures what
    a message costs."""
    return wl.get("pin", "split") if args.pin == "auto" else args.pin


def pin_cmd(pin: str, role: str) -> list[str]:
    """split: server on CPU 1, client on CPU 0; same: both on CPU 0; none: the scheduler's choice."""
    if pin == "none":
        return []
    return ["taskset", "-c", "1" if pin == "split" and role == "server" else "0"]


def size_text(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def buffers_server(rx: int, tx: int) -> str:
    """The name of netpoll-tap with these socket buffers (--buffers)."""
    return f"netpoll-tap@{size_text(rx)}/{size_text(tx)}"


def parse_buffers(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        m = re.fullmatch(r"(\d+)/(\d+)", item)
        if not m or not all(1024 <= int(v) <= 16 << 20 for v in m.groups()):
            die(f"--buffers {item!r}: RX/TX in bytes, each 1024..16777216")
        pairs.append((int(m[1]), int(m[2])))
    return pairs


def server_cmd(server: str, wl: dict, bins: dict, ns: Netns, pin: str) -> list[str]:
    # netpoll-tap@RX/TX (--buffers): netpoll-tap with these smoltcp socket buffers.
    server, _, bufs = server.partition("@")
    # Every smoltcp server with the buffers of raw_benchmark (tap_sink's default; `netpoll
    # echo` defaults to smoltcp's smaller ones), unless --buffers names others.
    rx, tx = BUFFER_SIZES[bufs] if bufs else (SMOL_SOCKET_BUF, SMOL_SOCKET_BUF)
    smol = ["--rx-buf", str(rx), "--tx-buf", str(tx)]
    if server == "netpoll-tap-mtu9000":
        smol += ["--mtu", "9000"]
    one_way = wl["kind"] == "oneway" or "backlog" in wl
    mode = wl.get("server_mode", "echo")
    sink_opts = ["--port", str(PORT), "--mode", mode, "--buf", str(wl.get("buf", 65536)),
                 "--backlog", str(wl.get("backlog", 128)), "--exit-after",
                 str(SERVER_LIFETIME_S)]
    if server in VETHS:
        addr = VETHS[server][3]
        pre = ["ip", "netns", "exec", ns.s]
        if one_way:
            cmd = [*pre, str(bins["sink"]), "--backend", "epoll", "--addr", f"{addr}/24",
                   *sink_opts]
        else:
            cmd = [*pre, str(bins["netpoll"]), "echo", "--listen", f"{addr}:{PORT}", "--buf",
                   str(wl["buf"]), "--quiet",
                   # One worker thread, like the smoltcp servers (the default is one per CPU).
                   "--workers", "1"]
    elif server == "netpoll-xdp":
        dev = ["--iface", XDP_END, "--addr", f"{XDP_SMOL}/24"]
        pre = ["ip", "netns", "exec", ns.c]
        if one_way:
            cmd = [*pre, str(bins["sink"]), "--backend", "xdp", *dev, *smol, *sink_opts]
        else:
            cmd = [*pre, str(bins["netpoll"]), "echo", "--backend", "xdp", *dev, *smol,
                   "--listen", f"{XDP_SMOL}:{PORT}", "--buf", str(wl["buf"]), "--quiet"]
    else:
        tap = ["--tap", TAP, "--addr", f"{SMOL}/24"]
        pre = ["ip", "netns", "exec", ns.c]
        if server == "raw":
            cmd = [*pre, str(bins["raw"]), *tap, "--socket-buf", str(rx), *sink_opts]
        elif one_way:
            cmd = [*pre, str(bins["sink"]), "--backend", "tap", *tap, *smol, *sink_opts]
        else:
            cmd = [*pre, str(bins["netpoll"]), "echo", "--backend", "tap", *tap, *smol,
                   "--listen", f"{SMOL}:{PORT}", "--buf", str(wl["buf"]), "--quiet"]
    return pin_cmd(pin, "server") + cmd


# "RXK/TXK" (as in the server names) -> (rx, tx) bytes, filled from --buffers.
BUFFER_SIZES: dict[str, tuple[int, int]] = {}


def client_cmd(server: str, wl: dict, bins: dict, ns: Netns, args, pid: int, label: str,
               pin: str) -> list[str]:
    addr = f"{address_of(server)}:{PORT}"
    pre = ["ip", "netns", "exec", ns.c]
    if wl["kind"] == "echo":
        cmd = [*pre, str(bins["bench"]), "--allow-netns", "--addr", addr, "--server-pid",
               str(pid), "--conns", str(wl["conns"]), "--size", str(wl["size"]), "--pipeline",
               str(wl["pipeline"]), "--duration", str(args.duration + args.warmup), "--warmup",
               str(args.warmup), "--label", label]
    else:
        cmd = [*pre, str(bins["bulk"]), "--allow-netns", "--addr", addr, "--mode", wl["mode"],
               "--duration", str(args.duration), "--label", label]
    return pin_cmd(pin, "client") + cmd


def estimate_s(args) -> float:
    """The run's length if no run is repeated."""
    total = 0.0
    for wname in args.workloads:
        wl = WORKLOADS[wname]
        each = args.duration + OVERHEAD_S + (args.warmup if wl["kind"] == "echo" else 0)
        total += each * len(wl["servers"]) * args.rounds
    return total


SYSCALL_NAMES = ["read", "write", "recvfrom", "sendto", "poll", "epoll_wait"]


# ------------------------------------------------------------------------------------------
# Report


def usable(r: dict) -> bool:
    """A run that succeeded and that the rest of the machine did not disturb much."""
    return bool(r.get("ok")) and r.get("clean", True)


def values(results, w: str, server: str, key: str) -> dict[int, float]:
    """The usable values of `key` for (workload, server), by round."""
    return {r["round"]: r.get(key) for r in results if r["workload"] == w
            and r["server"] == server and usable(r) and r.get(key)}


def no_value(results, w: str, server: str) -> str:
    """What a table cell without a usable run says: every run failed, or was disturbed."""
    ok = [r for r in results if r["workload"] == w and r["server"] == server and r.get("ok")]
    return "no undisturbed run" if ok else "failed (see below)"


def ratio(results, w: str, a: str, b: str, key: str | None = None):
    """(median of the per-round ratios a/b, their min, max), or the ratio of the medians
    (min and max None) when no round has both; None without values."""
    key = key or WORKLOADS[w]["key"]
    va, vb = values(results, w, a, key), values(results, w, b, key)
    ma, mb = med(list(va.values())), med(list(vb.values()))
    if not ma or not mb:
        return None
    per = [va[k] / vb[k] for k in va if k in vb]
    if not per:
        return ma / mb, None, None
    return statistics.median(per), min(per), max(per)


def ratio_cell(results, w: str, a: str, b: str, key: str | None = None) -> str:
    """The median of the per-round ratios (same round, adjacent runs: slow drifts of the
    machine cancel out) with their range; the ratio of the medians when no round has both."""
    r = ratio(results, w, a, b, key)
    if r is None:
        return "—"
    mid, lo, hi = r
    if lo is None:
        return f"**{mid:.2f}×** (ratio of medians)"
    spread = f" [{lo:.2f}–{hi:.2f}]" if hi != lo else ""
    return f"**{mid:.2f}×**{spread}"


# The ratios the run is judged by: (label, workload, a, b, key, target, floor, higher is
# better). Target and floor apply to a/b.
TARGETS = [
    ("bulk echo: netpoll-xdp / netpoll-tap", "bulk", "netpoll-xdp", "netpoll-tap", None, 2.0,
     1.5, True),
    ("rx: netpoll-xdp / kernel-veth-off", "rx", "netpoll-xdp", "kernel-veth-off", None, 1.0,
     None, True),
    ("echo1 p50 latency: netpoll-xdp / kernel-veth-on", "echo1", "netpoll-xdp",
     "kernel-veth-on", "p50_us", 1.0, None, False),
    ("echo1 p50 latency: netpoll-xdp / kernel-veth-off", "echo1", "netpoll-xdp",
     "kernel-veth-off", "p50_us", 1.0, None, False),
]


def verdict(value: float, target: float, floor: float | None, higher: bool) -> str:
    meets = (lambda x: value >= x) if higher else (lambda x: value <= x)
    if meets(target):
        return "meets the target"
    if floor is not None:
        return "above the floor, below the target" if meets(floor) else "**below the floor**"
    return "**misses the target**"


def target_lines(results, workloads: list[str], chosen: list[str]) -> list[str]:
    """One line per judged ratio whose workload and servers are in the run."""
    lines = []
    for label, w, a, b, key, target, floor, higher in TARGETS:
        if w not in workloads or a not in chosen or b not in chosen:
            continue
        goal = f"{'≥' if higher else '≤'} {target:g}×" + (f", floor {floor:g}×" if floor else "")
        r = ratio(results, w, a, b, key)
        if r is None:
            lines.append(f"- {label}: no value (target {goal})")
            continue
        mid, lo, hi = r
        spread = f" [{lo:.2f}–{hi:.2f}]" if lo is not None and hi != lo else ""
        lines.append(f"- {label}: **{mid:.2f}×**{spread} (target {goal}): "
                     f"{verdict(mid, target, floor, higher)}")
    return lines


def kernel_settings(ns: Netns, chosen: list[str]) -> str:
    def get(key):
        r = sh(["ip", "netns", "exec", ns.c, "sysctl", "-n", key], check=False)
        return r.stdout.strip() or "?"
    parts = [f"kernel TCP congestion control {get('net.ipv4.tcp_congestion_control')}"]
    for name, (end_c, end_s, _, _) in VETHS.items():
        if name in chosen:
            parts.append(f"{name}: {end_c} {offloads_text(ns.c, end_c)}, {end_s} "
                         f"{offloads_text(ns.s, end_s)}")
    if "netpoll-xdp" in chosen:
        parts.append(f"netpoll-xdp: {XDP_KERNEL_END} {offloads_text(ns.c, XDP_KERNEL_END)}, "
                     f"{XDP_END} {offloads_text(ns.c, XDP_END)}")
    return "; ".join(parts)


def write_section(path: Path, text: str, heading: str = SECTION) -> None:
    """This script's section (paths or buffers) of the report, notes kept. A report that
    still has the section under its old heading gets the heading renamed first, so the
    section (and its notes) is replaced, not duplicated."""
    if heading == SECTION and path.exists():
        old = path.read_text()
        if SECTION + "\n" not in old:
            for old_heading in OLD_SECTIONS:
                if old_heading + "\n" in old:
                    path.write_text(old.replace(old_heading + "\n", SECTION + "\n", 1))
                    break
    bl.write_section(path, text, heading, TAP_NOTES_MARKER)


def report_buffers(args, mach, results, started, load0, load1, elapsed, failures,
                   repeats) -> str:
    """The socket buffer comparison (--buffers): netpoll-tap per buffer pair, ratios to the
    first pair."""
    out: list[str] = []
    w = out.append
    base = args.buffer_servers[0]
    cmd = "sudo python3 hosted/bench/tap.py" + (" " + " ".join(args.argv) if args.argv else "")
    w(BUFFERS_SECTION + "\n")
    w("Generated by `hosted/bench/tap.py --buffers`: netpoll on smoltcp over TAP "
      "(`netpoll echo --backend tap` for bulk echo, `hosted/bench/tap_sink.rs` for rx and "
      "tx) with smoltcp socket buffers of each size (`--rx-buf`/`--tx-buf`, per connection), "
      "interleaved round by round (the order rotating), a fresh server process per "
      "measurement; otherwise the setup of the TAP section.\n")
    if args.note:
        w(f"> **Note:** {args.note}\n")
    w(f"```sh\n{cmd}\n```\n")
    w(f"- {mach['nproc']} CPUs: {mach['cpu']}; Linux {mach['kernel']}; {mach['rustc']}; "
      f"commit {mach['commit']}")
    w(f"- started {started} UTC; took {elapsed:.0f} s; load average at start {load0}, at end "
      f"{load1}; {args.rounds} rounds × {args.duration:g} s; "
      + "; ".join(f"{w} {PIN_TEXT[pin_of(args, WORKLOADS[w])]}" for w in args.workloads))
    w(f"- runs during which the rest of the machine used more than {args.max_others:g}% of a "
      f"core repeated (up to {args.attempts} attempts): {repeats} repeats; runs left out: "
      f"{sum(1 for r in results if r.get('ok') and not r.get('clean', True))}\n")
    w(f"| workload | socket buffers (rx + tx) | rate, median [min–max] | server CPU | "
      f"vs {base.partition('@')[2]}, median of per-round ratios [range] |")
    w("|---|---|---|---|---|")
    for wname in args.workloads:
        wl = WORKLOADS[wname]
        for i, s in enumerate(wl["servers"]):
            rx, tx = BUFFER_SIZES[s.partition("@")[2]]
            title = f"{wname}: {wl['title']}" if i == 0 else ""
            bufs = f"{size_text(rx)} + {size_text(tx)}"
            rs = [r for r in results if r["workload"] == wname and r["server"] == s
                  and usable(r)]
            if not rs:
                w(f"| {title} | {bufs} | no undisturbed run | | |")
                continue
            rate = cell([r.get(wl["key"]) for r in rs], 2 if wl["unit"] == "Gbps" else 0)
            cpu = cell([r.get("server_cpu_pct") for r in rs], 0)
            ratio = "1" if s == base else ratio_cell(results, wname, s, base)
            w(f"| {title} | {bufs} | {rate} {wl['unit']} | {cpu}% | {ratio} |")
    w("")
    if failures:
        w(f"**{len(failures)} measurement(s) failed:**\n")
        for f in failures[:10]:
            w(f"- {f}")
        w("")
    w("<details><summary>Every run</summary>\n")
    w("| round | workload | server | ok | rate | server CPU % | others % | attempt | error |")
    w("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        wl = WORKLOADS[r["workload"]]
        w(f"| {r['round']} | {r['workload']} | {r['server']} | {'yes' if r.get('ok') else 'no'} "
          f"| {fmt(r.get(wl['key']), 2)} {wl['unit']} | {fmt(r.get('server_cpu_pct'), 0)} | "
          f"{fmt(r.get('others_pct'), 0)}{'' if r.get('clean', True) else ' (left out)'} | "
          f"{r.get('attempt', 1)} | {(r.get('error') or '')[:80]} |")
    w("\n</details>\n")
    return "\n".join(out)


def report(args, mach, results, profiles, syscalls, started, load0, load1, elapsed, kset,
           failures, repeats) -> str:
    out: list[str] = []
    w = out.append
    cmd = "sudo python3 hosted/bench/tap.py" + (" " + " ".join(args.argv) if args.argv else "")
    xdp_modes = sorted({r["xdp_mode"] for r in results if r.get("xdp_mode")})
    w(SECTION + "\n")
    w("Generated by `hosted/bench/tap.py`: bulk throughput and 128-byte echo rate and latency "
      "of netpoll's userspace paths, smoltcp over AF_XDP (copy mode on a veth pair) and over "
      "a TAP device, against smoltcp alone on the TAP device (the pattern of smoltcp's "
      "`examples/benchmark.rs`: `hosted/bench/raw_benchmark.rs`) and against netpoll on the "
      "kernel's TCP over veth pairs with offloads off and on, in one run, interleaved round "
      "by round, a fresh server process per measurement.\n")
    if args.note:
        w(f"> **Note:** {args.note}\n")
    w("### Command\n")
    w(f"```sh\n{cmd}\n```\n")
    w("### Setup\n")
    w(f"- {mach['nproc']} CPUs: {mach['cpu']}; {mach['mem']} RAM; Linux {mach['kernel']}")
    w(f"- {mach['rustc']}; commit {mach['commit']}")
    w(f"- started {started} UTC; took {elapsed:.0f} s; load average at start {load0}, at end "
      f"{load1}")
    w(f"- {args.rounds} rounds × {args.duration:g} s per measurement"
      f"{f' (+{args.warmup:g} s warm-up for echo)' if args.warmup else ''}; "
      + ("CPU pinning (`taskset`) per workload: " + "; ".join(
          f"{w} {PIN_TEXT[pin_of(args, WORKLOADS[w])]}" for w in args.workloads)))
    w("- namespace C: the kernel client; TAP `nptap0` (kernel 10.7.0.1 ↔ smoltcp 10.7.0.2, "
      "MTU 1500, no offloads on the TAP fd); veth `npxk` 10.6.0.1 ↔ `npxs` (no address, an "
      "XDP program and an AF_XDP socket on queue 0, smoltcp 10.6.0.2; both ends MTU 1500, "
      "offloads off as on kernel-veth-off); the client ends of the kernel paths' veth pairs, "
      "10.8.0.1 (default offloads) and 10.9.0.1 (offloads off). Namespace S: their server "
      f"ends 10.8.0.2 and 10.9.0.2 and the kernel servers. {kset}. Receive packet steering "
      "(`rps_cpus`) puts each side's kernel receive work on that side's core (on veth and "
      "TAP the receiver's input path would otherwise run inside the sender's system call)"
      + (f"; AF_XDP mode as the servers reported it: {', '.join(xdp_modes)}" if xdp_modes
         else ""))
    w(f"- smoltcp servers (netpoll-xdp, netpoll-tap, raw) alike: {size_text(SMOL_SOCKET_BUF)}"
      " socket buffers (receive and send: `--rx-buf`/`--tx-buf` for netpoll, `--socket-buf` "
      "for raw_benchmark; the kernel autotunes its own), Nagle off, 10 ms delayed ACK, 128 listening sockets in the "
      "accept pool (1 in the diagnostic); netpoll is `netpoll echo --backend xdp|tap` (echo, "
      "bulk echo) and "
      "`hosted/bench/tap_sink.rs --backend xdp|tap` (rx, tx, the diagnostic); the kernel "
      "servers are `netpoll echo --workers 1` and `tap_sink.rs --backend epoll` (netpoll's "
      "`Runtime`, one worker thread like the smoltcp servers)")
    w("- clients (in namespace C): `netpoll-bench --allow-netns` for echo and bulk echo "
      "(closed loop, 1 thread, every echoed byte verified), "
      "`hosted/bench/bulk_client.rs` for rx (the sink confirms the byte count) and tx "
      "(every byte verified)\n")

    w("### Results\n")
    w("Medians of the rounds, per-round spread as [min–max]. Gbps = 10⁹ bits/s of payload; "
      "bulk echo counts the echoed bytes once (one direction). Server CPU is utime+stime of "
      "the server process over the client's run divided by its wall time (100% = one core "
      "busy); on TAP it includes the kernel work done inside the server's TAP reads and "
      "writes, on AF_XDP and the kernel paths not the softirq work of the veth. Busy cores: "
      "the whole machine's CPU time over the client's run (total − idle − iowait in "
      "/proc/stat: user, nice, system, irq, softirq, steal) divided by its wall time, so "
      "client, server, softirq and whatever else ran; busy cores per Gbps is that divided by "
      "the rate (lower is cheaper).\n")
    w(f"Other processes share this machine. A run during which the rest of the machine (all "
      f"CPU time in /proc/stat minus the server's, the client's and this script's) used more "
      f"than {args.max_others:g}% of a core is repeated, up to {args.attempts} attempts, 5 s "
      f"apart; a run still disturbed after that is left out of the medians and ratios (see "
      f"'Every run'). Repeats in this run: {repeats}; "
      f"runs left out: {sum(1 for r in results if r.get('ok') and not r.get('clean', True))}."
      "\n")
    w("| workload | path | rate | server CPU | busy cores | busy cores per Gbps | p50 µs | "
      "p99 µs |")
    w("|---|---|---|---|---|---|---|---|")
    for wname in args.workloads:
        wl = WORKLOADS[wname]
        for i, s in enumerate(wl["servers"]):
            title = f"{wname}: {wl['title']}" if i == 0 else ""
            rs = [r for r in results if r["workload"] == wname and r["server"] == s
                  and usable(r)]
            if not rs:
                w(f"| {title} | {SERVERS[s]} | {no_value(results, wname, s)} | | | | | |")
                continue
            rate = cell([r.get(wl["key"]) for r in rs], 2 if wl["unit"] == "Gbps" else 0)
            cpu = cell([r.get("server_cpu_pct") for r in rs], 0)
            busy = cell([r.get("busy_cores") for r in rs], 2)
            per = cell([r.get("busy_cores_per_gbps") for r in rs], 2) \
                if wl["unit"] == "Gbps" else "—"
            p50 = fmt(med([r.get("p50_us") for r in rs])) if wl["kind"] == "echo" else "—"
            p99 = fmt(med([r.get("p99_us") for r in rs])) if wl["kind"] == "echo" else "—"
            w(f"| {title} | {SERVERS[s]} | {rate} {wl['unit']} | {cpu}% | {busy} | {per} | "
              f"{p50} | {p99} |")
    w("")
    judged = target_lines(results, args.workloads, args.chosen)
    if judged:
        w("### Targets (median of the per-round ratios, their range in brackets)\n")
        out.extend(judged)
        w("")
    pairs = [(a, b) for a, b in [("netpoll-xdp", "netpoll-tap"),
                                 ("netpoll-xdp", "kernel-veth-off"),
                                 ("netpoll-xdp", "kernel-veth-on"),
                                 ("netpoll-tap", "raw"),
                                 ("netpoll-tap", "kernel-veth-on")]
             if a in args.chosen and b in args.chosen]
    if pairs:
        w("### Ratios of the rate (median of the per-round ratios, their range in brackets)\n")
        w("| workload | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |")
        w("|---|" + "---|" * len(pairs))
        for wname in args.workloads:
            wl = WORKLOADS[wname]
            cells = [ratio_cell(results, wname, a, b)
                     if a in wl["servers"] and b in wl["servers"] else "—" for a, b in pairs]
            w(f"| {wname} | " + " | ".join(cells) + " |")
        w("\n— : a path the workload does not run (the diagnostic compares the two smoltcp "
          "servers on TAP only).\n")
    if failures:
        w(f"**{len(failures)} measurement(s) failed:**\n")
        for f in failures[:10]:
            w(f"- {f}")
        w("")
    if syscalls:
        w("### Syscalls per echoed message (echo16, extra runs)\n")
        w("`perf stat -e raw_syscalls:sys_enter -e syscalls:sys_enter_{read,write,recvfrom,"
          "sendto,poll,epoll_wait} -p PID` on the server for a whole echo16 run (not in the "
          "tables above), divided by the messages echoed. On TAP, `read`/`write` are frames "
          "on the TAP fd; on AF_XDP, `sendto` kicks the kernel to transmit and `poll` waits "
          "on the socket; on the kernel path, they are the sockets' own calls.\n")
        w("| server | msgs | syscalls/msg | read | write | recvfrom | sendto | poll | "
          "epoll_wait | other |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for server, c in syscalls.items():
            n = c["msgs"]
            per = lambda k: f"{c.get(k, 0) / n:.3f}"  # noqa: E731
            other = c.get("total", 0) - sum(c.get(k, 0) for k in SYSCALL_NAMES)
            w(f"| {SERVERS[server]} | {n:,} | **{per('total')}** | {per('read')} | "
              f"{per('write')} | {per('recvfrom')} | {per('sendto')} | {per('poll')} | "
              f"{per('epoll_wait')} | {other / n:.3f} |")
        w("")
    if profiles:
        w("### Profiles (extra runs, perf record -F 999 on the server, flat)\n")
        for title, text in profiles.items():
            w(f"<details><summary>{title}</summary>\n\n```\n{text}\n```\n</details>\n")
    w("<details><summary>Every run</summary>\n")
    w("| round | workload | server | ok | rate | server CPU % | busy cores | others % | "
      "attempt | error |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        wl = WORKLOADS[r["workload"]]
        w(f"| {r['round']} | {r['workload']} | {r['server']} | {'yes' if r.get('ok') else 'no'} "
          f"| {fmt(r.get(wl['key']) if r.get('ok') else None, 2)} {wl['unit']} | "
          f"{fmt(r.get('server_cpu_pct'), 0)} | {fmt(r.get('busy_cores'), 2)} | "
          f"{fmt(r.get('others_pct'), 0)}{'' if r.get('clean', True) else ' (left out)'} | "
          f"{r.get('attempt', 1)} | {(r.get('error') or '')[:80]} |")
    w("\n</details>\n")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------


def main() -> int:
    bl.init("tap-bench")
    ap = bl.parser(__doc__, rounds=3, duration=3.0, warmup=0.5, out=str(REPO / "BENCHMARKS.md"),
                   note=True, no_build=True)
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated, of {', '.join(WORKLOADS)} [default: all]")
    ap.add_argument("--pin", choices=["auto", "split", "same", "none"], default="auto")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--attempts", type=int, default=4)
    ap.add_argument("--max-others", type=float, default=20.0)
    ap.add_argument("--servers", default=",".join(ALL),
                    help=f"comma-separated, of {', '.join(ALL)} [default: these five]; also "
                    f"{', '.join(OPTIONAL_SERVERS)} (needs `netpoll echo --mtu`) and "
                    f"{', '.join(ALIASES)} (= {', '.join(ALIASES.values())})")
    ap.add_argument("--buffers", default="")
    ap.add_argument("--ns-prefix", default=os.environ.get("TAPBENCH_NS_PREFIX", "nptapbench"))
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    args.workloads = bl.comma_list(args.workloads, WORKLOADS, "workload")
    chosen = []
    for s in bl.comma_list(args.servers, {**SERVERS, **OPTIONAL_SERVERS, **ALIASES}, "server"):
        s = ALIASES.get(s, s)
        if s not in chosen:
            chosen.append(s)
    if not chosen:
        die(f"--servers: some of {', '.join(SERVERS)}")
    args.chosen = chosen
    SERVERS.update({s: OPTIONAL_SERVERS[s] for s in chosen if s in OPTIONAL_SERVERS})
    if shutil.which("ethtool") is None and {"netpoll-xdp", "kernel-veth-off"} & set(chosen):
        die("netpoll-xdp and kernel-veth-off need ethtool (apt-get install ethtool)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}", args.ns_prefix):
        die("--ns-prefix: up to 31 letters, digits, '_', '.', '-'")
    args.buffers = parse_buffers(args.buffers)
    if args.profile and (args.buffers or not set(PROFILED) <= set(chosen)):
        die(f"--profile needs the servers {', '.join(PROFILED)} and no --buffers")
    if args.buffers:
        if "netpoll-tap" not in chosen:
            die("--buffers needs netpoll-tap among --servers")
        for rx, tx in args.buffers:
            name = buffers_server(rx, tx)
            BUFFER_SIZES[name.partition("@")[2]] = (rx, tx)
            SERVERS[name] = f"netpoll on smoltcp (TAP), {size_text(rx)} rx + {size_text(tx)} tx"
    args.buffer_servers = [buffers_server(rx, tx) for rx, tx in args.buffers]
    # The servers each workload runs, in this run: netpoll-tap once per --buffers pair.
    for wname in args.workloads:
        wl = WORKLOADS[wname]
        expanded: list[str] = []
        optional = list(OPTIONAL_SERVERS) if wl.get("optional_servers", True) else []
        for s in wl["servers"] + optional:
            if s in chosen:
                expanded += args.buffer_servers if s == "netpoll-tap" and args.buffers else [s]
        if not expanded:
            die(f"workload {wname} runs none of --servers {args.servers}")
        wl["servers"] = expanded
    if not (1 <= args.rounds <= 20 and 0.5 <= args.duration <= 60 and 0 <= args.warmup < 10
            and 1 <= args.attempts <= 10 and args.max_others > 0):
        die("--rounds 1..20, --duration 0.5..60, --warmup 0..10, --attempts 1..10, "
            "--max-others > 0")
    bl.require_root("network namespaces, TAP and AF_XDP devices")
    os.chdir(REPO)
    bl.interrupt_on_signals()
    n = sum(len(WORKLOADS[w]["servers"]) for w in args.workloads) * args.rounds
    log(f"{n} measurements ({len(chosen)} servers, {len(args.workloads)} workloads, "
        f"{args.rounds} rounds): about {estimate_s(args) / 60:.1f} min after the build, more "
        f"if disturbed runs are repeated (up to {args.attempts} attempts, 5 s apart)"
        + (" plus the --profile runs" if args.profile else ""))

    bins = build(args.no_build)
    if "netpoll-tap-mtu9000" in chosen:
        helptext = sh([str(bins["netpoll"]), "echo", "--help"], check=False).stdout
        if "--mtu" not in helptext:
            die("netpoll-tap-mtu9000 needs `netpoll echo --mtu` (this netpoll has none)")
    outdir = bl.target_dir() / "bench"
    outdir.mkdir(parents=True, exist_ok=True)
    rawlog_name = "tap-buffers-results.jsonl" if args.buffers else "tap-results.jsonl"
    rawlog = open(outdir / rawlog_name, "w")
    mach = bl.machine()
    started = bl.utc_now()
    load0 = bl.loadavg()
    t0 = time.monotonic()
    results: list[dict] = []
    failures: list[str] = []
    profiles: dict[str, str] = {}
    syscalls: dict[str, dict] = {}
    ns = Netns(args.ns_prefix)
    servers: list[bl.Server] = []
    repeats = 0

    def measure(round_no: int, wname: str, server: str, wrap=None) -> dict:
        wl = WORKLOADS[wname]
        label = f"{wname}/{server}/r{round_no}"
        srv = None
        try:
            srv = bl.Server(server, server_cmd(server, wl, bins, ns, pin_of(args, wl)))
            servers.append(srv)
            if server.partition("@")[0] in TAP_SERVERS:
                ns.configure_tap()
            elif server == "netpoll-tap-mtu9000":
                ns.configure_tap(mtu=9000)
            ns.steer(pin_of(args, wl))
            cmd = client_cmd(server, wl, bins, ns, args, srv.pid, label, pin_of(args, wl))
            timeout = args.duration + args.warmup + 40
            cpu0, w0, busy0, ours0 = srv.cpu_s(), time.monotonic(), bl.busy_s(), bl.ours_s()
            all0 = bl.busy_s(irq=True)
            res = wrap(srv.pid, lambda: bl.run_json(cmd, timeout)) if wrap else \
                bl.run_json(cmd, timeout)
            all1 = bl.busy_s(irq=True)
            cpu1, w1, busy1, ours1 = srv.cpu_s(), time.monotonic(), bl.busy_s(), bl.ours_s()
            wall = max(w1 - w0, 1e-9)
            if res.get("mb_per_s") is not None:
                res["gbps"] = res["mb_per_s"] * 8 / 1000
            # The whole machine: total - idle - iowait, in cores.
            res["busy_cores"] = (all1 - all0) / wall
            if res.get("gbps"):
                res["busy_cores_per_gbps"] = res["busy_cores"] / res["gbps"]
            if cpu0 is not None and cpu1 is not None:
                res["server_cpu_pct"] = 100 * (cpu1 - cpu0) / wall
                # What the rest of the machine used meanwhile (other engineers' builds...).
                others = (busy1 - busy0) - (cpu1 - cpu0) - (ours1 - ours0)
                res["others_pct"] = max(0.0, 100 * others / wall)
            if srv.proc.poll() is not None:
                res["ok"] = False
                res["error"] = res.get("error") or f"server exited: {srv.log_text()[-300:]}"
            # What AF_XDP gave the server: copy or zero-copy (both servers say it on stderr).
            m = re.search(r"AF_XDP on \S+ queue 0,? \(?([\w-]+) mode", srv.log_text())
            if m:
                res["xdp_mode"] = m.group(1)
            if re.search(r"mismatch", srv.log_text()):
                res["ok"] = False
                res["error"] = res.get("error") or f"server: {srv.log_text()[-300:]}"
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            res = dict(ok=False, error=str(e))
        finally:
            if srv is not None:
                srv.stop()
                servers.remove(srv)
        res.update(round=round_no, workload=wname, server=server, load=bl.loadavg())
        return res

    kset = ""
    try:
        ns.create(set(chosen))
        kset = kernel_settings(ns, chosen)
        for rnd in range(1, args.rounds + 1):
            for wname in args.workloads:
                for server in bl.rotated(WORKLOADS[wname]["servers"], rnd):
                    res = None
                    for attempt in range(1, args.attempts + 1):
                        this = measure(rnd, wname, server)
                        this["attempt"] = attempt
                        repeats += attempt > 1
                        this["clean"] = this.get("others_pct", 0) <= args.max_others
                        if res is None or (this.get("ok") and (
                                not res.get("ok") or
                                this.get("others_pct", 0) < res.get("others_pct", 0))):
                            res = this
                        if not this.get("ok") or this["clean"] or attempt == args.attempts:
                            break
                        log(f"round {rnd} {wname} {server}: other processes used "
                            f"{this['others_pct']:.0f}% of a core; again in 5 s")
                        time.sleep(5)
                    results.append(res)
                    rawlog.write(json.dumps(res) + "\n")
                    rawlog.flush()
                    unit = WORKLOADS[wname]["unit"]
                    val = res.get(WORKLOADS[wname]["key"])
                    if res.get("ok"):
                        lat = f", p50 {fmt(res.get('p50_us'))} us" \
                            if res.get("p50_us") is not None else ""
                        log(f"round {rnd} {wname:7} {server:15} {fmt(val, 2)} {unit}{lat}, "
                            f"server CPU {fmt(res.get('server_cpu_pct'), 0)}%, busy cores "
                            f"{fmt(res.get('busy_cores'), 2)}, others "
                            f"{fmt(res.get('others_pct'), 0)}%")
                    else:
                        failures.append(f"round {rnd} {wname} {server}: {res.get('error')}")
                        log(f"round {rnd} {wname:7} {server:15} FAILED: {res.get('error')}")
        if args.profile:
            for wname in [w for w in ("echo16", "bulk") if w in args.workloads]:
                for server in PROFILED:
                    holder: dict = {}
                    outfile = outdir / f"tap-perf-{wname}-{server}.data"

                    def wrap(pid, run, outfile=outfile, holder=holder):
                        res, text = bl.profile(pid, outfile, run)
                        holder["text"] = text
                        return res

                    log(f"profiling {server} during {wname}")
                    measure(0, wname, server, wrap=wrap)
                    profiles[f"{wname}: {SERVERS[server]}"] = holder.get("text", "(no profile)")
            if "echo16" in args.workloads and bl.have_perf_tracepoints():
                for server in [s for s in ALL if s in chosen]:
                    outfile = outdir / f"tap-syscalls-{server}.txt"
                    holder = {}

                    def count(pid, run, outfile=outfile, holder=holder):
                        res, holder["counts"] = bl.count_syscalls("perf", pid, outfile, run,
                                                                  SYSCALL_NAMES)
                        return res

                    log(f"counting the syscalls of {server} during echo16")
                    res = measure(0, "echo16", server, wrap=count)
                    if res.get("ok") and res.get("msgs_total"):
                        syscalls[server] = dict(holder.get("counts", {}), msgs=res["msgs_total"])
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        failures.append("interrupted")
        return 130
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        # The topology could not be set up (measurements catch their own errors).
        log(f"stopped: {e}; cleaning up")
        return 1
    finally:
        for srv in list(servers):
            srv.stop()
        ns.delete()
        rawlog.close()

    elapsed = time.monotonic() - t0
    if args.buffers:
        text = report_buffers(args, mach, results, started, load0, bl.loadavg(), elapsed,
                              failures, repeats)
        write_section(Path(args.out), text, BUFFERS_SECTION)
    else:
        text = report(args, mach, results, profiles, syscalls, started, load0,
                      bl.loadavg(), elapsed, kset, failures, repeats)
        write_section(Path(args.out), text)
    log(f"wrote the {'buffers' if args.buffers else 'userspace paths'} section of {args.out} "
        f"({elapsed:.0f} s); raw results in {outdir / rawlog_name}")
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
