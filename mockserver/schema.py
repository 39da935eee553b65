"""The Messages request body as pydantic models: the shape the real API accepts, and no looser.

Every union is tagged with a callable discriminator whose tags start with `~`: pydantic puts the
chosen tag into an error's location, and `validation.py` drops those parts so that a location reads
the way the real API writes it (`messages.0.content.1.source: Field required`).
"""

from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from mockserver.json_schema import check_json_schema, deeper_than

TAG = "~"
# Free-form JSON (tool inputs, echoed blocks, beta objects) may nest this deep within its field. The
# server writes requests back out (reply seed, batch params, journal) with orjson, which stops at 254
# levels; a request body may nest up to 1,024, so without a limit a legal body could become a 500.
MAX_JSON_NESTING = 128


def _shallow(value: Any) -> Any:
    if deeper_than(value, MAX_JSON_NESTING):
        raise ValueError(f"JSON nested more than {MAX_JSON_NESTING} levels deep is not supported")
    return value


FreeJson = Annotated[Any, AfterValidator(_shallow)]
FreeObject = Annotated[dict[str, Any], AfterValidator(_shallow)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Loose(BaseModel):
    # Echoes of server-side output and beta objects: checked for their type, passed through as is.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    @model_validator(mode="after")
    def _shallow_extras(self) -> _Loose:
        if self.model_extra and deeper_than(self.model_extra, MAX_JSON_NESTING):
            raise ValueError(f"JSON nested more than {MAX_JSON_NESTING} levels deep is not supported")
        return self


def _by_type(kinds: dict[str, str]) -> Any:
    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return kinds.get(kind) if isinstance(kind, str) else None

    names = ", ".join(f"'{k}'" for k in kinds)
    return Discriminator(
        tag,
        custom_error_type="invalid_union_member",
        custom_error_message=f"Input should be an object whose 'type' is one of {names}",
    )


def _union(members: dict[str, Any]) -> Any:
    """A union discriminated on the `type` field, with `~`-prefixed tags."""
    tagged = [Annotated[model, Tag(TAG + kind)] for kind, model in members.items()]
    return Annotated[reduce(or_, tagged), _by_type({kind: TAG + kind for kind in members})]


def _str_or_list(item: Any) -> Any:
    def tag(value: Any) -> str | None:
        if isinstance(value, str):
            return TAG + "str"
        if isinstance(value, list):
            return TAG + "list"
        return None

    return Annotated[
        Annotated[str, Tag(TAG + "str")] | Annotated[list[item], Tag(TAG + "list")],
        Discriminator(
            tag,
            custom_error_type="string_or_list",
            custom_error_message="Input should be a string or an array of content blocks",
        ),
    ]


class CacheControl(_Wire):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Wire):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[FreeObject] | None = None


class Base64ImageSource(_Wire):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlSource(_Wire):
    type: Literal["url"]
    url: str


class FileSource(_Wire):
    type: Literal["file"]
    file_id: str


class ImageBlock(_Wire):
    type: Literal["image"]
    source: _union({"base64": Base64ImageSource, "url": UrlSource, "file": FileSource})
    cache_control: CacheControl | None = None
    transformations: FreeObject | None = None


class Base64PdfSource(_Wire):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSource(_Wire):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ContentSource(_Wire):
    type: Literal["content"]
    content: _str_or_list(TextBlock | ImageBlock)


class CitationsConfig(_Wire):
    enabled: bool | None = None


class DocumentBlock(_Wire):
    type: Literal["document"]
    source: _union(
        {
            "base64": Base64PdfSource,
            "text": PlainTextSource,
            "content": ContentSource,
            "url": UrlSource,
            "file": FileSource,
        }
    )
    title: str | None = None
    context: str | None = None
    citations: CitationsConfig | None = None
    cache_control: CacheControl | None = None


class SearchResultBlock(_Wire):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]
    citations: CitationsConfig | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(_Wire):
    type: Literal["tool_use"]
    id: str
    name: str
    input: FreeObject
    cache_control: CacheControl | None = None
    caller: FreeObject | None = None
    toolset_name: str | None = None


ToolResultContent = _union(
    {
        "text": TextBlock,
        "image": ImageBlock,
        "search_result": SearchResultBlock,
        "document": DocumentBlock,
        "tool_reference": _Loose,
        "browser_state": _Loose,
    }
)


class ToolResultBlock(_Wire):
    type: Literal["tool_result"]
    tool_use_id: str
    content: _str_or_list(ToolResultContent) | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(_Wire):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Wire):
    type: Literal["redacted_thinking"]
    data: str


SERVER_ECHO_TYPES = (
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "container_upload",
    "mcp_tool_use",
    "mcp_tool_result",
    "compaction",
    "fallback",
)

