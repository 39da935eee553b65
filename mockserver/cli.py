"""`mockserver serve …`: run the server until interrupted. `main(argv) -> exit code`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx
import uvicorn
from uvicorn.supervisors import Multiprocess

from mockserver.admin_client import AdminClient, AdminError
from mockserver.app import WORKER_SETTINGS_ENV, create_app, freeze_startup_heap
from mockserver.errors import ConfigError
from mockserver.server import bind_socket, url_of, uvicorn_config
from mockserver.settings import CONFIG_FILE_ENV, Settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mockserver", description="A local Anthropic Messages API with fast mode."
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the server (the default command)")
    add_serve_options(serve)
    admin = commands.add_parser("admin", help="talk to a running server's admin API")
    admin.add_argument("--url", default=os.environ.get("MOCKSERVER_URL", "http://127.0.0.1:8080"))
    admin.add_argument("--token", default=os.environ.get("MOCKSERVER_ADMIN__TOKEN"))
    actions = admin.add_subparsers(dest="action", required=True)
    actions.add_parser("health", help="is the server (and its store) up?")
    actions.add_parser("reset", help="limits, caches, journal, faults and settings back to boot state")
    requests = actions.add_parser("requests", help="print the request journal as JSON lines")
    requests.add_argument(
        "--filter", action="append", default=[], metavar="KEY=VALUE", help="e.g. speed=fast"
    )
    requests.add_argument("--clear", action="store_true", help="delete the journal instead")
    settings = actions.add_parser("settings", help="print settings, or patch them with --set")
    settings.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. timing.time_scale=10"
    )
    return parser


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on; 0 picks a free one (default 8080)")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--seed", type=int, help="seed for reply content (default 0)")
    parser.add_argument(
        "--storage", metavar="URI", help="shared state: memory:// (default) or redis://host:port/db"
    )
    parser.add_argument("--workers", type=int, help="worker processes; more than one needs redis:// storage")
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
    if options.command == "admin":
        return run_admin(options)
    try:
        config_file = options.config or os.environ.get(CONFIG_FILE_ENV) or None
        settings = load_settings(config_file=config_file, overrides=_cli_overrides(options))
        return serve(settings, log_level=options.log_level)
    except ConfigError as exc:
        print(f"mockserver: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mockserver: error: cannot listen: {exc}", file=sys.stderr)
        return 1


def _cli_overrides(options: argparse.Namespace) -> dict[str, Any]:
    names = ("host", "port", "seed", "storage", "workers")
    return {name: getattr(options, name) for name in names if getattr(options, name) is not None}


def run_admin(options: argparse.Namespace) -> int:
    with AdminClient(options.url, token=options.token) as client:
        try:
            if options.action == "health":
                result: Any = client.health()
            elif options.action == "reset":
                client.reset()
                result = {"status": "reset"}
            elif options.action == "requests":
                if options.clear:
                    result = {"deleted": client.clear_requests()}
                else:
                    for row in client.requests(**_pairs(options.filter)):
                        print(json.dumps(row))
                    return 0
            else:
                result = client.configure(_nested(_pairs(options.set))) if options.set else client.settings()
        except AdminError as exc:
            print(f"mockserver: admin: {exc}", file=sys.stderr)
            return 1
        except httpx.HTTPError as exc:
            print(f"mockserver: admin: cannot reach {options.url}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2))
    return 0


def _pairs(items: list[str]) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"mockserver: admin: expected KEY=VALUE, got {item!r}")
        try:
            pairs[key] = json.loads(value)
        except ValueError:
            pairs[key] = value
    return pairs


def _nested(pairs: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in pairs.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def serve(settings: Settings, *, log_level: str = "info") -> int:
    workers = settings.workers
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    sock = bind_socket(settings.host, settings.port)
    print(
        f"mockserver listening on {url_of(sock)}" + (f" ({workers} workers)" if workers > 1 else ""),
        flush=True,
    )
    try:
        if workers > 1:
            os.environ[WORKER_SETTINGS_ENV] = settings.model_dump_json()
            config = uvicorn_config(
                "mockserver.app:app_from_environment", factory=True, workers=workers, log_level=log_level
            )
            Multiprocess(config, sockets=[sock]).run()
        else:
            app = create_app(settings)
            freeze_startup_heap()
            server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
            server.run(sockets=[sock])  # with uvicorn's loop factory: uvloop when installed
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
