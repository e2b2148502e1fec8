"""The ``wstrace`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="Trace WebSocket connections on uvicorn + FastAPI/Starlette.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the installed version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("wstrace"))


def main() -> None:
    app()
