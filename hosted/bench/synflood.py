#!/usr/bin/env python3
"""Userspace engine: a SYN flood over a real TAP device, and what legitimate clients see.

    sudo python3 hosted/bench/synflood.py             # full run, writes its section of BENCHMARKS.md
    sudo python3 hosted/bench/synflood.py --quick     # 1 round, 20,000 SYNs, prints only

What one measurement does, in a network namespace of its own (`npflood-<pid>-<k>`, created for
the measurement and always deleted after it):

 1. starts `netpoll echo --backend tap` (smoltcp at 10.11.0.2/24 on TAP device npflood0,
    listening on 10.11.0.2:9009, the variant's --backlog; it reports `listening <ip:port>` on
    stdout); the kernel side of the link is 10.11.0.1/24;
 2. starts the flooder (this file run as `_flood`, in the namespace): it pre-builds --syns
    Ethernet + IPv4 + TCP SYN frames (IPv4 and TCP checksums computed, MSS option, random
    source port, sequence number and IP id; source address random in the on-link /24 without
    .1 and .2, or random off-link unicast addresses), then waits;
 3. starts the legitimate client (this file run as `_client`, source 10.11.0.1): a new
    connection every 1 / --legit-rate s, each with a --connect-timeout (10 s) connect, then
    64 bytes sent and the 64 bytes read back and checked, then close; every connect time is
    recorded;
 4. after --baseline-secs of that (the baseline), reads the server's MAC address from the
    kernel's neighbour table (`ip neigh`, filled by the client's first connect), hands it to the
    flooder, which first checks its frame builder (one hand-built SYN from 10.11.0.1, which
    must draw a SYN-ACK; the kernel then resets it), then writes the frames to the TAP
    interface with an AF_PACKET socket, as fast as it goes or paced at the variant's rate;
 5. recovery: the moment the last SYN is written, the flooder starts a probe connect every
    50 ms (each with a 10 s timeout) until one completes in under 50 ms, for at most 10 s;
    recovery = the start of that probe minus the end of the flood;
 6. the client goes on --tail-secs longer, then waits for its connects in flight; the server's
    CPU and RSS were sampled every 100 ms throughout; after --idle-secs of quiet its CPU is
    sampled again (a server spinning on its half-open sockets would show here);
 7. stops the server (SIGTERM, then SIGKILL after 10 s), keeps its exit summary line, and
    deletes the namespace.

Variants (--variants, comma-separated SRC/BACKLOG/RATE; RATE `max` or SYNs per second):
onlink/128/max, offlink/128/max, onlink/1024/max, and the same three at 10000 SYN/s (a
Python sender writes 100,000 frames in well under a second, faster than the server reads
them). Measurements are
interleaved: each round runs every variant in turn; the report gives medians over rounds.

If legitimate connects fail en masse, the server exits, or it uses CPU while idle, the script
saves evidence (the server's stderr, `ss -s` in the namespace, the TAP counters, a gdb
backtrace of every server thread) in the raw results and the log directory.

Options: --rounds 3 --syns 100000 --legit-rate 50 --baseline-secs 5 --tail-secs 2
--idle-secs 1 --connect-timeout 10 --variants ... --bin PATH (no build) --no-build --out PATH
--no-write --quick.

Needs root (namespaces, TAP, AF_PACKET), iproute2, python3 (standard library only, and
benchlib.py). Every loop
is bounded in count and time, every child has a deadline and dies with this script
(PR_SET_PDEATHSIG), only processes this script started are signalled (by their own pid), only
its own namespaces are deleted; every frame stays inside the namespace. Raw JSON lines and
server logs go to <target>/bench/synflood-* (<target>: $CARGO_TARGET_DIR, else target/). Exit status 1 if any measurement failed.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import re
import selectors
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchlib as bl
from benchlib import REPO, die, emit, log, med, pct, sh
from benchlib import num as fmt

SELF = Path(__file__).resolve()

TAP = "npflood0"
SMOL = "10.11.0.2"
KERNEL = "10.11.0.1"
NET = "10.11.0."
PORT = 9009
NS_PREFIX = "npflood-"
MSG = 64
RECOVER_MS = 50.0
PROBE_EVERY = 0.05
PROBE_FOR = 10.0

SECTION = "## Userspace engine: SYN flood"
NOTES_MARKER = ("<!-- hand-written notes below this line, up to the next level-2 heading, "
                "are kept by hosted/bench/synflood.py -->")

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800


# ------------------------------------------------------------------------------------------
# Frames


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_body(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ipid: int) -> bytes:
    """IPv4 + TCP SYN (with an MSS option), both checksums filled in."""
    tcp_len = 24
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, (tcp_len // 4) << 4, 0x02, 64240, 0,
                      0) + struct.pack("!BBH", 2, 4, 1460)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, tcp_len)
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, ipid, 0x4000, 64,
                     socket.IPPROTO_TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + tcp


def random_source(rng: random.Random, mode: str) -> bytes:
    if mode == "onlink":
        return socket.inet_aton(NET + str(rng.randint(3, 254)))
    while True:  # off-link: a random public-looking unicast address
        a = rng.getrandbits(32)
        o1, o2 = a >> 24, (a >> 16) & 0xFF
        if o1 in (0, 10, 127) or o1 >= 224 or (o1 == 169 and o2 == 254) or \
                (o1 == 172 and 16 <= o2 < 32) or (o1 == 192 and o2 == 168) or o1 == 100:
            continue
        return a.to_bytes(4, "big")


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


# ------------------------------------------------------------------------------------------
# Child roles: run inside the namespace by `ip netns exec ... python3 synflood.py _flood|_client`.


class Conn:
    __slots__ = ("sock", "t0", "t_conn", "deadline", "got", "state", "kind")

    def __init__(self, sock, t0, deadline, kind):
        self.sock, self.t0, self.deadline, self.kind = sock, t0, deadline, kind
        self.t_conn = None
        self.got = b""
        self.state = "connect"


def start_connect(src: str, dst: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((src, 0))
    rc = s.connect_ex((dst, port))
    if rc not in (0, errno.EINPROGRESS):
        s.close()
        raise OSError(rc, os.strerror(rc))
    return s


def role_client(argv: list[str]) -> int:
    """A connect every 1/--rate s until stdin closes (or --lifetime), each then echoes MSG bytes
    and closes; then waits for those in flight and reports every attempt."""
    ap = argparse.ArgumentParser(prog="synflood.py _client")
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--connect-timeout", type=float, default=10)
    ap.add_argument("--echo-timeout", type=float, default=5)
    ap.add_argument("--lifetime", type=float, default=300)
    a = ap.parse_args(argv)
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    records: list[dict] = []
    stop_at = time.monotonic() + a.lifetime
    nxt = time.monotonic()
    period = 1.0 / a.rate
    payload_base = os.urandom(MSG)
    stopping = False
    live: dict[int, tuple[Conn, dict]] = {}
    seq = 0

    def finish(c: Conn, rec: dict, err: str | None = None) -> None:
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        live.pop(id(c), None)
        if err:
            rec["err"] = err

    while True:
        now = time.monotonic()
        if now >= stop_at:
            stopping = True
        if not stopping and now >= nxt:
            nxt += period
            if nxt < now:  # fell behind (a busy machine): do not burst to catch up
                nxt = now + period
            seq += 1
            rec = dict(t0=now, connect_ms=None, echo_ok=False, err=None)
            records.append(rec)
            try:
                s = start_connect(KERNEL, SMOL, PORT)
            except OSError as e:
                rec["err"] = "connect: " + errno.errorcode.get(e.errno or 0, str(e))
                continue
            c = Conn(s, now, now + a.connect_timeout, "legit")
            live[id(c)] = (c, rec)
            sel.register(s, selectors.EVENT_WRITE, c)
        if stopping and not live:
            break
        # Deadlines.
        for key in list(live):
            c, rec = live[key]
            if now >= c.deadline:
                finish(c, rec, "connect timeout" if c.state == "connect" else "echo timeout")
        timeout = max(0.0, min(nxt - time.monotonic(), 0.05)) if not stopping else 0.05
        for key, ev in sel.select(timeout=timeout):
            if key.data is None:
                if not sys.stdin.readline():
                    stopping = True
                    sel.unregister(sys.stdin)
                continue
            c: Conn = key.data
            ent = live.get(id(c))
            if ent is None:
                continue
            rec = ent[1]
            t = time.monotonic()
            if c.state == "connect":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    finish(c, rec, "connect: " + errno.errorcode.get(err, str(err)))
                    continue
                rec["connect_ms"] = (t - c.t0) * 1000
                c.state = "echo"
                c.deadline = t + a.echo_timeout
                msg = payload_base[seq % MSG:] + payload_base[:seq % MSG]
                rec["_msg"] = msg
                try:
                    c.sock.send(msg)
                except OSError as e:
                    finish(c, rec, "send: " + errno.errorcode.get(e.errno or 0, str(e)))
                    continue
                sel.modify(c.sock, selectors.EVENT_READ, c)
            else:
                try:
                    data = c.sock.recv(MSG - len(c.got))
                except OSError as e:
                    finish(c, rec, "recv: " + errno.errorcode.get(e.errno or 0, str(e)))
                    continue
                if not data:
                    finish(c, rec, "recv: end of stream")
                    continue
                c.got += data
                if len(c.got) >= MSG:
                    rec["echo_ok"] = c.got == rec["_msg"]
                    rec["echo_ms"] = (time.monotonic() - c.t0) * 1000 - rec["connect_ms"]
                    finish(c, rec, None if rec["echo_ok"] else "echo mismatch")
    for r in records:
        r.pop("_msg", None)
    emit(dict(phase="client", records=records))
    return 0


def role_flood(argv: list[str]) -> int:
    """Builds the frames, says ready, waits for `go MAC` on stdin, checks one frame draws a
    SYN-ACK, floods, then probes for recovery."""
    ap = argparse.ArgumentParser(prog="synflood.py _flood")
    ap.add_argument("--syns", type=int, required=True)
    ap.add_argument("--src", choices=["onlink", "offlink"], required=True)
    ap.add_argument("--rate", type=float, default=0, help="SYNs per second, 0 = max")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--connect-timeout", type=float, default=10)
    ap.add_argument("--lifetime", type=float, default=300)
    a = ap.parse_args(argv)
    t_build = time.monotonic()
    rng = random.Random(a.seed)
    dst = socket.inet_aton(SMOL)
    bodies = [syn_body(random_source(rng, a.src), dst, rng.randint(1024, 65535), PORT,
                       rng.getrandbits(32), rng.getrandbits(16)) for _ in range(a.syns)]
    emit(dict(phase="ready", build_s=round(time.monotonic() - t_build, 2)))
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    if not sel.select(timeout=a.lifetime):
        return 1
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "go":
        return 1
    dmac = mac_bytes(line[1])
    smac = mac_bytes(Path(f"/sys/class/net/{TAP}/address").read_text().strip())
    eth = dmac + smac + struct.pack("!H", ETH_P_IP)
    frames = [eth + b for b in bodies]
    del bodies
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx.bind((TAP, 0))

    # Self-check: a hand-built SYN from the kernel's own address must draw a SYN-ACK (then the
    # kernel, which has no such connection, resets it). Proves the checksums and the MAC.
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    rx.bind((TAP, 0))
    rx.settimeout(0.2)
    sport = rng.randint(20000, 60000)
    tx.send(eth + syn_body(socket.inet_aton(KERNEL), dst, sport, PORT, rng.getrandbits(32), 1))
    check = False
    end = time.monotonic() + 2
    while time.monotonic() < end and not check:
        try:
            f = rx.recv(2048)
        except socket.timeout:
            continue
        if len(f) >= 14 + 20 + 14 and f[12:14] == b"\x08\x00" and f[23] == 6:
            ihl = (f[14] & 0x0F) * 4
            tcp = f[14 + ihl:]
            sp, dp = struct.unpack("!HH", tcp[:4])
            if sp == PORT and dp == sport and tcp[13] & 0x12 == 0x12:
                check = True
    rx.close()
    emit(dict(phase="selfcheck", ok=check))

    # The flood.
    send = tx.send
    n = len(frames)
    errs: dict[str, int] = {}
    sent = 0
    t_start = time.monotonic()
    if a.rate <= 0:
        for f in frames:
            try:
                send(f)
                sent += 1
            except OSError as e:
                k = errno.errorcode.get(e.errno or 0, str(e))
                errs[k] = errs.get(k, 0) + 1
    else:
        batch = max(1, int(a.rate / 1000))  # about 1 ms of frames per batch
        for i in range(0, n, batch):
            due = t_start + i / a.rate
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            for f in frames[i:i + batch]:
                try:
                    send(f)
                    sent += 1
                except OSError as e:
                    k = errno.errorcode.get(e.errno or 0, str(e))
                    errs[k] = errs.get(k, 0) + 1
    t_end = time.monotonic()
    tx.close()

    # Recovery: a probe connect every 50 ms until one completes in under 50 ms.
    probes: list[dict] = []
    psel = selectors.DefaultSelector()
    nxt = t_end
    live = 0
    recovered_at = None
    stop = t_end + PROBE_FOR
    while time.monotonic() < stop + a.connect_timeout:
        now = time.monotonic()
        if recovered_at is None and now < stop and now >= nxt:
            nxt += PROBE_EVERY
            rec = dict(start_ms=(now - t_end) * 1000, connect_ms=None, err=None)
            probes.append(rec)
            try:
                s = start_connect(KERNEL, SMOL, PORT)
                psel.register(s, selectors.EVENT_WRITE, (s, now, rec))
                live += 1
            except OSError as e:
                rec["err"] = errno.errorcode.get(e.errno or 0, str(e))
        if (recovered_at is not None or now >= stop) and live == 0:
            break
        for key, _ in psel.select(timeout=max(0.0, min(nxt - time.monotonic(), 0.01))):
            s, t0, rec = key.data
            t = time.monotonic()
            psel.unregister(s)
            live -= 1
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                rec["err"] = errno.errorcode.get(err, str(err))
            else:
                rec["connect_ms"] = (t - t0) * 1000
                if rec["connect_ms"] < RECOVER_MS and recovered_at is None:
                    recovered_at = rec["start_ms"]
            s.close()
        for key in list(psel.get_map().values()):
            s, t0, rec = key.data
            if time.monotonic() - t0 > a.connect_timeout:
                psel.unregister(s)
                s.close()
                live -= 1
                rec["err"] = "connect timeout"
    for key in list(psel.get_map().values()):
        key.data[0].close()
    emit(dict(phase="flood", t_start=t_start, t_end=t_end, sent=sent, send_errors=errs,
              secs=t_end - t_start, rate=sent / max(t_end - t_start, 1e-9),
              recovery_ms=recovered_at, probes=probes))
    return 0


# ------------------------------------------------------------------------------------------
# Orchestration


class Sampler(threading.Thread):
    """The server's CPU time and RSS and the machine's busy time, every 100 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float | None, int | None, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((time.monotonic(), bl.cpu_s(self.pid), bl.rss_kib(self.pid),
                                 bl.busy_s(irq=True)))
            self.halt.wait(0.1)

    def window(self, t0: float, t1: float) -> dict:
        before = [s for s in self.samples if s[0] <= t0]
        after = [s for s in self.samples if s[0] >= t1]
        inside = [s for s in self.samples if t0 <= s[0] <= t1 + 0.1]
        out: dict = {}
        if before and after and before[-1][1] is not None and after[0][1] is not None:
            wall = after[0][0] - before[-1][0]
            out["cpu_pct"] = 100 * (after[0][1] - before[-1][1]) / wall
            out["machine_pct"] = 100 * (after[0][3] - before[-1][3]) / wall
            out["wall_s"] = wall
        rss = [s[2] for s in inside + before[-1:] + after[:1] if s[2] is not None]
        if rss:
            out["rss_peak_kib"] = max(rss)
        return out


