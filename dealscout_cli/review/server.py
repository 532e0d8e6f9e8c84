"""Serving the review app: bind (127.0.0.1 by default, a free port for 0), say the URL,
serve until Ctrl-C, then stop any snap the app started."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from dealscout_cli.review.app import ReviewApp
from dealscout_cli.store import Store


def serve(
    db: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Open `db`, then serve the app in the foreground; `on_ready(url)` once the port is
    bound (the URL carries the token). StoreError for a missing or unusable database,
    OSError when the address cannot be bound."""
    import uvicorn

    store = Store.open(db, create=False)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # now: a browser opened on the URL waits for uvicorn, never refused
        app = ReviewApp(store, port=sock.getsockname()[1])
        if on_ready is not None:
            on_ready(app.url)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            app.close()
    finally:
        sock.close()
        store.close()
