#!/usr/bin/env bash
# Kernel bypass, end to end: netpoll's echo server on smoltcp over an AF_XDP socket bound to
# one end of a veth pair, reached from the kernel's TCP stack on the other end. Everything
# lives in a network namespace this script creates and deletes; no traffic leaves it. Needs
# root (CAP_NET_ADMIN and CAP_BPF), iproute2, ethtool and python3 (apt-get install iproute2
# ethtool python3).
#
#   bash hosted/scripts/xdp-echo.sh                      # build, run, echo twice, clean up
#   KEEP=1 bash hosted/scripts/xdp-echo.sh               # leave the server running
#   SERVER_ARGS="--buf 65536 --verbose" bash hosted/scripts/xdp-echo.sh
#   NS=mine bash hosted/scripts/xdp-echo.sh              # namespace name (default netpoll-xdp)
#   MTU=3500 bash hosted/scripts/xdp-echo.sh             # a larger MTU on both veth ends
#   BENCH=1 bash hosted/scripts/xdp-echo.sh              # then bulk echo: AF_XDP vs TAP
#
# BENCH=1 (ROUNDS=3, DURATION=3 seconds): after the check, bulk echo with netpoll-bench (one
# connection, 64 KiB messages, 4 in flight, every byte verified; the bulk workload of
# hosted/bench/tap.py) against `netpoll echo --buf 65536 --quiet` over AF_XDP and over TAP
# (TAP $TAP, 10.7.0.2, in the same namespace), alternating, a fresh server per run; prints
# each run's MB/s and server CPU, then the medians.
#
# Topology (one namespace, $NS):
#
#   kernel TCP 10.6.0.1 on npxk ===veth=== npxs: XDP program -> AF_XDP socket -> smoltcp 10.6.0.2
#
# XDP sees a frame as the peer handed it to the veth. With the kernel end's offloads on, its
# TCP segments carry checksums left for "hardware" to fill (and may be 64 KiB GSO frames),
# which smoltcp rejects; so the script turns them off with ethtool on both ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

NS=${NS:-netpoll-xdp}
KERNEL_END=${KERNEL_END:-npxk}
XDP_END=${XDP_END:-npxs}
TAP=${TAP:-npxt0}    # BENCH=1's TAP device
SMOL=10.6.0.2      # smoltcp's address (the server)
KERNEL=10.6.0.1    # the kernel's end of the veth (the client)
read -r -a EXTRA <<<"${SERVER_ARGS:-}"

for tool in ip ethtool python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "xdp-echo.sh needs $tool (apt-get install iproute2 ethtool python3)" >&2
    exit 1
  fi
done

BINS=(--bin netpoll)
[ -n "${BENCH:-}" ] && BINS+=(--bin netpoll-bench)
cargo build --release -q -p netpoll-hosted "${BINS[@]}"
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/netpoll

ip netns add "$NS"
cleanup() {
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  ip netns delete "$NS" 2>/dev/null || true
}
[ -z "${KEEP:-}" ] && trap cleanup EXIT

# 1. The veth pair, both ends in the namespace: the kernel's end gets the address, the other
#    end none (every frame arriving there goes to the AF_XDP socket).
ip -n "$NS" link set lo up
ip -n "$NS" link add "$KERNEL_END" type veth peer name "$XDP_END"
for end in "$KERNEL_END" "$XDP_END"; do
  # No IPv6 router solicitations or MLD reports for smoltcp to ignore.
  ip netns exec "$NS" sysctl -q -w "net.ipv6.conf.$end.disable_ipv6=1"
  ip netns exec "$NS" ethtool -K "$end" tx off rx off gso off tso off gro off >/dev/null 2>&1
done
if [ -n "${MTU:-}" ]; then
  # Both ends: veth drops a frame larger than the receiving end's MTU.
  ip -n "$NS" link set "$KERNEL_END" mtu "$MTU"
  ip -n "$NS" link set "$XDP_END" mtu "$MTU"
  EXTRA+=(--mtu "$MTU")
fi
ip -n "$NS" addr add "$KERNEL/24" dev "$KERNEL_END"
ip -n "$NS" link set "$KERNEL_END" up
ip -n "$NS" link set "$XDP_END" up

