#!/usr/bin/env python3
"""netpoll's benchmark suite: `netpoll echo` against tokio, side by side, in one run.

    python3 hosted/bench/run.py            # builds release, runs everything, writes BENCHMARKS.md

Builds `netpoll`, `netpoll-bench` (the load generator) and the `tokio_echo` example in release
mode, then runs five scenarios against the servers, interleaved (netpoll, tokio
current-thread, netpoll with 2 workers, tokio multi-thread; again; ...) for --rounds rounds, a
fresh server process per run (each reports its address on stdout: `listening <ip:port>`):

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
counts go to <target>/bench/ (e.g. target/bench/results.jsonl).

Useful options: --rounds N, --duration SECS, --scenarios s2,s4, --targets netpoll,tokio-ct,
--no-build, --no-syscalls, --profile, --note TEXT. Needs root (or perf_event_paranoid <= 1)
only for the perf parts; without perf it falls back to strace, without both it skips them.

Only the standard library (and hosted/bench/benchlib.py, shared by the benchmark scripts);
loopback only; every child has a timeout; only the server and perf/strace processes this script
started are ever signalled. Exit status 1 if any run failed.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import benchlib as bl
from benchlib import REPO, cell, fmt, log, med

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


# ------------------------------------------------------------------------------------------
# Servers and the client


def server_cmd(target: str, bins: dict, buf: int, netpoll_has_buf: bool) -> list[str]:
    listen = ["--listen", "127.0.0.1:0", "--quiet"]
    if target in ("netpoll", "netpoll-mt"):
        workers = "1" if target == "netpoll" else "2"
        cmd = [str(bins["netpoll"]), "echo", *listen, "--workers", workers]
        if buf != 128 and netpoll_has_buf:
            cmd += ["--buf", str(buf)]
        return cmd
    flavor = "current" if target == "tokio-ct" else "multi"
    return [str(bins["tokio_echo"]), "--flavor", flavor, *listen, "--buf", str(buf)]


def bench_cmd(bins: dict, sc: dict, addr: str, pid: int, args, label: str,
              duration: float | None = None, warmup: float | None = None) -> list[str]:
    cmd = [str(bins["netpoll-bench"]), "--addr", addr, "--server-pid", str(pid),
           "--conns", str(sc["conns"]), "--size", str(sc["size"]),
           "--threads", str(args.client_threads), "--label", label]
    if sc.get("once"):
        cmd += ["--once"]
    else:
        cmd += ["--duration", str(args.duration if duration is None else duration),
                "--warmup", str(args.warmup if warmup is None else warmup)]
    return cmd


# ------------------------------------------------------------------------------------------
# The report


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
    w("Generated by `hosted/bench/run.py` (the benchmark harness). Every number below comes from one "
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

    # The targets.
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
    w("## Targets (medians of this run)\n")
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
    bl.init("bench")
    ap = bl.parser(__doc__, rounds=3, duration=3.0, warmup=0.5, out=str(REPO / "BENCHMARKS.md"),
                   note=True, no_build=True)
    ap.add_argument("--scenarios", default="s1,s2,s3,s4,s5")
    ap.add_argument("--targets", default="netpoll,tokio-ct,netpoll-mt,tokio-mt")
    ap.add_argument("--client-threads", type=int, default=1)
    ap.add_argument("--no-syscalls", action="store_true", help="skip the s2 syscall count")
    ap.add_argument("--profile", action="store_true",
                    help="perf record the netpoll and tokio current-thread servers during s2")
    ap.add_argument("--budget", type=float, default=570,
                    help="seconds after which remaining runs are skipped (reported as failures)")
    args = ap.parse_args()
    args.scenarios = bl.comma_list(args.scenarios, SCENARIOS, "scenario")
    args.targets = bl.comma_list(args.targets, TARGETS, "target")
    shown, skip = [], False
    for a in sys.argv[1:]:  # the command as run, less the free-text note
        if skip or a.startswith("--note"):
            skip = a == "--note" and not skip
            continue
        shown.append(shlex.quote(a))
    args.command_line = " ".join(["python3 hosted/bench/run.py", *shown])

    t0 = time.monotonic()
    started = bl.utc_now() + " UTC"
    load_start = bl.loadavg()
    bins = bl.build(["netpoll", "netpoll-bench"], ["tokio_echo"], no_build=args.no_build)
    nofile = bl.raise_nofile()
    if nofile < 2 * 10000 + 200 and "s4" in args.scenarios:
        log(f"warning: the open-file limit is {nofile}; s4 needs 10,000 per process")
    help_text = bl.sh([str(bins["netpoll"]), "echo", "--help"], check=False).stdout
    netpoll_has_buf = "--buf" in help_text
    if not netpoll_has_buf:
        log("`netpoll echo` has no --buf option: s5 runs netpoll with its 128-byte buffer")
    mach = bl.machine()
    outdir = bl.target_dir() / "bench"
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
                srv = bl.Server(t, server_cmd(t, bins, sc["buf"], netpoll_has_buf))
            except RuntimeError as e:
                res = dict(ok=False, error=str(e))
            else:
                try:
                    cmd = bench_cmd(bins, sc, srv.addr, srv.pid, args, label)
                    timeout = (0 if sc.get("once") else args.duration) + 120
                    fn = kw.get("wrap")
                    if fn:
                        res = fn(srv.pid, lambda: bl.run_json(cmd, timeout, "netpoll-bench"))
                    else:
                        res = bl.run_json(cmd, timeout, "netpoll-bench")
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

    plan = [(s, t) for s in args.scenarios for t in args.targets]
    for rnd, (s, t) in bl.rounds(args.rounds, plan):
        results.append(one(rnd, s, t))

    sysc: dict = {}
    if not args.no_syscalls and "s2" in args.scenarios:
        method = "perf" if bl.have_perf_tracepoints() else ("strace" if shutil.which("strace") else None)
        if method is None:
            log("no perf tracepoints and no strace: skipping the syscall count")
        for t in args.targets if method else []:
            outfile = outdir / f"syscalls-{t}.txt"
            holder = {}

            def wrap(pid, run, outfile=outfile, holder=holder):
                res, counts = bl.count_syscalls(method, pid, outfile, run, SYSCALLS)
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
                res, text = bl.profile(pid, outfile, run)
                holder["text"] = text
                return res

            one(0, "s2", t, wrap=wrap)
            profiles[t] = holder.get("text", "(no profile)")

    raw.close()
    elapsed = time.monotonic() - t0
    out = Path(args.out)
    write_report(out, args, mach, results, sysc, profiles, started, load_start, bl.loadavg(),
                 elapsed, netpoll_has_buf, failures)
    log(f"wrote {out} ({elapsed:.0f} s); raw results in {outdir / 'results.jsonl'}")
    print(out.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
