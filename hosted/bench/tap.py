#!/usr/bin/env python3
"""netpoll on smoltcp over TAP, measured against smoltcp alone and the kernel path.

    sudo python3 hosted/bench/tap.py           # builds release, runs everything, updates BENCHMARKS.md

Three servers, each a fresh process per measurement, loaded by a kernel TCP client:

    raw           smoltcp alone on the TAP device: hosted/bench/raw_benchmark.rs, the pattern
                  of smoltcp's examples/benchmark.rs (one poll loop, no netpoll)
    netpoll-tap   netpoll on smoltcp on the TAP device: `netpoll echo --backend tap`, and
                  hosted/bench/tap_sink.rs for one-way bulk
    netpoll-veth  netpoll on the kernel's TCP over a veth pair: `netpoll echo --backend epoll`

Workloads (interleaved: every workload and server once per round, --rounds rounds, the server
order rotating from round to round):

    bulk     1 connection, bulk both ways: 64 KiB messages, 4 in flight, 64 KiB server buffer
             (netpoll-bench, every byte verified); MB/s echoed
    rx       1 connection, client -> server sink, MB/s confirmed by the sink (raw, netpoll-tap)
    tx       1 connection, server source -> client, MB/s received and verified (raw, netpoll-tap)
    echo1    128-byte echo, 1 connection, ping-pong; msgs/s
    echo16   128-byte echo, 16 connections; msgs/s
    echo16-pool1  echo16 with a listen backlog of 1 instead of 128 (raw, netpoll-tap; for
             netpoll-tap the echo mode of tap_sink.rs, as `netpoll echo` has no backlog option):
             a diagnostic of what the accept pool's idle sockets cost

(rx and tx have no kernel row: the one-way servers run on smoltcp only.)

Topology, all inside two network namespaces this script creates and always deletes:

    namespace C (client)                       namespace S (kernel server)
    kernel TCP 10.7.0.1 --TAP nptap0-- smoltcp 10.7.0.2 (the server process, in C)
    kernel TCP 10.8.0.1 --veth npvc/npvs----------------- kernel TCP 10.8.0.2

The kernel path needs the second namespace: two addresses of one namespace talk over the
loopback device, never over the veth between them. The TAP servers create the TAP device when
they start (it goes away with them), so its kernel side is configured for each run. Every
server reports its address on stdout (`listening <ip:port>`) once it listens.

Reports medians with the per-round spread [min-max], the ratios netpoll-tap/raw and
netpoll-tap/netpoll-veth, server CPU, and writes (or replaces) the "## TAP: ..." section of
BENCHMARKS.md (--out), keeping the rest of the file and the hand-written notes below the TAP
notes marker. Raw JSON lines go to target/bench/tap-results.jsonl.

Options: --rounds N (3), --duration SECS (3), --warmup SECS (0.5, echo workloads),
--workloads bulk,echo1, --attempts N (4) and --max-others PCT (20): a run during which the
rest of the machine used more than PCT% of a core is repeated, and left out of the medians if
it stays disturbed, --no-build, --pin auto|split|same|none (auto: server and client on a
core each, except echo1 where they share one: see pin_of), --profile (perf record of
netpoll-tap and raw in extra runs, not in the tables), --note TEXT, --out PATH,
--servers raw,netpoll-tap,netpoll-veth (which servers to run; default all),
--ns-prefix NAME (the namespaces' names start with it; default $TAPBENCH_NS_PREFIX or
nptapbench, so that two runs on one machine are told apart by name).

Socket buffer comparison: --buffers RX/TX[,RX/TX...] (bytes, e.g. 65536/65536,8192/4096) runs
netpoll-tap once per pair, as servers named netpoll-tap@64K/64K..., passing --rx-buf/--tx-buf
to `netpoll echo` (bulk, echo) and to tap_sink (rx, tx, the diagnostic), interleaved like
any other servers. It writes (or replaces) the section "## Userspace engine: socket buffer
sizes vs bulk throughput" instead of the TAP section, with the ratios to the first pair;
raw JSON lines to target/bench/tap-buffers-results.jsonl.

    sudo python3 hosted/bench/tap.py --servers netpoll-tap --workloads bulk,rx,tx \
        --buffers 65536/65536,8192/4096,16384/16384,32768/8192

Needs root (namespaces, TAP), iproute2, python3. Only the standard library (and benchlib.py);
every child has a timeout; only processes this script started are signalled; only its own namespaces deleted.
Exit status 1 if any measurement failed.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchlib as bl
from benchlib import REPO, cell, die, fmt, log, med, sh

SERVERS = {
    "raw": "smoltcp alone (raw loop, TAP)",
    "netpoll-tap": "netpoll on smoltcp (TAP)",
    "netpoll-veth": "netpoll on kernel TCP (veth)",
}
ALL = list(SERVERS)
WORKLOADS = {
    "bulk": dict(title="bulk echo, 1 conn, 64 KiB messages ×4 in flight, 64 KiB server buffer",
                 kind="echo", conns=1, size=65536, pipeline=4, buf=65536, unit="MB/s",
                 key="mb_per_s", servers=ALL),
    "rx": dict(title="bulk receive: client → server sink, 1 conn", kind="oneway", mode="send",
               server_mode="sink", unit="MB/s", key="mb_per_s", servers=["raw", "netpoll-tap"]),
    "tx": dict(title="bulk transmit: server source → client, 1 conn", kind="oneway",
               mode="recv", server_mode="source", unit="MB/s", key="mb_per_s",
               servers=["raw", "netpoll-tap"]),
    "echo1": dict(title="128 B echo, 1 conn (ping-pong)", kind="echo", conns=1, size=128,
                  pipeline=1, buf=128, unit="msgs/s", key="msgs_per_s", servers=ALL,
                  pin="same"),
    "echo16": dict(title="128 B echo, 16 conns", kind="echo", conns=16, size=128, pipeline=1,
                   buf=128, unit="msgs/s", key="msgs_per_s", servers=ALL),
    # Diagnostic: echo16 with one listening socket instead of 128, for both smoltcp servers,
    # to show what the accept pool's sockets cost each of them.
    "echo16-pool1": dict(title="128 B echo, 16 conns, accept pool of 1 socket (diagnostic)",
                         kind="echo", conns=16, size=128, pipeline=1, buf=128, backlog=1,
                         unit="msgs/s", key="msgs_per_s", servers=["raw", "netpoll-tap"]),
}

TAP, SMOL, TAP_KERNEL = "nptap0", "10.7.0.2", "10.7.0.1"
VETH_C, VETH_S, VETH_C_ADDR, VETH_S_ADDR = "npvc", "npvs", "10.8.0.1", "10.8.0.2"
PORT = 9009
# A server left behind by a crash of this script exits on its own after this long.
SERVER_LIFETIME_S = 120

SECTION = "## TAP: netpoll on smoltcp vs smoltcp alone and the kernel"
BUFFERS_SECTION = "## Userspace engine: socket buffer sizes vs bulk throughput"
TAP_NOTES_MARKER = ("<!-- hand-written notes below this line, up to the next level-2 heading, "
                    "are kept by hosted/bench/tap.py -->")


# ------------------------------------------------------------------------------------------
# Build and namespaces


def build(no_build: bool) -> dict[str, Path]:
    b = bl.build(["netpoll", "netpoll-bench"], ["raw_benchmark", "tap_sink", "bulk_client"],
                 no_build=no_build)
    return dict(netpoll=b["netpoll"], bench=b["netpoll-bench"], raw=b["raw_benchmark"],
                sink=b["tap_sink"], bulk=b["bulk_client"])


class Netns:
    """The two namespaces of the run and the veth between them; delete() removes both."""

    def __init__(self, prefix: str = "nptapbench"):
        tag = f"{os.getpid()}-{int(time.time()) % 100000}"
        self.c, self.s = f"{prefix}-c-{tag}", f"{prefix}-s-{tag}"
        self.made: list[str] = []

    def create(self) -> None:
        for ns in (self.c, self.s):
            bl.make_netns(ns)
            self.made.append(ns)
        sh(["ip", "-n", self.c, "link", "add", VETH_C, "type", "veth", "peer", "name", VETH_S,
            "netns", self.s])
        sh(["ip", "-n", self.c, "addr", "add", f"{VETH_C_ADDR}/24", "dev", VETH_C])
        sh(["ip", "-n", self.s, "addr", "add", f"{VETH_S_ADDR}/24", "dev", VETH_S])
        sh(["ip", "-n", self.c, "link", "set", VETH_C, "up"])
        sh(["ip", "-n", self.s, "link", "set", VETH_S, "up"])

    def configure_tap(self) -> None:
        """Gives the kernel side of the (freshly created) TAP device its address."""
        bl.wait_for_link(self.c, TAP, 5)
        sh(["ip", "-n", self.c, "addr", "add", f"{TAP_KERNEL}/24", "dev", TAP])
        sh(["ip", "-n", self.c, "link", "set", TAP, "up"])

    def delete(self) -> None:
        for ns in reversed(self.made):
            bl.delete_netns(ns)
        self.made.clear()


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
    tap = ["--tap", TAP, "--addr", f"{SMOL}/24"]
    # netpoll-tap@RX/TX (--buffers): netpoll-tap with these smoltcp socket buffers.
    server, _, bufs = server.partition("@")
    if bufs:
        rx, tx = BUFFER_SIZES[bufs]
        tap += ["--rx-buf", str(rx), "--tx-buf", str(tx)]
    if server == "netpoll-veth":
        cmd = ["ip", "netns", "exec", ns.s, str(bins["netpoll"]), "echo", "--listen",
               f"{VETH_S_ADDR}:{PORT}", "--buf", str(wl["buf"]), "--quiet",
               # One worker thread, like the smoltcp servers (the default is one per CPU).
               "--workers", "1"]
    elif server == "raw":
        mode = wl.get("server_mode", "echo")
        cmd = ["ip", "netns", "exec", ns.c, str(bins["raw"]), *tap, "--port", str(PORT),
               "--mode", mode, "--buf", str(wl.get("buf", 65536)),
               "--backlog", str(wl.get("backlog", 128)), "--exit-after", str(SERVER_LIFETIME_S)]
    elif wl["kind"] == "oneway" or "backlog" in wl:
        mode = wl.get("server_mode", "echo")
        cmd = ["ip", "netns", "exec", ns.c, str(bins["sink"]), *tap, "--port", str(PORT),
               "--mode", mode, "--buf", str(wl.get("buf", 65536)),
               "--backlog", str(wl.get("backlog", 128)), "--exit-after", str(SERVER_LIFETIME_S)]
    else:
        cmd = ["ip", "netns", "exec", ns.c, str(bins["netpoll"]), "echo", "--backend", "tap",
               *tap, "--listen", f"{SMOL}:{PORT}", "--buf", str(wl["buf"]), "--quiet"]
    return pin_cmd(pin, "server") + cmd


# "RXK/TXK" (as in the server names) -> (rx, tx) bytes, filled from --buffers.
BUFFER_SIZES: dict[str, tuple[int, int]] = {}


def client_cmd(server: str, wl: dict, bins: dict, ns: Netns, args, pid: int, label: str,
               pin: str) -> list[str]:
    addr = f"{VETH_S_ADDR if server == 'netpoll-veth' else SMOL}:{PORT}"
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


SYSCALL_NAMES = ["read", "write", "recvfrom", "sendto", "poll", "epoll_wait"]


# ------------------------------------------------------------------------------------------
# Report


def usable(r: dict) -> bool:
    """A run that succeeded and that the rest of the machine did not disturb much."""
    return bool(r.get("ok")) and r.get("clean", True)


def ratio_cell(results, w: str, a: str, b: str) -> str:
    """The median of the per-round ratios (same round, adjacent runs: slow drifts of the
    machine cancel out) with their range; the ratio of the medians when no round has both."""
    key = WORKLOADS[w]["key"]
    va = {r["round"]: r.get(key) for r in results if r["workload"] == w and r["server"] == a
          and usable(r)}
    vb = {r["round"]: r.get(key) for r in results if r["workload"] == w and r["server"] == b
          and usable(r)}
    ma, mb = med(list(va.values())), med(list(vb.values()))
    if not ma or not mb:
        return "—"
    per = [va[k] / vb[k] for k in va if k in vb and va[k] and vb[k]]
    if not per:
        return f"**{ma / mb:.2f}×** (ratio of medians)"
    spread = f" [{min(per):.2f}–{max(per):.2f}]" if len(per) > 1 else ""
    return f"**{statistics.median(per):.2f}×**{spread}"


def kernel_settings(ns: Netns) -> str:
    def get(key):
        r = sh(["ip", "netns", "exec", ns.c, "sysctl", "-n", key], check=False)
        return r.stdout.strip() or "?"
    cc = get("net.ipv4.tcp_congestion_control")
    return f"kernel TCP congestion control {cc}; veth offloads (TSO/GSO) at the kernel defaults"


def write_section(path: Path, text: str, heading: str = SECTION) -> None:
    """This script's section (TAP or buffers) of the report, notes kept."""
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
            rate = cell([r.get(wl["key"]) for r in rs], 1 if wl["unit"] == "MB/s" else 0)
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
          f"| {fmt(r.get(wl['key']))} {wl['unit']} | {fmt(r.get('server_cpu_pct'), 0)} | "
          f"{fmt(r.get('others_pct'), 0)}{'' if r.get('clean', True) else ' (left out)'} | "
          f"{r.get('attempt', 1)} | {(r.get('error') or '')[:80]} |")
    w("\n</details>\n")
    return "\n".join(out)


