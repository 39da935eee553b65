"""`mockserver serve …`: run the server until interrupted. `main(argv) -> exit code`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from mockserver.app import create_app
from mockserver.errors import ConfigError
from mockserver.server import bind_socket, url_of, uvicorn_config
from mockserver.settings import Settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mockserver", description="A local Anthropic Messages API with fast mode."
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the server (the default command)")
    add_serve_options(serve)
    return parser


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on; 0 picks a free one (default 8080)")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--seed", type=int, help="seed for reply content (default 0)")
    parser.add_argument(
        "--storage", metavar="URI", help="limiter state: memory:// (default) or redis://host:port/db"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args.insert(0, "serve")
    options = build_parser().parse_args(args)
    if options.command is None:
        build_parser().print_help()
        return 2
    try:
        settings = load_settings(config_file=options.config, overrides=_cli_overrides(options))
        return serve(settings, log_level=options.log_level)
    except ConfigError as exc:
        print(f"mockserver: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mockserver: error: cannot listen: {exc}", file=sys.stderr)
        return 1


def _cli_overrides(options: argparse.Namespace) -> dict[str, Any]:
    names = ("host", "port", "seed", "storage")
    return {name: getattr(options, name) for name in names if getattr(options, name) is not None}


def serve(settings: Settings, *, log_level: str = "info") -> int:
    app = create_app(settings)
    sock = bind_socket(settings.host, settings.port)
    print(f"mockserver listening on {url_of(sock)}", flush=True)
    server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
