"""OpenAI-compatible routes: the model list, chat completions and text completions (with steering).

Handlers never touch the model: they validate, turn the request into scheduler jobs (:mod:`.runs`) and
shape the events that come back into OpenAI's response or chunk format (:mod:`.sse` for streams).
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from steerlab.server.errors import bad_request
from steerlab.server.prompts import chat_prompt
from steerlab.server.runs import start_run, usage
from steerlab.server.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from steerlab.server.sse import stream_response
from steerlab.server.state import ServerState
from steerlab.server.steering_specs import build_steerings, report_field

COMPLETION_DEFAULT_TOKENS = 16  # OpenAI's default for /v1/completions


def _max_tokens(state: ServerState, req: SamplingFields, asked: int | None) -> int:
    """Check the model name and the token budget; return the budget."""
    state.check_model(req.model)
    tokens = state.config.default_max_tokens if asked is None else asked
    if tokens > state.config.max_tokens:
        raise bad_request(
            f"max_tokens is {tokens}; this server allows at most {state.config.max_tokens}",
            param="max_tokens",
        )
    return tokens


def _include_usage(req: SamplingFields) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def openai_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [state.model_card()]}

    @router.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        state.check_model(model_id)
        return state.model_card()

    @router.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        if body.logprobs or body.top_logprobs:
            raise bad_request("logprobs are not supported by this server", param="logprobs")
        max_tokens = _max_tokens(state, body, body.max_completion_tokens or body.max_tokens)
        steering = build_steerings(state.registry, body.steering)
        prompt = chat_prompt(state.lm, body.messages)
        run = await start_run(state, request, [prompt], body, max_tokens, steering)
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": state.model_id,
            "system_fingerprint": None,
        }
        if body.stream:

            def chunk(i: int, text: str | None, finish: str | None) -> dict:
                delta = {} if text is None else {"content": text}
                return {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}],
                }

            def usage_chunk(counts: dict) -> dict:
                return {**base, "object": "chat.completion.chunk", "choices": [], "usage": counts}

            role = chunk(0, "", None)
            role["choices"][0]["delta"] = {"role": "assistant", "content": ""}
            return stream_response(run, chunk, usage_chunk if _include_usage(body) else None, [role])
        texts, reasons, completion = await run.collect()
        return {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": texts[0]},
                    "logprobs": None,
                    "finish_reason": reasons[0],
                }
            ],
            "usage": usage(run.prompt_tokens[0], completion[0]),
            **report_field(steering, run.fired),
        }

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request):
        if body.logprobs is not None:
            raise bad_request("logprobs are not supported by this server", param="logprobs")
        if body.suffix:
            raise bad_request("suffix (insertion) is not supported by this server", param="suffix")
        default = min(COMPLETION_DEFAULT_TOKENS, state.config.max_tokens)
        max_tokens = _max_tokens(state, body, default if body.max_tokens is None else body.max_tokens)
        steering = build_steerings(state.registry, body.steering)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if len(prompts) > state.config.max_batch:
            raise bad_request(f"at most {state.config.max_batch} prompts per request", param="prompt")
        run = await start_run(state, request, prompts, body, max_tokens, steering)
        base = {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": state.model_id,
            "system_fingerprint": None,
        }
        echo = bool(body.echo)
        if body.stream:

            def chunk(i: int, text: str | None, finish: str | None) -> dict:
                return {
                    **base,
                    "choices": [{"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}],
                }

            def usage_chunk(counts: dict) -> dict:
                return {**base, "choices": [], "usage": counts}

            echoed = [chunk(i, p, None) for i, p in enumerate(prompts)] if echo else []
            return stream_response(run, chunk, usage_chunk if _include_usage(body) else None, echoed)
        texts, reasons, completion = await run.collect()
        return {
            **base,
            "choices": [
                {
                    "index": i,
                    "text": (prompts[i] if echo else "") + texts[i],
                    "logprobs": None,
                    "finish_reason": reasons[i],
                }
                for i in range(len(prompts))
            ],
            "usage": usage(sum(run.prompt_tokens), sum(completion)),
            **report_field(steering, run.fired),
        }

    return router
