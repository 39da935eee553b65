"""Scripted replies: a test says what the next matching POST /v1/messages gets, an error or a reply.

Entries live in order in the state store (`/_admin/replies`), so every worker serves one script. A
request takes the first entry that matches it (model, speed, a `contains` on its last user text; a
tool_use only where the request offers that tool), claimed by one atomic INCR of the entry's use
counter: on a shared store each use goes to exactly one request, whichever worker it reaches. A
reply goes through the planner's canned path, so usage, max_tokens, streaming and fast/standard
pacing are those of any reply; an error is the API's envelope for its status.

An entry is used up only by the requests it answers. The use is claimed where the script is looked at,
after routing and before faults and rate limits: a scripted error is sent there (nothing is charged
for it), and a scripted reply's plan is what admission charges. A reply whose request then fails
before its response starts (a fault, a 429, a reset) gives the use back (a DECR), and only a
response that goes out marks the journal row `scripted`. A claim over the limit (another request
took the last use first) is taken back the same way, so the counter holds the uses given. Whenever
taking one back leaves a use free, every worker reads the script again: one may have counted the
entry as used up. Claiming late instead (after admission) would plan before knowing whether the
reply is this request's, and a lost race would leave a planned and charged reply to undo.

Each worker keeps the entries it last read (`ScriptBook`, `ServerState.script`) and reads them again
only after a change: this module publishes its changes under a token of their own
(`ServerState.announce_script_change`), which every worker picks up with the admin generation, in the
same read, without rebuilding its runtime; any other admin change (a reset) makes it read them again
too. So while nothing is scripted a request pays one comparison and no store call.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from mockserver.canned import CannedReplies, CannedReply
from mockserver.catalog import Catalog
from mockserver.chaos import injected_error
from mockserver.errors import APIError, InvalidRequestError, StoreUnavailable
from mockserver.fastmode import Route
from mockserver.faults import MAX_RETRY_AFTER
from mockserver.journal import RequestRecord
from mockserver.schema import FreeObject
from mockserver.validation import describe

if TYPE_CHECKING:
    # The state owns this module's ScriptBook: imported for annotations only.
    from mockserver.runtime import Runtime, ServerState

log = logging.getLogger("mockserver")
_Response = TypeVar("_Response")

ENTRIES_KEY = "scripted:entries"
_USED_PREFIX = "scripted:used:"
MAX_ENTRIES = 1_000
_ANY_TEXT = re.compile("")


class ToolUse(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    input: FreeObject | None = None  # None: generated from the tool's input_schema; nesting as a request's


def _header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError("not a valid header name: letters, digits and !#$%&'*+-.^_`|~ only")
    if name.lower() in _SERVERS_HEADERS:
        raise ValueError("set by the server, not by a scripted error")
    return name.lower()  # as it goes on the wire, and one spelling for the defaults it replaces


def _header_value(value: str) -> str:
    if not _HEADER_VALUE.fullmatch(value):
        raise ValueError(
            "not a valid header value: visible Latin-1 characters, spaces and tabs between them "
            "(no CR, LF or other control characters, no leading or trailing whitespace)"
        )
    return value


# RFC 9110: a name is a token; a value is visible characters (obs-text included: Latin-1 on the
# wire) with spaces and tabs inside. Anything else breaks the response or the connection.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e\x80-\xff](?:[ \t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")
# The framing and identity of the response: a second copy would corrupt it.
_SERVERS_HEADERS = frozenset(
    {"content-length", "content-type", "transfer-encoding", "connection", "request-id"}
)
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


class ScriptedError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # As a fault of kind http_error sends it (chaos.injected_error), with the same defaults.
    status: int = Field(ge=400, le=599)
    type: str | None = None  # error.type; None: the status's own (429 rate_limit_error, ...)
    message: str | None = None
    # Seconds, bounded as a fault's are (a day): 1e308 was a 309-digit retry-after header.
    retry_after: float | None = Field(default=None, ge=0, le=MAX_RETRY_AFTER, allow_inf_nan=False)
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)  # e.g. retry-after-ms


class ScriptEntry(BaseModel):
    """One scripted response, as `POST /_admin/replies` takes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The response: an error, or a reply (text and/or a tool call).
    error: ScriptedError | None = None
    text: str | None = None
    tool_use: ToolUse | None = None
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "refusal"] | None = None
    # Which requests it answers: all given must match.
    model: str | None = None  # as sent, or the model it resolves to
    speed: Literal["standard", "fast"] | None = None  # the speed that serves the request
    contains: str | None = None  # in the text of the last user message
    # How many requests it answers; 0 or None: every matching one until cleared or reset.
    times: int | None = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _one_response(self) -> ScriptEntry:
        reply = self.text is not None or self.tool_use is not None
        if self.error is not None and (reply or self.stop_reason is not None):
            raise ValueError("a scripted error cannot also carry text, tool_use or stop_reason")
        if self.error is None and not reply:
            raise ValueError("give the reply (text, tool_use or both) or an error")
        return self


