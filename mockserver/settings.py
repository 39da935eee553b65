"""One frozen `Settings` tree, built from layers: defaults < TOML file < `MOCKSERVER_*` env < CLI.

Each layer is a plain nested dict plus a description of where it came from. Layers are merged
(dicts deeply, everything else replaced), then validated once; a bad key or value is reported with
its dotted name and the layer that supplied it, because "invalid setting" alone sends people
hunting through four places.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mockserver.errors import ConfigError
from mockserver.faults import Fault

ENV_PREFIX = "MOCKSERVER_"
ENV_NESTING = "__"
# MOCKSERVER_* variables that are not settings: a client's server URL, the config file to read
# (`--config` wins), a worker's boot settings.
CONFIG_FILE_ENV = "MOCKSERVER_CONFIG_FILE"
_NOT_SETTINGS = ("MOCKSERVER_URL", CONFIG_FILE_ENV, "MOCKSERVER_WORKER_SETTINGS")
MiB = 1024 * 1024

# Bounds on the timing settings. Finite is not enough: a TTFT of 1e308 s, 1e-300 tokens a second or
# a time_scale of 1e-300 were accepted, and every reply then waited for ever (a stream sent pings
# for ever). Each bound is far beyond any profile a test models, so refusing past it costs nothing.
# The longest single wait a setting models (time to first token, ping and event intervals), the
# same cap as a fault's latency_seconds and stall_seconds.
MAX_WAIT_SECONDS = 3_600.0
# Output speed in tokens a second: 0.1 keeps the longest reply (64,000 tokens) to about a week of
# modelled time, and a million a second is instant for any client.
MIN_TOKENS_PER_SECOND = 0.1
MAX_TOKENS_PER_SECOND = 1_000_000.0
# time_scale divides every modelled duration: a thousandth (an hour becomes 42 days) is already as
# slow as anything a test waits for, a million times as fast as any test needs.
MIN_TIME_SCALE = 0.001
MAX_TIME_SCALE = 1_000_000.0
# ttft_jitter_width is relative (a spread of ttft_jitter_width times the TTFT): 10 is a thousand
# per cent; pacing.jittered also keeps the jittered TTFT within MAX_WAIT_SECONDS.
MAX_JITTER_WIDTH = 10.0
# A batch ends 24 h after creation on the real clock whatever the time scale (batches.EXPIRES_AFTER),
# so a batch duration beyond 24 h at the largest time_scale can only ever mean "expires"; the bound
# keeps duration / time_scale finite (an infinite one was stored as null and broke the batch).
MAX_BATCH_SECONDS = 86_400.0 * MAX_TIME_SCALE
# Prices in USD per million tokens: the dearest real model costs well under $1,000, and a price
# near the float limit made a reply's cost overflow to inf, stored as null in the usage ledger.
MAX_PRICE_PER_MTOK = 1_000_000.0
# Pricing multipliers (fast 6x, batch 0.5x, cache writes and reads): 1,000 keeps the largest cost
# (MAX_PRICE_PER_MTOK times every multiplier times any reply's tokens) a finite number.
MAX_PRICE_MULTIPLIER = 1_000.0


class _Frozen(BaseModel):
    # Numbers are finite: `inf` has no JSON spelling to reach worker processes or the admin API, and
    # an infinite duration or price is a mistake, not a setting.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ModelEntry(_Frozen):
    """One row of the model catalog (see `mockserver/defaults/models.toml`)."""

    id: str = Field(min_length=1)
    display_name: str
    created_at: str = "1970-01-01T00:00:00Z"
    line: Literal["haiku", "sonnet", "opus", "fable", "mythos"] | None = None
    lifecycle: Literal["active", "deprecated", "retired"] = "active"
    deprecated_at: str | None = None
    retires_at: str | None = None
    aliases: tuple[str, ...] = ()
    max_input_tokens: int = Field(default=200_000, gt=0)
    max_tokens: int = Field(default=64_000, gt=0)
    speeds: tuple[Literal["standard", "fast"], ...] = ("standard",)
    speed_requires_beta: bool = False
    # Takes a `fallbacks` array of its own (server-side fallback beta); others refuse one with a 400.
    fallbacks: bool = False
    ttft_seconds: float = Field(default=1.0, ge=0, le=MAX_WAIT_SECONDS)
    output_tokens_per_second: float = Field(default=60.0, ge=MIN_TOKENS_PER_SECOND, le=MAX_TOKENS_PER_SECOND)
    # Fast output speed = output_tokens_per_second times this: fast mode is never slower than
    # standard, and a hundredfold is far past the real 2.5x.
    fast_multiplier: float = Field(default=2.5, ge=1, le=100)


class TimingSettings(_Frozen):
    # Divides every modelled duration: 10 runs a profile ten times faster with the same ratios.
    time_scale: float = Field(default=1.0, ge=MIN_TIME_SCALE, le=MAX_TIME_SCALE)
    # Non-streaming replies wait for the modelled generation time too, as the real API does.
    pace_non_streaming: bool = True
    # Tokens due closer together than this are sent as one delta (SSE frames cost more than tokens).
    min_event_interval: float = Field(default=0.01, ge=0, le=MAX_WAIT_SECONDS)
    # Seconds between `ping` events, also while waiting for the first token; 0 turns pings off.
    ping_interval: float = Field(default=5.0, ge=0, le=MAX_WAIT_SECONDS)
    # Jitter on time to first token: a named distribution with a relative width.
    ttft_jitter: Literal["none", "uniform", "normal", "lognormal"] = "none"
    ttft_jitter_width: float = Field(default=0.2, ge=0, le=MAX_JITTER_WIDTH)


class LimitSettings(_Frozen):
    enabled: bool = True
    requests_per_minute: int = Field(default=4_000, gt=0)
    input_tokens_per_minute: int = Field(default=2_000_000, gt=0)
    output_tokens_per_minute: int = Field(default=400_000, gt=0)
    fast_input_tokens_per_minute: int = Field(default=1_000_000, gt=0)
    fast_output_tokens_per_minute: int = Field(default=200_000, gt=0)


class OrganizationSettings(_Frozen):
    """A group of API keys that share limits, as keys of one organisation do on the real API."""

    keys: tuple[str, ...] = ()
    fast_mode: bool = True  # False: the organisation is not on the fast-mode waitlist
    requests_per_minute: int | None = Field(default=None, gt=0)
    input_tokens_per_minute: int | None = Field(default=None, gt=0)
    output_tokens_per_minute: int | None = Field(default=None, gt=0)
    fast_input_tokens_per_minute: int | None = Field(default=None, gt=0)
    fast_output_tokens_per_minute: int | None = Field(default=None, gt=0)


class JournalSettings(_Frozen):
    enabled: bool = True
    max_entries: int = Field(default=1_000, gt=0)  # oldest entries are dropped (and counted) beyond this
    record_bodies: bool = False  # keep the full request body of each entry
    # Zero data retention: keep counts and timings, never message content or bodies.
    zero_data_retention: bool = False


class AdminSettings(_Frozen):
    enabled: bool = True
    # Required (as `Authorization: Bearer <token>`) when set; must be set to bind beyond loopback.
    token: str | None = None

    @field_validator("token")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        # `MOCKSERVER_ADMIN__TOKEN=` or `token = ""` is a token nobody meant to set, not one that
        # every request without Authorization matches.
        if value is None or not value.strip():
            return None
        if not _SENDABLE_TOKEN.fullmatch(value):
            # Anything else cannot be sent in a header (a NUL, a line break, an edge space that
            # HTTP strips, a character no HTTP client encodes alike): set by PATCH, it locked the
            # admin API until a restart.
            raise ValueError(
                "a token is printable ASCII without spaces at either end (it travels in a header)"
            )
        return value


_SENDABLE_TOKEN = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


class LogSettings(_Frozen):
    access: bool = True
    format: Literal["text", "json"] = "text"


class CacheSettings(_Frozen):
    enabled: bool = True
    # Prefixes shorter than this are silently not cached (the documented per-model minimums vary).
    min_tokens: int = Field(default=1_024, ge=0)


class Price(_Frozen):
    input_per_mtok: float = Field(ge=0, le=MAX_PRICE_PER_MTOK)
    output_per_mtok: float = Field(ge=0, le=MAX_PRICE_PER_MTOK)


def _default_prices() -> dict[str, Price]:
    # Standard rates in USD per million tokens, by model line; fast mode multiplies them (the seed:
    # $30 / $150 for Opus, 6x the standard $5 / $25, across the whole context window).
    return {
        "opus": Price(input_per_mtok=5.0, output_per_mtok=25.0),
        "sonnet": Price(input_per_mtok=3.0, output_per_mtok=15.0),
        "haiku": Price(input_per_mtok=1.0, output_per_mtok=5.0),
        "fable": Price(input_per_mtok=3.0, output_per_mtok=15.0),
        "mythos": Price(input_per_mtok=15.0, output_per_mtok=75.0),
    }


class PricingSettings(_Frozen):
    # Keys are model lines ("opus") or exact model ids, which win over their line.
    models: dict[str, Price] = Field(default_factory=_default_prices)
    fast_multiplier: float = Field(default=6.0, gt=0, le=MAX_PRICE_MULTIPLIER)
    batch_multiplier: float = Field(default=0.5, gt=0, le=MAX_PRICE_MULTIPLIER)
    cache_write_5m_multiplier: float = Field(default=1.25, ge=0, le=MAX_PRICE_MULTIPLIER)
    cache_write_1h_multiplier: float = Field(default=2.0, ge=0, le=MAX_PRICE_MULTIPLIER)
    cache_read_multiplier: float = Field(default=0.1, ge=0, le=MAX_PRICE_MULTIPLIER)

    @field_validator("models")
    @classmethod
    def _over_the_defaults(cls, value: dict[str, Price]) -> dict[str, Price]:
        return {**_default_prices(), **value}


class ChaosSettings(_Frozen):
    # Serving a fast request at standard speed misreports nothing (usage.speed says "standard"),
    # but it breaks the promise fast mode makes, so a degrade_speed fault needs this switch.
    allow_degraded_speed: bool = False
    header_faults: bool = True  # honour the per-request `x-mockserver-fault` header


class BetaSettings(_Frozen):
    extra: tuple[str, ...] = ()
    reject_unknown: bool = True


class BatchSettings(_Frozen):
    """The Message Batches emulation: how long a batch takes and how its requests turn out."""

    # Seconds from creation until every request of a batch has finished (divided by timing.time_scale).
    # The real API takes minutes to hours; a short default keeps polling tests quick.
    processing_seconds: float = Field(default=2.0, ge=0, le=MAX_BATCH_SECONDS)
    # Seconds a canceled batch stays `canceling` (divided by timing.time_scale): requests due to
    # finish in that window still finish, as in-flight requests do on the real API.
    cancel_seconds: float = Field(default=1.0, ge=0, le=MAX_BATCH_SECONDS)
    max_requests: int = Field(default=100_000, gt=0)
    max_body_bytes: int = Field(default=256 * MiB, gt=0)
    # Relative weights of each request's outcome, drawn per custom_id from the server seed.
    succeeded_weight: float = Field(default=1.0, ge=0)
    errored_weight: float = Field(default=0.0, ge=0)
    expired_weight: float = Field(default=0.0, ge=0)
    canceled_weight: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _some_outcome_possible(self) -> BatchSettings:
        weights = (self.succeeded_weight, self.errored_weight, self.expired_weight, self.canceled_weight)
        if not sum(weights) > 0:
            raise ValueError("at least one of the outcome weights must be positive")
        return self


class Settings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    seed: int = 0
    storage: str = "memory://"
    # Prefix of every key in a shared store: servers with different prefixes share nothing.
    key_prefix: str = "mockserver:"
    workers: int = Field(default=1, ge=1)  # server processes; more than one needs redis:// storage
    max_body_bytes: int = Field(default=32 * MiB, gt=0)
    # Empty: any non-empty key is accepted (the common case for a test double). Otherwise these and
    # the organisations' keys are, and any other key is a 401 (validation.accepted_api_keys).
    api_keys: tuple[str, ...] = ()
    models_mode: Literal["extend", "replace"] = "extend"
    models: tuple[ModelEntry, ...] = ()
    replies: tuple[str, ...] = ()  # TOML files or directories of canned replies
    timing: TimingSettings = TimingSettings()
    limits: LimitSettings = LimitSettings()
    organizations: dict[str, OrganizationSettings] = Field(default_factory=dict)
    betas: BetaSettings = BetaSettings()
    journal: JournalSettings = JournalSettings()
    cache: CacheSettings = CacheSettings()
    pricing: PricingSettings = PricingSettings()
    chaos: ChaosSettings = ChaosSettings()
    faults: tuple[Fault, ...] = ()
    admin: AdminSettings = AdminSettings()
    log: LogSettings = LogSettings()
    batches: BatchSettings = BatchSettings()

    @field_validator("storage")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in {"memory", "redis", "rediss", "unix"}:
            raise ValueError(f"unsupported storage URI {value!r}; use memory:// or redis://host:port/db")
        return value

    @model_validator(mode="after")
    def _workers_share_state(self) -> Settings:
        if self.workers > 1 and self.storage.startswith("memory:"):
            # Each process would keep its own buckets: N workers would silently admit N times the limit.
            raise ValueError(
                f"{self.workers} workers need shared state: with memory:// storage every worker would keep "
                "its own limits, caches, batches and journal; use storage redis://host:port/db, or one worker"
            )
        return self

    @model_validator(mode="after")
    def _faults_are_consistent(self) -> Settings:
        names = [fault.name for fault in self.faults]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"faults: duplicate name {duplicates[0]!r}")
        if any(f.kind == "degrade_speed" for f in self.faults) and not self.chaos.allow_degraded_speed:
            raise ValueError("faults: a degrade_speed fault needs chaos.allow_degraded_speed = true")
        return self

    @model_validator(mode="after")
    def _admin_needs_a_token_beyond_loopback(self) -> Settings:
        if self.admin.enabled and self.admin.token is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is reachable beyond this machine, so the admin API needs a token: "
                "set admin.token (MOCKSERVER_ADMIN__TOKEN; a blank one is no token) or admin.enabled = false"
            )
        return self

    def with_layer(self, data: Mapping[str, Any], origin: str) -> Settings:
        """These settings with one more layer on top (e.g. an admin API patch)."""
        return build_settings([Layer("current settings", self.model_dump()), Layer(origin, data)])


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass(frozen=True)
class Layer:
    origin: str  # how a human names this layer: "config file x.toml", "environment", ...
    data: Mapping[str, Any]
    # Where a single key came from, when finer than the layer (e.g. the exact env var name).
    key_origins: Mapping[tuple[str, ...], str] | None = None


def build_settings(layers: Iterable[Layer]) -> Settings:
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for layer in layers:
        if not isinstance(layer.data, Mapping):
            raise ConfigError(
                f"{layer.origin}: settings must be a table of keys, got {type(layer.data).__name__}"
            )
        _merge(merged, layer.data, (), layer, origins)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None


def load_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    layers = [Layer("defaults", {})]
    if config_file is not None:
        layers.append(Layer(f"config file {config_file}", read_toml(config_file)))
    layers.append(env_layer(os.environ if environ is None else environ))
    if overrides:
        layers.append(Layer("command line", overrides))
    return build_settings(layers)


# Settings that name files: in a config file they are relative to that file, not to the working directory.
PATH_LIST_SETTINGS = ("replies",)


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config file's settings, with its relative paths made absolute against the file's directory."""
    try:
        with Path(path).open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return resolve_paths(data, Path(path).parent)


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """`data` with each relative path of `PATH_LIST_SETTINGS` joined to `base` (made absolute), and
    `~` expanded; anything that is not a list of strings is left for validation to report."""
    resolved = dict(data)
    for name in PATH_LIST_SETTINGS:
        paths = data.get(name)
        if isinstance(paths, list):
            resolved[name] = [
                str(base.absolute() / Path(p).expanduser()) if isinstance(p, str) else p for p in paths
            ]
    return resolved


