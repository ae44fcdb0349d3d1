"""What netpoll's benchmark scripts share (hosted/bench/{run,tap,conns,synflood,lossy}.py).

Command line (argparse with the common options), logging, building the benchmark targets,
child processes that die with the script, servers that report their address on stdout
(`listening <ip:port>`, one line, nothing else there), network namespaces, TAP and link
counters, /proc readers (server CPU and RSS, the machine's busy time from /proc/stat), perf
syscall counts and profiles, interleaved rounds, medians and table cells, and the writing of a
script's section of BENCHMARKS.md with its hand-written notes kept.

Only the standard library. Every child has a deadline; only processes a script started are
ever signalled (by their own pid); only namespaces a script made (or a killed run of it left)
are deleted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import queue
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The name in log lines and fatal errors ("[tap-bench 12:00:00] ...", "tap-bench: ...").
NAME = "bench"

PR_SET_PDEATHSIG = 1


def init(name: str) -> None:
    global NAME
    NAME = name


def log(msg: str) -> None:
    print(f"[{NAME} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg: str):
    sys.exit(f"{NAME}: {msg}")


def sh(cmd: list[str], timeout: float = 30, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Runs `cmd` to completion (text output captured); with `check`, a failure raises."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return r


def emit(obj: dict) -> None:
    """One JSON line on stdout (the child roles' way of reporting to the script)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------
# Command line


def parser(doc: str, **defaults) -> argparse.ArgumentParser:
    """An ArgumentParser described by the first line of `doc`, with the common options each
    script asks for by giving its default: rounds, duration, warmup (numbers; None: the
    script decides), and the flags out, note, no_build, bin, no_write, quick (any value)."""
    ap = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    if "rounds" in defaults:
        ap.add_argument("--rounds", type=int, default=defaults["rounds"])
    if "duration" in defaults:
        ap.add_argument("--duration", type=float, default=defaults["duration"],
                        help="seconds of load per run")
    if "warmup" in defaults:
        ap.add_argument("--warmup", type=type(defaults["warmup"] or 0.0),
                        default=defaults["warmup"], help="leading part not measured")
    if "out" in defaults:
        ap.add_argument("--out", default=defaults["out"], help="the report to write")
    if "note" in defaults:
        ap.add_argument("--note", default="", help="a note printed at the top of the report")
    if "no_build" in defaults:
        ap.add_argument("--no-build", action="store_true",
                        help="use the existing release binaries")
    if "bin" in defaults:
        ap.add_argument("--bin", help="use this netpoll binary (no build)")
    if "no_write" in defaults:
        ap.add_argument("--no-write", action="store_true", help="print the report only")
    if "quick" in defaults:
        ap.add_argument("--quick", action="store_true", help="the smallest run (smoke test)")
    return ap


def comma_list(text: str, known, what: str) -> list[str]:
    """`a,b,c` as a list; an unknown item is a fatal error naming the known ones."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    for x in items:
        if x not in known:
            die(f"unknown {what} {x!r} (known: {', '.join(known)})")
    return items


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        die(f"needs root ({why})")


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP end the run through the `finally` blocks, like Ctrl-C."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)


def rotated(items: list, rnd: int) -> list:
    """`items` in the order of round `rnd` (from 1): each round starts one item later, so no
    item always runs first."""
    k = (rnd - 1) % len(items) if items else 0
    return items[k:] + items[:k]


def rounds(n: int, items: list, rotate: bool = False):
    """(round, item) for `n` interleaved rounds over `items` (every item once per round),
    optionally `rotated`."""
    for rnd in range(1, n + 1):
        for item in rotated(items, rnd) if rotate else items:
            yield rnd, item


# ------------------------------------------------------------------------------------------
# Build and environment


def git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def target_dir() -> Path:
    """Cargo's target directory ($CARGO_TARGET_DIR, else what cargo metadata says)."""
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]).resolve()
    meta = json.loads(sh(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                         cwd=REPO, timeout=120).stdout)
    return Path(meta["target_directory"])


