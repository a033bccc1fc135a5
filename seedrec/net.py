"""Loopback networking helpers shared by servers, process groups and tests."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
