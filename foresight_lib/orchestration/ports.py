"""A free TCP port of this machine, for a server started on the side (``make ui``, the stack, tests)."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the system's pick); another process may still take it before us."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