class Measurement:
    def __init__(self, args, binary: Path, variant: dict, label: str, k: int, logdir: Path):
        self.args, self.binary, self.v, self.label = args, binary, variant, label
        self.ns = f"{NS_PREFIX}{os.getpid()}-{k}"
        self.logdir = logdir
        self.ns_made = False
        self.server: bl.Server | None = None
        self.children: list[bl.Child] = []
        self.res: dict = dict(label=label, variant=variant["name"], ok=False)

    def make_ns(self) -> None:
        self.ns_made = True
        bl.make_netns(self.ns, port_range=True)

    def configure_tap(self) -> None:
        bl.wait_for_link(self.ns, TAP, 10, self.server)
        sh(["ip", "-n", self.ns, "addr", "add", f"{KERNEL}/24", "dev", TAP])
        sh(["ip", "-n", self.ns, "link", "set", TAP, "up"])

    def tap_stats(self) -> dict:
        return bl.link_stats(self.ns, TAP)

    def nstat(self) -> dict:
        return bl.nstat(self.ns, ("TcpExtTCPSynRetrans", "TcpAttemptFails", "TcpEstabResets",
                                  "TcpOutRsts", "TcpActiveOpens"))

    def evidence(self, why: str) -> None:
        ev: dict = dict(why=why)
        for name, cmd in [("ss_s", ["ip", "netns", "exec", self.ns, "ss", "-s"]),
                          ("ss_syn", ["ip", "netns", "exec", self.ns, "ss", "-tan",
                                      "state", "syn-sent"]),
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
        (self.logdir / f"synflood-evidence-{self.label}.json").write_text(
            json.dumps(self.res["evidence"], indent=1))
        log(f"{self.label}: evidence saved ({why})")

    def run(self) -> dict:
        a, v = self.args, self.v
        t0 = time.monotonic()
        sampler = None
        try:
            self.make_ns()
            srv_cmd = ["ip", "netns", "exec", self.ns, str(self.binary), "echo", "--backend",
                       "tap", "--tap", TAP, "--addr", f"{SMOL}/24", "--listen",
                       f"{SMOL}:{PORT}", "--quiet"]
            if v["backlog"] != 128:
                srv_cmd += ["--backlog", str(v["backlog"])]
            self.res["server_cmd"] = shlex.join(["netpoll", *srv_cmd[5:]])
            self.server = bl.Server("netpoll echo", srv_cmd,
                                    errpath=self.logdir / f"synflood-server-{self.label}.log")
            self.configure_tap()
            pid = self.server.pid
            sampler = Sampler(pid)
            sampler.start()
            py = ["ip", "netns", "exec", self.ns, sys.executable, str(SELF)]
            flood = bl.Child(py + ["_flood", "--syns", str(a.syns), "--src", v["src"],
                                "--rate", str(v["rate"]), "--seed", str(random.getrandbits(30)),
                                "--connect-timeout", str(a.connect_timeout)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.children.append(flood)
            msg = flood.next(120)
            if not msg or msg.get("phase") != "ready":
                raise RuntimeError("flooder did not get ready: " + flood.stderr_text()[-400:])
            self.res["build_s"] = msg["build_s"]
            tap0 = self.tap_stats()
            client = bl.Child(py + ["_client", "--rate", str(a.legit_rate), "--connect-timeout",
                                 str(a.connect_timeout), "--lifetime", "240"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.children.append(client)
            time.sleep(a.baseline_secs)
            neigh = sh(["ip", "-n", self.ns, "neigh", "show", SMOL, "dev", TAP]).stdout.split()
            if "lladdr" not in neigh:
                raise RuntimeError(f"no neighbour entry for {SMOL} after the baseline: {neigh}")
            mac = neigh[neigh.index("lladdr") + 1]
            self.res["server_mac"] = mac
            nstat0 = self.nstat()
            flood.proc.stdin.write(f"go {mac}\n")
            flood.proc.stdin.flush()
            msg = flood.next(10)
            if not msg or msg.get("phase") != "selfcheck":
                raise RuntimeError("flooder gave no self-check: " + flood.stderr_text()[-400:])
            if not msg["ok"]:
                raise RuntimeError("self-check: a hand-built SYN from 10.11.0.1 drew no SYN-ACK "
                                   "(frame checksums or the MAC are wrong)")
            fl = flood.next(a.syns / 1000 + 60 + a.connect_timeout)
            if not fl or fl.get("phase") != "flood":
                self.evidence("flooder gave no result")
                raise RuntimeError("flooder gave no result: " + flood.stderr_text()[-400:])
            tap1 = self.tap_stats()
            self.res["flood"] = {k: fl[k] for k in ("sent", "send_errors", "secs", "rate",
                                                    "recovery_ms")}
            self.res["probes"] = fl["probes"]
            self.res["tap_tx_dropped"] = tap1.get("tx_dropped", 0) - tap0.get("tx_dropped", 0)
            self.res["tap_rx_from_server"] = tap1.get("rx_packets", 0) - tap0.get("rx_packets", 0)
            self.res["server_alive_after_flood"] = self.server.proc.poll() is None
            time.sleep(a.tail_secs)
            client.proc.stdin.close()
            cl = client.next(a.connect_timeout + 30)
            if not cl:
                raise RuntimeError("client gave no result: " + client.stderr_text()[-400:])
            self.res["nstat"] = {k: self.nstat().get(k, 0) - nstat0.get(k, 0) for k in nstat0}
            ts, te = fl["t_start"], fl["t_end"]
            time.sleep(a.idle_secs)
            self.res["window"] = sampler.window(ts, te)
            self.res["after"] = sampler.window(te, te + 2.0)
            self.res["rss_before_kib"] = next((s[2] for s in reversed(sampler.samples)
                                               if s[0] <= ts), None)
            i0, i0t = bl.cpu_s(pid), time.monotonic()
            time.sleep(a.idle_secs)
            i1, i1t = bl.cpu_s(pid), time.monotonic()
            if i0 is not None and i1 is not None:
                self.res["idle_cpu_pct"] = 100 * (i1 - i0) / (i1t - i0t)
            self.res["rss_end_kib"] = bl.rss_kib(pid)
            recs = cl["records"]
            self.res["legit"] = summarize(recs, ts, te, self.res.get("flood", {}))
            self.res["records"] = [dict(t=round(r["t0"] - ts, 4), c=r["connect_ms"],
                                        e=r["echo_ok"], err=r["err"]) for r in recs]
            lg = self.res["legit"]
            bad = []
            if self.server.proc.poll() is not None:
                bad.append("server exited")
            if lg["flood"]["attempts"] and lg["flood"]["ok"] < 0.5 * lg["flood"]["attempts"]:
                bad.append(f"legit connects during the flood: {lg['flood']['ok']} of "
                           f"{lg['flood']['attempts']}")
            if self.res.get("idle_cpu_pct", 0) > 20:
                bad.append(f"server busy while idle: {self.res['idle_cpu_pct']:.0f}% CPU")
            if fl["recovery_ms"] is None:
                bad.append("no connect under 50 ms within 10 s of the flood's end")
            if bad:
                self.evidence("; ".join(bad))
                self.res["problems"] = bad
            self.res["ok"] = self.server.proc.poll() is None
            if not self.res["ok"]:
                self.res["error"] = "server exited"
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as e:
            self.res["error"] = str(e)
            if self.server is not None and self.ns_made and "evidence" not in self.res:
                self.evidence(str(e))
        finally:
            if sampler:
                sampler.halt.set()
            self.cleanup()
            self.res["secs"] = round(time.monotonic() - t0, 1)
        return self.res

    def cleanup(self) -> None:
        for c in self.children:
            try:
                if c.proc.stdin:
                    c.proc.stdin.close()
            except OSError:
                pass
        for c in self.children:
            c.stop(grace=15)
        self.children.clear()
        if self.server is not None:
            self.res["server_exit"] = self.server.proc.poll()
            self.server.stop()
            self.res["server_exit_after_stop"] = self.server.proc.returncode
            try:
                tail = (self.logdir / f"synflood-server-{self.label}.log").read_text()
                self.res["server_summary"] = [l for l in tail.splitlines()
                                              if "served" in l][-1:]
                self.res["server_log_tail"] = tail.splitlines()[-8:]
            except OSError:
                pass
            self.server = None
        if self.ns_made:
            bl.delete_netns(self.ns)
            self.ns_made = False


def stats_of(recs: list[dict]) -> dict:
    ok = sorted(r["connect_ms"] for r in recs if r["connect_ms"] is not None)
    return dict(attempts=len(recs), ok=len(ok), echo_ok=sum(1 for r in recs if r["echo_ok"]),
                p50=pct(ok, 50), p99=pct(ok, 99), max=ok[-1] if ok else None,
                over_900ms=sum(1 for x in ok if x >= 900),
                errors=sorted({r["err"] for r in recs if r["err"]}))


def summarize(recs: list[dict], ts: float, te: float, flood: dict) -> dict:
    base = [r for r in recs if r["t0"] < ts]
    during = [r for r in recs if ts <= r["t0"] <= te]
    after = [r for r in recs if r["t0"] > te]
    return dict(baseline=stats_of(base[1:]),  # the first connect also resolves ARP
                flood=stats_of(during), after=stats_of(after), all=stats_of(recs))


# ------------------------------------------------------------------------------------------
# Report


def vdesc(v: dict) -> str:
    src = "on-link /24 sources" if v["src"] == "onlink" else "off-link sources"
    rate = "max rate" if not v["rate"] else f"{v['rate']:,.0f}/s"
    return f"{src}, backlog {v['backlog']}, {rate}"


def report(args, results: list[dict], tree: str, started: str, load0, load1, elapsed: float,
           mach: str) -> str:
    out: list[str] = []
    w = out.append
    w(SECTION + "\n")
    w("Generated by `hosted/bench/synflood.py`. `netpoll echo --backend tap` (smoltcp) in a network "
      f"namespace; {args.syns:,} spoofed SYNs (hand-built Ethernet + IPv4 + TCP frames, written "
      "to the TAP interface from the kernel side with an AF_PACKET socket, random source ports) "
      f"while a kernel client from {KERNEL} opens a connection every "
      f"{1000 / args.legit_rate:g} ms (10 s connect timeout, then a 64-byte echo, then "
      "close).\n")
    w("### Command\n")
    w("```sh\nsudo python3 hosted/bench/synflood.py " + shlex.join(args.argv) + "\n```\n")
    w(f"- measured: {tree}; started {started} UTC, took {elapsed:.0f} s; load average at start "
      f"{load0}, at end {load1}")
    w(f"- machine: {mach}; shared with a CI run and another benchmark during the run")
    srv = results[0].get("server_cmd", "") if results else ""
    w(f"- server: `{srv}` (`--backlog N` added for other backlogs); default socket buffers")
    w(f"- rounds: {args.rounds}, every variant in turn per round, a fresh server and namespace "
      f"per measurement; table values are medians over the rounds")
    w(f"- baseline: the {args.baseline_secs:g} s of connects before the flood (the first, which "
      "resolves ARP, left out); during the flood: connects started between the first and the "
      "last SYN written; connect times are the client's (nonblocking connect to writable)")
    w("- recovery: from the end of the flood, a probe connect every 50 ms; the time until the "
      "first probe that connects in under 50 ms starts (0 = the first probe, sent as the last "
      "SYN left, was already fast; at most 10 s)\n")
    w("### Results\n")
    w("| variant | flood rate SYN/s | SYNs dropped at TAP queue | legit ok during flood | "
      "connect p50 / p99 / max ms during flood | baseline p50 / p99 ms | echo ok (all) | "
      "recovery ms | server CPU during flood | server RSS peak KiB | idle CPU after | runs ok |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for v in args.variants:
        rs = [r for r in results if r["variant"] == v["name"]]
        good = [r for r in rs if r.get("ok") and r.get("legit")]
        L = lambda part, key: med([r["legit"][part][key] for r in good])  # noqa: E731
        att = sum(r["legit"]["flood"]["attempts"] for r in good)
        okc = sum(r["legit"]["flood"]["ok"] for r in good)
        echo_ok = sum(r["legit"]["all"]["echo_ok"] for r in good)
        echo_att = sum(r["legit"]["all"]["attempts"] for r in good)
        w(f"| {vdesc(v)} | {fmt(med([r['flood']['rate'] for r in good]))} | "
          f"{fmt(med([r.get('tap_tx_dropped') for r in good]))} | "
          f"{okc}/{att} (sum) | {fmt(L('flood', 'p50'), 1)} / {fmt(L('flood', 'p99'), 1)} / "
          f"{fmt(L('flood', 'max'), 1)} | {fmt(L('baseline', 'p50'), 2)} / "
          f"{fmt(L('baseline', 'p99'), 2)} | {echo_ok}/{echo_att} | "
          f"{fmt(med([r['flood']['recovery_ms'] for r in good]))} | "
          f"{fmt(med([r.get('window', {}).get('cpu_pct') for r in good]))}% | "
          f"{fmt(med([r.get('window', {}).get('rss_peak_kib') for r in good]))} | "
          f"{fmt(med([r.get('idle_cpu_pct') for r in good]), 1)}% | {len(good)}/{len(rs)} |")
    w("")
    w("<details><summary>Every run</summary>\n")
    w("| round | variant | sent | rate /s | flood s | TAP drops | legit ok / attempts during "
      "flood | p50 / p99 / max ms | ≥ 0.9 s | after flood ok / attempts (max ms) | baseline "
      "p50 / p99 / max ms | echo ok / attempts | recovery ms | server CPU flood / next 2 s | "
      "machine % | RSS before / peak KiB | idle CPU | client SYN retransmits | exit summary | "
      "problems |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if not r.get("legit"):
            w(f"| {r['round']} | {r['variant']} | | | | | | | | | | | | | | | | | "
              f"{' '.join(r.get('server_summary') or [])} | {r.get('error', '')[:150]} |")
            continue
        lg, fl = r["legit"], r["flood"]
        f_, b_, a_ = lg["flood"], lg["baseline"], lg["after"]
        summ = " ".join(r.get("server_summary") or []).replace("netpoll echo: ", "")
        w(f"| {r['round']} | {r['variant']} | {fl['sent']:,} | {fl['rate']:,.0f} | "
          f"{fl['secs']:.2f} | {fmt(r.get('tap_tx_dropped'))} | {f_['ok']}/{f_['attempts']} | "
          f"{fmt(f_['p50'], 1)} / {fmt(f_['p99'], 1)} / {fmt(f_['max'], 1)} | "
          f"{f_['over_900ms']} | {a_['ok']}/{a_['attempts']} ({fmt(a_['max'], 1)}) | "
          f"{fmt(b_['p50'], 2)} / {fmt(b_['p99'], 2)} / {fmt(b_['max'], 2)} | "
          f"{lg['all']['echo_ok']}/{lg['all']['attempts']} | {fmt(fl['recovery_ms'])} | "
          f"{fmt(r.get('window', {}).get('cpu_pct'))}% / {fmt(r.get('after', {}).get('cpu_pct'))}% | "
          f"{fmt(r.get('window', {}).get('machine_pct'))} | {fmt(r.get('rss_before_kib'))} / "
          f"{fmt(r.get('window', {}).get('rss_peak_kib'))} | {fmt(r.get('idle_cpu_pct'), 1)}% | "
          f"{fmt(r.get('nstat', {}).get('TcpExtTCPSynRetrans'))} | {summ} | "
          f"{'; '.join(r.get('problems', []))} {r.get('error', '')} |")
    w("\n</details>\n")
    w("TAP drops: SYN frames the kernel could not queue to the TAP device because the server "
      "had not read the earlier ones yet (they never reached smoltcp). ≥ 0.9 s: connects during "
      "the flood that needed a SYN retransmission (the kernel's first is at 1 s). Server CPU: "
      "% of one core over the flood (`/proc/PID/stat`, 100 ms samples), then over the 2 s after "
      "it; idle CPU: after the clients stopped, with the flood's half-open sockets still "
      "waiting for their 30 s expiry; machine %: all CPUs busy during the flood, % of one "
      "core.\n")
    return "\n".join(out)


def parse_variants(spec: str) -> list[dict]:
    out = []
    for item in spec.split(","):
        parts = item.strip().split("/")
        if len(parts) != 3 or not parts[1].isdigit() or not (
                parts[2] == "max" or re.fullmatch(r"\d+(\.\d+)?", parts[2])):
            die(f"variant {item!r}: SRC/BACKLOG/RATE, e.g. onlink/128/max or offlink/128/10000")
        src, backlog, rate = parts
        if src not in ("onlink", "offlink"):
            die(f"variant {item}: source must be onlink or offlink")
        out.append(dict(name=item.strip(), src=src, backlog=int(backlog),
                        rate=0 if rate == "max" else float(rate)))
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        return role_client(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_flood":
        return role_flood(sys.argv[2:])
    bl.init("synflood")
    ap = bl.parser(__doc__, rounds=None, out=None, no_build=True, bin=True, no_write=True,
                   quick=True)
    ap.add_argument("--syns", type=int, default=None)
    ap.add_argument("--variants",
                    default="onlink/128/max,offlink/128/max,onlink/1024/max,"
                            "onlink/128/10000,offlink/128/10000,onlink/1024/10000")
    ap.add_argument("--legit-rate", type=float, default=50)
    ap.add_argument("--baseline-secs", type=float, default=5)
    ap.add_argument("--tail-secs", type=float, default=2)
    ap.add_argument("--idle-secs", type=float, default=1)
    ap.add_argument("--connect-timeout", type=float, default=10)
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    if args.quick:
        args.rounds = args.rounds or 1
        args.syns = args.syns or 20_000
    args.rounds = args.rounds or 3
    args.syns = args.syns or 100_000
    args.variants = parse_variants(args.variants)
    if not (1 <= args.rounds <= 10 and 1 <= args.syns <= 1_000_000
            and 1 <= args.legit_rate <= 500 and 1 <= args.baseline_secs <= 60
            and 0 <= args.tail_secs <= 60 and 0.2 <= args.idle_secs <= 30
            and 1 <= args.connect_timeout <= 30
            and all(1 <= v["backlog"] <= 65535 and 0 <= v["rate"] <= 10_000_000
                    for v in args.variants)):
        die("--rounds 1..10, --syns 1..1000000, --legit-rate 1..500, --baseline-secs 1..60, "
            "--tail-secs 0..60, --idle-secs 0.2..30, --connect-timeout 1..30, backlog 1..65535")
    bl.require_root("network namespaces, a TAP device, AF_PACKET")
    write = not args.no_write and (args.out or not args.quick)
    out_path = Path(args.out) if args.out else REPO / "BENCHMARKS.md"
    os.chdir(REPO)

    bl.interrupt_on_signals()
    bl.remove_stale_namespaces(NS_PREFIX)
    binary, tree = bl.netpoll_binary(args)
    logdir = bl.target_dir() / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    rawlog = open(logdir / f"synflood-results-{time.strftime('%Y%m%d-%H%M%S')}.jsonl", "w")
    started = bl.utc_now()
    load0 = bl.loadavg()
    mach = bl.machine_text()
    log(f"server binary {binary} ({tree})")
    t0 = time.monotonic()
    results: list[dict] = []
    k = 0
    try:
        for rnd, v in bl.rounds(args.rounds, args.variants):
            k += 1
            label = f"r{rnd}-{v['name'].replace('/', '-')}"
            log(f"{label}: starting ({vdesc(v)})")
            res = Measurement(args, binary, v, label, k, logdir).run()
            res["round"] = rnd
            results.append(res)
            rawlog.write(json.dumps(res) + "\n")
            rawlog.flush()
            if res.get("legit"):
                f_, b_, fl = res["legit"]["flood"], res["legit"]["baseline"], res["flood"]
                log(f"{label}: {fl['sent']:,} SYNs in {fl['secs']:.2f} s ({fl['rate']:,.0f}/s, "
                    f"{res.get('tap_tx_dropped')} dropped at TAP); legit during flood "
                    f"{f_['ok']}/{f_['attempts']} p50 {fmt(f_['p50'], 1)} p99 "
                    f"{fmt(f_['p99'], 1)} max {fmt(f_['max'], 1)} ms; baseline p50 "
                    f"{fmt(b_['p50'], 2)} ms; recovery {fmt(fl['recovery_ms'])} ms; server "
                    f"CPU {fmt(res.get('window', {}).get('cpu_pct'))}%; idle "
                    f"{fmt(res.get('idle_cpu_pct'), 1)}%; {res.get('server_summary')}"
                    + (f"; PROBLEMS: {res['problems']}" if res.get("problems") else ""))
            else:
                log(f"{label}: FAILED: {res.get('error')}")
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    finally:
        rawlog.close()
    elapsed = time.monotonic() - t0
    load1 = bl.loadavg()
    text = report(args, results, tree, started, load0, load1, elapsed, mach)
    if write:
        bl.write_section(out_path, text, SECTION, NOTES_MARKER)
        log(f"wrote the section to {out_path}")
    print(text)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
