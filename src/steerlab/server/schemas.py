"""Request bodies of the HTTP API (pydantic), OpenAI-compatible plus steerlab's ``steering`` field.

Only what the server actually honours is modelled strictly; fields OpenAI clients send that do not change
the result here (``user``, ``metadata``...) are accepted and ignored. Options the server cannot honour
(``n > 1``, ``logprobs``) are refused with a 400 rather than silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from steerlab.engine.spec import FIELD_HELP, MAX_LAYER, MAX_POSITION, OPS, SITES, UNITS

Seed = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
MAX_TEXT = 200_000

# The steering contract's names as pydantic Literals: derived from the spec, never restated here.
OpName = Literal[OPS]  # type: ignore[valid-type]
UnitName = Literal[UNITS]  # type: ignore[valid-type]
SiteName = Literal[SITES]  # type: ignore[valid-type]
# Strict ints: JSON ``true`` is not layer 1 or position 1 (the Python API refuses bools too).
LayerIndex = Annotated[StrictInt, Field(ge=0, le=MAX_LAYER)]
Strength = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositionIndex = Annotated[StrictInt, Field(ge=0, le=MAX_POSITION)]
# A condition by registry name; rules ({"all"|"any": [...]}, {"not": ...}) are checked when the request
# is turned into engine objects (steering_specs), with bounded depth and size.
ConditionName = Annotated[str, Field(min_length=1, max_length=200)]


class SteeringSpec(BaseModel):
    """One steering term: a registry vector and how to apply it (see :mod:`steerlab.engine.spec`).

    Every optional field defaults to ``None``: omitted means the vector's recorded default, exactly as in
    the Python API. Position and layer syntax is checked by the engine's own parsers when the request is
    turned into :class:`~steerlab.engine.Steering` objects (before anything reaches the model thread).
    """

    model_config = ConfigDict(extra="forbid")

    vector: Annotated[str, Field(min_length=1, max_length=200, description=FIELD_HELP["vector"])]
    strength: Strength | None = Field(None, description=FIELD_HELP["strength"])
    layers: (
        Annotated[str, Field(max_length=400)]
        | LayerIndex
        | Annotated[list[LayerIndex], Field(max_length=1024)]
    ) | None = Field(None, description=FIELD_HELP["layers"])
    op: OpName | None = Field(None, description=FIELD_HELP["op"])
    positions: Annotated[str, Field(max_length=40)] | PositionIndex = Field(
        "all", description=FIELD_HELP["positions"]
    )
    unit: UnitName | None = Field(None, description=FIELD_HELP["unit"])
    site: SiteName | None = Field(None, description=FIELD_HELP["site"])
    condition: ConditionName | dict[str, Any] | None = Field(None, description=FIELD_HELP["condition"])


SteeringList = Annotated[list[SteeringSpec], Field(max_length=16)]


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=MAX_TEXT)]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: (
        Annotated[str, Field(max_length=MAX_TEXT)] | Annotated[list[TextPart], Field(max_length=64)] | None
    ) = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


Stop = (
    Annotated[str, Field(max_length=200)]
    | Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=4)]
)


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Field(max_length=400)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    n: Annotated[int, Field(ge=1, le=1, description="only 1 is supported")] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    steering: SteeringList | None = Field(None, description="steerlab: steering terms for this request")

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class CompletionRequest(SamplingFields):
    prompt: (
        Annotated[str, Field(max_length=MAX_TEXT)]
        | Annotated[list[Annotated[str, Field(max_length=MAX_TEXT)]], Field(min_length=1, max_length=32)]
    )
    max_tokens: (
        Annotated[int, Field(ge=1, description="default 16 (capped by the server's limit)")] | None
    ) = None
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1, le=1)] | None = None


class ProjectionRequest(BaseModel):
    """Per-token projections of ``text`` on a registry vector's direction at one layer."""

    model_config = ConfigDict(extra="forbid")

    vector: Annotated[str, Field(min_length=1, max_length=200)]
    text: Annotated[str, Field(max_length=20_000)]
    prompt: Annotated[str, Field(max_length=20_000)] | None = Field(
        None,
        description="user message the text answers; its (chat-formatted) tokens are read but not returned",
    )
    chat: bool = True
    layer: LayerIndex | None = None
    steering: SteeringList | None = Field(None, description="read the activations under this steering")
