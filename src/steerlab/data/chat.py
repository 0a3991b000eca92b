"""Turn contrast data into the exact strings a model reads.

Activations depend on every token before the read position, so the same pair read with and without the
model's chat template gives different vectors. Formatting lives in one place so that extraction, evaluation
and serving all wrap text the same way, with the model's own template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from steerlab.data.formats import ContrastPair
from steerlab.errors import DataError

try:  # jinja2 comes with transformers; we only need it to recognise a template refusing a system turn.
    from jinja2 import TemplateError
except ImportError:  # pragma: no cover - without jinja2 no tokenizer can render a chat template anyway

    class TemplateError(Exception):  # type: ignore[no-redef]
        """Stand-in that never matches when jinja2 is absent."""


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template (base models usually do not)."""
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def plain_format(user: str, assistant_prefix: str = "", system: str | None = None) -> str:
    """The fallback dialogue layout for models without a chat template."""
    head = f"System: {system}\n" if system else ""
    return f"{head}User: {user}\nAssistant: {assistant_prefix}"


def _apply_template(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise DataError(
            f"chat template: expected apply_chat_template to return text, found {type(text).__name__}"
        )
    return text


def format_user(tokenizer: Any, user: str, assistant_prefix: str = "", system: str | None = None) -> str:
    """One user turn rendered with the model's chat template, opened for the assistant, then ``assistant_prefix``.

    Without ``system`` no system turn is added, so templates that inject a default system prompt (SmolLM2's
    does) keep it: that is what the model saw in training. Templates that refuse a system role (Gemma's) get
    the system text folded into the user turn instead of failing. Without a chat template (or with
    ``tokenizer=None``) the layout of :func:`plain_format` is used.
    """
    if not has_chat_template(tokenizer):
        return plain_format(user, assistant_prefix, system)
    messages = [{"role": "user", "content": user}]
    if system is None:
        return _apply_template(tokenizer, messages) + assistant_prefix
    try:
        text = _apply_template(tokenizer, [{"role": "system", "content": system}, *messages])
    except TemplateError:
        text = _apply_template(tokenizer, [{"role": "user", "content": f"{system}\n\n{user}"}])
    return text + assistant_prefix


def pair_texts(
    pairs: Sequence[ContrastPair], tokenizer: Any = None, chat: bool = True
) -> tuple[list[str], list[str]]:
    """The positive and negative strings to read, in pair order.

    A pair without ``prompt`` holds two user messages; with ``chat`` each is wrapped as a user turn, without it
    they are read as they are (pre-rendered or base-model text). A pair with ``prompt`` holds two assistant
    continuations of that prompt; they always need a dialogue around them, so without ``chat`` the plain layout
    is used. Both sides of a prompt pair share the rendered prompt exactly, so the only difference is the
    continuation.
    """
    if chat and tokenizer is None:
        raise DataError(
            "pair_texts: expected a tokenizer when chat=True, found None (pass chat=False for raw text)"
        )
    formatter = tokenizer if chat else None
    positives, negatives = [], []
    for pair in pairs:
        if pair.prompt is not None:
            head = format_user(formatter, pair.prompt)
            positives.append(head + pair.positive)
            negatives.append(head + pair.negative)
        elif chat:
            positives.append(format_user(tokenizer, pair.positive))
            negatives.append(format_user(tokenizer, pair.negative))
        else:
            positives.append(pair.positive)
            negatives.append(pair.negative)
    return positives, negatives
