"""Checks netpoll's UEFI echo guest from a kernel TCP client (run inside the namespace).

Usage: python3 uefi_echo_check.py HOST PORT

Prints one line per check and, last, the figures: echo p50/p99 latency and bulk MB/s. Every
loop is bounded in count and time; exits non-zero on the first mismatch or failure.
"""
import os
import socket
import statistics
import struct
import sys
import threading
import time

HOST, PORT = sys.argv[1], int(sys.argv[2])
TIMEOUT = 30


def connect():
    s = socket.create_connection((HOST, PORT), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def echo_all(payload):
    """Sends payload while reading the echo; half-closes after the last byte; returns what came
    back before the server's EOF."""
    s = connect()
    got = bytearray()

    def reader():
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return
            got.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    t.join(TIMEOUT * 4)
    s.close()
    if t.is_alive():
        raise SystemExit(f"echo of {len(payload)} bytes: no EOF after {len(got)} bytes")
    return bytes(got)


def check(name, ok, detail=""):
    print(f"{'ok' if ok else 'FAILED'}: {name}{(' (' + detail + ')') if detail else ''}", flush=True)
    if not ok:
        sys.exit(1)


# 1. One message.
got = echo_all(b"hello from the kernel\n")
check("one message echoed, then EOF after the half-close", got == b"hello from the kernel\n", repr(got))

# 2. 100 concurrent connections, 16 KiB of random bytes each, all open at once.
errors = []
barrier = threading.Barrier(100, timeout=TIMEOUT)


def one_client(i):
    try:
        payload = os.urandom(16384)
        s = connect()
        barrier.wait()
        got = bytearray()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got.extend(chunk)
        s.close()
        if bytes(got) != payload:
            errors.append(f"client {i}: {len(got)} of {len(payload)} bytes, mismatch")
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append(f"client {i}: {e!r}")


t0 = time.monotonic()
threads = [threading.Thread(target=one_client, args=(i,)) for i in range(100)]
for t in threads:
    t.start()
for t in threads:
    t.join(TIMEOUT * 4)
check("100 concurrent connections x 16 KiB echoed byte for byte", not errors,
      "; ".join(errors[:3]) or f"{time.monotonic() - t0:.2f} s")

# 3. 1 MiB of random bytes on one connection, half-closed after the last byte.
payload = os.urandom(1 << 20)
t0 = time.monotonic()
got = echo_all(payload)
bulk_s = time.monotonic() - t0
check("1 MiB random payload echoed byte for byte", got == payload, f"{len(got)} bytes back")

# 4. Abuse: resets mid-stream, connections opened and dropped, a half-close with data pending.
for i in range(50):
    s = connect()
    s.sendall(os.urandom(8192))
    # SO_LINGER 0: close() sends a reset while the echo is in flight.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
for i in range(300):
    connect().close()
opened = [connect() for _ in range(200)]
for s in opened:
    s.close()
got = echo_all(b"still here\n")
check("survived 50 resets mid-stream, 500 connections opened and dropped", got == b"still here\n", repr(got))

# 5. Latency: 1,000 round trips of 64 bytes on one connection.
s = connect()
msg = b"x" * 64
rtts = []
for _ in range(1000):
    t0 = time.perf_counter()
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("latency: EOF")
        got += chunk
    rtts.append(time.perf_counter() - t0)
s.close()
rtts.sort()
p50 = rtts[len(rtts) // 2] * 1e3
p99 = rtts[int(len(rtts) * 0.99)] * 1e3
print(f"figures: echo p50 {p50:.3f} ms, p99 {p99:.3f} ms (1,000 x 64 B); "
      f"bulk {2 * len(payload) / bulk_s / 1e6:.2f} MB/s both ways "
      f"(1 MiB echoed in {bulk_s:.2f} s); mean RTT {statistics.mean(rtts) * 1e3:.3f} ms", flush=True)
