#!/usr/bin/env python3
"""Userspace engine on a lossy link: the kernel's TCP vs netpoll (smoltcp), same impaired link.

    sudo python3 hosted/bench/lossy.py                       # 2 rounds, 32 x 2 MiB, writes BENCHMARKS.md
    sudo python3 hosted/bench/lossy.py --quick               # 1 round, 32 x 64 KiB, prints only

This kernel has no sch_netem, so the link is impaired by a relay process (this file run as
`_relay`) that forwards Ethernet frames between two ports and applies, independently per
direction and seeded: loss, delay with jitter, extra delay for a share of frames (reordering),
duplication and corruption (one byte flipped past the Ethernet header). ARP frames are only
delayed (never lost, duplicated or corrupted). Topology, in namespaces this script creates
(`nplossy-<pid>-c|k|n`) and always deletes:

    ns c: kernel TCP client 10.20.0.1 on TAP rc0 --(relay: the only path)--+
    ns k: kernel TCP server 10.20.0.2 on TAP rk0 <-------------------------+ (server "kernel")
    ns n: smoltcp 10.20.0.3 on TAP nptap0 (netpoll's own) <----------------+ (server "netpoll")

rc0 and rk0 are persistent TAP devices the relay attaches to (so the kernel segments and
checksums in software before the relay sees a frame: no offloads); netpoll's TAP device is
reached through an AF_PACKET socket on its kernel side in ns n (up, no address). The relay
(started per run; one process per direction) joins rc0 with the one server of the run; rc0
and rk0 have a 10,000-frame queue so that bursts wait for the relay instead of being dropped;
the relay runs at nice -5.

Servers (a fresh process per run, the same program): kernel = `netpoll echo --backend epoll`
(the kernel's TCP), netpoll = `netpoll echo --backend tap` (smoltcp), optionally with other
socket buffers (--configs). Both with `--buf 65536` (the application's read buffer); each
reports `listening <ip:port>` on stdout once it listens.

Client (this file run as `_client` in ns c): --conns kernel TCP connections at once, each sends
--size bytes of seeded random data and reads the echo back, every byte compared; reports the
time until all are done and per connection. A run that passes --limit seconds is reported as a
timeout (with `ss -tin` of the client side and, for netpoll, a gdb backtrace of the server).

Rounds are interleaved: every (size, server) in turn, then again.

Options: --rounds 2, --sizes 2097152[,262144], --conns 32, --limit 600, --seed 1 (round k uses
seed + k - 1),
--configs "kernel;netpoll" (';'-separated; e.g. "kernel;netpoll;netpoll:--rx-buf 65536 --tx-buf 65536"),
--small-size 262144 --small-configs CONFIGS (extra runs at a smaller size, e.g. for a
configuration too slow at the full size), --bin PATH (netpoll binary; default: build
release with cargo into $CARGO_TARGET_DIR) and --bin-tree TEXT (what it was built from), --loss 0.10 --delay-ms 5 --jitter-ms 2
--reorder 0.25 --reorder-ms 4 --dup 0.02 --corrupt 0.01, --out PATH, --no-write, --quick.

Needs root, iproute2, python3 (standard library only, and benchlib.py; gdb optional). Every child has a deadline
and dies with this script (PR_SET_PDEATHSIG); only processes this script started are
signalled; only its own namespaces are deleted. Raw JSON lines and logs go to
<target>/bench/lossy-*. Exit status 1 if any run failed or timed out.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import heapq
import json
import os
import random
import resource
import selectors
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import benchlib as bl
from benchlib import REPO, cpu_s, die, emit, log, sh

SELF = Path(__file__).resolve()

NS_PREFIX = "nplossy-"
CLIENT_IP, KERNEL_IP, SMOL_IP = "10.20.0.1", "10.20.0.2", "10.20.0.3"
PORT = 9009
C_TAP, K_TAP, N_TAP = "rc0", "rk0", "nptap0"

SECTION = "## Userspace engine: lossy link, kernel vs netpoll"
NOTES_MARKER = ("<!-- hand-written notes below this line, up to the next level-2 heading, "
                "are kept by hosted/bench/lossy.py -->")

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4


# ------------------------------------------------------------------------------------------
# Relay: `lossy.py _relay`, forwards frames between port c and port s, impairing both ways.


def setns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {name}: {os.strerror(e)}")
    finally:
        os.close(fd)


class TapPort:
    def __init__(self, ns: str, name: str):
        setns(ns)
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        self.name = f"tap {name} in {ns}"

    def recv(self) -> bytes:
        return os.read(self.fd, 65536)

    def send(self, frame: bytes) -> None:
        os.write(self.fd, frame)

    def kernel_drops(self) -> int | None:
        return None


class PacketPort:
    def __init__(self, ns: str, name: str):
        setns(ns)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.filter = False
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            self.filter = True
        self.sock.bind((name, ETH_P_ALL))
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.name = f"packet socket on {name} in {ns}"
        self.drops = 0

    def recv(self) -> bytes:
        while True:
            data, addr = self.sock.recvfrom(65536)
            if not self.filter or addr[2] != PACKET_OUTGOING:
                return data

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def kernel_drops(self) -> int | None:
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)  # reading resets it
        self.drops += struct.unpack("II", raw)[1]
        return self.drops


def relay_direction(a, d: int, inp, outp, seed: int) -> dict:
    """Forwards frames read from `inp` to `outp` until SIGTERM, impairing them; returns stats.
    One process per direction, so that each direction has a core's worth of Python."""
    rng = random.Random(seed)
    s = dict(frames=0, bytes=0, lost=0, dup=0, corrupted=0, reordered=0, arp=0, sent=0,
             send_errors=0)
    late_hist = [0] * 1001  # lateness of a release, 0.1 ms bins, last bin = 100 ms or more
    heap: list = []
    seq = 0
    max_q = 0
    base, jit, rex = a.delay_ms / 1e3, a.jitter_ms / 1e3, a.reorder_ms / 1e3
    stop = False

    def on_term(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sel = selectors.DefaultSelector()
    sel.register(inp.fd, selectors.EVENT_READ)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    end = t0 + a.lifetime
    recv, send, push, pop, rand = inp.recv, outp.send, heapq.heappush, heapq.heappop, rng.random
    while not stop and time.monotonic() < end:
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            rel, _, frame = pop(heap)
            try:
                send(frame)
                s["sent"] += 1
            except OSError:
                s["send_errors"] += 1
            late_hist[min(1000, int((now - rel) * 1e4))] += 1
        timeout = max(0.0, heap[0][0] - now) if heap else 0.5
        try:
            events = sel.select(timeout)
        except InterruptedError:
            continue
        if not events:
            continue
        for _ in range(64):
            try:
                frame = recv()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            now = time.monotonic()
            s["frames"] += 1
            s["bytes"] += len(frame)
            if frame[12:14] == b"\x08\x06":  # ARP: delayed only
                s["arp"] += 1
                seq += 1
                push(heap, (now + base, seq, frame))
                continue
            if rand() < a.loss:
                s["lost"] += 1
                continue
            delay = base + rng.uniform(-jit, jit)
            if rand() < a.reorder:
                delay += rex
                s["reordered"] += 1
            if rand() < a.dup:
                s["dup"] += 1
                seq += 1
                push(heap, (now + base + rng.uniform(-jit, jit), seq, frame))
            if rand() < a.corrupt and len(frame) > 14:
                s["corrupted"] += 1
                b = bytearray(frame)
                i = rng.randrange(14, len(b))
                b[i] ^= rng.randrange(1, 256)
                frame = bytes(b)
            seq += 1
            push(heap, (now + delay, seq, frame))
        if len(heap) > max_q:
            max_q = len(heap)
    secs = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    total = sum(late_hist)

    def late_pct(p):
        k, acc = p / 100 * total, 0
        for i, c in enumerate(late_hist):
            acc += c
            if acc >= k:
                return i / 10
        return None

    return dict(secs=round(secs, 2), user_s=round(r1.ru_utime - r0.ru_utime, 2),
                sys_s=round(r1.ru_stime - r0.ru_stime, 2),
                cpu_s=round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 2),
                max_queue=max_q, left_in_queue=len(heap), late_p50_ms=late_pct(50),
                late_p99_ms=late_pct(99), late_p999_ms=late_pct(99.9),
                late_max_ms=max((i for i, c in enumerate(late_hist) if c), default=0) / 10,
                stats=s)