def build(bins: list[str] = (), examples: list[str] = (), no_build: bool = False,
          cwd: Path = REPO, env: dict | None = None) -> dict[str, Path]:
    """Builds netpoll-hosted's `bins` and `examples` in release mode (unless `no_build`) and
    returns their paths by name; a missing one is a fatal error."""
    rel = target_dir() / "release"
    cmd = ["cargo", "build", "--release", "-p", "netpoll-hosted"]
    for b in bins:
        cmd += ["--bin", b]
    for e in examples:
        cmd += ["--example", e]
    if not no_build:
        log("building: " + shlex.join(cmd))
        if subprocess.run(cmd, cwd=cwd, env=env, timeout=3600).returncode != 0:
            die("the release build failed")
    paths = {b: rel / b for b in bins}
    paths.update({e: rel / "examples" / e for e in examples})
    for p in paths.values():
        if not p.exists():
            die(f"{p} is missing (run without --no-build)")
    return paths


def tree(binary: Path | None = None) -> str:
    """What was measured: the commit, and the uncommitted changes to the code that was built."""
    commit = git("rev-parse", "--short", "HEAD")
    if binary is not None:
        return f"prebuilt binary {binary} (checkout at {commit})"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "core", "stack",
                "drivers", "hosted/src", "Cargo.toml", "Cargo.lock")
    desc = f"commit {commit}"
    if dirty:
        desc += " plus uncommitted changes to " + ", ".join(l[3:] for l in dirty.splitlines())
    return desc


def netpoll_binary(args) -> tuple[Path, str]:
    """The `netpoll` binary: --bin if given, else built (or with --no-build, found) in release
    mode; and a description of the tree it was built from."""
    if getattr(args, "bin", None):
        p = Path(args.bin).resolve()
        if not p.exists():
            die(f"{p} does not exist")
        return p, tree(p)
    p = build(["netpoll"], no_build=getattr(args, "no_build", False))["netpoll"]
    return p, tree()


