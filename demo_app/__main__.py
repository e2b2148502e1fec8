"""``python -m demo_app``: serve the auction app with uvicorn."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn

import tracer
from demo_app.app import create_app, default_db_path
from demo_app.protocol import MAX_MESSAGE_BYTES

HTTP_CHOICES = ("auto", "h11", "httptools", "zttp")
WS_CHOICES = ("auto", "websockets", "websockets-sansio", "wsproto")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo_app", description="Serve the wstrace auction demo with uvicorn."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    parser.add_argument(
        "--db",
        default=default_db_path(),
        help="SQLite file (default $WSTRACE_DEMO_DB or ./auction.db; now %(default)s)",
    )
    parser.add_argument("--http", choices=HTTP_CHOICES, default="auto", help="HTTP implementation")
    parser.add_argument("--ws", choices=WS_CHOICES, default="auto", help="WebSocket implementation")
    parser.add_argument(
        "--no-seed", action="store_true", help="do not create a sample auction in an empty db"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    uvicorn.run(
        # Served wrapped in TracingMiddleware: with a tracer provider configured (for instance
        # by `opentelemetry-instrument`), the ASGI chain of every connection is traced.
        tracer.TracingMiddleware(create_app(args.db, seed=not args.no_seed)),
        host=args.host,
        port=args.port,
        http=args.http,
        ws=args.ws,
        log_level=args.log_level,
        # Frames far beyond the app's own limit are refused by uvicorn itself (close 1009);
        # up to this size the app answers with an error message and keeps the connection.
        ws_max_size=4 * MAX_MESSAGE_BYTES,
    )


if __name__ == "__main__":
    main()
