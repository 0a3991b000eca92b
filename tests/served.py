"""What the end-to-end server tests share: everyday prompts, an OpenAI client, one chat call, and the
check that concurrent clients each get what they get alone (one copy for the torch and vLLM servers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

#: Everyday chat prompts; with four steering mixes they make the 32 concurrent clients.
PROMPTS = [
    "Tell me about your weekend.",
    "Describe a walk in the park.",
    "What did you eat for lunch?",
    "How was your commute?",
    "Write one sentence about the sea.",
    "What do you think of your job?",
    "Describe the room you are in.",
    "Give me a tip for cooking rice.",
]


def openai_client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


def chat(client: Any, model: str, prompt: str, steering: Any = None, *, tokens: int, **kw: Any) -> str:
    """One greedy chat completion, steered by the ``steering`` extra field when given."""
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0,
        extra_body={"steering": steering} if steering else None,
        **kw,
    )
    return out.choices[0].message.content


def together_and_alone(ask: Callable[..., str], requests: Sequence[tuple]) -> tuple[list, list, list]:
    """Each request asked alone, one after another, then all at once from as many threads (released
    together by a barrier): ``(alone, together, errors)``."""
    alone = [ask(*r) for r in requests]
    together: list[str | None] = [None] * len(requests)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(requests))

    def worker(i: int) -> None:
        try:
            barrier.wait(60)
            together[i] = ask(*requests[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return alone, together, errors