def env_layer(environ: Mapping[str, str]) -> Layer:
    """`MOCKSERVER_TIMING__TIME_SCALE=10` sets `timing.time_scale`.

    A value is taken as written for a text setting (`MOCKSERVER_ADMIN__TOKEN=123456` is a string),
    and as JSON when it parses for any other (`MOCKSERVER_API_KEYS=["a","b"]`, `MOCKSERVER_SEED=7`).
    """
    data: dict[str, Any] = {}
    key_origins: dict[tuple[str, ...], str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTING))
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key segment")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: {'.'.join(path[:-1])} is not a table")
        node[path[-1]] = raw if _is_text(_annotation_at(path)) else _parse_env_value(raw)
        key_origins[path] = f"environment variable {name}"
        for end in range(1, len(path)):  # an unknown table (MOCKSERVER_TIMEING__X) names a variable
            key_origins.setdefault(path[:end], f"environment variable {name}")
    return Layer("environment", data, key_origins)


def _parse_env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _annotation_at(path: tuple[str, ...]) -> Any:
    """The type the `Settings` tree declares at `path`, or None for a key it does not have."""
    node: Any = Settings
    for part in path:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                return None
            node = field.annotation
        elif get_origin(node) is dict:  # a table of named entries: `organizations.<name>`
            node = get_args(node)[1]
        else:
            return None
    return node


