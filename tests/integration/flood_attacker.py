"""Hostile device-port client: opens connections, completes nng's SP handshake, sends nothing.

``python flood_attacker.py HOST PORT SOURCE COUNT`` opens up to COUNT TCP
connections from the local address SOURCE (any 127.0.0.0/8 address is this
machine), sends the 8-byte SP header of a Req0 peer on each and reads the
server's. It prints one JSON line when done opening (``handshaked``: headers
received), then holds every connection until its stdin closes, and prints a last
line with how many the server had closed by then. Raises its descriptor limit to
the hard limit. Gives up opening after 50 handshakes in a row fail.
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import time

REQ0_HEADER = b"\x00SP\x00\x00\x30\x00\x00"  # SP, version 0, protocol Req0 (0x30)
#: Linux: choose the local port at connect (by the 4-tuple), not at bind, where
#: bind(port 0) has only part of the range and slows down as it fills.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def main() -> int:
    host, port, source, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks: list[socket.socket] = []
    handshaked = failed_in_row = 0
    t0 = time.monotonic()
    while len(socks) < count and failed_in_row < 50:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
            s.settimeout(2.0)
            s.connect((host, port))
            s.sendall(REQ0_HEADER)
            got = b""
            while len(got) < 8:
                part = s.recv(8 - len(got))
                if not part:
                    break
                got += part
        except OSError:
            s.close()
            failed_in_row += 1
            continue
        if len(got) == 8:
            handshaked += 1
            failed_in_row = 0
        else:
            failed_in_row += 1
        s.setblocking(False)
        socks.append(s)
    print(json.dumps({"opened": len(socks), "handshaked": handshaked,
                      "seconds": round(time.monotonic() - t0, 2)}), flush=True)
    sys.stdin.read()  # hold until told
    closed = 0
    for s in socks:
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    print(json.dumps({"closed_by_server": closed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
