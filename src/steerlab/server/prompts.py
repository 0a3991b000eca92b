"""Turning OpenAI-style chat messages into one prompt string in the served model's chat template."""

from __future__ import annotations

from typing import Any

from steerlab.server.errors import bad_request
from steerlab.server.schemas import ChatMessage


def chat_prompt(lm: Any, messages: list[ChatMessage]) -> str:
    """The prompt for the next assistant turn. A single user message gives exactly ``lm.chat(text)``."""
    turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
    if not lm.has_chat_template:
        lines = [
            f"{t['role'].capitalize()}: {t['content']}" if t["role"] != "system" else t["content"]
            for t in turns
        ]
        return "\n".join(lines) + "\nAssistant:"
    try:
        return lm.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a template may refuse an order of roles; that is the request's fault
        raise bad_request(
            f"the model's chat template rejected these messages: {exc}", param="messages"
        ) from exc