def _is_text(annotation: Any) -> bool:
    """Whether a setting of this type only ever holds text (`str`, `str | None`, a Literal of strings)."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    members = tuple(member for member in members if member is not type(None))
    return bool(members) and all(
        member is str or (get_origin(member) is Literal and all(isinstance(v, str) for v in get_args(member)))
        for member in members
    )


def _merge(
    into: dict[str, Any],
    data: Mapping[str, Any],
    prefix: tuple[str, ...],
    layer: Layer,
    origins: dict[tuple[str, ...], str],
) -> None:
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key, {}), dict):
            _merge(into.setdefault(key, {}), value, path, layer, origins)
        else:
            into[key] = value
        origins[path] = (layer.key_origins or {}).get(path, layer.origin)


def _describe(exc: ValidationError, origins: Mapping[tuple[str, ...], str]) -> str:
    problems = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        message = message.removeprefix("Value error, ")
        if not loc:  # a rule across several settings
            problems.append(message)
            continue
        problems.append(f"setting '{'.'.join(loc)}' from {_origin_of(loc, origins)}: {message}")
    return "invalid settings: " + "; ".join(problems)


def _origin_of(loc: tuple[str, ...], origins: Mapping[tuple[str, ...], str]) -> str:
    for end in range(len(loc), 0, -1):
        if loc[:end] in origins:
            return origins[loc[:end]]
    return "defaults"
