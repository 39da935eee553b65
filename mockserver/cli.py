"""`mockserver serve|admin`: the command line. `main(argv) -> exit code`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import httpx
import uvicorn

from mockserver import __version__
from mockserver.admin_client import AdminClient, AdminError
from mockserver.app import WORKER_SETTINGS_ENV, MockApp, create_app, freeze_startup_heap, worker_app
from mockserver.errors import ConfigError, StoreUnavailable
from mockserver.runtime import ServerState
from mockserver.server import bind_socket, url_of, uvicorn_config
from mockserver.settings import CONFIG_FILE_ENV, Settings, load_settings
from mockserver.supervisor import Supervisor


class CannotServe(Exception):
    """The server cannot start, or its workers cannot: the message says why (exit status 1)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mockserver", description="A local Anthropic Messages API with fast mode."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the server (the default command)")
    add_serve_options(serve)
    add_admin_parser(commands.add_parser("admin", help="talk to a running server's admin API"))
    return parser


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on; 0 picks a free one (default 8080)")
    parser.add_argument(
        "--config", metavar="FILE", help="TOML settings file; paths in it are relative to the file"
    )
    parser.add_argument("--seed", type=int, help="seed for reply content (default 0)")
    parser.add_argument(
        "--storage", metavar="URI", help="shared state: memory:// (default) or redis://host:port/db"
    )
    parser.add_argument("--workers", type=int, help="worker processes; more than one needs redis:// storage")
    parser.add_argument(
        "--time-scale",
        type=float,
        metavar="X",
        help="run every modelled duration X times faster, same ratios (timing.time_scale; default 1)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )


def add_admin_parser(admin: argparse.ArgumentParser) -> None:
    admin.add_argument(
        "--url",
        default=os.environ.get("MOCKSERVER_URL", "http://127.0.0.1:8080"),
        help="the server's base URL (default: $MOCKSERVER_URL, else http://127.0.0.1:8080)",
    )
    admin.add_argument(
        "--token",
        default=os.environ.get("MOCKSERVER_ADMIN__TOKEN"),
        help="the server's admin.token, sent as a bearer token (default: $MOCKSERVER_ADMIN__TOKEN)",
    )
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
    faults = actions.add_parser("faults", help="print the faults as JSON lines, or add or delete one")
    change = faults.add_mutually_exclusive_group()
    change.add_argument(
        "--add",
        type=_json_object,
        metavar="JSON",
        help='a fault, e.g. \'{"name": "overloaded", "kind": "http_error", "status": 529, "count": 1}\'',
    )
    change.add_argument("--delete", metavar="NAME", help="the fault added through the admin API to delete")
    usage = actions.add_parser("usage", help="tokens and cost by organisation, model and speed")
    for bound, meaning in (("--since", "from"), ("--until", "up to, not including")):
        usage.add_argument(
            bound,
            type=_epoch_seconds,
            metavar="TIME",
            help=f"count requests {meaning} TIME: epoch seconds or ISO 8601 (without an offset: local time)",
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "serve")
    options = build_parser().parse_args(args)
    if options.command == "admin":
        return run_admin(options)
    return run_serve(options)


def run_serve(options: argparse.Namespace) -> int:
    # SIGTERM (`docker stop`, `kill`) stops the server as Ctrl+C does, and exits 0 like it: uvicorn
    # re-raises the signal it shut down on once it restores the previous handler, which by default
    # would end the process with status 143; this also covers a SIGTERM before uvicorn is running.
    # Only the main thread may set a handler; `main` called from another thread serves without it.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main_thread else None
    try:
        config_file = options.config or os.environ.get(CONFIG_FILE_ENV) or None
        settings = load_settings(config_file=config_file, overrides=_cli_overrides(options))
        return serve(settings, log_level=options.log_level)
    except ConfigError as exc:
        print(f"mockserver: error: {exc}", file=sys.stderr)
        return 2
    except CannotServe as exc:
        print(f"mockserver: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:  # `main` is also a library call: leave the process as it was
            signal.signal(signal.SIGTERM, previous)


def _cli_overrides(options: argparse.Namespace) -> dict[str, Any]:
    names = ("host", "port", "seed", "storage", "workers")
    overrides: dict[str, Any] = {n: value for n in names if (value := getattr(options, n)) is not None}
    if options.time_scale is not None:
        overrides["timing"] = {"time_scale": options.time_scale}
    return overrides


def serve(settings: Settings, *, log_level: str = "info") -> int:
    """Build and check everything a worker would fail on, then listen, say so, and serve until a signal.

    Raises ConfigError or CannotServe before "listening" is printed; CannotServe afterwards only if
    the worker processes cannot start.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    workers = settings.workers
    payload = settings.model_dump_json()
    # With workers, the parent builds what each of them will (from the same JSON) only to see it work.
    app = _checked_app(lambda: worker_app(payload) if workers > 1 else create_app(settings))
    sock = _listen(settings)
    try:
        print(
            f"mockserver listening on {url_of(sock)}" + (f" ({workers} workers)" if workers > 1 else ""),
            flush=True,
        )
        if workers > 1:
            del app
            _supervise(payload, sock, workers, log_level)
        else:
            freeze_startup_heap()
            server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
            server.run(sockets=[sock])  # with uvicorn's loop factory: uvloop when installed
    finally:
        sock.close()
    return 0


def _checked_app(build: Callable[[], MockApp]) -> MockApp:
    try:
        app = build()
    except OSError as exc:  # a replies file that cannot be read, say; ConfigError passes through
        raise CannotServe(f"cannot build the app: {exc}") from None
    _check_store(app.state.mock)
    return app


def _check_store(state: ServerState) -> None:
    """A shared store must answer before the server says it is listening: a wrong URL, password or
    database would otherwise show only as 503s on every request. (Later outages are answered 503.)"""
    if not state.shared:
        return

    async def ping() -> None:
        try:
            await state.buckets.ping()
            await state.store.ping()
        finally:
            await state.close()  # its connections belong to this event loop, not to the server's

    try:
        asyncio.run(ping())
    except StoreUnavailable as exc:
        raise CannotServe(f"cannot reach the store: {exc}") from None


def _listen(settings: Settings) -> socket.socket:
    try:
        return bind_socket(settings.host, settings.port)
    except OSError as exc:
        raise CannotServe(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None


def _supervise(payload: str, sock: socket.socket, workers: int, log_level: str) -> None:
    os.environ[WORKER_SETTINGS_ENV] = payload
    config = uvicorn_config(
        "mockserver.app:app_from_environment", factory=True, workers=workers, log_level=log_level
    )
    supervisor = Supervisor(config, sockets=[sock])
    supervisor.run()
    if supervisor.failure is not None:
        raise CannotServe(supervisor.failure)


def run_admin(options: argparse.Namespace) -> int:
    with AdminClient(options.url, token=options.token) as client:
        try:
            ADMIN_ACTIONS[options.action](client, options)
        except AdminError as exc:
            hint = ""
            if exc.status == 401:
                given = "the one given is not the server's" if options.token else "none was given"
                hint = f" ({given}: pass --token or set MOCKSERVER_ADMIN__TOKEN)"
            print(f"mockserver: admin: {exc}{hint}", file=sys.stderr)
            return 1
        except httpx.HTTPError as exc:
            print(f"mockserver: admin: cannot reach {options.url}: {exc}", file=sys.stderr)
            return 1
    return 0


def _health(client: AdminClient, options: argparse.Namespace) -> None:
    _print_json(client.health())


def _reset(client: AdminClient, options: argparse.Namespace) -> None:
    client.reset()
    _print_json({"status": "reset"})


def _requests(client: AdminClient, options: argparse.Namespace) -> None:
    if options.clear:
        _print_json({"deleted": client.clear_requests()})
    else:
        _print_lines(client.requests(**_pairs(options.filter)))


def _settings(client: AdminClient, options: argparse.Namespace) -> None:
    _print_json(client.configure(_nested(_pairs(options.set))) if options.set else client.settings())


def _faults(client: AdminClient, options: argparse.Namespace) -> None:
    if options.add is not None:
        _print_json(client.add_fault(options.add))
    elif options.delete is not None:
        client.delete_fault(options.delete)
        _print_json({"name": options.delete, "deleted": True})
    else:
        _print_lines(client.faults())


def _usage(client: AdminClient, options: argparse.Namespace) -> None:
    bounds = {name: value for name in ("since", "until") if (value := getattr(options, name)) is not None}
    _print_json(client.usage(**bounds))


ADMIN_ACTIONS: dict[str, Callable[[AdminClient, argparse.Namespace], None]] = {
    "health": _health,
    "reset": _reset,
    "requests": _requests,
    "settings": _settings,
    "faults": _faults,
    "usage": _usage,
}


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2))


def _print_lines(rows: list[Any]) -> None:
    for row in rows:
        print(json.dumps(row))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _epoch_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither epoch seconds nor an ISO 8601 time (2026-07-01T12:00:00Z)"
        ) from None


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
