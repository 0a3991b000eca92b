"""Request bodies of the HTTP API (pydantic), OpenAI-compatible plus steerlab's ``steering`` field.

Only what the server actually honours is modelled strictly; fields OpenAI clients send that do not change
the result here (``user``, ``metadata``...) are accepted and ignored. Options the server cannot honour
(``n > 1``, ``logprobs``) are refused with a 400 rather than silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**64 - 1)]
MAX_TEXT = 200_000


class SteeringSpec(BaseModel):
    """One steering term: a registry vector and how to apply it (see ``steerlab.engine.Steering``)."""

    model_config = ConfigDict(extra="forbid")

    vector: Annotated[str, Field(min_length=1, max_length=200, description="name in the vector registry")]
    strength: FiniteFloat | None = Field(
        None,
        description="norm unit: multiple of the typical residual norm at each layer; omitted: calibrated default",
    )
    layers: (
        Annotated[str, Field(max_length=400)] | int | Annotated[list[int], Field(max_length=1024)] | None
    ) = Field(None, description="'8-20', 12, [8, 9]; omitted: the vector's layers")
    op: Literal["add", "ablate", "clamp", "scale"] = "add"
    positions: Annotated[str, Field(max_length=40)] | int = Field(
        "all", description="'all', 'prompt', 'generated' or 'from:K'"
    )
    unit: Literal["norm", "raw"] = "norm"
    site: Literal["resid", "attn", "mlp", "head"] | None = None


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
    layer: Annotated[int, Field(ge=0)] | None = None
    steering: SteeringList | None = Field(None, description="read the activations under this steering")
