#!/usr/bin/env bash
# netpoll as an x86_64 UEFI unikernel: builds drivers/uefi-echo, boots it under QEMU (TCG)
# with OVMF and a virtio-net NIC on a TAP device, and checks its echo server from the kernel's
# TCP stack. Everything lives in a network namespace this script creates and deletes; no
# traffic leaves it. Needs root (or CAP_NET_ADMIN), iproute2, python3, qemu-system-x86, ovmf
# (apt-get install -y qemu-system-x86 ovmf) and the Rust target x86_64-unknown-uefi
# (rustup target add x86_64-unknown-uefi).
#
#   bash hosted/scripts/uefi-echo.sh            # build, boot, check, clean up
#   KEEP=1 bash hosted/scripts/uefi-echo.sh     # leave the guest running in the namespace
#   NS=name bash hosted/scripts/uefi-echo.sh    # namespace name (default netpoll-uefi)
#   QUICK=1 bash hosted/scripts/uefi-echo.sh    # one echo only, no heavy check
#   IDLE_CPU=1 bash hosted/scripts/uefi-echo.sh # also measure QEMU's CPU over 10 s of idle
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

NS=${NS:-netpoll-uefi}
TAP=${TAP:-npuefi0}
GUEST=10.8.0.2    # smoltcp in the guest (the server)
KERNEL=10.8.0.1   # the kernel side of the TAP link (the client)
PORT=9009
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# OVMF's code and variable store, as a matching pair (Debian: ovmf).
OVMF_CODE="" OVMF_VARS=""
for size in _4M ""; do
  if [ -f "/usr/share/OVMF/OVMF_CODE$size.fd" ] && [ -f "/usr/share/OVMF/OVMF_VARS$size.fd" ]; then
    OVMF_CODE=/usr/share/OVMF/OVMF_CODE$size.fd OVMF_VARS=/usr/share/OVMF/OVMF_VARS$size.fd
    break
  fi
done
[ -n "$OVMF_CODE" ] || { echo "uefi-echo: no OVMF firmware (apt-get install -y ovmf)" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null ||
  { echo "uefi-echo: no qemu-system-x86_64 (apt-get install -y qemu-system-x86)" >&2; exit 1; }

# 1. Build the UEFI application and lay out an EFI system partition as a directory.
(cd drivers/uefi-echo && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q)
EFI=$TARGET_DIR/x86_64-unknown-uefi/release/netpoll-uefi-echo.efi
WORK=$(mktemp -d /tmp/netpoll-uefi.XXXXXX)
mkdir -p "$WORK/esp/EFI/BOOT"
cp "$EFI" "$WORK/esp/EFI/BOOT/BOOTX64.EFI"
cp "$OVMF_VARS" "$WORK/vars.fd"
SERIAL=$WORK/serial.log
: > "$SERIAL"

cleanup() {
  if [ -n "${QEMU_PID:-}" ]; then
    kill "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
  fi
  ip netns delete "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# 2. The namespace, its TAP device (QEMU's end of the guest's NIC) and the kernel's address.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" tuntap add dev "$TAP" mode tap
ip -n "$NS" addr add "$KERNEL/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up

# 3. Boot. romfile= keeps QEMU's iPXE ROM out, so the firmware has no driver of its own
# polling the NIC; -no-reboot turns a guest reset into an exit.
START=$(date +%s%N)
ip netns exec "$NS" qemu-system-x86_64 -accel tcg -m 512M -nographic -no-reboot \
  -drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE" \
  -drive "if=pflash,format=raw,file=$WORK/vars.fd" \
  -drive "format=raw,file=fat:rw:$WORK/esp" \
  -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
  -device "virtio-net-pci,netdev=n0,romfile=" \
  </dev/null >"$SERIAL" 2>&1 &
QEMU_PID=$!

# 4. Wait for the guest to say it listens.
deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
until grep -q "netpoll echo: listening on" "$SERIAL"; do
  if ! kill -0 "$QEMU_PID" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
    echo "uefi-echo: the guest did not listen within ${BOOT_TIMEOUT} s; its console:" >&2
    tr -d '\033' < "$SERIAL" | tail -40 >&2
    exit 1
  fi
  sleep 0.2
done
BOOT_MS=$(( ($(date +%s%N) - START) / 1000000 ))
echo "guest: $(tr -d '\r\033' < "$SERIAL" | grep -ao "netpoll echo: listening on.*")"
echo "boot to listening: $BOOT_MS ms (QEMU start to the guest's line, TCG)"

# 5. Check it from the kernel's TCP stack in the namespace.
if [ -n "${QUICK:-}" ]; then
  ip netns exec "$NS" python3 - "$GUEST" "$PORT" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"hello from the kernel\n")
s.shutdown(socket.SHUT_WR)
got = b""
while True:
    chunk = s.recv(128)
    if not chunk:
        break
    got += chunk
print("echoed:", got.decode().strip())
assert got == b"hello from the kernel\n", got
PY
else
  ip netns exec "$NS" python3 hosted/scripts/uefi_echo_check.py "$GUEST" "$PORT"
fi

# 6. Idle cost: QEMU's user+system CPU time over 10 s with no traffic (after 5 s for the
# connections above to finish), as a share of one host core.
if [ -n "${IDLE_CPU:-}" ]; then
  sleep 5
  hz=$(getconf CLK_TCK)
  cpu() { awk '{print $14 + $15}' "/proc/$QEMU_PID/stat"; }
  before=$(cpu); sleep 10; after=$(cpu)
  awk -v t=$((after - before)) -v hz="$hz" \
    'BEGIN { printf "idle guest: %.1f%% of one host core (QEMU CPU over 10 s)\n", 100 * t / (hz * 10) }'
fi

# 7. The guest must still be alive and have logged no panic.
sleep 1
if ! kill -0 "$QEMU_PID" 2>/dev/null || grep -aqi "panic" "$SERIAL"; then
  echo "uefi-echo: the guest stopped or panicked; its console:" >&2
  tr -d '\033' < "$SERIAL" | tail -40 >&2
  exit 1
fi

if [ -n "${KEEP:-}" ]; then
  trap - EXIT
  echo "UEFI echo OK; the guest keeps running (QEMU PID $QEMU_PID, console log $SERIAL)."
  echo "  reach it:  ip netns exec $NS nc $GUEST $PORT"
  echo "  stop it:   kill $QEMU_PID; ip netns delete $NS; rm -rf $WORK"
else
  echo "UEFI echo OK (guest $GUEST:$PORT in namespace $NS)"
fi
