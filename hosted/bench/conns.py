#!/usr/bin/env python3
"""Userspace engine: 128-byte echo latency while N idle connections are held (TAP, smoltcp).

    sudo python3 hosted/bench/conns.py             # full run, writes its section of BENCHMARKS.md
    sudo python3 hosted/bench/conns.py --quick     # smoke run (N = 100 and 2,000), prints only

What one measurement does, in a network namespace of its own (`npbench-<pid>-<k>`, created for
the measurement and always deleted after it):

 1. starts `netpoll echo --backend tap` (smoltcp at 10.9.0.2/24 on TAP device nptap0, listening
    on 10.9.0.2:9009; it reports `listening <ip:port>` on stdout); the kernel side of the TAP link gets 10.9.0.1/24 (the probe) and
    10.9.0.3.. (the holders' source addresses, one per holder process);
 2. opens N connections from ceil(N / 12,500) holder processes (this file run as `_hold`, each
    with a raised RLIMIT_NOFILE, its own source address, at most 32 handshakes in flight), then
    checks that the server serves every one of them: each connection echoes one byte, in
    batches. The connections then stay idle;
 3. samples the server: VmRSS before the first connect, after the connects, after the one-byte
    echoes (the "idle" value used for bytes per connection) and at the end; its CPU use over an
    idle interval with the N connections held;
 4. from one more connection (this file run as `_probe`, source 10.9.0.1, TCP_NODELAY) sends
    128 bytes and reads the 128 bytes back, --rtts times after a warm-up, every byte checked,
    and reports p50/p99 of those round trips;
 5. closes the holders' connections (RST, SO_LINGER 0), stops the server (SIGTERM, then SIGKILL
    after 10 s) and deletes the namespace.

Measurements are interleaved: for each round, every N of --counts in turn (100, 50,000, 100,
50,000, ...), so a slow phase of the shared machine hits both sides; the report gives medians
over rounds and the per-round values. Bytes per idle connection = (median idle RSS at the largest
N - median idle RSS at the smallest N) / (difference of the N). The server uses its default
socket buffers unless --server-args passes others (e.g. "--rx-buf 4096 --tx-buf 4096" once the
CLI has such flags); the report names what was used.

Options: --counts 100,50000  --rounds 3  --rtts 2000  --warmup 200  --idle-secs 2
--server-args FLAGS (repeatable: several server configurations, interleaved) --pin same|split|none (same: server and probe on CPU 0, as tap.py's echo1: a ping-pong across
two vCPUs measures idle-vCPU wake-up rather than the server), --max-rss-mb 12000 (a measurement
whose server grows past this is stopped and reported as not fitting), --bin PATH (use this
server binary, no build), --no-build, --clean-build (build the committed tree, `git archive
HEAD`, in a temporary directory, so uncommitted changes of the checkout are not measured),
--out PATH, --no-write, --quick (1 round, N = 100 and 2,000, 300 round trips, no write unless
--out is given).

Needs root (namespaces, TAP), iproute2, python3 (standard library only, and benchlib.py). Every loop is bounded
in count and time, every child has a deadline and dies with this script (PR_SET_PDEATHSIG), only
processes this script started are signalled, only its own namespaces are deleted; all traffic
stays inside the namespace. Raw JSON lines and server logs go to <target>/bench/conns-*.
Exit status 1 if any measurement failed.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import selectors
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl
from benchlib import REPO, die, emit, log, med, sh
from benchlib import num as fmt

SELF = Path(__file__).resolve()

TAP = "nptap0"
SMOL = "10.9.0.2"
PROBE_SRC = "10.9.0.1"
HOLD_NET = "10.9.0."  # holder i uses 10.9.0.(3 + i)
PORT = 9009
PER_HOLDER = 12_500  # connections per holder process (the fd hard limit here is 20,000)
MAX_HOLDERS = 8
NS_PREFIX = "npbench-"
SIZE = 128

SECTION = "## Userspace engine: echo latency vs connections held"
NOTES_MARKER = ("<!-- hand-written notes below this line, up to the next level-2 heading, "
                "are kept by hosted/bench/conns.py -->")

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


# ------------------------------------------------------------------------------------------
# Child roles: run inside the namespace by `ip netns exec ... python3 conns.py _hold|_probe`.


def role_hold(argv: list[str]) -> int:
    """Opens --n connections from --src to --dst:PORT, echoes one byte on each, reports, then
    holds them until stdin closes (or --lifetime passes) and closes them with RST."""
    ap = argparse.ArgumentParser(prog="conns.py _hold")
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--connect-timeout", type=float, default=300)
    ap.add_argument("--verify-batch", type=int, default=256)
    ap.add_argument("--verify-timeout", type=float, default=120)
    ap.add_argument("--lifetime", type=float, default=1800)
    a = ap.parse_args(argv)
    bl.init("conns.py _hold")
    bl.raise_nofile(a.n + 64)
    t0 = time.monotonic()
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    errors: dict[str, int] = {}
    started = inflight = 0
    deadline = t0 + a.connect_timeout
    # Phase 1: connect, at most `window` handshakes in flight (the server's accept pool is 128).
    while (started < a.n or inflight) and time.monotonic() < deadline:
        while started < a.n and inflight < a.window:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((a.src, 0))
            rc = s.connect_ex((a.dst, PORT))
            started += 1
            if rc not in (0, errno.EINPROGRESS):
                errors[errno.errorcode.get(rc, str(rc))] = errors.get(
                    errno.errorcode.get(rc, str(rc)), 0) + 1
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE)
            inflight += 1
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            sel.unregister(s)
            inflight -= 1
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                name = errno.errorcode.get(err, str(err))
                errors[name] = errors.get(name, 0) + 1
                s.close()
            else:
                socks.append(s)
    for key in list(sel.get_map().values()):  # handshakes still pending at the deadline
        sel.unregister(key.fileobj)
        key.fileobj.close()
        errors["connect-timeout"] = errors.get("connect-timeout", 0) + 1
    t_conn = time.monotonic() - t0
    emit(dict(phase="connected", connected=len(socks), errors=errors, secs=round(t_conn, 3)))

    # Phase 2: every connection echoes one byte (in batches: a burst of 50,000 frames would
    # overflow the TAP device's queue and measure retransmission timers instead).
    verified = 0
    bad = 0
    kinds: dict[str, int] = {}

    def fail(kind: str) -> None:
        kinds[kind] = kinds.get(kind, 0) + 1

    t1 = time.monotonic()
    vdeadline = t1 + a.verify_timeout
    for i in range(0, len(socks), a.verify_batch):
        batch = socks[i:i + a.verify_batch]
        for s in batch:
            try:
                s.send(b"x")
                sel.register(s, selectors.EVENT_READ)
            except OSError as e:
                bad += 1
                fail("send: " + errno.errorcode.get(e.errno or 0, str(e)))
        pending = len(sel.get_map())
        while pending and time.monotonic() < vdeadline:
            for key, _ in sel.select(timeout=0.2):
                s = key.fileobj
                sel.unregister(s)
                pending -= 1
                try:
                    got = s.recv(16)
                except OSError as e:
                    got = None
                    fail("recv: " + errno.errorcode.get(e.errno or 0, str(e)))
                if got == b"x":
                    verified += 1
                else:
                    bad += 1
                    if got is not None:
                        fail("recv: end of stream" if not got else "recv: wrong bytes")
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj)
            bad += 1
            fail("no echo before the deadline")
        if time.monotonic() >= vdeadline:
            break
    emit(dict(phase="verified", verified=verified, bad=bad, bad_kinds=kinds,
              secs=round(time.monotonic() - t1, 3)))

    # Phase 3: hold until the parent closes stdin (or the lifetime runs out), then RST all.
    end = time.monotonic() + a.lifetime
    while time.monotonic() < end:
        r = selectors.DefaultSelector()
        r.register(sys.stdin, selectors.EVENT_READ)
        if r.select(timeout=min(5.0, max(0.0, end - time.monotonic()))):
            if not sys.stdin.readline():
                break
        r.close()
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.close()
    return 0


def role_probe(argv: list[str]) -> int:
    """One connection from --src: --warmup then --count round trips of SIZE bytes."""
    ap = argparse.ArgumentParser(prog="conns.py _probe")
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args(argv)
    deadline = time.monotonic() + a.timeout
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((a.src, 0))
    s.connect((a.dst, PORT))
    buf = bytearray(SIZE)
    view = memoryview(buf)
    samples: list[int] = []
    err = None
    for i in range(a.warmup + a.count):
        if time.monotonic() > deadline:
            err = f"deadline after {i} round trips"
            break
        msg = bytes([(i + j) & 0xFF for j in range(0, SIZE)]) if i < 256 else \
            (i & 0xFFFF).to_bytes(2, "little") * (SIZE // 2)
        t = time.perf_counter_ns()
        s.sendall(msg)
        got = 0
        while got < SIZE:
            n = s.recv_into(view[got:], SIZE - got)
            if n == 0:
                err = f"server closed the probe connection after {i} round trips"
                break
            got += n
        dt_ns = time.perf_counter_ns() - t
        if err:
            break
        if bytes(buf) != msg:
            err = f"echo mismatch at round trip {i}"
            break
        if i >= a.warmup:
            samples.append(dt_ns)
    s.close()
    v = sorted(x / 1000 for x in samples)
    emit(dict(ok=err is None and len(v) == a.count, error=err, n=len(v),
              p50_us=bl.pct(v, 50), p90_us=bl.pct(v, 90), p99_us=bl.pct(v, 99), max_us=v[-1] if v else None,
              mean_us=statistics.fmean(v) if v else None))
    return 0


# ------------------------------------------------------------------------------------------
# Build


def build(args) -> tuple[Path, str]:
    """Returns (server binary, a description of the tree it was built from)."""
    if not args.clean_build:
        return bl.netpoll_binary(args)
    commit = bl.git("rev-parse", "--short", "HEAD")
    tdir = bl.target_dir()
    src = Path(tempfile.mkdtemp(prefix="npbench-src-"))
    try:
        arch = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True,
                              timeout=120, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=arch, check=True, timeout=120)
        log(f"building the committed tree ({commit}) in {src}")
        bl.build(["netpoll"], cwd=src, env=dict(os.environ, CARGO_TARGET_DIR=str(tdir)))
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(src)], timeout=120)
    out = tdir / "bench" / f"netpoll-{commit}"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", str(tdir / "release" / "netpoll"), str(out)], check=True)
    return out, f"commit {commit}, committed tree only (`git archive HEAD`)"


# ------------------------------------------------------------------------------------------
# One measurement


class Measurement:
    def __init__(self, args, binary: Path, n: int, label: str, k: int, logdir: Path,
                 server_args: str = ""):
        self.args, self.binary, self.n, self.label = args, binary, n, label
        self.server_args = server_args
        self.ns = f"{NS_PREFIX}{os.getpid()}-{k}"
        self.logdir = logdir
        self.ns_made = False
        self.server: bl.Server | None = None
        self.holders: list[bl.Child] = []
        self.res: dict = dict(label=label, n=n, ok=False, config=server_args)

    # -- namespace
    def make_ns(self) -> None:
        self.ns_made = True
        bl.make_netns(self.ns, port_range=True)

    def configure_tap(self, holders: int) -> None:
        bl.wait_for_link(self.ns, TAP, 10, self.server)
        sh(["ip", "-n", self.ns, "addr", "add", f"{PROBE_SRC}/24", "dev", TAP])
        for i in range(holders):
            sh(["ip", "-n", self.ns, "addr", "add", f"{HOLD_NET}{3 + i}/24", "dev", TAP])
        sh(["ip", "-n", self.ns, "link", "set", TAP, "up"])

    def counters(self) -> dict:
        """Kernel TCP counters of the namespace (the client side) and the TAP device's drops."""
        c = bl.nstat(self.ns, ("TcpEstabResets", "TcpOutRsts", "TcpInErrs", "TcpRetransSegs",
                               "TcpAttemptFails", "TcpExtTCPSynRetrans", "TcpExtTCPAbortOnData",
                               "TcpExtTCPAbortOnClose"))
        st = bl.link_stats(self.ns, TAP)
        if "error" in st:
            c["error"] = st["error"]
        else:
            c["tap_tx_dropped"], c["tap_rx_dropped"] = st["tx_dropped"], st["rx_dropped"]
        return c

    def evidence(self, why: str) -> None:
        """What the namespace and the server look like when something went wrong."""
        ev = dict(why=why)
        for name, cmd in [("ss_s", ["ip", "netns", "exec", self.ns, "ss", "-s"]),
                          ("ip_s_link", ["ip", "-n", self.ns, "-s", "link", "show", TAP])]:
            try:
                ev[name] = sh(cmd, check=False, timeout=20).stdout[-2000:]
            except (subprocess.TimeoutExpired, OSError) as e:
                ev[name] = str(e)
        if self.server:
            ev["server_alive"] = self.server.proc.poll() is None
            ev["server_stderr"] = self.server.stderr_text()[-3000:]
            if self.server.proc.poll() is None:
                ev["server_cpu_s"] = bl.cpu_s(self.server.pid)
                ev["server_stack"] = bl.gdb_backtrace(self.server.pid)
        self.res.setdefault("evidence", []).append(ev)
        log(f"{self.label}: evidence saved ({why})")

    def run(self) -> dict:
        a = self.args
        nholders = -(-self.n // PER_HOLDER)
        if nholders > MAX_HOLDERS:
            raise RuntimeError(f"N={self.n} needs more than {MAX_HOLDERS} holder processes")
        t0 = time.monotonic()
        try:
            self.make_ns()
            srv_cmd = ["ip", "netns", "exec", self.ns, str(self.binary), "echo", "--backend",
                       "tap", "--tap", TAP, "--addr", f"{SMOL}/24", "--listen",
                       f"{SMOL}:{PORT}", "--quiet", *shlex.split(self.server_args)]
            self.res["server_cmd"] = shlex.join(["netpoll", *srv_cmd[5:]])
            self.server = bl.Server("netpoll echo", srv_cmd,
                                    errpath=self.logdir / f"conns-server-{self.label}.log",
                                    cpu=0 if a.pin in ("same", "split") else None)
            self.configure_tap(nholders)
            pid = self.server.pid
            self.res["rss_start_kib"] = bl.rss_kib(pid)

            # Holders: connect, verify, hold.
            per = [self.n // nholders + (1 if i < self.n % nholders else 0)
                   for i in range(nholders)]
            connect_timeout = 60 + self.n / 100
            for i, cnt in enumerate(per):
                cmd = ["ip", "netns", "exec", self.ns, sys.executable, str(SELF), "_hold",
                       "--src", f"{HOLD_NET}{3 + i}", "--dst", SMOL, "--n", str(cnt),
                       "--connect-timeout", str(connect_timeout),
                       "--lifetime", str(a.hold_lifetime)]
                self.holders.append(bl.Child(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            connected, errors, peak = 0, {}, 0
            deadline = time.monotonic() + connect_timeout + 30
            pending = {h: None for h in self.holders}
            while pending and time.monotonic() < deadline:
                for h in list(pending):
                    msg = h.next(min(deadline - time.monotonic(), 0.5))
                    if msg is None and h.proc.poll() is None:
                        continue
                    pending.pop(h)
                    if msg is None:
                        raise RuntimeError("holder exited: " + h.stderr_text()[-400:])
                    connected += msg["connected"]
                    for k, v in msg["errors"].items():
                        errors[k] = errors.get(k, 0) + v
                    self.res["connect_s"] = max(self.res.get("connect_s", 0), msg["secs"])
                r = bl.rss_kib(pid) or 0
                peak = max(peak, r)
                if r > a.max_rss_mb * 1024:
                    self.res["did_not_fit"] = True
                    raise RuntimeError(f"server RSS {r // 1024} MiB passed --max-rss-mb "
                                       f"{a.max_rss_mb} while connecting")
                if self.server.proc.poll() is not None:
                    raise RuntimeError("server exited while connecting")
            if pending:
                raise RuntimeError(f"connecting {self.n} took longer than "
                                   f"{connect_timeout + 30:.0f} s")
            self.res.update(connected=connected, connect_errors=errors,
                            rss_connected_kib=bl.rss_kib(pid))
            verified, bad, bad_kinds = 0, 0, {}
            vdeadline = time.monotonic() + 180
            for h in self.holders:
                msg = h.next(vdeadline - time.monotonic())
                if msg is None:
                    raise RuntimeError("holder did not report its one-byte echoes: "
                                       + h.stderr_text()[-400:])
                verified += msg["verified"]
                bad += msg["bad"]
                for kk, v in msg.get("bad_kinds", {}).items():
                    bad_kinds[kk] = bad_kinds.get(kk, 0) + v
                self.res["verify_s"] = max(self.res.get("verify_s", 0), msg["secs"])
            self.res.update(verified=verified, verify_bad=bad, verify_bad_kinds=bad_kinds)
            self.res["lost"] = self.n - verified
            if connected < self.n or verified < self.n:
                self.evidence(f"only {connected} of {self.n} connected, {verified} echoed "
                              f"one byte ({bad_kinds})")
                # A handful lost out of tens of thousands is a finding, not a reason to skip
                # the latency measurement; more than 0.1% is.
                if verified < self.n * 0.999:
                    raise RuntimeError(f"only {connected} of {self.n} connections opened "
                                       f"({errors}), {verified} echoed one byte ({bad_kinds})")
                log(f"{self.label}: {self.n - verified} connection(s) lost ({bad_kinds}); "
                    f"measuring with {verified} held")
            self.res["counters_held"] = self.counters()
            log(f"{self.label}: {verified} connections held (connect {self.res['connect_s']:.1f} s, "
                f"one-byte echoes {self.res['verify_s']:.1f} s)")

            # Idle: RSS and the server's CPU with N connections held and nothing to do.
            time.sleep(0.5)
            c0, w0 = bl.cpu_s(pid), time.monotonic()
            time.sleep(a.idle_secs)
            c1, w1 = bl.cpu_s(pid), time.monotonic()
            self.res["rss_idle_kib"] = bl.rss_kib(pid)
            if c0 is not None and c1 is not None:
                self.res["idle_cpu_pct"] = 100 * (c1 - c0) / (w1 - w0)
            if self.res.get("idle_cpu_pct", 0) > 50:
                self.evidence(f"server busy while idle: {self.res['idle_cpu_pct']:.0f}% CPU")

            # The probe.
            probe_cmd = ["ip", "netns", "exec", self.ns, sys.executable, str(SELF), "_probe",
                         "--src", PROBE_SRC, "--dst", SMOL, "--count", str(a.rtts),
                         "--warmup", str(a.warmup), "--timeout", str(60 + a.rtts * 0.1)]
            c0, w0, b0 = bl.cpu_s(pid), time.monotonic(), bl.busy_s()
            probe = bl.Child(probe_cmd, stdout=subprocess.PIPE,
                             cpu=0 if a.pin == "same" else (1 if a.pin == "split" else None))
            try:
                out = probe.next(90 + a.rtts * 0.1)
                perr = probe.stderr_text()
            finally:
                probe.stop()
            c1, w1, b1 = bl.cpu_s(pid), time.monotonic(), bl.busy_s()
            if out is None:
                self.evidence("probe gave no result")
                raise RuntimeError("probe gave no result: " + perr[-400:])
            self.res["probe"] = out
            if c0 is not None and c1 is not None:
                wall = max(w1 - w0, 1e-9)
                self.res["probe_server_cpu_pct"] = 100 * (c1 - c0) / wall
                # Everything busy on the machine meanwhile, as % of one core (the probe, the
                # server, and other engineers' builds).
                self.res["machine_busy_pct"] = 100 * (b1 - b0) / wall
            self.res["rss_end_kib"] = bl.rss_kib(pid)
            self.res["rss_peak_kib"] = peak
            if not out.get("ok"):
                self.evidence(f"probe failed: {out.get('error')}")
                raise RuntimeError(f"probe: {out.get('error')}")
            if self.server.proc.poll() is not None:
                raise RuntimeError("server exited during the probe")
            self.res["ok"] = True
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as e:
            self.res["error"] = str(e)
            if self.server is not None and self.ns_made and "evidence" not in self.res:
                self.evidence(str(e))
            if self.ns_made and "counters_held" not in self.res:
                self.res["counters_held"] = self.counters()
        finally:
            self.cleanup()
            self.res["secs"] = round(time.monotonic() - t0, 1)
        return self.res

    def cleanup(self) -> None:
        for h in self.holders:  # closing stdin makes a holder reset its connections and exit
            try:
                h.proc.stdin.close()
            except OSError:
                pass
        for h in self.holders:
            try:
                h.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            h.stop()
        self.holders.clear()
        if self.server is not None:
            self.res["server_exit"] = self.server.proc.poll()
            self.server.stop()
            self.res["server_exit_after_stop"] = self.server.proc.returncode
            try:
                tail = (self.logdir / f"conns-server-{self.label}.log").read_text()
                self.res["server_summary"] = [l for l in tail.splitlines()
                                              if "served" in l or "closed" in l][-3:]
            except OSError:
                pass
            self.server = None
        if self.ns_made:
            bl.delete_netns(self.ns)
            self.ns_made = False


# ------------------------------------------------------------------------------------------
# Report


def buffers(help_text: str, server_args: str) -> str:
    """The socket buffers and backlog the server ran with, from its --help and our flags."""
    vals = {}
    for flag, fallback in (("--rx-buf", "65536"), ("--tx-buf", "65536"), ("--backlog", "128")):
        # "[default: 8192]" or "[default: netpoll_drivers::Config's, 8192]"
        m = re.search(re.escape(flag) + r"\s[^\[]*?\[default: [^\]]*?(\d+)\]", help_text, re.S)
        vals[flag] = (m.group(1) if m else (fallback if flag not in help_text else "?")) + " B"
    given = shlex.split(server_args)
    for i, tok in enumerate(given[:-1]):
        if tok in vals:
            vals[tok] = given[i + 1] + " B (given)"
    return (f"receive buffer {vals['--rx-buf']}, send buffer {vals['--tx-buf']} per smoltcp "
            f"socket, backlog (accept pool) {vals['--backlog'][:-2]}"
            + ("" if "--rx-buf" in help_text else
               "; this `netpoll echo` has no flags to change them"))


def config_name(server_args: str) -> str:
    return f"`{server_args}`" if server_args.strip() else "defaults"


def report(args, results: list[dict], tree: str, started: str, load0, load1, elapsed: float,
           mach: str, help_text: str) -> str:
    out: list[str] = []
    w = out.append
    counts = args.counts
    lo, hi = min(counts), max(counts)
    w(SECTION + "\n")
    w("Generated by `hosted/bench/conns.py`. The netpoll echo server on smoltcp over a real TAP "
      "device, in a network namespace the script creates per measurement; N idle connections "
      "held open by kernel TCP clients in the same namespace; one more connection measures the "
      "128-byte echo round trip.\n")
    w("### Command\n")
    w("```sh\nsudo python3 hosted/bench/conns.py " + shlex.join(args.argv) + "\n```\n")
    w(f"- measured: {tree}; started {started} UTC, took {elapsed:.0f} s; load average at start "
      f"{load0}, at end {load1}")
    w(f"- machine: {mach}; shared with other engineers' builds during the run")
    srv = results[0].get("server_cmd", "") if results else ""
    w(f"- server: `{srv}`, plus the flags of each configuration below:")
    for cfg in args.configs:
        w(f"  - {config_name(cfg)}: {buffers(help_text, cfg)}")
    w(f"- held connections: from ceil(N / {PER_HOLDER:,}) Python processes, each with its own "
      f"source address (10.9.0.3, .4, ...), at most 32 handshakes in flight each; every one "
      f"echoes one byte before the measurement, then stays idle")
    pin = {"same": "server and probe on CPU 0", "split": "server on CPU 0, probe on CPU 1",
           "none": "not pinned"}[args.pin]
    w(f"- probe: one connection (TCP_NODELAY), {args.warmup} warm-up round trips, then "
      f"{args.rtts:,} measured, each 128 B sent and 128 B read back and checked, timed in the "
      f"Python client (its own overhead, a few µs, is included on both sides); {pin}")
    w(f"- rounds: {args.rounds}, interleaved (every configuration and N in turn: "
      f"{', '.join(f'{n:,}' for n in counts)}, then again); table values are medians over "
      f"the rounds; a fresh server and namespace per measurement\n")
    w("### Results\n")
    w("| server configuration | connections held | echo p50 µs | echo p99 µs | "
      "server RSS idle KiB | server CPU idle | runs ok |")
    w("|---|---|---|---|---|---|---|")
    summary: list[str] = []
    for cfg in args.configs:
        rs = [r for r in results if r.get("config", "") == cfg]
        by = {n: [r for r in rs if r["n"] == n and r.get("ok")] for n in counts}
        p50 = {n: med([r["probe"]["p50_us"] for r in by[n]]) for n in counts}
        p99 = {n: med([r["probe"]["p99_us"] for r in by[n]]) for n in counts}
        idle = {n: med([r.get("rss_idle_kib") for r in by[n]]) for n in counts}
        conn = {n: med([r.get("rss_connected_kib") for r in by[n]]) for n in counts}
        for n in counts:
            icpu = med([r.get("idle_cpu_pct") for r in by[n]])
            lost = sum(r.get("lost") or 0 for r in by[n])
            w(f"| {config_name(cfg)} | {n:,} | {fmt(p50[n], 1)} | {fmt(p99[n], 1)} | "
              f"{fmt(idle[n])} | {fmt(icpu, 1)}% | "
              f"{len(by[n])}/{sum(1 for r in rs if r['n'] == n)}"
              + (f" ({lost} conns lost in all)" if lost else "") + " |")
        s_ = [f"- {config_name(cfg)}:"]
        if p50[lo] and p50[hi]:
            ratios = []
            for rnd in sorted({r["round"] for r in rs}):
                a_ = [r for r in by[lo] if r["round"] == rnd]
                b_ = [r for r in by[hi] if r["round"] == rnd]
                if a_ and b_:
                    ratios.append(b_[0]["probe"]["p50_us"] / a_[0]["probe"]["p50_us"])
            rng = f" (per round: {', '.join(f'{x:.2f}' for x in ratios)})" if ratios else ""
            ratio = p50[hi] / p50[lo]
            s_.append(f"**p50 at {hi:,} / p50 at {lo:,}: {ratio:.2f}×**{rng}, target ≤ 1.5× "
                      f"{'met' if ratio <= 1.5 else 'NOT met'}; p99 ratio "
                      f"{p99[hi] / p99[lo]:.2f}×;")
        if idle[lo] and idle[hi]:
            per = (idle[hi] - idle[lo]) * 1024 / (hi - lo)
            s_.append(f"**bytes per idle connection {per:,.0f} B**")
            if conn[lo] and conn[hi]:
                per0 = (conn[hi] - conn[lo]) * 1024 / (hi - lo)
                s_.append(f"({per0:,.0f} B right after the handshakes, before the one-byte "
                          f"echo)")
        summary.append(" ".join(s_))
    w("")
    w(f"Bytes per idle connection = (median server VmRSS at N = {hi:,} − at N = {lo:,}) / "
      f"{hi - lo:,}, measured after every connection echoed one byte and the server sat idle "
      f"for {args.idle_secs:g} s (user-space memory of the server process only: smoltcp's "
      f"socket buffers live there; the kernel client sockets are not counted).\n")
    for line in summary:
        w(line)
    w("")
    w("<details><summary>Every run</summary>\n")
    w("| round | configuration | N | ok | p50 µs | p99 µs | max µs | RSS start KiB | "
      "RSS connected KiB | RSS idle KiB | RSS end KiB | idle CPU % | "
      "CPU during probe: server % / machine % | connect s | lost | TAP tx drops | "
      "client EstabResets | error |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        pr = r.get("probe") or {}
        w(f"| {r['round']} | {config_name(r.get('config', ''))} | {r['n']:,} | "
          f"{'yes' if r.get('ok') else 'no'} | "
          f"{fmt(pr.get('p50_us'), 1)} | {fmt(pr.get('p99_us'), 1)} | {fmt(pr.get('max_us'))} | "
          f"{fmt(r.get('rss_start_kib'))} | {fmt(r.get('rss_connected_kib'))} | "
          f"{fmt(r.get('rss_idle_kib'))} | {fmt(r.get('rss_end_kib'))} | "
          f"{fmt(r.get('idle_cpu_pct'), 1)} | {fmt(r.get('probe_server_cpu_pct'))} / "
          f"{fmt(r.get('machine_busy_pct'))} | {fmt(r.get('connect_s'), 1)} | "
          f"{fmt(r.get('lost'))} | {fmt(ctr(r, 'tap_tx_dropped'))} | "
          f"{fmt(ctr(r, 'TcpEstabResets'))} | {(r.get('error') or '')[:100]} |")
    w("\n</details>\n")
    w("lost: connections whose handshake completed on the client but that did not echo their "
      "one byte (the measurement goes on if at most 0.1% are lost); TAP tx drops: frames the "
      "kernel could not queue to the TAP device (the server did not read them in time); "
      "client EstabResets: kernel client connections reset while established, up to the "
      "start of the idle phase.\n")
    return "\n".join(out)


def ctr(r: dict, key: str):
    return (r.get("counters_held") or {}).get(key)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_hold":
        return role_hold(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_probe":
        return role_probe(sys.argv[2:])
    bl.init("conns-bench")
    ap = bl.parser(__doc__, rounds=None, warmup=200, out=None, no_build=True, bin=True,
                   no_write=True, quick=True)
    ap.add_argument("--counts", default=None)
    ap.add_argument("--rtts", type=int, default=None)
    ap.add_argument("--idle-secs", type=float, default=2.0)
    ap.add_argument("--pin", choices=["same", "split", "none"], default="same")
    ap.add_argument("--server-args", action="append", default=None,
                    help='extra `netpoll echo` flags, e.g. "--rx-buf 4096 --tx-buf 4096"; '
                         'repeat for several configurations (interleaved); "" = defaults')
    ap.add_argument("--max-rss-mb", type=int, default=12000)
    ap.add_argument("--hold-lifetime", type=float, default=1800)
    ap.add_argument("--clean-build", action="store_true")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    args.configs = args.server_args if args.server_args is not None else [""]
    if args.quick:
        args.counts = args.counts or "100,2000"
        args.rounds = args.rounds or 1
        args.rtts = args.rtts or 300
    args.counts = [int(x.replace("_", "")) for x in (args.counts or "100,50000").split(",")]
    args.rounds = args.rounds or 3
    args.rtts = args.rtts or 2000
    if not (1 <= args.rounds <= 20 and 10 <= args.rtts <= 100_000 and 0 <= args.warmup <= 10_000
            and 0.1 <= args.idle_secs <= 60 and len(args.counts) >= 2
            and all(1 <= n <= PER_HOLDER * MAX_HOLDERS for n in args.counts)):
        die(f"--rounds 1..20, --rtts 10..100000, --warmup 0..10000, --idle-secs 0.1..60, "
            f"--counts: at least two, each 1..{PER_HOLDER * MAX_HOLDERS}")
    bl.require_root("network namespaces and a TAP device")
    write = not args.no_write and (args.out or not args.quick)
    out_path = Path(args.out) if args.out else REPO / "BENCHMARKS.md"
    os.chdir(REPO)

    bl.interrupt_on_signals()
    bl.remove_stale_namespaces(NS_PREFIX)
    binary, tree = build(args)
    help_text = subprocess.run([str(binary), "echo", "--help"], capture_output=True, text=True,
                               timeout=10).stdout
    for flag in shlex.split(" ".join(args.configs)):
        if flag.startswith("--") and flag not in help_text:
            die(f"this netpoll echo has no {flag} flag (see `netpoll echo --help`)")
    logdir = bl.target_dir() / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    rawlog = open(logdir / "conns-results.jsonl", "w")
    started = bl.utc_now()
    load0 = bl.loadavg()
    mach = bl.machine_text()
    log(f"server binary {binary} ({tree}); MemAvailable {bl.mem_available_mib()} MiB")
    t0 = time.monotonic()
    results: list[dict] = []
    k = 0
    try:
        plan = [(c, n) for c in enumerate(args.configs) for n in args.counts]
        for rnd, ((ci, cfg), n) in bl.rounds(args.rounds, plan):
            k += 1
            label = f"r{rnd}-c{ci}-n{n}"
            log(f"{label}: starting ({config_name(cfg)})")
            m = Measurement(args, binary, n, label, k, logdir, cfg)
            res = m.run()
            res["round"] = rnd
            results.append(res)
            rawlog.write(json.dumps(res) + "\n")
            rawlog.flush()
            pr = res.get("probe") or {}
            if res.get("ok"):
                log(f"{label}: p50 {pr['p50_us']:.1f} µs, p99 {pr['p99_us']:.1f} µs, "
                    f"RSS idle {res.get('rss_idle_kib')} KiB, idle CPU "
                    f"{res.get('idle_cpu_pct', 0):.1f}%, machine busy during probe "
                    f"{res.get('machine_busy_pct', 0):.0f}% ({res['secs']} s)")
            else:
                log(f"{label}: FAILED: {res.get('error')}")
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    finally:
        rawlog.close()
    elapsed = time.monotonic() - t0
    load1 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = report(args, results, tree, started, load0, load1, elapsed, mach, help_text)
    if write:
        bl.write_section(out_path, text, SECTION, NOTES_MARKER)
        log(f"wrote the section to {out_path}")
    print(text)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
