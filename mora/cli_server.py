"""`mora server start | stop | status`: a local background Prefect server that every later `mora`
command uses by itself (see mora/local_server.py)."""

from __future__ import annotations

import typer
from rich.console import Console

from mora import local_server

server_app = typer.Typer(help="A local Prefect server (dashboard, reviews from any shell) that "
                         "every mora command uses while it runs.", no_args_is_help=True)
out = Console(soft_wrap=True)


@server_app.command("start")
def start(
    host: str = typer.Option(local_server.DEFAULT_HOST, "--host", help="address to serve on; "
                             "beyond loopback needs PREFECT_SERVER_API_AUTH_STRING"),
    port: int = typer.Option(local_server.DEFAULT_PORT, "--port", help="port of the UI and API"),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="serve the dashboard"),
    timeout: float = typer.Option(120.0, "--timeout", help="seconds to wait for it to answer"),
) -> None:
    """Start the server in the background (database and log under $MORA_HOME/server)."""
    with Console(stderr=True).status(f"starting a Prefect server on {host}:{port}…"):
        info, notes = local_server.start(host, port, ui=ui, timeout=timeout)
    for note in notes:
        out.print(note, markup=False, highlight=False)
    out.print(f"Mora server running: pid {info.pid}, UI {info.url}, API {info.api_url}",
              markup=False, highlight=False)
    out.print("every mora command now uses it; `mora server stop` to stop it", markup=False)


@server_app.command("stop")
def stop() -> None:
    """Stop the background server."""
    out.print(local_server.stop(), markup=False, highlight=False)


@server_app.command("status")
def status() -> None:
    """Whether the background server runs, and where (exit code 1 if not)."""
    running, line = local_server.status()
    out.print(line, markup=False, highlight=False)
    if not running:
        raise typer.Exit(1)
