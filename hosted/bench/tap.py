#!/usr/bin/env python3
"""netpoll on smoltcp over TAP, measured against smoltcp alone and the kernel path (issue 3).

    sudo python3 hosted/bench/tap.py           # builds release, runs everything, updates BENCHMARKS.md

Three servers, each a fresh process per measurement, loaded by a kernel TCP client:

    raw           smoltcp alone on the TAP device: drivers/examples/raw_benchmark.rs, the pattern
                  of smoltcp's examples/benchmark.rs (one poll loop, no netpoll)
    netpoll-tap   netpoll on smoltcp on the TAP device: `netpoll echo --backend tap`, and
                  drivers/examples/tap_sink.rs for one-way bulk
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

(rx and tx have no kernel row: the one-way servers are drivers examples, and the kernel backend
lives in netpoll-hosted.)

Topology, all inside two network namespaces this script creates and always deletes:

    namespace C (client)                       namespace S (kernel server)
    kernel TCP 10.7.0.1 --TAP nptap0-- smoltcp 10.7.0.2 (the server process, in C)
    kernel TCP 10.8.0.1 --veth npvc/npvs----------------- kernel TCP 10.8.0.2

The kernel path needs the second namespace: two addresses of one namespace talk over the
loopback device, never over the veth between them. The TAP servers create the TAP device when
they start (it goes away with them), so its kernel side is configured for each run.

Reports medians with the per-round spread [min-max], the ratios netpoll-tap/raw and
netpoll-tap/netpoll-veth, server CPU, and writes (or replaces) the "## TAP (issue 3)" section of
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

Needs root (namespaces, TAP), iproute2, python3. Only the standard library; every child has a
timeout; only processes this script started are signalled; only its own namespaces deleted.
Exit status 1 if any measurement failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as suite  # noqa: E402  (hosted/bench/run.py: machine(), profile(), Server, cells)

REPO = Path(__file__).resolve().parents[2]

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

SECTION = "## TAP (issue 3)"
BUFFERS_SECTION = "## Userspace engine: socket buffer sizes vs bulk throughput"
TAP_NOTES_MARKER = ("<!-- hand-written notes below this line, up to the next level-2 heading, "
                    "are kept by hosted/bench/tap.py -->")


def log(msg: str) -> None:
    print(f"[tap-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return r


# ------------------------------------------------------------------------------------------
# Build


def build(no_build: bool) -> dict[str, Path]:
    meta = json.loads(sh(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         timeout=120).stdout)
    rel = Path(meta["target_directory"]) / "release"
    cmds = [
        ["cargo", "build", "--release", "-p", "netpoll-hosted", "--bin", "netpoll",
         "--bin", "netpoll-bench"],
        ["cargo", "build", "--release", "-p", "netpoll-drivers", "--features", "tap",
         "--example", "raw_benchmark", "--example", "tap_sink", "--example", "bulk_client"],
    ]
    if not no_build:
        for cmd in cmds:
            log("building: " + shlex.join(cmd))
            if subprocess.run(cmd, cwd=REPO, timeout=1800).returncode != 0:
                sys.exit("tap-bench: the release build failed")
    bins = dict(netpoll=rel / "netpoll", bench=rel / "netpoll-bench",
                raw=rel / "examples" / "raw_benchmark", sink=rel / "examples" / "tap_sink",
                bulk=rel / "examples" / "bulk_client")
    for p in bins.values():
        if not p.exists():
            sys.exit(f"tap-bench: {p} is missing (run without --no-build)")
    return bins


# ------------------------------------------------------------------------------------------
# Namespaces


class Netns:
    """The two namespaces of the run and the veth between them; delete() removes both."""

    def __init__(self, prefix: str = "nptapbench"):
        tag = f"{os.getpid()}-{int(time.time()) % 100000}"
        self.c, self.s = f"{prefix}-c-{tag}", f"{prefix}-s-{tag}"
        self.made: list[str] = []

    def create(self) -> None:
        for ns in (self.c, self.s):
            sh(["ip", "netns", "add", ns])
            self.made.append(ns)
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            # No IPv6 chatter (router solicitations, DAD) on the measured links.
            sh(["ip", "netns", "exec", ns, "sysctl", "-qw",
                "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
               check=False)
        sh(["ip", "-n", self.c, "link", "add", VETH_C, "type", "veth", "peer", "name", VETH_S,
            "netns", self.s])
        sh(["ip", "-n", self.c, "addr", "add", f"{VETH_C_ADDR}/24", "dev", VETH_C])
        sh(["ip", "-n", self.s, "addr", "add", f"{VETH_S_ADDR}/24", "dev", VETH_S])
        sh(["ip", "-n", self.c, "link", "set", VETH_C, "up"])
        sh(["ip", "-n", self.s, "link", "set", VETH_S, "up"])

    def configure_tap(self) -> None:
        """Gives the kernel side of the (freshly created) TAP device its address."""
        deadline = time.monotonic() + 5
        while sh(["ip", "-n", self.c, "link", "show", TAP], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"TAP device {TAP} did not appear in {self.c}")
            time.sleep(0.05)
        sh(["ip", "-n", self.c, "addr", "add", f"{TAP_KERNEL}/24", "dev", TAP])
        sh(["ip", "-n", self.c, "link", "set", TAP, "up"])

    def delete(self) -> None:
        for ns in reversed(self.made):
            r = sh(["ip", "netns", "delete", ns], check=False)
            if r.returncode != 0:
                log(f"could not delete namespace {ns}: {r.stderr.strip()}")
        self.made.clear()


# ------------------------------------------------------------------------------------------
# Servers


class Server(suite.Server):
    """A server process this script started, in a namespace; the only kind it signals.
    `ip netns exec` execs the command, so the pid is the server's own."""

    def cpu_s(self) -> float | None:
        """utime + stime of the server, in seconds."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        f = stat[stat.rfind(")") + 2:].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


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
            sys.exit(f"tap-bench: --buffers {item!r}: RX/TX in bytes, each 1024..16777216")
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


def busy_s() -> float:
    """CPU time all processes of the machine spent (user, nice, system), in seconds."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(f[1]) + int(f[2]) + int(f[3])) / os.sysconf("SC_CLK_TCK")


