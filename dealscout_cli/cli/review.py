"""`dealscout review`: the local web app to look over, edit, approve and export listings."""

from pathlib import Path
from typing import Annotated

import typer

from dealscout_cli import config
from dealscout_cli.cli.options import DbOption, err, guarded, plain

PortOption = Annotated[
    int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1; 0 picks a free one.")
]
NoBrowserFlag = Annotated[
    bool, typer.Option("--no-browser", help="Print the URL; do not open a browser.")
]


def review(
    db: DbOption = Path(config.DEFAULT_DB),
    port: PortOption = 0,
    no_browser: NoBrowserFlag = False,
) -> None:
    """Open the listings in your browser: check, edit, approve or reject, ask the model again.

    Serves on 127.0.0.1 only; the URL it prints carries a secret token (every request needs
    it). Ctrl-C stops it. Export what you approved here or with `dealscout export --approved`.

    Example: dealscout review --db shop.db
    """
    from dealscout_cli.review import serve

    def ready(url: str) -> None:
        typer.echo(url)  # stdout: a script can read it
        err.print(f"reviewing {plain(db)} at the URL above; Ctrl-C stops")
        if not no_browser:
            import webbrowser

            webbrowser.open(url)

    try:
        guarded(lambda: serve(db, port=port, on_ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        err.print(f"cannot serve on port {port}: {plain(exc.strerror or exc)}")
        raise typer.Exit(1) from None