ContentBlock = _union(
    {
        "text": TextBlock,
        "image": ImageBlock,
        "document": DocumentBlock,
        "search_result": SearchResultBlock,
        "tool_use": ToolUseBlock,
        "tool_result": ToolResultBlock,
        "thinking": ThinkingBlock,
        "redacted_thinking": RedactedThinkingBlock,
        **dict.fromkeys(SERVER_ECHO_TYPES, _Loose),
    }
)


class Message(_Wire):
    role: Literal["user", "assistant", "system"]
    content: _str_or_list(ContentBlock)


class CustomTool(_Wire):
    type: Literal["custom"] | None = None
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    input_schema: InputSchema
    cache_control: CacheControl | None = None
    strict: bool | None = None
    defer_loading: bool | None = None
    eager_input_streaming: bool | None = None
    input_examples: list[FreeObject] | None = None
    allowed_callers: list[str] | None = None


class InputSchema(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    type: Literal["object"]
    properties: dict[str, Any] | None = None
    required: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _is_a_json_schema(cls, value: Any) -> Any:
        return check_json_schema(value)


class ServerTool(_Loose):
    type: str
    name: str


def _tool_tag(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    return TAG + ("custom" if value.get("type") in (None, "custom") else "server")


Tool = Annotated[
    Annotated[CustomTool, Tag(TAG + "custom")] | Annotated[ServerTool, Tag(TAG + "server")],
    Discriminator(
        _tool_tag, custom_error_type="invalid_tool", custom_error_message="Input should be an object"
    ),
]


class ToolChoiceAuto(_Wire):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(_Wire):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(_Wire):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(_Wire):
    type: Literal["none"]


ToolChoice = _union(
    {"auto": ToolChoiceAuto, "any": ToolChoiceAny, "tool": ToolChoiceTool, "none": ToolChoiceNone}
)

ThinkingDisplay = Literal["summarized", "omitted", "updates"]


class ThinkingEnabled(_Wire):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Field(ge=1024)]
    display: ThinkingDisplay | None = None


class ThinkingAdaptive(_Wire):
    type: Literal["adaptive"]
    display: ThinkingDisplay | None = None
    block_binding: FreeJson = None


class ThinkingDisabled(_Wire):
    type: Literal["disabled"]


class ThinkingBetweenTools(_Wire):
    type: Literal["between_tools"]


ThinkingConfig = _union(
    {
        "enabled": ThinkingEnabled,
        "adaptive": ThinkingAdaptive,
        "disabled": ThinkingDisabled,
        "between_tools": ThinkingBetweenTools,
    }
)


class JsonSchemaFormat(_Wire):
    type: Literal["json_schema"]
    schema_: Annotated[dict[str, Any], Field(alias="schema"), BeforeValidator(lambda v: check_json_schema(v))]


class OutputConfig(_Wire):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonSchemaFormat | None = None
    task_budget: FreeJson = None


class Metadata(_Wire):
    user_id: Annotated[str, Field(max_length=256)] | None = None


class Diagnostics(_Wire):
    previous_message_id: str | None = None


class FallbackEntry(_Wire):
    """One model of a `fallbacks` chain; its fields override the request's for that attempt only."""

    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    speed: Literal["standard", "fast"] | None = None


def _fallbacks_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return TAG + "default"
    if isinstance(value, list):
        return TAG + "list"
    return None


# The server-defined chain of the requested model, or a chain of one's own.
Fallbacks = Annotated[
    Annotated[Literal["default"], Tag(TAG + "default")] | Annotated[list[FallbackEntry], Tag(TAG + "list")],
    Discriminator(
        _fallbacks_tag,
        custom_error_type="fallbacks",
        custom_error_message='Input should be "default" or an array of fallback entries',
    ),
]


class _Common(_Wire):
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1, max_length=100_000)]
    system: _str_or_list(TextBlock) | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl | None = None
    speed: Literal["standard", "fast"] | None = None
    # Beta-only inputs: accepted and ignored, as a client of another beta would expect.
    context_management: FreeJson = None
    compaction: FreeJson = None
    mcp_servers: list[FreeJson] | None = None
    billing_policy: FreeJson = None


class MessagesBody(_Common):
    max_tokens: Annotated[int, Field(ge=0)]
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    inference_geo: str | None = None
    container: FreeJson = None
    diagnostics: Diagnostics | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(gt=0)] | None = None
    fallbacks: Fallbacks | None = None  # beta and model rules: `fallbacks.check_fallbacks`
    fallback_credit_token: str | None = None
    thread: FreeJson = None


class CountTokensBody(_Common):
    pass


CustomTool.model_rebuild()
