#!/usr/bin/env python3
"""netpoll's benchmark suite: `netpoll echo` against tokio, side by side, in one run.

    python3 hosted/bench/run.py            # builds release, runs everything, writes BENCHMARKS.md

Builds `netpoll`, `netpoll-bench` (the load generator) and the `tokio_echo` example in release
mode, then runs the scenarios of issue 4 against three servers, interleaved (netpoll, tokio
current-thread, tokio multi-thread; again; ...) for --rounds rounds, a fresh server process per
run:

    s1  1 connection ping-pong, 128-byte messages
    s2  50 connections, 128 B
    s3  1,000 connections, 128 B
    s4  10,000 idle connections held, then each echoes once: server RSS delta per connection
    s5  50 connections, 16 KiB messages, 16 KiB server buffer

It reports medians and the per-round spread (min-max) of rate, latency (p50/p99/p99.9/max)
and server CPU time per message (utime+stime from /proc/PID/stat over the measured window,
divided by the messages); then counts the servers' syscalls per echoed message in s2 in a
separate run (perf stat syscall tracepoints, else strace -c), optionally profiles the servers
during s2 (--profile, perf record), and writes the markdown report (--out, default
BENCHMARKS.md at the repository root; whatever follows the NOTES_MARKER comment in an existing
report is hand-written analysis and is kept). Raw JSON lines, the perf data and the syscall
counts go to TARGET/release/../bench/ (e.g. target/bench/results.jsonl).

Useful options: --rounds N, --duration SECS, --scenarios s2,s4, --targets netpoll,tokio-ct,
--no-build, --no-syscalls, --profile, --note TEXT. Needs root (or perf_event_paranoid <= 1)
only for the perf parts; without perf it falls back to strace, without both it skips them.

Only the standard library; loopback only; every child has a timeout; only the server and
perf/strace processes this script started are ever signalled. Exit status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCENARIOS = {
    "s1": dict(title="1 conn ping-pong, 128 B", conns=1, size=128, buf=128),
    "s2": dict(title="50 conns, 128 B", conns=50, size=128, buf=128),
    "s3": dict(title="1,000 conns, 128 B", conns=1000, size=128, buf=128),
    "s4": dict(title="10,000 idle conns, each echoes once", conns=10000, size=128, buf=128, once=True),
    "s5": dict(title="50 conns, 16 KiB messages, 16 KiB buffer", conns=50, size=16384, buf=16384),
}
TARGETS = {
    "netpoll": "netpoll (1 worker)",
    "tokio-ct": "tokio current-thread",
    "netpoll-mt": "netpoll (2 workers)",
    "tokio-mt": "tokio multi-thread",
}
# The syscalls broken out in the s2 count (the total comes from raw_syscalls:sys_enter).
SYSCALLS = [
    "read", "write", "recvfrom", "sendto", "readv", "writev", "recvmsg", "sendmsg",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl", "futex", "sched_yield",
    "accept4", "close",
]


# Everything after this line in the report is hand-written and kept across runs.
NOTES_MARKER = "<!-- hand-written notes below this line are kept by hosted/bench/run.py -->"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


# ------------------------------------------------------------------------------------------
# Build and environment


def build(no_build: bool) -> Path:
    meta = json.loads(sh(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=REPO, timeout=120).stdout)
    target = Path(meta["target_directory"]) / "release"
    if not no_build:
        cmd = ["cargo", "build", "--release", "-p", "netpoll-hosted", "--bin", "netpoll",
               "--bin", "netpoll-bench", "--example", "tokio_echo"]
        log("building: " + " ".join(cmd))
        r = subprocess.run(cmd, cwd=REPO, timeout=1800)
        if r.returncode != 0:
            sys.exit("bench: the release build failed")
    for p in (target / "netpoll", target / "netpoll-bench", target / "examples" / "tokio_echo"):
        if not p.exists():
            sys.exit(f"bench: {p} is missing (run without --no-build)")
    return target


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    rustc = sh(["rustc", "--version"]).stdout.strip()
    commit = sh(["git", "rev-parse", "--short", "HEAD"], cwd=REPO).stdout.strip()
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO).stdout.strip()
    return dict(nproc=os.cpu_count(), cpu=cpu, kernel=platform.release(), mem=mem, rustc=rustc,
                commit=commit + (" (work tree with uncommitted changes)" if dirty else ""))


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ------------------------------------------------------------------------------------------
# Servers


class Server:
    """A server process this script started (and the only kind of process it signals)."""

    def __init__(self, name: str, cmd: list[str]):
        self.name, self.cmd = name, cmd
        self.errfile = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.errfile)
        self.addr = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.errfile.seek(0)
            m = re.search(r"listening on (\S+)", self.errfile.read())
            if m:
                self.addr = m.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        err = self.log_text()
        self.stop()
        raise RuntimeError(f"{name} did not start ({shlex.join(cmd)}): {err.strip()[-500:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        self.errfile.seek(0)
        return self.errfile.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.errfile.close()


def server_cmd(target: str, bins: Path, buf: int, netpoll_has_buf: bool) -> list[str]:
    listen = ["--listen", "127.0.0.1:0", "--quiet"]
    if target in ("netpoll", "netpoll-mt"):
        workers = "1" if target == "netpoll" else "2"
        cmd = [str(bins / "netpoll"), "echo", *listen, "--workers", workers]
        if buf != 128 and netpoll_has_buf:
            cmd += ["--buf", str(buf)]
        return cmd
    flavor = "current" if target == "tokio-ct" else "multi"
    return [str(bins / "examples" / "tokio_echo"), "--flavor", flavor, *listen, "--buf", str(buf)]


def bench_cmd(bins: Path, sc: dict, addr: str, pid: int, args, label: str,
              duration: float | None = None, warmup: float | None = None) -> list[str]:
    cmd = [str(bins / "netpoll-bench"), "--addr", addr, "--server-pid", str(pid),
           "--conns", str(sc["conns"]), "--size", str(sc["size"]),
           "--threads", str(args.client_threads), "--label", label]
    if sc.get("once"):
        cmd += ["--once"]
    else:
        cmd += ["--duration", str(args.duration if duration is None else duration),
                "--warmup", str(args.warmup if warmup is None else warmup)]
    return cmd


def run_bench(cmd: list[str], timeout: float) -> dict:
    try:
        r = sh(cmd, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"netpoll-bench timed out after {timeout:.0f}s")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        return dict(ok=False, error=f"netpoll-bench exit {r.returncode}: {r.stderr.strip()[-400:]}")
    res = json.loads(lines[-1])
    if r.returncode != 0:
        res["ok"] = False
        res["error"] = res.get("error") or r.stderr.strip()[-400:]
    return res


# ------------------------------------------------------------------------------------------
# Syscall counting and profiling


def have_perf_tracepoints() -> bool:
    if not shutil.which("perf"):
        return False
    try:
        r = sh(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"], timeout=30)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return r.returncode == 0 and "raw_syscalls:sys_enter" in r.stderr and "not supported" not in r.stderr


def count_syscalls(method: str, pid: int, outfile: Path, run) -> tuple[dict, dict]:
    """Attaches perf stat (or strace -c) to `pid`, calls run(), returns (bench result, counts)."""
    if method == "perf":
        events = ["-e", "raw_syscalls:sys_enter"]
        for s in SYSCALLS:
            events += ["-e", f"syscalls:sys_enter_{s}"]
        cmd = ["perf", "stat", "-x,", "-o", str(outfile), *events, "-p", str(pid)]
    else:
        cmd = ["strace", "-c", "-f", "-q", "-o", str(outfile), "-p", str(pid)]
    tracer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let the tracer attach before the load starts
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
    if method == "perf":
        for line in text.splitlines():
            parts = line.split(",")
            if len(parts) < 3 or line.startswith("#"):
                continue
            name = parts[2].split(":")[-1].replace("sys_enter_", "")
            name = "total" if parts[2] == "raw_syscalls:sys_enter" else name
            counts[name] = int(parts[0]) if parts[0].isdigit() else 0
    else:
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 5 and f[-1] != "syscall" and f[0][0].isdigit():
                calls = int(f[3]) if f[3].isdigit() else 0
                counts["total" if f[-1] == "total" else f[-1]] = calls
    return res, counts


def profile(pid: int, outfile: Path, run) -> tuple[dict, str]:
    """perf record (cpu-clock, all threads of `pid`) during run(); returns the top symbols."""
    rec = subprocess.Popen(["perf", "record", "-F", "999", "-o", str(outfile), "-p", str(pid)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        res = run()
    finally:
        if rec.poll() is None:
            rec.send_signal(signal.SIGINT)
        try:
            rec.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rec.kill()
            rec.wait(timeout=5)
    def report(sort: str, limit: str, keep: int) -> list[str]:
        r = sh(["perf", "report", "--stdio", "--no-children", "-i", str(outfile), "--sort",
                sort, "--percent-limit", limit], timeout=120)
        lines = [re.sub(r"(\s+-)*\s*$", "", l) for l in r.stdout.splitlines()
                 if l.strip() and not l.startswith("#")]
        return lines[:keep]

    try:
        by_dso = report("dso", "0.5", 6)
        by_sym = report("dso,symbol", "0.7", 35)
        return res, "\n".join(["by binary:", *by_dso, "", "by symbol:", *by_sym])
    except subprocess.TimeoutExpired:
        return res, "(perf report timed out)"


# ------------------------------------------------------------------------------------------
# Statistics and the report


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=1) -> str:
    if x is None:
        return "—"
    if abs(x) >= 10000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def cell(xs, digits=1) -> str:
    """Median [min–max] of the rounds."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(xs[0], digits)
    return f"{fmt(statistics.median(xs), digits)} [{fmt(min(xs), digits)}–{fmt(max(xs), digits)}]"


