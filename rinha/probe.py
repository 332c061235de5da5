"""Is a node up? One small check shared by the stack launcher and the container HEALTHCHECK.

    python -m rinha.probe            # in a container: checks the role its environment describes

An API node is up when it answers `GET /healthcheck` on its Unix socket; the worker when its link
port accepts a connection. Exit status 0 means up.
"""

from __future__ import annotations

import os
import socket
import sys


def answers_http(address: tuple[str, int] | str, path: str | None, expect: bytes = b"") -> bool:
    """True once `address` (a Unix socket path or a TCP pair) accepts a connection and, if `path`
    is given, answers a GET on it with a status below 500 and `expect` somewhere in the answer."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(address)
            if path is None:
                return True
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
            answer = sock.recv(4096)
            status = answer[9:12]
            # NGINX says 502 until its upstreams answer.
            return status.isdigit() and status < b"500" and expect in answer
    except OSError:
        return False


def main() -> int:
    api_socket = os.environ.get("RINHA_API_SOCKET")
    if api_socket:
        return 0 if answers_http(api_socket, "/healthcheck") else 1
    listen = os.environ.get("RINHA_WORKER_LISTEN")
    if listen:
        host, _, port = listen.rpartition(":")
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        return 0 if answers_http((host, int(port)), None) else 1
    print("rinha.probe: set RINHA_API_SOCKET (API node) or RINHA_WORKER_LISTEN (worker)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
