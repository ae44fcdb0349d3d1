#!/usr/bin/env bash
# The TAP walkthrough, end to end: netpoll's echo server on smoltcp over a TAP device, reached
# from the kernel's TCP stack. Everything lives in a network namespace this script creates and
# deletes; no traffic leaves it. Needs root (or CAP_NET_ADMIN), iproute2 and python3.
#
#   bash hosted/scripts/tap-echo.sh            # build, run, send one message, clean up
#   KEEP=1 bash hosted/scripts/tap-echo.sh     # leave the server running in the namespace
#   SERVER_ARGS="--buf 65536 --verbose" bash hosted/scripts/tap-echo.sh   # more server options
#   SERVER_ARGS="--mtu 9000" bash hosted/scripts/tap-echo.sh   # jumbo frames (the server sets the TAP's MTU)
#   NS=mine bash hosted/scripts/tap-echo.sh    # namespace name (default netpoll-demo)
set -euo pipefail
cd "$(dirname "$0")/../.."

NS=${NS:-netpoll-demo}
TAP=${TAP:-nptap0}
SMOL=10.7.0.2      # smoltcp's address (the server)
KERNEL=10.7.0.1    # the kernel side of the TAP link (the client)
read -r -a EXTRA <<<"${SERVER_ARGS:-}"

cargo build --release -q -p netpoll-hosted --bin netpoll
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/netpoll

ip netns add "$NS"
cleanup() {
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  ip netns delete "$NS" 2>/dev/null || true
}
[ -z "${KEEP:-}" ] && trap cleanup EXIT

# 1. The server creates the TAP device inside the namespace and runs smoltcp on it, listening
#    on its own address (port 9009 without --listen). Once it listens it prints one line,
#    `listening IP:PORT`, to stdout: read it from a pipe instead of guessing when it is ready.
FIFO=$(mktemp -u)
mkfifo "$FIFO"
ip netns exec "$NS" "$BIN" echo --backend tap --tap "$TAP" --addr "$SMOL/24" \
  ${EXTRA[@]+"${EXTRA[@]}"} >"$FIFO" &
SERVER=$!
exec 3<"$FIFO"
rm -f "$FIFO"
if ! read -r -t 30 WORD ADDR <&3 || [ "$WORD" != listening ]; then
  echo "netpoll echo did not report its address (got: ${WORD:-nothing} ${ADDR:-})" >&2
  exit 1
fi
echo "server: listening on $ADDR"

# 2. Give the kernel side of the link an address and bring it up.
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$KERNEL/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up

# 3. A kernel TCP client in the namespace talks to smoltcp (nc or curl work the same way).
ip netns exec "$NS" python3 - "$ADDR" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(b"hello from the kernel\n")
got = b""
while len(got) < 22:
    chunk = s.recv(128)
    if not chunk:
        break
    got += chunk
print("echoed:", got.decode().strip())
assert got == b"hello from the kernel\n", got
PY
echo "TAP walkthrough OK (server PID $SERVER in namespace $NS)"