@dataclass(frozen=True, slots=True)
class Scripted:
    """An entry as a worker serves it."""

    id: str
    entry: ScriptEntry
    # The matcher of `contains`, and for a reply what the planner's canned path says.
    canned: CannedReply

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Scripted:
        entry = ScriptEntry.model_validate({k: v for k, v in row.items() if k != "id"})
        tool = entry.tool_use
        contains = entry.contains
        canned = CannedReply(
            pattern=_ANY_TEXT if contains is None else re.compile(re.escape(contains)),
            # A tool call alone is what was scripted: no generated preamble before it.
            text=entry.text if entry.text is not None or tool is None else "",
            tool_name=None if tool is None else tool.name,
            tool_input=None if tool is None else tool.input,
            stop_reason=entry.stop_reason,
        )
        return cls(str(row["id"]), entry, canned)

    def matches(self, raw: Mapping[str, Any], chosen: Route) -> bool:
        entry = self.entry
        if entry.model is not None and entry.model not in (raw.get("model"), chosen.model.id):
            return False
        if entry.speed is not None and entry.speed != chosen.speed:
            return False
        if entry.tool_use is not None and entry.tool_use.name not in _offered_tools(raw):
            return False
        if entry.contains is not None:
            return CannedReplies((self.canned,)).match(raw.get("messages") or (), chosen.model.id) is not None
        return True

    def answering(self, runtime: Runtime) -> Runtime:
        """`runtime` with a planner that says this reply."""
        return replace(runtime, planner=replace(runtime.planner, canned=CannedReplies((self.canned,))))

    def api_error(self, rate_limit_headers: Mapping[str, str] | None) -> APIError:
        scripted = self.entry.error
        assert scripted is not None
        return injected_error(
            scripted.status,
            error_type=scripted.type,
            message=scripted.message,
            retry_after=scripted.retry_after,
            rate_limit_headers=rate_limit_headers,
            headers=scripted.headers,
        )


def _offered_tools(raw: Mapping[str, Any]) -> set[str]:
    # As the planner's canned path: it calls only client tools, which have an input_schema.
    return {tool["name"] for tool in raw.get("tools") or () if "input_schema" in tool}


# The request path.


class ScriptBook:
    """What one worker knows of the script (`ServerState.script`): the entries not known to be used
    up, as read at a `ServerState.script_version`."""

    def __init__(self) -> None:
        self.entries: list[Scripted] = []
        self._read_at: tuple[str | None, str | None] | None = None  # None: not read yet
        # The script version at which nothing was left to serve here: until the version changes, a
        # request need not look (None: never read, or something is left).
        self._idle_at: tuple[str | None, str | None] | None = None

    def may_apply(self, state: ServerState) -> bool:
        """Whether a request must look at the script; False (one comparison, no store call) while
        this worker knows it to be empty and no change came since."""
        return self._idle_at != state.script_version

    async def answer(
        self,
        state: ServerState,
        runtime: Runtime,
        raw: Mapping[str, Any],
        chosen: Route,
        record: RequestRecord,
        respond: Callable[[Runtime], Awaitable[_Response]],
        rate_limits: Callable[[], Awaitable[Mapping[str, str]]],
    ) -> _Response:
        """This request's response: the scripted error, or `respond` (the rest of the request path)
        with `runtime`, or with one whose planner says the scripted reply. A scripted error is raised
        before faults and rate limits (nothing is charged for it; a 429 carries the caller's
        `rate_limits` headers, as a fault's does); a reply whose `respond` raises (a fault, a 429)
        gives its use back for the next request."""
        if self._read_at != state.script_version:
            await self._read_entries(state)
        taken = await self._claim(state, raw, chosen)
        if not self.entries:
            self._idle_at = self._read_at
        if taken is None:
            return await respond(runtime)
        error = taken.entry.error
        if error is not None:
            record.scripted = True
            raise taken.api_error(await rate_limits() if error.status == 429 else None)
        try:
            response = await respond(taken.answering(runtime))
        except Exception:
            await self._give_back(state, taken)
            raise
        record.scripted = True
        return response

    async def _read_entries(self, state: ServerState) -> None:
        version = state.script_version  # first: a change landing during the read makes the next request look
        rows = await state.store.items(ENTRIES_KEY)
        used = await state.store.get_many([_used_key(row["id"]) for row in rows]) if rows else []
        live = [
            Scripted.from_row(row) for row, count in zip(rows, used, strict=True) if _left(row, count) != 0
        ]
        self.entries, self._read_at, self._idle_at = live, version, None

    async def _claim(self, state: ServerState, raw: Mapping[str, Any], chosen: Route) -> Scripted | None:
        """The first matching entry with a use left, that use taken atomically (another request, on this
        worker or another, may take the same entry's last use first: then the next one is tried)."""
        for scripted in list(self.entries):
            if not scripted.matches(raw, chosen):
                continue
            used = await state.store.incr(_used_key(scripted.id))
            times = scripted.entry.times
            if not times or used <= times:
                if used == times:
                    self._spend(scripted)
                return scripted
            await self._uncount(state, scripted)  # the last use went to another request first
        return None

    async def _give_back(self, state: ServerState, scripted: Scripted) -> None:
        try:
            await self._uncount(state, scripted)
        except StoreUnavailable as exc:  # the request's own error is the one to report
            log.warning("scripted reply %s: its use could not be given back: %s", scripted.id, exc)

    async def _uncount(self, state: ServerState, scripted: Scripted) -> None:
        """Take back a use counted for a request that does not get it (one that failed, or one over the
        limit). Every worker looks again when that leaves a use free: a worker may have counted the
        entry as used up, and when one over the limit finds a use free, a use was given back since."""
        used = await state.store.incr(_used_key(scripted.id), -1)
        times = scripted.entry.times
        if times and used < times:
            await state.announce_script_change()
        elif times:
            self._spend(scripted)

    def _spend(self, scripted: Scripted) -> None:
        if scripted in self.entries:
            self.entries.remove(scripted)  # used up: later requests here skip it without a store call


