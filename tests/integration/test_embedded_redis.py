"""The embedded default: a private redis-server that starts, answers, dies and restarts for real."""

from __future__ import annotations

import os

import pytest
import redis

from seedrec.errors import ServiceUnavailableError
from seedrec.redis_server import EmbeddedRedis, find_redis_server, redis_url_or_embedded

pytestmark = pytest.mark.integration


def test_binary_is_found() -> None:
    assert os.access(find_redis_server(), os.X_OK)


def test_fixture_server_answers(redis_server: EmbeddedRedis) -> None:
    r = redis.Redis.from_url(redis_server.url)
    r.set("k", b"v")
    assert r.get("k") == b"v"
    assert r.info("server")["tcp_port"] == redis_server.port


def test_password_is_enforced() -> None:
    with EmbeddedRedis(password="s3cret") as server:
        assert redis.Redis.from_url(server.url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port, password="wrong").ping()


def test_kill_then_restart_on_same_port() -> None:
    server = EmbeddedRedis().start()
    try:
        port = server.port
        server.kill()
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5).ping()
        server.restart()
        assert server.port == port
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()


def test_startup_failure_is_reported() -> None:
    with pytest.raises(ServiceUnavailableError, match="exited at start-up"):
        EmbeddedRedis(extra_args=["--no-such-option", "x"]).start()


def test_url_or_embedded_prefers_given_url(monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with redis_url_or_embedded(redis_server.url) as url:
        assert url == redis_server.url
    with redis_url_or_embedded() as url:
        assert url != redis_server.url
        assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
