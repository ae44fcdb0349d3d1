#!/usr/bin/env bash
# netpoll on a microcontroller: builds drivers/mcu-demo for a Cortex-M4 (thumbv7em-none-eabihf)
# and runs it under QEMU's MPS2 AN386 board. The demo runs netpoll's scheduler and the smoltcp
# backend on the in-memory wire in a 192 KiB heap: two hosts, four TCP echo connections checked
# byte for byte. It prints one result line through semihosting and exits 0 only on success.
# Installs nothing; needs qemu-system-arm (apt-get install -y qemu-system-arm) and the Rust
# target (rustup target add thumbv7em-none-eabihf).
#
#   bash hosted/scripts/mcu-demo.sh                   # build, run, fail on a non-zero exit
#   RUN_TIMEOUT=300 bash hosted/scripts/mcu-demo.sh   # seconds QEMU may run (default 120)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET=thumbv7em-none-eabihf
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}

fail() { echo "mcu-demo: $*" >&2; exit 1; }

command -v cargo >/dev/null || fail "no cargo on PATH"
[ -d "$(rustc --print sysroot)/lib/rustlib/$TARGET" ] ||
  fail "the Rust target $TARGET is not installed (rustup target add $TARGET)"
command -v qemu-system-arm >/dev/null ||
  fail "no qemu-system-arm (apt-get install -y qemu-system-arm)"
qemu-system-arm -machine help | grep -q '^mps2-an386 ' ||
  fail "this qemu-system-arm has no mps2-an386 machine (QEMU 6.0 or later needed)"
command -v timeout >/dev/null || fail "no timeout (coreutils)"

# 1. Build (drivers/mcu-demo/.cargo/config.toml picks the target and cortex-m-rt's link script).
(cd drivers/mcu-demo && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q)
ELF=$TARGET_DIR/$TARGET/release/netpoll-mcu-demo

# 2. Flash and RAM use, when LLVM's size tool is at hand (rustup component add llvm-tools).
SIZE=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-size 2>/dev/null | head -n 1 || true)
if [ -n "$SIZE" ]; then
  "$SIZE" -A "$ELF" | awk '$1 ~ /^\.(vector_table|text|rodata|data|bss)$/ { print "mcu-demo: " $1 " " $2 " B" }'
fi

# 3. Run: the same command as the runner in drivers/mcu-demo/.cargo/config.toml. Semihosting
#    carries the demo's output and its exit status out of the guest.
set +e
OUTPUT=$(timeout "$RUN_TIMEOUT" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
  -semihosting-config enable=on,target=native -kernel "$ELF" </dev/null 2>&1)
STATUS=$?
set -e
printf '%s\n' "$OUTPUT"
[ "$STATUS" -ne 124 ] || fail "no exit within $RUN_TIMEOUT s (RUN_TIMEOUT)"
[ "$STATUS" -eq 0 ] || fail "the demo exited with status $STATUS"
grep -q '^netpoll-mcu-demo: ok:' <<<"$OUTPUT" || fail "exit status 0 but no result line"
echo "mcu-demo: passed"