def _used_key(entry_id: str) -> str:
    return _USED_PREFIX + entry_id


def _left(row: Mapping[str, Any], used: Any) -> int | None:
    times = row.get("times")
    return None if not times else max(0, int(times) - int(used or 0))


# The admin API.


def parse_entries(data: Mapping[str, Any], catalog: Catalog) -> list[ScriptEntry]:
    """One entry, or `{"replies": [...]}` for several in order; errors name the field. A `model`
    filter must name a model of `catalog`: one that names none would never match, silently."""
    if "replies" not in data:
        return [_known_model(_parse(data, None), None, catalog)]
    listed = data["replies"]
    if set(data) != {"replies"}:
        extra = sorted(set(data) - {"replies"})[0]
        raise InvalidRequestError(f"{extra}: give either one reply or {{'replies': [...]}}, not both")
    if not isinstance(listed, list) or not listed:
        raise InvalidRequestError("replies: expected a non-empty list of replies")
    return [
        _known_model(_parse(item, f"replies.{i}"), f"replies.{i}", catalog) for i, item in enumerate(listed)
    ]


def _known_model(entry: ScriptEntry, where: str | None, catalog: Catalog) -> ScriptEntry:
    if entry.model is None or catalog.resolve(entry.model) is not None:
        return entry
    field = "model" if where is None else f"{where}.model"
    known = ", ".join(model.id for model in catalog.newest_first())
    raise InvalidRequestError(
        f"{field}: this server has no model {entry.model!r}, so no request would match; "
        f"its models are {known} (or their aliases)"
    )


# An entry validated under the name of where it stands, so that errors start with it: "replies.2.text:
# ..." for a field, "replies.2: ..." for the entry as a whole.
_AT = TypeAdapter(dict[str, ScriptEntry])


def _parse(data: Any, where: str | None) -> ScriptEntry:
    try:
        return (
            ScriptEntry.model_validate(data) if where is None else _AT.validate_python({where: data})[where]
        )
    except ValidationError as exc:
        # A bad header name is located at the name itself, not at pydantic's "[key]" below it.
        raise InvalidRequestError(describe(exc).replace(".[key]: ", ": ", 1)) from None


async def add(state: ServerState, entries: Sequence[ScriptEntry]) -> list[dict[str, Any]]:
    """Queue `entries` after those already there; every worker serves them once this returns."""
    queued = len(await state.store.items(ENTRIES_KEY))
    if queued + len(entries) > MAX_ENTRIES:
        raise InvalidRequestError(
            f"replies: at most {MAX_ENTRIES} scripted replies can be queued ({queued} are); "
            "clear them with DELETE /_admin/replies"
        )
    rows = [{"id": "scripted_" + uuid.uuid4().hex[:16], **entry.model_dump()} for entry in entries]
    for row in rows:  # one atomic append each: a concurrent POST may interleave, never lose one
        await state.store.append(ENTRIES_KEY, row, max_len=MAX_ENTRIES)
    await _publish(state)
    return [_shown(row, 0) for row in rows]


async def listed(state: ServerState) -> list[dict[str, Any]]:
    """Every entry since the last clear or reset, in order, with how often it was used."""
    rows = await state.store.items(ENTRIES_KEY)
    used = await state.store.get_many([_used_key(row["id"]) for row in rows]) if rows else []
    return [_shown(row, count) for row, count in zip(rows, used, strict=True)]


async def clear(state: ServerState) -> int:
    rows = await state.store.items(ENTRIES_KEY)
    await state.store.delete(ENTRIES_KEY)
    for key in await state.store.keys(_USED_PREFIX):
        await state.store.delete(key)
    await _publish(state)
    return len(rows)


def _shown(row: Mapping[str, Any], used: Any) -> dict[str, Any]:
    times = row.get("times")
    used = int(used or 0)
    return {**row, "used": used if not times else min(used, int(times)), "remaining": _left(row, used)}


async def _publish(state: ServerState) -> None:
    # Every worker (this one at once, the others before the admin call answers) reads the script again.
    await state.announce_script_change()