def role_relay(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lossy.py _relay")
    ap.add_argument("--c-ns", required=True)
    ap.add_argument("--c-tap", required=True)
    ap.add_argument("--s-ns", required=True)
    ap.add_argument("--s-if", required=True)
    ap.add_argument("--s-kind", choices=["tap", "packet"], required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.10)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    ap.add_argument("--jitter-ms", type=float, default=2.0)
    ap.add_argument("--reorder", type=float, default=0.25)
    ap.add_argument("--reorder-ms", type=float, default=4.0)
    ap.add_argument("--dup", type=float, default=0.02)
    ap.add_argument("--corrupt", type=float, default=0.01)
    ap.add_argument("--lifetime", type=float, default=3600)
    a = ap.parse_args(argv)
    bl.die_with_parent()()
    try:  # the relay is the link: it should not wait behind other jobs of a shared machine
        os.nice(-5)
    except OSError:
        pass
    pc = TapPort(a.c_ns, a.c_tap)
    ps = TapPort(a.s_ns, a.s_if) if a.s_kind == "tap" else PacketPort(a.s_ns, a.s_if)
    # Direction c2s (client -> server) in this process, s2c in a forked child; each direction
    # has its own seeded generator.
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(rfd)
        bl.die_with_parent()()
        st = relay_direction(a, 1, ps, pc, a.seed * 2 + 2)
        os.write(wfd, json.dumps(st).encode())
        os.close(wfd)
        os._exit(0)
    os.close(wfd)
    emit(dict(ready=True, c=pc.name, s=ps.name, pids=[os.getpid(), child]))
    st0 = relay_direction(a, 0, pc, ps, a.seed * 2 + 1)
    try:
        os.kill(child, signal.SIGTERM)
    except ProcessLookupError:
        pass
    chunks = []
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        chunks.append(b)
    os.waitpid(child, 0)
    st1 = json.loads(b"".join(chunks) or b"{}")
    dirs = {"c2s": st0, "s2c": st1}
    emit(dict(done=True, secs=st0["secs"],
              cpu_s=round(st0["cpu_s"] + st1.get("cpu_s", 0), 2),
              user_s=round(st0["user_s"] + st1.get("user_s", 0), 2),
              sys_s=round(st0["sys_s"] + st1.get("sys_s", 0), 2),
              busiest_cpu_share=round(max(st0["cpu_s"] / max(st0["secs"], 1e-9),
                                          st1.get("cpu_s", 0) / max(st1.get("secs", 1), 1e-9)), 3),
              frames=st0["stats"]["frames"] + st1.get("stats", {}).get("frames", 0),
              max_queue=max(st0["max_queue"], st1.get("max_queue", 0)),
              late_p99_ms=max(st0["late_p99_ms"] or 0, st1.get("late_p99_ms") or 0),
              late_p999_ms=max(st0["late_p999_ms"] or 0, st1.get("late_p999_ms") or 0),
              late_max_ms=max(st0["late_max_ms"], st1.get("late_max_ms", 0)),
              packet_drops=ps.kernel_drops(),
              stats={k: v["stats"] for k, v in dirs.items() if v},
              directions={k: {x: y for x, y in v.items() if x != "stats"}
                          for k, v in dirs.items() if v}))
    return 0


# ------------------------------------------------------------------------------------------
# Client: `lossy.py _client`, run in ns c.


def role_client(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lossy.py _client")
    ap.add_argument("--dst", required=True)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=float, default=600)
    ap.add_argument("--hold", type=float, default=120,
                    help="after a timeout, keep the connections open until stdin closes")
    a = ap.parse_args(argv)
    bl.die_with_parent()()
    datas = [random.Random(a.seed * 100_003 + i).randbytes(a.size) for i in range(a.conns)]
    sel = selectors.DefaultSelector()
    conns = []
    t0 = time.monotonic()
    for i in range(a.conns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((CLIENT_IP, 0))
        rc = s.connect_ex((a.dst, PORT))
        c = dict(i=i, s=s, mv=memoryview(datas[i]), sent=0, got=0, done=None, err=None,
                 connected=False)
        conns.append(c)
        if rc not in (0, errno.EINPROGRESS):
            c["err"] = f"connect: {errno.errorcode.get(rc, rc)}"
            s.close()
            continue
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    deadline = t0 + a.limit
    open_n = len(sel.get_map())
    next_prog = t0 + 2
    while open_n and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=0.5):
            c = key.data
            s = c["s"]
            try:
                if not c["connected"] and ev & selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    c["connected"] = True
                    c["t_conn"] = time.monotonic() - t0
                if ev & selectors.EVENT_WRITE and c["sent"] < a.size:
                    c["sent"] += s.send(c["mv"][c["sent"]:c["sent"] + 262144])
                    if c["sent"] == a.size:
                        sel.modify(s, selectors.EVENT_READ, c)
                if ev & selectors.EVENT_READ:
                    chunk = s.recv(262144)
                    if not chunk:
                        raise EOFError
                    n = len(chunk)
                    if c["got"] + n > a.size or c["mv"][c["got"]:c["got"] + n] != chunk:
                        exp = bytes(c["mv"][c["got"]:c["got"] + n])
                        off = next((k for k in range(min(n, len(exp)))
                                    if chunk[k] != exp[k]), min(n, len(exp)))
                        c["err"] = (f"echo mismatch at byte {c['got'] + off} "
                                    f"(chunk of {n} at {c['got']})")
                    else:
                        c["got"] += n
                        if c["got"] == a.size:
                            c["done"] = time.monotonic() - t0
                if c["err"] or c["done"] is not None:
                    sel.unregister(s)
                    s.close()
                    open_n -= 1
            except BlockingIOError:
                pass
            except EOFError:
                c["err"] = f"end of stream after {c['got']} bytes echoed ({c['sent']} sent)"
            except OSError as e:
                c["err"] = (f"{errno.errorcode.get(e.errno or 0, str(e))} after {c['got']} "
                            f"bytes echoed ({c['sent']} sent)")
            if c["err"] and key.fd in sel.get_map():
                sel.unregister(s)
                s.close()
                open_n -= 1
        now = time.monotonic()
        if now >= next_prog:
            next_prog = now + 2
            emit(dict(progress=True, t=round(now - t0, 1),
                      echoed=sum(c["got"] for c in conns), sent=sum(c["sent"] for c in conns),
                      done=sum(1 for c in conns if c["done"] is not None)))
    total = time.monotonic() - t0
    timed_out = bool(open_n)
    for c in conns:
        if c["done"] is None and not c["err"]:
            c["err"] = f"timeout: {c['got']} of {a.size} echoed ({c['sent']} sent)"
    res = dict(result=True, timeout=timed_out, secs=round(total, 3), size=a.size,
               conns=[dict(i=c["i"], done=c["done"], err=c["err"], got=c["got"],
                           sent=c["sent"], t_conn=c.get("t_conn")) for c in conns])
    emit(res)
    if timed_out:  # let the parent look at the stuck connections first
        r = selectors.DefaultSelector()
        r.register(sys.stdin, selectors.EVENT_READ)
        r.select(timeout=a.hold)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return 0


# ------------------------------------------------------------------------------------------
# Orchestration


class Namespaces:
    def __init__(self):
        tag = f"{os.getpid()}"
        self.c, self.k, self.n = (f"{NS_PREFIX}{tag}-{x}" for x in "ckn")
        self.made: list[str] = []

    def create(self) -> None:
        for ns in (self.c, self.k, self.n):
            bl.make_netns(ns)
            self.made.append(ns)
        for ns, dev, ip in ((self.c, C_TAP, CLIENT_IP), (self.k, K_TAP, KERNEL_IP)):
            sh(["ip", "-n", ns, "tuntap", "add", "dev", dev, "mode", "tap"])
            sh(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
            sh(["ip", "-n", ns, "link", "set", dev, "txqueuelen", "10000", "up"])

    def delete(self) -> None:
        for ns in reversed(self.made):
            bl.delete_netns(ns)
        self.made.clear()


def link_stats(ns: str, dev: str) -> dict:
    """A link's counters; {} if unreadable (nothing to subtract)."""
    s = bl.link_stats(ns, dev)
    return {} if "error" in s else s


def diff(a: dict, b: dict) -> dict:
    return {k: b[k] - a.get(k, 0) for k in b}


def parse_config(cfg: str) -> tuple[str, list[str]]:
    kind, _, extra = cfg.partition(":")
    if kind not in ("kernel", "netpoll"):
        die(f"unknown server {kind!r} (kernel, netpoll[:FLAGS])")
    return kind, shlex.split(extra)


def run_one(args, ns: Namespaces, binary: Path, cfg: str, size: int, label: str,
            logdir: Path, seed: int) -> dict:
    kind, extra = parse_config(cfg)
    res: dict = dict(config=cfg, size=size, label=label, ok=False, seed=seed)
    procs: list[subprocess.Popen] = []
    srv = None
    relay_err = open(logdir / f"lossy-{label}.relay.log", "w")
    try:
        if kind == "kernel":
            srv_ns, dst = ns.k, KERNEL_IP
            cmd = ["ip", "netns", "exec", ns.k, str(binary), "echo", "--backend", "epoll",
                   "--listen", f"{KERNEL_IP}:{PORT}", "--buf", "65536", *extra]
        else:
            srv_ns, dst = ns.n, SMOL_IP
            cmd = ["ip", "netns", "exec", ns.n, str(binary), "echo", "--backend", "tap",
                   "--tap", N_TAP, "--addr", f"{SMOL_IP}/24", "--listen", f"{SMOL_IP}:{PORT}",
                   "--buf", "65536", *extra]
        res["server_cmd"] = shlex.join(cmd[4:])
        # Returns once the server listens (its `listening <ip:port>` line).
        srv = bl.Server(f"{kind} echo server", cmd,
                        errpath=logdir / f"lossy-{label}.server.log")
        procs.append(srv.proc)
        if kind == "netpoll":
            bl.wait_for_link(ns.n, N_TAP, 10, srv)
            sh(["ip", "-n", ns.n, "link", "set", N_TAP, "up"])
        time.sleep(0.2)
        s_if = K_TAP if kind == "kernel" else N_TAP
        relay = subprocess.Popen(
            [sys.executable, str(SELF), "_relay", "--c-ns", ns.c, "--c-tap", C_TAP,
             "--s-ns", srv_ns, "--s-if", s_if, "--s-kind", "tap" if kind == "kernel" else "packet",
             "--seed", str(seed), "--loss", str(args.loss), "--delay-ms", str(args.delay_ms),
             "--jitter-ms", str(args.jitter_ms), "--reorder", str(args.reorder),
             "--reorder-ms", str(args.reorder_ms), "--dup", str(args.dup),
             "--corrupt", str(args.corrupt), "--lifetime", str(args.limit + 300)],
            stdout=subprocess.PIPE, stderr=relay_err, stdin=subprocess.DEVNULL, text=True)
        procs.append(relay)
        line = relay.stdout.readline()
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError("the relay did not start (see its log)")
        links0 = {"client rc0": link_stats(ns.c, C_TAP), "server " + s_if: link_stats(srv_ns, s_if)}
        cpu_srv0, cpu_rel0 = cpu_s(srv.pid), cpu_s(relay.pid)
        client = subprocess.Popen(
            ["ip", "netns", "exec", ns.c, sys.executable, str(SELF), "_client", "--dst", dst,
             "--conns", str(args.conns), "--size", str(size), "--seed", str(seed),
             "--limit", str(args.limit)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True,
            preexec_fn=bl.die_with_parent())
        procs.append(client)
        t0 = time.monotonic()
        samples = [(0.0, 0, cpu_srv0, cpu_rel0)]  # (t, echoed bytes, server s, relay cpu s)
        result = None
        hard = t0 + args.limit + 120
        while time.monotonic() < hard:
            line = client.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if msg.get("progress"):
                samples.append((msg["t"], msg["echoed"], cpu_s(srv.pid), cpu_s(relay.pid)))
            elif msg.get("result"):
                result = msg
                break
        wall = time.monotonic() - t0
        cpu_srv1, cpu_rel1 = cpu_s(srv.pid), cpu_s(relay.pid)
        if result is None:
            raise RuntimeError("the client ended without a result: "
                               + (client.stderr.read() if client.poll() is not None else "")[-500:])
        res["client"] = result
        res["secs"] = result["secs"]
        res["timeout"] = result["timeout"]
        errs = [c for c in result["conns"] if c["err"]]
        res["errors"] = [f"conn {c['i']}: {c['err']}" for c in errs]
        if result["timeout"] or errs:
            ev = logdir / f"lossy-{label}.evidence.txt"
            with open(ev, "w") as f:
                f.write(f"{label}: {len(errs)} connection(s) not done\n")
                f.write("ss -tin in the client namespace:\n")
                f.write(sh(["ip", "netns", "exec", ns.c, "ss", "-tin"], check=False).stdout)
                if kind == "kernel":
                    f.write("\nss -tin in the server namespace:\n")
                    f.write(sh(["ip", "netns", "exec", ns.k, "ss", "-tin"], check=False).stdout)
                c0 = cpu_s(srv.pid)
                time.sleep(2)
                c1 = cpu_s(srv.pid)
                if c0 is not None and c1 is not None:
                    f.write(f"\nserver CPU over 2 s with connections stuck: {(c1 - c0) / 2:.0%}\n")
                if kind == "netpoll" and srv.proc.poll() is None:
                    f.write("\ngdb backtrace of the server:\n")
                    f.write(bl.gdb_backtrace(srv.pid, 8000))
            res["evidence"] = str(ev)
        try:
            client.stdin.close()
        except OSError:
            pass
        client.wait(30)
        links1 = {"client rc0": link_stats(ns.c, C_TAP), "server " + s_if: link_stats(srv_ns, s_if)}
        relay.send_signal(signal.SIGTERM)
        out, _ = relay.communicate(timeout=30)
        rl = [json.loads(x) for x in out.splitlines() if x.strip().startswith("{")]
        res["relay"] = next((x for x in rl if x.get("done")), None)
        res["links"] = {k: diff(links0[k], links1[k]) for k in links1 if links0.get(k)}
        res["server_cpu_s"] = (cpu_srv1 - cpu_srv0) if cpu_srv0 is not None and cpu_srv1 else None
        res["relay_cpu_s"] = (cpu_rel1 - cpu_rel0) if cpu_rel0 is not None and cpu_rel1 else None
        res["wall"] = round(wall, 2)
        # intervals in which no byte was echoed while the server burnt CPU
        spin = []
        for (ta, ea, sa, _), (tb, eb, sb, _) in zip(samples, samples[1:]):
            if eb == ea and sa is not None and sb is not None and (sb - sa) / (tb - ta) > 0.9:
                spin.append((ta, tb))
        res["spin_intervals"] = spin
        res["stall_intervals"] = sum(1 for (ta, ea, *_), (tb, eb, *_) in zip(samples, samples[1:])
                                     if eb == ea)
        res["samples"] = samples
        bl.stop_proc(srv.proc)
        res["server_exit"] = srv.proc.returncode
        tail = (logdir / f"lossy-{label}.server.log").read_text()[-2000:]
        res["server_log_tail"] = tail
        res["ok"] = not res["timeout"] and not errs
    except Exception as e:  # noqa: BLE001 - a failed run is reported, the next one goes on
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        for p in reversed(procs):
            try:
                bl.stop_proc(p, 5)
            except Exception:  # noqa: BLE001
                pass
        if srv is not None:
            srv.err.close()
        relay_err.close()
    return res


# ------------------------------------------------------------------------------------------
# Report


def fmt(v, nd=1):
    return bl.num(v, nd)


def pct_text(v) -> str:
    return "—" if v is None else f"{v * 100:.0f}%"


def size_text(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n % (1 << 20) == 0 else f"{n // 1024} KiB"


def cfg_text(cfg: str) -> str:
    kind, extra = parse_config(cfg)
    if kind == "kernel":
        return "kernel TCP (`netpoll echo --backend epoll`)"
    if extra:
        return f"netpoll on smoltcp (`--backend tap {shlex.join(extra)}`)"
    return "netpoll on smoltcp (`--backend tap`, default 8 KiB rx + 4 KiB tx)"


def summarize(rs: list[dict]) -> dict:
    ok = [r for r in rs if r.get("ok")]
    # per connection: finished runs, and timed-out runs with the unfinished ones as infinite
    per = [c["done"] if c["done"] is not None else float("inf")
           for r in rs if r.get("ok") or (r.get("timeout") and r.get("client"))
           for c in r["client"]["conns"]]
    relay_cpu = []  # peak share of a core of the relay's client->server process, 2 s samples
    for r in rs:
        sm = [x for x in r.get("samples") or [] if x[3] is not None]
        relay_cpu += [(b[3] - a[3]) / (b[0] - a[0]) for a, b in zip(sm, sm[1:]) if b[0] > a[0]]
        if len(sm) < 2 and r.get("relay"):
            relay_cpu.append(r["relay"]["busiest_cpu_share"])
    srv_cpu = [r["server_cpu_s"] / r["wall"] for r in rs if r.get("server_cpu_s") is not None
               and r.get("wall")]
    return dict(
        runs=len(rs), ok=len(ok),
        timeouts=sum(1 for r in rs if r.get("timeout")),
        total=statistics.median([r["secs"] for r in ok]) if ok else None,
        totals=[r.get("secs") if r.get("ok") else ("timeout" if r.get("timeout") else "failed")
                for r in rs],
        p50=statistics.median(sorted(per)) if per else None, max=max(per) if per else None,
        done=sum(1 for x in per if x != float("inf")), conns=len(per),
        relay_cpu=max(relay_cpu) if relay_cpu else None,
        srv_cpu=statistics.median(srv_cpu) if srv_cpu else None,
        late99=max((r["relay"]["late_p99_ms"] or 0) for r in rs if r.get("relay"))
        if any(r.get("relay") for r in rs) else None,
        drops=sum((r["relay"].get("packet_drops") or 0) for r in rs if r.get("relay"))
        + sum(r.get("links", {}).get("client rc0", {}).get("tx_dropped", 0) for r in rs)
        + sum(r.get("links", {}).get("server rk0", {}).get("tx_dropped", 0) for r in rs),
        srv_tap_drops=sum(r.get("links", {}).get("server nptap0", {}).get("tx_dropped", 0)
                          for r in rs),
        errors=[e for r in rs for e in (r.get("errors") or [])
                if not e.split(": ", 1)[-1].startswith("timeout")]
        + [r["error"] for r in rs if r.get("error")],
    )


def report(args, results, tree, started, elapsed, load0, load1, mach) -> str:
    out: list[str] = []
    w = out.append
    w(SECTION + "\n")
    w("Generated by `hosted/bench/lossy.py`. The same kernel TCP client talks to two echo "
      "servers through the same impaired link, in turn: the kernel's TCP and netpoll's "
      "userspace engine (smoltcp). The impairment is done by a userspace relay (this kernel "
      "has no `sch_netem`).\n")
    w("### Command\n")
    w("```sh\nsudo python3 hosted/bench/lossy.py " + shlex.join(args.argv) + "\n```\n")
    w(f"- measured: {tree}; started {started} UTC, took {elapsed / 60:.0f} min; load average at "
      f"start {load0}, at end {load1}")
    w(f"- machine: {mach}; shared with other engineers' jobs during the run")
    w(f"- link: a Python relay forwarding Ethernet frames between the client's TAP device and "
      f"the server's, both directions impaired independently, seeded (seed {args.seed} in "
      f"round 1, {args.seed + 1} in round 2, ...; the same for every server of a round, and "
      f"the client's data from the same seed): "
      f"{args.loss:.0%} loss, {args.delay_ms:g} ± {args.jitter_ms:g} ms delay (uniform), "
      f"{args.reorder:.0%} of frames {args.reorder_ms:g} ms later still (reordering), "
      f"{args.dup:.0%} duplicated, {args.corrupt:.0%} corrupted (one byte flipped past the "
      f"Ethernet header); ARP only delayed. No rate limit; MTU 1500")
    w("- servers (fresh process per run, `--buf 65536`): kernel = `netpoll echo --backend "
      "epoll` in its own namespace on TAP rk0; netpoll = `netpoll echo --backend tap` "
      "(smoltcp on its own TAP device, reached by the relay through an AF_PACKET socket)")
    w(f"- client: {args.conns} kernel TCP connections at once (this kernel's defaults: "
      f"{args.kset}), each sends its size of seeded random data and reads the echo back, every byte "
      f"compared; time = from the first connect to the last byte of the last connection; "
      f"limit {args.limit:g} s per run (reported as a timeout)")
    w(f"- rounds: {args.rounds}, interleaved (every size and server in turn, then again); "
      f"table values are medians over the runs that finished\n")
    w("### Results\n")
    w("| size per connection | server | runs ok | time for all, s (median) | per run | "
      "per connection p50 / max, s | vs kernel | server CPU | relay CPU, peak |")
    w("|---|---|---|---|---|---|---|---|---|")
    sizes = sorted({r["size"] for r in results}, reverse=True)
    lines_extra = []
    for size in sizes:
        cfgs = [c for c in args.order if any(r["size"] == size and r["config"] == c
                                             for r in results)]
        sums = {c: summarize([r for r in results if r["size"] == size and r["config"] == c])
                for c in cfgs}
        kern = next((sums[c] for c in cfgs if c.startswith("kernel")), None)
        for c in cfgs:
            s = sums[c]
            ratio = "1.00×" if c.startswith("kernel") else (
                f"**{s['total'] / kern['total']:.1f}×**" if s["total"] and kern and kern["total"]
                else f"**> {args.limit / kern['total']:.0f}×**"
                if s["timeouts"] == s["runs"] and kern and kern["total"] else "—")
            total = (fmt(s["total"]) if s["total"] is not None else
                     f"> {args.limit:g} (timeout)" if s["timeouts"] == s["runs"] else "—")

            def sec(v):
                return f"> {args.limit:g}" if v == float("inf") else fmt(v)

            done = ("" if s["done"] == s["conns"] else
                    f" ({s['done']} of {s['conns']} connections done)")
            per_run = ", ".join(fmt(x, 1) if isinstance(x, float) else str(x)
                                for x in s["totals"])
            w(f"| {size_text(size)} | {cfg_text(c)} | {s['ok']}/{s['runs']}"
              + (f" ({s['timeouts']} timeout)" if s["timeouts"] else "") + " | "
              f"{total} | {per_run} | {sec(s['p50'])} / {sec(s['max'])}{done} | {ratio} | "
              f"{pct_text(s['srv_cpu'])} | {pct_text(s['relay_cpu'])} |")
            if s["errors"]:
                lines_extra.append(f"- {size_text(size)}, {cfg_text(c)}: "
                                   + "; ".join(s["errors"][:6]))
    w("")
    w("vs kernel: median time for all connections / the kernel's at the same size (a "
      "configuration whose every run timed out: at least the limit / the kernel's). Per "
      "connection: over every connection of the finished and timed-out runs. Server and "
      "relay CPU: share of one core; server: over the run (median of the runs); relay: its "
      "client-to-server process (one of two, one per direction, both about equally busy) in "
      "its busiest 2-second interval of any run.\n")
    if lines_extra:
        w("Errors (connection resets, wrong bytes, end of stream before the echo):\n")
        out.extend(lines_extra)
        w("")
    w("<details><summary>Every run, and the relay's own counters</summary>\n")
    w("| run | size | server | time s | done | relay frames (c→s / s→c) | lost / dup / "
      "corrupted / reordered (both ways) | relay CPU s (user+sys) | relay lateness p99 / max "
      "ms | max queue | relay drops | server TAP queue drops | stalled 2 s intervals | "
      "error |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rl = r.get("relay") or {}
        stt = rl.get("stats") or {}
        a_, b_ = stt.get("c2s", {}), stt.get("s2c", {})
        both = {k: a_.get(k, 0) + b_.get(k, 0) for k in ("lost", "dup", "corrupted", "reordered")}
        cl = r.get("client") or {}
        done = sum(1 for c in cl.get("conns", []) if c.get("done") is not None)
        links = r.get("links", {})
        rdrops = ((rl.get("packet_drops") or 0) + links.get("client rc0", {}).get("tx_dropped", 0)
                  + links.get("server rk0", {}).get("tx_dropped", 0))
        err = r.get("error") or ("; ".join(r.get("errors") or [])[:160])
        w(f"| {r['label']}, seed {r.get('seed', args.seed)} | {size_text(r['size'])} | {r['config']} | "
          f"{'timeout' if r.get('timeout') else fmt(r.get('secs'))} | "
          f"{done}/{len(cl.get('conns', []))} | {a_.get('frames', 0):,} / {b_.get('frames', 0):,} | "
          f"{both['lost']:,} / {both['dup']:,} / {both['corrupted']:,} / {both['reordered']:,} | "
          f"{fmt(rl.get('cpu_s'))} ({fmt(rl.get('user_s'))}+{fmt(rl.get('sys_s'))}) | "
          f"{fmt(rl.get('late_p99_ms'))} / {fmt(rl.get('late_max_ms'))} | "
          f"{rl.get('max_queue', '—')} | {rdrops} | "
          f"{links.get('server nptap0', {}).get('tx_dropped', '—')} | "
          f"{r.get('stall_intervals', '—')} | {err} |")
    w("\n</details>\n")
    w("Relay lateness: how long after its release time a frame left the relay (the delay "
      "queue's own error; a relay that keeps up stays within a millisecond or two). Relay "
      "drops: frames lost before the relay saw them (AF_PACKET socket drops and the TAP "
      "devices' queues towards the relay). Server TAP queue drops: frames the relay handed "
      "to netpoll's TAP device that netpoll did not read in time. Stalled intervals: 2-second "
      "intervals in which no byte was echoed.\n")
    return "\n".join(out)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_relay":
        return role_relay(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        return role_client(sys.argv[2:])
    bl.init("lossy-bench")
    ap = bl.parser(__doc__, rounds=2, out=None, bin=True, no_write=True, quick=True)
    ap.add_argument("--sizes", default="2097152")
    ap.add_argument("--configs", default="kernel;netpoll")
    ap.add_argument("--small-size", type=int, default=262144)
    ap.add_argument("--small-configs", default="",
                    help="configurations also (or only) run at --small-size, ';'-separated")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--limit", type=float, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss", type=float, default=0.10)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    ap.add_argument("--jitter-ms", type=float, default=2.0)
    ap.add_argument("--reorder", type=float, default=0.25)
    ap.add_argument("--reorder-ms", type=float, default=4.0)
    ap.add_argument("--dup", type=float, default=0.02)
    ap.add_argument("--corrupt", type=float, default=0.01)
    ap.add_argument("--bin-tree", help="what --bin was built from, for the report")
    args = ap.parse_args()
    args.kset = "?"
    args.argv = sys.argv[1:]
    if args.quick:
        args.rounds, args.sizes, args.limit = 1, "65536", min(args.limit, 120)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    configs = [c.strip() for c in args.configs.split(";") if c.strip()]
    small = [c.strip() for c in args.small_configs.split(";") if c.strip()]
    for c in configs + small:
        parse_config(c)
    args.order = list(dict.fromkeys(configs + small))
    if not (1 <= args.rounds <= 10 and 1 <= args.conns <= 1000 and 1 <= args.limit <= 3600
            and all(1 <= s <= 1 << 30 for s in sizes + [args.small_size])):
        die("--rounds 1..10, --conns 1..1000, --limit 1..3600 s, sizes 1 B..1 GiB")
    bl.require_root("network namespaces, TAP devices")
    write = not args.no_write and (args.out or not args.quick)
    out_path = Path(args.out) if args.out else REPO / "BENCHMARKS.md"
    binary, tree = bl.netpoll_binary(args)
    if args.bin and args.bin_tree:
        tree = args.bin_tree
    logdir = bl.target_dir() / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    plan = []
    for rnd in range(1, args.rounds + 1):
        for size in sizes:
            for c in configs:
                plan.append((rnd, size, c))
        for c in small:
            plan.append((rnd, args.small_size, c))

    bl.interrupt_on_signals()
    bl.remove_stale_namespaces(NS_PREFIX)
    started = bl.utc_now()
    load0 = bl.loadavg()
    t0 = time.monotonic()
    results: list[dict] = []
    ns = Namespaces()
    rawlog = open(logdir / "lossy-results.jsonl", "w")
    try:
        ns.create()
        get = lambda k: sh(["ip", "netns", "exec", ns.c, "sysctl", "-n", k],  # noqa: E731
                           check=False).stdout.strip()
        args.kset = (f"congestion control {get('net.ipv4.tcp_congestion_control')}, SACK "
                     f"{'on' if get('net.ipv4.tcp_sack') == '1' else 'off'}; the kernel server "
                     f"the same")
        for rnd, size, c in plan:
            kind, extra = parse_config(c)
            label = f"r{rnd}-{size_text(size).replace(' ', '')}-{kind}" + (
                "-" + "".join(x.strip("-") for x in extra) if extra else "")
            log(f"{label}: starting ({c}, {args.conns} x {size_text(size)})")
            r = run_one(args, ns, binary, c, size, label, logdir, args.seed + rnd - 1)
            r["round"] = rnd
            results.append(r)
            rawlog.write(json.dumps(r) + "\n")
            rawlog.flush()
            rl = r.get("relay") or {}
            log(f"{label}: " + ("ok" if r.get("ok") else "TIMEOUT" if r.get("timeout") else
                                 f"FAILED {r.get('error') or (r.get('errors') or [])[:3]}")
                + f", {r.get('secs')} s; server CPU {r.get('server_cpu_s')} s; relay "
                  f"{rl.get('frames')} frames, CPU {rl.get('cpu_s')} s, lateness p99 "
                  f"{rl.get('late_p99_ms')} ms, max queue {rl.get('max_queue')}; "
                  f"links {r.get('links')}")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        rawlog.close()
        ns.delete()
    elapsed = time.monotonic() - t0
    load1 = bl.loadavg()
    text = report(args, results, tree, started, elapsed, load0, load1, bl.machine_text(rustc=False))
    if write:
        bl.write_section(out_path, text, SECTION, NOTES_MARKER)
        log(f"wrote the section to {out_path}")
    print(text)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