def raise_nofile(need: int | None = None) -> int:
    """Raises the soft open-file limit to `need` (fatal if the hard limit is lower), or to the
    hard limit; returns the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need is not None:
        if hard != resource.RLIM_INFINITY and hard < need:
            die(f"need {need} descriptors, the hard limit is {hard}")
        if soft != resource.RLIM_INFINITY and soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return hard
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine() -> dict:
    """CPUs, CPU model, RAM, kernel, rustc and commit of this run."""
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
    rustc = sh(["rustc", "--version"], check=False).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return dict(nproc=os.cpu_count(), cpu=cpu, kernel=platform.release(), mem=mem, rustc=rustc,
                commit=commit + (" (work tree with uncommitted changes)" if dirty else ""))


def machine_text(rustc: bool = True) -> str:
    m = machine()
    text = f"{m['nproc']} CPUs: {m['cpu']}; {m['mem']} RAM; Linux {m['kernel']}"
    return text + (f"; {m['rustc']}" if rustc else "")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def utc_now(fmt: str = "%Y-%m-%d %H:%M") -> str:
    return time.strftime(fmt, time.gmtime())


# ------------------------------------------------------------------------------------------
# /proc readers


def cpu_s(pid: int) -> float | None:
    """utime + stime of `pid` (all its threads), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = stat[stat.rfind(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def busy_s(irq: bool = False) -> float:
    """CPU time all processes of the machine spent (user, nice, system; with `irq` also irq,
    softirq and steal), in seconds, from /proc/stat."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    fields = f[1:4] + (f[6:9] if irq else [])
    return sum(int(x) for x in fields) / os.sysconf("SC_CLK_TCK")


def ours_s() -> float:
    """CPU time of this script and its reaped children (a client, once it exited)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


# ------------------------------------------------------------------------------------------
# Child processes and servers


def die_with_parent(cpu: int | None = None):
    """preexec_fn: the child gets SIGTERM when this script dies, and optionally a CPU."""

    def f():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except OSError:
            pass
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return f


def stop_proc(p: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (a process this script started)."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


class Child:
    """A process this script started; the only kind it ever signals (by its own pid). Its
    stderr goes to `errpath` (or a temporary file); with stdout=PIPE, a thread queues its
    stdout lines (a select on a buffered pipe would miss a second line that came with the
    first)."""

    def __init__(self, cmd: list[str], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 errpath: Path | None = None, cpu: int | None = None):
        self.cmd = cmd
        self.err = open(errpath, "w+") if errpath else tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=self.err,
                                     text=True, preexec_fn=die_with_parent(cpu))
        self.lines: queue.Queue = queue.Queue()
        if stdout == subprocess.PIPE:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # end of output

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float) -> str | None:
        """The next stdout line, or None at the end of its output or after `timeout`."""
        try:
            return self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def next(self, timeout: float) -> dict | None:
        """The next JSON line of stdout, or None at its end or after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(deadline - time.monotonic())
            if line is None:
                return None
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    pass

    def stderr_text(self) -> str:
        self.err.flush()
        self.err.seek(0)
        return self.err.read()

    def stop(self, grace: float = 10) -> None:
        stop_proc(self.proc, grace)
        self.err.close()


class Server(Child):
    """A server this script started that reports its address on stdout: one line
    `listening <ip:port>` once it listens. `addr` is that address; a server that exits or says
    nothing within `timeout` seconds is stopped and raises RuntimeError."""

    def __init__(self, name: str, cmd: list[str], timeout: float = 10, **kw):
        super().__init__(cmd, stdout=subprocess.PIPE, **kw)
        self.name = name
        self.addr = None
        first = self.line(timeout)
        m = re.fullmatch(r"listening (\S+)", first or "")
        if m:
            self.addr = m.group(1)
            return
        err = self.stderr_text()
        self.stop()
        said = f"said {first!r} on stdout" if first else "reported no address"
        raise RuntimeError(f"{name} did not start ({shlex.join(cmd)}; {said}): "
                           f"{err.strip()[-500:]}")

    def log_text(self) -> str:
        return self.stderr_text()

    def cpu_s(self) -> float | None:
        return cpu_s(self.pid)


def run_json(cmd: list[str], timeout: float, name: str = "client") -> dict:
    """Runs a client that prints one JSON line: its result, with ok=False and the reason
    if it failed, timed out or printed none."""
    try:
        r = sh(cmd, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"{name} timed out after {timeout:.0f}s")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        return dict(ok=False, error=f"{name} exit {r.returncode}: {r.stderr.strip()[-400:]}")
    res = json.loads(lines[-1])
    if r.returncode != 0:
        res["ok"] = False
        res["error"] = res.get("error") or r.stderr.strip()[-400:]
    return res


def gdb_backtrace(pid: int, keep: int = 6000) -> str:
    """Every thread's stack of a live process (for the evidence of a stuck run)."""
    try:
        return sh(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 20"],
                  check=False, timeout=60).stdout[-keep:]
    except (subprocess.TimeoutExpired, OSError) as e:
        return str(e)


# ------------------------------------------------------------------------------------------
# Network namespaces and links


def make_netns(name: str, port_range: bool = False) -> None:
    """A namespace with loopback up and no IPv6 chatter (router solicitations, DAD) on the
    measured links; `port_range`: the widest local port range, for many client connections."""
    sh(["ip", "netns", "add", name])
    sh(["ip", "-n", name, "link", "set", "lo", "up"])
    settings = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
    if port_range:
        settings.append("net.ipv4.ip_local_port_range=1024 65535")
    sh(["ip", "netns", "exec", name, "sysctl", "-qw", *settings], check=port_range)


def delete_netns(name: str) -> None:
    r = sh(["ip", "netns", "delete", name], check=False)
    if r.returncode != 0:
        log(f"could not delete namespace {name}: {r.stderr.strip()}")


def remove_stale_namespaces(prefix: str) -> None:
    """Deletes `<prefix><pid>-...` namespaces left by a killed run of the script (its pid is
    gone); never those of a run still going."""
    r = sh(["ip", "netns", "list"], check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            log(f"deleting namespace {name}, left by a killed run")
            sh(["ip", "netns", "delete", name], check=False)


def wait_for_link(ns: str, dev: str, timeout: float = 10, server: Child | None = None) -> None:
    """Waits until `dev` exists in `ns` (a TAP device its server creates)."""
    deadline = time.monotonic() + timeout
    while sh(["ip", "-n", ns, "link", "show", dev], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"TAP device {dev} did not appear in {ns}")
        if server is not None and server.proc.poll() is not None:
            raise RuntimeError("server exited: " + server.stderr_text()[-400:])
        time.sleep(0.05)


def link_stats(ns: str, dev: str) -> dict:
    """Packet and drop counters of a link (`ip -s -j link`); {} or {error} if unreadable."""
    try:
        r = sh(["ip", "-n", ns, "-s", "-j", "link", "show", dev], check=False, timeout=20)
        s = json.loads(r.stdout or "[]")[0]["stats64"]
        return dict(tx_packets=s["tx"]["packets"], tx_dropped=s["tx"]["dropped"],
                    rx_packets=s["rx"]["packets"], rx_dropped=s["rx"]["dropped"])
    except (subprocess.TimeoutExpired, OSError, ValueError, KeyError, IndexError) as e:
        return dict(error=str(e))


def nstat(ns: str, keep: tuple[str, ...]) -> dict:
    """The kernel's TCP counters `keep` in namespace `ns` (absolute values)."""
    c: dict = {}
    try:
        txt = sh(["ip", "netns", "exec", ns, "nstat", "-asz"], check=False, timeout=20).stdout
        for line in txt.splitlines():
            f = line.split()
            if len(f) >= 2 and f[0] in keep:
                c[f[0]] = int(f[1])
    except (subprocess.TimeoutExpired, OSError, ValueError) as e:
        c["error"] = str(e)
    return c


# ------------------------------------------------------------------------------------------
# perf: syscall counts and profiles of a server


def have_perf_tracepoints() -> bool:
    if not shutil.which("perf"):
        return False
    try:
        r = sh(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"], check=False)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return (r.returncode == 0 and "raw_syscalls:sys_enter" in r.stderr
            and "not supported" not in r.stderr)


def _attached(cmd: list[str], run, grace: float):
    """Runs `cmd` (a tracer attached to a server) around run(); returns run's result."""
    tracer = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    try:
        return run()
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait(timeout=5)


def count_syscalls(method: str, pid: int, outfile: Path, run,
                   names: list[str]) -> tuple[dict, dict]:
    """Attaches `perf stat` (the total and each of `names`) or `strace -c` to `pid` for run();
    returns (run's result, counts by syscall name, "total" for all)."""
    if method == "perf":
        events = ["-e", "raw_syscalls:sys_enter"]
        for s in names:
            events += ["-e", f"syscalls:sys_enter_{s}"]
        cmd = ["perf", "stat", "-x,", "-o", str(outfile), *events, "-p", str(pid)]
    else:
        cmd = ["strace", "-c", "-f", "-q", "-o", str(outfile), "-p", str(pid)]
    res = _attached(cmd, run, 30)
    counts: dict[str, int] = {}
    text = outfile.read_text() if outfile.exists() else ""
    for line in text.splitlines():
        if method == "perf":
            parts = line.split(",")
            if len(parts) < 3 or line.startswith("#") or not parts[0].isdigit():
                continue
            name = "total" if parts[2] == "raw_syscalls:sys_enter" else \
                parts[2].split(":")[-1].replace("sys_enter_", "")
            counts[name] = int(parts[0])
        else:
            f = line.split()
            if len(f) >= 5 and f[-1] != "syscall" and f[0][0].isdigit():
                counts["total" if f[-1] == "total" else f[-1]] = int(f[3]) if f[3].isdigit() else 0
    return res, counts


def profile(pid: int, outfile: Path, run) -> tuple[dict, str]:
    """perf record (cpu-clock, all threads of `pid`) during run(); returns (run's result, the
    top binaries and symbols)."""
    cmd = ["perf", "record", "-F", "999", "-o", str(outfile), "-p", str(pid)]
    res = _attached(cmd, run, 60)

    def report(sort: str, limit: str, keep: int) -> list[str]:
        r = sh(["perf", "report", "--stdio", "--no-children", "-i", str(outfile), "--sort",
                sort, "--percent-limit", limit], timeout=120, check=False)
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
# Statistics and report text


def med(xs):
    """The median of the values that are not None (None if there are none)."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(sorted_vals: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank) of sorted values; None if there are none."""
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def fmt(x, digits=1) -> str:
    """A rate or latency for a table: whole numbers from 100 up, thousands separated from
    10,000 up, else `digits` decimals; — for none."""
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


def num(v, nd: int = 0) -> str:
    """A number with thousands separators and `nd` decimals; — for none or NaN."""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:,.{nd}f}"


def write_section(path: Path, text: str, heading: str, marker: str) -> None:
    """Replaces the section `heading` of the report at `path` with `text`, keeping what
    follows `marker` up to the next level-2 heading (hand-written notes), or appends the
    section; the rest of the file is kept. The file is read right before it is written, so
    sections others added meanwhile are kept."""
    old = path.read_text() if path.exists() else ""
    notes = marker + "\n"
    start = old.find(heading + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text + "\n" + notes
    else:
        nxt = old.find("\n## ", start + len(heading))
        end = len(old) if nxt < 0 else nxt + 1
        body = old[start:end]
        m = body.find(marker)
        if m >= 0:
            notes = body[m:].rstrip("\n") + "\n"
        new = old[:start] + text + "\n" + notes + ("\n" + old[end:] if nxt >= 0 else "")
    path.write_text(new)