def ours_s() -> float:
    """CPU time of this script and its reaped children (the client, once it exited)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_client(cmd: list[str], timeout: float) -> dict:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"client timed out after {timeout:.0f}s")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        return dict(ok=False, error=f"client exit {r.returncode}: {r.stderr.strip()[-400:]}")
    res = json.loads(lines[-1])
    if r.returncode != 0:
        res["ok"] = False
        res["error"] = res.get("error") or r.stderr.strip()[-400:]
    return res


SYSCALL_NAMES = ["read", "write", "recvfrom", "sendto", "poll", "epoll_wait"]


def count_syscalls(pid: int, outfile: Path, run) -> tuple[dict, dict]:
    """perf stat of the server's syscalls during run(): (run's result, counts by name)."""
    cmd = ["perf", "stat", "-x,", "-o", str(outfile), "-e", "raw_syscalls:sys_enter"]
    for n in SYSCALL_NAMES:
        cmd += ["-e", f"syscalls:sys_enter_{n}"]
    tracer = subprocess.Popen([*cmd, "-p", str(pid)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    try:
        res = run()
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait(timeout=5)
    counts: dict[str, int] = {}
    text = outfile.read_text() if outfile.exists() else ""
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 3 or line.startswith("#") or not parts[0].isdigit():
            continue
        name = "total" if parts[2] == "raw_syscalls:sys_enter" else \
            parts[2].split(":")[-1].replace("sys_enter_", "")
        counts[name] = int(parts[0])
    return res, counts


# ------------------------------------------------------------------------------------------
# Report


# Medians and table cells exactly as the loopback report prints them.
med, fmt, cell = suite.med, suite.fmt, suite.cell


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
    """Replaces the generated part of the section `heading` (or appends the section), keeping
    the rest of the file and the notes below TAP_NOTES_MARKER. The file is read right before
    it is written, so that sections others added meanwhile are kept."""
    old = path.read_text() if path.exists() else ""
    if heading in old:
        start = old.index(heading)
        rest = old[start:]
        nxt = re.search(r"^## ", rest[len(heading):], re.M)
        end = start + len(heading) + nxt.start() if nxt else len(old)
        section = old[start:end]
        notes = section[section.index(TAP_NOTES_MARKER):] if TAP_NOTES_MARKER in section \
            else TAP_NOTES_MARKER + "\n"
        new = old[:start] + text + "\n" + notes.rstrip("\n") + "\n" + \
            ("\n" + old[end:] if end < len(old) else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n" + TAP_NOTES_MARKER + "\n"
    path.write_text(new)


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
      "(`netpoll echo --backend tap` for bulk echo, `drivers/examples/tap_sink.rs` for rx and "
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
      "smoltcp's `examples/benchmark.rs`: `drivers/examples/raw_benchmark.rs`) and against "
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
      "`drivers/examples/tap_sink.rs` (rx, tx, the diagnostic); the kernel server is "
      "`netpoll echo --workers 1` (epoll, one thread like the smoltcp servers)")
    w("- clients (in namespace C): `netpoll-bench --allow-netns` for echo and bulk echo "
      "(closed loop, 1 thread, every echoed byte verified), "
      "`drivers/examples/bulk_client.rs` for rx (the sink confirms the byte count) and tx "
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
    w("\n— : no kernel row. The one-way servers (rx, tx) are drivers examples and the kernel "
      "backend lives in netpoll-hosted; the diagnostic compares the two smoltcp servers only.\n")
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--pin", choices=["auto", "split", "same", "none"], default="auto")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--attempts", type=int, default=4)
    ap.add_argument("--max-others", type=float, default=20.0)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--servers", default=",".join(ALL))
    ap.add_argument("--buffers", default="")
    ap.add_argument("--ns-prefix", default=os.environ.get("TAPBENCH_NS_PREFIX", "nptapbench"))
    argv = sys.argv[1:]
    args = ap.parse_args()
    args.argv = argv
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for wname in args.workloads:
        if wname not in WORKLOADS:
            sys.exit(f"tap-bench: unknown workload {wname!r} (known: {', '.join(WORKLOADS)})")
    chosen = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not chosen or any(s not in SERVERS for s in chosen):
        sys.exit(f"tap-bench: --servers: some of {', '.join(ALL)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}", args.ns_prefix):
        sys.exit("tap-bench: --ns-prefix: up to 31 letters, digits, '_', '.', '-'")
    args.buffers = parse_buffers(args.buffers)
    if args.profile and (args.buffers or sorted(chosen) != sorted(ALL)):
        sys.exit("tap-bench: --profile needs every server and no --buffers")
    if args.buffers:
        if "netpoll-tap" not in chosen:
            sys.exit("tap-bench: --buffers needs netpoll-tap among --servers")
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
            sys.exit(f"tap-bench: workload {wname} runs none of --servers {args.servers}")
        wl["servers"] = expanded
    if not (1 <= args.rounds <= 20 and 0.5 <= args.duration <= 60 and 0 <= args.warmup < 10
            and 1 <= args.attempts <= 10 and args.max_others > 0):
        sys.exit("tap-bench: --rounds 1..20, --duration 0.5..60, --warmup 0..10, "
                 "--attempts 1..10, --max-others > 0")
    if os.geteuid() != 0:
        sys.exit("tap-bench: needs root (network namespaces and a TAP device)")
    os.chdir(REPO)

    # SIGTERM ends the run through the finally blocks, like Ctrl-C.
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    bins = build(args.no_build)
    outdir = REPO / "target" / "bench"
    outdir.mkdir(parents=True, exist_ok=True)
    rawlog_name = "tap-buffers-results.jsonl" if args.buffers else "tap-results.jsonl"
    rawlog = open(outdir / rawlog_name, "w")
    mach = suite.machine()
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load0 = suite.loadavg()
    t0 = time.monotonic()
    results: list[dict] = []
    failures: list[str] = []
    profiles: dict[str, str] = {}
    syscalls: dict[str, dict] = {}
    ns = Netns(args.ns_prefix)
    servers: list[Server] = []
    repeats = 0

    def measure(round_no: int, wname: str, server: str, wrap=None) -> dict:
        wl = WORKLOADS[wname]
        label = f"{wname}/{server}/r{round_no}"
        srv = None
        try:
            srv = Server(server, server_cmd(server, wl, bins, ns, pin_of(args, wl)))
            servers.append(srv)
            if server != "netpoll-veth":
                ns.configure_tap()
            cmd = client_cmd(server, wl, bins, ns, args, srv.pid, label, pin_of(args, wl))
            timeout = args.duration + args.warmup + 40
            cpu0, w0, busy0, ours0 = srv.cpu_s(), time.monotonic(), busy_s(), ours_s()
            res = wrap(srv.pid, lambda: run_client(cmd, timeout)) if wrap else \
                run_client(cmd, timeout)
            cpu1, w1, busy1, ours1 = srv.cpu_s(), time.monotonic(), busy_s(), ours_s()
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
        res.update(round=round_no, workload=wname, server=server, load=suite.loadavg())
        return res

    try:
        ns.create()
        kset = kernel_settings(ns)
        for rnd in range(1, args.rounds + 1):
            for wname in args.workloads:
                order = WORKLOADS[wname]["servers"]
                k = (rnd - 1) % len(order)
                for server in order[k:] + order[:k]:
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
                        res, text = suite.profile(pid, outfile, run)
                        holder["text"] = text
                        return res

                    log(f"profiling {server} during {wname}")
                    measure(0, wname, server, wrap=wrap)
                    profiles[f"{wname}: {SERVERS[server]}"] = holder.get("text", "(no profile)")
            if "echo16" in args.workloads and suite.have_perf_tracepoints():
                for server in ("netpoll-tap", "raw", "netpoll-veth"):
                    outfile = outdir / f"tap-syscalls-{server}.txt"
                    holder = {}

                    def count(pid, run, outfile=outfile, holder=holder):
                        res, holder["counts"] = count_syscalls(pid, outfile, run)
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
        text = report_buffers(args, mach, results, started, load0, suite.loadavg(), elapsed,
                              failures, repeats)
        write_section(Path(args.out), text, BUFFERS_SECTION)
    else:
        text = report(args, mach, results, profiles, syscalls, started, load0,
                      suite.loadavg(), elapsed, kset, failures, repeats)
        write_section(Path(args.out), text)
    log(f"wrote the {'buffers' if args.buffers else 'TAP'} section of {args.out} "
        f"({elapsed:.0f} s); raw results in {outdir / rawlog_name}")
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