def write_report(path: Path, args, mach: dict, results: list[dict], sysc: dict, profiles: dict,
                 started: str, load_start: str, load_end: str, elapsed: float,
                 netpoll_has_buf: bool, failures: list[str]) -> None:
    def vals(s, t, key):
        return [r.get(key) for r in results if r["scenario"] == s and r["target"] == t and r.get("ok")]

    scen = [s for s in args.scenarios if s in SCENARIOS]
    targ = [t for t in args.targets if t in TARGETS]
    out = []
    w = out.append
    w("# Benchmarks: netpoll vs tokio (echo servers, loopback)\n")
    w("Generated by `hosted/bench/run.py` (issue 4's harness). Every number below comes from one "
      "run of the command, the servers interleaved round by round, a fresh server process per "
      "measurement.\n")
    if args.note:
        w(f"> **Note:** {args.note}\n")
    w("## Command\n")
    w("```sh\n" + args.command_line + "\n```\n")
    w(f"Rounds: {args.rounds}; per run: {args.duration} s of load of which the first "
      f"{args.warmup} s are warm-up (not measured); client: `netpoll-bench`, closed loop, "
      f"{args.client_threads} client thread(s), pipelining depth 1, every echoed byte verified.\n")
    w("## Machine\n")
    w(f"- {mach['nproc']} CPUs: {mach['cpu']}; {mach['mem']} RAM; Linux {mach['kernel']}")
    w(f"- {mach['rustc']}; commit {mach['commit']}")
    w(f"- started {started}; took {elapsed:.0f} s; load average at start {load_start}, "
      f"at end {load_end}")
    w("- client and server share the same cores, so server CPU per message is the fairest "
      "efficiency number; messages/s also reflects the client's share of the CPU\n")

    w("## Rate, latency and server CPU\n")
    w("Medians of the rounds, with the per-round spread as [min–max]. Latency is per message, "
      "issue to full echo, in microseconds. Server CPU is utime+stime of the server process "
      "over the measured window divided by the messages echoed in it.\n")
    w("| scenario | server | msgs/s | MB/s | p50 µs | p99 µs | p99.9 µs | max µs | server CPU µs/msg |")
    w("|---|---|---|---|---|---|---|---|---|")
    for s in scen:
        if SCENARIOS[s].get("once"):
            continue
        for t in targ:
            name = TARGETS[t]
            if s == "s5" and t == "netpoll" and not netpoll_has_buf:
                name += " ¹"
            w(f"| {s}: {SCENARIOS[s]['title']} | {name} | {cell(vals(s, t, 'msgs_per_s'))} | "
              f"{cell(vals(s, t, 'mb_per_s'))} | {fmt(med(vals(s, t, 'p50_us')))} | "
              f"{fmt(med(vals(s, t, 'p99_us')))} | {fmt(med(vals(s, t, 'p999_us')))} | "
              f"{fmt(med(vals(s, t, 'max_us')))} | {cell(vals(s, t, 'server_cpu_us_per_msg'), 2)} |")
    if "s5" in scen and not netpoll_has_buf:
        w("\n¹ `netpoll echo` has no `--buf` option yet: in s5 it still reads into its 128-byte "
          "buffer (tokio gets 16 KiB), so s5 is not yet a like-for-like comparison.")
    w("")

    if "s4" in scen:
        w("## s4: memory per idle connection\n")
        w("10,000 connections opened (paced so the accept queue never overflows), held idle "
          "until the server has accepted them all, then each echoes one 128-byte message. "
          "Bytes per connection = (VmRSS after the echoes − VmRSS before the first connect) "
          "/ 10,000: user-space memory only (kernel socket buffers are not in RSS).\n")
        w("| server | bytes/conn | RSS before KiB | RSS idle KiB | RSS after KiB | echo p99 µs |")
        w("|---|---|---|---|---|---|")
        for t in targ:
            w(f"| {TARGETS[t]} | {cell(vals('s4', t, 'server_rss_bytes_per_conn'), 0)} | "
              f"{fmt(med(vals('s4', t, 'server_rss_before_kib')))} | "
              f"{fmt(med(vals('s4', t, 'server_rss_idle_kib')))} | "
              f"{fmt(med(vals('s4', t, 'server_rss_after_kib')))} | "
              f"{fmt(med(vals('s4', t, 'p99_us')))} |")
        w("")

    if sysc:
        method = next(iter(sysc.values())).get("method", "?")
        w("## s2: syscalls per echoed message\n")
        how = ("`perf stat -e raw_syscalls:sys_enter -e syscalls:sys_enter_<name> -p PID`"
               if method == "perf" else "`strace -c -f -p PID`")
        w(f"One extra s2 run per server with {how} attached for the whole run (tracing slows "
          "the server, so these runs are not in the tables above); all syscalls of the server "
          "process (accepts and closes included) divided by the messages echoed.\n")
        names = [n for n in SYSCALLS if any(c.get("counts", {}).get(n) for c in sysc.values())]
        w("| server | msgs | syscalls/msg | " + " | ".join(names) + " |")
        w("|---|---|---|" + "---|" * len(names))
        for t in targ:
            c = sysc.get(t)
            if not c or not c.get("msgs"):
                w(f"| {TARGETS[t]} | — | — |" + " — |" * len(names))
                continue
            m = c["msgs"]
            cnt = c["counts"]
            total = cnt.get("total") or sum(cnt.values())
            w(f"| {TARGETS[t]} | {m:,} | **{total / m:.2f}** | "
              + " | ".join(f"{cnt.get(n, 0) / m:.3f}" for n in names) + " |")
        w("")

    # The targets of issue 4.
    def m(s, t, k):
        return med(vals(s, t, k))

    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    rows = []
    r = ratio(m("s2", "netpoll", "server_cpu_us_per_msg"), m("s2", "tokio-ct", "server_cpu_us_per_msg"))
    rows.append(("s2 server CPU/msg vs tokio current-thread", "≤ 0.80×", r, r is not None and r <= 0.8, "×"))
    r = ratio(m("s2", "netpoll", "msgs_per_s"), m("s2", "tokio-ct", "msgs_per_s"))
    rows.append(("s2 msgs/s vs tokio current-thread", "≥ 1.00×", r, r is not None and r >= 1.0, "×"))
    c = sysc.get("netpoll")
    spm = None
    if c and c.get("msgs"):
        spm = (c["counts"].get("total") or sum(c["counts"].values())) / c["msgs"]
    rows.append(("s2 syscalls per echoed message", "≤ 2.2", spm, spm is not None and spm <= 2.2, ""))
    b = m("s4", "netpoll", "server_rss_bytes_per_conn")
    rows.append(("s4 bytes per idle connection", "≤ 300", b, b is not None and b <= 300, " B"))
    r = ratio(m("s3", "netpoll", "p99_us"), m("s3", "tokio-ct", "p99_us"))
    rows.append(("s3 p99 latency vs tokio current-thread", "≤ 1.00×", r, r is not None and r <= 1.0, "×"))
    r = ratio(m("s2", "netpoll-mt", "msgs_per_s"), m("s2", "tokio-mt", "msgs_per_s"))
    rows.append(("s2 msgs/s, 2 workers vs tokio multi-thread", "≥ 1.00×", r, r is not None and r >= 1.0, "×"))
    r = ratio(m("s5", "netpoll-mt", "mb_per_s"), m("s5", "tokio-mt", "mb_per_s"))
    rows.append(("s5 MB/s, 2 workers vs tokio multi-thread", "≥ 1.00×", r, r is not None and r >= 1.0, "×"))
    w("## Targets of issue 4 (medians of this run)\n")
    w("| target | goal | netpoll now | met? |")
    w("|---|---|---|---|")
    for name, goal, v, ok, unit in rows:
        shown = "—" if v is None else (f"{v:.0f}{unit}" if unit == " B" else f"{v:.2f}{unit}")
        w(f"| {name} | {goal} | {shown} | {'yes' if ok else ('—' if v is None else 'no')} |")
    w("\nThe single-worker rows compare `netpoll echo --workers 1` with tokio's current-thread "
      "runtime; the 2-worker rows compare `netpoll echo --workers 2` with tokio's multi-thread "
      "runtime (2 workers on this 2-core machine).\n")

    if profiles:
        w("## Where the time goes (s2, perf record -F 999 on the server, flat profile)\n")
        for t, text in profiles.items():
            w(f"<details><summary>{TARGETS[t]}</summary>\n\n```\n{text}\n```\n</details>\n")

    if failures:
        w("## Failed runs\n")
        for f in failures:
            w(f"- {f}")
        w("")

    w("## Every run\n")
    w("<details><summary>Per-round values</summary>\n")
    w("| round | scenario | server | ok | msgs | msgs/s | p50 µs | p99 µs | server CPU µs/msg | bytes/conn |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        w(f"| {r['round']} | {r['scenario']} | {r['target']} | {'yes' if r.get('ok') else 'NO'} | "
          f"{r.get('msgs', '—')} | {fmt(r.get('msgs_per_s'))} | {fmt(r.get('p50_us'))} | "
          f"{fmt(r.get('p99_us'))} | {fmt(r.get('server_cpu_us_per_msg'), 2)} | "
          f"{fmt(r.get('server_rss_bytes_per_conn'), 0)} |")
    w("\n</details>\n")
    kept = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARKER in old:
            kept = old[old.index(NOTES_MARKER):]
    path.write_text("\n".join(out) + "\n" + (kept or NOTES_MARKER + "\n"))


# ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of load per run")
    ap.add_argument("--warmup", type=float, default=0.5, help="leading seconds not measured")
    ap.add_argument("--scenarios", default="s1,s2,s3,s4,s5")
    ap.add_argument("--targets", default="netpoll,tokio-ct,netpoll-mt,tokio-mt")
    ap.add_argument("--client-threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    ap.add_argument("--no-syscalls", action="store_true", help="skip the s2 syscall count")
    ap.add_argument("--profile", action="store_true",
                    help="perf record the netpoll and tokio current-thread servers during s2")
    ap.add_argument("--budget", type=float, default=570,
                    help="seconds after which remaining runs are skipped (reported as failures)")
    ap.add_argument("--note", default="", help="a note printed at the top of the report")
    args = ap.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for s in args.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    for t in args.targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t!r} (known: {', '.join(TARGETS)})")
    shown, skip = [], False
    for a in sys.argv[1:]:  # the command as run, less the free-text note
        if skip or a.startswith("--note"):
            skip = a == "--note" and not skip
            continue
        shown.append(shlex.quote(a))
    args.command_line = " ".join(["python3 hosted/bench/run.py", *shown])

    t0 = time.monotonic()
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_start = loadavg()
    bins = build(args.no_build)
    nofile = raise_nofile()
    if nofile < 2 * 10000 + 200 and "s4" in args.scenarios:
        log(f"warning: the open-file limit is {nofile}; s4 needs 10,000 per process")
    help_text = sh([str(bins / "netpoll"), "echo", "--help"]).stdout
    netpoll_has_buf = "--buf" in help_text
    if not netpoll_has_buf:
        log("`netpoll echo` has no --buf option: s5 runs netpoll with its 128-byte buffer")
    mach = machine()
    outdir = bins.parent / "bench"
    outdir.mkdir(parents=True, exist_ok=True)
    raw = (outdir / "results.jsonl").open("w")

    results: list[dict] = []
    failures: list[str] = []

    def one(round_no: int, s: str, t: str, **kw) -> dict:
        sc = SCENARIOS[s]
        label = f"{s}/{t}"
        if time.monotonic() - t0 > args.budget:
            res = dict(ok=False, error="skipped: over the time budget")
        else:
            try:
                srv = Server(t, server_cmd(t, bins, sc["buf"], netpoll_has_buf))
            except RuntimeError as e:
                res = dict(ok=False, error=str(e))
            else:
                try:
                    cmd = bench_cmd(bins, sc, srv.addr, srv.pid, args, label)
                    timeout = (0 if sc.get("once") else args.duration) + 120
                    fn = kw.get("wrap")
                    if fn:
                        res = fn(srv.pid, lambda: run_bench(cmd, timeout))
                    else:
                        res = run_bench(cmd, timeout)
                    if srv.proc.poll() is not None:
                        res["ok"] = False
                        res["error"] = (res.get("error") or "") + \
                            f" server exited with {srv.proc.returncode}: {srv.log_text()[-300:]}"
                finally:
                    srv.stop()
        res.update(round=round_no, scenario=s, target=t)
        raw.write(json.dumps(res) + "\n")
        raw.flush()
        if not res.get("ok"):
            failures.append(f"round {round_no} {s} {t}: {res.get('error')}")
        log(f"round {round_no} {s:>2} {t:<8} "
            + ("ok  " if res.get("ok") else "FAIL")
            + f" msgs/s={fmt(res.get('msgs_per_s'))} p99={fmt(res.get('p99_us'))}us "
            f"cpu/msg={fmt(res.get('server_cpu_us_per_msg'), 2)}us"
            + (f" bytes/conn={fmt(res.get('server_rss_bytes_per_conn'), 0)}" if sc.get("once") else "")
            + ("" if res.get("ok") else f" error={res.get('error')}"))
        time.sleep(0.2)
        return res

    for rnd in range(1, args.rounds + 1):
        for s in args.scenarios:
            for t in args.targets:
                results.append(one(rnd, s, t))

    sysc: dict = {}
    if not args.no_syscalls and "s2" in args.scenarios:
        method = "perf" if have_perf_tracepoints() else ("strace" if shutil.which("strace") else None)
        if method is None:
            log("no perf tracepoints and no strace: skipping the syscall count")
        for t in args.targets if method else []:
            outfile = outdir / f"syscalls-{t}.txt"
            holder = {}

            def wrap(pid, run, outfile=outfile, holder=holder):
                res, counts = count_syscalls(method, pid, outfile, run)
                holder["counts"] = counts
                return res

            res = one(0, "s2", t, wrap=wrap)
            if res.get("ok"):
                sysc[t] = dict(method=method, msgs=res.get("msgs_total"), counts=holder.get("counts", {}))
                c = sysc[t]
                total = c["counts"].get("total") or sum(c["counts"].values())
                log(f"syscalls {t}: {total / max(1, c['msgs']):.2f} per message ({method})")

    profiles: dict = {}
    if args.profile and "s2" in args.scenarios and shutil.which("perf"):
        for t in [t for t in ("netpoll", "tokio-ct") if t in args.targets]:
            outfile = outdir / f"perf-{t}-s2.data"
            holder = {}

            def wrap(pid, run, outfile=outfile, holder=holder):
                res, text = profile(pid, outfile, run)
                holder["text"] = text
                return res

            one(0, "s2", t, wrap=wrap)
            profiles[t] = holder.get("text", "(no profile)")

    raw.close()
    elapsed = time.monotonic() - t0
    out = Path(args.out)
    write_report(out, args, mach, results, sysc, profiles, started, load_start, loadavg(),
                 elapsed, netpoll_has_buf, failures)
    log(f"wrote {out} ({elapsed:.0f} s); raw results in {outdir / 'results.jsonl'}")
    print(out.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