# 2. The server: an AF_XDP socket on queue 0 of the veth's other end (zero-copy tried, copy
#    mode on veth), smoltcp on it, listening on its own address (port 9009). Once it listens
#    it prints `listening IP:PORT` to stdout: read it from a pipe (sets SERVER and ADDR).
start_server() {
  local fifo
  fifo=$(mktemp -u)
  mkfifo "$fifo"
  ip netns exec "$NS" "$BIN" echo "$@" >"$fifo" &
  SERVER=$!
  exec 3<"$fifo"
  rm -f "$fifo"
  if ! read -r -t 30 WORD ADDR <&3 || [ "$WORD" != listening ]; then
    echo "netpoll echo did not report its address (got: ${WORD:-nothing} ${ADDR:-})" >&2
    exit 1
  fi
}
stop_server() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}
start_server --backend xdp --iface "$XDP_END" --addr "$SMOL/24" ${EXTRA[@]+"${EXTRA[@]}"}
echo "server: listening on $ADDR (AF_XDP on $XDP_END)"

# 3. A kernel TCP client: one short message, then 1 MiB echoed while it is being sent.
ip netns exec "$NS" python3 - "$ADDR" <<'PY'
import os, socket, sys, threading, time
host, port = sys.argv[1].rsplit(":", 1)

def echo(payload):
    s = socket.create_connection((host, int(port)), timeout=10)
    sender = threading.Thread(target=s.sendall, args=(payload,))
    t0 = time.monotonic()
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    sender.join()
    s.close()
    assert bytes(got) == payload, f"echoed {len(got)} of {len(payload)} bytes, or different ones"
    return time.monotonic() - t0

echo(b"hello over AF_XDP\n")
print("echoed: hello over AF_XDP")
secs = echo(os.urandom(1 << 20))
print(f"echoed 1 MiB in {secs * 1000:.0f} ms")
PY
echo "AF_XDP walkthrough OK (server PID $SERVER in namespace $NS)"
[ -z "${BENCH:-}" ] && exit 0

# 4. BENCH=1: bulk echo over AF_XDP and over TAP, alternating.
stop_server
BENCH_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/netpoll-bench
TAP_SMOL=10.7.0.2
RESULTS=$(mktemp)
for round in $(seq "${ROUNDS:-3}"); do
  for backend in xdp tap; do
    if [ "$backend" = xdp ]; then
      start_server --backend xdp --iface "$XDP_END" --addr "$SMOL/24" --buf 65536 --quiet \
        ${EXTRA[@]+"${EXTRA[@]}"}
    else
      start_server --backend tap --tap "$TAP" --addr "$TAP_SMOL/24" --buf 65536 --quiet \
        ${EXTRA[@]+"${EXTRA[@]}"}
      if ! ip -n "$NS" addr show dev "$TAP" | grep -q 10.7.0.1; then
        ip netns exec "$NS" sysctl -q -w "net.ipv6.conf.$TAP.disable_ipv6=1"
        ip -n "$NS" addr add 10.7.0.1/24 dev "$TAP"
      fi
      ip -n "$NS" link set "$TAP" up
    fi
    line=$(ip netns exec "$NS" "$BENCH_BIN" --allow-netns --addr "$ADDR" --server-pid "$SERVER" \
      --conns 1 --size 65536 --pipeline 4 --duration "$(( ${DURATION:-3} + 1 ))" --warmup 1 \
      --label "$backend")
    stop_server
    python3 -c 'import json, sys
r = json.loads(sys.argv[1])
cpu = 100 * r["server_cpu_s"] / r["duration_s"] if r.get("server_cpu_s") and r.get("duration_s") else 0
print(sys.argv[2], sys.argv[3], r["mb_per_s"], f"{cpu:.0f}")' "$line" "$round" "$backend" >>"$RESULTS"
    tail -1 "$RESULTS" | (read -r n b mbs cpu; echo "round $n $b: $mbs MB/s, server CPU $cpu% of a core")
  done
done
python3 - "$RESULTS" <<'PY'
import statistics, sys
runs = {}
cpus = {}
for line in open(sys.argv[1]):
    _, backend, mbs, cpu = line.split()
    runs.setdefault(backend, []).append(float(mbs))
    cpus.setdefault(backend, []).append(float(cpu))
for backend, v in runs.items():
    print(f"bulk echo over {backend}: median {statistics.median(v):.1f} MB/s "
          f"[{min(v):.1f}-{max(v):.1f}] over {len(v)} runs, server CPU "
          f"{statistics.median(cpus[backend]):.0f}% of a core")
if "xdp" in runs and "tap" in runs:
    print(f"AF_XDP / TAP: {statistics.median(runs['xdp']) / statistics.median(runs['tap']):.2f}x")
PY
rm -f "$RESULTS"