def report(args, mach, results, profiles, syscalls, started, load0, load1, elapsed, kset,
           failures, repeats) -> str:
    out: list[str] = []
    w = out.append
    cmd = "sudo python3 hosted/bench/tap.py" + (" " + " ".join(args.argv) if args.argv else "")
    w(SECTION + "\n")
    w("Generated by `hosted/bench/tap.py`: bulk throughput and 128-byte echo rate of netpoll on "
      "smoltcp over a TAP device, against smoltcp alone on the same device (the pattern of "
      "smoltcp's `examples/benchmark.rs`: `hosted/bench/raw_benchmark.rs`) and against "
      "netpoll on the kernel's TCP over a veth pair, in one run, interleaved round by round, a "
      "fresh server process per measurement.\n")
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
    w("- namespace C: kernel client, TAP `nptap0` (kernel 10.7.0.1 ↔ smoltcp 10.7.0.2, MTU "
      "1500, no offloads on the TAP fd) and veth end 10.8.0.1; namespace S: veth end 10.8.0.2 "
      f"and the kernel-path server (MTU 1500; {kset})")
    w("- smoltcp servers (raw and netpoll) alike: netpoll's `TapDevice`, 64 KiB socket "
      "buffers, Nagle off, 10 ms delayed ACK, 128 listening sockets in the accept pool (1 in "
      "the diagnostic); netpoll-on-TAP is `netpoll echo --backend tap` (echo, bulk echo) and "
      "`hosted/bench/tap_sink.rs` (rx, tx, the diagnostic); the kernel server is "
      "`netpoll echo --workers 1` (epoll, one thread like the smoltcp servers)")
    w("- clients (in namespace C): `netpoll-bench --allow-netns` for echo and bulk echo "
      "(closed loop, 1 thread, every echoed byte verified), "
      "`hosted/bench/bulk_client.rs` for rx (the sink confirms the byte count) and tx "
      "(every byte verified)\n")

    w("### Results\n")
    w("Medians of the rounds, per-round spread as [min–max]. Server CPU is utime+stime of the "
      "server process over the client's run divided by its wall time (100% = one core busy); "
      "on TAP it includes the kernel work done inside the server's TAP reads and writes.\n")
    w(f"Other processes share this machine. A run during which the rest of the machine (all "
      f"CPU time in /proc/stat minus the server's, the client's and this script's) used more "
      f"than {args.max_others:g}% of a core is repeated, up to {args.attempts} attempts, 5 s "
      f"apart; a run still disturbed after that is left out of the medians and ratios (see "
      f"'Every run'). Repeats in this run: {repeats}; "
      f"runs left out: {sum(1 for r in results if r.get('ok') and not r.get('clean', True))}."
      "\n")
    w("| workload | server | rate | server CPU | p50 µs | p99 µs |")
    w("|---|---|---|---|---|---|")
    for wname in args.workloads:
        wl = WORKLOADS[wname]
        for i, s in enumerate(wl["servers"]):
            title = f"{wname}: {wl['title']}" if i == 0 else ""
            rs = [r for r in results if r["workload"] == wname and r["server"] == s
                  and usable(r)]
            if not rs:
                w(f"| {title} | {SERVERS[s]} | no undisturbed run | | | |")
                continue
            rate = cell([r.get(wl["key"]) for r in rs], 1 if wl["unit"] == "MB/s" else 0)
            cpu = cell([r.get("server_cpu_pct") for r in rs], 0)
            p50 = fmt(med([r.get("p50_us") for r in rs])) if wl["kind"] == "echo" else "—"
            p99 = fmt(med([r.get("p99_us") for r in rs])) if wl["kind"] == "echo" else "—"
            w(f"| {title} | {SERVERS[s]} | {rate} {wl['unit']} | {cpu}% | "
              f"{p50} | {p99} |")
    w("")
    w("### Ratios (median of the per-round ratios, their range in brackets)\n")
    w("| workload | netpoll-TAP / smoltcp alone | netpoll-TAP / netpoll-on-kernel-veth |")
    w("|---|---|---|")
    for wname in args.workloads:
        wl = WORKLOADS[wname]
        a = ratio_cell(results, wname, "netpoll-tap", "raw")
        b = ratio_cell(results, wname, "netpoll-tap", "netpoll-veth") \
            if "netpoll-veth" in wl["servers"] else "—"
        w(f"| {wname} | {a} | {b} |")
    w("\n— : no kernel row. The one-way servers (rx, tx) run on smoltcp only; the diagnostic "
      "compares the two smoltcp servers only.\n")
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
          "on the TAP fd; on the kernel path, they are the sockets' own calls.\n")
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
    w("| round | workload | server | ok | rate | server CPU % | others % | attempt | error |")
    w("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        wl = WORKLOADS[r["workload"]]
        w(f"| {r['round']} | {r['workload']} | {r['server']} | {'yes' if r.get('ok') else 'no'} "
          f"| {fmt(r.get(wl['key']))} {wl['unit']} | {fmt(r.get('server_cpu_pct'), 0)} | "
          f"{fmt(r.get('others_pct'), 0)}{'' if r.get('clean', True) else ' (left out)'} | "
          f"{r.get('attempt', 1)} | {(r.get('error') or '')[:80]} |")
    w("\n</details>\n")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------


def main() -> int:
    bl.init("tap-bench")
    ap = bl.parser(__doc__, rounds=3, duration=3.0, warmup=0.5, out=str(REPO / "BENCHMARKS.md"),
                   note=True, no_build=True)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--pin", choices=["auto", "split", "same", "none"], default="auto")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--attempts", type=int, default=4)
    ap.add_argument("--max-others", type=float, default=20.0)
    ap.add_argument("--servers", default=",".join(ALL))
    ap.add_argument("--buffers", default="")
    ap.add_argument("--ns-prefix", default=os.environ.get("TAPBENCH_NS_PREFIX", "nptapbench"))
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    args.workloads = bl.comma_list(args.workloads, WORKLOADS, "workload")
    chosen = bl.comma_list(args.servers, SERVERS, "server")
    if not chosen:
        die(f"--servers: some of {', '.join(ALL)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}", args.ns_prefix):
        die("--ns-prefix: up to 31 letters, digits, '_', '.', '-'")
    args.buffers = parse_buffers(args.buffers)
    if args.profile and (args.buffers or sorted(chosen) != sorted(ALL)):
        die("--profile needs every server and no --buffers")
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
        for s in wl["servers"]:
            if s in chosen:
                expanded += args.buffer_servers if s == "netpoll-tap" and args.buffers else [s]
        if not expanded:
            die(f"workload {wname} runs none of --servers {args.servers}")
        wl["servers"] = expanded
    if not (1 <= args.rounds <= 20 and 0.5 <= args.duration <= 60 and 0 <= args.warmup < 10
            and 1 <= args.attempts <= 10 and args.max_others > 0):
        die("--rounds 1..20, --duration 0.5..60, --warmup 0..10, --attempts 1..10, "
            "--max-others > 0")
    bl.require_root("network namespaces and a TAP device")
    os.chdir(REPO)
    bl.interrupt_on_signals()

    bins = build(args.no_build)
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
            if server != "netpoll-veth":
                ns.configure_tap()
            cmd = client_cmd(server, wl, bins, ns, args, srv.pid, label, pin_of(args, wl))
            timeout = args.duration + args.warmup + 40
            cpu0, w0, busy0, ours0 = srv.cpu_s(), time.monotonic(), bl.busy_s(), bl.ours_s()
            res = wrap(srv.pid, lambda: bl.run_json(cmd, timeout)) if wrap else \
                bl.run_json(cmd, timeout)
            cpu1, w1, busy1, ours1 = srv.cpu_s(), time.monotonic(), bl.busy_s(), bl.ours_s()
            if cpu0 is not None and cpu1 is not None:
                wall = max(w1 - w0, 1e-9)
                res["server_cpu_pct"] = 100 * (cpu1 - cpu0) / wall
                # What the rest of the machine used meanwhile (other engineers' builds...).
                others = (busy1 - busy0) - (cpu1 - cpu0) - (ours1 - ours0)
                res["others_pct"] = max(0.0, 100 * others / wall)
            if srv.proc.poll() is not None:
                res["ok"] = False
                res["error"] = res.get("error") or f"server exited: {srv.log_text()[-300:]}"
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

    try:
        ns.create()
        kset = kernel_settings(ns)
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
                        log(f"round {rnd} {wname:7} {server:13} {fmt(val)} {unit}, server CPU "
                            f"{fmt(res.get('server_cpu_pct'), 0)}%, others "
                            f"{fmt(res.get('others_pct'), 0)}%")
                    else:
                        failures.append(f"round {rnd} {wname} {server}: {res.get('error')}")
                        log(f"round {rnd} {wname:7} {server:13} FAILED: {res.get('error')}")
        if args.profile:
            for wname in [w for w in ("echo16", "bulk") if w in args.workloads]:
                for server in ("netpoll-tap", "raw"):
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
                for server in ("netpoll-tap", "raw", "netpoll-veth"):
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
    log(f"wrote the {'buffers' if args.buffers else 'TAP'} section of {args.out} "
        f"({elapsed:.0f} s); raw results in {outdir / rawlog_name}")
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
