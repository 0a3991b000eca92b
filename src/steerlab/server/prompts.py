"""Turning OpenAI-style chat messages into one prompt string in the served model's chat template.

A single user turn (with an optional system turn before it) is formatted by ``lm.chat`` itself, so a
request and the library's own ``lm.generate(text)`` see exactly the same prompt. Longer conversations go
through the model's chat template (or the same plain ``Role: text`` layout when it has none).
"""

from __future__ import annotations

from typing import Any

from steerlab.errors import SteerlabError
from steerlab.server.errors import bad_request
from steerlab.server.schemas import ChatMessage


def chat_prompt(lm: Any, messages: list[ChatMessage]) -> str:
    """The prompt for the next assistant turn."""
    turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
    system = turns[0]["content"] if len(turns) == 2 and turns[0]["role"] == "system" else None
    last = turns[-1]
    if last["role"] == "user" and (len(turns) == 1 or system is not None):
        try:
            return lm.chat(last["content"], system)
        except SteerlabError as exc:
            raise bad_request(str(exc), param="messages") from exc
    if not lm.has_chat_template:
        lines = [f"{t['role'].capitalize()}: {t['content']}" for t in turns]
        return "\n".join(lines) + "\nAssistant: "
    try:
        return lm.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a template may refuse an order of roles; that is the request's fault
        raise bad_request(
            f"the model's chat template rejected these messages: {exc}", param="messages"
        ) from exc
